"""The launcher through its real command line: bad input exits 2 with one line naming it, and writes nothing;
the `tdmpc-glass` console command reaches the launcher and forwards to the other tools.

Phase files for the error cases are written under tmp_path (a PHASE argument may be a path to a .yaml file);
a parent named in `extends` is looked up next to the file first, then in phases/.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from experiments import launch, rundirs
from experiments.cli import FORWARDED
from experiments.phases import PHASES_DIR, read_phase, resolve
from experiments.rundirs import run_record
from tdmpc_glass.config import to_dict
from tdmpc_glass.runlayout import CONFIG, EVAL, RUNS_ENV, STATUS
from train_script import rows, tiny_config

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, env_extra=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != RUNS_ENV}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "experiments.launch", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def tree(root: Path) -> dict:
    """Every file (with its bytes) and directory (None) under root; empty when root does not exist."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def write_phase(folder: Path, stem: str, **fields) -> Path:
    path = folder / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture
def runs(tmp_path) -> Path:
    """A runs root with one unrelated run in it, so 'nothing written' is checked against a real tree."""
    root = tmp_path / "runs"
    (root / "other" / "default" / "seed1").mkdir(parents=True)
    (root / "other" / "default" / "seed1" / EVAL).write_text("env_step,mppi_return\n0,1.0\n")
    return root


# ---- bad input through `run`: exit 2, one line naming it, nothing written ---------------------------------------

BAD_PHASES = {
    # name: (files to write {stem: fields}, the phase to run, extra args, fragments the message must name)
    "unknown phase": ({}, "hoper", [], ["unknown phase 'hoper'"]),
    "mistyped key": ({"bad": dict(name="bad", extends="base", overrides={"planer.num_samples": 64})},
                     "bad", [], ["bad.yaml", "unknown key 'planer.num_samples'", "did you mean 'planner.num_samples'"]),
    "wrong type": ({"bad": dict(name="bad", extends="base", overrides={"train.steps": "abc"})},
                   "bad", [], ["bad.yaml", "train.steps: expected int, got 'abc'"]),
    "unknown top-level key": ({"bad": dict(name="bad", extends="base", overides={"horizon": 5})},
                              "bad", [], ["bad.yaml", "unknown key 'overides'", "did you mean 'overrides'"]),
    "missing parent": ({"bad": dict(name="bad", extends="nosuch", overrides={})},
                       "bad", [], ["bad.yaml", "extends", "'nosuch' does not exist"]),
    "no parent": ({"orphan": dict(name="orphan", overrides={"horizon": 5})},
                  "orphan", [], ["orphan.yaml: extends: missing"]),
    "cyclic extends": ({"a": dict(name="a", extends="b"), "b": dict(name="b", extends="a")},
                       "a", [], ["extends: cycle a -> b -> a"]),
    "unknown variant": ({"v": dict(name="v", extends="base", variants={"k64": {"train.k_update": 64}})},
                        "v", ["--variant", "k32"], ["v.yaml", "unknown variant 'k32'", "k64"]),
    "variant with unknown key": ({"v": dict(name="v", extends="base", variants={"k64": {"train.k_updat": 64}})},
                                 "v", [], ["v.yaml: variants.k64: unknown key 'train.k_updat'",
                                           "did you mean 'train.k_update'"]),
    "bad default seeds": ({"s": dict(name="s", extends="base", seeds="5-1")},
                          "s", [], ["s.yaml: seeds: range '5-1' runs backwards"]),
}


@pytest.mark.parametrize("case", list(BAD_PHASES))
def test_bad_phase_exits_2_naming_file_and_key_and_writes_nothing(case, tmp_path, runs):
    files, phase, extra, fragments = BAD_PHASES[case]
    for stem, fields in files.items():
        write_phase(tmp_path, stem, **fields)
    target = str(tmp_path / f"{phase}.yaml") if files else phase
    before = tree(runs)
    result = cli("run", target, "--seeds", "1-2", "--runs-root", runs, *extra)
    assert_one_line_error(result, *fragments)
    assert tree(runs) == before


@pytest.mark.parametrize("args, fragments", [
    (["--seeds", "3-1"], ["--seeds: range '3-1' runs backwards"]),
    (["--seeds", "1,1"], ["--seeds", "more than once"]),
    (["--seeds", "x"], ["--seeds", "'x'"]),
    (["--set", "task=hoper-hop"], ["command line: task: unknown task 'hoper-hop'", "did you mean 'hopper-hop'"]),
    (["--set", "train.steps=abc"], ["command line: train.steps: expected int, got 'abc'"]),
    (["--set", "planer.num_samples=8"], ["command line: unknown key 'planer.num_samples'",
                                         "did you mean 'planner.num_samples'"]),
    (["--set", "train.steps"], ["command line", "key=value"]),
    (["--steps", "0"], ["resolved config: train.steps"]),
    (["--variant", "k64"], ["phases/z.yaml: unknown variant 'k64'"]),
])
def test_bad_command_line_exits_2_naming_it_and_writes_nothing(args, fragments, runs):
    before = tree(runs)
    assert_one_line_error(cli("run", "z", "--runs-root", runs, *args), *fragments)
    assert tree(runs) == before


def test_an_unknown_task_in_a_phase_file_names_that_file(tmp_path, runs):
    path = write_phase(tmp_path, "t", name="t", extends="base", overrides={"task": "walker-rnu"})
    assert_one_line_error(cli("run", path, "--seeds", "1", "--runs-root", runs),
                          "t.yaml: task: unknown task 'walker-rnu'", "walker-run")
    assert not (runs / "t").exists()


def test_argparse_usage_errors_exit_2():
    assert cli("run").returncode == 2
    assert cli("run", "z", "--steps", "many").returncode == 2
    assert cli("frobnicate").returncode == 2


def existing_run(runs: Path, seed: int, **changes) -> Path:
    """A run's config file as `run z` writes it, with some config values changed."""
    resolved = resolve("z", "default")
    config = to_dict(resolved.cfg)
    for key, value in changes.items():
        section, name = key.split(".")
        config[section][name] = value
    record = run_record(resolved, seed)
    record["config"] = config
    path = runs / "z" / "default" / f"seed{seed}" / CONFIG
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(record, sort_keys=False))
    return path


def test_a_run_dir_holding_a_different_config_exits_2_and_nothing_is_written(runs):
    config_file = existing_run(runs, 2, **{"planner.num_samples": 256})
    before = tree(runs)
    result = cli("run", "z", "--seeds", "1-3", "--runs-root", runs)
    assert_one_line_error(result, str(config_file), "different config", "planner.num_samples is 256 there, 512 now")
    assert tree(runs) == before  # seed1 and seed3 were not created either


def old_clock_run(runs: Path, phase: str, seed: int) -> Path:
    """A run dir as the launcher wrote it before the log's clock: TD-MPC2's action repeat 2, doubled step counts,
    burst exploration, no `clock` in the record and none of the keys added with it."""
    resolved = resolve(phase)
    config = to_dict(resolved.cfg)
    config["train"].update(action_repeat=2, episode_length=500, steps=2 * config["train"]["steps"],
                           collect_steps=100, k_update=config["train"]["k_update"] // 2,
                           expl_until=2 * config["train"]["expl_until"])
    for key in ("explore_updates", "update_warmup"):
        del config["train"][key]
    del config["glass"]["cluster_input_grad"]
    record = run_record(resolved, seed)
    del record["clock"]
    record["config"] = config
    path = runs / resolved.phase.dir_name / "default" / f"seed{seed}" / CONFIG
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(record, sort_keys=False))
    (path.parent / EVAL).write_text("env_step,mppi_return,pi_return\n0,1.0,1.0\n")
    return path


def test_a_baseline_run_of_the_old_clock_is_refused_not_resumed_under_the_new_one(runs):
    config_file = old_clock_run(runs, "baseline", 1)
    before = tree(runs)
    result = cli("run", "baseline", "--seeds", "1", "--runs-root", runs)
    assert_one_line_error(result, str(config_file), "different config", "train.action_repeat is 2 there, 1 now")
    assert tree(runs) == before
    # its own config (keys added since read their defaults: the old behaviour) is still a valid run config
    old = rundirs.config_from_dict(yaml.safe_load(config_file.read_text())["config"])
    assert (old.train.action_repeat, old.train.explore_updates, old.glass.cluster_input_grad) == (2, "burst", False)
    rundirs.check_run_dir(config_file.parent, old, 1)  # resuming under the config it holds is allowed


def test_an_old_intrinsic_bonus_run_at_action_repeat_2_is_refused_even_under_its_own_config(runs):
    # the old code paid the bonus per simulator step; today's pays it per decision: the same config, another reward
    config_file = old_clock_run(runs, "P", 1)
    old = rundirs.config_from_dict(yaml.safe_load(config_file.read_text())["config"])
    with pytest.raises(rundirs.LaunchError, match="paid once per simulator step"):
        rundirs.check_run_dir(config_file.parent, old, 1)
    assert yaml.safe_load(rundirs.yaml.safe_dump(run_record(resolve("P"), 1)))["clock"] == rundirs.CLOCK_VERSION


@pytest.mark.slow  # trains (about 30 s cold)
def test_resume_trains_an_old_clock_run_on_under_the_config_it_holds(runs):
    # the tiny config at TD-MPC2's action repeat 2, filed as a baseline run of the old clock (no `clock`)
    cfg = tiny_config(steps=40)
    record = {"phase": {"name": "baseline", "variant": "default", "description": "", "benchmark_fair": True,
                        "aliases": []}, "seed": 1, "config": to_dict(cfg)}
    run_dir = runs / "baseline" / "default" / "seed1"
    run_dir.mkdir(parents=True)
    (run_dir / CONFIG).write_text(yaml.safe_dump(record, sort_keys=False))
    assert_one_line_error(cli("run", "baseline", "--seeds", "1", "--runs-root", runs), "different config")
    result = cli("resume", run_dir, "--steps", "80", "--no-progress")
    assert result.returncode == 0, result.stderr
    status = json.loads((run_dir / STATUS).read_text())
    assert (status["status"], status["env_step"]) == ("done", 80), status
    kept = yaml.safe_load((run_dir / CONFIG).read_text())
    assert "clock" not in kept and kept["config"]["train"]["action_repeat"] == 2  # its meaning did not change
    assert kept["config"]["train"]["steps"] == 80
    assert [r["env_step"] for r in rows(run_dir / EVAL)] == ["0", "80"]


def test_resume_refuses_what_is_not_a_run_dir_in_one_line(runs, tmp_path):
    before = tree(runs)
    assert_one_line_error(cli("resume", tmp_path / "nowhere"), "nowhere", "no config.yaml")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / CONFIG).write_text("seed: 1\nconfig: {planer: {num_samples: 3}}\n")
    assert_one_line_error(cli("resume", bad), str(bad / CONFIG), "planer")
    assert tree(runs) == before


def test_a_run_dir_with_files_but_no_config_is_refused(runs):
    seed_dir = runs / "z" / "default" / "seed1"
    seed_dir.mkdir(parents=True)
    (seed_dir / EVAL).write_text("env_step\n")
    before = tree(runs)
    assert_one_line_error(cli("run", "z", "--seeds", "1", "--runs-root", runs), str(seed_dir), f"no {CONFIG}")
    assert tree(runs) == before


def test_a_damaged_config_yaml_is_refused(runs):
    config_file = existing_run(runs, 1)
    config_file.write_text("phase: {name: z\nseed: [")  # truncated mid-write by something else
    before = tree(runs)
    assert_one_line_error(cli("run", "z", "--seeds", "1", "--runs-root", runs), str(config_file), "unreadable")
    assert tree(runs) == before


# ---- describe / list / validate ------------------------------------------------------------------------------

def describe_json(*args, env_extra=None) -> list[dict]:
    result = cli("describe", *args, "--json", env_extra=env_extra)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_describe_json_is_one_object_with_integer_parameter_counts():
    pytest.importorskip("tdmpc_glass.world_model", reason="world_model.count_params is written by another module")
    [record] = describe_json("z", "--runs-root", "/r")
    assert set(record) == {"phase", "variant", "description", "benchmark_fair", "task", "obs_dim", "act_dim",
                           "config", "num_params", "run_dirs", "units", "planner_iterations",
                           "intrinsic_bonus_max_per_episode"}
    assert record["units"]["updates_per_decision"] == 0.25 and record["planner_iterations"] == 6
    assert (record["phase"], record["variant"], record["task"]) == ("z", "default", "hopper-hop")
    assert (record["obs_dim"], record["act_dim"]) == (15, 4)
    total = record["num_params"]["total"]
    assert isinstance(total, int) and total == sum(v for k, v in record["num_params"].items() if k != "total")
    assert record["config"]["planner"]["num_samples"] == 512
    assert record["run_dirs"] == [f"/r/z/default/seed{k}" for k in range(1, 6)]  # the phase's default seeds


def test_runs_root_comes_from_the_flag_else_the_environment_else_runs():
    pytest.importorskip("tdmpc_glass.world_model", reason="world_model.count_params is written by another module")
    env = {RUNS_ENV: "/from-env"}
    assert describe_json("demo", "--seeds", "2", env_extra=env)[0]["run_dirs"] == ["/from-env/demo/default/seed2"]
    assert describe_json("demo", "--seeds", "2", "--runs-root", "/flag", env_extra=env)[0]["run_dirs"] == [
        "/flag/demo/default/seed2"]
    assert describe_json("demo", "--seeds", "2")[0]["run_dirs"] == ["runs/demo/default/seed2"]


def test_describe_text_shows_config_task_parameters_and_run_dirs():
    pytest.importorskip("tdmpc_glass.world_model", reason="world_model.count_params is written by another module")
    result = cli("describe", "demo", "--steps", "1234", "--runs-root", "/r")
    assert result.returncode == 0, result.stderr
    assert "cartpole-swingup" in result.stdout and "total" in result.stdout
    assert "/r/demo/default/seed1" in result.stdout and "/r/demo/default/seed2" in result.stdout
    body = yaml.safe_load(result.stdout)  # the '#' header lines are YAML comments
    assert body["train"]["steps"] == 1234


def test_list_prints_every_phase():
    result = cli("list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # a row per phase, each followed by an indented line of its schedule points (decisions, simulated time)
    rows = [line.split() for line in lines if not line.startswith(" ")]
    assert all(line.startswith("    decisions (simulated time): train.steps ") for line in lines
               if line.startswith(" "))
    assert len(lines) == 2 * len(rows) - 1
    assert rows[0] == ["phase", "extends", "fair", "seeds", "variants", "dec_ms", "dec/ep", "upd/dec", "explore",
                       "description"]
    names = [row[0] for row in rows[1:]]
    # canonical names (phases/P_intrinsic.yaml holds phase P), in the order of the file names
    assert names == [read_phase(p).name for p in sorted(PHASES_DIR.glob("*.yaml"), key=lambda p: p.stem.lower())]
    assert {"base", "z", "demo", "p", "P"} <= set(names)
    aa = next(row for row in rows if row[0] == "aa")
    assert aa[1:9] == ["z", "yes", "1-3", "k64,k128,k256", "20", "1000", "0.25,0.5,1", "steady"]
    assert next(row for row in rows if row[0] == "t")[2] == "NO"


# ---- the console command (pyproject.toml [project.scripts]) ----------------------------------------------------

CONSOLE = Path(sys.executable).parent / "tdmpc-glass"  # installed beside the venv's python by pip install -e


def console(*args) -> subprocess.CompletedProcess:
    assert CONSOLE.exists(), f"{CONSOLE} is not installed: pip install -e . (make install)"
    env = {k: v for k, v in os.environ.items() if k != RUNS_ENV}
    return subprocess.run([str(CONSOLE), *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def test_the_console_command_lists_every_subcommand():
    result = console("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: tdmpc-glass")
    # one line per subcommand, indented by four spaces (a wrapped help line is indented further)
    listed = [line.split()[0] for line in result.stdout.splitlines() if re.match(r"^ {4}\S", line)]
    assert listed == ["run", "describe", "sweep", "resume", "list", "validate", "stats", "curves", "dashboard",
                      "video", "bench", "export", "show", "import-official", "check-official"]
    assert set(FORWARDED) == {"stats", "curves", "dashboard", "video", "bench", "export", "show", "import-official",
                              "check-official"}


def test_the_console_command_runs_the_launcher():
    result, same = console("list"), cli("list")
    assert result.returncode == 0, result.stderr
    assert result.stdout == same.stdout and result.stdout.startswith("phase ")
    assert_one_line_error(console("run", "hoper"), "unknown phase 'hoper'")  # the launcher's errors and exit 2
    usage = console("run")
    assert usage.returncode == 2 and "usage: tdmpc-glass run" in usage.stderr
    assert console("frobnicate").returncode == 2


def test_the_console_command_forwards_the_rest_of_the_line_to_the_tool():
    result = console("stats", "--help")
    assert result.returncode == 0, result.stderr
    assert "--runs" in result.stdout and "--compare" in result.stdout  # seed_stats' own flags
    assert "COMMAND" not in result.stdout
    bad = console("stats", "--no-such-flag")
    assert bad.returncode == 2 and "--no-such-flag" in bad.stderr


def test_validate_all_passes():
    result = cli("validate", "--all")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok ") == len(list(PHASES_DIR.glob("*.yaml")))


def test_validate_reports_each_target_and_fails_on_any_error(tmp_path):
    good = write_phase(tmp_path, "good", name="good", extends="z", variants={"a": {"horizon": 5}, "b": {}})
    bad = write_phase(tmp_path, "bad", name="bad", extends="base", variants={"a": {"horizon": "five"}})
    result = cli("validate", good, "z", bad)
    assert result.returncode == 2
    assert "ok" in result.stdout and "good.yaml" in result.stdout and "phases/z.yaml" in result.stdout
    assert_one_line_error(result, "bad.yaml: variants.a: horizon: expected int, got 'five'")
    assert cli("validate").returncode == 2  # nothing to validate is a usage error


def test_validate_rejects_an_alias_that_names_another_phase(tmp_path):
    clash = write_phase(tmp_path, "clash", name="clash", extends="base", aliases=["phasez"])
    assert_one_line_error(cli("validate", "z", clash), "clash.yaml: 'phasez' (name or alias)", "phases/z.yaml")


# ---- run: what it writes and how it calls train (train replaced by a recorder) ---------------------------------

@pytest.fixture
def fake_train(monkeypatch):
    """Replace tdmpc_glass.train.train; returns the list of recorded calls. Exit codes can be queued."""
    import tdmpc_glass.train

    calls, codes = [], []

    def train(cfg, seeds, run_dirs, *, progress=True):
        calls.append({"cfg": cfg, "seeds": list(seeds), "run_dirs": [Path(d) for d in run_dirs],
                      "progress": progress})
        return codes.pop(0) if codes else 0

    monkeypatch.setattr(tdmpc_glass.train, "train", train)
    monkeypatch.setattr(rundirs, "enable_compilation_cache", lambda: None)
    return calls, codes


def sweep_phase(folder: Path) -> Path:
    return write_phase(folder, "sw", name="sw", description="two variants", extends="demo", benchmark_fair=False,
                       aliases=["sweep_old"], seeds="1-2",
                       variants={"k8": {"train.k_update": 8}, "k16": {"train.k_update": 16}})


def test_run_writes_config_yaml_per_seed_and_trains_each_variant_once_with_all_seeds(tmp_path, runs, fake_train):
    calls, _ = fake_train
    phase = sweep_phase(tmp_path)
    assert launch.main(["run", str(phase), "--seeds", "1-3", "--runs-root", str(runs), "--no-progress",
                        "--set", "train.steps=8000"]) == 0
    assert [c["cfg"].train.k_update for c in calls] == [8, 16]
    for call, variant in zip(calls, ["k8", "k16"]):
        assert call["seeds"] == [1, 2, 3] and call["progress"] is False
        assert call["run_dirs"] == [runs / "sw" / variant / f"seed{k}" for k in (1, 2, 3)]
        assert call["cfg"].train.steps == 8000 and call["cfg"].task == "cartpole-swingup"
        for seed, run_dir in zip(call["seeds"], call["run_dirs"]):
            record = yaml.safe_load((run_dir / CONFIG).read_text())
            assert record["phase"] == {"name": "sw", "variant": variant, "description": "two variants",
                                       "benchmark_fair": False, "aliases": ["sweep_old"]}
            assert record["seed"] == seed
            assert record["config"] == to_dict(call["cfg"])
            assert [p.name for p in run_dir.iterdir()] == [CONFIG]  # no temp file left behind


def test_run_defaults_to_the_phase_seeds_and_the_default_variant(tmp_path, runs, fake_train):
    calls, _ = fake_train
    assert launch.main(["run", "demo", "--runs-root", str(runs), "--no-progress"]) == 0
    [call] = calls
    assert call["seeds"] == [1, 2]
    assert call["run_dirs"] == [runs / "demo" / "default" / "seed1", runs / "demo" / "default" / "seed2"]


def test_rerun_may_raise_steps_but_not_change_anything_else(tmp_path, runs, fake_train, capsys):
    calls, _ = fake_train
    args = ["run", "demo", "--seeds", "1", "--runs-root", str(runs), "--no-progress"]
    assert launch.main(args) == 0
    assert launch.main(args + ["--steps", "60000"]) == 0  # extending a run keeps its directory
    config_file = runs / "demo" / "default" / "seed1" / CONFIG
    assert yaml.safe_load(config_file.read_text())["config"]["train"]["steps"] == 60000
    before = tree(runs)
    assert launch.main(args + ["--set", "optim.lr=1e-3"]) == 2
    assert "optim.lr is 0.0003 there, 0.001 now" in capsys.readouterr().err
    assert tree(runs) == before and len(calls) == 2


def test_run_returns_the_first_failure_and_stops_after_an_interrupt(tmp_path, runs, fake_train):
    calls, codes = fake_train
    phase = str(sweep_phase(tmp_path))
    codes += [1, 0]
    assert launch.main(["run", phase, "--runs-root", str(runs / "a"), "--no-progress"]) == 1
    assert len(calls) == 2  # a failed variant does not stop the next one
    codes += [130]
    assert launch.main(["run", phase, "--runs-root", str(runs / "b"), "--no-progress"]) == 130
    assert len(calls) == 3  # an interrupt does
