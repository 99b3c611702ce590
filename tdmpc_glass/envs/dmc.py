"""The dm_control suite (the default suite, the benchmark of record): its tasks by name, and a chunk of envs.

Task names are `domain-task`, split on the FIRST hyphen (`ball_in_cup-catch` -> ('ball_in_cup', 'catch'),
`cartpole-swingup_sparse` -> ('cartpole', 'swingup_sparse')).

Conventions (TD-MPC2's, see DESIGN.md):
- observation = the observation dict's values flattened and concatenated in their order, float32 (obs_dim,);
- one agent step applies the action (clipped to [-1, 1], then rescaled onto the task's bounds as TD-MPC2 does:
  `action_rescale`) `action_repeat` times; its reward is the sum over the repeats;
- episodes belong to the caller: dm_control's time limit is off and nothing ever auto-resets. `reset` takes one
  seed per env and re-seeds the task's RandomState before resetting, so a reset (and every step after it)
  depends only on that seed and the actions, never on the env's history. Resumable training relies on this.
"""
from __future__ import annotations

import difflib
import functools
import os
import warnings
from typing import Any

import numpy as np


def load_suite():
    """dm_control.suite, imported on first use (importing it costs about a second).

    Importing dm_control imports the OpenGL backend that MUJOCO_GL names (PyOpenGL with OSMesa or EGL, or GLFW),
    though stepping renders nothing: with that backend's library missing, every command would die here. So the
    import runs with MUJOCO_GL=disable, and the variable is restored at once: processes started later (the
    render worker, tdmpc_glass/video/gl.py) still get the user's choice. A process that imported dm_control's
    renderer before (the render worker does, on purpose) keeps the backend it chose.
    """
    saved = os.environ.get("MUJOCO_GL")
    os.environ["MUJOCO_GL"] = "disable"
    try:
        with warnings.catch_warnings():
            # without a display, an import of GLFW (by anything else) warns about DISPLAY
            warnings.filterwarnings("ignore", message=r".*DISPLAY environment variable is missing")
            from dm_control import suite
    finally:
        if saved is None:
            os.environ.pop("MUJOCO_GL", None)
        else:
            os.environ["MUJOCO_GL"] = saved
    return suite


# ----------------------------------------------------------------------------------------------- task names
@functools.lru_cache(maxsize=None)
def _task_names() -> tuple[str, ...]:
    return tuple(sorted(f"{domain}-{name}" for domain, name in load_suite().ALL_TASKS))


def list_tasks() -> list[str]:
    """Every state-based dm_control suite task as a sorted list of `domain-task` names."""
    return list(_task_names())


def validate_task(task: Any) -> None:
    """Raise ValueError (one line) naming an unknown task and the nearest valid one; return None if valid."""
    names = _task_names()
    if isinstance(task, str) and task in names:
        return
    if not isinstance(task, str):
        raise ValueError(f"task must be a string like 'hopper-hop', got {type(task).__name__} {task!r}")
    by_lower = {n.lower(): n for n in names}
    nearest = difflib.get_close_matches(task.lower(), list(by_lower), n=1, cutoff=0.0)
    hint = f"; did you mean {by_lower[nearest[0]]!r}?" if nearest else ""
    raise ValueError(f"unknown task {task!r}{hint}")


def parse_task(task: str) -> tuple[str, str]:
    """`domain-task` -> (domain, task) for suite.load, split on the first hyphen. Validates the name."""
    validate_task(task)
    domain, name = task.split("-", 1)
    return domain, name


def load(task: str, seed: int = 0):
    """One dm_control env of `task` with its time limit switched off (the caller ends episodes).

    The time limit goes through task_kwargs: every suite task function takes `time_limit` itself and passes
    it to control.Environment, so environment_kwargs={'time_limit': ...} would be a duplicate keyword there.
    """
    domain, name = parse_task(task)
    return load_suite().load(domain, name, task_kwargs={"random": int(seed) % 2**32, "time_limit": float("inf")})


def flatten_observation(observation) -> np.ndarray:
    """The observation dict's values, flattened and concatenated in their order, as float32 (obs_dim,)."""
    return np.concatenate([np.asarray(value, dtype=np.float32).reshape(-1) for value in observation.values()])


@functools.lru_cache(maxsize=None)
def task_spec(task: str) -> tuple[int, int]:
    """(obs_dim, act_dim) of a task; computed once per process by loading one env, then cached."""
    env = load(task)
    obs_dim = sum(int(np.prod(spec.shape, dtype=np.int64)) for spec in env.observation_spec().values())
    act_dim = int(np.prod(env.action_spec().shape, dtype=np.int64))
    env.close()
    return obs_dim, act_dim


@functools.lru_cache(maxsize=None)
def control_timestep(task: str) -> float:
    """Seconds of simulated time per control (env) step of a task (hopper: 0.02); cached like task_spec."""
    env = load(task)
    dt = float(env.control_timestep())
    env.close()
    return dt


@functools.lru_cache(maxsize=None)
def touch_indices(task: str) -> tuple[int, ...]:
    """Positions of the `touch` readings inside the flattened observation (flatten_observation's order), from
    the task's observation spec; () for a task without touch sensors. hopper-*: (13, 14) (toe, heel)."""
    env = load(task)
    start, index = 0, ()
    for name, spec in env.observation_spec().items():
        size = int(np.prod(spec.shape, dtype=np.int64))
        if name == "touch":
            index = tuple(range(start, start + size))
        start += size
    env.close()
    return index


def describe(task: str) -> str:
    """One line on what a step of the task is."""
    return (f"dm_control {task} (MuJoCo {_mujoco_version()} on the CPU, float64), "
            f"{1000 * control_timestep(task):g} ms per control step")


def _mujoco_version() -> str:
    import mujoco

    return mujoco.__version__


# ----------------------------------------------------------------------------------------- envs of one chunk
# Action bounds at or beyond this magnitude are dm_control's stand-in for "unbounded" (lqr declares +-1e10):
# those dimensions keep the agent's [-1, 1] action instead of being stretched onto them.
UNBOUNDED_ACTION = 1e6


def action_rescale(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(mid, half) such that mid + half * a maps the agent's a in [-1, 1] onto [low, high] per dimension
    (TD-MPC2 rescales onto the task's bounds; quadruped's are not [-1, 1]): -1 -> low, 0 -> the middle,
    +1 -> high. None when every bound is already [-1, 1]: the action goes to the simulator unchanged,
    bit for bit. Dimensions with a bound at or beyond UNBOUNDED_ACTION keep mid 0, half 1."""
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    if np.all(low == -1.0) and np.all(high == 1.0):
        return None
    bounded = (np.abs(low) < UNBOUNDED_ACTION) & (np.abs(high) < UNBOUNDED_ACTION)
    mid = np.where(bounded, (high + low) / 2.0, 0.0)
    half = np.where(bounded, (high - low) / 2.0, 1.0)
    return mid, half
class EnvChunk:
    """`num_envs` envs of one task stepped one after the other in the current process.

    A pool holds one chunk in-process (num_workers=0) or one per worker process; both run this same code, so
    both give bit-identical results for the same seeds and actions.

    Multi-task (`task` a sequence of names with equal specs): every env slot holds one env per task and
    `reset(seeds, task_ids)` picks the task of each slot for the episode. measure: a picklable factory called
    once with the first env's physics, returning f(physics) -> (m,) evaluated after every control step; `step`
    then also returns those readings (n, m) summed over the repeats, like the reward (the Shaping wrapper's
    hopper terms, envs/shaping.py). The chunk knows nothing of what is measured.
    """

    def __init__(self, task, num_envs: int, action_repeat: int, first_index: int = 0, measure=None):
        tasks = (task,) if isinstance(task, str) else tuple(task)
        self.task_envs = [[load(name, seed=first_index + i) for i in range(num_envs)] for name in tasks]
        self.envs = list(self.task_envs[0])
        self.action_repeat = int(action_repeat)
        self.measure = None
        if measure is not None and self.envs:
            self.measure = measure(self.envs[0].physics)
        spec = self.envs[0].action_spec() if self.envs else None
        self.low = None if spec is None else np.asarray(spec.minimum, np.float64)
        self.high = None if spec is None else np.asarray(spec.maximum, np.float64)
        self.rescale = None if spec is None else action_rescale(self.low, self.high)
        self.has_touch = bool(self.envs) and "touch" in self.envs[0].observation_spec()

    def reset(self, seeds: np.ndarray, task_ids=None) -> np.ndarray:
        """seeds (n,) ints -> obs (n, obs_dim) float32; each env reset as a pure function of its seed.
        task_ids (n,) ints (multi-task): the task of each env for this episode; None keeps the current ones."""
        if task_ids is not None:
            self.envs = [self.task_envs[int(k)][i] for i, k in enumerate(task_ids)]
        obs = []
        for env, seed in zip(self.envs, seeds):
            env.task.random.seed(int(seed) % 2**32)  # in place: the task holds this very RandomState
            obs.append(flatten_observation(env.reset().observation))
        return np.stack(obs)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """actions (n, act_dim) -> (obs (n, obs_dim) float32, reward (n,) float32 summed over the repeats)."""
        obs, rewards, terms = [], [], []
        for env, action in zip(self.envs, actions):
            action = np.clip(np.asarray(action, np.float64).reshape(self.low.shape), -1.0, 1.0)
            if self.rescale is not None:  # [-1, 1] onto the task's bounds, as TD-MPC2 does
                mid, half = self.rescale
                action = mid + half * action
            total, measured = 0.0, 0.0
            for _ in range(self.action_repeat):
                timestep = env.step(action)
                total += timestep.reward or 0.0
                if self.measure is not None:
                    measured = measured + self.measure(env.physics)
                if timestep.last():
                    # Only tasks with a termination condition get here (the lqr ones). The caller owns
                    # episodes: keep stepping the physics instead of letting dm_control reset on the next step.
                    env._reset_next_step = False
            obs.append(flatten_observation(timestep.observation))
            rewards.append(total)
            terms.append(measured)
        if self.measure is not None:
            return np.stack(obs), np.asarray(rewards, np.float32), np.stack(terms).astype(np.float32)
        return np.stack(obs), np.asarray(rewards, np.float32)

    def physics_states(self) -> np.ndarray:
        """(n, nq + nv) float64: qpos and qvel of each env, concatenated."""
        return np.stack([np.concatenate([env.physics.data.qpos, env.physics.data.qvel]) for env in self.envs])

    def touch(self) -> np.ndarray:
        """(n, k) float32: the task's `touch` observation now (hopper: log1p of toe, heel), or (n, 0)."""
        if not self.has_touch:
            return np.zeros((len(self.envs), 0), np.float32)
        return np.stack([np.asarray(env.task.get_observation(env.physics)["touch"], np.float32).reshape(-1)
                         for env in self.envs])

    def close(self) -> None:
        for envs in self.task_envs:
            for env in envs:
                env.close()
        self.envs, self.task_envs = [], []
