"""The run-file contract (runlayout) and the CSV writer: a metric added to the code reaches a resumed run."""
import csv
import math

import pytest

from analysis.runs import read_csv
from tdmpc_glass import runlayout
from tdmpc_glass.runlog import CsvLog


def test_train_csv_header_grows_and_old_rows_read_empty(tmp_path):
    path = tmp_path / runlayout.TRAIN
    old = CsvLog(path)  # the code before the metric existed
    old.append({"env_step": 100, "loss": 1.5})
    old.append({"env_step": 200, "loss": 0.5})
    resumed = CsvLog(path)  # a resumed run whose code logs one more metric
    assert resumed.truncate_after(200) == 2
    resumed.append({"env_step": 300, "loss": 0.25, "new_metric": 7.0})
    assert path.read_bytes().decode() == ("env_step,loss,new_metric\r\n100,1.5,\r\n200,0.5,\r\n300,0.25,7.0\r\n")
    assert resumed.columns == ["env_step", "loss", "new_metric"]
    frame = read_csv(path)
    assert list(frame.columns) == ["env_step", "loss", "new_metric"]
    assert frame["env_step"].tolist() == [100, 200, 300]
    assert [math.isnan(x) for x in frame["new_metric"][:2]] == [True, True] and frame["new_metric"][2] == 7.0
    # a row that lacks a column (a metric the code dropped) leaves it empty; the header keeps it
    resumed.append({"env_step": 400, "loss": 0.125})
    assert path.read_text().splitlines()[-1] == "400,0.125,"


def test_narrow_train_csv_still_reads(tmp_path):
    """A file written before the metric existed (narrower) reads as it is: the metric is simply absent."""
    path = tmp_path / runlayout.TRAIN
    CsvLog(path).append({"env_step": 100, "loss": 1.5})
    assert list(read_csv(path).columns) == ["env_step", "loss"]


def test_eval_csv_keeps_its_fixed_columns(tmp_path):
    log = CsvLog(tmp_path / runlayout.EVAL, list(runlayout.EVAL_COLUMNS))
    log.append({"env_step": 0, "mppi_return": 1.0, "surprise": 3.0})
    assert (tmp_path / runlayout.EVAL).read_text().splitlines()[0] == ",".join(runlayout.EVAL_COLUMNS)


def test_checkpoint_names_round_trip():
    assert runlayout.checkpoint_name(12000) == "step_0000012000.npz"
    assert runlayout.checkpoint_step(runlayout.checkpoint_name(12000)) == 12000
    assert runlayout.checkpoint_step("step_12.npz.tmp") is None
    assert runlayout.checkpoint_step("step_x.npz") is None


def test_best_mppi_and_count_text():
    assert runlayout.best_mppi([1.0, float("nan"), 3.0, None, 3.0, 2.0]) == (2, 3.0)
    assert runlayout.best_mppi([None, float("nan")]) is None
    assert [runlayout.count_text(n) for n in (8e6, 5e4, 3.25e6, 0.125)] == ["8M", "50k", "3.25M", "0.125"]
    assert runlayout.count_text(1234567.0, ".3g", ".0f") == "1.23M" and runlayout.count_text(12.4, ".3g", ".0f") == "12"


def test_one_rule_for_keys_a_resume_may_change():
    from tdmpc_glass.config import Config
    from tdmpc_glass.resume import config_fingerprint, fingerprint_difference

    base = Config()
    for key in ("train.steps", "train.video_at_eval", "tracking.tensorboard", "runtime.deterministic_ops"):
        assert runlayout.extendable(key), key
    assert not runlayout.extendable("train.eval_freq")
    changed = config_fingerprint(base).replace('"eval_freq": ', '"eval_freq": 1', 1)
    assert fingerprint_difference(changed, config_fingerprint(base)).startswith("train.eval_freq is ")


@pytest.mark.slow
def test_a_metric_added_between_start_and_resume_appears_in_the_resumed_run(trained_runs, tmp_path):
    """A run whose train.csv was written before `q_scale` was logged (the column taken out, as older code wrote
    it) resumes under code that logs it: the header grows, older rows stay empty there, and every other value
    equals the uninterrupted run's."""
    from dataclasses import replace

    from train_script import rows, tiny_config

    from tdmpc_glass.train import train

    cfg = tiny_config()
    parts = [tmp_path / f"seed{s}" for s in trained_runs.seeds]
    assert train(replace(cfg, train=replace(cfg.train, steps=160)), list(trained_runs.seeds), parts,
                 progress=False) == 0
    for run in parts:  # the file older code wrote: no q_scale column
        path = run / runlayout.TRAIN
        with open(path, newline="") as f:
            old = list(csv.DictReader(f))
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, [k for k in old[0] if k != "q_scale"], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(old)
    assert train(cfg, list(trained_runs.seeds), parts, progress=False) == 0
    for run, ref in zip(parts, trained_runs.dirs):
        got, want = rows(run / runlayout.TRAIN), rows(ref / runlayout.TRAIN)
        with open(run / runlayout.TRAIN, newline="") as f:
            assert next(csv.reader(f))[-1] == "q_scale"
        old_rows = [r for r in got if int(r["env_step"]) <= 160]
        assert len(old_rows) == 3 and all(r["q_scale"] == "" for r in old_rows)
        assert all(r["q_scale"] != "" for r in got if int(r["env_step"]) > 160)
        assert [r["q_scale"] for r in got if int(r["env_step"]) > 160] == \
            [r["q_scale"] for r in want if int(r["env_step"]) > 160]
        strip = lambda table: [{k: v for k, v in r.items() if k != "q_scale"} for r in table]
        assert strip(got) == strip(want)


def test_videos_pick_the_best_mppi_row_by_the_same_rule(tmp_path):
    from tdmpc_glass.video.rollout import best_eval_step

    (tmp_path / runlayout.EVAL).write_text("env_step,mppi_return\n0,5\n80,\n160,9.5\n240,nan\n320,9.5\n400,2\n")
    assert best_eval_step(tmp_path) == (160, 9.5)
    (tmp_path / runlayout.EVAL).write_text("env_step,mppi_return\n0,\n")
    assert best_eval_step(tmp_path) is None
