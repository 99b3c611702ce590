"""What a training batch writes about itself: train.csv windows, eval.csv rows, events and status of S runs.

The loop hands this module numbers; which file and which column they go to is decided here (and the file
names in runlayout.py). Videos at evaluation belong here too: they are a record of the evaluated policy.
"""
from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import jax
import numpy as np

from . import provenance, runlayout
from .runlog import RunLog


class TrainLogWindow:
    """Averages per-round metrics (arrays over seeds) between train.csv rows and measures throughput.

    next_row(env_step): the env step at which a window opened at env_step closes (LoopSchedule.next_log_row).
    The rounds' metrics may stay on the device: they are fetched together, once per row."""

    def __init__(self, env_step: int, next_row: Callable[[int], int]):
        self.next_row_after = next_row
        self._reset(env_step)

    def _reset(self, env_step):
        self.pending, self.rounds, self.updates = [], 0, 0
        self.step0, self.clock0 = env_step, time.time()
        self.next_row = self.next_row_after(env_step)

    def add(self, metrics: dict, num_updates: int):
        if metrics:
            self.pending.append(metrics)
            self.rounds += 1
            self.updates += num_updates

    def due(self, env_step: int) -> bool:
        return env_step >= self.next_row and self.rounds > 0

    def flush(self, env_step: int):
        """The row since the last one (None when no updates ran), and a new window."""
        if self.rounds == 0:
            return None
        elapsed = max(time.time() - self.clock0, 1e-9)
        sums = {}
        for metrics in jax.device_get(self.pending):  # one transfer for the window, summed in round order
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
        row = {k: v / self.rounds for k, v in sums.items()}
        row.update(updates_per_s=self.updates / elapsed, env_steps_per_s=(env_step - self.step0) / elapsed)
        self._reset(env_step)
        return row


def last_csv_row(path: Path) -> dict:
    """The last complete row of a CSV as {column: float or None} ({} without one)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return {}
    out = {}
    for key, value in (rows[-1] if rows else {}).items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            out[key] = None
    return out


class BatchLog:
    """The RunLogs of a batch's seeds, written only for the seeds still active."""

    def __init__(self, run_dirs):
        self.logs = [RunLog(p) for p in run_dirs]
        self.started = time.time()
        self.videos = None  # a video.recorder.EvalVideoRecorder once video_at_eval records its first episode
        self.tracking = None  # a tracking.live.LiveTracking when the config switches an export on

    @property
    def dirs(self) -> list[Path]:
        return [log.dir for log in self.logs]

    def start(self, env_step: int, resumed: bool, total_env_steps: int, attempts, run_seeds,
              provenance_record: Optional[dict] = None) -> None:
        for log, attempt, run_seed in zip(self.logs, attempts, run_seeds):
            if provenance_record is not None:
                provenance.write(log.dir, {**provenance_record, **({"attempt": attempt} if attempt else {})})
            log.event(env_step, "resume" if resumed else "start", total_env_steps=total_env_steps,
                      **({"attempt": attempt, "run_seed": run_seed} if attempt else {}))
            last, best = log.best_eval_so_far()
            log.set_status(status=runlayout.RUNNING, env_step=env_step, total_env_steps=total_env_steps,
                           last_mppi_return=last, best_mppi_return=best, attempt=attempt)

    def start_tracking(self, cfg, attempts) -> None:
        """Live exports (cfg.tracking) of every run of the batch: the rows on disk (after rewind), then each row
        as it is written."""
        from .config import to_dict
        from .tracking.live import LiveTracking
        from .tracking.rows import last_step

        if cfg.tracking.tensorboard or cfg.tracking.wandb != "off":
            floors = [last_step(d) for d in self.dirs]  # read here: the thread may read the files later
            self.tracking = LiveTracking(cfg.tracking, self.dirs, {"config": to_dict(cfg)}, floors, attempts)

    def _tracked(self, i: int, kind: str, row: dict) -> None:
        """Hand a row just written to the exports, and report exports that failed since the last row."""
        if self.tracking is None:
            return
        self.tracking.row(i, kind, row)
        self.report_tracking_failures()

    def report_tracking_failures(self) -> None:
        for i, tracker, message in self.tracking.failures() if self.tracking is not None else []:
            log = self.logs[i]
            print(f"warning: {log.dir}: the {tracker} export failed ({message}); training goes on, and the "
                  f"next run of the same command or `tdmpc-glass export` catches it up", file=sys.stderr)
            log.event(log.status.get("env_step") or 0, "tracking_failed", tracker=tracker, message=message)

    def rewind(self, env_step: int) -> dict:
        """Cut CSV rows past env_step (-1: all), the checkpoint a run resumes from. Returns the last train.csv
        row left, {column: (S,) values} ({} without one)."""
        for log in self.logs:
            log.eval.truncate_after(env_step)
            log.train.truncate_after(env_step)
        rows = [last_csv_row(log.train.path) for log in self.logs]
        keys = {k for row in rows for k in row}
        return {k: np.array([np.nan if r.get(k) is None else r[k] for r in rows]) for k in keys}

    def event(self, i: int, env_step: int, name: str, **fields) -> None:
        self.logs[i].event(env_step, name, **fields)

    def status(self, i: int, **fields) -> None:
        self.logs[i].set_status(**fields)

    def train_row(self, row: Optional[dict], common: dict, active) -> Optional[dict]:
        """Write a window's row for the active seeds; returns its per-seed values, {column: (S,) values}
        (None when there was no row)."""
        if row is None:
            return None
        for i, log in enumerate(self.logs):
            if active[i]:
                written = {**common, **{k: (float(v[i]) if np.ndim(v) else v) for k, v in row.items()}}
                log.train.append(written)
                log.set_status(env_step=common["env_step"], env_steps_per_s=row["env_steps_per_s"])
                self._tracked(i, "train", {k: written.get(k) for k in log.train.columns})
        return {k: np.asarray(v) for k, v in row.items() if np.ndim(v)}

    def eval_row(self, common: dict, results: dict, active) -> None:
        for i, log in enumerate(self.logs):
            if not active[i]:
                continue
            row = {**common, "wall_time_s": time.time() - self.started}
            row.update({k: float(v[i]) for k, v in results.items()})
            log.eval.append(row)
            best, mppi = log.status.get("best_mppi_return"), row["mppi_return"]
            log.set_status(env_step=common["env_step"], last_mppi_return=mppi,
                           best_mppi_return=mppi if best is None else max(best, mppi))
            self._tracked(i, "eval", {k: row.get(k) for k in log.eval.columns})

    def record_videos(self, cfg, obs_dim: int, act_dim: int, act, states, active, env_step: int) -> None:
        """One K-labelled MPPI episode per active seed into <run>/videos/ (train.video_at_eval)."""
        from .video.recorder import EvalVideoRecorder  # GL and video encoding only when asked for
        from .video.rollout import run_label

        if self.videos is None:
            self.videos = EvalVideoRecorder(cfg, obs_dim, act_dim, act=act)
        self.videos.record(states, self.dirs, [run_label(d) for d in self.dirs], active, env_step)
        if self.tracking is not None:
            for i in np.flatnonzero(active):
                self.tracking.video(int(i), env_step)

    def finish(self, active, env_step: int, status: str, message: Optional[str]) -> None:
        for i, log in enumerate(self.logs):
            if active[i]:
                log.event(env_step, status, **({"message": message} if message else {}))
                log.set_status(status=status, env_step=env_step)

    def mppi_postfix(self) -> str:
        last = [log.status.get("last_mppi_return") for log in self.logs]
        last = [x for x in last if x is not None]
        return f"MPPI {np.mean(last):.1f}" if last else ""

    def close(self) -> None:
        if self.videos is not None:
            self.videos.close()
        if self.tracking is not None:  # a run that has ended sends its last step; an interrupted one holds it
            final = [log.status.get("status") not in (runlayout.RUNNING, runlayout.INTERRUPTED) for log in self.logs]
            if not self.tracking.close(final):
                print("warning: the exports did not finish in time; the next run of the same command or "
                      "`tdmpc-glass export` sends what they had left", file=sys.stderr)
            self.report_tracking_failures()
            self.tracking = None
