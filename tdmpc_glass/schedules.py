"""Training schedules of the phase ledger (`schedule.*` in config.py): what happens at which env step.

Every schedule is a pure function of the config, the env step and a seed's own keys, so a resumed run repeats
the uninterrupted one. Steps are ENV steps of the seed's batch (the trainer's shared counter).

- executed-action noise (1c, d_v1): `action_noise_std` / `action_noise` - host-side Gaussian noise on the
  action sent to the simulator during training collection after EXPL_UNTIL (never in evaluation); the noisy,
  clipped action is what the buffer stores.
- latent action smoothing (f, i, j, h, k, l_v1): `action_smooth_coef` gives the coefficient of the round as a
  traced scalar (0 before `action_smooth_from`), so switching it on never retraces the update;
  `action_smooth_loss` is the term added to the policy loss.
- Q-reset (e): `q_reset` re-initialises world.qs, the target heads and only the Q heads' Adam state. With
  `schedule.q_reset_at` set, the world optimiser runs two Adams over one global gradient clip
  (`split_q_adam`): one for the Q heads and one for everything else. Adam is per-parameter apart from its
  step count, so before a reset this is exactly the single Adam; the split gives the Q heads their own step
  count, which a reset sets back to 0 together with mu and nu, so Adam's bias correction is right for the
  fresh moments (a shared count left at its old value would skip bias correction and make the first
  steps of the fresh heads several times too large).
- basin perturbation (m, n): `perturb` adds Gaussian noise of std perturb_scale * RMS(tensor) to every float
  tensor of the chosen target.
- basin restart (10.6): `restart_seed` and `basin_restart_due`; interventions.BasinCheck decides, basin.py restarts.
"""
from __future__ import annotations

from typing import Optional, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .config import ScheduleConfig

# fold_in counters under agent.INIT for schedule draws (INIT 0: networks, INIT 1: k-means prototypes)
Q_RESET_STREAM, PERTURB_STREAM = 1_000, 2_000
# numpy seed sequence tag of the executed-action noise (random exploration actions use [seed, tick])
NOISE_TAG = 7


# ---- executed-action noise ----------------------------------------------------------------------------------
def action_noise_std(s: ScheduleConfig, env_step: int) -> float:
    """start + (end - start) * min(env_step / anneal, 1); the constant `start` when anneal is 0."""
    if s.action_noise_anneal_env_steps <= 0:
        return float(s.action_noise_start)
    frac = min(max(env_step, 0) / s.action_noise_anneal_env_steps, 1.0)
    return float(s.action_noise_start + (s.action_noise_end - s.action_noise_start) * frac)


def action_noise(actions: np.ndarray, seeds: Sequence[int], tick: int, std: float) -> np.ndarray:
    """actions (S, E, A) in [-1, 1] -> clip(actions + std * N(0, 1), -1, 1); noise drawn from [seed, tick]."""
    if std <= 0:
        return actions
    noise = np.stack([np.random.default_rng([int(s), NOISE_TAG, int(tick)]).standard_normal(actions.shape[1:])
                      for s in seeds])
    return np.clip(actions + std * noise, -1.0, 1.0).astype(np.float32)


# ---- latent action smoothing --------------------------------------------------------------------------------
def action_smooth_coef(s: ScheduleConfig, env_step: int) -> Optional[jax.Array]:
    """None when smoothing is off for the whole run (no term in the graph); else a float32 scalar, 0 before
    `action_smooth_from`. Its value changes, its type never does, so the update is traced once."""
    if s.action_smooth_coef <= 0:
        return None
    return jnp.float32(s.action_smooth_coef if env_step >= s.action_smooth_from else 0.0)


def action_smooth_loss(mean_action) -> jax.Array:
    """mean over t, b of ||pi(z_{t+1}) - pi(z_t)||^2, pi(z) the policy's mean action tanh(mu(z)).

    mean_action (T, B, A): pi at T consecutive latents of each of B slices (the policy loss's), T >= 2.
    The policy's gradient flows through it; the latents themselves are detached. Returns a scalar.
    """
    return jnp.square(mean_action[1:] - mean_action[:-1]).sum(-1).mean()


# ---- events at given env steps ------------------------------------------------------------------------------
def crossed(steps: Sequence[int], prev_env_step: int, env_step: int) -> list[int]:
    """Indices i with prev_env_step < steps[i] <= env_step: the events due after a round that moved the
    counter from prev_env_step to env_step. An event at step 0 fires after the first round."""
    return [i for i, s in enumerate(steps) if prev_env_step < s <= env_step or s == prev_env_step == 0]


# ---- Q-reset ------------------------------------------------------------------------------------------------
def _q_labels(params):
    """'q' for the leaves of params.qs, 'rest' for every other array leaf (None leaves stay None)."""
    labels = jax.tree.map(lambda _: "rest", params)
    return eqx.tree_at(lambda w: w.qs, labels, jax.tree.map(lambda _: "q", labels.qs))


def split_q_adam(lr: float) -> optax.GradientTransformation:
    """Adam with a separate state (and step count) for the Q heads: identical updates to one Adam."""
    return optax.multi_transform({"q": optax.adam(lr), "rest": optax.adam(lr)}, _q_labels)


def _swap_q_state(opt_state, fresh_state):
    """opt_state with the 'q' partition's state taken from fresh_state; every other leaf is opt_state's."""
    if isinstance(opt_state, optax.transforms.PartitionState):
        return opt_state._replace(inner_states={**opt_state.inner_states, "q": fresh_state.inner_states["q"]})
    if isinstance(opt_state, tuple) and not hasattr(opt_state, "_fields"):
        return tuple(_swap_q_state(a, b) for a, b in zip(opt_state, fresh_state))
    return opt_state


def has_q_partition(opt_state) -> bool:
    is_partition = lambda x: isinstance(x, optax.transforms.PartitionState)
    return any(is_partition(x) for x in jax.tree.leaves(opt_state, is_leaf=is_partition))


def q_reset(state, fresh_qs, world_tx):
    """One seed's state with world.qs and target_qs replaced by `fresh_qs` and the Q heads' Adam state (mu,
    nu, count) fresh; the rest of the model, the policy, both optimiser states' other leaves, the buffer and
    q_scale unchanged. Needs the world optimiser built with split_q_adam (schedule.q_reset_at set)."""
    if not has_q_partition(state.world_opt):
        raise ValueError("q_reset: the world optimiser has no separate Q-head state; build it with "
                         "schedule.q_reset_at set (agent.optimisers)")
    world = eqx.tree_at(lambda w: w.qs, state.world, fresh_qs)
    fresh_opt = world_tx.init(eqx.filter(world, eqx.is_array))
    world_opt = _swap_q_state(state.world_opt, fresh_opt)
    return eqx.tree_at(lambda s: (s.world, s.target_qs, s.world_opt), state, (world, fresh_qs, world_opt))


# ---- parameter-noise perturbation ---------------------------------------------------------------------------
PERTURB_TARGETS = ("all", "world", "policy")


def perturb(state, scale: float, target: str, key):
    """Add N(0, (scale * RMS(x))^2) to every float tensor x of the target networks (world: the whole world
    model, Q heads and Glass included; policy: the policy prior; all: both). Target Q heads, optimiser
    states and the buffer are untouched."""
    if target not in PERTURB_TARGETS:
        raise ValueError(f"schedule.perturb_target: {target!r} is not one of {', '.join(PERTURB_TARGETS)}")
    k_world, k_policy = jax.random.split(key)

    def noisy(tree, key):
        leaves, treedef = jax.tree.flatten(eqx.filter(tree, eqx.is_inexact_array))
        keys = jax.random.split(key, max(len(leaves), 1))
        out = [x + scale * jnp.sqrt(jnp.mean(jnp.square(x))) * jax.random.normal(k, x.shape, x.dtype)
               for x, k in zip(leaves, keys)]
        return eqx.combine(jax.tree.unflatten(treedef, out), tree)

    world = noisy(state.world, k_world) if target in ("all", "world") else state.world
    policy = noisy(state.policy, k_policy) if target in ("all", "policy") else state.policy
    return eqx.tree_at(lambda s: (s.world, s.policy), state, (world, policy))


# ---- basin restart ------------------------------------------------------------------------------------------
def restart_seed(seed: int, attempt: int, s: ScheduleConfig) -> int:
    """The exploration seed of a run's attempt: seed + offset * attempt (init and planner noise keep theirs)."""
    return int(seed) + s.restart_seed_offset * int(attempt)


def basin_restart_due(active_prototypes: float, attempt: int, s: ScheduleConfig) -> bool:
    """Research log 10.6: restart when fewer prototypes are active than restart_min_active, while attempts
    remain (attempt counts restarts already made)."""
    return bool(np.isfinite(active_prototypes)) and active_prototypes < s.restart_min_active \
        and attempt < s.restart_max
