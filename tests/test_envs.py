"""tdmpc_glass.envs: task names, specs, action repeat, reset determinism, worker pools, error paths."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tdmpc_glass import seams
from tdmpc_glass.envs import EnvPool, flatten_observation, list_tasks, parse_task, task_spec, validate_task

ROOT = Path(__file__).resolve().parents[1]


def random_actions(seed, steps, num_envs, act_dim, scale=1.0):
    return np.random.default_rng(seed).uniform(-scale, scale, (steps, num_envs, act_dim)).astype(np.float32)


def rollout(pool, seeds, actions):
    """Observations (T + 1, N, obs_dim) and rewards (T, N) after reset(seeds) and the given actions."""
    obs, rewards = [pool.reset(seeds)], []
    for a in actions:
        o, r = pool.step(a)
        obs.append(o)
        rewards.append(r)
    return np.stack(obs), np.stack(rewards)


@pytest.fixture(scope="module")
def worker_pool():
    """4 hopper-hop envs on 2 worker processes, shared by the tests below (starting workers costs seconds)."""
    with EnvPool("hopper-hop", 4, num_workers=2) as pool:
        yield pool


# ---------------------------------------------------------------------------------------------- names, specs
def test_task_names_split_on_the_first_hyphen():
    from tdmpc_glass.envs.dmc import load_suite
    suite = load_suite()

    names = list_tasks()
    assert names == sorted(names) and len(names) == len(suite.ALL_TASKS)
    assert {"hopper-hop", "hopper-stand", "walker-run", "cheetah-run", "cartpole-swingup", "ball_in_cup-catch",
            "point_mass-easy", "cartpole-swingup_sparse"} <= set(names)
    assert parse_task("ball_in_cup-catch") == ("ball_in_cup", "catch")
    assert parse_task("cartpole-swingup_sparse") == ("cartpole", "swingup_sparse")
    assert parse_task("point_mass-easy") == ("point_mass", "easy")
    assert {parse_task(n) for n in names} == set(suite.ALL_TASKS)


def test_unknown_task_is_one_line_naming_the_nearest():
    with pytest.raises(ValueError) as info:
        validate_task("hoper-hop")
    assert str(info.value) == "unknown task 'hoper-hop'; did you mean 'hopper-hop'?"
    with pytest.raises(ValueError, match=r"^unknown task 'ball_in_cup_catch'; did you mean 'ball_in_cup-catch'\?$"):
        validate_task("ball_in_cup_catch")
    with pytest.raises(ValueError) as info:
        validate_task("hopper-hop\nrm -rf")
    assert "\n" not in str(info.value) and "'hopper-hop'" in str(info.value)
    with pytest.raises(ValueError, match="must be a string"):
        validate_task(None)
    with pytest.raises(ValueError, match=r"unknown task 'walker-rum'; did you mean 'walker-run'\?"):
        EnvPool("walker-rum", 1, num_workers=0)
    assert validate_task("hopper-hop") is None


def test_specs_match_flattened_observations():
    assert task_spec("hopper-hop") == (15, 4)
    hits = task_spec.cache_info().hits
    start = time.perf_counter()
    for _ in range(1000):
        assert task_spec("hopper-hop") == (15, 4)
    assert task_spec.cache_info().hits == hits + 1000 and time.perf_counter() - start < 0.5
    # finger-turn_easy has a scalar entry (dist_to_target), ball_in_cup a 2-D action
    for task, expected in (("finger-turn_easy", (12, 2)), ("ball_in_cup-catch", (8, 2))):
        assert task_spec(task) == expected
        with EnvPool(task, 2, num_workers=0) as pool:
            obs = pool.reset([0, 1])
            assert obs.shape == (2, expected[0]) and obs.dtype == np.float32
            assert (pool.obs_dim, pool.act_dim) == expected


# ------------------------------------------------------------------------------------------ stepping rules
@pytest.mark.parametrize("task", ["hopper-hop", "cartpole-swingup"])
def test_reward_is_the_sum_over_the_action_repeat_of_a_raw_env(task):
    from tdmpc_glass.envs.dmc import load_suite
    suite = load_suite()

    seed, steps = 11, 25
    obs_dim, act_dim = task_spec(task)
    # out-of-range actions: the pool clips them to the spec bounds
    actions = random_actions(3, steps, 1, act_dim, scale=1.5)
    domain, name = parse_task(task)
    raw = suite.load(domain, name, task_kwargs={"random": 999})  # dm_control as it comes, own time limit
    raw.task.random.seed(seed)
    raw_obs = [flatten_observation(raw.reset().observation)]
    raw_rewards = []
    for a in actions:
        clipped = np.clip(a[0].astype(np.float64), -1.0, 1.0)
        total = 0.0
        for _ in range(3):
            timestep = raw.step(clipped)
            total += timestep.reward or 0.0
        raw_obs.append(flatten_observation(timestep.observation))
        raw_rewards.append(total)

    with EnvPool(task, 1, action_repeat=3, num_workers=0) as pool:
        obs, rewards = rollout(pool, [seed], actions)
        # MuJoCo clamps limited controls itself, so rewards alone cannot show the clip: look at ctrl
        assert np.abs(actions[-1]).max() > 1
        np.testing.assert_array_equal(pool.local_envs[0].physics.data.ctrl, clipped)
    assert obs.dtype == np.float32 and rewards.dtype == np.float32
    assert obs.shape == (steps + 1, 1, obs_dim) and rewards.shape == (steps, 1)
    np.testing.assert_array_equal(obs[:, 0], np.stack(raw_obs))
    np.testing.assert_array_equal(rewards[:, 0], np.asarray(raw_rewards, np.float32))
    if task == "cartpole-swingup":  # a dense reward: the comparison above compared something
        assert np.all(rewards > 0) and np.all(rewards <= 3.0)


def test_reset_depends_only_on_the_seed_not_on_the_history():
    actions = random_actions(1, 12, 3, 4)
    fresh = EnvPool("hopper-hop", 3, num_workers=0)
    used = EnvPool("hopper-hop", 3, num_workers=0)
    rollout(used, [5, 6, 7], random_actions(2, 20, 3, 4))  # another history first
    obs_a, rew_a = rollout(fresh, [1, 2, 2**40 + 3], actions)
    obs_b, rew_b = rollout(used, [1, 2, 2**40 + 3], actions)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rew_a, rew_b)
    assert not np.array_equal(obs_a[:, 0], obs_a[:, 1])  # different seeds, different episodes
    # the same pool, reset again with the same seeds after more steps: the same episode again
    np.testing.assert_array_equal(rollout(used, [1, 2, 2**40 + 3], actions)[0], obs_a)
    fresh.close(), used.close()


def test_no_auto_reset_past_dm_controls_time_limit():
    with EnvPool("cartpole-swingup", 1, action_repeat=2, num_workers=0) as pool:
        pool.reset([0])
        zeros = np.zeros((1, 1))
        for _ in range(510):  # 1020 env steps > dm_control's own 1000
            obs, _ = pool.step(zeros)
        env = pool.local_envs[0]
        assert env.physics.data.time == pytest.approx(1020 * 0.01)


def test_touch_and_physics_states():
    with EnvPool("hopper-hop", 2, num_workers=0) as pool:
        obs = pool.reset([3, 4])
        for a in random_actions(5, 30, 2, 4):
            obs, _ = pool.step(a)
        touch, states = pool.touch(), pool.physics_states()
        assert touch.shape == (2, 2) and touch.dtype == np.float32
        np.testing.assert_array_equal(touch, obs[:, 13:15])  # observation order: position, velocity, touch
        assert states.shape == (2, 14)  # hopper: nq = nv = 7
        np.testing.assert_array_equal(states[:, 1:7].astype(np.float32), obs[:, :6])  # position = qpos[1:]
    with EnvPool("cartpole-swingup", 3, num_workers=0) as pool:
        pool.reset([0, 1, 2])
        assert pool.touch().shape == (3, 0)


def test_bad_input_is_a_clear_error():
    pool = EnvPool("hopper-hop", 2, num_workers=0)
    with pytest.raises(RuntimeError, match="reset the pool before stepping"):
        pool.step(np.zeros((2, 4)))
    pool.reset([0, 1])
    with pytest.raises(ValueError, match=r"expected actions of shape \(2, 4\), got \(2, 3\)"):
        pool.step(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"expected actions of shape \(2, 4\), got \(4,\)"):
        pool.step(np.zeros(4))
    with pytest.raises(ValueError, match=r"non-finite actions for envs \[1\]"):
        pool.step(np.array([[0, 0, 0, 0], [0, np.nan, 0, 0]]))
    with pytest.raises(ValueError, match=r"expected episode seeds of shape \(2,\), got \(3,\)"):
        pool.reset([0, 1, 2])
    with pytest.raises(ValueError, match="must be integers"):
        pool.reset([0.5, 1.0])
    with pytest.raises(RuntimeError, match="no step_async"):
        pool.step_wait()
    for kwargs in ({"num_envs": 0}, {"num_envs": 1, "action_repeat": 0}, {"num_envs": 1, "num_workers": -1}):
        with pytest.raises(ValueError, match="EnvPool: "):
            EnvPool("hopper-hop", **kwargs)
    pool.close()


def test_close_is_idempotent_in_process():
    pool = EnvPool("hopper-hop", 1, num_workers=0)
    pool.reset([0])
    pool.close()
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.reset([0])


# --------------------------------------------------------------------------------------------- worker pools
def test_worker_pool_equals_in_process_pool_whatever_its_history(worker_pool):
    assert (worker_pool.num_envs, worker_pool.obs_dim, worker_pool.act_dim, worker_pool.task) == (4, 15, 4, "hopper-hop")
    assert len(set(worker_pool.worker_pids)) == 2
    rollout(worker_pool, [9, 8, 7, 6], random_actions(7, 15, 4, 4))  # a history the in-process pool lacks
    actions = random_actions(8, 12, 4, 4)
    with EnvPool("hopper-hop", 4, num_workers=0) as local:
        obs_l, rew_l = rollout(local, [1, 2, 3, 4], actions)
        obs_w, rew_w = rollout(worker_pool, [1, 2, 3, 4], actions)
        np.testing.assert_array_equal(obs_w, obs_l)
        np.testing.assert_array_equal(rew_w, rew_l)
        np.testing.assert_array_equal(worker_pool.touch(), local.touch())
        np.testing.assert_array_equal(worker_pool.physics_states(), local.physics_states())
    assert obs_w.dtype == np.float32 and rew_w.dtype == np.float32


def test_step_async_then_step_wait(worker_pool):
    actions = random_actions(4, 3, 4, 4)
    worker_pool.reset([0, 1, 2, 3])
    expected = [worker_pool.step(a) for a in actions]
    worker_pool.reset([0, 1, 2, 3])
    for a, (obs, reward) in zip(actions, expected):
        worker_pool.step_async(a)
        with pytest.raises(RuntimeError, match="has not been collected"):
            worker_pool.step_async(a)
        with pytest.raises(RuntimeError, match="still waiting"):
            worker_pool.reset([0, 1, 2, 3])
        got_obs, got_reward = worker_pool.step_wait()
        np.testing.assert_array_equal(got_obs, obs)
        np.testing.assert_array_equal(got_reward, reward)
    with pytest.raises(ValueError, match=r"expected actions of shape \(4, 4\), got \(3, 4\)"):
        worker_pool.step(np.zeros((3, 4)))


def test_dead_worker_raises_instead_of_hanging_and_close_is_idempotent():
    pool = EnvPool("hopper-hop", 3, num_workers=2)
    pool.reset([0, 1, 2])
    pids = pool.worker_pids
    os.kill(pids[1], signal.SIGKILL)
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"env worker 1 \(task hopper-hop, envs 2\.\.2, pid \d+\) died"):
        pool.step(np.zeros((3, 4)))
    assert time.perf_counter() - start < 10
    pool.close()  # already closed by the failure: nothing left to do
    pool.close()
    for pid in pids:
        assert not _alive(pid)
    with pytest.raises(RuntimeError, match="closed"):
        pool.step(np.zeros((3, 4)))


def test_an_interrupted_wait_closes_the_pool_rather_than_desynchronise_it():
    pool = EnvPool("cartpole-swingup", 2, num_workers=2)
    pool.reset([0, 1])
    pids = pool.worker_pids
    pool.step_async(np.zeros((2, 1)))

    def interrupted(i):  # Ctrl-C arrives while waiting for worker 1; its answer stays in the pipe
        if i == 1:
            raise KeyboardInterrupt

    seams.install("env_receive", interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            pool.step_wait()
    finally:
        seams.uninstall("env_receive")
    with pytest.raises(RuntimeError, match="closed"):
        pool.step(np.zeros((2, 1)))
    assert not any(_alive(pid) for pid in pids)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie has exited already; only its parent's wait is missing
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def test_workers_do_not_outlive_a_killed_parent(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import os, signal, sys
        from tdmpc_glass.envs import EnvPool
        if __name__ == "__main__":
            pool = EnvPool("cartpole-swingup", 1, num_workers=1)
            pool.reset([0])
            print(*pool.worker_pids, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    """))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 1
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)
