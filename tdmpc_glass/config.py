"""Typed configuration schema (OmegaConf structured configs).

Defaults reproduce TD-MPC2 on DMC (../shared/reference/tdmpc2-facts.md). Step counts (train.steps, expl_until,
schedule points) are env steps: simulator control steps, agent steps (decisions) x action_repeat, the unit every
published curve uses. At action repeat 1 (the research log's clock) an env step is a decision.

This module defines the schema, the values derived from it, and how layers of dotted overrides are merged
and type-checked into a Config (`build_config`). Phase files (extends / variants) are read by
`experiments/phases.py`; the library itself knows nothing about them.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from typing import ClassVar, List, Optional

from .runlayout import flatten  # noqa: F401  (re-exported: dotted keys of a config tree)

# size -> (enc_dim, mlp_dim, latent_dim, num_enc_layers, num_q)
MODEL_SIZES = {
    1: (256, 384, 128, 2, 2),
    5: (256, 512, 512, 2, 5),
    19: (1024, 1024, 768, 3, 5),
    48: (1792, 1792, 768, 4, 5),
    317: (4096, 4096, 1376, 5, 8),
}


@dataclass
class ModelConfig:
    size: int = 5  # millions of parameters: one of MODEL_SIZES; explicit dims below override it
    enc_dim: Optional[int] = None
    mlp_dim: Optional[int] = None
    latent_dim: Optional[int] = None
    num_enc_layers: Optional[int] = None
    num_q: Optional[int] = None
    simnorm_dim: int = 8
    num_bins: int = 101
    vmin: float = -10.0
    vmax: float = 10.0
    dropout: float = 0.01
    log_std_min: float = -10.0
    log_std_max: float = 2.0


@dataclass
class OptimConfig:
    lr: float = 3e-4
    enc_lr_scale: float = 0.3
    pi_eps: float = 1e-5
    grad_clip_norm: float = 20.0
    batch_size: int = 256
    rho: float = 0.5
    consistency_coef: float = 20.0
    reward_coef: float = 0.1
    value_coef: float = 0.1
    entropy_coef: float = 1e-4
    tau: float = 0.01  # Polyak rate of the target Q heads
    q_scale_tau: float = 0.01  # rate of the running P95-P5 scale used by the policy loss
    discount_denom: float = 5.0
    discount_min: float = 0.95
    discount_max: float = 0.995


@dataclass
class PlannerConfig:
    mpc: bool = True  # False: act with the policy prior alone
    iterations: int = 6
    num_samples: int = 512
    num_elites: int = 64
    num_pi_trajs: int = 24
    min_std: float = 0.05
    max_std: float = 2.0
    temperature: float = 0.5


EXPLORE_UPDATES = ("burst", "steady")  # train.explore_updates


@dataclass
class TrainConfig:
    steps: int = 1_000_000  # env steps per seed
    action_repeat: int = 2
    episode_length: int = 500  # agent steps per episode (1000 env steps)
    num_envs: int = 1  # envs per seed
    collect_steps: Optional[int] = None  # agent steps per round over all envs of a seed; None: num_envs
    k_update: Optional[int] = None  # updates per round (K_UPDATE); None: collect_steps (1 per agent step)
    expl_until: Optional[int] = None  # env steps of uniform random actions; None: TD-MPC2's seed_steps
    # How updates run while actions are random: "burst" (TD-MPC2's: none until EXPL_UNTIL, then seed_updates at
    # once, then K_UPDATE per round) or "steady" (the research log's loop: K_UPDATE per round from update_warmup
    # on, exploring or not; no burst)
    explore_updates: str = "burst"
    seed_updates: Optional[int] = None  # burst only: updates at once when seeding ends; None: the rounds' rate
    update_warmup: Optional[int] = None  # steady only: env steps collected before the first update; None: 1 episode
    buffer_capacity: int = 1_000_000  # transitions per seed
    eval_freq: int = 100_000  # env steps
    eval_episodes: int = 10
    log_freq: int = 5_000  # env steps between train.csv rows
    checkpoint_freq: int = 50_000  # env steps; rounded up to the next episode end
    num_workers: Optional[int] = None  # env worker processes; None: one per CPU core, 0: in-process
    video_at_eval: bool = False  # a K-labelled MPPI video per seed at every evaluation, in <run>/videos/
    # A round's updates run while the envs step its last agent step (they then sample the buffer without that
    # step's rows, as TD-MPC2's, which stores an episode at its end, never sees the current one). Faster where
    # updates and env stepping can overlap (a GPU); deterministic, but not bit-equal to the default order.
    overlap_updates: bool = False


@dataclass
class StreamsConfig:
    """The random streams of a run, each settable on its own so a phase can vary one and hold the others
    (research log 9.3: initialisation, exploration and planner noise). None: the run's seed (the default: one
    seed drives all three, as before these keys existed); an int: that seed for every run of the phase.
    init: network initialisation and the update's randomness (batch sampling, dropout, target heads).
    explore: uniform exploration actions, training episodes' resets, executed-action noise, multi-task draws;
      a basin restart reseeds this stream only (seed + restart_seed_offset * attempt).
    planner: the planner's sampling noise and the policy prior's samples while acting in training."""

    init: Optional[int] = None
    explore: Optional[int] = None
    planner: Optional[int] = None


@dataclass
class GlassConfig:
    """Glass (research log section 2; tdmpc_glass/glass.py): every `glass.*` key, declared here once. The jitted
    loss closes over these same fields (`glass.GlassLossConfig` extends this class by the two values the task
    decides). Every variant is a switch, all off by default; `validate` holds the allowed values.

    graph_grad: where the SE term's gradients flow: "full" (A -> c -> mu and the latents), "prototypes" (A is built
        from stop_gradient(z): reaches mu, not the encoder), "none" (A stop-gradient: SE trains S only).
    se_objective: "h2" (minimise H2) or "neg_resistance" (minimise -R = H2 - H1: the same gradient for S, no reward
        for lowering H1 by collapsing visits onto few prototypes; trap 2).
    balance: "kl" (prototype-balance KL on the mean assignment), "sinkhorn" (swapped prediction between z_t and
        z_{t+1} with Sinkhorn equipartition targets replaces the prototype-balance term) or "none";
        cluster_balance toggles the cluster-balance term.
    window: W of the window-consistency loss (10.2) and of the window-MI diagnostic (clamped to the slice length
        for the diagnostic). window_form "mi": windows of W frames t..t+W-1, loss H(mean c) - mean H(c) (the mutual
        information between time index and anchor); "average": the log's formula read literally, W+1 frames
        t..t+W and both sums divided by W: H(1/W sum c) - 1/W sum H(c) = (W+1)/W MI(W+1 frames) - (W+1)/W
        log((W+1)/W), the same gradients as "mi" over W+1 frames scaled by (W+1)/W.
    slice_len: frames per slice the Glass terms see. None: horizon + 1 (the TD batch's slices themselves, today's
        path), or the window's frames when lambda_window > 0 needs more; then the update samples a second batch of
        longer slices (inside episodes) for the Glass terms only, so W is independent of the TD horizon.
    contrast_sim / contrast_label / contrast_pairs (10.3): "cosine" of the assignment vectors or the log's "dot"
        product c.c'; "pattern" = toe + 2 heel contact classes or the log's "binary" foot-on-ground (any touch
        sensor in contact); "label" = positives are same-label frames anywhere in the batch, negatives the
        different-label ones, or the log's "episode" = positives are same-label frames of the same slice
        (consecutive frames of one episode), negatives are frames with another label or from another episode.
    active_rule: what makes a prototype (cluster) active in the active_prototypes (active_clusters) diagnostic,
        which basin restart (10.6) reads: "argmax" = it is the nearest anchor (K label) of more than
        active_threshold of the batch's latents (default half a share, 1/(2N)); "soft" = its mean soft assignment
        exceeds the threshold (with tau_p = 0.2 near-uniform until the anchors spread: counts all N at init).
    """

    CHOICES: ClassVar[dict] = {"graph": ("rownorm_sym", "counts_sym", "flow"),
                               "graph_grad": ("full", "prototypes", "none"),
                               "se_objective": ("h2", "neg_resistance"), "balance": ("kl", "sinkhorn", "none"),
                               "window_form": ("mi", "average"), "contrast_sim": ("cosine", "dot"),
                               "contrast_label": ("pattern", "binary"), "contrast_pairs": ("label", "episode"),
                               "active_rule": ("argmax", "soft")}

    enabled: bool = False
    num_prototypes: int = 16  # N anchors
    num_clusters: int = 8  # K
    num_super: int = 0  # K_super > 0: hierarchical Glass, three-level encoding-tree entropy (phase y)
    tau_p: float = 0.2  # temperature of the soft assignments c = softmax(cos(z, mu) / tau_p)
    graph: str = "rownorm_sym"  # rownorm_sym (the log's) | counts_sym | flow (glass.transition_graph)
    graph_eps: float = 1e-6  # uniform mass added to every transition count
    self_loops: bool = True  # keep self-transitions on the graph's diagonal
    graph_grad: str = "full"  # where SE gradients flow: full | prototypes | none (A stop-gradient)
    se_objective: str = "h2"  # h2 | neg_resistance (-R = H2 - H1)
    lambda_se: float = 1e-4
    lambda_bal: float = 1e-3
    balance: str = "kl"  # kl balance losses | sinkhorn (SwAV-style equipartition targets) | none
    cluster_balance: bool = True
    lambda_temp: float = 1e-4
    lambda_window: float = 0.0  # window-consistency loss (10.2)
    window: int = 4  # W: frames per window (window_form mi) or W+1 frames (average)
    window_form: str = "mi"  # mi (mutual information over W frames) | average (the log's formula, W+1 frames)
    slice_len: Optional[int] = None  # frames per Glass slice; None: horizon + 1, longer if the window needs it
    lambda_row_entropy: float = 0.0  # pushes rows of S to one-hot (trap 3)
    active_threshold: Optional[float] = None  # usage above which a prototype / cluster is active; None: half a share
    active_rule: str = "argmax"  # argmax (share of latents whose nearest anchor it is) | soft (mean soft usage)
    moe_q: bool = False  # K Q-offsets in two-hot space routed by cluster membership (10.5)
    kmeans_init: bool = False  # spherical k-means of buffer latents -> prototypes when seeding ends (10.7)
    off_after: Optional[int] = None  # env step after which the Glass loss is off (phase o)
    lambda_contrast: float = 0.0  # phase-contrastive NT-Xent on assignments, positives by contact state (10.3)
    contrast_tau: float = 0.1
    contrast_sim: str = "cosine"  # cosine | dot (the log's c.c')
    contrast_label: str = "pattern"  # pattern (toe + 2 heel, 4 classes) | binary (foot on ground, the log's)
    contrast_pairs: str = "label"  # label (positives anywhere in the batch) | episode (the log's negatives)
    cluster_input: bool = False  # soft cluster distribution as extra input to pi and Q (phase v)
    # phase v: the value loss's gradients reach the encoder, mu and S through that input (False: stop-gradient,
    # the partition is trained by the Glass loss alone)
    cluster_input_grad: bool = False
    intrinsic_coef: float = 0.0  # cluster-entropy intrinsic reward (P, Pa); never in evaluation returns
    intrinsic_decay_until: Optional[int] = None  # env step where the coefficient has decayed linearly to 0 (Pa)

    def validate(self) -> None:
        """Allowed values of each key on its own, checked whether Glass is on or not (a disabled Glass is inert,
        but its values must still be valid). Raises ValueError('glass.<key>: why'). Cross-section checks (window
        vs horizon, touch sensors of the task) are `config.check`'s."""
        for key, allowed in self.CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"glass.{key}: {getattr(self, key)!r} is not one of {', '.join(allowed)}")
        for key, least, what in (("num_prototypes", 2, "N >= 2 prototypes"), ("num_clusters", 1, "K >= 1 clusters"),
                                 ("num_super", 0, "K_super >= 0 super-clusters (0: two levels)")):
            if getattr(self, key) < least:
                raise ValueError(f"glass.{key}: need {what}, got {getattr(self, key)}")
        for key in ("tau_p", "contrast_tau"):
            if getattr(self, key) <= 0:
                raise ValueError(f"glass.{key}: must be > 0, got {getattr(self, key)}")
        for key in ("lambda_se", "lambda_bal", "lambda_temp", "lambda_window", "lambda_row_entropy", "lambda_contrast",
                    "intrinsic_coef", "graph_eps"):
            if getattr(self, key) < 0:
                raise ValueError(f"glass.{key}: must be >= 0, got {getattr(self, key)}")
        if self.window < 1:
            raise ValueError(f"glass.window: must be >= 1, got {self.window}")
        if self.slice_len is not None and self.slice_len < 2:
            raise ValueError(f"glass.slice_len: must be null or >= 2 frames, got {self.slice_len}")
        if self.intrinsic_decay_until is not None and self.intrinsic_decay_until < 1:
            raise ValueError(f"glass.intrinsic_decay_until: must be null or >= 1 env step, "
                             f"got {self.intrinsic_decay_until}")

    def window_frames(self) -> int:
        """Frames one window of the window-consistency loss spans: W ("mi") or W + 1 ("average")."""
        return self.window + (1 if self.window_form == "average" else 0)

    def slice_frames(self, horizon: int) -> int:
        """Frames per slice of the Glass terms: slice_len, or horizon + 1 grown to the window's frames when the
        window loss is on. Equal to horizon + 1: Glass reads the TD batch itself (no second batch)."""
        if self.slice_len is not None:
            return self.slice_len
        need = self.window_frames() if self.lambda_window > 0 else 0
        return max(horizon + 1, need)


@dataclass
class ScheduleConfig:
    """Training schedules of the phase ledger; all off by default (vanilla TD-MPC2). Steps are env steps."""

    # executed-action noise (1c, d_v1): Gaussian std added to the acted action (then clipped to [-1, 1]),
    # linear from start to end over the first action_noise_anneal_env_steps env steps (0: constant start)
    action_noise_start: float = 0.0
    action_noise_end: float = 0.0
    action_noise_anneal_env_steps: int = 0
    # latent action smoothing (f, h, i, j, k, l_v1, r2_gait): coef * mean ||pi(z_{t+1}) - pi(z_t)||^2 along the
    # latent rollout, added to the policy loss from env step action_smooth_from on (j: the curriculum)
    action_smooth_coef: float = 0.0
    action_smooth_from: int = 0
    # Q-reset (e, done right): re-initialise the Q heads, their targets and only their optimiser state (with this
    # set, the Q heads get their own Adam state and step count, which a reset restarts: schedules.split_q_adam)
    q_reset_at: List[int] = field(default_factory=list)
    # parameter-noise basin perturbation (m, n): Gaussian noise, std = perturb_scale * RMS of each tensor
    perturb_at: List[int] = field(default_factory=list)
    perturb_scale: float = 0.0
    perturb_target: str = "all"  # all | world | policy
    # basin detection and restart (10.6; needs Glass): after the round reaching restart_check_at, a seed whose
    # active_prototypes (latest train.csv row) are below restart_min_active leaves its batch and, when the batch
    # ends, restarts from scratch (step 0, empty buffer, fresh networks from its init stream) with exploration seed
    # seed + restart_seed_offset * attempt, at most restart_max times; earlier attempts move to seed<k>/restarts/
    restart_check_at: Optional[int] = None
    restart_min_active: int = 4
    restart_max: int = 3
    restart_seed_offset: int = 100


@dataclass
class ShapingConfig:
    """Reward shaping (benchmark-unfair: t, q_knee, r1_soft, r2_gait, rstack*). Shaped rewards train the agent;
    evaluation returns are always the task's own. All zero by default."""

    knee_penalty: float = 0.0
    soft_stand_bonus: float = 0.0
    soft_stand_decay_until: Optional[int] = None  # env step where the bonus has decayed linearly to 0
    gait_fall_penalty: float = 0.0


@dataclass
class MultitaskConfig:
    """Multi-task training (10.8): envs of one seed spread over tasks sharing one model and Glass; a task id
    joins the observation; tasks are sampled per episode by p <- softmax(log p + eta (u* - u))."""

    tasks: List[str] = field(default_factory=list)  # empty: single-task (`task`)
    target_usage: List[float] = field(default_factory=list)  # u*; empty: uniform
    eta: float = 0.0  # 0: fixed sampling at target_usage
    usage_rate: float = 0.1  # u: exponential moving average of each episode's task shares, at this rate
    # task-specific heads (10.8's mitigation): the reward and every Q head get one output layer per task, picked
    # by the task one-hot the observation carries; encoder, dynamics, policy prior and Glass stay shared
    task_heads: bool = False


@dataclass
class TrackingConfig:
    """Exports of a run's files to TensorBoard and Weights & Biases while it trains (tdmpc_glass/tracking/).
    The run's CSV/JSONL files stay the record; exports follow them and never stop or slow training. These keys
    change no result, so they may differ when a run is resumed."""

    WANDB_MODES: ClassVar[tuple] = ("off", "offline", "online")

    tensorboard: bool = False  # event files in <run>/tensorboard/ (tensorboardX)
    wandb: str = "off"  # off | offline (files in <run>/wandb/, `wandb sync` later) | online
    project: str = "tdmpc-glass"  # W&B project
    entity: Optional[str] = None  # W&B entity (team or user); None: the API key's default
    group: Optional[str] = None  # W&B group; None: <phase>/<variant>


@dataclass
class RuntimeConfig:
    """How the process runs, not what it computes; recorded per process life in provenance.jsonl."""

    # XLA_FLAGS --xla_gpu_deterministic_ops=true (set before JAX starts its backend): GPU reductions in a fixed
    # order, so a run repeats bit for bit on the same device and versions (slower on a GPU; no effect on a CPU)
    deterministic_ops: bool = False


@dataclass
class Config:
    task: str = "hopper-hop"
    horizon: int = 3
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    glass: GlassConfig = field(default_factory=GlassConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    shaping: ShapingConfig = field(default_factory=ShapingConfig)
    multitask: MultitaskConfig = field(default_factory=MultitaskConfig)
    streams: StreamsConfig = field(default_factory=StreamsConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


@dataclass(frozen=True)
class Derived:
    """Values that follow from a Config; computed once, never stored in YAML."""

    enc_dim: int
    mlp_dim: int
    latent_dim: int
    num_enc_layers: int
    num_q: int
    discount: float
    collect_steps: int  # agent steps per round per seed (over its envs)
    steps_per_env_per_round: int
    k_update: int
    expl_until_env_steps: int
    seed_updates: int  # updates of the round ending the random phase: the burst, or K_UPDATE (steady)
    update_warmup_env_steps: int  # env steps before the first update (steady); expl_until_env_steps (burst)


def derive(cfg: Config) -> Derived:
    m, t = cfg.model, cfg.train
    dims = MODEL_SIZES[m.size]
    enc_dim, mlp_dim, latent_dim, num_enc_layers, num_q = (
        v if v is not None else d
        for v, d in zip((m.enc_dim, m.mlp_dim, m.latent_dim, m.num_enc_layers, m.num_q), dims)
    )
    frac = t.episode_length / cfg.optim.discount_denom
    discount = min(max((frac - 1) / frac, cfg.optim.discount_min), cfg.optim.discount_max)
    collect = t.collect_steps if t.collect_steps is not None else t.num_envs
    k_update = t.k_update if t.k_update is not None else collect
    seed_agent_steps = max(1000, 5 * t.episode_length)
    expl = t.expl_until if t.expl_until is not None else seed_agent_steps * t.action_repeat
    if t.explore_updates == "steady":  # the log's loop: K_UPDATE per round from the warm-up on, no burst
        seed_updates = k_update
        warmup = t.update_warmup if t.update_warmup is not None else t.episode_length * t.action_repeat
    else:
        seed_updates = (
            t.seed_updates if t.seed_updates is not None
            else round(expl / t.action_repeat * k_update / collect)
        )
        warmup = expl
    return Derived(
        enc_dim=enc_dim, mlp_dim=mlp_dim, latent_dim=latent_dim, num_enc_layers=num_enc_layers, num_q=num_q,
        discount=discount, collect_steps=collect, steps_per_env_per_round=collect // t.num_envs,
        k_update=k_update, expl_until_env_steps=expl, seed_updates=seed_updates, update_warmup_env_steps=warmup,
    )


def check(cfg: Config) -> None:
    """Cross-field checks the type system cannot express. Raises ValueError('key: why')."""
    m, t, p = cfg.model, cfg.train, cfg.planner
    if m.size not in MODEL_SIZES:
        raise ValueError(f"model.size: {m.size} is not one of {sorted(MODEL_SIZES)}")
    if m.num_bins < 2:
        raise ValueError(f"model.num_bins: need at least 2 bins, got {m.num_bins}")
    if m.vmin >= m.vmax:
        raise ValueError(f"model.vmin: must be below model.vmax ({m.vmin} >= {m.vmax})")
    for name in ("init", "explore", "planner"):
        value = getattr(cfg.streams, name)
        if value is not None and value < 0:
            raise ValueError(f"streams.{name}: a seed must be >= 0, got {value}")
    # the counts derive() divides by come first, so a zero is named instead of raising ZeroDivisionError
    for key in ("steps", "action_repeat", "episode_length", "num_envs", "buffer_capacity", "eval_freq",
                "eval_episodes", "log_freq", "checkpoint_freq"):
        if getattr(t, key) < 1:
            raise ValueError(f"train.{key}: must be >= 1, got {getattr(t, key)}")
    if t.collect_steps is not None and t.collect_steps < 1:
        raise ValueError(f"train.collect_steps: must be >= 1, got {t.collect_steps}")
    if t.explore_updates not in EXPLORE_UPDATES:
        raise ValueError(f"train.explore_updates: {t.explore_updates!r} is not one of {', '.join(EXPLORE_UPDATES)}")
    if t.explore_updates == "steady" and t.seed_updates is not None:
        raise ValueError("train.seed_updates: a burst size, set only with train.explore_updates: burst")
    if t.update_warmup is not None and (t.explore_updates != "steady" or t.update_warmup < 0):
        raise ValueError(f"train.update_warmup: env steps >= 0, set only with train.explore_updates: steady "
                         f"(got {t.update_warmup} with {t.explore_updates})")
    if cfg.optim.discount_denom <= 0:
        raise ValueError(f"optim.discount_denom: must be > 0, got {cfg.optim.discount_denom:g}")
    d = derive(cfg)
    if d.latent_dim % m.simnorm_dim:
        raise ValueError(f"model.latent_dim: {d.latent_dim} is not a multiple of model.simnorm_dim={m.simnorm_dim}")
    if d.num_q < 2:
        raise ValueError(f"model.num_q: need at least 2 Q heads, got {d.num_q}")
    if cfg.horizon < 1:
        raise ValueError(f"horizon: must be >= 1, got {cfg.horizon}")
    if d.collect_steps < 1 or d.collect_steps % t.num_envs:
        raise ValueError(f"train.collect_steps: {d.collect_steps} is not a positive multiple of "
                         f"train.num_envs={t.num_envs}")
    if t.episode_length % d.steps_per_env_per_round:
        raise ValueError(f"train.collect_steps: {d.steps_per_env_per_round} steps per env per round must divide "
                         f"train.episode_length={t.episode_length} so rounds end on episode boundaries")
    _check_glass(cfg)
    _check_schedules(cfg)
    if d.k_update < 0:
        raise ValueError(f"train.k_update: must be >= 0, got {d.k_update}")
    if t.buffer_capacity < t.num_envs * (t.episode_length + 1):
        raise ValueError(f"train.buffer_capacity: {t.buffer_capacity} cannot hold one episode per env")
    if not 0 < p.num_elites <= p.num_samples:
        raise ValueError(f"planner.num_elites: {p.num_elites} must be in [1, planner.num_samples={p.num_samples}]")
    if not 0 <= p.num_pi_trajs < p.num_samples:
        raise ValueError(f"planner.num_pi_trajs: {p.num_pi_trajs} must be in [0, planner.num_samples)")
    if p.iterations < 1:
        raise ValueError(f"planner.iterations: must be >= 1, got {p.iterations}")
    if not 0 < p.min_std <= p.max_std:
        raise ValueError(f"planner.min_std: need 0 < min_std <= max_std, got {p.min_std}, {p.max_std}")
    if cfg.optim.batch_size < 1:
        raise ValueError(f"optim.batch_size: must be >= 1, got {cfg.optim.batch_size}")
    _check_tracking(cfg)


def _check_tracking(cfg: Config) -> None:
    """tracking.wandb is one of off | offline | online (YAML reads a bare `off` as false: that means off)."""
    tr = cfg.tracking
    if str(tr.wandb).lower() == "false":
        tr.wandb = "off"
    if tr.wandb not in TrackingConfig.WANDB_MODES:
        raise ValueError(f"tracking.wandb: {tr.wandb!r} is not one of {', '.join(TrackingConfig.WANDB_MODES)}")
    if not tr.project:
        raise ValueError("tracking.project: must not be empty")


def _check_glass(cfg: Config) -> None:
    """glass.*: each key's allowed values (`GlassConfig.validate`), windows inside a sampled slice, touch sensors
    for the phase-contrastive loss (10.3). With glass.enabled false every glass.* setting is inert (the model is
    vanilla), so only the keys' own ranges are checked then."""
    g = cfg.glass
    g.validate()
    frames = g.slice_frames(cfg.horizon)
    if g.lambda_window > 0 and g.window_frames() > frames:
        raise ValueError(f"glass.window: {g.window} ({g.window_form}: {g.window_frames()} frames) does not fit in "
                         f"glass.slice_len = {frames} frames (windows lie inside one Glass slice)")
    if frames > cfg.train.episode_length:
        raise ValueError(f"glass.slice_len: {frames} frames do not fit in one episode "
                         f"(train.episode_length = {cfg.train.episode_length})")
    if g.enabled and g.lambda_contrast > 0:
        from .envs.suites import touch_indices, validate_task  # loads the suite: only when the key is used

        tasks = [cfg.task] + [t for t in cfg.multitask.tasks if t != cfg.task]
        indices = {}
        for task in tasks:
            try:
                validate_task(task)
            except ValueError as e:
                raise ValueError(f"task: {e}") from None
            indices[task] = touch_indices(task)
            if not indices[task]:
                raise ValueError(f"glass.lambda_contrast: task {task!r} has no touch sensors to label contact "
                                 "states (the phase-contrastive loss needs them; e.g. hopper-hop has toe and heel)")
        if len(set(indices.values())) > 1:
            raise ValueError(f"glass.lambda_contrast: the tasks' touch readings sit at different observation "
                             f"indices {indices}")


def _check_schedules(cfg: Config) -> None:
    """schedule.*, shaping.* and multitask.* (see tdmpc_glass/schedules.py, envs/shaping.py, multitask.py)."""
    s, sh, mt = cfg.schedule, cfg.shaping, cfg.multitask
    for key in ("action_noise_start", "action_noise_end", "action_noise_anneal_env_steps", "action_smooth_coef",
                "action_smooth_from", "perturb_scale", "restart_max"):
        if getattr(s, key) < 0:
            raise ValueError(f"schedule.{key}: must be >= 0, got {getattr(s, key)}")
    for key in ("q_reset_at", "perturb_at"):
        if any(step < 0 for step in getattr(s, key)):
            raise ValueError(f"schedule.{key}: env steps must be >= 0, got {getattr(s, key)}")
    if s.perturb_at and s.perturb_scale <= 0:
        raise ValueError("schedule.perturb_scale: must be > 0 when schedule.perturb_at is set")
    if s.perturb_target not in ("all", "world", "policy"):
        raise ValueError(f"schedule.perturb_target: {s.perturb_target!r} is not one of all, world, policy")
    if s.restart_check_at is not None:
        if s.restart_check_at < 1:
            raise ValueError(f"schedule.restart_check_at: must be null or >= 1 env step, got {s.restart_check_at}")
        if not cfg.glass.enabled:
            raise ValueError("schedule.restart_check_at: basin restart reads Glass's active_prototypes; "
                             "it needs glass.enabled: true")
        if s.restart_seed_offset < 1:
            raise ValueError(f"schedule.restart_seed_offset: must be >= 1 (a restart needs a new seed), "
                             f"got {s.restart_seed_offset}")
    for key in ("knee_penalty", "soft_stand_bonus", "gait_fall_penalty"):
        if getattr(sh, key) < 0:
            raise ValueError(f"shaping.{key}: must be >= 0 (a magnitude; the sign is the term's), "
                             f"got {getattr(sh, key)}")
    if sh.soft_stand_decay_until is not None and sh.soft_stand_decay_until < 1:
        raise ValueError(f"shaping.soft_stand_decay_until: must be null or >= 1 env step, "
                         f"got {sh.soft_stand_decay_until}")
    tasks = list(mt.tasks) or [cfg.task]
    if sh.knee_penalty or sh.soft_stand_bonus or sh.gait_fall_penalty:
        other = [task for task in tasks if task.split("-", 1)[0] != "hopper"]  # dm_control's (a prefix: another)
        if other:
            key = next(k for k in ("knee_penalty", "soft_stand_bonus", "gait_fall_penalty") if getattr(sh, k))
            raise ValueError(f"shaping.{key}: the shaping terms are defined for the hopper only (dm_control's "
                             f"physics), not for task {other[0]!r}")
    if mt.tasks:
        if len(set(mt.tasks)) != len(mt.tasks) or len(mt.tasks) < 2:
            raise ValueError(f"multitask.tasks: need at least two distinct tasks, got {mt.tasks}")
        if cfg.task not in mt.tasks:
            raise ValueError(f"task: {cfg.task!r} (the evaluation task) must be one of multitask.tasks {mt.tasks}")
        if mt.target_usage and (len(mt.target_usage) != len(mt.tasks) or min(mt.target_usage) < 0
                                or sum(mt.target_usage) <= 0):
            raise ValueError(f"multitask.target_usage: need {len(mt.tasks)} non-negative shares with a positive "
                             f"sum (one per task), got {mt.target_usage}")
        if mt.eta < 0:
            raise ValueError(f"multitask.eta: must be >= 0, got {mt.eta}")
        if not 0 < mt.usage_rate <= 1:
            raise ValueError(f"multitask.usage_rate: must be in (0, 1], got {mt.usage_rate}")
        if mt.task_heads and cfg.glass.enabled and cfg.glass.kmeans_init:
            raise ValueError("multitask.task_heads: not with glass.kmeans_init (its latents would carry the task id)")
        from .envs.suites import task_spec, validate_task  # loads the suite: only when the key is used

        specs = {}
        for task in mt.tasks:
            try:
                validate_task(task)
            except ValueError as e:
                raise ValueError(f"multitask.tasks: {e}") from None
            specs[task] = task_spec(task)
        if len(set(specs.values())) > 1:
            raise ValueError(f"multitask.tasks: the tasks need the same (obs_dim, act_dim), got {specs}")
    elif mt.task_heads:
        raise ValueError("multitask.task_heads: set only with multitask.tasks (per-task heads need tasks)")
    elif mt.target_usage or mt.eta:
        raise ValueError("multitask.target_usage: set only with multitask.tasks (empty: single-task)"
                         if mt.target_usage else "multitask.eta: set only with multitask.tasks")


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


# ---- loading: layers of dotted overrides, type-checked by OmegaConf ------------------------------------------

class ConfigError(ValueError):
    """A one-line message naming the source (file, 'command line', ...), the key and what is wrong."""


def _fields_of(schema) -> list[tuple[str, object, object]]:
    """[(name, annotation, nested dataclass or None)] of a dataclass; annotations resolved from strings."""
    hints = typing.get_type_hints(schema)
    out = []
    for f in dataclasses.fields(schema):
        kind = hints[f.name]
        out.append((f.name, kind, kind if dataclasses.is_dataclass(kind) else None))
    return out


def leaf_types(schema=Config, prefix: str = "") -> dict[str, object]:
    """Every settable dotted key of the schema -> its annotation, e.g. 'train.steps' -> int."""
    leaves = {}
    for name, kind, nested in _fields_of(schema):
        if nested is not None:
            leaves.update(leaf_types(nested, f"{prefix}{name}."))
        else:
            leaves[prefix + name] = kind
    return leaves


def dotted_keys(schema=Config) -> list[str]:
    return list(leaf_types(schema))


def section_keys(schema=Config, prefix: str = "") -> list[str]:
    """The nested groups of the schema: ['model', 'optim', ...]."""
    out = []
    for name, _, nested in _fields_of(schema):
        if nested is not None:
            out += [prefix + name] + section_keys(nested, f"{prefix}{name}.")
    return out


def type_name(kind) -> str:
    """int -> 'int'; Optional[int] -> 'int or null'; List[int] -> 'list of int'."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) is list:
        return f"list of {type_name(args[0])}"
    if args:
        names = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(names + (["null"] if type(None) in args else []))
    return getattr(kind, "__name__", str(kind))


def nearest_key(key: str) -> str | None:
    keys = dotted_keys()
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    if close:
        return close[0]
    # a right leaf under a wrong or missing section: 'num_samples' -> 'planner.num_samples'
    leaf = key.rsplit(".", 1)[-1]
    by_leaf = {k.rsplit(".", 1)[-1]: k for k in keys}
    close = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.75)
    return by_leaf[close[0]] if close else None


def unknown_key_message(source: str, key: str) -> str:
    if key in section_keys():
        example = next(k for k in dotted_keys() if k.startswith(key + "."))
        return f"{source}: '{key}' is a section, not a value; set its keys, e.g. '{example}'"
    hint = nearest_key(key)
    return f"{source}: unknown key '{key}'" + (f" (did you mean '{hint}'?)" if hint else "")


def build_config(layers: list[tuple[str, dict]]) -> Config:
    """Apply layers of overrides in order over the schema defaults; type-check, cross-check, return a Config.

    layers: [(source, mapping)], source names where the mapping came from ('phases/z.yaml', 'command line');
    a mapping may use dotted keys ('planner.num_samples': 512) or nested dicts. Raises ConfigError.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    conf = OmegaConf.structured(Config)
    types = leaf_types()
    for source, mapping in layers:
        if mapping is None:
            continue
        if not isinstance(mapping, dict):
            raise ConfigError(f"{source}: overrides must be a mapping of dotted keys to values")
        for key, value in flatten(mapping).items():
            key = str(key)
            if key not in types:
                raise ConfigError(unknown_key_message(source, key))
            try:
                OmegaConf.update(conf, key, value, merge=False)
            except OmegaConfBaseException:  # OmegaConf's own text is multi-line; say it in the schema's words
                raise ConfigError(f"{source}: {key}: expected {type_name(types[key])}, got {value!r}") from None
    cfg = OmegaConf.to_object(conf)
    try:
        check(cfg)
    except ValueError as e:
        raise ConfigError(f"resolved config: {e}") from None
    return cfg


def parse_override(text: str, source: str = "command line") -> tuple[str, object]:
    """'train.steps=20000' -> ('train.steps', 20000). The value is read as YAML: numbers, true/false, null.

    Only the form is checked here; whether the key exists and the type fits is build_config's job.
    """
    import yaml

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{source}: override {text!r} is not of the form key=value (e.g. train.steps=20000)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        value = raw  # not YAML (e.g. 'a: b: c'): keep the text; a str key takes it, others report the type
    return key, value


def config_from_dict(tree: dict, source: str = "config") -> Config:
    """A nested dict (as written by config_to_yaml) back to a checked Config. Raises ConfigError."""
    return build_config([(source, tree)])


def config_to_yaml(cfg: Config) -> str:
    import yaml

    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
