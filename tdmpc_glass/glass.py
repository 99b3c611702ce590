"""Glass: a structural-entropy objective on the world model's latent space.

Pipeline (one seed; the caller vmaps over seeds):

    latents z (..., d) --cos / tau_p--> soft assignments c (..., N) over N prototypes mu (N, d)
    consecutive pairs (c_t, c_{t+1})  --> symmetric transition graph A (N, N)
    cluster matrix S = softmax(assign_logits) (N, K)
    loss terms: 2-D structural entropy H2(A; S), balance, temporal, window consistency, phase-contrastive, ...

Every function here is pure, jittable and vmappable; shapes in docstrings exclude the seed axis. Logarithms are
natural. Numerics at zeros (unvisited prototypes, empty clusters, zero-degree nodes) follow one rule: every
`log(x)` of a quantity that can reach 0 is `log(max(x, LOG_EPS))`. For x >= LOG_EPS it is exact; below, the
term it multiplies is at most LOG_EPS * |log LOG_EPS|, and 0 * log(0) evaluates to exactly 0 with a finite
gradient (the max routes the gradient away from the log). Divisions by sums that can be 0 use max(sum, TINY).

Structural entropy follows Li & Pan (2016). For a symmetric non-negative A with degrees d = A.sum(1) and
vol = d.sum(), and a row-stochastic S (hard or soft): V = S^T d, g_k = V_k - (S^T A S)_kk and

    H2(A; S) = - sum_k (g_k/vol) log(V_k/vol) - sum_k sum_i S_ik (d_i/vol) log(d_i/V_k)
             = H1(A) - R(A; S),   R = sum_k ((V_k - g_k)/vol) log(vol/V_k) >= 0.

A one-hot S gives the textbook value; one cluster (K=1) gives H1 (the worst value), so the trivial partition is
never a minimiser. Self-loops (A_ii > 0) count towards d_i and towards the cluster's internal mass V_k - g_k;
a leaf's own cut is d_i (as in the formula above).
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Optional

import equinox as eqx
import jax
import jax.numpy as jnp

from .config import GlassConfig

LOG_EPS = 1e-8  # floor inside logs (see module docstring)
TINY = 1e-12  # floor for denominators that can be exactly zero
GRAPH_KINDS = GlassConfig.CHOICES["graph"]


# ----------------------------------------------------------------------------------------------- helpers
def _safe_log(x):
    return jnp.log(jnp.maximum(x, LOG_EPS))


def _unit(x, eps: float = 1e-8):
    """x / ||x|| along the last axis; a zero vector stays zero, with finite gradients."""
    sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def entropy(p, axis: int = -1):
    """Shannon entropy (nats) of distributions p along `axis`; 0 log 0 = 0."""
    return -jnp.sum(p * _safe_log(p), axis=axis)


def kl_to_uniform(p, axis: int = -1):
    """KL(p || uniform) = log(n) - H(p) >= 0 along `axis` (zero exactly at the uniform distribution)."""
    return jnp.log(p.shape[axis]) - entropy(p, axis=axis)


# ----------------------------------------------------------------------------------------------- parameters
class GlassParams(eqx.Module):
    """Learnable Glass parameters of one seed.

    mu: (N, d) prototypes (anchors); only their direction matters (cosine geometry).
    assign_logits: (N, K) cluster logits; S = softmax over K.
    super_logits: (K, M) super-cluster logits for hierarchical Glass, or None (two levels).
    """

    mu: jax.Array
    assign_logits: jax.Array
    super_logits: Optional[jax.Array] = None


def init_params(key, latent_dim: int, num_prototypes: int = 16, num_clusters: int = 8, num_super: int = 0,
                simnorm_dim: int = 8, logit_std: float = 0.5) -> GlassParams:
    """Fresh parameters.

    mu is SimNorm-shaped noise (softmax of a standard normal within groups of `simnorm_dim`; if latent_dim is not
    a multiple of it, plain standard-normal noise), like the latents it is compared with. The cluster logits are
    N(0, logit_std^2): an exactly uniform S is a stationary point of H2 (every cluster looks the same), so the
    symmetry must be broken at init. num_super > 0 adds (K, M) super-cluster logits drawn the same way.
    """
    k_mu, k_s, k_sup = jax.random.split(key, 3)
    noise = jax.random.normal(k_mu, (num_prototypes, latent_dim))
    if simnorm_dim > 0 and latent_dim % simnorm_dim == 0:
        groups = noise.reshape(num_prototypes, -1, simnorm_dim)
        mu = jax.nn.softmax(groups, axis=-1).reshape(num_prototypes, latent_dim)
    else:
        mu = noise
    logits = logit_std * jax.random.normal(k_s, (num_prototypes, num_clusters))
    sup = logit_std * jax.random.normal(k_sup, (num_clusters, num_super)) if num_super > 0 else None
    return GlassParams(mu=mu, assign_logits=logits, super_logits=sup)


# ----------------------------------------------------------------------------------------------- assignments
def cosine_similarity(z, mu):
    """Cosine similarity of latents z (..., d) with each prototype mu (N, d) -> (..., N); zero vectors give 0.

    Latents wider than the prototypes (..., d + T) are compared on their first d entries: with
    multitask.task_heads the world model's latent carries the task one-hot after the d learned entries
    (world_model.WorldModel.core), and Glass's partition is shared by the tasks.
    """
    if z.shape[-1] > mu.shape[-1]:
        z = z[..., :mu.shape[-1]]
    return _unit(z) @ _unit(mu).T


def soft_assignment(z, mu, tau_p: float = 0.2):
    """c = softmax over prototypes of cos(z, mu_n) / tau_p: (..., d) x (N, d) -> (..., N), rows on the simplex."""
    return jax.nn.softmax(cosine_similarity(z, mu) / tau_p, axis=-1)


def cluster_matrix(assign_logits):
    """S = softmax(assign_logits, axis=1): (N, K) row-stochastic prototype -> cluster membership."""
    return jax.nn.softmax(assign_logits, axis=-1)


def cluster_membership(c, S):
    """Soft cluster membership sum_n c_n S_nk: (..., N) x (N, K) -> (..., K) (MoE-Q routing, intrinsic reward)."""
    return c @ S


def nearest_anchor(z, mu):
    """Index of the prototype with the highest cosine similarity: (..., d) -> int32 (...)."""
    return jnp.argmax(cosine_similarity(z, mu), axis=-1).astype(jnp.int32)


def k_label(z, mu, S):
    """Cluster id of latents: argmax_k S[argmax_n cos(z, mu_n), k]. (..., d) x (N, d) x (N, K) -> int32 (...)."""
    return jnp.argmax(S[nearest_anchor(z, mu)], axis=-1).astype(jnp.int32)


# ----------------------------------------------------------------------------------------------- contact labels
# A touch sensor reports log1p(normal force in N) (dm_control hopper: toe and heel). A foot is "in contact" when
# its force exceeds 1 N. In contact the hopper's readings are >= ~1.7 (force >= ~4.7 N) and 0 otherwise, so any
# threshold between 0 and 1.7 gives the same labels there; 1 N is stated, not tuned.
CONTACT_THRESHOLD = float(math.log1p(1.0))


def contact_labels(obs, index: tuple, threshold: float = CONTACT_THRESHOLD, binary: bool = False):
    """Contact-pattern id of flattened observations (..., obs_dim) -> int32 (...) (research log 10.3).

    index: positions of the touch readings inside the flattened observation (envs.suites.touch_indices). Sensor j
    contributes bit j when obs[..., index[j]] > threshold, so the id is in [0, 2^len(index)): for the hopper
    0 = airborne, 1 = toe only, 2 = heel only, 3 = both. Two frames are positives for the phase-contrastive
    loss when their ids are equal. binary=True (glass.contrast_label "binary", the log's "foot on ground vs.
    not"): 1 when any sensor is in contact, else 0.
    """
    if not index:
        raise ValueError("contact_labels: no touch-sensor indices (the task has no `touch` observation)")
    touch = obs[..., jnp.asarray(index)]
    bits = (touch > threshold).astype(jnp.int32)
    if binary:
        return jnp.max(bits, axis=-1)
    return jnp.sum(bits * (2 ** jnp.arange(len(index), dtype=jnp.int32)), axis=-1)


# ----------------------------------------------------------------------------------------------- intrinsic reward
def cluster_entropy(z, mu, S, tau_p: float = 0.2):
    """Entropy (nats) of the soft cluster distribution c(z) @ S of latents (..., d) -> (...); in [0, log K].

    The intrinsic reward of phases P / Pa is intrinsic_coef * cluster_entropy(z_{t+1}) (see agent.world_loss):
    high where the model cannot tell which behavioural cluster the reached state belongs to.
    """
    return entropy(cluster_membership(soft_assignment(z, mu, tau_p), S))


def intrinsic_coefficient(coef: float, decay_until, env_step):
    """Coefficient of the intrinsic reward at `env_step`: `coef` constant (decay_until None), or decaying
    linearly from `coef` at env step 0 to 0 at `decay_until` and 0 afterwards (phase Pa: 0.1 -> 0)."""
    if decay_until is None:
        return float(coef)
    return float(coef) * max(0.0, 1.0 - float(env_step) / float(decay_until))


# ----------------------------------------------------------------------------------------------- graph
def transition_counts(c, c_next):
    """Soft transition counts C = sum_b c_b (x) c_next_b: (..., N) x (..., N) -> (N, N); total mass = #pairs."""
    n = c.shape[-1]
    return c.reshape(-1, n).T @ c_next.reshape(-1, n)


def _row_normalise(x):
    return x / jnp.maximum(x.sum(axis=-1, keepdims=True), TINY)


def stationary_distribution(P, init, iters: int = 50):
    """Stationary distribution of a row-stochastic P (N, N) by power iteration of the lazy chain (I + P)/2.

    The lazy chain has the same stationary distribution and is aperiodic, so a near-periodic gait cycle (P close
    to a permutation) does not make the iteration oscillate. `init` (N,) is the starting distribution. For a nearly
    reducible chain (components joined only by eps mass) a fixed number of steps stays close to `init`; the exact
    stationary distribution is ill-conditioned there anyway.
    """
    def step(pi, _):
        pi = 0.5 * (pi + pi @ P)
        return pi / jnp.maximum(pi.sum(), TINY), None

    pi, _ = jax.lax.scan(step, init / jnp.maximum(init.sum(), TINY), None, length=iters)
    return pi


def transition_graph(c, c_next, kind: str = "rownorm_sym", eps: float = 1e-6, flow_iters: int = 50,
                     self_loops: bool = True):
    """Symmetric prototype transition graph from consecutive soft assignments: (..., N) x (..., N) -> (N, N).

    C = sum over pairs of c (x) c_next (leading axes are flattened, so (T-1, B, N) works). Then, with eps a small
    uniform mass added to every entry of C (it keeps every row normalisable and every degree positive):
      "rownorm_sym" (the research log's construction, default): P = row_norm(C + eps), A = (P + P^T)/2. Total mass
          N. Every prototype gets row mass 1 whatever its visit frequency (trap 6): d_i = (1 + sum_j P_ji)/2.
      "counts_sym": A = (C' + C'^T)/2 / sum(C'), C' = C + eps. Total mass 1; d_i keeps the visit frequency.
      "flow": stationary-flow weighting A = (F + F^T)/2, F_ij = pi_i P_ij, P = row_norm(C + eps), pi the
          stationary distribution of P (power iteration from the row mass of C, `flow_iters` steps). Total mass 1
          and the flow is balanced (row and column sums of F are both pi), so d = pi exactly. With flow_iters=0,
          pi is the row mass of C, and then F = C'/sum(C') up to eps: the same graph as "counts_sym".

    Self-loop convention: self-transitions c_t,n c_{t+1},n stay on the diagonal (self_loops=True, default). At the
    update's frame rate the agent mostly dwells near one anchor from one step to the next; that dwell is what makes
    a prototype (and its cluster) a stable behavioural phase, and kept on the diagonal it counts as the cluster's
    internal mass (V_k - g_k), so SE rewards partitions the agent stays inside, and a prototype's degree reflects
    time spent there instead of only how often it is left. The cost: diagonal mass dilutes the cut signal (cuts
    are a smaller fraction of vol). self_loops=False zeroes the diagonal of C before eps is added, for comparison.
    """
    if kind not in GRAPH_KINDS:
        raise ValueError(f"transition_graph: unknown kind {kind!r}; choose one of {GRAPH_KINDS}")
    C = transition_counts(c, c_next)
    if not self_loops:
        C = C * (1.0 - jnp.eye(C.shape[0], dtype=C.dtype))
    C = C + eps
    if kind == "rownorm_sym":
        P = _row_normalise(C)
        return 0.5 * (P + P.T)
    if kind == "counts_sym":
        A = 0.5 * (C + C.T)
        return A / jnp.maximum(A.sum(), TINY)
    P = _row_normalise(C)
    pi = stationary_distribution(P, C.sum(axis=1), flow_iters) if flow_iters > 0 else C.sum(axis=1) / jnp.maximum(
        C.sum(), TINY)
    F = pi[:, None] * P
    return 0.5 * (F + F.T)


# ----------------------------------------------------------------------------------------------- entropies
def _volumes(A, S):
    d = A.sum(axis=1)
    vol = jnp.maximum(d.sum(), TINY)
    V = S.T @ d
    intra = jnp.einsum("ik,ij,jk->k", S, A, S)
    return d, vol, V, intra


def one_dim_entropy(A):
    """H1(A) = -sum_i (d_i/vol) log(d_i/vol) of a symmetric non-negative A (N, N) -> ()."""
    d = A.sum(axis=1)
    p = d / jnp.maximum(d.sum(), TINY)
    return -jnp.sum(p * _safe_log(p))


def structural_entropy(A, S):
    """2-D structural entropy H2(A; S) (nats) of symmetric non-negative A (N, N) under row-stochastic S (N, K) -> ().

    d = A.sum(1), vol = sum d, V = S^T d, g_k = V_k - (S^T A S)_kk;
    H2 = -sum_k (g_k/vol) log(V_k/vol) - sum_k sum_i S_ik (d_i/vol) log(d_i/V_k).
    Finite values and gradients at empty clusters (V_k = 0) and zero-degree nodes (d_i = 0).
    """
    d, vol, V, intra = _volumes(A, S)
    g = V - intra
    p_node = d / vol  # (N,)
    p_vol = V / vol  # (K,)
    log_node = _safe_log(p_node)
    log_vol = _safe_log(p_vol)
    cut_term = -jnp.sum((g / vol) * log_vol)
    leaf_term = -jnp.sum(S * p_node[:, None] * (log_node[:, None] - log_vol[None, :]))
    return cut_term + leaf_term


def resistance(A, S):
    """Resistance R(A; S) = H1 - H2 = sum_k ((V_k - g_k)/vol) log(vol/V_k) >= 0: (N, N) x (N, K) -> ()."""
    _, vol, V, intra = _volumes(A, S)
    return -jnp.sum((intra / vol) * _safe_log(V / vol))


def hierarchical_structural_entropy(A, S, S_super):
    """Three-level encoding-tree entropy (leaf -> cluster -> super-cluster -> root) -> ().

    A (N, N) symmetric non-negative, S (N, K) and S_super (K, M) row-stochastic. With T = S @ S_super (N, M) the
    soft node -> super-cluster membership, volumes V = S^T d, U = T^T d and cuts g_k = V_k - (S^T A S)_kk,
    h_m = U_m - (T^T A T)_mm:
        H = - sum_m (h_m/vol) log(U_m/vol)                          super-clusters, parent = root
            - sum_k sum_m S_super_km (g_k/vol) log(V_k/U_m)         clusters, parent volume from the soft S_super
            - sum_i sum_k S_ik (d_i/vol) log(d_i/V_k)               leaves (cut d_i), parent volume from soft S
    i.e. -sum_{alpha != root} (g_alpha/vol) log(V_alpha/V_parent(alpha)). M = 1 or S_super = identity gives H2(A; S).
    """
    d, vol, V, intra = _volumes(A, S)
    T = S @ S_super
    U = T.T @ d
    intra_sup = jnp.einsum("im,ij,jm->m", T, A, T)
    g, h = V - intra, U - intra_sup
    log_node, log_V, log_U = _safe_log(d / vol), _safe_log(V / vol), _safe_log(U / vol)
    super_term = -jnp.sum((h / vol) * log_U)
    cluster_term = -jnp.sum(S_super * (g / vol)[:, None] * (log_V[:, None] - log_U[None, :]))
    leaf_term = -jnp.sum(S * (d / vol)[:, None] * (log_node[:, None] - log_V[None, :]))
    return super_term + cluster_term + leaf_term


# ----------------------------------------------------------------------------------------------- losses
def prototype_balance_loss(c):
    """KL(mean prototype usage || uniform) = log N - H(cbar), cbar = mean of c (..., N) over leading axes -> ().

    (The negative entropy of cbar plus the constant log N: same gradient, zero exactly at balance.)
    """
    cbar = c.reshape(-1, c.shape[-1]).mean(axis=0)
    return kl_to_uniform(cbar)


def cluster_balance_loss(c, S):
    """KL(mean cluster usage || uniform), usage_k = sum_n cbar_n S_nk: c (..., N), S (N, K) -> ()."""
    cbar = c.reshape(-1, c.shape[-1]).mean(axis=0)
    return kl_to_uniform(cbar @ S)


def temporal_loss(z, z_next):
    """Latent smoothness: mean over pairs of ||z_t - z_{t+1}||^2 (squared norm summed over d). (..., d) x2 -> ()."""
    return jnp.mean(jnp.sum(jnp.square(z - z_next), axis=-1))


def row_entropy_loss(S):
    """Mean entropy of the rows of S (N, K) -> (); minimising pushes each prototype to one cluster (trap 3)."""
    return jnp.mean(entropy(S, axis=-1))


def window_consistency_loss(c_seq, window: int, form: str = "mi"):
    """Window consistency (research log 10.2) of assignments c_seq (T, B, N) along sequences -> ().

    form "mi": E_{t,b}[ H(mean_w c) - mean_w H(c) ] over windows tau = t .. t+W-1 of W = `window` frames,
        t = 0 .. T-W. The summand is the mutual information between the time index inside the window and the
        anchor (a generalised Jensen-Shannon divergence): >= 0, zero iff every frame of the window has the same c.
    form "average": the log's formula as written, E_t[ H(1/W sum_{tau=t}^{t+W} c_tau) - 1/W sum_{tau=t}^{t+W}
        H(c_tau) ]: W+1 frames, both sums divided by W (H(x) = -sum x log x of the unnormalised mean). Since
        H(a m) = a H(m) - a log a for a = (W+1)/W and m the true mean, it equals a MI(W+1 frames) - a log a:
        the "mi" form over W+1 frames, scaled by (W+1)/W and shifted by a constant (its minimum, -a log a).
    """
    if form not in ("mi", "average"):
        raise ValueError(f"window_consistency_loss: form {form!r} is not one of mi, average")
    T = c_seq.shape[0]
    frames_per_window = window + (1 if form == "average" else 0)
    if not 1 <= frames_per_window <= T:
        raise ValueError(f"window_consistency_loss: window={window} ({form}: {frames_per_window} frames) must fit "
                         f"in T={T} (sequence length)")
    starts = T - frames_per_window + 1
    frames = jnp.stack([c_seq[t:t + starts] for t in range(frames_per_window)])  # (frames, starts, B, N)
    if form == "mi":
        per_window = entropy(frames.mean(axis=0)) - entropy(frames).mean(axis=0)  # (starts, B)
    else:
        per_window = entropy(frames.sum(axis=0) / window) - entropy(frames).sum(axis=0) / window
    return per_window.mean()


def window_mutual_information(c_seq, window: int):
    """Diagnostic: the window-consistency quantity without gradient. (T, B, N) -> ()."""
    return jax.lax.stop_gradient(window_consistency_loss(c_seq, window))


def phase_contrastive_loss(c, labels, tau: float = 0.1, normalize: bool = True, slices=None, episodes=None):
    """NT-Xent on assignment vectors with positives by matching label (research log 10.3).

    c: (M, N) assignments; labels: (M,) int or bool contact state (any integer class id). Each (anchor i,
    positive p) pair contributes -log( e^{s_ip} / (e^{s_ip} + sum_{j in neg(i)} e^{s_ij}) ), s = sim / tau with
    sim the cosine of the assignment vectors (normalize=True) or their dot product (as the log writes it).
    Pairs are averaged per anchor, then over anchors that have at least one positive; no positive anywhere -> 0.
    Who pairs with whom:
      slices None (glass.contrast_pairs "label"): positives of i are the other samples with the same label,
          negatives those with a different label, wherever in the batch they come from.
      slices (M,) ints, the slice of each sample (glass.contrast_pairs "episode", the log's "negatives = frames
          from different phases or different episodes"): positives are the other samples of the same slice
          (consecutive frames of one episode) with the same label; negatives are samples with a different label
          or from a different episode. `episodes` (M,) or (M, k) ints name each sample's episode (None: the
          slice); a same-label sample of the same episode but another slice is neither.
    """
    if normalize:
        c = _unit(c)
    s = (c @ c.T) / tau
    m = c.shape[0]
    labels = labels.astype(jnp.int32)
    same = labels[:, None] == labels[None, :]
    not_self = ~jnp.eye(m, dtype=bool)
    if slices is None:
        pos = same & not_self
        neg = ~same
    else:
        same_slice = slices[:, None] == slices[None, :]
        if episodes is None:
            same_episode = same_slice
        else:
            ep = episodes.reshape(m, -1)
            same_episode = jnp.all(ep[:, None, :] == ep[None, :, :], axis=-1)
        pos = same & same_slice & not_self
        neg = ~same | ~same_episode
    neg_lse = jax.nn.logsumexp(jnp.where(neg, s, -1e30), axis=1)  # (M,), about -1e30 when no negatives
    pair_loss = jnp.logaddexp(s, neg_lse[:, None]) - s  # (M, M), >= 0
    n_pos = pos.sum(axis=1)
    per_anchor = jnp.sum(jnp.where(pos, pair_loss, 0.0), axis=1) / jnp.maximum(n_pos, 1)
    has_pos = n_pos > 0
    return jnp.sum(jnp.where(has_pos, per_anchor, 0.0)) / jnp.maximum(has_pos.sum(), 1)


def sinkhorn_targets(scores, eps: float = 0.05, iters: int = 3):
    """Sinkhorn-Knopp equipartition targets (as SwAV): scores (B, N) -> targets (B, N), no gradient.

    Start from exp(scores/eps), then alternately give every prototype (column) total mass 1/N and every sample
    (row) total mass 1/B, `iters` times; rows are returned summing to 1. Prototype marginals end close to B/N.
    """
    scores = jax.lax.stop_gradient(scores)
    b, n = scores.shape
    q = jnp.exp((scores - scores.max(axis=1, keepdims=True)) / eps)
    q = q / jnp.maximum(q.sum(), TINY)
    for _ in range(iters):
        q = q / jnp.maximum(q.sum(axis=0, keepdims=True), TINY) / n
        q = q / jnp.maximum(q.sum(axis=1, keepdims=True), TINY) / b
    return jax.lax.stop_gradient(q * b)


def swapped_prediction_loss(scores_a, scores_b, tau_p: float = 0.2, eps: float = 0.05, iters: int = 3):
    """SwAV-style swapped prediction between two views (B, N) of the same samples -> ().

    0.5 * [CE(q_b, softmax(scores_a/tau_p)) + CE(q_a, softmax(scores_b/tau_p))] with q = sinkhorn_targets(scores)
    (stop-gradient). In Glass the views are cosine scores of z_t and z_{t+1} (or of online and target latents).
    """
    q_a = sinkhorn_targets(scores_a, eps, iters)
    q_b = sinkhorn_targets(scores_b, eps, iters)
    ce_a = -jnp.sum(q_b * jax.nn.log_softmax(scores_a / tau_p, axis=-1), axis=-1)
    ce_b = -jnp.sum(q_a * jax.nn.log_softmax(scores_b / tau_p, axis=-1), axis=-1)
    return 0.5 * (ce_a.mean() + ce_b.mean())


# ----------------------------------------------------------------------------------------------- diagnostics
def count_active(usage, threshold: Optional[float] = None):
    """Number of entries of a usage distribution (..., n) above `threshold` -> int32 (...).

    Default threshold 1/(2n): an entry is active when it gets at least half of its fair share of the mass. A
    winning hopper seed with ~4 of 16 prototypes in use counts 4 (each has ~1/4 >> 1/32), and the near-uniform
    soft usage of an untrained model counts all n (which is what it is: nothing has collapsed yet).
    """
    n = usage.shape[-1]
    thr = 1.0 / (2 * n) if threshold is None else threshold
    return jnp.sum(usage > thr, axis=-1).astype(jnp.int32)


ACTIVE_RULES = GlassConfig.CHOICES["active_rule"]


def active_prototypes(c, threshold: Optional[float] = None, rule: str = "soft"):
    """Number of active prototypes among assignments c (..., N) -> int32 () (default threshold 1/(2N)).

    rule "soft": prototypes whose mean soft assignment mass exceeds the threshold. With tau_p = 0.2 and latents
        whose cosines to every anchor are close (SimNorm latents at init, or a seed collapsed onto few anchors
        that all others still resemble), c is near uniform and every prototype counts: this never falls low.
    rule "argmax" (glass.active_rule default; the log's "active < 4 (K=3 basin)" check, 10.6): prototypes that are
        the nearest anchor (argmax c = argmax cos) of more than `threshold` of the latents: the anchors the
        K label actually visits. A seed whose latents all sit at 2 anchors counts 2, however soft c is.
    """
    if rule not in ACTIVE_RULES:
        raise ValueError(f"active_prototypes: rule {rule!r} is not one of {ACTIVE_RULES}")
    flat = c.reshape(-1, c.shape[-1])
    if rule == "argmax":
        flat = jax.nn.one_hot(jnp.argmax(flat, axis=-1), flat.shape[-1], dtype=flat.dtype)
    return count_active(flat.mean(axis=0), threshold)


def active_clusters(c, S, threshold: Optional[float] = None, rule: str = "soft"):
    """Active clusters -> int32 () (default threshold 1/(2K)). rule "soft": mean usage sum_n cbar_n S_nk above the
    threshold; "argmax": the K label argmax_k S[argmax_n c_n, k] of more than `threshold` of the latents."""
    if rule not in ACTIVE_RULES:
        raise ValueError(f"active_clusters: rule {rule!r} is not one of {ACTIVE_RULES}")
    flat = c.reshape(-1, c.shape[-1])
    if rule == "argmax":
        labels = jnp.argmax(S[jnp.argmax(flat, axis=-1)], axis=-1)
        return count_active(jax.nn.one_hot(labels, S.shape[-1], dtype=flat.dtype).mean(axis=0), threshold)
    return count_active(flat.mean(axis=0) @ S, threshold)


def k_switch_rate(labels):
    """Fraction of consecutive steps where the label changes: labels (T, ...) along axis 0 -> float32 ()."""
    return jnp.mean((labels[1:] != labels[:-1]).astype(jnp.float32))


# ----------------------------------------------------------------------------------------------- composite
# Fixed settings of the loss, not config keys (a new key would change every run's config and its checkpoints'
# fingerprint): power-iteration steps of the "flow" graph, and the Sinkhorn targets of balance="sinkhorn" (SwAV's).
FLOW_ITERS = 50
SINKHORN_EPS = 0.05
SINKHORN_ITERS = 3


@dataclasses.dataclass(unsafe_hash=True)
class GlassLossConfig(GlassConfig):
    """The static settings the jitted Glass loss closes over (`agent.Hyper.glass`, built by agent.glass_settings):
    every glass.* key of `config.GlassConfig` (its defaults, docs and allowed values) plus what the task decides.

    contact_index: positions of the touch readings in the flattened observation (`contact_labels`, threshold
        `contact_threshold`), from which the update derives the contact labels of lambda_contrast; () when
        lambda_contrast == 0.
    intrinsic: whether the update adds the cluster-entropy intrinsic reward to its reward targets; its coefficient
        is a traced argument of the update (it decays with env step), not a setting here.
    Hashable and read-only after construction (a static jit argument); validated on construction.
    """

    contact_threshold: ClassVar[float] = CONTACT_THRESHOLD

    contact_index: tuple = ()
    intrinsic: bool = False

    def __post_init__(self):
        self.validate()
        object.__setattr__(self, "_sealed", True)

    def __setattr__(self, name, value):
        if getattr(self, "_sealed", False):
            raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}: static loss settings")
        object.__setattr__(self, name, value)

    @classmethod
    def from_config(cls, glass: GlassConfig, contact_index: tuple = (), intrinsic: bool = False):
        """The loss settings of a glass.* config section (copied: later changes to it do not reach them)."""
        values = {f.name: getattr(glass, f.name) for f in dataclasses.fields(GlassConfig)}
        return cls(**values, contact_index=tuple(contact_index), intrinsic=intrinsic)


DEFAULT_LOSS = GlassLossConfig()


def glass_terms(params: GlassParams, z_seq, cfg: GlassConfig = DEFAULT_LOSS, contact=None, episodes=None):
    """Unweighted Glass loss terms (with gradients) and diagnostics (without) for one seed.

    params: GlassParams; z_seq: (T, B, d) latents along sampled slices (T >= 2; graph and temporal pairs are
    (z_t, z_{t+1})); contact: (T, B) int/bool contact state, required when cfg.lambda_contrast > 0; episodes:
    (B, 2) int episode id of each slice (buffer.slice_episodes) for contrast_pairs "episode" (None: every slice
    its own episode).
    Returns (terms, diag), dicts of scalars. terms: loss_se, loss_cluster_bal, loss_proto_bal, loss_swap,
    loss_temp, loss_window, loss_contrast, loss_row_entropy; a term whose weight (or switch) is off is not
    computed and is a constant 0, so it costs nothing in the compiled update. diag (stop-gradient): se, h1,
    resistance, se_hier (0 unless hierarchical), active_prototypes, active_clusters, k_switch_rate, window_mi.
    """
    T = z_seq.shape[0]
    if T < 2:
        raise ValueError(f"glass_losses: need T >= 2 latents per sequence, got {T}")
    if cfg.lambda_window > 0 and cfg.window_frames() > T:
        raise ValueError(f"glass_losses: window={cfg.window} ({cfg.window_form}) is longer than the sequences "
                         f"(T={T})")
    if cfg.lambda_contrast > 0 and contact is None:
        raise ValueError("glass_losses: lambda_contrast > 0 needs the contact labels")
    zero = jnp.zeros((), jnp.float32)
    S = cluster_matrix(params.assign_logits)
    S_super = None if params.super_logits is None else cluster_matrix(params.super_logits)
    cos = cosine_similarity(z_seq, params.mu)  # (T, B, N)
    c = jax.nn.softmax(cos / cfg.tau_p, axis=-1)

    # transition graph and the structural-entropy term
    if cfg.graph_grad == "prototypes":
        c_graph = soft_assignment(jax.lax.stop_gradient(z_seq), params.mu, cfg.tau_p)
    else:
        c_graph = c
    A = transition_graph(c_graph[:-1], c_graph[1:], cfg.graph, cfg.graph_eps, FLOW_ITERS, cfg.self_loops)
    if cfg.graph_grad == "none":
        A = jax.lax.stop_gradient(A)
    se = structural_entropy(A, S)
    se_hier = hierarchical_structural_entropy(A, S, S_super) if S_super is not None else None
    se_main = se if se_hier is None else se_hier
    h1 = one_dim_entropy(A)

    bal_on = cfg.lambda_bal > 0
    terms = {"loss_se": se_main - h1 if cfg.se_objective == "neg_resistance" else se_main}
    terms["loss_cluster_bal"] = cluster_balance_loss(c, S) if bal_on and cfg.cluster_balance else zero
    terms["loss_proto_bal"] = prototype_balance_loss(c) if bal_on and cfg.balance == "kl" else zero
    if bal_on and cfg.balance == "sinkhorn":
        n = cos.shape[-1]
        terms["loss_swap"] = swapped_prediction_loss(cos[:-1].reshape(-1, n), cos[1:].reshape(-1, n), cfg.tau_p,
                                                     SINKHORN_EPS, SINKHORN_ITERS)
    else:
        terms["loss_swap"] = zero
    terms["loss_temp"] = temporal_loss(z_seq[:-1], z_seq[1:]) if cfg.lambda_temp > 0 else zero
    terms["loss_window"] = (window_consistency_loss(c, cfg.window, cfg.window_form) if cfg.lambda_window > 0
                            else zero)
    if cfg.lambda_contrast > 0:
        slices = sample_episodes = None
        if cfg.contrast_pairs == "episode":  # sample (t, b) -> its slice b and that slice's episode
            B = c.shape[1]
            slices = jnp.broadcast_to(jnp.arange(B), (T, B)).reshape(-1)
            if episodes is not None:
                ids = episodes.reshape(B, -1)
                sample_episodes = jnp.broadcast_to(ids[None], (T,) + ids.shape).reshape(T * B, -1)
        terms["loss_contrast"] = phase_contrastive_loss(c.reshape(-1, c.shape[-1]), contact.reshape(-1),
                                                        cfg.contrast_tau, cfg.contrast_sim == "cosine", slices,
                                                        sample_episodes)
    else:
        terms["loss_contrast"] = zero
    if cfg.lambda_row_entropy > 0:
        row_h = row_entropy_loss(S)
        terms["loss_row_entropy"] = row_h if S_super is None else row_h + row_entropy_loss(S_super)
    else:
        terms["loss_row_entropy"] = zero

    labels = jnp.argmax(S[jnp.argmax(cos, axis=-1)], axis=-1)  # k_label from the cosines already computed
    diag = {
        "se": se, "h1": h1, "resistance": h1 - se,
        "se_hier": se_hier if se_hier is not None else zero,
        "active_prototypes": active_prototypes(c, cfg.active_threshold, cfg.active_rule),
        "active_clusters": active_clusters(c, S, cfg.active_threshold, cfg.active_rule),
        "k_switch_rate": k_switch_rate(labels),
        "window_mi": window_consistency_loss(c, min(cfg.window, T)),
    }
    diag = {k: jax.lax.stop_gradient(v).astype(jnp.float32) for k, v in diag.items()}
    return terms, diag


def weighted_total(terms, cfg: GlassConfig):
    """The Glass loss from `glass_terms`' terms: lambda_se*SE + lambda_bal*(cluster_bal + proto_bal + swap)
    + lambda_temp*temp + lambda_window*window + lambda_contrast*contrast + lambda_row_entropy*row_entropy."""
    return (cfg.lambda_se * terms["loss_se"]
            + cfg.lambda_bal * (terms["loss_cluster_bal"] + terms["loss_proto_bal"] + terms["loss_swap"])
            + cfg.lambda_temp * terms["loss_temp"] + cfg.lambda_window * terms["loss_window"]
            + cfg.lambda_contrast * terms["loss_contrast"] + cfg.lambda_row_entropy * terms["loss_row_entropy"])


def glass_losses(params: GlassParams, z_seq, cfg: GlassConfig = DEFAULT_LOSS, contact=None, episodes=None):
    """Glass loss for one seed: (total, info). Arguments as `glass_terms`; total = `weighted_total(terms)`;
    info = every unweighted term and every diagnostic plus "total", float32 scalars without gradient."""
    terms, diag = glass_terms(params, z_seq, cfg, contact, episodes)
    total = weighted_total(terms, cfg)
    info = {k: jax.lax.stop_gradient(v).astype(jnp.float32) for k, v in terms.items()}
    info.update(diag)
    info["total"] = jax.lax.stop_gradient(total).astype(jnp.float32)
    return total, info


# ----------------------------------------------------------------------------------------------- k-means init
def kmeans_init(key, latents, num_prototypes: int, iters: int = 20):
    """Spherical k-means of latents (M, d) -> unit-norm centroids (num_prototypes, d) (research log 10.7).

    Cosine geometry: latents are L2-normalised; seeding is k-means++ with weights 1 - max cos to the chosen seeds
    (proportional to squared chordal distance); each Lloyd step assigns by highest cosine and moves a centroid to
    the normalised sum of its members (an empty cluster keeps its centroid). Jittable; M >= num_prototypes.
    """
    x = _unit(latents)
    m = x.shape[0]
    k_first, k_rest = jax.random.split(key)
    first = jax.random.randint(k_first, (), 0, m)
    cents = jnp.zeros((num_prototypes, x.shape[1]), x.dtype).at[0].set(x[first])
    best_cos = x @ x[first]

    def seed_step(carry, inputs):
        cents, best_cos = carry
        i, k = inputs
        w = jnp.maximum(1.0 - best_cos, 0.0) + 1e-12
        j = jax.random.categorical(k, jnp.log(w))
        cents = cents.at[i].set(x[j])
        return (cents, jnp.maximum(best_cos, x @ x[j])), None

    if num_prototypes > 1:
        keys = jax.random.split(k_rest, num_prototypes - 1)
        (cents, _), _ = jax.lax.scan(seed_step, (cents, best_cos), (jnp.arange(1, num_prototypes), keys))

    def lloyd_step(cents, _):
        assign = jax.nn.one_hot(jnp.argmax(x @ cents.T, axis=1), num_prototypes, dtype=x.dtype)  # (M, N)
        sums = assign.T @ x
        counts = assign.sum(axis=0)
        cents = jnp.where(counts[:, None] > 0, _unit(sums), cents)
        return cents, None

    cents, _ = jax.lax.scan(lloyd_step, cents, None, length=iters)
    return cents
