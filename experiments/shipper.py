"""A worker's side of gathering: follow the run dirs a job writes in node-local scratch and ship each change to
the gathered copy on the launching machine; pull that copy back into scratch before a retried job resumes.

The shipper only watches files (it knows nothing of the trainer's loop): every `interval_s` a thread scans the
job's run dirs and sends, through a transport with GatheredRoot's methods (experiments/gather.py; the Ray
gatherer actor in a sweep, the GatheredRoot itself in tests):
- line files (.csv, .jsonl): the complete lines past the offset already shipped (`append`); a file that was
  replaced (a new inode) or shrank (a resume cut its rows) goes whole (`replace`);
- other files (status, config, videos, small files) whole when their (inode, mtime, size) changed; files
  larger than `chunk_bytes` (checkpoints) in chunks, at most `chunk_budget` chunks per scan, so a 155 MB
  checkpoint never holds back the rows and status behind it; deletions (rotated-out checkpoints) once no
  upload is under way, so the gathered copy always keeps a complete checkpoint.
Nothing is lost on a failed send (a network cut): the thread backs off and sends again from what the gathered
copy confirmed. A send refused for a stale epoch (the job was retried on another node) stops the shipper.
"""
from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from experiments.gather import GatherError, _transient

LINE_SUFFIXES = (".csv", ".jsonl")
CHUNK_BYTES = 4 << 20  # 4 MiB per chunk
CHUNK_BUDGET = 8  # chunks of a large file per scan (the rest next scan, after the rows and status)


class TransportError(OSError):
    """A send that did not reach the gatherer (a network cut, a timeout): tried again later."""


@dataclass
class _Upload:
    rel: str
    signature: tuple
    file: object  # kept open: the trainer may delete the file (a rotated checkpoint) mid-upload
    size: int
    sent: int = 0


class Shipper:
    """Ships the run dirs `run_dirs` (inside `scratch_root`, whose layout mirrors the runs root) via `transport`
    under lease `epoch`. `start()` runs the thread; `stop()` ships what is left and joins it."""

    def __init__(self, transport, scratch_root: Path, run_dirs: list[Path], epoch: int, interval_s: float = 0.5,
                 chunk_bytes: int = CHUNK_BYTES, chunk_budget: int = CHUNK_BUDGET):
        self.transport, self.root = transport, Path(scratch_root)
        self.run_dirs, self.epoch = [Path(d) for d in run_dirs], epoch
        self.interval_s, self.chunk_bytes, self.chunk_budget = interval_s, chunk_bytes, chunk_budget
        self.lines: dict[str, tuple[int, int]] = {}  # rel -> (inode, offset shipped)
        self.whole: dict[str, tuple] = {}  # rel -> signature shipped
        self.upload: _Upload | None = None
        self.fenced: str | None = None  # why shipping stopped for good (a stale epoch)
        self.failures = 0  # sends that failed in a row (a network cut)
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- what is already there (pulled from the gathered copy) ----------------------------------------------
    def mark_shipped(self) -> None:
        """Take the files now in the run dirs as shipped (they were just pulled from the gathered copy)."""
        for rel, path in self._files().items():
            st = path.stat()
            if rel.endswith(LINE_SUFFIXES):
                self.lines[rel] = (st.st_ino, st.st_size)
            else:
                self.whole[rel] = _signature(st)

    # ---- one scan ----------------------------------------------------------------------------------------------
    def scan(self) -> bool:
        """Ship the changes seen now; True when everything is shipped. Raises TransportError and GatherError."""
        files = self._files()
        for rel, path in files.items():  # rows, events and status first: they are small and read live
            if rel.endswith(LINE_SUFFIXES):
                self._ship_lines(rel, path)
        for rel, path in files.items():
            if not rel.endswith(LINE_SUFFIXES) and (self.upload is None or self.upload.rel != rel):
                self._ship_whole(rel, path)
        self._continue_upload()
        if self.upload is None:
            for rel in [r for r in list(self.lines) + list(self.whole) if r not in files]:
                self.transport.remove(rel, self.epoch)
                self.lines.pop(rel, None)
                self.whole.pop(rel, None)
        return self.upload is None and self._pending(files) == 0

    def _files(self) -> dict[str, Path]:
        found = {}
        for run_dir in self.run_dirs:
            if run_dir.is_dir():
                for path in run_dir.rglob("*"):
                    if not _transient(path.name) and path.is_file():
                        found[path.relative_to(self.root).as_posix()] = path
        return found

    def _pending(self, files: dict[str, Path]) -> int:
        """Files with changes not shipped (after a scan: those a later scan must send)."""
        count = 0
        for rel, path in files.items():
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if rel.endswith(LINE_SUFFIXES):
                inode, offset = self.lines.get(rel, (None, -1))
                count += inode != st.st_ino or _complete_size(path, offset) != offset
            else:
                count += self.whole.get(rel) != _signature(st)
        return count + sum(r not in files for r in list(self.lines) + list(self.whole))

    def _ship_lines(self, rel: str, path: Path) -> None:
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                inode, offset = self.lines.get(rel, (None, 0))
                if inode != st.st_ino or st.st_size < offset:  # replaced or cut: send it whole
                    data = _whole_lines(f.read())
                    self.transport.replace(rel, data, self.epoch)
                    self.lines[rel] = (st.st_ino, len(data))
                    return
                f.seek(offset)
                data = _whole_lines(f.read(st.st_size - offset))
        except FileNotFoundError:
            return
        if data:
            confirmed = self.transport.append(rel, offset, data, self.epoch)
            # the gathered copy's size: offset + len(data), or less (it lacks bytes: resend from there)
            self.lines[rel] = (inode, min(confirmed, offset + len(data)))

    def _ship_whole(self, rel: str, path: Path) -> None:
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            return
        st = os.fstat(f.fileno())
        signature = _signature(st)
        if self.whole.get(rel) == signature:
            f.close()
            return
        if st.st_size <= self.chunk_bytes:
            with f:
                data = f.read()
            self.transport.replace(rel, data, self.epoch)
            self.whole[rel] = signature
        elif self.upload is None:  # one large upload at a time; others wait for a later scan
            self.transport.begin(rel, self.epoch)
            self.upload = _Upload(rel, signature, f, st.st_size)
        else:
            f.close()

    def _continue_upload(self) -> None:
        up = self.upload
        if up is None:
            return
        for _ in range(self.chunk_budget):
            if up.sent >= up.size:
                break
            up.file.seek(up.sent)
            data = up.file.read(min(self.chunk_bytes, up.size - up.sent))
            confirmed = self.transport.chunk(up.rel, up.sent, data, self.epoch)
            up.sent = min(confirmed, up.sent + len(data))
        if up.sent >= up.size:
            self.transport.commit(up.rel, up.size, self.epoch)
            up.file.close()
            self.whole[up.rel] = up.signature
            self.upload = None

    # ---- the thread --------------------------------------------------------------------------------------------
    def start(self) -> Shipper:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="run-shipper", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self._delay()):
            self.try_scan()

    def _delay(self) -> float:
        return min(self.interval_s * 2 ** min(self.failures, 5), 30.0)  # back off while sends fail

    def try_scan(self) -> bool:
        """One scan as the shipping thread runs it: a failure is counted (failures, last_error) rather than
        raised, a stale epoch fences the shipper; True when everything is shipped."""
        if self.fenced:
            return False
        try:
            done = self.scan()
            if self.failures:
                print(f"gather: sending again after {self.failures} failed tries", file=sys.stderr, flush=True)
            self.failures, self.last_error = 0, None
            return done
        except GatherError as e:
            if "is stale" in str(e):
                self.fenced = str(e)
                print(f"gather: stopped: {e}", file=sys.stderr, flush=True)
                return False
            self._failed(e)
        except (TransportError, OSError) as e:
            self._failed(e)
        return False

    def _failed(self, error: BaseException) -> None:
        self.failures += 1
        if self.upload is not None and isinstance(error, GatherError):
            self.upload.file.close()  # e.g. an upload the gatherer lost: start it over
            self.upload = None
        message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        if message != self.last_error:
            print(f"gather: send failed ({message}); the run's files stay in scratch and are sent again",
                  file=sys.stderr, flush=True)
        self.last_error = message

    def stop(self, timeout_s: float = 600.0) -> bool:
        """Stop the thread and ship everything left; True when the gathered copy holds every change."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        deadline = time.monotonic() + timeout_s
        while not self.fenced:
            if self.try_scan():
                return True
            if time.monotonic() > deadline:
                break
            time.sleep(0 if self.failures == 0 else min(self._delay(), max(deadline - time.monotonic(), 0)))
        if self.upload is not None:
            self.upload.file.close()
        return False


def pull(source, run_dir_rels: list[str], scratch_root: Path, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Make each run dir in scratch a copy of the gathered one (`source`: listing/read of GatheredRoot); the
    bytes pulled. What scratch held of them before is removed first: the gathered copy is what resumes."""
    total = 0
    for run_rel in run_dir_rels:
        local = Path(scratch_root) / run_rel
        shutil.rmtree(local, ignore_errors=True)
        local.mkdir(parents=True, exist_ok=True)
        for rel, size in source.listing(run_rel):
            target = Path(scratch_root) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as f:
                offset = 0
                while offset < size:
                    data = source.read(rel, offset, min(chunk_bytes, size - offset))
                    if not data:
                        break  # the file shrank while read: a later scan resends it whole
                    f.write(data)
                    offset += len(data)
            total += offset
    return total


def _signature(st: os.stat_result) -> tuple:
    return st.st_ino, st.st_mtime_ns, st.st_size


def _whole_lines(data: bytes) -> bytes:
    cut = data.rfind(b"\n")
    return data[:cut + 1] if cut >= 0 else b""


def _complete_size(path: Path, offset: int) -> int:
    """The size of `path` up to its last complete line, read from `offset` on (offset when nothing follows)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(offset, 0))
            tail = f.read()
    except FileNotFoundError:
        return offset
    return max(offset, 0) + len(_whole_lines(tail))
