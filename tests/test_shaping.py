"""Reward shaping (tdmpc_glass/envs/shaping.py): the terms at hand-computed hopper poses, the weights and the
decay, the pools, the config checks, and through the trainer: shaped rewards in the buffer, task returns in eval."""
import csv
import math

import numpy as np
import pytest

from tdmpc_glass import checkpoint
from tdmpc_glass import train as train_module
from tdmpc_glass.config import ShapingConfig, check
from tdmpc_glass.envs import EnvPool, load
from tdmpc_glass.envs.dmc import EnvChunk
from tdmpc_glass.envs.shaping import COS_FALL, HopperTerms, coefficients, shaped_reward

from train_script import tiny_config  # noqa: E402


def pose(physics, rootz=0.0, rooty_deg=0.0):
    """All hinges at 0 (a straight leg): bodies stack straight down from the torso at z = 1 + rootz."""
    physics.data.qpos[:] = 0.0
    physics.data.qvel[:] = 0.0
    physics.named.data.qpos["rootz"] = rootz
    physics.named.data.qpos["rooty"] = math.radians(rooty_deg)
    physics.forward()


def test_terms_at_hand_computed_poses():
    env = load("hopper-hop")
    physics = env.physics
    terms = HopperTerms(physics)
    # upright, straight leg: knee at 1 - .05 - .2 - .33 = 0.42 m, well above 0.2 m; torso vertical
    pose(physics)
    knee, stand, fall = terms(physics)
    assert knee == 0.0 and fall == 0.0
    assert stand == pytest.approx(min(physics.height() / 0.6, 1.0))  # dm_control's own torso-over-foot height
    assert physics.height() > 0.6 and stand == 1.0
    # lowered by 0.35 m: the knee at 0.07 m -> (0.2 - 0.07) / 0.2
    pose(physics, rootz=-0.35)
    assert terms(physics)[0] == pytest.approx(0.65, abs=1e-9)
    # tilted: the torso axis's vertical component is cos(tilt)
    pose(physics, rooty_deg=30)
    assert terms(physics)[2] == 0.0
    pose(physics, rooty_deg=60)
    assert terms(physics)[2] == pytest.approx((COS_FALL - 0.5) / COS_FALL, abs=1e-9)
    pose(physics, rooty_deg=90)
    assert terms(physics)[2] == pytest.approx(1.0, abs=1e-9)
    # a collapsed hopper (torso over foot below 0.6 m) gets a partial stand term
    physics.data.qpos[:] = 0.0
    physics.named.data.qpos["knee"] = math.radians(150)
    physics.named.data.qpos["hip"] = math.radians(-150)
    physics.forward()
    assert 0 < physics.height() < 0.6
    assert terms(physics)[1] == pytest.approx(physics.height() / 0.6)
    env.close()


def test_weights_and_the_linear_decay_of_the_stand_bonus():
    sh = ShapingConfig(knee_penalty=0.5, soft_stand_bonus=0.1, soft_stand_decay_until=3_000_000,
                       gait_fall_penalty=0.2)
    np.testing.assert_allclose(coefficients(sh, 0), [-0.5, 0.1, -0.2])
    np.testing.assert_allclose(coefficients(sh, 1_500_000), [-0.5, 0.05, -0.2])
    np.testing.assert_allclose(coefficients(sh, 3_000_000), [-0.5, 0.0, -0.2])
    np.testing.assert_allclose(coefficients(sh, 9_000_000), [-0.5, 0.0, -0.2])
    no_decay = ShapingConfig(soft_stand_bonus=0.1)
    assert coefficients(no_decay, 10**8)[1] == 0.1
    reward, terms = np.array([1.0, 0.0]), np.array([[2.0, 1.0, 0.0], [0.0, 0.5, 2.0]])
    np.testing.assert_allclose(shaped_reward(reward, terms, sh, 0), [1.0 - 1.0 + 0.1, 0.05 - 0.4], rtol=1e-6)


def test_shaping_pool_keeps_the_task_reward_and_sums_terms_over_the_repeats():
    seeds, rng = np.arange(3) + 10, np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (30, 3, 4))
    with EnvPool("hopper-hop", 3, 2, 0, measure=HopperTerms) as shaped, EnvPool("hopper-hop", 3, 2, 0) as plain:
        assert plain.measured is None
        obs_a, obs_b = shaped.reset(seeds), plain.reset(seeds)
        assert np.array_equal(obs_a, obs_b)
        raw = load("hopper-hop")
        raw.task.random.seed(int(seeds[0]))
        raw.reset()
        terms = HopperTerms(raw.physics)
        total = np.zeros(3)
        for a in actions:
            (obs_a, rew_a), (obs_b, rew_b) = shaped.step(a), plain.step(a)
            assert np.array_equal(obs_a, obs_b) and np.array_equal(rew_a, rew_b)
            expected = 0.0
            for _ in range(2):
                raw.step(a[0])
                expected = expected + terms(raw.physics)
            np.testing.assert_allclose(shaped.measured[0], expected, rtol=1e-6)
            total += shaped.measured.sum(0)
        assert total.max() > 0
        raw.close()


@pytest.mark.parametrize("task, key", [("walker-walk", "shaping.knee_penalty")])
def test_shaping_a_task_other_than_the_hopper_is_a_config_error(task, key):
    cfg = tiny_config()
    cfg.task, cfg.shaping.knee_penalty = task, 0.1
    with pytest.raises(ValueError, match=f"^{key}: .*hopper only.*walker-walk"):
        check(cfg)
    cfg = tiny_config()
    cfg.shaping.gait_fall_penalty = -1.0
    with pytest.raises(ValueError, match="^shaping.gait_fall_penalty: must be >= 0"):
        check(cfg)
    cfg = tiny_config()
    cfg.shaping.soft_stand_bonus, cfg.shaping.soft_stand_decay_until = 0.1, 0
    with pytest.raises(ValueError, match="^shaping.soft_stand_decay_until: "):
        check(cfg)


class Recorder:
    """An EnvPool that remembers every reset and step (and the shaping terms the pool returned)."""

    def __init__(self, pool):
        self.pool, self.log = pool, []

    def __getattr__(self, name):
        return getattr(self.pool, name)

    def reset(self, seeds, task_ids=None):
        self.log.append(("reset", np.array(seeds)))
        return self.pool.reset(seeds, task_ids)

    def step(self, actions):
        obs, reward = self.pool.step(actions)
        terms = None if self.pool.measured is None else self.pool.measured.copy()
        self.log.append(("step", np.array(actions), reward.copy(), terms))
        return obs, reward


def replay(task, log, n):
    """Rewards (steps, n) of the recorded actions in a fresh unshaped chunk, from the recorded resets."""
    chunk, rewards = EnvChunk(task, n, 2), []
    for entry in log:
        if entry[0] == "reset":
            chunk.reset(entry[1])
        else:
            rewards.append(chunk.step(entry[1])[1])
    chunk.close()
    return np.array(rewards)


@pytest.mark.slow
def test_shaped_rewards_train_the_agent_and_never_reach_evaluation(tmp_path, monkeypatch):
    cfg = tiny_config(steps=160, eval_freq=80)
    cfg.shaping.knee_penalty, cfg.shaping.gait_fall_penalty = 0.5, 0.3
    cfg.shaping.soft_stand_bonus, cfg.shaping.soft_stand_decay_until = 0.2, 120
    pools = []
    real_pool = train_module.EnvPool

    def recording_pool(*args, **kwargs):
        pools.append(Recorder(real_pool(*args, **kwargs)))
        return pools[-1]

    monkeypatch.setattr(train_module, "EnvPool", recording_pool)
    run = tmp_path / "seed1"
    trainer = train_module.Trainer(cfg, [1], [run], progress=False)
    try:
        assert trainer.run() == 0
    finally:
        trainer.close()
    train_pool, eval_pool = pools
    assert train_pool.pool.measure is HopperTerms and eval_pool.pool.measure is None
    E, L = cfg.train.num_envs, cfg.train.episode_length

    # training: the buffer holds task reward + weighted terms at each tick's env step; the task's own
    # rewards (an unshaped replay of the same actions) differ from them
    steps = [e for e in train_pool.log if e[0] == "step"]
    raw = np.array([e[2] for e in steps])  # (ticks, E)
    np.testing.assert_array_equal(raw, replay(cfg.task, train_pool.log, E))
    env_steps = np.arange(len(steps)) * cfg.train.action_repeat * E
    expected = np.array([shaped_reward(r, e[3], cfg.shaping, s) for r, e, s in zip(raw, steps, env_steps)])
    state, _ = checkpoint.load(checkpoint.path_for(run / "checkpoints", 160), trainer.state_template())
    rows = np.array([r for r in range(int(state.buffer.count)) if r % (L + 1) != 0])  # skip reset rows
    stored = np.asarray(state.buffer.reward)[rows]
    np.testing.assert_array_equal(stored, expected)
    assert np.abs(stored - raw).max() > 0.05

    # evaluation: eval.csv's returns are the task's own returns of the actions taken
    n = cfg.train.eval_episodes
    rewards = replay(cfg.task, eval_pool.log, n).reshape(-1, 2, L, n)  # (evals, mppi/pi, steps, episodes)
    with open(run / "eval.csv", newline="") as f:
        evals = list(csv.DictReader(f))
    assert len(evals) == rewards.shape[0] == 3
    for row, per_eval in zip(evals, rewards):
        returns = np.zeros((2, n))
        for t in range(L):
            returns += per_eval[:, t]
        assert float(row["mppi_return"]) == returns[0].mean() and float(row["pi_return"]) == returns[1].mean()
