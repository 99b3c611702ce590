"""Training schedules (tdmpc_glass/schedules.py): action noise, latent action smoothing, Q-reset, basin
perturbation, basin restart, and their config checks. Fast tests act on tiny states directly; the slow ones
train tiny runs through the Trainer."""
import json
from dataclasses import replace

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tdmpc_glass import agent, checkpoint, schedules
from tdmpc_glass.config import ScheduleConfig, check
from tdmpc_glass import interventions, runlayout
from tdmpc_glass.basin import begin_restart
from tdmpc_glass.train import Trainer, train
from tdmpc_glass.world_model import make_networks

from train_script import assert_extension_reproduces, rows as csv_rows, tiny_config  # noqa: E402

OBS, ACT = 15, 4


def arrays(tree):
    return jax.tree.leaves(eqx.filter(tree, eqx.is_array))


def same(a, b) -> bool:
    la, lb = arrays(a), arrays(b)
    return len(la) == len(lb) and all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(la, lb))


# ---- executed-action noise ----------------------------------------------------------------------------------
def test_action_noise_std_anneals_linearly_then_holds():
    s = ScheduleConfig(action_noise_start=0.3, action_noise_end=0.1, action_noise_anneal_env_steps=1000)
    assert [round(schedules.action_noise_std(s, e), 6) for e in (0, 250, 500, 1000, 5000)] == \
        [0.3, 0.25, 0.2, 0.1, 0.1]
    constant = ScheduleConfig(action_noise_start=0.4)  # d_v1: no anneal
    assert schedules.action_noise_std(constant, 0) == schedules.action_noise_std(constant, 10**6) == 0.4


def test_action_noise_is_gaussian_clipped_and_reproducible_per_seed_and_tick():
    actions = np.zeros((2, 3000, 4), np.float32)
    noisy = schedules.action_noise(actions, [1, 2], tick=7, std=0.3)
    assert noisy.dtype == np.float32 and noisy.shape == actions.shape
    assert np.array_equal(noisy, schedules.action_noise(actions, [1, 2], tick=7, std=0.3))
    assert not np.array_equal(noisy, schedules.action_noise(actions, [1, 2], tick=8, std=0.3))
    assert not np.array_equal(noisy[0], noisy[1])  # each seed its own stream
    assert abs(noisy.std() - 0.3) < 0.01 and abs(noisy.mean()) < 0.01
    edge = schedules.action_noise(np.ones((1, 3000, 4), np.float32), [1], tick=7, std=0.3)
    assert edge.max() == 1.0 and edge.min() >= -1.0 and (edge == 1.0).mean() > 0.4  # clipped, not wrapped
    assert schedules.action_noise(actions, [1, 2], tick=7, std=0.0) is actions


# ---- latent action smoothing --------------------------------------------------------------------------------
def test_smoothing_coefficient_switches_on_at_its_step_without_changing_type():
    assert schedules.action_smooth_coef(ScheduleConfig(), 10**6) is None  # off: no term in the graph
    s = ScheduleConfig(action_smooth_coef=1e-3, action_smooth_from=250_000)
    before, after = schedules.action_smooth_coef(s, 249_999), schedules.action_smooth_coef(s, 250_000)
    assert float(before) == 0.0 and float(after) == pytest.approx(1e-3)
    assert before.shape == after.shape == () and before.dtype == after.dtype == jnp.float32
    traces = []
    f = jax.jit(lambda c: traces.append(1) or c * 2.0)
    f(before), f(after)
    assert len(traces) == 1


def test_smoothing_loss_matches_a_brute_force_sum():
    mean_action = np.random.default_rng(0).uniform(-1, 1, (4, 3, 2))
    expected = np.mean([[np.sum((mean_action[t + 1, b] - mean_action[t, b]) ** 2) for b in range(3)]
                        for t in range(3)])
    assert float(schedules.action_smooth_loss(jnp.asarray(mean_action))) == pytest.approx(expected, rel=1e-6)
    assert float(schedules.action_smooth_loss(jnp.ones((4, 3, 2)))) == 0.0


def test_policy_loss_adds_coefficient_times_smoothing_and_its_gradient():
    cfg = tiny_config()
    h = agent.Hyper.from_config(cfg)

    @jax.jit
    def losses():  # one compiled program: eager ops are slow to dispatch one by one
        world, policy = make_networks(cfg, OBS, ACT, jax.random.PRNGKey(0))
        latents = world.encode(jax.random.normal(jax.random.PRNGKey(1), (cfg.horizon + 1, 8, OBS)))
        key, scale = jax.random.PRNGKey(2), jnp.ones(())
        loss = lambda p, c=None: agent.policy_loss(p, world, latents, scale, key, h, agent.Coefs(smooth=c))
        grad = lambda c: eqx.filter_grad(lambda p: loss(p, c)[0])(policy)
        base, (_, none_terms) = loss(policy)
        on, (_, terms) = loss(policy, jnp.float32(0.5))
        return (base, none_terms, loss(policy, jnp.float32(0.0))[0], on, terms,
                schedules.action_smooth_loss(policy.mean_action(latents)),
                grad(jnp.float32(0.0)), grad(jnp.float32(0.5)))

    base, none_terms, zero, on, terms, smooth, g_off, g_on = losses()
    assert none_terms == {} and float(zero) == pytest.approx(float(base), rel=1e-6)
    assert float(terms["action_smooth_loss"]) == pytest.approx(float(smooth), rel=1e-6) and float(smooth) > 0
    assert float(on) == pytest.approx(float(base) + 0.5 * float(smooth), rel=1e-5, abs=1e-7)
    assert any(not np.allclose(a, b) for a, b in zip(arrays(g_off), arrays(g_on)))  # the term moves the policy


# ---- events at env steps ------------------------------------------------------------------------------------
def test_crossed_fires_each_event_once_in_the_round_that_reaches_it():
    steps = [0, 100, 250, 250]
    fired = [schedules.crossed(steps, a, b) for a, b in ((0, 40), (40, 80), (80, 120), (200, 240), (240, 280))]
    assert fired == [[0], [], [1], [], [2, 3]]


# ---- Q-reset ------------------------------------------------------------------------------------------------
def trained_state(cfg, steps=3):
    """A tiny state whose world optimiser has taken a few steps (non-zero Adam moments everywhere)."""
    world_tx, _ = agent.optimisers(cfg)

    @jax.jit
    def make():
        state = agent.init_state(cfg, OBS, ACT, 3)
        opt, world = state.world_opt, state.world
        for i in range(steps):
            grads = jax.tree.map(lambda x: jax.random.normal(jax.random.PRNGKey(i), x.shape),
                                 eqx.filter(world, eqx.is_array))
            updates, opt = world_tx.update(grads, opt, eqx.filter(world, eqx.is_array))
            world = eqx.apply_updates(world, updates)
        return eqx.tree_at(lambda s: (s.world, s.world_opt, s.target_qs), state, (world, opt, world.qs))

    return make()


@pytest.mark.slow
def test_split_q_adam_makes_the_same_updates_as_one_adam():
    cfg = tiny_config()
    split_cfg = replace(cfg, schedule=replace(cfg.schedule, q_reset_at=[100]))
    plain, split = trained_state(cfg), trained_state(split_cfg)
    assert not schedules.has_q_partition(plain.world_opt) and schedules.has_q_partition(split.world_opt)
    np.testing.assert_allclose(np.concatenate([x.ravel() for x in arrays(plain.world)]),
                               np.concatenate([x.ravel() for x in arrays(split.world)]), rtol=1e-6, atol=1e-7)


def test_q_reset_renews_q_heads_targets_and_only_their_optimiser_state():
    cfg = tiny_config()
    cfg.schedule.q_reset_at = [100]
    world_tx, _ = agent.optimisers(cfg)
    before = trained_state(cfg)
    fresh_qs = eqx.filter_jit(lambda: make_networks(cfg, OBS, ACT, jax.random.PRNGKey(99))[0].qs)()
    after = eqx.filter_jit(lambda b, q: schedules.q_reset(b, q, world_tx))(before, fresh_qs)

    # Q heads and their targets are the fresh ones (and differ from what was there)
    assert same(after.world.qs, fresh_qs) and same(after.target_qs, fresh_qs)
    assert not same(before.world.qs, fresh_qs)
    # every other leaf of the model, the policy, the buffer and q_scale is bit-identical
    assert same(eqx.tree_at(lambda w: w.qs, after.world, before.world.qs), before.world)
    assert same(after.policy, before.policy) and same(after.policy_opt, before.policy_opt)
    assert same(after.buffer, before.buffer) and same(after.q_scale, before.q_scale)
    # optimiser: the non-Q partition untouched; the Q partition's moments zero and its step count 0
    inner_before = before.world_opt[1].inner_states
    inner_after = after.world_opt[1].inner_states
    assert same(inner_after["rest"], inner_before["rest"])
    adam_before, adam_after = inner_before["q"].inner_state[0], inner_after["q"].inner_state[0]
    assert int(adam_before.count) == 3 and int(adam_after.count) == 0
    assert all(np.all(x == 0) for x in arrays(adam_after.mu) + arrays(adam_after.nu))
    assert any(np.any(x != 0) for x in arrays(adam_before.mu.qs))
    # the non-Q moments are all still there (not zeroed like the buggy phase e did)
    assert all(np.any(x != 0) for x in arrays(inner_after["rest"].inner_state[0].mu.encoder))
    # the reset state keeps training: the next update moves the fresh heads by about lr (bias-corrected Adam)
    params = eqx.filter(after.world, eqx.is_array)
    updates, _ = eqx.filter_jit(world_tx.update)(jax.tree.map(jnp.ones_like, params), after.world_opt, params)
    q_steps = np.concatenate([np.abs(x).ravel() for x in arrays(updates.qs)])
    np.testing.assert_allclose(q_steps, cfg.optim.lr, rtol=1e-3)


@pytest.fixture(scope="module")
def fresh_state():
    cfg = tiny_config()
    return eqx.filter_jit(lambda: agent.init_state(cfg, OBS, ACT, 0))()


def test_q_reset_needs_the_split_optimiser(fresh_state):
    with pytest.raises(ValueError, match="q_reset_at"):
        schedules.q_reset(fresh_state, fresh_state.world.qs, agent.optimisers(tiny_config())[0])


# ---- parameter-noise perturbation ---------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["world", "policy", "all"])
def test_perturbation_scales_noise_by_each_tensors_rms(target, fresh_state):
    state = fresh_state
    out = eqx.filter_jit(lambda s: schedules.perturb(s, 0.1, target, jax.random.PRNGKey(5)))(state)
    assert same(out.target_qs, state.target_qs) and same(out.world_opt, state.world_opt)
    assert same(out.buffer, state.buffer)
    for name in ("world", "policy"):
        old, new = getattr(state, name), getattr(out, name)
        if target not in (name, "all"):
            assert same(old, new)
            continue
        for x, y in zip(arrays(old), arrays(new)):
            rms = float(np.sqrt(np.mean(np.square(x))))
            if rms == 0:  # zero tensors (zero-initialised last layers, biases) get zero noise
                assert np.array_equal(x, y)
            elif x.size >= 500:
                assert np.std(y - x) == pytest.approx(0.1 * rms, rel=0.15)
    with pytest.raises(ValueError, match="perturb_target"):
        schedules.perturb(state, 0.1, "encoder", jax.random.PRNGKey(5))


# ---- basin restart ------------------------------------------------------------------------------------------
def test_restart_decision_and_seed():
    s = ScheduleConfig(restart_check_at=200_000, restart_min_active=4, restart_max=2, restart_seed_offset=100)
    assert schedules.basin_restart_due(3.0, 0, s) and schedules.basin_restart_due(3.9, 1, s)
    assert not schedules.basin_restart_due(4.0, 0, s)  # at the threshold: keep
    assert not schedules.basin_restart_due(1.0, 2, s)  # no restarts left
    assert not schedules.basin_restart_due(float("nan"), 0, s)
    assert [schedules.restart_seed(3, a, s) for a in range(3)] == [3, 103, 203]


def test_begin_restart_archives_the_attempt_and_is_safe_to_repeat(tmp_path):
    run = tmp_path / "seed1"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "step_0000000080.npz").write_bytes(b"x")
    for name in ("eval.csv", "train.csv", "config.yaml", "events.jsonl"):
        (run / name).write_text(name)
    (run / "status.json").write_text(json.dumps({"status": "restarting", "attempt": 1}))
    status = begin_restart(run, 1)
    archive = runlayout.attempt_dir(run, 0)
    assert status["status"] == "running" and status["attempt"] == 1 and status["env_step"] == 0
    assert (archive / "eval.csv").read_text() == "eval.csv" and (archive / "checkpoints" / "step_0000000080.npz").exists()
    assert not (run / "eval.csv").exists() and not list((run / "checkpoints").glob("*.npz"))
    assert (run / "config.yaml").exists() and (run / "events.jsonl").exists()  # the run's history stays
    begin_restart(run, 1)  # a repeat after a kill moves nothing more and loses nothing
    assert (archive / "train.csv").read_text() == "train.csv"


# ---- config checks ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("edit, key", [
    (lambda c: setattr(c.schedule, "action_noise_start", -0.1), "schedule.action_noise_start"),
    (lambda c: setattr(c.schedule, "q_reset_at", [-5]), "schedule.q_reset_at"),
    (lambda c: setattr(c.schedule, "perturb_at", [100]), "schedule.perturb_scale"),
    (lambda c: setattr(c.schedule, "perturb_target", "encoder"), "schedule.perturb_target"),
    (lambda c: setattr(c.schedule, "restart_check_at", 1000), "schedule.restart_check_at"),
    (lambda c: (setattr(c.glass, "enabled", True), setattr(c.schedule, "restart_check_at", 1000),
                setattr(c.schedule, "restart_seed_offset", 0)), "schedule.restart_seed_offset"),
])
def test_bad_schedule_settings_name_their_key(edit, key):
    cfg = tiny_config()
    edit(cfg)
    with pytest.raises(ValueError, match=f"^{key}: "):
        check(cfg)


# ---- through the trainer (slow: tiny training runs) ---------------------------------------------------------
def schedule_config(**train):
    """Noise anneal, smoothing switched on mid-run, a Q-reset and a perturbation in one tiny run."""
    cfg = tiny_config(**train)
    s = cfg.schedule
    s.action_noise_start, s.action_noise_end, s.action_noise_anneal_env_steps = 0.3, 0.1, 200
    s.action_smooth_coef, s.action_smooth_from = 1e-3, 160
    s.q_reset_at, s.perturb_at, s.perturb_scale = [120], [160], 0.1
    return cfg


def events(run):
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_scheduled_run_logs_its_events_does_not_retrace_and_resumes_exactly(tmp_path):
    cfg = schedule_config(steps=240, eval_freq=80)
    full = [tmp_path / "full" / "seed1", tmp_path / "full" / "seed2"]
    trainer = Trainer(cfg, [1, 2], full, progress=False)
    try:
        assert trainer.run() == 0
    finally:
        trainer.close()
    # smoothing switching on at 160 and the events did not add compiled round variants
    assert trainer.traces["round"] == 7, trainer.traces  # test_train's 6 step kinds, plus the schedule's own inputs
    for run in full:
        got = [(e["event"], e["env_step"]) for e in events(run)]
        assert ("q_reset", 120) in got and ("perturb", 160) in got
        rows = csv_rows(run / "train.csv")
        coef = {int(r["env_step"]): float(r["action_smooth_coef"]) for r in rows}
        assert coef[120] == 0.0 and coef[240] == pytest.approx(1e-3)
        noise = {int(r["env_step"]): float(r["action_noise_std"]) for r in rows}
        assert noise[240] == pytest.approx(0.1) and noise[80] > noise[200]
    # stopped at 160 (done), then extended to 240: the same rows as the uninterrupted run
    assert_extension_reproduces(cfg, [1, 2], full, tmp_path / "parts", stop_at=160)


def restart_config(**train):
    cfg = tiny_config(**train)
    cfg.glass.enabled = True
    s = cfg.schedule
    s.restart_check_at, s.restart_min_active, s.restart_max = 160, 10**6, 1  # forced: always below
    return cfg


@pytest.mark.slow
def test_forced_basin_restart_fires_is_logged_and_restarts_only_that_seed(tmp_path, monkeypatch):
    cfg = restart_config(steps=240, eval_freq=120)
    dirs = [tmp_path / "seed1", tmp_path / "seed2"]
    real = interventions.BasinCheck.after_round

    def seed2_is_healthy(self, states, view):  # the condition holds for seed 1 only
        column = np.array(view.last_row.get("active_prototypes", [np.nan] * len(view.seeds)), dtype=float)
        column[[i for i, s in enumerate(view.seeds) if s == 2]] = 10.0**7
        return real(self, states, view._replace(last_row={**view.last_row, "active_prototypes": column}))

    monkeypatch.setattr(interventions.BasinCheck, "after_round", seed2_is_healthy)
    assert train(cfg, [1, 2], dirs, progress=False) == 0
    restart = [e for e in events(dirs[0]) if e["event"] == "restart"]
    assert len(restart) == 1 and restart[0]["env_step"] == 160 and restart[0]["attempt"] == 1
    assert restart[0]["new_seed"] == 101 and restart[0]["active_prototypes"] is not None
    assert not [e for e in events(dirs[1]) if e["event"] == "restart"]
    # the second attempt hit the check again but has no restarts left
    checks = [e for e in events(dirs[0]) if e["event"] == "restart_check"]
    assert len(checks) == 1 and checks[0]["message"] == "no restarts left"
    for run in dirs:
        status = json.loads((run / "status.json").read_text())
        assert status["status"] == "done" and status["env_step"] == 240
    assert json.loads((dirs[0] / "status.json").read_text())["attempt"] == 1
    # attempt 0 is archived; the final run of seed 1 started over from env step 0 with seed 101
    archived = runlayout.attempt_dir(dirs[0], 0)
    assert [int(r["env_step"]) for r in csv_rows(archived / "eval.csv")] == [0, 120]
    assert [int(r["env_step"]) for r in csv_rows(dirs[0] / "eval.csv")] == [0, 120, 240]
    template = Trainer(cfg, [1], [tmp_path / "template"], progress=False)
    try:
        shape = template.state_template()
    finally:
        template.close()
    old, old_meta = checkpoint.load(checkpoint.path_for(archived / "checkpoints", 80), shape)
    new, new_meta = checkpoint.load(checkpoint.path_for(dirs[0] / "checkpoints", 240), shape)
    assert old_meta["schedule"]["attempt"] == 0 and new_meta["schedule"] == {"attempt": 1, "run_seed": 101}
    assert not same(old.world, new.world)
    # the restart reseeds exploration only (research log 10.6): the networks start from seed 1's init stream,
    # while exploration, training episodes and the checkpoint's run_seed follow seed 101
    fresh = agent.init_state(cfg, OBS, ACT, 1)
    assert np.array_equal(new.key, fresh.key) and np.array_equal(old.key, fresh.key)
    # seed 2 is untouched: the same run as in a batch where nothing restarts; seed 1's first attempt was
    # that batch's seed 1 up to the check
    ref = [tmp_path / "ref" / "seed1", tmp_path / "ref" / "seed2"]
    no_restart = replace(cfg, schedule=replace(cfg.schedule, restart_min_active=0))
    assert train(no_restart, [1, 2], ref, progress=False) == 0
    assert csv_rows(dirs[1] / "eval.csv") == csv_rows(ref[1] / "eval.csv")
    assert csv_rows(dirs[1] / "train.csv") == csv_rows(ref[1] / "train.csv")
    assert csv_rows(archived / "train.csv") == [r for r in csv_rows(ref[0] / "train.csv") if int(r["env_step"]) <= 160]
    assert csv_rows(dirs[0] / "train.csv") != csv_rows(ref[0] / "train.csv")
