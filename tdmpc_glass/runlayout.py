"""The run-folder layout: one place for every path, file name and rule of a runs root (standard library only).

    <runs root>/<phase dir>/<variant>/seed<k>/
        config.yaml    the fully resolved config (written by the launcher)
        eval.csv       one row per evaluation          train.csv    one row per log window
        events.jsonl   start, resume, restart, nonfinite, done ...
        status.json    running / done / failed / interrupted / restarting, env_step, scores
        checkpoints/   step_<env_step>.npz             videos/      K-labelled rollouts
        restarts/attempt<k>/   the files of a basin-restarted attempt k
        run.lock       the one process writing this run: host, pid, start time (RunLock)
        provenance.jsonl   versions, device, commit, XLA flags, allocator: one record per process life
        tracking.json  what the exports (tdmpc_glass/tracking) have durably sent, and the W&B run id
        tensorboard/   TensorBoard event files (an export)   wandb/   W&B's own folder (offline runs, logs)
    <runs root>/.shared-probe   a Ray sweep's probe: a worker reading its text shares the launcher's disk

The launcher, the trainer, the video tools and analysis all read and write runs through these names, so a
rule (what "finished" means, how a file is replaced) lives here once. No third-party import: analysis and the
dashboard import this module without pulling in JAX.
"""
from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import ClassVar, Iterable, Optional

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
LOCK = "run.lock"
PROVENANCE = "provenance.jsonl"
TRACKING = "tracking.json"
TENSORBOARD = "tensorboard"
WANDB = "wandb"  # the folder W&B itself makes under the dir it is given
SHARED_PROBE = ".shared-probe"  # in a runs root: written by a Ray sweep's driver, read by workers that share its disk
RUN_FILES = (CONFIG, EVAL, TRAIN, STATUS, EVENTS)  # the plain files of a run, in the order pages list them
# what a basin restart archives (config, events and provenance stay); an attempt's exports go with it
ATTEMPT_FILES = (EVAL, TRAIN, CHECKPOINTS, VIDEOS, TRACKING, TENSORBOARD, WANDB)

# checkpoints/step_<env_step, 10 digits>.npz (checkpoint.py writes them; resume and videos pick them by step)
CHECKPOINT_PREFIX, CHECKPOINT_SUFFIX = "step_", ".npz"

# eval.csv's columns (a fixed set), the metrics among them and the scores curves plot; train.csv has no fixed
# set: its header is the first row's keys, widened by any later row that brings a new one (runlog.CsvLog)
EVAL_COLUMNS = ("env_step", "agent_step", "mppi_return", "mppi_return_std", "pi_return", "pi_return_std",
                "episodes", "wall_time_s")
EVAL_METRICS = ("mppi_return", "mppi_return_std", "pi_return", "pi_return_std")
RETURN_METRICS = ("mppi_return", "pi_return")  # MPPI score, pi score
TRAIN_COMMON_COLUMNS = ("env_step", "agent_step", "update", "wall_time_s")  # a train.csv row's first columns

# status.json "status" values
RUNNING, DONE, FAILED, INTERRUPTED, RESTARTING = "running", "done", "failed", "interrupted", "restarting"

# config keys that may differ from a run's config.yaml when it is resumed: raising train.steps extends a
# run; videos at evaluation and exports change no result; deterministic GPU reductions are recorded per
# process life (provenance.jsonl). A key ending in "." stands for its whole section.
EXTENDABLE_KEYS = ("train.steps", "train.video_at_eval", "tracking.", "runtime.deterministic_ops")

_EVAL_VIDEO = re.compile(r"^eval_step(\d+)_mppi$")

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


def eval_video_stem(env_step: int) -> str:
    """The file stem of the K-labelled video recorded at the evaluation at env_step (in <run>/videos/)."""
    return f"eval_step{env_step:010d}_mppi"


def eval_video_step(stem: str) -> Optional[int]:
    """env_step of an evaluation video's stem (eval_video_stem), None for any other stem."""
    match = _EVAL_VIDEO.match(stem)
    return int(match.group(1)) if match else None


def checkpoint_name(env_step: int) -> str:
    """The file name of a seed's checkpoint at env_step (in <run>/checkpoints/)."""
    return f"{CHECKPOINT_PREFIX}{env_step:010d}{CHECKPOINT_SUFFIX}"


def checkpoint_step(path: Path) -> Optional[int]:
    """env_step of a checkpoint file (checkpoint_name), None for any other name."""
    name = Path(path).name
    if not (name.startswith(CHECKPOINT_PREFIX) and name.endswith(CHECKPOINT_SUFFIX)):
        return None
    digits = name[len(CHECKPOINT_PREFIX):-len(CHECKPOINT_SUFFIX)]
    return int(digits) if digits.isdigit() else None


def best_mppi(values: Iterable) -> Optional[tuple[int, float]]:
    """(index, value) of the best MPPI score ("best MPPI": the max over a run's evals) among `values`, the
    earliest on ties; values that are None or not finite are passed over; None when none is left."""
    best = None
    for i, value in enumerate(values):
        if value is None or value != value or value in (float("inf"), float("-inf")):
            continue
        if best is None or value > best[1]:
            best = (i, float(value))
    return best


def count_text(n: float, spec: str = "g", small_spec: Optional[str] = None) -> str:
    """A step count for people: 8000000 -> '8M', 50000 -> '50k', 3250000 -> '3.25M' (`spec` formats the
    number before the suffix; `small_spec`, default `spec`, a count under 1000)."""
    for suffix, size in (("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:{spec}}{suffix}"
    return f"{n:{small_spec or spec}}"


def extendable(key: str, ignore: Iterable[str] = EXTENDABLE_KEYS) -> bool:
    """Whether a dotted config key may differ on resume (an entry ending in "." covers its section)."""
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in ignore)


# ---- errors a run's files raise: one line each, naming the file ---------------------------------------------

class RunFileError(ValueError):
    """A run file that cannot be used as it is (damaged, foreign): a one-line message naming it."""


class DiskFullError(OSError):
    """A write into a run dir failed for lack of space (ENOSPC, EDQUOT): a one-line message naming the file.
    Whatever was on disk before the failed write is kept as it was (no temp file, no partial row)."""


class RunLockedError(RuntimeError):
    """Another process is writing the run dir: a one-line message naming the dir and that process."""


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def disk_full(error: OSError, path: Path) -> OSError:
    """`error` as a DiskFullError naming `path` when it is a full disk or quota, else `error` itself."""
    if isinstance(error, DiskFullError) or getattr(error, "errno", None) not in NO_SPACE:
        return error
    return DiskFullError(error.errno, f"disk full while writing {path}; the files written before are kept: "
                                      "free some space, then resume with the same command")


def write_atomic(path: Path, text: str) -> None:
    """Readers never see a half-written file and a crash never leaves one: a temp file beside `path`, flushed
    to disk, then renamed over it. A failed write (a full disk: DiskFullError) removes the temp file and leaves
    `path` as it was."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise disk_full(e, path) from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise disk_full(e, path) from None
        raise


def remove_temp_files(path: Path) -> None:
    """Delete the temp files write_atomic leaves in a run dir when its writer is killed mid-write (only while
    holding the run's lock: another writer's temp file is in use)."""
    for tmp in Path(path).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def read_json_object(path: Path) -> dict:
    """A JSON file holding an object, as a dict ({} when missing, unreadable or not an object); creates nothing."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def read_status(path: Path) -> dict:
    """A run dir's status.json as a dict ({} when missing, unreadable or not an object); creates nothing."""
    return read_json_object(Path(path) / STATUS)


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
    ignore = tuple(ignore)
    new_flat, old_flat = flatten(new), flatten(old)
    for key in list(new_flat) + [k for k in old_flat if k not in new_flat]:
        if extendable(key, ignore):
            continue
        if new_flat.get(key) != old_flat.get(key):
            return f"{key} is {old_flat.get(key)!r} there, {new_flat.get(key)!r} now"
    return None


# ---- one writer per run dir -----------------------------------------------------------------------------------

def _this_host() -> str:
    return socket.gethostname()


def holder_text(holder: dict) -> str:
    """'pid 123 on host h since 2026-...' from a lock file's record (what is known of it)."""
    if not holder:
        return "a process that left no record"
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {holder.get('started', '?')}"
            + (f" ({holder['command']})" if holder.get("command") else ""))


def read_lock(run_dir: Path) -> dict:
    """The record of a run dir's lock file ({} when missing or unreadable)."""
    return read_json_object(Path(run_dir) / LOCK)


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True  # someone else's process (or no pid to test): assume it lives
    return True


class RunLock:
    """One writer per run dir: `with RunLock(run_dirs):` holds `<run dir>/run.lock` of every dir, or raises
    RunLockedError (one line naming the dir and its holder: host, pid, start time) holding none of them.

    The lock is an exclusive fcntl.flock on the lock file, which the kernel drops when its process dies
    (SIGKILL included), so a stale lock file (holder dead) is taken over with no guessing; the file's record
    only names the holder for the message. Where the file system has no flock, the record decides: a holder on
    this host whose pid is dead is stale and taken over; a live one (or one on another host) holds the dir.
    `taken_over`: (run dir, the previous holder's record) for each stale lock file found (for an event).
    Re-entrant within a process: a dir this process holds already (the launcher's lock around train's) is
    counted, not locked again; it is released when its outermost holder lets go."""

    # resolved run dir -> [fd, how many RunLocks of this process hold it]: one table for the process
    _held_here: ClassVar[dict[str, list]] = {}

    def __init__(self, run_dirs, command: str | None = None):
        self.dirs = [Path(d) for d in run_dirs]
        self.command = command
        self.taken_over: list[tuple[Path, dict]] = []
        self._held: list[Path] = []

    @classmethod
    def held_here(cls) -> list[str]:
        """The resolved run dirs this process holds locks on (for tests and messages)."""
        return sorted(cls._held_here)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        record = {"host": _this_host(), "pid": os.getpid(),
                  "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        if self.command:
            record["command"] = self.command
        try:
            for run_dir in sorted(set(self.dirs), key=str):  # one order for every process: no lock-order cycle
                self._acquire_one(run_dir, record)
        except BaseException:
            self.release()
            raise

    def _acquire_one(self, run_dir: Path, record: dict) -> None:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise disk_full(e, run_dir) from None
        key = str(run_dir.resolve())
        if key in self._held_here:
            self._held_here[key][1] += 1
            self._held.append(run_dir)
            return
        path = run_dir / LOCK
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise disk_full(e, path) from None
            try:
                previous = read_lock(run_dir)
                if not self._lock_fd(fd, previous):
                    raise RunLockedError(f"{run_dir}: another process is writing this run: "
                                         f"{holder_text(previous)} (lock file {path}); wait for it to end or "
                                         "stop it, then run again")
                try:  # the path may have been released (unlinked) between our open and our lock: try again
                    same = os.fstat(fd).st_ino == os.stat(path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
                if previous and previous.get("pid") != os.getpid():
                    self.taken_over.append((run_dir, previous))
                os.ftruncate(fd, 0)
                os.write(fd, (json.dumps(record) + "\n").encode())
                os.fsync(fd)
            except BaseException as e:
                os.close(fd)
                if isinstance(e, OSError):
                    raise disk_full(e, path) from None
                raise
            self._held_here[key] = [fd, 1]
            self._held.append(run_dir)
            return

    @staticmethod
    def _lock_fd(fd: int, previous: dict) -> bool:
        """True when this process now holds fd's lock."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError as e:  # no flock on this file system: the record decides
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            if not previous or previous.get("pid") == os.getpid():
                return True
            return previous.get("host") == _this_host() and not _pid_alive(previous.get("pid"))

    def release(self) -> None:
        """Remove and unlock every lock file this RunLock holds (its record first, so no one reads ours)."""
        while self._held:
            run_dir = self._held.pop()
            key = str(run_dir.resolve())
            entry = self._held_here.get(key)
            if entry is None:
                continue
            entry[1] -= 1
            if entry[1] > 0:
                continue
            del self._held_here[key]
            try:
                (run_dir / LOCK).unlink(missing_ok=True)
            except OSError:
                pass
            os.close(entry[0])
