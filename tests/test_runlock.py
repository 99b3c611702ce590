"""One writer per run directory (runlayout.RunLock): a second process is refused with one line naming the run
dir and the holder (host, pid, start time); a stale lock (its holder dead) is taken over; tested with real
processes."""
import errno
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tdmpc_glass import runlayout
from tdmpc_glass.runlayout import LOCK, RunLock, RunLockedError

ROOT = Path(__file__).resolve().parents[1]

# a process that takes the lock of the run dirs in argv, says so, and holds it until its stdin closes;
# refused, it prints the one-line error and exits 3
HOLDER = """
import sys
from tdmpc_glass.runlayout import RunLock, RunLockedError
try:
    with RunLock(sys.argv[1:], command="holder") as lock:
        print("held", [str(d) for d, _ in lock.taken_over], flush=True)
        sys.stdin.read()
except RunLockedError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(3)
"""


def holder(*dirs) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, *map(str, dirs)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return proc


def wait_held(proc) -> str:
    line = proc.stdout.readline()
    assert line.startswith("held"), proc.communicate()[1]
    return line


def test_a_second_process_on_a_locked_run_dir_is_refused_with_one_line_naming_dir_and_holder(tmp_path):
    run = tmp_path / "seed1"
    first = holder(run)
    try:
        wait_held(first)
        record = json.loads((run / LOCK).read_text())
        assert record["pid"] == first.pid and record["host"] == socket.gethostname() and record["started"]
        second = holder(tmp_path / "seed0", run)  # a batch that shares one run dir with the holder
        out, err = second.communicate(timeout=60)
        assert second.returncode == 3 and not out
        assert len(err.strip().splitlines()) == 1, err
        assert f"{run}: another process is writing this run" in err
        assert f"pid {first.pid} on host {socket.gethostname()} since {record['started']}" in err
        assert not (tmp_path / "seed0" / LOCK).exists()  # refused: it holds none of its dirs
    finally:
        first.communicate(timeout=60)  # closing stdin ends the holder
    assert first.returncode == 0 and not (run / LOCK).exists()  # released: the lock file is gone
    again = holder(run)
    assert wait_held(again).strip() == "held []"
    again.communicate(timeout=60)


def test_a_lock_whose_holder_was_killed_is_taken_over(tmp_path):
    run = tmp_path / "seed1"
    first = holder(run)
    wait_held(first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert json.loads((run / LOCK).read_text())["pid"] == first.pid  # the stale lock file stays
    second = holder(run)
    assert str(run) in wait_held(second)  # taken over, and said so
    assert json.loads((run / LOCK).read_text())["pid"] == second.pid
    second.communicate(timeout=60)
    assert second.returncode == 0


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_stale_lock_file_is_taken_over_and_reported(tmp_path):
    run = tmp_path / "seed1"
    run.mkdir()
    stale = {"host": socket.gethostname(), "pid": dead_pid(), "started": "2026-01-01T00:00:00+00:00"}
    (run / LOCK).write_text(json.dumps(stale))
    with RunLock([run]) as lock:
        assert lock.taken_over == [(run, stale)]
        assert json.loads((run / LOCK).read_text())["pid"] == os.getpid()
        with RunLock([run, tmp_path / "seed2"]) as inner:  # re-entrant in one process (launcher, then train)
            assert inner.taken_over == []
        assert json.loads((run / LOCK).read_text())["pid"] == os.getpid()  # still held by the outer lock
        assert not (tmp_path / "seed2" / LOCK).exists()
    assert not (run / LOCK).exists()


def test_without_flock_the_record_decides(tmp_path, monkeypatch):
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "no locks here")

    monkeypatch.setattr(runlayout.fcntl, "flock", no_flock)
    live, dead, foreign = tmp_path / "live", tmp_path / "dead", tmp_path / "foreign"
    for run, record in ((live, {"host": socket.gethostname(), "pid": os.getppid(), "started": "t0"}),
                        (dead, {"host": socket.gethostname(), "pid": dead_pid(), "started": "t1"}),
                        (foreign, {"host": "elsewhere", "pid": dead_pid(), "started": "t2"})):
        run.mkdir()
        (run / LOCK).write_text(json.dumps(record))
    with pytest.raises(RunLockedError) as refused:
        RunLock([live]).acquire()
    assert f"pid {os.getppid()} on host {socket.gethostname()} since t0" in str(refused.value)
    with pytest.raises(RunLockedError, match="on host elsewhere"):  # a pid on another host cannot be checked
        RunLock([foreign]).acquire()
    with RunLock([dead]) as lock:
        assert [d for d, _ in lock.taken_over] == [dead]
    assert not (dead / LOCK).exists()


def test_a_refused_batch_releases_the_dirs_it_had_taken(tmp_path):
    a, b = tmp_path / "seed1", tmp_path / "seed2"
    other = holder(b)
    try:
        wait_held(other)
        with pytest.raises(RunLockedError, match=f"{b}: another process .* pid {other.pid}"):
            RunLock([a, b]).acquire()
        assert not (a / LOCK).exists() and not RunLock.held_here()
        with RunLock([a]):  # a was let go
            pass
    finally:
        other.communicate(timeout=60)
