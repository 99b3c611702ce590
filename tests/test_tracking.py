"""Exports to TensorBoard and W&B follow the run's files exactly (live, after the fact, across kills), never
stop or change training, and every run records its provenance.

TensorBoard is read back with TensorBoard's own EventAccumulator (scalars are float32 there, so CSV values are
compared as float32); W&B offline runs with tdmpc_glass.tracking.wandb_files (W&B's transaction logs parsed
into wandb.proto records: W&B itself no longer ships a Python reader). No network: W&B runs offline, and the
failing tracker's server is a closed local port.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from train_script import rows, tiny_config

from tdmpc_glass import runlayout
from tdmpc_glass.config import ConfigError, TrackingConfig, build_config
from tdmpc_glass.tracking import wandb_files
from tdmpc_glass.tracking.feed import Feed, Sink, TrackingState
from tdmpc_glass.tracking.rows import read_rows

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("wall_time_s", "updates_per_s", "env_steps_per_s")  # differ between processes; the rest must not
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


# ---- reading exports back with the trackers' own readers ---------------------------------------------------------

def tensorboard_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / runlayout.TENSORBOARD), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def wandb_history(run_dir: Path) -> list[tuple[int, dict]]:
    """Every history row of the run's W&B run over all its processes' offline files, in file order."""
    run_id = TrackingState(run_dir).section("wandb")["id"]
    return [row for path in wandb_files.run_files(run_dir, run_id) for row in wandb_files.history(path)]


def csv_series(run_dir: Path, kind: str) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list] = {}
    for row in read_rows(run_dir / f"{kind}.csv"):
        for key, value in row.items():
            if key != "env_step" and value not in ("", None):
                out.setdefault(f"{kind}/{key}", []).append((int(float(row["env_step"])), float(value)))
    return out


def assert_tensorboard_equals_csvs(run_dir: Path, skip=()) -> None:
    tb = tensorboard_scalars(run_dir)
    for kind in ("eval", "train"):
        for tag, series in csv_series(run_dir, kind).items():
            if tag.split("/", 1)[1] in skip:
                continue
            assert tb.get(tag) == [(s, float(np.float32(v))) for s, v in series], (run_dir, tag)


def assert_wandb_equals_csvs(run_dir: Path, skip=()) -> None:
    history = wandb_history(run_dir)
    steps = [step for step, _ in history]
    assert steps == sorted(set(steps)), f"duplicated or unordered W&B steps {steps}"
    for kind in ("eval", "train"):
        for tag, series in csv_series(run_dir, kind).items():
            if tag.split("/", 1)[1] in skip:
                continue
            assert [(s, row[tag]) for s, row in history if tag in row] == series, (run_dir, tag)
    assert all(row["env_step"] == step for step, row in history)


def tracked(cfg, tensorboard=True, wandb="offline"):
    cfg.tracking.tensorboard, cfg.tracking.wandb = tensorboard, wandb
    return cfg


def copy_runs(trained_runs, dest: Path) -> list[Path]:
    out = []
    for d in trained_runs.dirs:
        target = dest / "tiny" / "default" / d.name
        shutil.copytree(d, target, ignore=shutil.ignore_patterns(runlayout.LOCK))
        out.append(target)
    return out


# ---- the step feed: each step once, the last held back -----------------------------------------------------------

class ListSink(Sink):
    name = "list"

    def __init__(self, holds=-1, fail_at=None):
        self.sent, self.holds, self.fail_at, self.opened = [], holds, fail_at, 0

    def open(self, sent):
        self.opened += 1
        return max(sent, self.holds)

    def send(self, step, values, media):
        if step == self.fail_at:
            raise OSError(28, "No space left on device")
        self.sent.append((step, values))

    def close(self):
        pass


def test_a_feed_sends_each_step_once_merged_and_holds_the_last_back_until_the_run_ends():
    sink, failures = ListSink(holds=40), []
    feed = Feed(sink, 0, lambda name, e: failures.append(name))
    for step, values in [(0, {"a": 1}), (40, {"a": 2}), (80, {"t": 3}), (80, {"e": 4}), (40, {"a": 9}),
                         (120, {"t": 5})]:
        feed.add(step, values, {})
    assert sink.sent == [(80, {"t": 3, "e": 4})]  # 0 and 40 held by the sink already; 120 held back
    feed.close(final=False)
    assert sink.sent == [(80, {"t": 3, "e": 4})] and feed.sent == 80
    feed = Feed(sink, 80, lambda name, e: failures.append(name))
    feed.add(120, {"t": 5}, {})
    feed.add(120, {"e": 6}, {})
    feed.close(final=True)
    assert sink.sent[-1] == (120, {"t": 5, "e": 6}) and not failures


def test_a_feed_with_nothing_new_opens_nothing_and_a_failing_sink_is_reported_once():
    sink = ListSink()
    feed = Feed(sink, 120, lambda name, e: None)
    feed.add(80, {"a": 1}, {})
    feed.add(120, {"a": 1}, {})
    feed.close(final=True)
    assert sink.opened == 0
    failures = []
    feed = Feed(ListSink(fail_at=40), -1, lambda name, e: failures.append((name, str(e))))
    for step in (0, 40, 80, 120):
        feed.add(step, {"a": step}, {})
    feed.close(final=True)
    assert len(failures) == 1 and "No space left" in failures[0][1] and feed.sent == 0


# ---- config ----------------------------------------------------------------------------------------------------

def test_tracking_keys_validate_and_may_change_on_resume():
    cfg = build_config([("command line", {"tracking.wandb": False, "tracking.tensorboard": True})])
    assert cfg.tracking.wandb == "off" and cfg.tracking.tensorboard  # YAML's bare `off`
    with pytest.raises(ConfigError, match="tracking.wandb: 'sometimes' is not one of off, offline, online"):
        build_config([("command line", {"tracking.wandb": "sometimes"})])
    old = {"train": {"steps": 10}, "task": "hopper-hop"}  # a run dir written before these keys existed
    new = {"train": {"steps": 10}, "task": "hopper-hop", "tracking": {"wandb": "online"},
           "runtime": {"deterministic_ops": True}}
    assert runlayout.config_difference(new, old) is None
    from tdmpc_glass.resume import config_fingerprint, fingerprint_difference
    assert fingerprint_difference(config_fingerprint(tiny_config()), config_fingerprint(tracked(tiny_config()))) is None


def test_deterministic_ops_reach_xla_flags_before_jax_starts():
    code = ("from tdmpc_glass.config import Config; from tdmpc_glass import provenance; import os, jax; "
            "c = Config(); c.runtime.deterministic_ops = True; print(provenance.apply_runtime(c)); "
            "jax.devices(); print(os.environ['XLA_FLAGS']); "
            "print(provenance.record(c, 0, False)['deterministic_ops_in_flags'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "XLA_FLAGS": "--xla_cpu_enable_fast_math=false"})
    assert out.stdout.split("\n")[:3] == ["None", "--xla_cpu_enable_fast_math=false --xla_gpu_deterministic_ops=true",
                                          "True"], out.stderr[-2000:]


# ---- live, after the fact, broken --------------------------------------------------------------------------------

def test_a_tracked_run_exports_exactly_its_csvs_and_records_its_provenance(trained_runs, tmp_path):
    from tdmpc_glass.train import train

    dirs = [tmp_path / "tiny" / "default" / f"seed{s}" for s in trained_runs.seeds]
    assert train(tracked(tiny_config()), list(trained_runs.seeds), dirs, progress=False) == 0
    for run, ref in zip(dirs, trained_runs.dirs):
        assert rows(run / runlayout.EVAL) == rows(ref / runlayout.EVAL)  # tracking changes no result
        assert rows(run / runlayout.TRAIN) == rows(ref / runlayout.TRAIN)
        assert_tensorboard_equals_csvs(run)
        assert_wandb_equals_csvs(run)
        (life,) = [json.loads(line) for line in (run / runlayout.PROVENANCE).read_text().splitlines()]
        assert life["event"] == "start" and life["devices"]["count"] >= 1 and life["versions"]["jax"]
        assert set(life["versions"]) >= {"python", "jax", "jaxlib", "equinox", "optax", "mujoco", "dm-control"}
        assert "commit" in life["git"] and "xla_flags" in life and life["allocator"] in ("tcmalloc", "system")
        state = json.loads((run / runlayout.TRACKING).read_text())
        assert state["tensorboard"]["sent"] == state["wandb"]["sent"] == 320
    # the export command, twice: nothing left to send, no new files
    from experiments.export import export_main
    before = sorted(p.name for d in dirs for p in (d / runlayout.TENSORBOARD).iterdir())
    for _ in range(2):
        assert export_main([str(tmp_path), "--to", "tensorboard", "--to", "wandb"]) == 0
    assert sorted(p.name for d in dirs for p in (d / runlayout.TENSORBOARD).iterdir()) == before
    assert len(list((dirs[0] / runlayout.WANDB).glob("offline-run-*"))) == 1


def test_export_after_the_fact_sends_the_run_then_nothing(trained_runs, tmp_path, capsys):
    from experiments.export import export_main

    dirs = copy_runs(trained_runs, tmp_path)
    assert export_main([str(tmp_path), "--to", "tensorboard", "--to", "wandb"]) == 0
    first = capsys.readouterr().out
    steps = len({s for kind in ("eval", "train") for series in csv_series(dirs[0], kind).values() for s, _ in series})
    assert first.count(f"sent tensorboard {steps} steps, wandb {steps} steps") == 2, first
    for run in dirs:
        assert_tensorboard_equals_csvs(run)
        assert_wandb_equals_csvs(run)
    assert export_main([str(tmp_path), "--to", "tensorboard", "--to", "wandb"]) == 0
    assert capsys.readouterr().out.count("sent tensorboard 0 steps, wandb 0 steps") == 2
    assert export_main([str(tmp_path / "nowhere"), "--to", "wandb"]) == 2
    assert "error: " in capsys.readouterr().err


def test_a_broken_tracker_leaves_the_csvs_of_an_untracked_run_and_says_so_once(trained_runs, tmp_path, capfd,
                                                                                monkeypatch):
    from tdmpc_glass.train import train

    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens: no network
    monkeypatch.setenv("WANDB_API_KEY", "bad")  # a bad key
    dirs = [tmp_path / f"seed{s}" for s in trained_runs.seeds]
    for d in dirs:  # the export dir cannot be made: a file holds its name (as a full disk refuses it)
        d.mkdir()
        (d / runlayout.TENSORBOARD).write_text("in the way")
    assert train(tracked(tiny_config(), wandb="online"), list(trained_runs.seeds), dirs, progress=False) == 0
    err = capfd.readouterr().err
    for run, ref in zip(dirs, trained_runs.dirs):
        assert rows(run / runlayout.EVAL) == rows(ref / runlayout.EVAL)
        assert rows(run / runlayout.TRAIN) == rows(ref / runlayout.TRAIN)
        events = [json.loads(line) for line in (run / runlayout.EVENTS).read_text().splitlines()]
        failed = sorted(e["tracker"] for e in events if e["event"] == "tracking_failed")
        assert failed == ["tensorboard", "wandb"], events
        assert err.count(f"warning: {run}: the tensorboard export failed") == 1
        assert err.count(f"warning: {run}: the wandb export failed") == 1


# ---- kills and resumes -------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_exports_equal_the_csvs_after_three_kills_and_resumes(trained_runs, tmp_path, monkeypatch):
    from test_faults import KILLED, check_equals_reference, finish, start

    # each process its own W&B service (this one's, inherited, would still hold the run a killed child opened)
    monkeypatch.delenv("WANDB_SERVICE", raising=False)
    dirs = [tmp_path / f"seed{s}" for s in trained_runs.seeds]
    spec = {"seeds": list(trained_runs.seeds), "run_dirs": [str(d) for d in dirs],
            "tracking": {"tensorboard": True, "wandb": "offline"}}
    # killed in the update burst, half-way through a CSV row, and in an evaluation
    faults = [{"kind": "update_round", "n": 2, "delay_ms": 50}, {"kind": "csv_half_row", "n": 3},
              {"kind": "evaluation", "n": 40}]
    for fault in faults:
        code, err = finish(start({**spec, "fault": fault}))
        assert code == KILLED, f"{fault}: exit {code}\n{err[-3000:]}"
    code, err = finish(start(spec))
    assert code == 0, err[-3000:]
    check_equals_reference(dirs, trained_runs)
    for run in dirs:
        assert len(list((run / runlayout.TENSORBOARD).iterdir())) >= 3  # one event file per process that sent
        assert len(list((run / runlayout.WANDB).glob("offline-run-*"))) >= 3
        assert "tracking_failed" not in (run / runlayout.EVENTS).read_text()
        assert_tensorboard_equals_csvs(run, skip=TIMING)
        assert_wandb_equals_csvs(run, skip=TIMING)
        lives = [json.loads(line)["event"] for line in (run / runlayout.PROVENANCE).read_text().splitlines()]
        assert lives[0] == "start" and lives.count("resume") >= 2
