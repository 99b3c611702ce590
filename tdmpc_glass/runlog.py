"""Writers for one run directory (its layout: runlayout): the eval and train CSVs, the event log, the status.

CSV files are the record: append-only, one flushed row at a time. A train.csv row with a column the file lacks
(a metric added to the code since the run started) widens the header: the file is rewritten atomically with the
wider header, its older rows empty in the new columns. On resume, rows past
the checkpoint's env_step and a partial last row are cut so no row is lost or duplicated; events.jsonl's
partial last line is cut before the first new event. A write that fails leaves the file as it was before it
(a full disk raises runlayout.DiskFullError, one line naming the file). A run's status is read with
runlayout.read_status(run_dir).
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import os
from pathlib import Path

from . import runlayout, seams

EVAL_COLUMNS = list(runlayout.EVAL_COLUMNS)


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class CsvLog:
    """One CSV file. `columns`: a fixed column set (eval.csv), or None: the file's own header, widened by any row
    that brings a new column (train.csv)."""

    def __init__(self, path: Path, columns: list[str] | None = None):
        self.path, self.columns, self.fixed = path, columns, columns is not None

    def append(self, row: dict) -> None:
        """One row, flushed. A failed write (a full disk: runlayout.DiskFullError) cuts the file back to what it
        was, so no partial row stays."""
        new = not self.path.exists() or self.path.stat().st_size == 0
        if self.columns is None:
            self.columns = self._existing_header() or list(row)
        added = [] if self.fixed else [k for k in row if k not in self.columns]
        if added and not new:
            self._widen(added)
        elif added:
            self.columns = self.columns + added
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.columns, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: _format(row.get(k)) for k in self.columns})
        with append_or_undo(self.path) as f:
            seams.write("csv_row", _write, f, text.getvalue())

    def _widen(self, added: list[str]) -> None:
        """Rewrite the file atomically with `added` columns at the end of its header, its rows empty in them."""
        with open(self.path, newline="", encoding="utf-8") as f:
            lines = f.read().splitlines(keepends=True)
        columns = self.columns + added
        header = io.StringIO()
        csv.writer(header).writerow(columns)
        body = []
        for line in lines[1:]:
            if not line.endswith("\n"):
                break  # a killed writer's partial row (append_or_undo leaves none of ours)
            end = len(line) - len(line.rstrip("\r\n"))
            body.append(line[:-end] + "," * len(added) + line[-end:])
        runlayout.write_atomic(self.path, header.getvalue() + "".join(body))
        self.columns = columns

    def _existing_header(self):
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, newline="") as f:
                first = f.readline()
            if first.endswith("\n"):  # a header cut short is no header
                return next(csv.reader([first]), None)
        return None

    def truncate_after(self, env_step: int) -> int:
        """Drop rows with env_step > `env_step` and a partial last line (a killed writer's). Returns rows kept.
        Raises runlayout.RunFileError (one line naming the file and line) for a damaged complete line, whose rows
        after it could not be told apart from lost ones."""
        if not self.path.exists():
            return 0
        try:
            with open(self.path, newline="", encoding="utf-8") as f:
                lines = f.read().splitlines(keepends=True)
        except UnicodeDecodeError as e:
            raise runlayout.RunFileError(f"{self.path}: bytes that are not text at offset {e.start} (damaged "
                                         "file): repair or move it away to resume") from None
        if not lines or not lines[0].endswith("\n"):  # empty, or killed while writing the header
            runlayout.write_atomic(self.path, "")
            return 0
        header, kept = lines[0], []
        if self.columns is not None and header.rstrip("\r\n") != ",".join(self.columns):
            raise runlayout.RunFileError(f"{self.path}: line 1 is not this file's header (damaged or foreign "
                                         "file): move it away to resume")
        for number, line in enumerate(lines[1:], start=2):
            if not line.endswith("\n"):
                break  # partial row from a killed writer
            first = line.split(",", 1)[0]
            try:
                step = int(float(first))
            except ValueError:
                raise runlayout.RunFileError(f"{self.path}: line {number} is not a row (env_step {first[:20]!r}; "
                                             "damaged file): repair or move it away to resume") from None
            if step <= env_step:
                kept.append(line)
        runlayout.write_atomic(self.path, header + "".join(kept))
        return len(kept)


def _write(f, text: str) -> None:
    f.write(text)


class append_or_undo:
    """`with append_or_undo(path) as f:` appends text to `path` and flushes it; if anything fails, the file is cut
    back to its size before, and an OSError of a full disk becomes runlayout.DiskFullError."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __enter__(self):
        try:
            self.file = open(self.path, "a", newline="")
            self.size = self.file.tell()
        except OSError as e:
            raise runlayout.disk_full(e, self.path) from None
        return self.file

    def __exit__(self, kind, error, tb):
        try:
            if error is None:
                self.file.flush()
        except OSError as e:
            error = e
        if error is None:
            self.file.close()
            return False
        try:
            self.file.close()
        except OSError:
            pass  # the close flushes what is left; its failure changes nothing below
        try:
            os.truncate(self.path, self.size)
        except OSError:
            pass
        if isinstance(error, OSError):
            raise runlayout.disk_full(error, self.path) from None
        return False


def end_partial_line(path: Path) -> None:
    """Cut a last line that has no newline (a killed writer's) off a line-per-record file."""
    try:
        with open(path, "rb+") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            block = min(size, 1 << 16)
            while True:  # the last newline, searched back from the end
                f.seek(size - block)
                chunk = f.read(block)
                cut = chunk.rfind(b"\n")
                if cut >= 0:
                    f.truncate(size - block + cut + 1)
                    return
                if block == size:
                    f.truncate(0)
                    return
                block = min(size, block * 2)
    except FileNotFoundError:
        return
    except OSError as e:
        raise runlayout.disk_full(e, path) from None


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
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.checkpoints.mkdir(exist_ok=True)
        except OSError as e:
            raise runlayout.disk_full(e, self.checkpoints) from None
        self.eval = CsvLog(self.dir / runlayout.EVAL, EVAL_COLUMNS)
        self.train = CsvLog(self.dir / runlayout.TRAIN)
        self._events_checked = False  # events.jsonl's partial last line (a killed writer's) is cut before ours
        self.status: dict = {"status": runlayout.RUNNING, "env_step": 0, "total_env_steps": 0, "updated": now_iso(),
                             "last_mppi_return": None, "best_mppi_return": None, "env_steps_per_s": None}

    @property
    def checkpoints(self) -> Path:
        """The run's checkpoints folder."""
        return self.dir / runlayout.CHECKPOINTS

    def event(self, env_step: int, event: str, **fields) -> None:
        record = {"time": now_iso(), "env_step": int(env_step), "event": event}
        record.update({k: _clean(v) for k, v in fields.items()})
        path = self.dir / runlayout.EVENTS
        if not self._events_checked:
            end_partial_line(path)
            self._events_checked = True
        with append_or_undo(path) as f:
            f.write(json.dumps(record) + "\n")

    def set_status(self, **fields) -> None:
        self.status.update({k: _clean(v) for k, v in fields.items()}, updated=now_iso())
        runlayout.write_status(self.dir, self.status)

    def best_eval_so_far(self) -> tuple[float | None, float | None]:
        """(last, best) mppi_return over the eval rows already on disk (used after a resume)."""
        if not self.eval.path.exists():
            return None, None
        values = []
        with open(self.eval.path, newline="", errors="replace") as f:
            for r in csv.DictReader(f):
                try:
                    values.append(float(r.get("mppi_return") or "nan"))
                except ValueError:
                    continue
        values = [v for v in values if math.isfinite(v)]
        best = runlayout.best_mppi(values)
        return (values[-1], best[1]) if best else (None, None)
