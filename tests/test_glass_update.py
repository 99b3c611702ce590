"""Glass wired into the model: switches, where gradients go, Glass off = vanilla, MoE-Q with zero offsets."""
import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tdmpc_glass import agent, buffer, glass
from tdmpc_glass.config import Config
from tdmpc_glass.world_model import count_params, make_networks


def small_config(enabled=False, **glass_fields) -> Config:
    cfg = Config()
    m = cfg.model
    m.size, m.enc_dim, m.mlp_dim, m.latent_dim = 1, 32, 32, 32
    cfg.optim.batch_size = 16
    cfg.train.buffer_capacity, cfg.train.num_envs = 2000, 1
    cfg.glass.enabled = enabled
    for key, value in glass_fields.items():
        setattr(cfg.glass, key, value)
    return cfg


def filled_state(cfg, seed=0):
    state = agent.init_state(cfg, 15, 4, seed)
    n = 600
    rng = np.random.default_rng(seed)
    buf = buffer.add(state.buffer, jnp.asarray(rng.standard_normal((n, 1, 15)), jnp.float32),
                     jnp.asarray(rng.uniform(-1, 1, (n, 1, 4)), jnp.float32),
                     jnp.asarray(rng.random((n, 1)), jnp.float32), (jnp.arange(n) % 501)[:, None])
    return eqx.tree_at(lambda s: s.buffer, state, buf)


def updated(cfg, seed=0, n=2):
    state = filled_state(cfg, seed)
    h = agent.Hyper.from_config(cfg)
    w, p = agent.optimisers(cfg)
    return jax.jit(lambda s: agent.run_updates(s, 0, n, h, w, p))(state)


def test_glass_off_is_vanilla_whatever_its_other_settings():
    vanilla, off = small_config(), small_config(enabled=False, num_prototypes=4, moe_q=True, lambda_se=1.0)
    assert count_params(vanilla, 15, 4) == count_params(off, 15, 4)
    (s1, m1), (s2, m2) = updated(vanilla), updated(off)
    assert jax.tree.structure(s1) == jax.tree.structure(s2)
    for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s2)):
        np.testing.assert_array_equal(a, b)
    assert set(m1) == set(m2)


def test_the_loss_settings_are_the_glass_section_itself():
    """One schema: every glass.* key reaches the loss settings with its config value (window included, 4 by
    default), plus the two values the task decides; Hyper stays hashable (a static jit argument)."""
    cfg = small_config(enabled=True, window=3, lambda_window=1e-3, graph="flow", active_threshold=0.1,
                       intrinsic_coef=0.2)
    settings = agent.glass_settings(cfg)
    assert {k: getattr(settings, k) for k in dataclasses.asdict(cfg.glass)} == dataclasses.asdict(cfg.glass)
    assert settings.contact_index == () and settings.intrinsic  # no lambda_contrast: no touch indices needed
    assert agent.glass_settings(small_config(enabled=True)).window == Config().glass.window == 4
    h = agent.Hyper.from_config(cfg)
    assert h.glass == settings and hash(h) == hash(agent.Hyper.from_config(cfg))
    assert h != agent.Hyper.from_config(small_config(enabled=True))
    assert agent.Hyper.from_config(small_config()).glass is None


def test_glass_on_adds_its_parameters_and_finite_diagnostics():
    cfg = small_config(enabled=True)
    counts = count_params(cfg, 15, 4)
    assert counts["glass"] == 16 * 32 + 16 * 8
    state, metrics = updated(cfg)
    assert bool(metrics["params_finite"])
    for key in ("se", "h1", "resistance", "active_prototypes", "active_clusters", "k_switch_rate", "window_mi",
                "glass_loss", "loss_se", "loss_cluster_bal", "loss_proto_bal", "loss_temp"):
        assert np.isfinite(float(metrics[key])), key
    assert 0 < float(metrics["active_prototypes"]) <= 16


VARIANTS = [
    dict(), dict(graph="counts_sym"), dict(graph="flow"), dict(se_objective="neg_resistance"),
    dict(balance="sinkhorn"), dict(lambda_window=1e-3, window=4), dict(lambda_row_entropy=1e-3),
    dict(num_super=3), dict(graph_grad="prototypes"), dict(graph_grad="none"),
]


@pytest.mark.slow
def test_every_variant_gives_a_finite_loss_and_finite_gradients():
    obs = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 15))
    for fields in VARIANTS:
        cfg = small_config(enabled=True, **fields)
        world, _ = make_networks(cfg, 15, 4, jax.random.PRNGKey(0))
        settings = agent.glass_settings(cfg)
        loss, grads = jax.value_and_grad(lambda w: glass.glass_losses(w.glass, w.encode(obs), settings)[0])(world)
        assert np.isfinite(float(loss)), fields
        assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads)), fields


@pytest.mark.slow
def test_a_full_glass_update_with_every_switch_on_stays_finite():
    cfg = small_config(enabled=True, moe_q=True, lambda_window=1e-3, balance="sinkhorn", num_super=3,
                       lambda_row_entropy=1e-3)
    _, metrics = updated(cfg, n=2)
    assert bool(metrics["params_finite"]) and np.isfinite(float(metrics["total_loss"]))


def glass_grads(cfg, obs):
    world, _ = make_networks(cfg, 15, 4, jax.random.PRNGKey(0))
    settings = agent.glass_settings(cfg)
    return jax.grad(lambda w: glass.glass_losses(w.glass, w.encode(obs), settings)[0])(world)


def norm(tree):
    return float(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


@pytest.mark.slow
def test_glass_gradients_reach_exactly_the_intended_parameters():
    obs = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 15))
    full = glass_grads(small_config(enabled=True), obs)
    assert norm(full.encoder) > 0 and norm(full.glass.mu) > 0 and norm(full.glass.assign_logits) > 0
    assert norm(full.dynamics) == 0 and norm(full.reward) == 0 and norm(full.qs) == 0
    # SE alone with a stop-gradient graph trains the cluster matrix only
    se_only = dict(lambda_bal=0.0, lambda_temp=0.0, cluster_balance=False, balance="none")
    frozen_graph = glass_grads(small_config(enabled=True, graph_grad="none", **se_only), obs)
    assert norm(frozen_graph.glass.assign_logits) > 0
    assert norm(frozen_graph.encoder) == 0 and norm(frozen_graph.glass.mu) == 0
    # graph from stop-gradient latents: the prototypes move, the encoder does not
    protos = glass_grads(small_config(enabled=True, graph_grad="prototypes", **se_only), obs)
    assert norm(protos.glass.mu) > 0 and norm(protos.encoder) == 0


def test_moe_q_with_zero_offsets_equals_plain_q():
    plain_cfg, moe_cfg = small_config(enabled=True), small_config(enabled=True, moe_q=True)
    plain, _ = make_networks(plain_cfg, 15, 4, jax.random.PRNGKey(0))
    moe, _ = make_networks(moe_cfg, 15, 4, jax.random.PRNGKey(0))
    qs = jax.tree.map(lambda x: x + 0.1, plain.qs)  # non-trivial heads, shared by both
    plain, moe = eqx.tree_at(lambda w: w.qs, plain, qs), eqx.tree_at(lambda w: w.qs, moe, qs)
    z = plain.encode(jax.random.normal(jax.random.PRNGKey(2), (5, 15)))
    a = jnp.zeros((5, 4))
    np.testing.assert_allclose(moe.q_logits(z, a), plain.q_logits(z, a), rtol=1e-6)
    key = jax.random.PRNGKey(3)
    np.testing.assert_allclose(moe.q_value(z, a, key, "avg"), plain.q_value(z, a, key, "avg"), rtol=1e-6)
    # non-zero offsets change the values by the membership-weighted offset
    shifted = eqx.tree_at(lambda w: w.q_offsets, moe, jnp.ones_like(moe.q_offsets))
    assert not np.allclose(shifted.q_logits(z, a), plain.q_logits(z, a))


def test_kmeans_init_moves_prototypes_to_data_directions():
    cfg = small_config(enabled=True, kmeans_init=True)
    state = filled_state(cfg)
    before = state.world.glass.mu
    after = agent.kmeans_prototypes(state, jax.random.PRNGKey(0), num_latents=256).world.glass.mu
    assert after.shape == before.shape and not np.allclose(after, before)
    latents = state.world.encode(state.buffer.obs[:500, 0])
    best_cos = lambda mu: float(glass.cosine_similarity(latents, mu).max(-1).mean())
    assert best_cos(after) > best_cos(before)


def _jaxpr(cfg, n=1):
    state = filled_state(cfg)
    h = agent.Hyper.from_config(cfg)
    w, p = agent.optimisers(cfg)
    return str(jax.make_jaxpr(lambda s: agent.run_updates(s, 0, n, h, w, p))(state))


def test_default_glass_reads_the_td_batch_and_compiles_the_same_update_as_before_the_new_keys():
    """Issue 12: every new key at its default (or set to what the default resolves to) changes nothing in the
    compiled update: no second batch, no episode ids."""
    cfg = small_config(enabled=True)
    h = agent.Hyper.from_config(cfg)
    state = filled_state(cfg)
    batch = buffer.sample(state.buffer, jax.random.PRNGKey(0), 16, cfg.horizon)
    extended = agent.glass_batch(state.buffer, batch, jax.random.PRNGKey(0), h)
    assert extended.glass_obs is None and extended.glass_episode is None
    assert len(jax.tree.leaves(extended)) == len(jax.tree.leaves(batch)) == 3
    same = small_config(enabled=True, slice_len=cfg.horizon + 1, window_form="mi", contrast_sim="dot",
                        contrast_label="binary", contrast_pairs="episode", window=4)
    assert _jaxpr(same) == _jaxpr(cfg)
    assert _jaxpr(small_config(enabled=True, slice_len=8)) != _jaxpr(cfg)  # the comparison can fail


@pytest.mark.parametrize("form", ["mi", "average"])
def test_a_window_longer_than_the_horizon_trains_on_its_own_longer_slices(form):
    """W = 8 with H = 3: the Glass terms read a second batch of 8 (mi) or 9 (average) frame slices; the TD losses
    still read H+1 = 4 frames."""
    cfg = small_config(enabled=True, window=8, window_form=form, lambda_window=1e-2)
    h = agent.Hyper.from_config(cfg)
    frames = 8 + (form == "average")
    state = filled_state(cfg)
    k = jax.random.PRNGKey(3)
    batch = agent.glass_batch(state.buffer, buffer.sample(state.buffer, k, 16, cfg.horizon), k, h)
    assert batch.obs.shape[0] == cfg.horizon + 1 and batch.glass_obs.shape == (frames, 16, 15)
    _, (_, terms) = agent.world_loss(state.world, state.policy, state.target_qs, batch, jax.random.PRNGKey(1), h)
    _, info = glass.glass_losses(state.world.glass, state.world.encode(batch.glass_obs), h.glass)
    for name in ("loss_window", "loss_se", "window_mi", "active_prototypes"):
        assert float(terms[name]) == pytest.approx(float(info[name]), rel=1e-5)
    lowest = 0.0 if form == "mi" else -(9 / 8) * np.log(9 / 8)  # the average form's minimum (every frame equal)
    assert float(terms["loss_window"]) > lowest
    state, metrics = updated(cfg)
    assert all(np.isfinite(float(v)) for v in metrics.values())


def test_episode_pairs_in_the_update_read_the_episode_of_each_slice():
    cfg = small_config(enabled=True, lambda_contrast=1e-2, contrast_pairs="episode", contrast_sim="dot",
                       contrast_label="binary")
    h = agent.Hyper.from_config(cfg)._replace(glass=glass.GlassLossConfig.from_config(cfg.glass, (13, 14)))
    state = filled_state(cfg)
    k = jax.random.PRNGKey(4)
    batch = agent.glass_batch(state.buffer, buffer.sample(state.buffer, k, 16, cfg.horizon), k, h)
    assert batch.glass_obs is None
    np.testing.assert_array_equal(np.asarray(batch.glass_episode), np.asarray(
        buffer.slice_episodes(state.buffer, k, 16, cfg.horizon)))
    _, (_, terms) = agent.world_loss(state.world, state.policy, state.target_qs, batch, jax.random.PRNGKey(1), h)
    z = state.world.encode(batch.obs)
    contact = glass.contact_labels(batch.obs, (13, 14), binary=True)
    _, info = glass.glass_losses(state.world.glass, z, h.glass, contact, batch.glass_episode)
    assert float(terms["loss_contrast"]) == pytest.approx(float(info["loss_contrast"]), rel=1e-5)
