"""Roll a trained agent out in dm_control while recording what a K-labelled video needs.

    load_run(run_dir, checkpoint)   a run directory + a checkpoint choice (latest | best | <env_step>)
                                    -> LoadedRun (config, one seed's AgentState, which checkpoint and why)
    Roller(cfg, obs_dim, act_dim)   one jitted decision for S seeds at once (MPPI or the policy prior, eval
                                    mode), returning the actions and each observation's latent, K label and
                                    nearest anchor; .run(states, episode_seed, policy, max_steps) -> [Episode]
    Episode                         per agent step: obs, latent z, K, n*, action, reward, touch, contact,
                                    standing, height, speed; and the physics state after every control step
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
from ..planner import PlanSettings
from ..runlayout import CHECKPOINTS, CONFIG, EVAL, flatten

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
    return [int(p.stem[len(checkpoint.PREFIX):]) for p in paths]


def best_eval_step(run_dir: Path) -> Optional[tuple[int, float]]:
    """(env_step, mppi_return) of the best MPPI row of the run's eval CSV (the earliest on ties), or None."""
    path = Path(run_dir) / EVAL
    if not path.is_file():
        return None
    best = None
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                step, score = int(float(row["env_step"])), float(row["mppi_return"])
            except (KeyError, TypeError, ValueError):
                continue
            if np.isfinite(score) and (best is None or score > best[1]):
                best = (step, score)
    return best


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
    to the schema after the checkpoint was written are ignored; train.steps may differ)."""
    try:
        old = flatten(json.loads(meta.get("fingerprint", "")))
    except (TypeError, ValueError):
        return []
    new = flatten(to_dict(cfg))
    return [k for k in old if k in new and k != "train.steps" and old[k] != new[k]]


def load_run(run_dir: Path, which: str | int = "latest") -> LoadedRun:
    """Read the run's config, pick the checkpoint and restore one seed's AgentState from it. Raises RunError."""
    from ..envs.dmc import task_spec, validate_task

    run_dir = Path(run_dir)
    cfg, record = read_run_config(run_dir)
    if cfg.multitask.tasks:
        raise RunError(f"{run_dir}: multi-task runs ({', '.join(cfg.multitask.tasks)}) are not supported by the "
                       "video renderer yet")
    try:
        validate_task(cfg.task)
    except ValueError as e:
        raise RunError(f"{run_dir}: {e}") from None
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
        out, ret = [], self.returns
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
            act = jit_act(PlanSettings.from_config(cfg.planner, cfg.horizon, derive(cfg).discount))
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
            obs = chunk.reset(np.full(S, int(episode_seed), np.int64))
            prev_mean = jnp.zeros((S, 1, cfg.horizon, self.act_dim))
            rec = {name: [] for name in ("obs", "z", "k", "n", "a", "r", "touch", "height", "speed", "physics")}
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
            ))
        return episodes


def episode_seed(seed: int, episode: int) -> int:
    """The reset seed of episode `episode` of a video run with --seed `seed` (the same for every run of a grid)."""
    return int(np.random.SeedSequence([int(seed), int(episode), 7]).generate_state(1)[0])
