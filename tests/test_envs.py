import numpy as np
import pytest

from tdmpc_glass.envs import EnvPool, list_tasks, load, task_spec, validate_task


def test_task_names_and_specs():
    assert {"hopper-hop", "hopper-stand", "walker-run", "cheetah-run", "cartpole-swingup",
            "ball_in_cup-catch", "cartpole-swingup_sparse"} <= set(list_tasks())
    assert task_spec("hopper-hop") == (15, 4)
    assert task_spec("ball_in_cup-catch")[1] == 2


def test_unknown_task_names_the_nearest():
    with pytest.raises(ValueError, match=r"unknown task 'hoper-hop'; did you mean 'hopper-hop'\?"):
        validate_task("hoper-hop")


def test_action_repeat_sums_rewards_of_the_raw_env():
    actions = np.random.default_rng(0).uniform(-1, 1, (30, 1, 4)).astype(np.float32)
    pool = EnvPool("hopper-stand", 1, action_repeat=2, num_workers=0)
    pool.reset([7])
    raw = load("hopper-stand")
    raw.task.random.seed(7)
    raw.reset()
    for a in actions:
        obs, reward = pool.step(a)
        expected = sum(raw.step(a[0]).reward for _ in range(2))
        np.testing.assert_allclose(reward[0], expected, rtol=1e-6)
    assert obs.dtype == np.float32 and obs.shape == (1, 15)


def rollout(pool, seeds, actions):
    out = [pool.reset(seeds)]
    for a in actions:
        out.append(pool.step(a)[0])
    return np.stack(out)


def test_resets_are_deterministic_whatever_the_history():
    actions = np.random.default_rng(1).uniform(-1, 1, (10, 3, 4)).astype(np.float32)
    fresh = EnvPool("hopper-hop", 3, num_workers=0)
    used = EnvPool("hopper-hop", 3, num_workers=0)
    rollout(used, [5, 6, 7], actions)  # a different history first
    np.testing.assert_array_equal(rollout(fresh, [1, 2, 3], actions), rollout(used, [1, 2, 3], actions))


def test_worker_pool_equals_in_process_pool():
    actions = np.random.default_rng(2).uniform(-1, 1, (10, 4, 4)).astype(np.float32)
    local = EnvPool("hopper-hop", 4, num_workers=0)
    with EnvPool("hopper-hop", 4, num_workers=2) as workers:
        np.testing.assert_array_equal(rollout(local, [1, 2, 3, 4], actions), rollout(workers, [1, 2, 3, 4], actions))
        workers.step_async(actions[0])
        obs, reward = workers.step_wait()
        assert obs.shape == (4, 15) and reward.shape == (4,)
        assert workers.touch().shape == (4, 2)
    workers.close()  # idempotent


def test_bad_action_shape_is_a_clear_error():
    pool = EnvPool("hopper-hop", 2, num_workers=0)
    pool.reset([0, 1])
    with pytest.raises(ValueError, match=r"expected actions of shape \(2, 4\), got \(2, 3\)"):
        pool.step(np.zeros((2, 3)))
