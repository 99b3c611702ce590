"""TD-MPC2's networks: encoder, latent dynamics, reward, Q ensemble and policy prior (single seed).

Shapes: obs (..., obs_dim), z (..., latent_dim), a (..., act_dim); every call takes arbitrary leading axes.
The Q ensemble is one MLP whose arrays carry a leading `num_q` axis and is evaluated with one vmap.
"""
from __future__ import annotations

from typing import Optional

import equinox as eqx
import jax
import jax.numpy as jnp

from . import glass as glass_lib
from . import math as tmath
from .config import Config, derive
from .draws import SAMPLE, Sample
from .nn import MLP, num_params


def make_q_ensemble(in_dim, mlp_dim, num_bins, num_q, dropout, key) -> MLP:
    """num_q Q heads stacked on a leading axis; last layers start at zero so initial values are 0."""
    make = lambda k: MLP(in_dim, (mlp_dim, mlp_dim), num_bins, k, dropout=dropout, zero_last=True)
    return eqx.filter_vmap(make)(jax.random.split(key, num_q))


def ensemble_logits(qs: MLP, za, keep: Optional[jax.Array] = None):
    """Logits (num_heads, ..., num_bins) of every head in a stacked ensemble at za = [z, a]; keep: dropout keep
    masks (num_heads, ..., hidden) of the first layer, or None (no dropout)."""
    if keep is None:
        return jax.vmap(lambda head: head(za))(qs)
    return jax.vmap(lambda head, k: head(za, k))(qs, keep)


def dropout_masks(qs: MLP, za, heads, dropout_key, draws: Sample):
    """Keep masks (len(heads), ..., hidden) of the first layer of the ensemble's heads `heads` at inputs za, or
    None without a dropout key (inference) or without dropout."""
    first = qs.hidden[0]
    if dropout_key is None or first.dropout <= 0:
        return None
    shape = za.shape[:-1] + (first.linear.weight.shape[-2],)
    return draws.q_dropout(dropout_key, heads, shape, first.dropout)


def select_heads(qs: MLP, idx):
    return jax.tree.map(lambda p: p[idx], qs)


class WorldModel(eqx.Module):
    encoder: MLP
    dynamics: MLP
    reward: MLP
    qs: MLP
    num_bins: int = eqx.field(static=True)
    vmin: float = eqx.field(static=True)
    vmax: float = eqx.field(static=True)
    tau_p: float = eqx.field(static=True, default=0.2)
    glass: Optional[glass_lib.GlassParams] = None  # None: Glass off (same pytree as vanilla TD-MPC2)
    q_offsets: Optional[jax.Array] = None  # (K, num_bins) mixture-of-experts Q offsets (research log 10.5)
    cluster_input: bool = eqx.field(static=True, default=False)  # phase v: c(z) @ S joins the pi and Q inputs
    cluster_input_grad: bool = eqx.field(static=True, default=False)  # phase v: that input carries gradients
    # multitask.task_heads (10.8): T > 0 tasks, each with its own reward and Q output layer. The latent then carries
    # the task one-hot (the observation's last T entries) after its d learned entries, z = [core, task] (d + T),
    # so every caller (losses, planner, videos) keeps passing one z; dynamics copies the task part unchanged.
    num_task_heads: int = eqx.field(static=True, default=0)

    def core(self, z):
        """The learned part of a latent (..., d): z itself, or z without the task one-hot with task heads."""
        return z[..., :z.shape[-1] - self.num_task_heads] if self.num_task_heads else z

    def _task(self, z):
        return z[..., z.shape[-1] - self.num_task_heads:]

    def _select_task(self, z, logits):
        """Per-task logits (..., T * bins) -> the latent's task's (..., bins); plain logits pass through."""
        if not self.num_task_heads:
            return logits
        per_task = logits.reshape(logits.shape[:-1] + (self.num_task_heads, self.num_bins))
        return jnp.einsum("...tb,...t->...b", per_task, self._task(z))

    def encode(self, obs):
        if self.num_task_heads:
            return jnp.concatenate([self.encoder(obs), obs[..., obs.shape[-1] - self.num_task_heads:]], -1)
        return self.encoder(obs)

    def next(self, z, a):
        if self.num_task_heads:
            return jnp.concatenate([self.dynamics(jnp.concatenate([self.core(z), a], -1)), self._task(z)], -1)
        return self.dynamics(jnp.concatenate([z, a], -1))

    def reward_logits(self, z, a):
        return self._select_task(z, self.reward(jnp.concatenate([self.core(z), a], -1)))

    def decode(self, logits):
        return tmath.two_hot_inv(logits, self.num_bins, self.vmin, self.vmax)

    def soft_ce(self, logits, target):
        return tmath.soft_ce(logits, target, self.num_bins, self.vmin, self.vmax)

    def cluster_membership(self, z):
        """Soft cluster membership sum_n c_n S_nk of latents (..., d) -> (..., K)."""
        c = glass_lib.soft_assignment(self.core(z), self.glass.mu, self.tau_p)
        return c @ glass_lib.cluster_matrix(self.glass.assign_logits)

    def cluster_features(self, z):
        """Phase v: c(z) @ S (..., K) appended to the inputs of the policy prior and the Q heads.

        glass.cluster_input_grad false: stop-gradient, the value loss does not move the prototypes, the cluster
        matrix or the encoder through this input (the partition is trained by the Glass loss alone). True: it does,
        as a plain concatenation would (phase v's setting: the "representation drift" the log reports needs the
        TD loss to drag the partition). The policy loss reads frozen latents and parameters either way.
        """
        membership = self.cluster_membership(z)
        return membership if self.cluster_input_grad else jax.lax.stop_gradient(membership)

    def policy_input(self, z):
        """What the policy prior reads: z (..., d), or [z, cluster features] (..., d + K) with cluster_input."""
        core = self.core(z)
        return jnp.concatenate([core, self.cluster_features(z)], -1) if self.cluster_input else core

    def _q_input(self, z, a):
        core = self.core(z)
        parts = [core, a, self.cluster_features(z)] if self.cluster_input else [core, a]
        return jnp.concatenate(parts, -1)

    def _moe_offset(self, z):
        """MoE-Q: every head's logits move by the membership-weighted cluster offsets; zero offsets = plain Q.

        The router is Glass's partition, read stop-gradient: the value loss trains
        the offsets and the heads, never mu, S or the encoder through the routing weights."""
        if self.q_offsets is None:
            return 0.0
        return jax.lax.stop_gradient(self.cluster_membership(z)) @ self.q_offsets

    def q_logits(self, z, a, dropout_key=None, qs: Optional[MLP] = None, draws: Sample = SAMPLE):
        """All heads: (num_q, ..., num_bins). `qs` swaps in other parameters (the target ensemble)."""
        qs = self.qs if qs is None else qs
        za = self._q_input(z, a)
        keep = dropout_masks(qs, za, jnp.arange(qs.out.weight.shape[0]), dropout_key, draws)
        return self._select_task(z, ensemble_logits(qs, za, keep)) + self._moe_offset(z)

    def q_value(self, z, a, key, reduce: str, dropout_key=None, qs: Optional[MLP] = None, draws: Sample = SAMPLE):
        """Decoded value (...,) of two randomly chosen heads, reduced by 'min' or 'avg' (TD-MPC2's 2-of-num_q)."""
        qs = self.qs if qs is None else qs
        num_q = qs.out.weight.shape[0]
        pair = draws.q_pair(key, num_q)
        za = self._q_input(z, a)
        keep = dropout_masks(qs, za, pair, dropout_key, draws)
        logits = self._select_task(z, ensemble_logits(select_heads(qs, pair), za, keep))
        values = self.decode(logits + self._moe_offset(z))
        return values.min(0) if reduce == "min" else values.mean(0)


class Policy(eqx.Module):
    """The policy prior. Its input is `world.policy_input(z)`: the latent itself, or with glass.cluster_input the
    latent and its cluster features (..., d + K); every caller (TD targets, policy loss, planner) goes through it."""

    mlp: MLP
    act_dim: int = eqx.field(static=True)
    log_std_min: float = eqx.field(static=True)
    log_std_max: float = eqx.field(static=True)

    def __call__(self, z, key, draws: Sample = SAMPLE):
        """Sample tanh-squashed actions (..., A). Returns (action, mean_action, scaled_entropy (...,)).

        scaled_entropy = -A * log N(eps; 0, std) of the pre-tanh sample, without the tanh Jacobian (TD-MPC2).
        """
        mean, raw_log_std = jnp.split(self.mlp(z), 2, axis=-1)
        log_std = self.log_std(raw_log_std)
        eps = draws.policy_eps(key, mean.shape)
        action = jnp.tanh(mean + eps * jnp.exp(log_std))
        scaled_entropy = -self.act_dim * tmath.gaussian_logprob(eps, log_std)
        return action, jnp.tanh(mean), scaled_entropy

    def log_std(self, raw_log_std):
        """The raw second half of the network's output -> log std in [log_std_min, log_std_max]."""
        return self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (jnp.tanh(raw_log_std) + 1)

    def mean_action(self, z):
        return jnp.tanh(jnp.split(self.mlp(z), 2, axis=-1)[0])


def make_networks(cfg: Config, obs_dim: int, act_dim: int, key) -> tuple[WorldModel, Policy]:
    m, d, g = cfg.model, derive(cfg), cfg.glass
    k_enc, k_dyn, k_rew, k_q, k_pi, k_glass = jax.random.split(key, 6)
    enc_hidden = (d.enc_dim,) * max(d.num_enc_layers - 1, 1)
    za = d.latent_dim + act_dim
    extra = g.num_clusters if g.enabled and g.cluster_input else 0  # phase v: cluster features for pi and Q
    heads = len(cfg.multitask.tasks) if cfg.multitask.task_heads else 0  # 10.8: one output layer per task
    outs = m.num_bins * max(heads, 1)
    world = WorldModel(
        encoder=MLP(obs_dim, enc_hidden, d.latent_dim, k_enc, out_activation="simnorm", simnorm_dim=m.simnorm_dim),
        dynamics=MLP(za, (d.mlp_dim, d.mlp_dim), d.latent_dim, k_dyn, out_activation="simnorm",
                     simnorm_dim=m.simnorm_dim),
        reward=MLP(za, (d.mlp_dim, d.mlp_dim), outs, k_rew, zero_last=True),
        qs=make_q_ensemble(za + extra, d.mlp_dim, outs, d.num_q, m.dropout, k_q),
        num_bins=m.num_bins, vmin=m.vmin, vmax=m.vmax, tau_p=g.tau_p,
        glass=(glass_lib.init_params(k_glass, d.latent_dim, g.num_prototypes, g.num_clusters, g.num_super,
                                     m.simnorm_dim) if g.enabled else None),
        q_offsets=jnp.zeros((g.num_clusters, m.num_bins)) if g.enabled and g.moe_q else None,
        cluster_input=bool(extra), cluster_input_grad=bool(extra) and g.cluster_input_grad, num_task_heads=heads,
    )
    policy = Policy(MLP(d.latent_dim + extra, (d.mlp_dim, d.mlp_dim), 2 * act_dim, k_pi), act_dim, m.log_std_min,
                    m.log_std_max)
    return world, policy


def count_params(cfg: Config, obs_dim: int, act_dim: int) -> dict[str, int]:
    """Parameter count per network and in total (target Q heads excluded, as TD-MPC2 reports)."""
    world, policy = eqx.filter_eval_shape(make_networks, cfg, obs_dim, act_dim, jax.random.key(0))
    counts = {
        "encoder": num_params(world.encoder), "dynamics": num_params(world.dynamics),
        "reward": num_params(world.reward), "policy": num_params(policy), "q_ensemble": num_params(world.qs),
    }
    if world.glass is not None:
        counts["glass"] = num_params(world.glass) + num_params(world.q_offsets)
    counts["total"] = sum(counts.values())
    return counts
