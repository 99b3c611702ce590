"""The training loop as a user runs it: outputs, resume after SIGKILL, signals, no retracing."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tdmpc_glass.train import Trainer, train
from train_script import assert_extension_reproduces, rows, tiny_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).parent / "train_script.py"


def launch(run_dirs, seeds=(1, 2), planner=None, progress=False, **train):
    spec = json.dumps({"seeds": list(seeds), "run_dirs": [str(d) for d in run_dirs], "train": train,
                       "planner": planner or {}, "progress": progress})
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, str(SCRIPT), spec], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_run_writes_the_runs_layout(trained_runs):
    assert trained_runs.exit_code == 0
    for d in trained_runs.dirs:
        status = json.loads((d / "status.json").read_text())
        assert status["status"] == "done" and status["env_step"] == 320
        evals = rows(d / "eval.csv")
        assert [int(r["env_step"]) for r in evals] == [0, 80, 160, 240, 320]
        assert all(r["mppi_return"] != "" and r["pi_return"] != "" for r in evals)
        train = rows(d / "train.csv")
        assert train and {"consistency_loss", "value_loss", "pi_loss", "reward_loss"} <= set(train[0])
        events = [json.loads(line)["event"] for line in (d / "events.jsonl").read_text().splitlines()]
        assert events[0] == "start" and events[-1] == "done"
        assert len(list((d / "checkpoints").glob("step_*.npz"))) == 2  # the last two are kept
    # the two seeds are different runs, not copies
    assert rows(trained_runs.dirs[0] / "train.csv") != rows(trained_runs.dirs[1] / "train.csv")


def test_no_retracing_across_rounds(trained_runs):
    # 320 env steps = 4 episodes = 16 rounds of 5 ticks; compiled variants must not grow with the round count
    # step kinds: exploring (no updates, no planning) with or without an episode's reset row (2); mid-round
    # steps planning the next actions, with or without a reset row (2); the seeding burst; a round's last step
    # with its updates (1): 6 here, and never more however long the run
    assert trained_runs.traces["round"] == 6
    # standalone acting: an episode's first planned step, eval planner, eval policy prior
    assert trained_runs.traces["act"] == 3


@pytest.mark.slow
def test_stopping_and_extending_in_process_reproduces_the_run(trained_runs, tmp_path):
    assert_extension_reproduces(trained_runs.cfg, trained_runs.seeds, trained_runs.dirs, tmp_path, stop_at=160)


@pytest.mark.slow
def test_resume_after_sigkill_reproduces_the_uninterrupted_run(trained_runs, tmp_path):
    dirs = [tmp_path / "seed1", tmp_path / "seed2"]
    proc = launch(dirs)
    deadline = time.time() + 600
    while not list((dirs[1] / "checkpoints").glob("step_0000000160.npz")):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((dirs[0] / "status.json").read_text())["status"] == "running"
    proc = launch(dirs)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
    # the killed-and-resumed subprocess run equals the uninterrupted in-process one
    for d, ref in zip(dirs, trained_runs.dirs):
        assert rows(d / "eval.csv") == rows(ref / "eval.csv")
        assert rows(d / "train.csv") == rows(ref / "train.csv")
        assert "resume" in (d / "events.jsonl").read_text()


@pytest.mark.slow
def test_sigterm_checkpoints_and_marks_interrupted_then_resumes(tmp_path):
    dirs = [tmp_path / "seed1"]
    proc = launch(dirs, seeds=(1,))
    deadline = time.time() + 600
    while not (dirs[0] / "train.csv").exists():  # past compilation, inside the loop
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    status = json.loads((dirs[0] / "status.json").read_text())
    assert status["status"] == "interrupted"
    assert list((dirs[0] / "checkpoints").glob("step_*.npz"))
    assert "interrupted" in (dirs[0] / "events.jsonl").read_text()
    proc = launch(dirs, seeds=(1,))
    assert proc.communicate(timeout=900)[0] is not None and proc.returncode == 0
    assert json.loads((dirs[0] / "status.json").read_text())["status"] == "done"


@pytest.mark.slow
def test_non_finite_training_marks_the_seed_failed_and_names_the_term(tmp_path):
    cfg = tiny_config(steps=240, eval_freq=10_000)
    cfg.optim.lr = 1e38  # the first updates overflow the parameters
    cfg.optim.grad_clip_norm = 1e38
    run = tmp_path / "seed1"
    trainer = Trainer(cfg, [1], [run], progress=False)
    try:
        assert trainer.run() == 1
    finally:
        trainer.close()
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    bad = [e for e in events if e["event"] == "nonfinite"]
    assert len(bad) == 1 and bad[0]["term"] and bad[0]["env_step"] > 0 and "update" in bad[0]
    assert json.loads((run / "status.json").read_text())["status"] == "failed"
    # the last good checkpoint is kept: none was written after the failure
    steps = [int(p.stem.split("_")[1]) for p in (run / "checkpoints").glob("step_*.npz")]
    assert all(s < bad[0]["env_step"] for s in steps)


@pytest.mark.slow
def test_one_call_per_step_gives_the_two_call_loops_results(trained_runs, tmp_path):
    # the fused loop (the fixture: the next actions planned inside each step's call) against planning in a call
    # of its own before each step, the order of the loop before the calls were fused: bit for bit on CPU
    dirs = [tmp_path / "seed1", tmp_path / "seed2"]
    trainer = Trainer(trained_runs.cfg, list(trained_runs.seeds), dirs, progress=False, fused=False)
    try:
        assert trainer.run() == 0
    finally:
        trainer.close()
    for d, ref in zip(dirs, trained_runs.dirs):
        assert rows(d / "eval.csv") == rows(ref / "eval.csv")
        assert rows(d / "train.csv") == rows(ref / "train.csv")


def test_random_streams_can_be_held_or_varied_one_at_a_time(tmp_path):
    import jax
    import numpy as np

    from tdmpc_glass import agent
    from tdmpc_glass.train import explore_actions

    def streams(**fields):
        cfg = tiny_config()
        for name, value in fields.items():
            setattr(cfg.streams, name, value)
        trainer = Trainer(cfg, [1, 2], [tmp_path / "a", tmp_path / "b"], progress=False)
        try:
            loop = trainer.restore_or_init()
            keys = np.asarray(loop.states.tree().key)
            explore = [explore_actions([s], 0, 2, 4)[0] for s in trainer.run_seeds]
            return keys, explore, np.asarray(trainer.noise_keys)
        finally:
            trainer.close()

    same = lambda a, b: np.array_equal(a, b)
    keys, explore, noise = streams()  # the default: the run's seed drives all three, as before the keys existed
    assert same(keys[0], agent.init_state(tiny_config(), 15, 4, 1).key) and same(noise, keys)
    assert not same(keys[0], keys[1]) and not same(explore[0], explore[1])
    keys, explore, noise = streams(init=7)  # hold the initialisation, vary exploration and planner noise
    assert same(keys[0], keys[1]) and same(keys[0], jax.random.PRNGKey(7))
    assert not same(explore[0], explore[1]) and not same(noise[0], noise[1])
    keys, explore, noise = streams(explore=5)  # hold exploration
    assert same(explore[0], explore[1]) and not same(keys[0], keys[1]) and not same(noise[0], noise[1])
    keys, explore, noise = streams(planner=3)  # hold planner noise
    assert same(noise[0], noise[1]) and not same(keys[0], keys[1]) and not same(explore[0], explore[1])


@pytest.mark.slow
def test_an_interrupt_during_evaluation_stops_it_at_once_and_resume_redoes_it(tmp_path):
    # a slow evaluation (a 200-step episode with a large planner), watched through its progress bar
    dirs = [tmp_path / "seed1"]
    slow = dict(planner={"num_samples": 512, "iterations": 6}, episode_length=200, steps=400, eval_freq=400,
                expl_until=400, checkpoint_freq=400)
    proc = launch(dirs, seeds=(1,), progress=True, **slow)
    seen, deadline = "", time.time() + 600
    while "evaluation:" not in seen:
        assert proc.poll() is None and time.time() < deadline, seen
        seen += os.read(proc.stderr.fileno(), 4096).decode(errors="replace")
    time.sleep(1.0)  # inside the evaluation's episodes
    signalled = time.time()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130 and time.time() - signalled < 10
    assert not (dirs[0] / "eval.csv").exists() or rows(dirs[0] / "eval.csv") == []  # nothing half-written
    assert json.loads((dirs[0] / "status.json").read_text())["status"] == "interrupted"
    proc = launch(dirs, seeds=(1,), **slow)
    assert proc.communicate(timeout=900) is not None and proc.returncode == 0
    assert [int(r["env_step"]) for r in rows(dirs[0] / "eval.csv")] == [0, 400, 800]  # the evaluation at 0 redone


@pytest.mark.slow
def test_overlapped_updates_are_a_fixed_run_that_resumes_identically(trained_runs, tmp_path):
    # train.overlap_updates: a round's updates run while the envs step its last agent step, so they sample the
    # buffer without that step's rows: a different run from the default order, but one its seeds fix
    cfg = tiny_config(overlap_updates=True)
    full = [tmp_path / "seed1", tmp_path / "seed2"]
    assert train(cfg, list(trained_runs.seeds), full, progress=False) == 0
    assert rows(full[0] / "train.csv") != rows(trained_runs.dirs[0] / "train.csv")
    assert_extension_reproduces(cfg, trained_runs.seeds, full, tmp_path / "parts", stop_at=160)


@pytest.mark.parametrize("overlap", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_each_agent_step_is_one_jitted_call_and_overlap_adds_one_per_round(tmp_path, overlap):
    # the tiny config: 5 ticks per round, 20 per episode, 4 env steps per tick, exploring for the first 80
    cfg = tiny_config(overlap_updates=overlap)
    # the fixture's seeds and shapes, so the default order's programs come from the compilation cache
    trainer = Trainer(cfg, [1, 2], [tmp_path / "seed1", tmp_path / "seed2"], progress=False)
    try:
        loop = trainer.restore_or_init()
        for _ in range(8):  # 40 ticks: two episodes; rounds 4 (the seeding burst) to 8 run updates
            loop = trainer.advance(loop)
    finally:
        trainer.close()
    calls = trainer.calls
    assert calls["step"] == 40 + (5 if overlap else 0)
    assert calls["act"] == 1  # the second episode's first step; the first episode explores
