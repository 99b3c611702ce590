"""The gathered copy of runs on the launching machine: how a worker's changes to its run files are applied.

A worker trains in node-local scratch and ships each change of its run dirs here (experiments/shipper.py);
the gatherer actor (experiments/fleet.py) owns the launching machine's runs root and calls this module, which
needs neither Ray nor JAX, so its rules are tested on their own:

- line files (CSV, JSONL): `append(rel, offset, data)` applies whole lines at a byte offset. Data that does not
  end in a newline is refused; bytes the copy already holds are skipped (a re-send after a lost reply is a
  no-op), a gap (an offset past the copy's end) is refused and the copy's size returned so the sender
  resends from there. A file the worker rewrote (a resume cuts rows past its checkpoint) comes whole
  through `replace`.
- every other file (status, config, checkpoints, videos): `replace(rel, data)` or, for large ones, `begin` /
  `chunk` / `commit` into a temp file beside it, renamed over it only when every byte arrived (size checked):
  readers see the old file or the new one, never a half-sent one.
- `remove(rel)` mirrors a deletion (old checkpoints the trainer rotated out).
- leases: one job writes a run dir (`acquire(run_dir, token, holder)`): a second job (another token) is refused
  with a line naming the holder; the same token (Ray retrying the job after its worker died) takes the lease
  over with a new epoch, and every change carries its epoch, so a worker cut off and presumed dead can no
  longer write (fencing). The lease also holds the run dir's RunLock here, so a local `run` or another sweep
  on this machine cannot write it at the same time.

Paths are relative to the runs root and must stay inside it.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tdmpc_glass import runlayout

UPLOAD_SUFFIX = ".upload.tmp"  # a file being received in chunks (write_atomic's temp files end in .tmp too)


class GatherError(ValueError):
    """A change the gathered copy refuses (outside the runs root, not whole lines, a stale epoch ...)."""


class LeaseError(RuntimeError):
    """Another job holds the run dir: one line naming the run dir and its holder."""


@dataclass
class Lease:
    token: str
    epoch: int
    holder: dict


def holder_line(holder: dict) -> str:
    return (f"job {holder.get('job', '?')} on node {holder.get('node', '?')} (host {holder.get('host', '?')}, "
            f"pid {holder.get('pid', '?')}) since {holder.get('since', '?')}")


class GatheredRoot:
    """The runs root on the launching machine, changed only through these methods (thread-safe)."""

    def __init__(self, root: Path):
        self.root = Path(root).absolute()
        self.leases: dict[str, Lease] = {}
        self._locks: dict[str, list[runlayout.RunLock]] = {}  # token -> the RunLocks its leases hold here
        self._lock = threading.RLock()

    # ---- paths ---------------------------------------------------------------------------------------------
    def path(self, rel: str) -> Path:
        """The absolute path of a relative run-file path; GatherError for one that leaves the runs root."""
        pure = PurePosixPath(rel)
        if pure.is_absolute() or not pure.parts or any(p in ("..", "") for p in pure.parts):
            raise GatherError(f"{rel!r}: not a path inside the runs root {self.root}")
        return self.root.joinpath(*pure.parts)

    def run_dir_of(self, rel: str) -> str:
        """The leased run dir a file belongs to (the longest leased prefix); GatherError when none is leased."""
        parts = PurePosixPath(rel).parts
        for n in range(len(parts) - 1, 0, -1):
            key = "/".join(parts[:n])
            if key in self.leases:
                return key
        raise GatherError(f"{rel}: no job holds a lease on its run dir")

    # ---- leases --------------------------------------------------------------------------------------------
    def acquire(self, run_dirs: list[str], token: str, holder: dict) -> int:
        """The epoch of job `token`'s lease on every run dir of `run_dirs` (all or none); LeaseError naming the
        holder when another job holds one. The same token again (Ray retried the job: its worker is gone)
        takes its lease over with the next epoch, which fences off the worker before."""
        with self._lock:
            for run_dir in run_dirs:
                self.path(run_dir)  # inside the root
                held = self.leases.get(run_dir)
                if held is not None and held.token != token:
                    raise LeaseError(f"{run_dir}: another job is writing this run: {holder_line(held.holder)}; "
                                     "wait for it to end or stop it, then run again")
            epoch = 1 + max((self.leases[d].epoch for d in run_dirs if d in self.leases), default=0)
            new = [d for d in run_dirs if d not in self.leases]
            lock = runlayout.RunLock([self.path(d) for d in new], command=f"gathering for {holder_line(holder)}")
            try:
                lock.acquire()
            except runlayout.RunLockedError as e:
                raise LeaseError(str(e)) from None
            for run_dir in run_dirs:
                held = self.leases.get(run_dir)
                if held is None:
                    self.leases[run_dir] = Lease(token, epoch, holder)
                    self._end_partial_lines(run_dir)
                else:
                    held.epoch, held.holder = epoch, holder
                self._drop_uploads(run_dir)
            self._locks[token] = self._locks.get(token, []) + [lock]
            return epoch

    def release(self, token: str, epoch: int | None = None) -> list[str]:
        """Drop every lease of job `token` (its end, or its failure past retries); the run dirs released. With
        `epoch`, only when the leases are still at it (a fenced worker ending releases nothing)."""
        with self._lock:
            gone = [d for d, lease in self.leases.items()
                    if lease.token == token and (epoch is None or lease.epoch == epoch)]
            for run_dir in gone:
                self.leases.pop(run_dir)
                self._drop_uploads(run_dir)
            if gone and not any(lease.token == token for lease in self.leases.values()):
                for lock in self._locks.pop(token, []):
                    lock.release()
            return gone

    def release_all(self) -> None:
        for token in {lease.token for lease in list(self.leases.values())}:
            self.release(token)

    def _check(self, rel: str, epoch: int) -> Path:
        run_dir = self.run_dir_of(rel)
        if self.leases[run_dir].epoch != epoch:
            raise GatherError(f"{rel}: epoch {epoch} is stale (the lease is at epoch "
                              f"{self.leases[run_dir].epoch}: the job was retried elsewhere)")
        return self.path(rel)

    def _end_partial_lines(self, run_dir: str) -> None:
        """A gatherer killed mid-append may have left half a line: cut it before new lines follow."""
        from tdmpc_glass.runlog import end_partial_line  # standard library only underneath

        base = self.path(run_dir)
        for line_file in list(base.rglob("*.csv")) + list(base.rglob("*.jsonl")):
            end_partial_line(line_file)

    def _drop_uploads(self, run_dir: str) -> None:
        for partial in self.path(run_dir).rglob(f"*{UPLOAD_SUFFIX}"):
            partial.unlink(missing_ok=True)

    # ---- changes -------------------------------------------------------------------------------------------
    def append(self, rel: str, offset: int, data: bytes, epoch: int) -> int:
        """Whole lines `data` written at byte `offset` of `rel`; the file's size after. Bytes already held are
        skipped; an offset past the end changes nothing (the sender resends from the size returned)."""
        with self._lock:
            path = self._check(rel, epoch)
            if data and not data.endswith(b"\n"):
                raise GatherError(f"{rel}: {len(data)} bytes at offset {offset} do not end a line")
            size = path.stat().st_size if path.exists() else 0
            if offset > size or offset + len(data) <= size:
                return size  # a gap (resend from size), or a re-send of bytes held already
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab") as f:
                f.write(data[size - offset:])
                f.flush()
            return size + len(data) - (size - offset)

    def replace(self, rel: str, data: bytes, epoch: int) -> None:
        """`rel` becomes `data`, atomically (temp file + rename)."""
        with self._lock:
            path = self._check(rel, epoch)
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_bytes_atomic(path, data)

    def begin(self, rel: str, epoch: int) -> None:
        """Start receiving `rel` in chunks (an earlier unfinished upload of it is dropped)."""
        with self._lock:
            path = self._check(rel, epoch)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(_upload_path(path), "wb"):
                pass

    def chunk(self, rel: str, offset: int, data: bytes, epoch: int) -> int:
        """Bytes of `rel` at `offset` of its upload; the upload's size after (idempotent like append)."""
        with self._lock:
            path = self._check(rel, epoch)
            upload = _upload_path(path)
            if not upload.exists():
                raise GatherError(f"{rel}: no upload under way")
            size = upload.stat().st_size
            if offset > size or offset + len(data) <= size:
                return size
            with open(upload, "ab") as f:
                f.write(data[size - offset:])
            return size + len(data) - (size - offset)

    def commit(self, rel: str, size: int, epoch: int) -> None:
        """The upload of `rel` complete at `size` bytes: renamed over the file. GatherError when bytes are missing."""
        with self._lock:
            path = self._check(rel, epoch)
            upload = _upload_path(path)
            got = upload.stat().st_size if upload.exists() else -1
            if got != size:
                raise GatherError(f"{rel}: upload holds {got} bytes, expected {size}")
            with open(upload, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(upload, path)

    def remove(self, rel: str, epoch: int) -> None:
        with self._lock:
            self._check(rel, epoch).unlink(missing_ok=True)

    # ---- reading back (a retried job pulls its run dirs) ------------------------------------------------------
    def listing(self, run_dir: str) -> list[tuple[str, int]]:
        """(relative path, size) of every gathered file of `run_dir` (lock, temp and upload files left out)."""
        base = self.path(run_dir)
        if not base.is_dir():
            return []
        files = []
        for path in sorted(base.rglob("*")):
            if path.is_file() and not _transient(path.name):
                files.append((path.relative_to(self.root).as_posix(), path.stat().st_size))
        return files

    def read(self, rel: str, offset: int, length: int) -> bytes:
        with open(self.path(rel), "rb") as f:
            f.seek(offset)
            return f.read(length)


def _upload_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{UPLOAD_SUFFIX}")


def _transient(name: str) -> bool:
    """Files that are no part of a run's record: the lock, temp files of atomic writes and uploads."""
    return name == runlayout.LOCK or name.endswith(".tmp")


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.gather.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
