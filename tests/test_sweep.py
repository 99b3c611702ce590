"""`sweep`: bad input exits 2 before anything runs; the local backend runs jobs one after another; the Ray
backend runs each (variant, seed group) as a task, retries a task whose worker died, reports failures, and a
real tiny phase trains to the end on a local Ray (then a re-run skips its finished seeds)."""
import json
import os
import re
import time
from pathlib import Path

import pytest
import yaml

from experiments import launch, sweep
from experiments.phases import ROOT, resolve, resolve_variants
from tdmpc_glass.config import flatten, to_dict
from tdmpc_glass.runlayout import CONFIG, EVAL, EVENTS, STATUS

# pytest puts tests/ (this file's folder, not a package) first on the import path: the helpers of other test files
from test_cli import (  # fixtures and helpers of the launcher's command-line tests
    BAD_PHASES, assert_one_line_error, cli, fake_train, runs, tree, write_phase,
)
from train_script import tiny_config

__all__ = ["fake_train", "runs"]  # fixtures used by name below


# ---- bad input: exit 2, one line naming file and key, nothing written, no Ray started ---------------------------

@pytest.mark.parametrize("backend", ["local", "ray"])
def test_a_sweep_of_a_phase_that_does_not_exist_exits_2_naming_it(backend, runs, tmp_path):
    before = tree(runs)
    assert_one_line_error(cli("sweep", "nosuchphase", "--backend", backend, "--runs-root", runs),
                          "unknown phase 'nosuchphase'", "phases/nosuchphase.yaml")
    assert_one_line_error(cli("sweep", tmp_path / "gone.yaml", "--backend", backend, "--runs-root", runs),
                          "gone.yaml does not exist")
    assert tree(runs) == before


@pytest.mark.parametrize("case", ["mistyped key", "missing parent", "cyclic extends", "variant with unknown key",
                                  "unknown variant", "wrong type"])
def test_bad_phase_files_exit_2_through_sweep_too(case, tmp_path, runs):
    files, phase, extra, fragments = BAD_PHASES[case]
    for stem, fields in files.items():
        write_phase(tmp_path, stem, **fields)
    before = tree(runs)
    result = cli("sweep", tmp_path / f"{phase}.yaml", "--backend", "ray", "--runs-root", runs, *extra)
    assert_one_line_error(result, *fragments)
    assert tree(runs) == before


@pytest.mark.parametrize("args, fragment", [
    (["--address", "auto"], "--address and --num-gpus belong to --backend ray"),
    (["--backend", "ray", "--seeds-per-task", "0"], "--seeds-per-task: must be >= 1"),
    (["--backend", "ray", "--num-gpus", "-1"], "--num-gpus: must be >= 0"),
    (["--seeds", "2-1"], "--seeds: range '2-1' runs backwards"),
])
def test_bad_sweep_flags_exit_2(args, fragment, runs):
    assert_one_line_error(cli("sweep", "demo", "--runs-root", runs, *args), fragment)


# ---- jobs and the local backend (train replaced by a recorder) ------------------------------------------------

def two_variant_phase(folder: Path) -> Path:
    return write_phase(folder, "sw", name="sw", description="two variants", extends="demo", seeds="1-3",
                       variants={"k8": {"train.k_update": 8}, "k16": {"train.k_update": 16}})


def test_jobs_are_variants_times_seed_groups_with_absolute_run_dirs(tmp_path):
    plans = resolve_variants(str(two_variant_phase(tmp_path)))
    jobs = sweep.make_jobs(plans, [1, 2, 3], Path("relative-runs"), seeds_per_task=2)
    assert [(j.variant, j.seeds) for j in jobs] == [("k8", [1, 2]), ("k8", [3]), ("k16", [1, 2]), ("k16", [3])]
    for job in jobs:
        assert all(Path(d).is_absolute() and d.endswith(f"sw/{job.variant}/seed{s}")
                   for d, s in zip(job.run_dirs, job.seeds))
        assert [r["seed"] for r in job.records] == job.seeds
        assert job.records[0]["config"]["train"]["k_update"] == int(job.variant[1:])
    assert len(sweep.make_jobs(plans, [1, 2, 3], Path("r"))) == 2  # default: all seeds of a variant in one job


def test_local_sweep_runs_each_variant_once_and_prints_a_summary(tmp_path, runs, fake_train, capsys):
    calls, codes = fake_train
    codes += [0, 3]
    code = launch.main(["sweep", str(two_variant_phase(tmp_path)), "--seeds", "1-2", "--runs-root", str(runs),
                        "--steps", "4000"])
    assert code == 3  # non-zero when any job failed
    assert [(c["cfg"].train.k_update, c["seeds"], c["progress"]) for c in calls] == [(8, [1, 2], True),
                                                                                  (16, [1, 2], True)]
    assert calls[0]["run_dirs"] == [(runs / "sw" / "k8" / f"seed{k}").absolute() for k in (1, 2)]
    assert all(c["cfg"].train.steps == 4000 for c in calls)
    record = yaml.safe_load((runs / "sw" / "k16" / "seed2" / CONFIG).read_text())
    assert record["seed"] == 2 and record["phase"]["variant"] == "k16"
    out = capsys.readouterr().out.splitlines()
    assert out[-3:] == ["variant  seeds  exit", "k8       1-2    0", "k16      1-2    3"]


def test_local_sweep_stops_after_an_interrupt_and_says_what_did_not_start(tmp_path, runs, fake_train, capsys):
    calls, codes = fake_train
    codes += [130]
    code = launch.main(["sweep", str(two_variant_phase(tmp_path)), "--seeds-per-task", "1", "--runs-root",
                        str(runs)])
    assert code == 130 and len(calls) == 1
    out = capsys.readouterr().out
    assert "k8       1      130" in out and "k16      3      -     not started (interrupted)" in out


def test_sweep_refuses_a_run_dir_of_another_config_before_training_anything(tmp_path, runs, fake_train, capsys):
    calls, _ = fake_train
    phase = str(two_variant_phase(tmp_path))
    assert launch.main(["sweep", phase, "--variant", "k16", "--seeds", "2", "--runs-root", str(runs)]) == 0
    before = tree(runs)
    assert launch.main(["sweep", phase, "--seeds", "1-2", "--runs-root", str(runs), "--set", "optim.lr=1e-3"]) == 2
    assert f"sw/k16/seed2/{CONFIG} holds a different config: optim.lr" in capsys.readouterr().err
    assert tree(runs) == before and len(calls) == 1


def test_a_sweep_does_not_start_jobs_whose_seeds_all_ended_and_reports_earlier_failures(tmp_path, runs, fake_train,
                                                                                         capsys):
    calls, _ = fake_train
    phase = str(two_variant_phase(tmp_path))
    args = ["sweep", phase, "--seeds", "1-2", "--runs-root", str(runs), "--steps", "4000"]
    assert launch.main(args) == 0 and len(calls) == 2
    status = {"status": "done", "env_step": 4000}
    for variant, seed in (("k8", 1), ("k8", 2), ("k16", 1)):
        (runs / "sw" / variant / f"seed{seed}" / STATUS).write_text(json.dumps(status))
    capsys.readouterr()
    assert launch.main(args) == 0
    assert len(calls) == 3 and calls[-1]["run_dirs"][0].parent.name == "k16"  # k16 seed 2 was left to train
    assert "k8       1-2    0     already done" in capsys.readouterr().out
    (runs / "sw" / "k16" / "seed2" / STATUS).write_text(json.dumps({"status": "failed", "env_step": 80}))
    assert launch.main(args) == 1 and len(calls) == 3
    assert f"k16      1-2    1     seed 2 failed earlier (see {EVENTS})" in capsys.readouterr().out
    assert launch.main(args[:-1] + ["8000"]) == 0 and len(calls) == 5  # more steps: both have seeds to extend


def test_the_phase_P_runs_under_its_file_stem(runs, fake_train):
    calls, _ = fake_train
    assert launch.main(["sweep", "P", "--seeds", "1", "--runs-root", str(runs)]) == 0
    assert calls[0]["run_dirs"] == [(runs / "P_intrinsic" / "default" / "seed1").absolute()]
    record = yaml.safe_load((runs / "P_intrinsic" / "default" / "seed1" / CONFIG).read_text())
    assert record["phase"]["name"] == "P" and record["config"]["glass"]["intrinsic_coef"] == 0.1


# ---- what Ray workers get --------------------------------------------------------------------------------------

def test_worker_env_puts_the_repository_first_and_passes_jax_settings():
    environ = {"PYTHONPATH": f"/elsewhere{os.pathsep}{ROOT}", "JAX_COMPILATION_CACHE_DIR": "/c", "XLA_FLAGS": "--x",
               "MUJOCO_GL": "egl", "TDMPC_GLASS_RUNS": "/r", "CUDA_VISIBLE_DEVICES": "0,1", "HOME": "/h"}
    env = sweep.worker_env(1, environ)
    assert env == {"PYTHONPATH": f"{ROOT}{os.pathsep}/elsewhere", "JAX_COMPILATION_CACHE_DIR": "/c",
                   "XLA_FLAGS": "--x", "MUJOCO_GL": "egl", "TDMPC_GLASS_RUNS": "/r"}  # Ray sets the GPUs itself
    assert sweep.worker_env(0, environ)["JAX_PLATFORMS"] == "cpu"
    assert sweep.worker_env(0, {"JAX_PLATFORMS": "cuda"})["JAX_PLATFORMS"] == "cuda"  # the caller's choice wins
    assert sweep.worker_env(0.5, environ)["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"  # tasks share a GPU


def test_summary_and_exit_code():
    job = sweep.Job("x", "k8", [1, 2, 3], [], [])
    assert sweep.summary([sweep.Outcome(job, 0)]) == "variant  seeds  exit\nk8       1-3    0"
    assert sweep.exit_code([sweep.Outcome(job, 0), sweep.Outcome(job, 0)]) == 0
    assert sweep.exit_code([sweep.Outcome(job, 0), sweep.Outcome(job, 2), sweep.Outcome(job, 1)]) == 2
    assert sweep.exit_code([sweep.Outcome(job, 1), sweep.Outcome(job, 143)]) == 143


# ---- Ray ----------------------------------------------------------------------------------------------------------

def test_ray_runs_each_job_as_a_task_retries_a_dead_worker_and_reports_failures(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    from sweep_entries import fake_entry

    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))  # workers import sweep_entries from tests/
    monkeypatch.setenv("TDMPC_GLASS_PROBE", "passed")
    phase = write_phase(tmp_path, "fake", name="fake", extends="demo",
                        variants={"ok": {}, "fail": {}, "crash_once": {}})
    jobs = sweep.make_jobs(resolve_variants(str(phase)), [1], tmp_path / "runs")
    start = time.time()
    outcomes = sweep.run_ray(jobs, num_cpus=1, max_retries=1, local_cpus=2, entry=fake_entry)
    print(f"ray with 3 fake tasks: {time.time() - start:.1f} s")
    assert [(o.job.variant, o.code) for o in outcomes] == [("ok", 0), ("fail", 1), ("crash_once", 0)]
    assert outcomes[1].note == "RuntimeError: boom in fake/fail seeds 1"
    attempts = {v: [json.loads(line) for line in (tmp_path / "runs" / "fake" / v / "attempts").read_text().splitlines()]
                for v in ("ok", "fail", "crash_once")}
    assert [len(attempts[v]) for v in ("ok", "fail", "crash_once")] == [1, 1, 2]  # exceptions are not retried
    assert attempts["crash_once"][0]["pid"] != attempts["crash_once"][1]["pid"]  # a new worker took over
    for seen in attempts["ok"] + attempts["crash_once"]:
        assert seen["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)
        assert seen["JAX_PLATFORMS"] == "cpu" and seen["TDMPC_GLASS_PROBE"] == "passed"
    assert sweep.exit_code(outcomes) == 1
    assert re.search(r"\nfail +1 +1 +RuntimeError: boom", sweep.summary(outcomes))


def test_ray_refuses_what_no_task_could_get_and_an_unreachable_cluster(tmp_path, runs):
    pytest.importorskip("ray")
    before = tree(runs)
    result = cli("sweep", "demo", "--backend", "ray", "--num-gpus", "64", "--runs-root", runs)
    assert result.returncode == 2  # Ray's own log lines come first; ours is the last
    assert result.stderr.strip().splitlines()[-1].startswith("error: --num-gpus 64: the Ray cluster has")
    result = cli("sweep", "demo", "--backend", "ray", "--address", "auto", "--runs-root", runs)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --address auto: cannot reach a Ray cluster")
    assert tree(runs) == before


def tiny_phase(folder: Path) -> Path:
    """A phase extending demo with test_train's tiny setting (320 env steps; the same shapes, so the XLA
    programs that test compiled into the shared cache are reused)."""
    demo, tiny = flatten(to_dict(resolve("demo").cfg)), flatten(to_dict(tiny_config()))
    overrides = {k: v for k, v in tiny.items() if v != demo[k]}
    path = write_phase(folder, "tiny", name="tiny", description="a few hundred env steps", extends="demo",
                       seeds="1-2", overrides=overrides)
    cfg = resolve(str(path)).cfg
    assert cfg == tiny_config() and cfg.train.steps == 320 and cfg.train.eval_episodes == 2
    return path


@pytest.mark.slow  # ~3 min of XLA compilation on a cold cache; under a minute once test_train has filled it
def test_a_ray_sweep_of_a_tiny_phase_with_two_seeds_completes_and_a_rerun_skips_it(tmp_path):
    pytest.importorskip("ray")
    phase, root = tiny_phase(tmp_path), tmp_path / "runs"
    start = time.time()
    result = cli("sweep", phase, "--backend", "ray", "--seeds", "1-2", "--runs-root", root)
    print(f"ray sweep of the tiny phase: {time.time() - start:.1f} s")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-2:] == ["variant  seeds  exit", "default  1-2    0"]
    for seed in (1, 2):
        run = root / "tiny" / "default" / f"seed{seed}"
        status = json.loads((run / STATUS).read_text())
        assert status["status"] == "done" and status["env_step"] == 320
        evals = (run / EVAL).read_text().splitlines()
        assert [line.split(",")[0] for line in evals[1:]] == ["0", "80", "160", "240", "320"]
        assert yaml.safe_load((run / CONFIG).read_text())["seed"] == seed
    before = {p: p.stat().st_mtime_ns for p in root.rglob(EVAL)}
    again = cli("sweep", phase, "--backend", "ray", "--seeds", "1-2", "--runs-root", root)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.splitlines()[-2:] == ["variant  seeds  exit  note", "default  1-2    0     already done"]
    assert "ray:" not in again.stderr  # nothing left to train: Ray was not even started
    assert {p: p.stat().st_mtime_ns for p in root.rglob(EVAL)} == before
