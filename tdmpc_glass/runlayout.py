"""The run-folder layout: one place for every path, file name and rule of a runs root (standard library only).

    <runs root>/<phase dir>/<variant>/seed<k>/
        config.yaml    the fully resolved config (written by the launcher)
        eval.csv       one row per evaluation          train.csv    one row per log window
        events.jsonl   start, resume, restart, nonfinite, done ...
        status.json    running / done / failed / interrupted / restarting, env_step, scores
        checkpoints/   step_<env_step>.npz             videos/      K-labelled rollouts
        restarts/attempt<k>/   the files of a basin-restarted attempt k

The launcher, the trainer, the video tools and analysis all read and write runs through these names, so a
rule (what "finished" means, how a file is replaced) lives here once. No third-party import: analysis and the
dashboard import this module without pulling in JAX.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable, Optional

RUNS_ENV = "TDMPC_GLASS_RUNS"  # the runs root when no flag names one
DEFAULT_RUNS_ROOT = "runs"
DEFAULT_VARIANT = "default"  # the variant name of a phase without variants

CONFIG = "config.yaml"
EVAL = "eval.csv"
TRAIN = "train.csv"
EVENTS = "events.jsonl"
STATUS = "status.json"
CHECKPOINTS = "checkpoints"
VIDEOS = "videos"
RESTARTS = "restarts"
RUN_FILES = (CONFIG, EVAL, TRAIN, STATUS, EVENTS)  # the plain files of a run, in the order pages list them
ATTEMPT_FILES = (EVAL, TRAIN, CHECKPOINTS, VIDEOS)  # what a basin restart archives; config and events stay

# status.json "status" values
RUNNING, DONE, FAILED, INTERRUPTED, RESTARTING = "running", "done", "failed", "interrupted", "restarting"

# config keys that may differ from a run's config.yaml when it is resumed: raising train.steps extends a
# run; videos at evaluation change no result
EXTENDABLE_KEYS = ("train.steps", "train.video_at_eval")

_SEED_DIR = re.compile(r"^seed(-?\d+)$")


def runs_root(arg: Optional[str] = None) -> Path:
    """The runs root: the flag's value, else $TDMPC_GLASS_RUNS, else ./runs."""
    return Path(arg or os.environ.get(RUNS_ENV) or DEFAULT_RUNS_ROOT)


def run_dir(root: Path, phase_dir: str, variant: str, seed: int) -> Path:
    return Path(root) / phase_dir / variant / f"seed{seed}"


def seed_of(path: Path) -> Optional[int]:
    """k of a `seed<k>` folder; None for any other name."""
    match = _SEED_DIR.match(Path(path).name)
    return int(match.group(1)) if match else None


def attempt_dir(path: Path, attempt: int) -> Path:
    return Path(path) / RESTARTS / f"attempt{attempt}"


def write_atomic(path: Path, text: str) -> None:
    """Readers never see a half-written file and a crash never leaves one: a temp file beside `path`, flushed
    to disk, then renamed over it. A failed write (a full disk) removes the temp file and leaves `path` as it
    was."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_status(path: Path) -> dict:
    """A run dir's status.json as a dict ({} when missing, unreadable or not an object); creates nothing."""
    try:
        status = json.loads((Path(path) / STATUS).read_text())
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def write_status(path: Path, status: dict) -> None:
    write_atomic(Path(path) / STATUS, json.dumps(status, indent=1) + "\n")


def ended(status: dict, total_env_steps: int) -> Optional[str]:
    """Why a run has nothing left to train, or None when it has: "done" (done for at least `total_env_steps`)
    or "failed". A done run whose train.steps was raised since is not ended: it extends."""
    if status.get("status") == FAILED:
        return FAILED
    if status.get("status") == DONE and (status.get("env_step") or 0) >= total_env_steps:
        return DONE
    return None


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}, in insertion order."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_difference(new: dict, old: dict, ignore: Iterable[str] = EXTENDABLE_KEYS) -> Optional[str]:
    """The first dotted key (in `new`'s order, then `old`'s) whose value differs between two plain config
    trees, described for a message; None when they match apart from `ignore`."""
    ignore = set(ignore)
    new_flat, old_flat = flatten(new), flatten(old)
    for key in list(new_flat) + [k for k in old_flat if k not in new_flat]:
        if key in ignore:
            continue
        if new_flat.get(key) != old_flat.get(key):
            return f"{key} is {old_flat.get(key)!r} there, {new_flat.get(key)!r} now"
    return None
