"""Fault injection: training killed (SIGKILL) at many points, seeded so a failure reproduces, then resumed with
the same command; a full disk; two writers on one run.

Kill points: inside a checkpoint write (half the temp file written), just before its rename, between the
seeds' checkpoint writes, in the middle of an evaluation, during the update burst and later update rounds,
in the middle of a CSV row, at random delays, and (through `python -m experiments.launch sweep`) a local sweep
job killed at file events and random delays. After every kill: every checkpoint file left loads with the
trainer's state template, and no CSV holds a duplicated row; after the final resume, eval.csv and train.csv
equal the uninterrupted run's bit for bit (timing columns aside: train_script.rows) and no temp file is left.

This file is also the killed process: `python tests/test_faults.py SPEC` trains (or launches) with the fault
hook SPEC names, the hook sending SIGKILL to its own process at the chosen event.

Counts are printed (`pytest -s`): fast `pytest tests/test_faults.py -m "not slow"`, all `pytest tests/test_faults.py`.
"""
import io
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KILLED = -signal.SIGKILL
KINDS = ("checkpoint_mid_write", "checkpoint_before_rename", "between_seed_checkpoints", "evaluation",
         "update_round", "csv_half_row", "delay")


# ---- the killed process -----------------------------------------------------------------------------------------

def install_fault(fault: dict) -> None:
    """Arrange for this process to SIGKILL itself at the fault's n-th event of its kind (1-based), after delay_ms
    for the kinds that run on (evaluation, update_round). `enospc` kinds raise a full disk instead. Each fault is
    installed at one of the seams the code names (tdmpc_glass/seams.py)."""
    import numpy as np

    from tdmpc_glass import seams

    kind, n, delay_s = fault["kind"], fault["n"], fault.get("delay_ms", 0) / 1000
    counter = itertools.count(1)

    def due() -> bool:
        return next(counter) == n

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def die_soon() -> None:
        threading.Timer(delay_s, die).start() if delay_s else die()

    def die_when_due() -> None:
        if due():
            die_soon()

    if kind in ("checkpoint_mid_write", "enospc_checkpoint"):
        def savez(f, **arrays):
            if not due():
                return np.savez(f, **arrays)
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            f.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
            f.flush()
            os.fsync(f.fileno())
            if kind == "enospc_checkpoint":
                raise OSError(28, "No space left on device")
            die()
        seams.install("checkpoint_savez", savez)
    elif kind == "checkpoint_before_rename":
        def replace(src, dst):
            if due():
                die()
            return os.replace(src, dst)
        seams.install("checkpoint_rename", replace)
    elif kind == "between_seed_checkpoints":
        seams.install("checkpoint_saved", die_when_due)
    elif kind == "evaluation":
        seams.install("eval_env_step", die_when_due)
    elif kind == "update_round":  # the n-th round that runs updates (n=1: the seeding burst of a fresh run)
        seams.install("update_round", die_when_due)  # the timer fires while the jitted updates run (or after)
    elif kind == "csv_half_row":
        def half_then_die(f, text):
            if not due():
                return f.write(text)
            f.write(text[:len(text) // 2])
            f.flush()
            die()
        seams.install("csv_row", half_then_die)
    elif kind != "delay":
        raise ValueError(f"unknown fault kind {kind}")


def child_main(spec: dict) -> int:
    if spec.get("fault"):
        install_fault(spec["fault"])
    if spec.get("launch"):
        from experiments.launch import main
        return main(spec["launch"])
    from train_script import tiny_config

    from tdmpc_glass.train import train
    cfg = tiny_config(**spec.get("train", {}))
    for key, value in spec.get("tracking", {}).items():  # exports (tests/test_tracking.py)
        setattr(cfg.tracking, key, value)
    return train(cfg, spec["seeds"], spec["run_dirs"], progress=False)


if __name__ == "__main__":  # started by `start` below, with the repository on PYTHONPATH
    sys.exit(child_main(json.loads(sys.argv[1])))


# ---- the tests --------------------------------------------------------------------------------------------------

from train_script import rows

from tdmpc_glass import checkpoint, runlayout

SEEDS = (1, 2)


def start(spec: dict) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, __file__, json.dumps(spec)], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def start_sweep(phase: Path, root: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "experiments.launch", "sweep", str(phase), "--seeds", "1-2",
                             "--runs-root", str(root), "--no-progress"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def finish(proc: subprocess.Popen, kill_when=None, timeout: float = 900) -> tuple[int, str]:
    """Wait for the process; SIGKILL its group as soon as `kill_when()` is true. (exit code, stderr)."""
    deadline = time.time() + timeout
    while proc.poll() is None:
        if kill_when is not None and kill_when():
            kill_group(proc)
            break
        assert time.time() < deadline, "the training process hung"
        time.sleep(0.02)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


class Counts:
    tried = killed = resumed_equal = 0


def check_after_kill(dirs, template) -> None:
    """What must hold at any moment: every checkpoint file loads, no CSV row is duplicated."""
    for d in dirs:
        for path in checkpoint.list_checkpoints(d / runlayout.CHECKPOINTS):
            checkpoint.load(path, template)  # raises on a half-written or damaged file
        for name in (runlayout.EVAL, runlayout.TRAIN):
            if (d / name).exists():
                complete = (d / name).read_text().splitlines(keepends=True)[1:]
                steps = [int(float(line.split(",", 1)[0])) for line in complete if line.endswith("\n")]
                assert steps == sorted(set(steps)), f"{d / name}: duplicated or unordered rows {steps}"


def check_equals_reference(dirs, reference) -> None:
    for d, ref in zip(dirs, reference.dirs):
        assert rows(d / runlayout.EVAL) == rows(ref / runlayout.EVAL), d
        assert rows(d / runlayout.TRAIN) == rows(ref / runlayout.TRAIN), d
        assert runlayout.read_status(d)["status"] == "done"
        assert all(json.loads(line) for line in (d / runlayout.EVENTS).read_text().splitlines())
        assert not list(d.rglob("*.tmp")), "a temp file was left"
        ckpts = checkpoint.list_checkpoints(d / runlayout.CHECKPOINTS)
        assert [p.name for p in ckpts] == ["step_0000000240.npz", "step_0000000320.npz"]
        _, meta = checkpoint.load(ckpts[-1], reference.state_template)
        assert meta["env_step"] == 320


def run_chain(faults, dirs, reference, counts: Counts) -> None:
    """Launch the tiny run with each fault in turn (each a SIGKILL), checking after each, then resume it to the
    end and compare with the uninterrupted reference run."""
    spec = {"seeds": list(SEEDS), "run_dirs": [str(d) for d in dirs]}
    for fault in faults:
        counts.tried += 1
        proc = start({**spec, "fault": fault})
        kill_at = time.time() + fault["after_s"] if fault["kind"] == "delay" else None
        code, err = finish(proc, (lambda at=kill_at: time.time() >= at) if kill_at else None)
        if code == 0:  # the run ended before the fault's event came: nothing left to kill
            break
        assert code == KILLED, f"{fault}: exit {code}\n{err[-3000:]}"
        counts.killed += 1
        check_after_kill(dirs, reference.state_template)
    code, err = finish(start(spec))
    assert code == 0, f"{err[-3000:]}\n" + "".join((d / runlayout.EVENTS).read_text() for d in dirs)
    check_equals_reference(dirs, reference)
    counts.resumed_equal += 1


@pytest.mark.slow
def test_kills_inside_a_checkpoint_write_and_an_evaluation_then_resume_equals_the_uninterrupted_run(
        trained_runs, tmp_path):
    counts = Counts()
    # save 3 is seed 1's checkpoint at env step 160 (saves 1-2: both seeds at 80): killed half-way through its
    # temp file, the batch resumes from 80; its next evaluation (at 160) is killed 30 env-pool steps in
    faults = [{"kind": "checkpoint_mid_write", "n": 3}, {"kind": "evaluation", "n": 30}]
    run_chain(faults, [tmp_path / f"seed{s}" for s in SEEDS], trained_runs, counts)
    print(f"\nfast faults: {counts.killed}/{counts.tried} kills, {counts.resumed_equal} resume(s) equal")
    assert counts.killed == 2


def random_faults(rng: random.Random, count: int, first: bool) -> list[dict]:
    """`count` kill points drawn from rng; the first of a fresh run hits the seeding burst of updates."""
    faults = []
    for i in range(count):
        kind = rng.choice(KINDS)
        if first and i == 0:
            kind = "update_round"
        fault = {"kind": kind, "n": {"checkpoint_mid_write": rng.randint(1, 3),
                                     "checkpoint_before_rename": rng.randint(1, 3),
                                     "between_seed_checkpoints": rng.choice([1, 3]),
                                     "evaluation": rng.randint(1, 80),
                                     "update_round": 1 if first and i == 0 else rng.randint(1, 6),
                                     "csv_half_row": rng.randint(1, 6), "delay": 0}[kind]}
        if kind in ("evaluation", "update_round"):
            fault["delay_ms"] = rng.choice([0, rng.randint(1, 300)])
        if kind == "delay":
            fault["after_s"] = round(rng.uniform(2.0, 14.0), 2)
        faults.append(fault)
    return faults


@pytest.mark.slow
@pytest.mark.parametrize("chain", range(4))
def test_random_kills_then_resume_equals_the_uninterrupted_run(chain, trained_runs, tmp_path):
    """Chains of seeded random kill points (at least 5 kills each: 20 over the 4 chains)."""
    rng, counts, fresh = random.Random(1000 + chain), Counts(), 0
    while counts.killed < 5:
        dirs = [tmp_path / f"try{fresh}" / f"seed{s}" for s in SEEDS]
        faults = random_faults(rng, 6, first=True)
        print(f"\nchain {chain}.{fresh}: {faults}")
        run_chain(faults, dirs, trained_runs, counts)
        fresh += 1
    print(f"chain {chain}: {counts.killed}/{counts.tried} kills, {counts.resumed_equal} resume(s) equal")


@pytest.mark.slow
def test_a_local_sweep_killed_at_file_events_and_random_delays_resumes_to_the_same_rows(trained_runs, tmp_path):
    from test_sweep import tiny_phase

    phase, root, rng, counts = tiny_phase(tmp_path), tmp_path / "runs", random.Random(7), Counts()
    dirs = [root / "tiny" / "default" / f"seed{s}" for s in SEEDS]

    def lines(path):
        return len(path.read_text().splitlines()) if path.exists() else 0

    triggers = [  # killed from outside, as a preempted node would be
        ("seed 2's first checkpoint appears", lambda: (dirs[1] / "checkpoints" / "step_0000000080.npz").exists()),
        ("a temp checkpoint file appears", lambda: any(d.glob("checkpoints/*.tmp") for d in dirs)),
        ("eval.csv of seed 1 reaches 3 rows", lambda: lines(dirs[0] / runlayout.EVAL) >= 4),
        ("train.csv of seed 2 reaches 5 rows", lambda: lines(dirs[1] / runlayout.TRAIN) >= 6),
    ]
    for name, when in triggers + [(f"after {d:.1f} s", d) for d in (rng.uniform(3, 12), rng.uniform(3, 12))]:
        counts.tried += 1
        began = time.time()
        condition = when if callable(when) else (lambda d=when, t0=began: time.time() - t0 >= d)
        code, err = finish(start_sweep(phase, root), condition)
        print(f"\nsweep killed when {name}: exit {code}")
        if code == 0:
            break
        assert code == KILLED, err[-3000:]
        counts.killed += 1
        check_after_kill(dirs, trained_runs.state_template)
    code, err = finish(start_sweep(phase, root))
    assert code == 0, err[-3000:]
    check_equals_reference(dirs, trained_runs)
    print(f"sweep: {counts.killed}/{counts.tried} kills, resumed equal")
    assert counts.killed >= 3


# ---- a full disk ------------------------------------------------------------------------------------------------

def one_line(err: str, fragment: str) -> bool:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return len(lines) == 1 and fragment in lines[0] and "Traceback" not in err


@pytest.mark.slow
def test_a_full_disk_while_checkpointing_keeps_the_last_checkpoint_then_resumes(trained_runs, tmp_path):
    dirs = [tmp_path / f"seed{s}" for s in SEEDS]
    spec = {"seeds": list(SEEDS), "run_dirs": [str(d) for d in dirs]}
    # the 4th save (seed 2 at env step 160) fails half-way with ENOSPC
    code, err = finish(start({**spec, "fault": {"kind": "enospc_checkpoint", "n": 4}}))
    assert code not in (0, KILLED), err[-3000:]
    assert f"disk full while writing {checkpoint.path_for(dirs[1] / 'checkpoints', 160)}" in err
    for d in dirs:  # seed 2 keeps its last good checkpoint, and no temp file is left
        assert not list(d.rglob("*.tmp"))
    assert [p.name for p in checkpoint.list_checkpoints(dirs[1] / "checkpoints")] == ["step_0000000080.npz"]
    check_after_kill(dirs, trained_runs.state_template)
    said_in_one_line = one_line(err, "disk full while writing")
    code, err = finish(start(spec))  # space is back
    assert code == 0, err[-3000:]
    check_equals_reference(dirs, trained_runs)
    assert said_in_one_line


def mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, check=False).returncode == 0


@pytest.mark.slow
def test_a_real_full_file_system_then_more_space_resumes_to_the_same_rows(trained_runs, tmp_path):
    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, "1200k"):  # room for two seeds' checkpoints (~370 kB each) and the CSVs, not four
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        dirs = [disk / f"seed{s}" for s in SEEDS]
        spec = {"seeds": list(SEEDS), "run_dirs": [str(d) for d in dirs]}
        code, err = finish(start(spec))
        assert code not in (0, KILLED) and "disk full while writing" in err, err[-3000:]
        assert not list(disk.rglob("*.tmp"))
        check_after_kill(dirs, trained_runs.state_template)
        assert all(checkpoint.list_checkpoints(d / "checkpoints") for d in dirs)
        said_in_one_line = one_line(err, "disk full while writing")
        subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
        code, err = finish(start(spec))
        assert code == 0, err[-3000:]
        check_equals_reference(dirs, trained_runs)
        assert said_in_one_line
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, check=False)


# ---- one writer per run -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_second_trainer_on_the_same_run_dirs_is_refused_with_one_line(trained_runs, tmp_path):
    dirs = [tmp_path / f"seed{s}" for s in SEEDS]
    spec = {"seeds": list(SEEDS), "run_dirs": [str(d) for d in dirs]}
    first = start(spec)
    try:
        deadline = time.time() + 600
        while not (dirs[0] / runlayout.LOCK).exists():
            assert first.poll() is None and time.time() < deadline, "the first trainer took no lock"
            time.sleep(0.05)
    except AssertionError:
        kill_group(first)
        first.communicate()
        raise
    code, err = finish(start(spec))
    assert first.wait(600) == 0
    assert code != 0 and one_line(err, "another process is writing this run")
    assert f"pid {first.pid}" in err
    check_equals_reference(dirs, trained_runs)  # the refused launch wrote nothing
