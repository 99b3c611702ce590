"""The loop benchmark as a user runs it: `tdmpc-glass bench --phase ...` prints one JSON line per seed count whose
split adds up."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_loop_split_by_hand():
    """Medians over blocks of each part; the rest of a step is the loop's own Python; the overhead fraction is
    (end to end - env - compute) / end to end."""
    from experiments.bench import loop_split

    block = lambda total, env, device, act, log, plan, update: dict(
        ms_per_agent_step=total, env_ms=env, device_ms=device, act_ms=act, log_ms=log, plan_compute_ms=plan,
        update_compute_ms=update)
    split = loop_split([block(10.0, 4.0, 5.0, 0.5, 0.25, 3.0, 1.0), block(20.0, 8.0, 9.0, 1.5, 0.75, 5.0, 3.0),
                        block(12.0, 6.0, 5.0, 0.0, 0.5, 2.0, 2.0)])
    assert split["ms_per_agent_step"] == 12.0 and split["env_ms"] == 6.0 and split["log_ms"] == 0.5
    assert split["python_ms"] == 0.5  # medians of 0.25, 0.75, 0.5
    assert split["fixed_call_ms"] == 1.5  # medians of 5.5 - 4 = 1.5, 10.5 - 8 = 2.5, 5 - 4 = 1
    assert split["loop_overhead_fraction"] == pytest.approx(0.2)  # medians of 0.2, 0.2, 1/6


@pytest.mark.slow
def test_the_loop_benchmark_splits_an_agent_step(tmp_path):
    out = tmp_path / "bench.jsonl"
    cmd = [sys.executable, "-m", "experiments.cli", "bench", "--phase", "demo", "--seeds", "1", "--set",
           "train.num_envs=1", "--set", "train.expl_until=400", "--set", "train.seed_updates=10", "--rounds", "20",
           "--blocks", "2", "--repeats", "1", "--warmup-rounds", "2", "--eval", "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == record
    assert record["bench"] == "loop" and record["seeds"] == 1 and record["blocks"] == 2
    parts = ("env_ms", "device_ms", "act_ms", "log_ms", "python_ms")
    assert all(record[k] >= 0 for k in parts if k != "python_ms")
    # the parts are medians over blocks, so they add up to the end-to-end median only roughly
    assert sum(record[k] for k in parts) == pytest.approx(record["ms_per_agent_step"], rel=0.25)
    assert 0 < record["plan_compute_ms"] and 0 < record["update_compute_ms"]
    assert 0 < record["loop_overhead_fraction"] < 1  # its arithmetic: test_the_loop_split_by_hand
    assert record["eval_s"] > 0 and record["checkpoint_s"] > 0
    assert record["allocator"] in ("tcmalloc", "system") and record["backend"] == "cpu"


@pytest.mark.parametrize("argv, message", [
    (["--phase", "nope"], "error: unknown phase 'nope': no phases/nope.yaml"),
    (["--phase", "demo", "--set", "train.num_envs=0"], "error: resolved config: train.num_envs: must be >= 1, got 0"),
    (["--phase", "demo", "--set", "task=dmc-nope"], "error: command line: task: unknown task 'dmc-nope'"),
])
def test_a_bad_phase_config_is_one_line_and_exit_2(capsys, argv, message):
    from experiments import bench

    assert bench.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


@pytest.mark.parametrize("flag", ["--rounds", "--blocks", "--repeats", "--seeds"])
def test_a_count_below_one_is_a_usage_error_naming_the_flag(capsys, flag):
    from experiments import bench

    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--phase", "demo", flag, "0"])
    assert exit_info.value.code == 2
    assert f"argument {flag}: must be >= 1, got 0" in capsys.readouterr().err
