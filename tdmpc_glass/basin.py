"""Basin restart (research log 10.6) as a driver around the training loop.

`interventions.BasinCheck` decides, from the batch's latest train.csv row in memory, which seeds are stuck;
they leave their batch with status `restarting` while the others go on. When the batch ends, this driver
moves each restarted run's earlier files to run_dir/restarts/attempt<k>/ and trains the restarted seeds
from scratch as their own batch: step counter from 0, fresh networks from the same init stream, a new
exploration stream (seed + restart_seed_offset * attempt; the log reseeds exploration only), the same config
(so the same check again while restarts remain). Batches run in order of
attempt; a killed run resumes each from its checkpoints, whose meta holds the attempt.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

from . import runlayout
from .config import Config
from .runlog import RunLog


def begin_restart(run_dir: Path, attempt: int) -> dict:
    """Move the files of attempt `attempt - 1` of a run into run_dir/restarts/attempt<attempt - 1>/ and mark the
    run as running attempt `attempt` from env step 0. config.yaml and events.jsonl stay (events.jsonl is the
    run's whole history). Safe to repeat after a kill half-way: what is already moved stays moved."""
    run_dir = Path(run_dir)
    archive = runlayout.attempt_dir(run_dir, attempt - 1)
    archive.mkdir(parents=True, exist_ok=True)
    for name in runlayout.ATTEMPT_FILES:  # each move is one rename: a kill leaves every file on one side or the other
        src, dst = run_dir / name, archive / name
        if not src.exists():
            continue
        if dst.exists():  # moved before a kill; what is here now is the new attempt's empty folder
            if src.is_dir() and not any(src.iterdir()):
                src.rmdir()
                continue
            raise RuntimeError(f"{src}: cannot archive restart attempt {attempt - 1}, {dst} exists already")
        os.replace(src, dst)
    log = RunLog(run_dir)
    log.set_status(status=runlayout.RUNNING, env_step=0, attempt=attempt)
    return log.status


def train_with_restarts(cfg: Config, seeds: list[int], run_dirs: list[Path],
                        train_batch: Callable[[list[int], list[Path], int], int]) -> int:
    """Train every seed that has something left, one batch per restart attempt (attempt 0 first), with
    `train_batch(seeds, run_dirs, attempt) -> exit code`. Done and failed runs are skipped. Returns the
    first non-zero exit code (an interrupt, 130/143, returns at once: the same command resumes)."""
    code, first = 0, True
    for _ in range(cfg.schedule.restart_max + 2):
        groups: dict[int, list] = {}
        for seed, run_dir in zip(seeds, run_dirs):
            status = runlayout.read_status(run_dir)
            if status.get("status") == runlayout.RESTARTING:
                status = begin_restart(Path(run_dir), int(status.get("attempt", 1)))
            why = runlayout.ended(status, cfg.train.steps)
            if why == runlayout.DONE:
                if first:
                    print(f"seed {seed}: already done ({run_dir})", file=sys.stderr)
            elif why == runlayout.FAILED:
                if first:
                    print(f"seed {seed}: failed earlier, skipped (see {Path(run_dir) / runlayout.EVENTS})",
                          file=sys.stderr)
            else:
                groups.setdefault(int(status.get("attempt") or 0), []).append((seed, Path(run_dir)))
        first = False
        if not groups:
            return code
        attempt = min(groups)
        result = train_batch([s for s, _ in groups[attempt]], [d for _, d in groups[attempt]], attempt)
        if result in (130, 143):
            return result
        code = code or result
    return code
