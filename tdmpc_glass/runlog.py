"""Writers for one run directory (its layout: runlayout): the eval and train CSVs, the event log, the status.

CSV files are the record: append-only, one flushed row at a time, header written once. On resume, rows past
the checkpoint's env_step are cut so no row is lost or duplicated. A run's status is read with
runlayout.read_status(run_dir).
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import math
from pathlib import Path

from . import runlayout

EVAL_COLUMNS = ["env_step", "agent_step", "mppi_return", "mppi_return_std", "pi_return", "pi_return_std",
                "episodes", "wall_time_s"]


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class CsvLog:
    def __init__(self, path: Path, columns: list[str] | None = None):
        self.path, self.columns = path, columns

    def append(self, row: dict) -> None:
        new = not self.path.exists() or self.path.stat().st_size == 0
        if self.columns is None:
            self.columns = self._existing_header() or list(row)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: _format(row.get(k)) for k in self.columns})
            f.flush()

    def _existing_header(self):
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, newline="") as f:
                return next(csv.reader(f), None)
        return None

    def truncate_after(self, env_step: int) -> int:
        """Drop rows with env_step > `env_step` and any partial last line. Returns rows kept."""
        if not self.path.exists():
            return 0
        with open(self.path, newline="") as f:
            lines = f.read().splitlines(keepends=True)
        if not lines:
            return 0
        header, kept = lines[0], []
        for line in lines[1:]:
            if not line.endswith("\n"):
                break  # partial row from a killed writer
            first = line.split(",", 1)[0]
            try:
                if int(float(first)) <= env_step:
                    kept.append(line)
            except ValueError:
                break
        runlayout.write_atomic(self.path, header + "".join(kept))
        return len(kept)


def _format(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    return value


class RunLog:
    """All writers of one run directory."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.checkpoints.mkdir(exist_ok=True)
        self.eval = CsvLog(self.dir / runlayout.EVAL, EVAL_COLUMNS)
        self.train = CsvLog(self.dir / runlayout.TRAIN)
        self.status: dict = {"status": runlayout.RUNNING, "env_step": 0, "total_env_steps": 0, "updated": now_iso(),
                             "last_mppi_return": None, "best_mppi_return": None, "env_steps_per_s": None}

    @property
    def checkpoints(self) -> Path:
        """The run's checkpoints folder."""
        return self.dir / runlayout.CHECKPOINTS

    def event(self, env_step: int, event: str, **fields) -> None:
        record = {"time": now_iso(), "env_step": int(env_step), "event": event}
        record.update({k: _clean(v) for k, v in fields.items()})
        with open(self.dir / runlayout.EVENTS, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def set_status(self, **fields) -> None:
        self.status.update({k: _clean(v) for k, v in fields.items()}, updated=now_iso())
        runlayout.write_status(self.dir, self.status)

    def best_eval_so_far(self) -> tuple[float | None, float | None]:
        """(last, best) mppi_return over the eval rows already on disk (used after a resume)."""
        if not self.eval.path.exists():
            return None, None
        with open(self.eval.path, newline="") as f:
            values = [float(r["mppi_return"]) for r in csv.DictReader(f) if r.get("mppi_return")]
        return (values[-1], max(values)) if values else (None, None)
