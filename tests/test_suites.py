"""The environment-suite seam (tdmpc_glass/envs/suites.py): task names to suites, the registry's errors, and the
second suite (MuJoCo Playground's dm_control suite on MJX) through the pool and the training loop (slow: MJX
compiles for about a minute on a CPU)."""
import csv

import numpy as np
import pytest

from tdmpc_glass.config import check
from tdmpc_glass.envs import EnvPool, suites
from tdmpc_glass.envs.shaping import HopperTerms

from train_script import tiny_config  # noqa: E402


def test_a_bare_task_is_dm_control_and_a_prefix_names_the_suite():
    assert suites.split_task("hopper-hop") == ("dmc", "hopper-hop")
    assert suites.split_task("cartpole-swingup_sparse") == ("dmc", "cartpole-swingup_sparse")
    assert suites.split_task("playground:hopper-hop") == ("playground", "hopper-hop")
    assert suites.task_spec("hopper-hop") == (15, 4) and suites.touch_indices("hopper-hop") == (13, 14)
    assert suites.control_timestep("hopper-hop") == 0.02
    assert "hopper-hop" in suites.list_tasks() and all(":" not in t for t in suites.list_tasks())


def test_unknown_suites_and_tasks_are_one_line_errors():
    with pytest.raises(ValueError, match=r"^unknown suite 'gym' in task 'gym:hopper-hop' \(suites: dmc, playground\)$"):
        suites.validate_task("gym:hopper-hop")
    with pytest.raises(ValueError, match="^unknown task 'hoper-hop'; did you mean 'hopper-hop'"):
        suites.validate_task("hoper-hop")
    cfg = tiny_config()
    cfg.multitask.tasks, cfg.multitask.target_usage = ["hopper-hop", "gym:hopper-stand"], [0.5, 0.5]
    with pytest.raises(ValueError, match="^multitask.tasks: unknown suite 'gym'"):
        check(cfg)
    with pytest.raises(ValueError, match="^the tasks of one pool must come from one suite"):
        suites.chunk_factory(["hopper-hop", "playground:hopper-stand"], 1, 1)


def test_a_missing_suite_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(suites.SUITES, "nosuch", "tdmpc_glass.envs.no_such_suite_module")
    monkeypatch.setitem(suites.EXTRAS, "nosuch", "nosuch")
    with pytest.raises(ValueError, match=r"^suite 'nosuch' cannot be loaded \(.*\): "
                                         r"pip install 'tdmpc-glass\[nosuch\]'$"):
        suites.validate_task("nosuch:hopper-hop")


def test_shaping_is_measured_only_where_the_wrapper_asks():
    """The pool carries no shaping of its own: it sums what the measure factory reads, and nothing without one."""
    seeds, actions = np.arange(2) + 3, np.random.default_rng(1).uniform(-1, 1, (3, 2, 4))
    with EnvPool("hopper-hop", 2, 2, 0, measure=HopperTerms) as measured, EnvPool("hopper-hop", 2, 2, 0) as plain:
        assert np.array_equal(measured.reset(seeds), plain.reset(seeds))
        for a in actions:
            assert all(np.array_equal(x, y) for x, y in zip(measured.step(a), plain.step(a)))
            assert measured.measured.shape == (2, 3) and plain.measured is None


# ------------------------------------------------------------------------------------- the second suite (MJX)
@pytest.mark.slow
def test_playground_hopper_steps_through_the_pool_like_dm_control():
    pytest.importorskip("mujoco_playground")
    task = "playground:hopper-hop"
    assert suites.task_spec(task) == suites.task_spec("hopper-hop") == (15, 4)
    assert suites.control_timestep(task) == 0.02 and suites.touch_indices(task) == (13, 14)
    with pytest.raises(ValueError, match="^unknown task 'playground:hoper-hop'; did you mean 'playground:hopper-hop'"):
        suites.validate_task("playground:hoper-hop")
    with EnvPool(task, 2, 2, num_workers=2) as pool:
        assert pool.num_workers == 0  # MJX batches its envs in this process
        first = pool.reset(np.array([5, 6]))
        assert first.shape == (2, 15) and first.dtype == np.float32
        assert not np.array_equal(first[0], first[1])
        np.testing.assert_array_equal(pool.reset(np.array([5, 6])), first)  # a reset is a function of its seed
        obs, reward = pool.step(np.full((2, 4), 0.3))
        assert obs.shape == (2, 15) and reward.shape == (2,) and np.all((reward >= 0) & (reward <= 2))
        assert pool.physics_states().shape == (2, 7 + 7) and pool.touch().shape == (2, 2)
    with pytest.raises(ValueError, match="measures nothing per control step"):
        EnvPool(task, 1, 1, measure=HopperTerms)


@pytest.mark.slow
def test_playground_hopper_hop_trains_through_the_loop(tmp_path):
    pytest.importorskip("mujoco_playground")
    from tdmpc_glass.train import train

    cfg = tiny_config(steps=160, eval_freq=160, checkpoint_freq=160, eval_episodes=1)
    cfg.task = "playground:hopper-hop"
    check(cfg)
    run = tmp_path / "seed1"
    assert train(cfg, [1], [run], progress=False) == 0
    with open(run / "eval.csv", newline="") as f:
        evals = list(csv.DictReader(f))
    with open(run / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["env_step"]) for r in evals] == [0, 160]
    assert all(np.isfinite(float(r["mppi_return"])) for r in evals)
    assert rows and all(np.isfinite(float(r["consistency_loss"])) for r in rows if r.get("consistency_loss"))
