import pytest
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from tdmpc_glass.config import Config, PlannerConfig, derive
from tdmpc_glass.planner import PlanSettings, plan, plan_batch
from tdmpc_glass.world_model import make_networks

TARGET = jnp.array([0.6, -0.4, 0.1])


class QuadraticWorld(eqx.Module):
    """A hand-made model whose best action is known: reward = -|a - TARGET|^2, latents never change, Q = 0."""

    def encode(self, obs):
        return obs

    def policy_input(self, z):
        return z

    def next(self, z, a):
        return z

    def reward_logits(self, z, a):
        return -jnp.sum(jnp.square(a - TARGET), -1)

    def decode(self, logits):
        return logits

    def q_value(self, z, a, key, reduce, dropout_key=None, qs=None, draws=None):
        return jnp.zeros(a.shape[:-1])


class UniformPolicy(eqx.Module):
    def __call__(self, z, key, draws=None):
        a = jax.random.uniform(key, (*z.shape[:-1], 3), minval=-1, maxval=1)
        return a, a, jnp.zeros(z.shape[:-1])


def settings(**kw):
    base = dict(horizon=3, iterations=6, num_samples=512, num_elites=64, num_pi_trajs=24, min_std=0.05,
                max_std=2.0, temperature=0.5, discount=0.99)
    base.update(kw)
    return PlanSettings(**base)


def test_planner_finds_the_known_best_action():
    s = settings(temperature=5.0)
    action, mean = plan(QuadraticWorld(), UniformPolicy(), jnp.zeros(4), jnp.zeros((3, 3)), jax.random.PRNGKey(0),
                        s, eval_mode=True)
    np.testing.assert_allclose(action, TARGET, atol=0.12)
    np.testing.assert_allclose(mean[0], TARGET, atol=0.12)


def test_planner_beats_random_actions_on_the_hand_made_model():
    s = settings()
    keys = jax.random.split(jax.random.PRNGKey(1), 20)
    chosen = jax.vmap(lambda k: plan(QuadraticWorld(), UniformPolicy(), jnp.zeros(4), jnp.zeros((3, 3)), k, s,
                                     True)[0])(keys)
    random = jax.random.uniform(jax.random.PRNGKey(2), (20, 3), minval=-1, maxval=1)
    reward = lambda a: -jnp.sum(jnp.square(a - TARGET), -1)
    assert float(reward(chosen).mean()) > float(reward(random).mean()) + 0.5


def test_training_noise_is_added_only_outside_eval_mode():
    s = settings()
    args = (QuadraticWorld(), UniformPolicy(), jnp.zeros(4), jnp.zeros((3, 3)), jax.random.PRNGKey(3), s)
    a_eval, _ = plan(*args, eval_mode=True)
    a_train, _ = plan(*args, eval_mode=False)
    assert not np.allclose(a_eval, a_train)


@pytest.mark.slow
def test_plan_batch_shapes_and_bounds_on_the_real_model():
    cfg = Config()
    cfg.model.size, cfg.model.latent_dim, cfg.model.mlp_dim, cfg.model.enc_dim = 1, 32, 32, 32
    S, E, A = 2, 3, 4
    worlds, policies = jax.vmap(lambda k: make_networks(cfg, 15, A, k))(jax.random.split(jax.random.PRNGKey(0), S))
    s = PlanSettings.from_config(PlannerConfig(num_samples=64, num_elites=8, num_pi_trajs=4, iterations=2),
                                 cfg.horizon, derive(cfg).discount)
    obs = jax.random.normal(jax.random.PRNGKey(1), (S, E, 15)) * 3
    keys = jax.random.split(jax.random.PRNGKey(2), S * E).reshape(S, E, -1)
    actions, mean = jax.jit(lambda *a: plan_batch(*a, s, False))(worlds, policies, obs, jnp.zeros((S, E, 3, A)), keys)
    assert actions.shape == (S, E, A) and mean.shape == (S, E, 3, A)
    assert float(jnp.abs(actions).max()) <= 1.0
    assert bool(jnp.all(jnp.isfinite(actions)))
