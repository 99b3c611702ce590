"""Roll a trained agent out in dm_control while recording what a K-labelled video needs.

    load_run(run_dir, checkpoint)   a run directory + a checkpoint choice (latest | best | <env_step>)
                                    -> LoadedRun (config, one seed's AgentState, which checkpoint and why)
    Roller(cfg, obs_dim, act_dim)   one jitted decision for S seeds at once (MPPI or the policy prior, eval
                                    mode), returning the actions and each observation's latent, K label and
                                    nearest anchor; .run(states, episode_seed, policy, max_steps) -> [Episode]
    Episode                         per agent step: obs, latent z, K, n*, action, reward, touch, contact,
                                    standing, height, speed, (hopper) knee and torso height, torso lean and
                                    posture; and the physics state after every control step
                                    (what the renderer draws); .rows() for the CSV, .summary() for the JSON

Rows are aligned on decisions: row t holds the observation o_t the agent acted on, its latent z_t =
encode(o_t), K_t = glass.k_label(z_t, mu, S), n*_t = glass.nearest_anchor(z_t, mu), the touch sensors,
height and speed at that state, the action a_t and the reward of that action (summed over the action
repeat); `return` is the sum of rewards up to and including row t.

Definitions used in the summary (stated here, on the figure and in the README):
- contact: any touch sensor above glass.CONTACT_THRESHOLD (1 N); tasks without touch sensors have none;
- a hop cycle is one flight -> contact transition (a landing) between consecutive rows;
- standing (hopper, walker): the task's own height measure (hopper: torso minus foot height, walker: torso
  height) at or above the task's `_STAND_HEIGHT` (hopper 0.6 m, walker 1.2 m), the threshold its reward uses;
- a switch is a row whose K differs from the previous row's; the longest stable stretch is the longest run
  of consecutive rows with one K, in agent steps.
Hopper gait (section "hopper gait" below has the numbers and where they come from; None for other tasks):
- posture of a row: fallen (torso leaning >= 45 deg), knee (upright, knee below 0.2 m), foot (upright, knee
  up, foot touching), flight (upright, knee up, no touch); the leading flight rows are the spawn drop;
- hop frames: in each stretch of upright knee-up rows with >= 2 landings (flight -> foot), its first landing
  to its last; K stability during hops counts switches between consecutive hop frames only, so falls,
  getting up and kneeling never count; stable = <= 2 switches per hop cycle and <= 2 clusters during hops;
- gait: the plurality, after the drop, of hop frames (foot-hop), knee rows (knee-walk), other upright rows
  (stand) and fallen rows (fallen); basin: stable-hop / unstable-hop (hop without K: hop) / knee-walk /
  stand / fallen-stuck.

This module never renders (no OpenGL, no matplotlib): the physics states go to tdmpc_glass.video.gl, which
renders them in a child process.
"""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from .. import agent, checkpoint
from .. import glass as glass_lib
from ..acting import jit_act
from ..config import Config, ConfigError, config_from_dict, derive, to_dict
from ..envs.shaping import COS_FALL, KNEE_HEIGHT
from ..planner import PlanSettings
from ..runlayout import CHECKPOINTS, CONFIG, EVAL, best_mppi, checkpoint_step, extendable, flatten

POLICIES = ("mppi", "pi")
TARGET_FPS = 50.0  # frames per second of real time the videos aim for


class RunError(ValueError):
    """A one-line, user-facing problem with a run directory or checkpoint choice."""


# ----------------------------------------------------------------------------------------------- loading a run
@dataclasses.dataclass
class LoadedRun:
    run_dir: Path
    label: str  # <phase>/<variant>/seed<k>, or the last path parts
    cfg: Config
    seed: int
    obs_dim: int
    act_dim: int
    state: agent.AgentState  # one seed (no leading seed axis)
    checkpoint: Path
    env_step: int  # of the checkpoint
    note: str  # which checkpoint was used and why (printed and written to the summary)


def run_label(run_dir: Path) -> str:
    """<phase>/<variant>/seed<k>: the last three parts of the run directory's resolved path."""
    parts = Path(run_dir).resolve().parts
    return "/".join(parts[-3:])


def read_run_config(run_dir: Path) -> tuple[Config, dict]:
    """(the validated Config, the whole record) of a run directory's config file. Raises RunError."""
    import yaml

    run_dir = Path(run_dir)
    path = run_dir / CONFIG
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    if not path.is_file():
        raise RunError(f"{run_dir}: no {CONFIG} (not a run directory of the launcher)")
    try:
        record = yaml.safe_load(path.read_text())
        tree = record["config"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise RunError(f"{path}: unreadable or not a run config ({type(e).__name__})") from None
    try:
        cfg = config_from_dict(tree, source=str(path))
    except ConfigError as e:
        raise RunError(str(e)) from None
    return cfg, record


def _steps_of(paths: list[Path]) -> list[int]:
    return [checkpoint_step(p) for p in paths]


def best_eval_step(run_dir: Path) -> Optional[tuple[int, float]]:
    """(env_step, mppi_return) of the best MPPI row of the run's eval CSV (the earliest on ties), or None."""
    path = Path(run_dir) / EVAL
    if not path.is_file():
        return None
    scored = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                scored.append((int(float(row["env_step"])), float(row["mppi_return"])))
            except (KeyError, TypeError, ValueError):
                continue
    best = best_mppi([score for _, score in scored])
    return None if best is None else (scored[best[0]][0], best[1])


def select_checkpoint(run_dir: Path, which: str | int = "latest") -> tuple[Path, int, str]:
    """(path, env_step, note) of the checkpoint `which` names: latest, best or an env step. Raises RunError.

    Checkpoints keep only the last two, so `best` uses the kept checkpoint at or after the best MPPI eval row
    of eval.csv that is closest to it (else the closest before it) and says so in the note.
    """
    ckpt_dir = Path(run_dir) / CHECKPOINTS
    paths = checkpoint.list_checkpoints(ckpt_dir)
    if not paths:
        raise RunError(f"{run_dir}: no checkpoints in {ckpt_dir} (train the run first)")
    steps = _steps_of(paths)
    available = ", ".join(str(s) for s in steps)
    which = str(which).strip().lower()
    if which == "latest":
        return paths[-1], steps[-1], f"latest checkpoint (env step {steps[-1]})"
    if which == "best":
        best = best_eval_step(run_dir)
        if best is None:
            raise RunError(f"{run_dir}: {EVAL} has no MPPI rows to find the best checkpoint; "
                           f"use latest or one of the kept env steps: {available}")
        at, score = best
        after = [i for i, s in enumerate(steps) if s >= at]
        i = after[0] if after else int(np.argmin([abs(s - at) for s in steps]))
        where = "at or after it" if after else "before it (none is kept at or after)"
        return paths[i], steps[i], (f"best MPPI eval {score:.1f} at env step {at}; using the kept checkpoint "
                                    f"closest {where}: env step {steps[i]} (kept: {available})")
    try:
        step = int(which)
    except ValueError:
        raise RunError(f"--checkpoint: expected latest, best or an env step, got {which!r}") from None
    if step not in steps:
        raise RunError(f"{run_dir}: no checkpoint at env step {step}; available: {available}")
    return paths[steps.index(step)], step, f"checkpoint at env step {step}"


def _fingerprint_differences(meta: dict, cfg: Config) -> list[str]:
    """Dotted keys present in both the checkpoint's config fingerprint and `cfg` whose values differ (keys added
    to the schema after the checkpoint was written are ignored; so are the keys a resume may change)."""
    try:
        old = flatten(json.loads(meta.get("fingerprint", "")))
    except (TypeError, ValueError):
        return []
    new = flatten(to_dict(cfg))
    return [k for k in old if k in new and not extendable(k) and old[k] != new[k]]


def load_run(run_dir: Path, which: str | int = "latest") -> LoadedRun:
    """Read the run's config, pick the checkpoint and restore one seed's AgentState from it. Raises RunError."""
    from ..envs.suites import suite_of, task_spec, validate_task

    run_dir = Path(run_dir)
    cfg, record = read_run_config(run_dir)
    if cfg.multitask.tasks:
        raise RunError(f"{run_dir}: multi-task runs ({', '.join(cfg.multitask.tasks)}) are not supported by the "
                       "video renderer yet")
    try:
        validate_task(cfg.task)
    except ValueError as e:
        raise RunError(f"{run_dir}: {e}") from None
    if suite_of(cfg.task) != "dmc":  # the rollout records and renders dm_control physics (bodies, cameras)
        raise RunError(f"{run_dir}: task {cfg.task!r}: videos are rendered from dm_control tasks only")
    path, env_step, note = select_checkpoint(run_dir, which)
    obs_dim, act_dim = task_spec(cfg.task)
    template = jax.eval_shape(lambda: agent.init_state(cfg, obs_dim, act_dim, 0))
    try:
        state, meta = checkpoint.load(path, template)
    except checkpoint.CheckpointError as e:
        raise RunError(f"{e} (config: {run_dir / CONFIG})") from None
    differ = _fingerprint_differences(meta, cfg)
    if differ:
        note += f"; warning: written with a different config ({', '.join(differ[:3])} differ from {CONFIG})"
    seed = record.get("seed", meta.get("seed"))
    return LoadedRun(run_dir=run_dir, label=run_label(run_dir), cfg=cfg, seed=seed, obs_dim=obs_dim,
                     act_dim=act_dim, state=state, checkpoint=path, env_step=env_step, note=note)


def stack_states(states: list) -> agent.AgentState:
    """Single-seed states -> one state with a leading seed axis (what Roller.run takes)."""
    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *states)


# ----------------------------------------------------------------------------------------------- hopper gait
# Heights and angles of dm_control's hopper (suite/hopper.xml) behind the thresholds below, as measured by
# HopperBody on posed physics (tests/test_videos.py poses them again):
# - knee = origin of body `calf`: 0.36 m above the floor over a grounded foot with a straight leg (foot capsule
#   radius 0.04 + calf 0.32), 0.03-0.04 m with the knee on the floor (calf / thigh capsule radius);
# - KNEE_DOWN_HEIGHT = 0.2 m (envs/shaping.py's KNEE_HEIGHT, phase t's knee penalty): the midpoint of the two,
#   i.e. a calf leaning 60 deg from vertical over a grounded foot (0.04 + 0.32 cos 60 deg = 0.20);
# - upright = torso leaning less than 45 deg from vertical (cos >= shaping.COS_FALL, phase r2_gait's fall
#   penalty). Kneeling on a vertical thigh the task's height (torso minus foot) is 0.70 m, above its 0.6 m
#   stand threshold: a knee-walk is `standing` by the task's measure and earns hop reward (the log's ~260).
KNEE_DOWN_HEIGHT = KNEE_HEIGHT
UPRIGHT_COS = COS_FALL
MIN_HOP_LANDINGS = 2  # a hop bout closes at least one landing -> flight -> landing cycle
STABLE_MAX_SWITCHES_PER_CYCLE = 2.0  # Phase-f s1 (571): K=3 push-off, K=4 takeoff, two switches per hop
STABLE_MAX_DISTINCT_K = 2  # Phase-f s1's two clusters during hops; Phase-t s2 (612) uses one
POSTURES = ("drop", "flight", "foot", "knee", "fallen")
GAITS = ("foot-hop", "knee-walk", "stand", "fallen")  # tie order of the vote
BASINS = ("stable-hop", "unstable-hop", "hop", "knee-walk", "stand", "fallen-stuck")


class HopperBody:
    """(knee height, torso height, torso uprightness) of a dm_control hopper physics, body ids looked up once:
    knee = world z of body `calf`'s origin (the knee joint), torso = world z of the torso's centre of mass
    (xipos, the point the task's height uses), up = world z of the torso's long axis (cos of its lean)."""

    def __init__(self, physics):
        name2id = physics.model.name2id
        self.torso, self.calf = name2id("torso", "body"), name2id("calf", "body")

    def __call__(self, physics) -> tuple[float, float, float]:
        data = physics.data
        return (float(data.xpos[self.calf, 2]), float(data.xipos[self.torso, 2]),
                float(data.xmat[self.torso, 8]))


def postures(knee_height: np.ndarray, torso_up: np.ndarray, contact: np.ndarray) -> np.ndarray:
    """Each row's posture: fallen (torso leaning 45 deg or more), knee (upright, knee below KNEE_DOWN_HEIGHT),
    foot (upright, knee up, a touch sensor of the foot above 1 N), flight (upright, knee up, no touch); the
    leading flight rows are the spawn drop (reset puts the torso 1 m up, in the air) and read `drop`."""
    knee_height, torso_up, contact = (np.asarray(a) for a in (knee_height, torso_up, contact))
    out = np.where(contact.astype(bool), "foot", "flight").astype(object)
    out[knee_height < KNEE_DOWN_HEIGHT] = "knee"
    out[torso_up < UPRIGHT_COS] = "fallen"
    t = 0
    while t < len(out) and out[t] == "flight":
        out[t] = "drop"
        t += 1
    return out


def hop_frames(posture: np.ndarray) -> tuple[np.ndarray, int]:
    """(mask of the hop frames, hop cycles among them). A landing is a flight row followed by a foot row; in each
    maximal stretch of upright knee-up rows (flight / foot) with at least MIN_HOP_LANDINGS landings the rows
    from its first landing to its last are hop frames, each landing-to-landing span one hop cycle. Everything
    else (the spawn drop, knee and fallen rows, getting up after a fall, the partial cycles before the first
    and after the last landing of a stretch, where a fall starts) is not."""
    posture = np.asarray(posture)
    mask, cycles, T = np.zeros(len(posture), bool), 0, len(posture)
    up = np.isin(posture, ("flight", "foot"))
    t = 0
    while t < T:
        if not up[t]:
            t += 1
            continue
        end = t
        while end < T and up[end]:
            end += 1
        landings = [i for i in range(t + 1, end) if posture[i - 1] == "flight" and posture[i] == "foot"]
        if len(landings) >= MIN_HOP_LANDINGS:
            mask[landings[0]:landings[-1] + 1] = True
            cycles += len(landings) - 1
        t = end
    return mask, cycles


def hop_k_stability(k: Optional[np.ndarray], mask: np.ndarray, cycles: int) -> dict:
    """K during hop frames only: switches between consecutive hop frames (fall recovery never counts: it is not
    a hop frame), per hop cycle, distinct K, the share of the most frequent K, and stable = at most
    STABLE_MAX_SWITCHES_PER_CYCLE switches per cycle and at most STABLE_MAX_DISTINCT_K clusters (None without K
    or hop cycles)."""
    out = dict(hop_k_switches=None, hop_k_switches_per_cycle=None, hop_distinct_k=None,
               hop_dominant_k=None, hop_dominant_k_fraction=None, hop_k_stable=None)
    if k is None or not mask.any():
        return out
    k = np.asarray(k, np.int64)
    pairs = mask[1:] & mask[:-1]
    switches = int(np.sum((k[1:] != k[:-1]) & pairs))
    values, counts = np.unique(k[mask], return_counts=True)
    per_cycle = switches / cycles if cycles else None
    out.update(hop_k_switches=switches, hop_k_switches_per_cycle=per_cycle, hop_distinct_k=int(len(values)),
               hop_dominant_k=int(values[np.argmax(counts)]),
               hop_dominant_k_fraction=float(counts.max() / counts.sum()))
    if per_cycle is not None:
        out["hop_k_stable"] = bool(per_cycle <= STABLE_MAX_SWITCHES_PER_CYCLE
                                   and len(values) <= STABLE_MAX_DISTINCT_K)
    return out


def episode_gait(posture: np.ndarray, mask: np.ndarray) -> tuple[Optional[str], dict]:
    """(gait, row shares after the spawn drop): the plurality of hop frames (foot-hop), knee rows (knee-walk),
    upright knee-up rows outside hop frames (stand: standing, shuffling, single jumps) and fallen rows (fallen),
    ties in GAITS order; None when every row is the drop."""
    posture = np.asarray(posture)
    counts = {
        "foot-hop": int(mask.sum()),
        "knee-walk": int(np.sum(posture == "knee")),
        "stand": int(np.sum(np.isin(posture, ("flight", "foot")) & ~mask)),
        "fallen": int(np.sum(posture == "fallen")),
    }
    total = sum(counts.values())
    if total == 0:
        return None, {g: None for g in GAITS}
    gait = max(GAITS, key=lambda g: (counts[g], -GAITS.index(g)))
    return gait, {g: counts[g] / total for g in GAITS}


def gait_thresholds() -> dict:
    """The numbers behind the gait, hop-frame, stability and basin definitions (written into the summary)."""
    return {"knee_down_height_m": KNEE_DOWN_HEIGHT, "upright_cos": round(UPRIGHT_COS, 6), "upright_max_lean_deg": 45.0,
            "contact_touch_n": 1.0, "min_hop_landings": MIN_HOP_LANDINGS,
            "stable_max_switches_per_cycle": STABLE_MAX_SWITCHES_PER_CYCLE,
            "stable_max_distinct_k": STABLE_MAX_DISTINCT_K}


def basin_label(gait: Optional[str], stable: Optional[bool]) -> Optional[str]:
    """The log's basins (section 9.4): stable-hop (a foot-hop with K stable during hops), unstable-hop (a
    foot-hop whose K oscillates during hops), knee-walk (the stuck seeds of section 3), stand, fallen-stuck
    (section 9.5's collapsed seeds); `hop` for a foot-hop without K labels (Glass off)."""
    if gait is None:
        return None
    if gait == "foot-hop":
        return "hop" if stable is None else ("stable-hop" if stable else "unstable-hop")
    return {"knee-walk": "knee-walk", "stand": "stand", "fallen": "fallen-stuck"}[gait]


# ----------------------------------------------------------------------------------------------- the episode
@dataclasses.dataclass
class Episode:
    """One rollout of one seed. Arrays over T agent steps unless stated."""

    task: str
    glass: bool
    num_clusters: int  # K of the config (0 with Glass off)
    action_repeat: int
    control_dt: float  # seconds per control (env) step
    episode_seed: int
    policy: str
    obs: np.ndarray  # (T, obs_dim)
    latents: np.ndarray  # (T, d)
    actions: np.ndarray  # (T, A)
    rewards: np.ndarray  # (T,)
    k: Optional[np.ndarray]  # (T,) int32, None with Glass off
    n_star: Optional[np.ndarray]  # (T,) int32, None with Glass off
    touch: np.ndarray  # (T, num sensors); (T, 0) without touch sensors
    height: Optional[np.ndarray]  # (T,), None when the task has no height measure
    stand_height: Optional[float]
    speed: Optional[np.ndarray]  # (T,), None when the task has no speed measure
    physics: np.ndarray  # (T * action_repeat, nq + nv): the state before each control step (t * repeat + j)
    # hopper only (None elsewhere): HopperBody's measures at each row's state
    knee_height: Optional[np.ndarray] = None  # (T,) m, world z of the knee (body `calf`'s origin)
    torso_height: Optional[np.ndarray] = None  # (T,) m, world z of the torso's centre of mass
    torso_up: Optional[np.ndarray] = None  # (T,) cos of the torso's lean from vertical

    @property
    def steps(self) -> int:
        return len(self.rewards)

    @property
    def returns(self) -> np.ndarray:
        return np.cumsum(self.rewards.astype(np.float64))

    @property
    def contact(self) -> Optional[np.ndarray]:
        if self.touch.shape[1] == 0:
            return None
        return (self.touch > glass_lib.CONTACT_THRESHOLD).any(axis=1)

    @property
    def contact_id(self) -> Optional[np.ndarray]:
        """0 = flight, bit j set when sensor j touches (hopper: 1 toe, 2 heel, 3 both)."""
        if self.touch.shape[1] == 0:
            return None
        bits = (self.touch > glass_lib.CONTACT_THRESHOLD).astype(np.int64)
        return (bits * (2 ** np.arange(bits.shape[1]))).sum(axis=1)

    @property
    def standing(self) -> Optional[np.ndarray]:
        if self.height is None or self.stand_height is None:
            return None
        return self.height >= self.stand_height

    @property
    def posture(self) -> Optional[np.ndarray]:
        """(T,) drop / flight / foot / knee / fallen (`postures`); None without the hopper's measures."""
        if self.knee_height is None or self.torso_up is None or self.contact is None:
            return None
        return postures(self.knee_height, self.torso_up, self.contact)

    def gait(self) -> dict:
        """Gait, hop frames, K stability during hops and the basin (definitions in the module docstring); every
        value None without the hopper's measures."""
        posture = self.posture
        if posture is None:
            return dict(gait=None, gait_fractions=None, drop_steps=None, hop_steps=None, hop_cycles_in_hops=None,
                        **hop_k_stability(None, np.zeros(0, bool), 0), basin=None, gait_thresholds=None)
        mask, cycles = hop_frames(posture)
        gait, shares = episode_gait(posture, mask)
        stability = hop_k_stability(self.k, mask, cycles)
        return dict(gait=gait, gait_fractions=shares, drop_steps=int(np.sum(posture == "drop")),
                    hop_steps=int(mask.sum()), hop_cycles_in_hops=cycles, **stability,
                    basin=basin_label(gait, stability["hop_k_stable"]), gait_thresholds=gait_thresholds())

    def frame_plan(self, target_fps: float = TARGET_FPS) -> tuple[float, int, np.ndarray]:
        """(fps, stride, row of each frame): one frame every `stride` control steps so the video plays in real
        time at about `target_fps` (hopper: 0.02 s control steps, stride 1, 50 fps, 2 frames per agent step;
        cartpole: 0.01 s, stride 2, 50 fps, 1 frame per agent step)."""
        stride = max(1, int(round(1.0 / (self.control_dt * target_fps))))
        controls = np.arange(0, self.steps * self.action_repeat, stride)
        return 1.0 / (self.control_dt * stride), stride, controls // self.action_repeat

    def rows(self) -> list[dict]:
        """The per-step CSV rows (K and n_star empty with Glass off; touch empty without touch sensors)."""
        contact, cid, standing = self.contact, self.contact_id, self.standing
        posture = self.posture
        hop = None if posture is None else hop_frames(posture)[0]
        out, ret = [], self.returns

        def metres(values, t):
            return "" if values is None else f"{float(values[t]):.4f}"

        for t in range(self.steps):
            out.append({
                "step": t,
                "env_step": t * self.action_repeat,
                "K": "" if self.k is None else int(self.k[t]),
                "n_star": "" if self.n_star is None else int(self.n_star[t]),
                "reward": f"{float(self.rewards[t]):.6g}",
                "return": f"{float(ret[t]):.6g}",
                "touch": "" if contact is None else int(contact[t]),
                "contact_id": "" if cid is None else int(cid[t]),
                "standing": "" if standing is None else int(standing[t]),
                "height": "" if self.height is None else f"{float(self.height[t]):.4f}",
                "speed": "" if self.speed is None else f"{float(self.speed[t]):.4f}",
                "knee_height": metres(self.knee_height, t),
                "torso_height": metres(self.torso_height, t),
                "torso_up": metres(self.torso_up, t),
                "gait": "" if posture is None else str(posture[t]),
                "hop": "" if hop is None else int(hop[t]),
            })
        return out

    def summary(self) -> dict:
        """Episode numbers for the summary JSON (definitions in the module docstring)."""
        contact = self.contact
        out = {
            "steps": self.steps,
            "return": float(self.returns[-1]) if self.steps else 0.0,
            "glass": self.glass,
            "policy": self.policy,
            "episode_seed": self.episode_seed,
            "contact_fraction": None if contact is None else float(contact.mean()),
            "standing_fraction": None if self.standing is None else float(self.standing.mean()),
            "mean_speed": None if self.speed is None else float(self.speed.mean()),
        }
        landings = None if contact is None else int(np.sum(contact[1:] & ~contact[:-1]))
        out["hop_cycles"] = landings
        out["hop_cycle_definition"] = "one flight -> contact transition (a landing) between consecutive steps"
        out.update(self.gait())
        if self.k is None:
            out.update(clusters_used=None, distinct_k=None, switches=None, switches_per_hop_cycle=None,
                       longest_stable_steps=None, longest_stable_k=None, longest_stable_start=None, occupancy=None)
            return out
        k = self.k.astype(np.int64)
        switches = int(np.sum(k[1:] != k[:-1]))
        best, start = (0, -1, 0), 0
        for t in range(1, len(k) + 1):
            if t == len(k) or k[t] != k[t - 1]:
                if t - start > best[0]:
                    best = (t - start, int(k[start]), start)
                start = t
        used = sorted(int(x) for x in np.unique(k))
        out.update(
            clusters_used=used, distinct_k=len(used), switches=switches,
            switches_per_hop_cycle=(switches / landings) if landings else None,
            longest_stable_steps=best[0], longest_stable_k=best[1], longest_stable_start=best[2],
            occupancy={str(c): float(np.mean(k == c)) for c in used},
        )
        return out


# ----------------------------------------------------------------------------------------------- task measures
def _task_measures(task: str):
    """(height(physics) or None, stand threshold or None, speed(physics) or None) for the task's domain."""
    import importlib

    domain = task.split("-", 1)[0]
    try:
        module = importlib.import_module(f"dm_control.suite.{domain}")
    except ImportError:
        module = None
    stand = getattr(module, "_STAND_HEIGHT", None)
    if domain == "hopper":
        return (lambda p: float(p.height())), stand, (lambda p: float(p.speed()))
    if domain == "walker":
        return (lambda p: float(p.torso_height())), stand, (lambda p: float(p.horizontal_velocity()))
    if domain == "cheetah":
        return None, None, (lambda p: float(p.speed()))
    return None, None, None


# ----------------------------------------------------------------------------------------------- the rollout
class Roller:
    """Eval-mode decisions for S seeds of one config, with each observation's latent and labels.

    `act` is tdmpc_glass.acting's jitted act, f(states, obs (S, E, obs_dim), prev_mean (S, E, H, A), counter,
    eval_mode=, use_planner=) -> (actions (S, E, A), prev_mean); the trainer passes its own (so a video shows
    exactly its evaluation policy and reuses its compiled planner), else acting.jit_act builds the same one
    from the config's planner settings.
    """

    def __init__(self, cfg: Config, obs_dim: int, act_dim: int, act=None):
        self.cfg, self.obs_dim, self.act_dim = cfg, obs_dim, act_dim
        if act is None:
            act = jit_act(PlanSettings.from_config(cfg.planner, cfg.horizon, derive(cfg).discount, act_dim))
        self._act = act
        glass_on = cfg.glass.enabled

        def labels(states, obs):
            """obs (S, obs_dim) -> z (S, d), K (S,), n* (S,) (-1 with Glass off)."""
            z = jax.vmap(lambda w, o: w.encode(o))(states.world, obs)
            if not glass_on:
                return z, jnp.full(obs.shape[:1], -1, jnp.int32), jnp.full(obs.shape[:1], -1, jnp.int32)

            def one(w, zz):
                S = glass_lib.cluster_matrix(w.glass.assign_logits)
                return glass_lib.k_label(zz, w.glass.mu, S), glass_lib.nearest_anchor(zz, w.glass.mu)

            k, n_star = jax.vmap(one)(states.world, z)
            return z, k, n_star

        self._labels = jax.jit(labels)

    def run(self, states, episode_seed: int, policy: str = "mppi", max_steps: Optional[int] = None,
            counter_offset: int = 0) -> list[Episode]:
        """Roll every seed of `states` (leading seed axis) out for one episode from the same reset seed."""
        from ..envs.dmc import EnvChunk

        if policy not in POLICIES:
            raise RunError(f"--policy: expected one of {', '.join(POLICIES)}, got {policy!r}")
        cfg = self.cfg
        S = int(jax.tree.leaves(states.key)[0].shape[0])
        T = cfg.train.episode_length if max_steps is None else max(1, min(int(max_steps), cfg.train.episode_length))
        repeat = cfg.train.action_repeat
        chunk = EnvChunk(cfg.task, S, 1)  # action repeat done here, to record the physics after every control step
        try:
            env0 = chunk.envs[0]
            control_dt = float(env0.control_timestep())
            height_fn, stand, speed_fn = _task_measures(cfg.task)
            body_fn = HopperBody(env0.physics) if cfg.task.split("-", 1)[0] == "hopper" else None
            obs = chunk.reset(np.full(S, int(episode_seed), np.int64))
            prev_mean = jnp.zeros((S, 1, cfg.horizon, self.act_dim))
            rec = {name: [] for name in ("obs", "z", "k", "n", "a", "r", "touch", "height", "speed", "body",
                                         "physics")}
            for t in range(T):
                obs_j = jnp.asarray(obs)
                actions, prev_mean = self._act(states, obs_j[:, None], prev_mean, counter_offset + t,
                                               eval_mode=True, use_planner=policy == "mppi")
                z, k, n_star = self._labels(states, obs_j)
                # a diverged seed's NaN actions must not reach MuJoCo
                actions = np.nan_to_num(np.asarray(actions, np.float32).reshape(S, self.act_dim))
                rec["obs"].append(obs)
                rec["z"].append(np.asarray(z))
                rec["k"].append(np.asarray(k))
                rec["n"].append(np.asarray(n_star))
                rec["a"].append(actions)
                rec["touch"].append(chunk.touch())
                rec["height"].append([height_fn(e.physics) if height_fn else np.nan for e in chunk.envs])
                rec["speed"].append([speed_fn(e.physics) if speed_fn else np.nan for e in chunk.envs])
                rec["body"].append([body_fn(e.physics) if body_fn else (np.nan,) * 3 for e in chunk.envs])
                reward = np.zeros(S, np.float64)
                for _ in range(repeat):
                    rec["physics"].append(chunk.physics_states())
                    obs, r = chunk.step(actions)
                    reward += r
                rec["r"].append(reward)
        finally:
            chunk.close()
        arr = {name: np.stack(v, axis=1) for name, v in rec.items()}  # (S, T, ...)
        episodes = []
        for i in range(S):
            episodes.append(Episode(
                task=cfg.task, glass=cfg.glass.enabled,
                num_clusters=cfg.glass.num_clusters if cfg.glass.enabled else 0,
                action_repeat=repeat, control_dt=control_dt, episode_seed=int(episode_seed), policy=policy,
                obs=arr["obs"][i], latents=arr["z"][i], actions=arr["a"][i],
                rewards=arr["r"][i].astype(np.float32),
                k=arr["k"][i].astype(np.int32) if cfg.glass.enabled else None,
                n_star=arr["n"][i].astype(np.int32) if cfg.glass.enabled else None,
                touch=arr["touch"][i].astype(np.float32),
                height=arr["height"][i] if height_fn else None, stand_height=stand if height_fn else None,
                speed=arr["speed"][i] if speed_fn else None,
                physics=arr["physics"][i],
                knee_height=arr["body"][i, :, 0] if body_fn else None,
                torso_height=arr["body"][i, :, 1] if body_fn else None,
                torso_up=arr["body"][i, :, 2] if body_fn else None,
            ))
        return episodes


def episode_seed(seed: int, episode: int) -> int:
    """The reset seed of episode `episode` of a video run with --seed `seed` (the same for every run of a grid)."""
    return int(np.random.SeedSequence([int(seed), int(episode), 7]).generate_state(1)[0])
