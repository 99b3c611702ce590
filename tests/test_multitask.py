"""Multi-task hop+stand (tdmpc_glass/multitask.py, research log 10.8): the usage controller, per-env tasks in
the env pool, the task id in the observation, config checks, and a multi-task training run that resumes."""
import json

import numpy as np
import pytest

from tdmpc_glass.config import check
from tdmpc_glass.envs import EnvPool
from tdmpc_glass.multitask import TaskSampler, one_hot, target_usage, with_task_id
from tdmpc_glass.train import Trainer

from train_script import assert_extension_reproduces, rows, tiny_config  # noqa: E402

TASKS = ["hopper-hop", "hopper-stand"]


def mt_config(eta=0.0, target=(), **train_overrides):
    cfg = tiny_config(**train_overrides)
    cfg.multitask.tasks, cfg.multitask.eta, cfg.multitask.target_usage = list(TASKS), eta, list(target)
    return cfg


def test_controller_step_by_hand():
    sampler = TaskSampler(mt_config(eta=2.0, target=(3, 1)), num_seeds=1)
    assert np.allclose(sampler.p, [[0.75, 0.25]]) and np.allclose(sampler.u, [[0.75, 0.25]])
    sampler.observe(np.array([[1, 1]]))  # one episode with both envs on stand
    u = 0.9 * np.array([0.75, 0.25]) + 0.1 * np.array([0.0, 1.0])
    logits = np.log([0.75, 0.25]) + 2.0 * (np.array([0.75, 0.25]) - u)
    np.testing.assert_allclose(sampler.u[0], u)
    np.testing.assert_allclose(sampler.p[0], np.exp(logits) / np.exp(logits).sum())
    assert sampler.p[0, 0] > 0.75  # hop was under-used: its probability rises


def test_draws_are_reproducible_and_follow_the_target():
    sampler = TaskSampler(mt_config(target=(3, 1)), num_seeds=2)  # eta = 0: fixed sampling at u*
    a, b = sampler.sample([1, 2], 5, 8), sampler.sample([1, 2], 5, 8)
    assert a.shape == (2, 8) and np.array_equal(a, b) and not np.array_equal(a, sampler.sample([1, 2], 6, 8))
    draws = np.concatenate([sampler.sample([1, 2], e, 8) for e in range(500)], axis=1)
    assert abs((draws == 0).mean() - 0.75) < 0.02
    for e in range(50):
        sampler.observe(sampler.sample([1, 2], e, 8))
    np.testing.assert_allclose(sampler.p, [[0.75, 0.25]] * 2)


def test_controller_pulls_a_skewed_sampler_back_to_the_target_usage():
    def usage(eta):
        sampler = TaskSampler(mt_config(eta=eta), num_seeds=1)
        sampler.p[:] = [[0.95, 0.05]]  # e.g. a resumed or badly initialised sampler
        shares = []
        for e in range(400):
            ids = sampler.sample([3], e, 4)
            sampler.observe(ids)
            shares.append((ids == 0).mean())
        return np.mean(shares[200:]), sampler.p[0, 0]

    fixed, controlled = usage(0.0), usage(5.0)
    assert fixed[0] > 0.9 and fixed[1] == pytest.approx(0.95)
    assert abs(controlled[0] - 0.5) < 0.06 and controlled[1] < 0.9  # usage at u*; p left its skew


def test_state_round_trips_through_json():
    sampler = TaskSampler(mt_config(eta=1.0), num_seeds=2)
    for e in range(7):
        sampler.observe(sampler.sample([1, 2], e, 2))
    other = TaskSampler(mt_config(eta=1.0), num_seeds=2)
    other.load(1, json.loads(json.dumps(sampler.state(1))))
    assert np.array_equal(other.p[1], sampler.p[1]) and np.array_equal(other.u[1], sampler.u[1])


def test_task_id_is_a_one_hot_appended_to_the_observation():
    obs = np.arange(2 * 3 * 15, dtype=np.float32).reshape(2, 3, 15)
    out = with_task_id(obs, np.array([[0, 1, 1], [1, 0, 0]]), 2)
    assert out.shape == (2, 3, 17) and np.array_equal(out[..., :15], obs)
    assert out[0, 1, 15:].tolist() == [0.0, 1.0] and out[1, 1, 15:].tolist() == [1.0, 0.0]
    assert one_hot(np.array([2]), 3).tolist() == [[0.0, 0.0, 1.0]]
    np.testing.assert_allclose(target_usage(mt_config()), [0.5, 0.5])


@pytest.mark.parametrize("workers", [0, 2])
def test_pool_runs_each_env_on_its_episodes_task(workers):
    seeds, ids = np.array([5, 6, 7, 8]), np.array([0, 1, 1, 0])
    actions = np.random.default_rng(1).uniform(-1, 1, (10, 4, 4))
    with EnvPool(TASKS, 4, 2, workers) as mixed, EnvPool("hopper-hop", 4, 2, 0) as hop, \
            EnvPool("hopper-stand", 4, 2, 0) as stand:
        obs = [pool.reset(seeds, ids) if pool is mixed else pool.reset(seeds) for pool in (mixed, hop, stand)]
        assert np.array_equal(obs[0], obs[1])  # same physics, same reset: the tasks differ by reward only
        for a in actions:
            (_, r_mixed), (_, r_hop), (_, r_stand) = mixed.step(a), hop.step(a), stand.step(a)
            np.testing.assert_array_equal(r_mixed, np.where(ids == 0, r_hop, r_stand))
        # the next episode swaps the tasks
        mixed.reset(seeds, 1 - ids), hop.reset(seeds), stand.reset(seeds)
        _, r_mixed = mixed.step(actions[0])
        np.testing.assert_array_equal(r_mixed, np.where(ids == 1, hop.step(actions[0])[1],
                                                        stand.step(actions[0])[1]))
        with pytest.raises(ValueError, match="task_ids"):
            mixed.reset(seeds, [0, 1, 2, 0])


def test_tasks_of_one_pool_need_one_spec():
    with pytest.raises(ValueError, match="same \\(obs_dim, act_dim\\)"):
        EnvPool(["hopper-hop", "walker-walk"], 2, 2, 0)


@pytest.mark.parametrize("edit, key", [
    (lambda c: setattr(c.multitask, "tasks", ["hopper-hop", "walker-walk"]), "multitask.tasks"),
    (lambda c: setattr(c.multitask, "tasks", ["hopper-hop"]), "multitask.tasks"),
    (lambda c: setattr(c, "task", "cheetah-run"), "task"),
    (lambda c: setattr(c.multitask, "target_usage", [1.0]), "multitask.target_usage"),
    (lambda c: setattr(c.multitask, "usage_rate", 0.0), "multitask.usage_rate"),
])
def test_bad_multitask_settings_name_their_key(edit, key):
    cfg = mt_config()
    edit(cfg)
    with pytest.raises(ValueError, match=f"^{key}: "):
        check(cfg)
    single = tiny_config()
    single.multitask.eta = 1.0
    with pytest.raises(ValueError, match="^multitask.eta: "):
        check(single)


@pytest.mark.slow
def test_multitask_run_logs_p_evaluates_on_hop_and_resumes_exactly(tmp_path):
    cfg = mt_config(eta=1.0, steps=240, eval_freq=80)
    full = [tmp_path / "full" / "seed1", tmp_path / "full" / "seed2"]
    trainer = Trainer(cfg, [1, 2], full, progress=False)
    try:
        assert trainer.obs_dim == 17 and trainer.env.pool.tasks == tuple(TASKS)
        assert trainer.run() == 0
    finally:
        trainer.close()
    for run in full:
        train_rows = rows(run / "train.csv")
        p = [float(r["task_p_hopper-hop"]) + float(r["task_p_hopper-stand"]) for r in train_rows]
        assert np.allclose(p, 1.0)
        assert len(rows(run / "eval.csv")) == 4
    # p moved off u* for some seed at some point (the controller ran)
    assert any(float(r["task_p_hopper-hop"]) != 0.5 for run in full for r in rows(run / "train.csv"))
    assert_extension_reproduces(cfg, [1, 2], full, tmp_path / "parts", stop_at=160)


def _heads_config(task_heads):
    from tdmpc_glass.config import Config

    cfg = Config()
    cfg.model.size, cfg.model.enc_dim, cfg.model.mlp_dim, cfg.model.latent_dim, cfg.model.num_q = 1, 32, 32, 16, 2
    cfg.multitask.tasks, cfg.multitask.task_heads = list(TASKS), task_heads
    cfg.glass.enabled, cfg.glass.num_prototypes, cfg.glass.num_clusters = True, 6, 3
    return cfg


def test_task_heads_off_is_todays_network_and_on_gives_each_task_its_own_output_layers():
    """10.8's mitigation "task-specific heads with shared encoder + Glass partition" (multitask.task_heads)."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from tdmpc_glass import glass
    from tdmpc_glass.world_model import count_params, make_networks

    obs_dim, act_dim, T = 15 + 2, 4, 2
    off, on = _heads_config(False), _heads_config(True)
    plain = _heads_config(False)
    plain.multitask = type(plain.multitask)(tasks=list(TASKS))  # a config written before the key existed
    key = jax.random.PRNGKey(0)
    w_off, p_off = make_networks(off, obs_dim, act_dim, key)
    w_plain, p_plain = make_networks(plain, obs_dim, act_dim, key)
    assert count_params(off, obs_dim, act_dim) == count_params(plain, obs_dim, act_dim)
    assert jax.tree.structure((w_off, p_off)) == jax.tree.structure((w_plain, p_plain))
    assert all(bool(jnp.array_equal(a, b)) for a, b in zip(jax.tree.leaves((w_off, p_off)),
                                                            jax.tree.leaves((w_plain, p_plain))))
    bins, mlp, num_q = off.model.num_bins, off.model.mlp_dim, off.model.num_q
    extra = count_params(on, obs_dim, act_dim)["total"] - count_params(off, obs_dim, act_dim)["total"]
    assert extra == (T - 1) * bins * (mlp + 1) * (1 + num_q)  # one more output layer per task, reward and Q

    world, policy = make_networks(on, obs_dim, act_dim, key)
    # output layers start at zero: give them distinct values so the tasks' heads differ
    world = eqx.tree_at(lambda w: (w.reward.out.weight, w.qs.out.weight), world,
                        (jax.random.normal(key, world.reward.out.weight.shape),
                         jax.random.normal(jax.random.PRNGKey(1), world.qs.out.weight.shape)))
    rng = np.random.default_rng(0)
    env_obs = rng.standard_normal((5, 15)).astype(np.float32)
    a = jnp.asarray(rng.uniform(-1, 1, (5, act_dim)), jnp.float32)
    z = [world.encode(jnp.asarray(with_task_id(env_obs, np.full(5, t), T))) for t in range(T)]
    assert z[0].shape == (5, 16 + T)
    np.testing.assert_array_equal(np.asarray(world.core(z[0])), np.asarray(world.encoder(
        jnp.asarray(with_task_id(env_obs, np.zeros(5, int), T)))))  # one encoder (it reads the id, as without heads)
    for t in range(T):
        core_in = jnp.concatenate([world.core(z[t]), a], -1)
        full_reward = world.reward(core_in).reshape(5, T, bins)
        full_q = jax.vmap(lambda head: head(core_in))(world.qs).reshape(num_q, 5, T, bins)
        np.testing.assert_allclose(np.asarray(world.reward_logits(z[t], a)), np.asarray(full_reward[:, t]),
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(world.q_logits(z[t], a)), np.asarray(full_q[:, :, t]),
                                   rtol=1e-5, atol=1e-5)
        nxt = world.next(z[t], a)
        np.testing.assert_array_equal(np.asarray(nxt[:, 16:]), np.eye(T)[[t] * 5])  # the task rides along
        assert world.q_value(nxt, a, key, "min").shape == (5,)
        assert policy(world.policy_input(nxt), key)[0].shape == (5, act_dim)  # the policy prior stays shared
    swapped = jnp.concatenate([world.core(z[0]), z[1][:, 16:]], -1)  # task 0's latent read by task 1's heads
    assert not np.allclose(np.asarray(world.reward_logits(z[0], a)), np.asarray(world.reward_logits(swapped, a)))
    # Glass sees the learned part only: the same partition for both tasks
    c0 = glass.soft_assignment(z[0], world.glass.mu)
    np.testing.assert_allclose(np.asarray(c0), np.asarray(glass.soft_assignment(swapped, world.glass.mu)))
    np.testing.assert_allclose(np.asarray(c0), np.asarray(glass.soft_assignment(world.core(z[0]), world.glass.mu)))


def test_task_heads_need_tasks():
    single = tiny_config()
    single.multitask.task_heads = True
    with pytest.raises(ValueError, match="^multitask.task_heads: "):
        check(single)
