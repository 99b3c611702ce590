"""Device-resident replay buffer for one seed (vmap it over seeds).

Layout: a ring of `slots` rows per env, arrays shaped (slots, E, ...). A row holds an observation and the
action/reward that LED to it (TD-MPC2's episode layout); an episode's first row holds its reset observation
with action 0 and reward 0. `pos` is the row's index within its episode (0 for a reset row).

A training slice is H+1 consecutive rows of one env starting at row t: obs[t..t+H], action/reward[t+1..t+H].
It stays inside one episode iff pos[t+H] >= H, and it must lie wholly inside the rows still stored.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp


class Buffer(NamedTuple):
    obs: jax.Array  # (slots, E, obs_dim)
    action: jax.Array  # (slots, E, act_dim)
    reward: jax.Array  # (slots, E)
    pos: jax.Array  # (slots, E) int32, row index within its episode
    count: jax.Array  # () int32, rows written per env so far (not wrapped)


class Batch(NamedTuple):
    obs: jax.Array  # (H+1, B, obs_dim)
    action: jax.Array  # (H, B, act_dim)
    reward: jax.Array  # (H, B)
    # What only the Glass terms read, None (no pytree leaves) unless a Glass setting asks for it:
    glass_obs: Optional[jax.Array] = None  # (L, B, obs_dim) a second batch of longer slices (glass.slice_len)
    glass_episode: Optional[jax.Array] = None  # (B, 2) int32 episode id of each Glass slice (slice_episodes)


def empty(capacity: int, num_envs: int, obs_dim: int, act_dim: int) -> Buffer:
    """`capacity` transitions in total, split evenly over the envs."""
    slots = capacity // num_envs
    return Buffer(
        obs=jnp.zeros((slots, num_envs, obs_dim), jnp.float32),
        action=jnp.zeros((slots, num_envs, act_dim), jnp.float32),
        reward=jnp.zeros((slots, num_envs), jnp.float32),
        pos=jnp.zeros((slots, num_envs), jnp.int32),
        count=jnp.zeros((), jnp.int32),
    )


def add(buf: Buffer, obs, action, reward, pos) -> Buffer:
    """Append n rows per env: obs (n, E, obs_dim), action (n, E, A), reward (n, E), pos (n, E)."""
    slots = buf.obs.shape[0]
    rows = (buf.count + jnp.arange(obs.shape[0])) % slots
    return Buffer(
        obs=buf.obs.at[rows].set(obs), action=buf.action.at[rows].set(action),
        reward=buf.reward.at[rows].set(reward), pos=buf.pos.at[rows].set(pos.astype(jnp.int32)),
        count=buf.count + obs.shape[0],
    )


def _valid(buf: Buffer, start, env, horizon: int):
    """Whether the slice of H+1 rows at linear row `start` of `env` is stored and inside one episode."""
    slots = buf.obs.shape[0]
    stored = (start >= jnp.maximum(buf.count - slots, 0)) & (start + horizon < buf.count)
    return stored & (buf.pos[(start + horizon) % slots, env] >= horizon)


def sample(buf: Buffer, key, batch_size: int, horizon: int) -> Batch:
    """Uniform over valid slices of H+1 rows (rejection sampling; about H / episode_length of draws are redrawn).

    Needs at least one valid slice per env stored (true after the first H+1 rows of an episode). A longer
    `horizon` gives longer slices (the Glass terms' own batch, glass.slice_len = horizon + 1).
    """
    slots = buf.obs.shape[0]
    env, start = _draw_slices(buf, key, batch_size, horizon)
    rows = (start[None, :] + jnp.arange(horizon + 1)[:, None]) % slots  # (H+1, B)
    return Batch(obs=buf.obs[rows, env], action=buf.action[rows[1:], env], reward=buf.reward[rows[1:], env])


def slice_episodes(buf: Buffer, key, batch_size: int, horizon: int):
    """Episode id (B, 2) int32 of each slice `sample(buf, key, batch_size, horizon)` draws with the same key:
    [env, linear row of the episode's reset row]. Two slices come from one episode iff their ids are equal."""
    slots = buf.obs.shape[0]
    env, start = _draw_slices(buf, key, batch_size, horizon)
    first_row = start - buf.pos[start % slots, env]
    return jnp.stack([env, first_row], axis=-1).astype(jnp.int32)


def _draw_slices(buf: Buffer, key, batch_size: int, horizon: int):
    """(env (B,), linear start row (B,)) of B valid slices of H+1 rows, uniform over the valid starts."""
    slots, num_envs = buf.obs.shape[:2]
    oldest = jnp.maximum(buf.count - slots, 0)
    span = buf.count - horizon - oldest  # number of candidate starts per env

    def draw(key):
        k_env, k_start = jax.random.split(key)
        env = jax.random.randint(k_env, (batch_size,), 0, num_envs)
        start = oldest + jax.random.randint(k_start, (batch_size,), 0, jnp.maximum(span, 1))
        return env, start

    def redraw_invalid(carry):
        key, env, start, _, tries = carry
        key, k = jax.random.split(key)
        new_env, new_start = draw(k)
        ok = _valid(buf, start, env, horizon)
        env, start = jnp.where(ok, env, new_env), jnp.where(ok, start, new_start)
        return key, env, start, _valid(buf, start, env, horizon).all(), tries + 1

    key, k = jax.random.split(key)
    env, start = draw(k)
    # The try cap only guards against an empty buffer; with one valid slice in 100 it is never reached.
    _, env, start, _, _ = jax.lax.while_loop(
        lambda c: ~c[3] & (c[4] < 1000), redraw_invalid,
        (key, env, start, _valid(buf, start, env, horizon).all(), 0))
    return env, start
