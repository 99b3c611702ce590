"""Per-seed agent state, TD-MPC2's losses and the jitted update.

Everything one seed needs lives in `AgentState` (a pytree of arrays only), so S seeds are `jax.vmap` over a
stacked AgentState. Randomness is derived from the seed's base key folded with a purpose and a counter that
the training loop owns, which makes every draw reproducible after a resume.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import NamedTuple, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from . import buffer as replay
from . import glass as glass_lib
from . import schedules
from .config import Config, OptimConfig, derive
from .draws import SAMPLE, Sample
from .nn import MLP
from .world_model import Policy, WorldModel, make_networks

# fold_in purposes: one independent stream per use
ACT, EVAL, UPDATE, INIT = 0, 1, 2, 3


def stream(key, purpose: int, counter):
    return jax.random.fold_in(jax.random.fold_in(key, purpose), counter)


class AgentState(eqx.Module):
    world: WorldModel
    policy: Policy
    target_qs: MLP
    world_opt: optax.OptState
    policy_opt: optax.OptState
    q_scale: jax.Array  # () running P95-P5 scale of Q in the policy loss
    buffer: replay.Buffer
    key: jax.Array  # (2,) uint32 base key of this seed


OPTIM_FIELDS = tuple(f.name for f in dataclasses.fields(OptimConfig))  # the optimiser schema: config.OptimConfig


class Hyper(collections.namedtuple("Hyper", ("horizon", "discount", *OPTIM_FIELDS, "glass"), defaults=(None,))):
    """Static numbers the update needs (hashable): the horizon, the discount, every optim.* key by its name
    (config.OptimConfig is the one schema: a key added there is here), and the Glass settings (None: no Glass
    term in the loss)."""

    __slots__ = ()

    @classmethod
    def from_config(cls, cfg: Config) -> "Hyper":
        return cls(horizon=cfg.horizon, discount=derive(cfg).discount, glass=glass_settings(cfg),
                   **dataclasses.asdict(cfg.optim))


class Coefs(NamedTuple):
    """A round's scheduled coefficients, traced (their values change every round without recompiling); a
    coefficient off for the whole run is None, and its term is not in the graph. They travel as this one value
    from rounds.plan_round to the losses: a new per-round coefficient is one more field here, set in plan_round
    and read by the loss that uses it."""

    intrinsic: Optional[jax.Array] = None  # () float32, Glass's intrinsic reward (phases P, Pa): world_loss
    smooth: Optional[jax.Array] = None  # () float32, latent action smoothing (schedule.action_smooth_*): policy_loss


NO_COEFS = Coefs()


def glass_settings(cfg: Config) -> Optional[glass_lib.GlassLossConfig]:
    """The static Glass settings of the jitted loss, None with Glass off: the glass.* section itself plus the task's
    touch-sensor indices (phase-contrastive loss, 10.3) and whether the intrinsic reward is on."""
    g = cfg.glass
    if not g.enabled:
        return None
    contact_index = ()
    if g.lambda_contrast > 0:  # contact labels come from the touch readings of the stored observations (10.3)
        from .envs.suites import touch_indices

        contact_index = touch_indices(cfg.task)
    return glass_lib.GlassLossConfig.from_config(g, contact_index, intrinsic=g.intrinsic_coef > 0)


def intrinsic_coefficient(cfg: Config, env_step: int) -> Optional[float]:
    """The intrinsic-reward coefficient of the updates run at `env_step`, or None when the update has no
    intrinsic reward (Glass off, or glass.intrinsic_coef == 0). The trainer passes it traced into the round."""
    g = cfg.glass
    if not (g.enabled and g.intrinsic_coef > 0):
        return None
    return glass_lib.intrinsic_coefficient(g.intrinsic_coef, g.intrinsic_decay_until, env_step)


def optimisers(cfg: Config):
    """Model Adam (encoder lr scaled in `update`) and the policy's own Adam (eps 1e-5), both grad-clipped."""
    o = cfg.optim
    # with Q-resets scheduled the Q heads get their own Adam state and step count (schedules.split_q_adam)
    world_adam = schedules.split_q_adam(o.lr) if cfg.schedule.q_reset_at else optax.adam(o.lr)
    world_tx = optax.chain(optax.clip_by_global_norm(o.grad_clip_norm), world_adam)
    policy_tx = optax.chain(optax.clip_by_global_norm(o.grad_clip_norm), optax.adam(o.lr, eps=o.pi_eps))
    return world_tx, policy_tx


def init_state(cfg: Config, obs_dim: int, act_dim: int, seed) -> AgentState:
    """One seed's fresh state. `seed` may be traced, so `jax.vmap(init)` builds S seeds at once."""
    key = jax.random.PRNGKey(seed)
    world, policy = make_networks(cfg, obs_dim, act_dim, stream(key, INIT, 0))
    world_tx, policy_tx = optimisers(cfg)
    return AgentState(
        world=world, policy=policy, target_qs=world.qs,
        world_opt=world_tx.init(eqx.filter(world, eqx.is_array)),
        policy_opt=policy_tx.init(eqx.filter(policy, eqx.is_array)),
        q_scale=jnp.ones(()),
        buffer=replay.empty(cfg.train.buffer_capacity, cfg.train.num_envs, obs_dim, act_dim),
        key=key,
    )


def _rho_weights(n: int, rho: float):
    return rho ** jnp.arange(n, dtype=jnp.float32)


def world_loss(world: WorldModel, policy: Policy, target_qs: MLP, batch: replay.Batch, key, h: Hyper,
               coefs: Coefs = NO_COEFS, draws: Sample = SAMPLE):
    """TD-MPC2's model loss. batch.obs (H+1, B, obs_dim). Returns (loss, (latents (H+1, B, d), terms)).

    coefs.intrinsic (intrinsic_coef below): traced scalar, used only when h.glass.intrinsic (phases P / Pa): the
    reward targets of this update (reward loss AND TD targets, so the planner's predicted rewards and its
    terminal Q stay one objective) become r + intrinsic_coef * H(c(z_{t+1}) @ S), one bonus per decision (the
    research log's "max bonus ~210" = 0.1 ln 8 x 1000 decisions of an episode at its clock), with z_{t+1} the
    stop-gradient online latent of the stored o_{t+1}. Computed here from the current Glass parameters, never
    written into the buffer.
    draws: where the random numbers come from (draws.py; default: jax.random from `key`).
    """
    k_target_pi, k_target_q, k_dropout = jax.random.split(key, 3)
    weights = _rho_weights(h.horizon, h.rho)

    # Targets: the ONLINE encoder on o_{t+1} (stop-gradient) and TD targets from two random target heads.
    next_z = jax.lax.stop_gradient(world.encode(batch.obs[1:]))
    reward, intrinsic_terms = batch.reward, {}
    if h.glass is not None and h.glass.intrinsic and world.glass is not None:
        intrinsic_coef = coefs.intrinsic
        if intrinsic_coef is None:
            raise ValueError("world_loss: glass.intrinsic_coef > 0 needs the round's intrinsic_coef "
                             "(agent.intrinsic_coefficient(cfg, env_step))")
        params = jax.lax.stop_gradient(world.glass)
        bonus = intrinsic_coef * glass_lib.cluster_entropy(next_z, params.mu,
                                                          glass_lib.cluster_matrix(params.assign_logits),
                                                          world.tau_p)  # (H, B)
        reward = reward + bonus
        intrinsic_terms = {"intrinsic_reward": bonus.mean(), "intrinsic_coef": jnp.asarray(intrinsic_coef,
                                                                                          jnp.float32)}
    next_action = policy(world.policy_input(next_z), k_target_pi, draws)[0]
    td_target = jax.lax.stop_gradient(
        reward + h.discount * world.q_value(next_z, next_action, k_target_q, "min", qs=target_qs, draws=draws))

    def rollout(z, action):
        z = world.next(z, action)
        return z, z

    z0 = world.encode(batch.obs[0])
    _, predicted = jax.lax.scan(rollout, z0, batch.action)  # (H, B, d)
    latents = jnp.concatenate([z0[None], predicted])
    consistency = (weights * jnp.square(predicted - next_z).mean(axis=(1, 2))).sum() / h.horizon

    q_logits = world.q_logits(latents[:-1], batch.action, dropout_key=k_dropout, draws=draws)  # (num_q, H, B, bins)
    reward_ce = world.soft_ce(world.reward_logits(latents[:-1], batch.action), reward)  # (H, B)
    value_ce = world.soft_ce(q_logits, td_target[None])  # (num_q, H, B)
    reward_loss = (weights * reward_ce.mean(1)).sum() / h.horizon
    value_loss = (weights * value_ce.mean(2)).sum() / (h.horizon * q_logits.shape[0])

    total = h.consistency_coef * consistency + h.reward_coef * reward_loss + h.value_coef * value_loss
    terms = {"consistency_loss": consistency, "reward_loss": reward_loss, "value_loss": value_loss,
             **intrinsic_terms}
    if h.glass is not None and world.glass is not None:
        # Glass acts on encoder latents of the real consecutive observations of each slice: (L, B, d), the TD
        # batch's own slices (L = H+1) or, when glass.slice_len / the window asks for more, its own longer ones
        glass_obs = batch.obs if batch.glass_obs is None else batch.glass_obs
        contact = (glass_lib.contact_labels(glass_obs, h.glass.contact_index, h.glass.contact_threshold,
                                            h.glass.contrast_label == "binary")
                   if h.glass.lambda_contrast > 0 else None)  # (L, B) contact ids (10.3)
        glass_total, info = glass_lib.glass_losses(world.glass, world.core(world.encode(glass_obs)), h.glass,
                                                   contact, batch.glass_episode)
        total = total + glass_total
        terms.update({("glass_loss" if k == "total" else k): v for k, v in info.items()})
    terms["total_loss"] = total
    return total, (latents, terms)


def policy_loss(policy: Policy, world: WorldModel, latents, q_scale, key, h: Hyper, coefs: Coefs = NO_COEFS,
                draws: Sample = SAMPLE):
    """Policy loss on detached latents (H+1, B, d) with the Q heads frozen. Returns (loss, (new q_scale, terms)).

    coefs.smooth: None, or a traced scalar c adding c * schedules.action_smooth_loss of the mean actions along
    the latents (latent action smoothing, schedule.action_smooth_*)."""
    k_pi, k_q, k_dropout = jax.random.split(key, 3)
    frozen = jax.lax.stop_gradient(world)
    action, mean_action, scaled_entropy = policy(frozen.policy_input(latents), k_pi, draws)
    q = frozen.q_value(latents, action, k_q, "avg", dropout_key=k_dropout, draws=draws)  # (H+1, B)
    p5, p95 = jnp.percentile(jax.lax.stop_gradient(q[0]), jnp.array([5.0, 95.0]))
    new_scale = q_scale + h.q_scale_tau * (jnp.maximum(1.0, p95 - p5) - q_scale)
    per_step = -(h.entropy_coef * scaled_entropy + q / jax.lax.stop_gradient(new_scale)).mean(1)
    loss, terms = (per_step * _rho_weights(latents.shape[0], h.rho)).mean(), {}
    smooth_coef = coefs.smooth
    if smooth_coef is not None:
        smooth = schedules.action_smooth_loss(mean_action)
        loss = loss + smooth_coef * smooth
        terms = {"action_smooth_loss": smooth, "action_smooth_coef": jnp.asarray(smooth_coef, jnp.float32)}
    return loss, (new_scale, terms)


def update(state: AgentState, batch: replay.Batch, key, h: Hyper, world_tx, policy_tx, coefs: Coefs = NO_COEFS,
           draws: Sample = SAMPLE):
    """One TD-MPC2 update: model step, policy step, Polyak target. Returns (state, metrics dict of scalars).
    coefs: the round's scheduled coefficients (Coefs; see world_loss and policy_loss);
    draws: the random source of both losses (draws.py)."""
    k_world, k_policy = jax.random.split(key)
    (_, (latents, terms)), grads = eqx.filter_value_and_grad(world_loss, has_aux=True)(
        state.world, state.policy, state.target_qs, batch, k_world, h, coefs, draws)
    updates, world_opt = world_tx.update(grads, state.world_opt, eqx.filter(state.world, eqx.is_array))
    # Encoder learning-rate scale: Adam's step is linear in lr, so scaling its update equals a smaller lr.
    updates = eqx.tree_at(lambda u: u.encoder, updates,
                          jax.tree.map(lambda u: h.enc_lr_scale * u, updates.encoder))
    world = eqx.apply_updates(state.world, updates)

    (pi_loss, (q_scale, pi_terms)), pi_grads = eqx.filter_value_and_grad(policy_loss, has_aux=True)(
        state.policy, world, jax.lax.stop_gradient(latents), state.q_scale, k_policy, h, coefs, draws)
    pi_updates, policy_opt = policy_tx.update(pi_grads, state.policy_opt, eqx.filter(state.policy, eqx.is_array))
    policy = eqx.apply_updates(state.policy, pi_updates)

    target_qs = jax.tree.map(lambda t, o: t + h.tau * (o - t), state.target_qs, world.qs)
    metrics = dict(terms, **pi_terms, pi_loss=pi_loss, grad_norm=optax.tree.norm(grads),
                   pi_grad_norm=optax.tree.norm(pi_grads), q_scale=q_scale)
    new_state = eqx.tree_at(
        lambda s: (s.world, s.policy, s.target_qs, s.world_opt, s.policy_opt, s.q_scale), state,
        (world, policy, target_qs, world_opt, policy_opt, q_scale))
    return new_state, metrics


def glass_batch(buf: replay.Buffer, batch: replay.Batch, k_sample, h: Hyper) -> replay.Batch:
    """What the Glass terms read beyond the TD batch, added to it (unchanged when nothing more is needed):
    glass_obs, a second batch of B slices of glass.slice_len frames drawn with its own key when that length is
    not H+1 (10.2's windows of 5-10 frames); glass_episode, the episode of each Glass slice, for
    glass.contrast_pairs "episode" (10.3). Nothing is drawn otherwise, so the default update is unchanged."""
    length = h.glass.slice_frames(h.horizon)
    glass_obs, key, span = None, k_sample, h.horizon
    if length != h.horizon + 1:
        key, span = jax.random.fold_in(k_sample, 1), length - 1
        glass_obs = replay.sample(buf, key, h.batch_size, span).obs
    episodes = (replay.slice_episodes(buf, key, h.batch_size, span) if h.glass.lambda_contrast > 0
                and h.glass.contrast_pairs == "episode" else None)
    return batch._replace(glass_obs=glass_obs, glass_episode=episodes)


def params_finite(state: AgentState):
    leaves = jax.tree.leaves((state.world, state.policy))
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def run_updates(state: AgentState, first_update, num_updates: int, h: Hyper, world_tx, policy_tx,
                coefs: Coefs = NO_COEFS):
    """`num_updates` updates in one lax.scan; metrics are means over them (NaN if any update was NaN).
    coefs: the round's scheduled coefficients (Coefs), the same for every update of the round."""
    def body(state, update_index):
        key = stream(state.key, UPDATE, update_index)
        k_sample, k_update = jax.random.split(key)
        batch = replay.sample(state.buffer, k_sample, h.batch_size, h.horizon)
        if h.glass is not None:
            batch = glass_batch(state.buffer, batch, k_sample, h)
        return update(state, batch, k_update, h, world_tx, policy_tx, coefs)

    state, metrics = jax.lax.scan(body, state, first_update + jnp.arange(num_updates))
    metrics = jax.tree.map(lambda m: m.mean(), metrics)
    metrics["params_finite"] = params_finite(state)
    return state, metrics


def kmeans_prototypes(state: AgentState, key, num_latents: int = 2048, iters: int = 20) -> AgentState:
    """Research log 10.7: prototypes from spherical k-means of encoder latents of stored observations."""
    buf = state.buffer
    slots, num_envs = buf.obs.shape[:2]
    k_rows, k_envs, k_means = jax.random.split(key, 3)
    rows = jax.random.randint(k_rows, (num_latents,), 0, jnp.maximum(jnp.minimum(buf.count, slots), 1))
    envs = jax.random.randint(k_envs, (num_latents,), 0, num_envs)
    latents = state.world.encode(buf.obs[rows, envs])
    mu = glass_lib.kmeans_init(k_means, latents, state.world.glass.mu.shape[0], iters)
    return eqx.tree_at(lambda s: s.world.glass.mu, state, mu)
