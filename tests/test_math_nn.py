import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tdmpc_glass import math as tmath
from tdmpc_glass.config import Config
from tdmpc_glass.nn import simnorm
from tdmpc_glass.world_model import count_params, make_networks

BINS, VMIN, VMAX = 101, -10.0, 10.0


def roundtrip(x):
    return tmath.two_hot_inv(jnp.log(tmath.two_hot(x, BINS, VMIN, VMAX) + 1e-12), BINS, VMIN, VMAX)


def test_symlog_symexp_inverse():
    x = jnp.array([-1e4, -3.0, -0.1, 0.0, 0.2, 7.0, 1e4])
    np.testing.assert_allclose(tmath.symexp(tmath.symlog(x)), x, rtol=1e-5)


def test_two_hot_round_trip_inside_range():
    x = jnp.array([-1000.0, -12.3, -1.0, -0.01, 0.0, 0.37, 5.0, 99.9, 2000.0])
    np.testing.assert_allclose(roundtrip(x), x, rtol=2e-4, atol=1e-5)


def test_two_hot_is_a_distribution_with_two_neighbouring_bins():
    enc = tmath.two_hot(jnp.array([0.37, -4.2, 123.0]), BINS, VMIN, VMAX)
    np.testing.assert_allclose(enc.sum(-1), 1.0, rtol=1e-6)
    for row in np.asarray(enc):
        nz = np.flatnonzero(row > 1e-7)
        assert len(nz) <= 2 and (len(nz) < 2 or nz[1] == nz[0] + 1)


def test_two_hot_exactly_on_a_bin_centre_is_one_hot():
    centre = 2.4  # symlog value of bin 62 (vmin + 62 * 0.2)
    enc = tmath.two_hot(tmath.symexp(jnp.array(centre)), BINS, VMIN, VMAX)
    assert int(jnp.argmax(enc)) == 62
    np.testing.assert_allclose(float(enc.max()), 1.0, atol=1e-4)


def test_two_hot_beyond_range_clamps_to_the_edge_bins():
    enc = tmath.two_hot(jnp.array([1e9, -1e9]), BINS, VMIN, VMAX)
    np.testing.assert_allclose(enc[0, -1], 1.0)
    np.testing.assert_allclose(enc[1, 0], 1.0)
    # decoding the edge bin gives symexp(vmax), the largest representable value
    np.testing.assert_allclose(roundtrip(jnp.array([1e9]))[0], float(tmath.symexp(VMAX)), rtol=1e-4)


def test_two_hot_shapes():
    x = jnp.zeros((3, 5))
    assert tmath.two_hot(x, BINS, VMIN, VMAX).shape == (3, 5, BINS)
    assert tmath.two_hot_inv(jnp.zeros((3, 5, BINS)), BINS, VMIN, VMAX).shape == (3, 5)


def test_soft_ce_minimised_by_matching_logits():
    target = jnp.array([3.3])
    good = jnp.log(tmath.two_hot(target, BINS, VMIN, VMAX) + 1e-9)
    bad = jnp.zeros((1, BINS))
    assert tmath.soft_ce(good, target, BINS, VMIN, VMAX) < tmath.soft_ce(bad, target, BINS, VMIN, VMAX)


def test_simnorm_groups_sum_to_one():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 64)) * 5
    groups = simnorm(x, 8).reshape(4, 8, 8)
    np.testing.assert_allclose(groups.sum(-1), 1.0, rtol=1e-5)
    assert float(groups.min()) >= 0.0


def test_5m_model_on_hopper_has_4_95m_parameters():
    counts = count_params(Config(), obs_dim=15, act_dim=4)
    assert abs(counts["total"] - 4.95e6) / 4.95e6 < 0.01
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")


@pytest.mark.parametrize("size, low, high", [(1, 0.5e6, 1.5e6), (19, 17e6, 21e6), (48, 44e6, 52e6)])
def test_other_sizes_are_in_their_class(size, low, high):
    cfg = Config()
    cfg.model.size = size
    assert low < count_params(cfg, 15, 4)["total"] < high


def test_reward_and_q_start_at_zero_and_policy_is_bounded():
    cfg = Config()
    cfg.model.size, cfg.model.latent_dim, cfg.model.mlp_dim = 1, 64, 64
    world, policy = make_networks(cfg, 15, 4, jax.random.PRNGKey(1))
    obs = jax.random.normal(jax.random.PRNGKey(2), (7, 15))
    z = world.encode(obs)
    a, mean, ent = policy(z, jax.random.PRNGKey(3))
    np.testing.assert_allclose(world.decode(world.reward_logits(z, a)), 0.0, atol=1e-6)
    np.testing.assert_allclose(world.decode(world.q_logits(z, a)), 0.0, atol=1e-6)
    assert world.q_logits(z, a).shape == (2, 7, 101)
    assert float(jnp.abs(a).max()) <= 1.0 and a.shape == (7, 4) and ent.shape == (7,)
    # the latent is a SimNorm output: groups of 8 sum to 1
    np.testing.assert_allclose(z.reshape(7, -1, 8).sum(-1), 1.0, rtol=1e-5)


def test_q_value_uses_two_heads_and_min_is_not_above_avg():
    cfg = Config()
    cfg.model.size, cfg.model.latent_dim, cfg.model.mlp_dim = 5, 64, 64
    world, policy = make_networks(cfg, 15, 4, jax.random.PRNGKey(1))
    # give the heads different non-zero outputs
    qs = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(9), p.shape), world.qs)
    z = world.encode(jnp.ones((3, 15)))
    a = jnp.zeros((3, 4))
    vmin = world.q_value(z, a, jax.random.PRNGKey(0), "min", qs=qs)
    vavg = world.q_value(z, a, jax.random.PRNGKey(0), "avg", qs=qs)
    assert bool(jnp.all(vmin <= vavg + 1e-6))
    all_heads = world.decode(world.q_logits(z, a, qs=qs))  # (5, 3)
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]
    assert any(np.allclose(vavg, (all_heads[i] + all_heads[j]) / 2, atol=1e-5) for i, j in pairs)
