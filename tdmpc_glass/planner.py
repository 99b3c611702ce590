"""MPPI over the latent model (TD-MPC2's planner).

`plan` decides for ONE env of ONE seed; `plan_batch` vmaps it over seeds (model parameters batched) and envs
(parameters shared), so one jitted call plans for every env of every seed.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .config import PlannerConfig
from .draws import SAMPLE, Sample
from .math import gumbel_categorical
from .world_model import Policy, WorldModel


class PlanSettings(NamedTuple):
    """Static planner numbers (hashable, so they can be closed over by jit)."""

    horizon: int
    iterations: int
    num_samples: int
    num_elites: int
    num_pi_trajs: int
    min_std: float
    max_std: float
    temperature: float
    discount: float

    @classmethod
    def from_config(cls, planner: PlannerConfig, horizon: int, discount: float,
                    act_dim: int | None = None) -> "PlanSettings":
        """act_dim: the task's action size; TD-MPC2 runs 2 more MPPI iterations when it is >= 20 (humanoid,
        dog), on top of planner.iterations (the base, what the config says). None: the base, for callers
        that plan without a task (benchmarks, tests of the planner itself)."""
        return cls(horizon, mppi_iterations(planner.iterations, act_dim), planner.num_samples, planner.num_elites,
                   planner.num_pi_trajs, planner.min_std, planner.max_std, planner.temperature, discount)


LARGE_ACTION_DIM = 20  # TD-MPC2: actions of this many dims or more get LARGE_ACTION_EXTRA_ITERATIONS more
LARGE_ACTION_EXTRA_ITERATIONS = 2


def mppi_iterations(base: int, act_dim: int | None) -> int:
    """MPPI iterations for a task: the config's base, + 2 when the action has >= 20 dims (TD-MPC2's rule)."""
    large = act_dim is not None and act_dim >= LARGE_ACTION_DIM
    return base + LARGE_ACTION_EXTRA_ITERATIONS * large


def trajectory_values(world: WorldModel, policy: Policy, z, actions, key, discount: float,
                      draws: Sample = SAMPLE):
    """Value (num,) of action sequences (H, num, A) from latent z (d,):
    sum_t gamma^t r_hat_t + gamma^H Q_avg(z_H, pi(z_H)); NaN values become 0."""
    z = jnp.broadcast_to(z, (actions.shape[1], z.shape[-1]))
    ret, weight = 0.0, 1.0
    for t in range(actions.shape[0]):
        ret = ret + weight * world.decode(world.reward_logits(z, actions[t]))
        z = world.next(z, actions[t])
        weight = weight * discount
    key_pi, key_q = jax.random.split(key)
    final_action = policy(world.policy_input(z), key_pi, draws)[0]
    value = ret + weight * world.q_value(z, final_action, key_q, "avg", draws=draws)
    return jnp.nan_to_num(value, nan=0.0)


def policy_trajectories(world: WorldModel, policy: Policy, z, key, s: PlanSettings, draws: Sample = SAMPLE):
    """Action sequences (H, num_pi_trajs, A) sampled from the policy prior through the latent model."""
    z = jnp.broadcast_to(z, (s.num_pi_trajs, z.shape[-1]))
    actions = []
    for t, k in enumerate(jax.random.split(key, s.horizon)):
        actions.append(policy(world.policy_input(z), k, draws)[0])
        if t < s.horizon - 1:
            z = world.next(z, actions[-1])
    return jnp.stack(actions)


def plan(world: WorldModel, policy: Policy, obs, prev_mean, key, s: PlanSettings, eval_mode: bool,
         draws: Sample = SAMPLE, trace: bool = False):
    """One MPPI decision. obs (obs_dim,), prev_mean (H, A) (zeros at an episode's first step).

    Returns (action (A,) in [-1, 1], mean (H, A) to warm-start the next step); with trace=True a third value,
    a dict of the decision's internals (z, pi_actions, per-iteration stacks under "iter", the last elites, the
    chosen index, the action before the clamp). draws: the random source (draws.py; default jax.random).
    """
    act_dim = prev_mean.shape[-1]
    z = world.encode(obs)
    key_pi, key_iter, key_pick, key_noise = jax.random.split(key, 4)
    num_sampled = s.num_samples - s.num_pi_trajs
    pi_actions = (policy_trajectories(world, policy, z, key_pi, s, draws) if s.num_pi_trajs > 0
                  else jnp.zeros((s.horizon, 0, act_dim)))

    def iteration(carry, key):
        mean, std, _, _ = carry
        key_sample, key_value = jax.random.split(key)
        mean_in, std_in = mean, std
        noise = draws.mppi_noise(key_sample, (s.horizon, num_sampled, act_dim))
        sampled = jnp.clip(mean[:, None] + std[:, None] * noise, -1.0, 1.0)
        actions = jnp.concatenate([pi_actions, sampled], axis=1)
        values = trajectory_values(world, policy, z, actions, key_value, s.discount, draws)
        elite_values, elite_idx = jax.lax.top_k(values, s.num_elites)
        elite_actions = actions[:, elite_idx]  # (H, E, A)
        score = jnp.exp(s.temperature * (elite_values - elite_values.max()))
        score = score / score.sum()
        mean = jnp.einsum("e,hea->ha", score, elite_actions) / (score.sum() + 1e-9)
        var = jnp.einsum("e,hea->ha", score, jnp.square(elite_actions - mean[:, None])) / (score.sum() + 1e-9)
        std = jnp.clip(jnp.sqrt(var), s.min_std, s.max_std)
        internals = (dict(mean_in=mean_in, std_in=std_in, actions=actions, value=values, elite_idxs=elite_idx,
                          elite_value=elite_values, score=score, mean_out=mean, std_out=std) if trace else None)
        return (mean, std, score, elite_actions), internals

    # Warm start: the previous step's final mean shifted by one; the std is reset to max_std every step.
    mean = jnp.concatenate([prev_mean[1:], jnp.zeros((1, act_dim))])
    std = jnp.full((s.horizon, act_dim), s.max_std)
    init = (mean, std, jnp.zeros(s.num_elites), jnp.zeros((s.horizon, s.num_elites, act_dim)))
    (mean, std, score, elite_actions), iters = draws.scan(iteration, init, jax.random.split(key_iter, s.iterations))

    # One elite drawn with probability proportional to its weight; its first action is executed.
    pick = gumbel_categorical(key_pick, jnp.log(score + 1e-30), gumbel=draws.gumbel)
    chosen = elite_actions[0, pick]
    if not eval_mode:
        chosen = chosen + std[0] * draws.explore_noise(key_noise, (act_dim,))
    if trace:
        internals = dict(z=z, pi_actions=pi_actions, iter=iters, elite_actions=elite_actions, score=score,
                         rand_idx=pick, chosen_actions=elite_actions[:, pick], std_final=std,
                         action_before_clamp=chosen)
        return jnp.clip(chosen, -1.0, 1.0), mean, internals
    return jnp.clip(chosen, -1.0, 1.0), mean


def plan_batch(world, policy, obs, prev_mean, keys, s: PlanSettings, eval_mode: bool):
    """obs (S, E, obs_dim), prev_mean (S, E, H, A), keys (S, E) with world/policy batched over S."""
    per_env = jax.vmap(lambda w, p, o, m, k: plan(w, p, o, m, k, s, eval_mode), in_axes=(None, None, 0, 0, 0))
    return jax.vmap(per_env)(world, policy, obs, prev_mean, keys)


def policy_act_batch(policy, world, obs, keys, eval_mode: bool):
    """Act with the policy prior alone: the mean action in eval mode, a sample otherwise. (S, E, A)."""
    def act(w, p, o, k):
        x = w.policy_input(w.encode(o))
        return p.mean_action(x) if eval_mode else p(x, k)[0]
    return jax.vmap(jax.vmap(act, in_axes=(None, None, 0, 0)))(world, policy, obs, keys)
