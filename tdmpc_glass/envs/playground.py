"""MuJoCo Playground's dm_control suite (MJX on the JAX backend), a second suite behind envs/suites.py.

Task names are dm_control's (`hopper-hop`), written `playground:hopper-hop` in a config; each maps to a
Playground env (`HopperHop`) whose model is Playground's own copy of the dm_control XML, stepped by MJX with
`impl="jax"` in float32. Conventions are dm_control's (dmc.py): flat float32 observation in the same order,
actions clipped to [-1, 1] and rescaled onto the actuators' control range, one agent step = `action_repeat`
control steps with the rewards summed, no time limit and no auto-reset, and a reset that is a pure function of
its seed (PRNGKey(seed)). How closely it tracks dm_control is measured, never assumed:
`python -m experiments.suite_agreement` (README "Environment suites").

All envs of a chunk are one vmapped batch, stepped by one jitted call per control step in this process
(IN_PROCESS: a worker process would compile MJX again; compiling costs about a minute on a CPU, once per
process and batch size, less with the persistent compile cache).
"""
from __future__ import annotations

import difflib
import functools
import os
import re

import numpy as np

from .dmc import action_rescale

IN_PROCESS = True
_SPECIAL = {"BallInCup": "ball_in_cup-catch", "PointMass": "point_mass-easy"}  # names the rule below misreads


def _suite():
    """mujoco_playground's dm_control suite, imported on first use (seconds; it needs the `playground` extra)."""
    os.environ.setdefault("MUJOCO_GL", "disable")  # nothing here renders
    from mujoco_playground._src import dm_control_suite

    return dm_control_suite


def _task_name(env_name: str) -> str:
    """'HopperHop' -> 'hopper-hop', 'CartpoleSwingupSparse' -> 'cartpole-swingup_sparse' (dm_control's name)."""
    if env_name in _SPECIAL:
        return _SPECIAL[env_name]
    words = re.findall(r"[A-Z][a-z]*\d*", env_name)
    return f"{words[0].lower()}-{'_'.join(w.lower() for w in words[1:])}"


@functools.lru_cache(maxsize=None)
def _names() -> dict[str, str]:
    """dm_control-style task name -> Playground env name."""
    return {_task_name(env): env for env in _suite().ALL_ENVS}


def list_tasks() -> list[str]:
    return sorted(_names())


def validate_task(task) -> None:
    names = _names()
    if isinstance(task, str) and task in names:
        return
    nearest = difflib.get_close_matches(str(task).lower(), list(names), n=1, cutoff=0.0)
    hint = f"; did you mean 'playground:{nearest[0]}'?" if nearest else ""
    raise ValueError(f"unknown task 'playground:{task}'{hint}")


@functools.lru_cache(maxsize=None)
def load(task: str):
    """The Playground env of a task on MJX's JAX implementation (cached: building one compiles nothing yet)."""
    validate_task(task)
    return _suite().load(_names()[task], config_overrides={"impl": "jax"})


@functools.lru_cache(maxsize=None)
def task_spec(task: str) -> tuple[int, int]:
    env = load(task)
    return int(env.observation_size), int(env.action_size)


def control_timestep(task: str) -> float:
    return float(load(task).dt)


def touch_indices(task: str) -> tuple[int, ...]:
    """Playground's hopper observes (qpos[1:], qvel, log1p touch of toe and heel) like dm_control: the touch
    readings are the last two entries. No other task of the suite observes touch."""
    if task.split("-", 1)[0] != "hopper":
        return ()
    obs_dim = task_spec(task)[0]
    return (obs_dim - 2, obs_dim - 1)


def describe(task: str) -> str:
    import mujoco

    env = load(task)
    return (f"MuJoCo Playground {_names()[task]} (MJX {mujoco.__version__}, JAX backend, float32), "
            f"{1000 * env.dt:g} ms per control step of {env.n_substeps} x {1000 * env.sim_dt:g} ms")


class EnvChunk:
    """`num_envs` envs of one task, vmapped; the suite interface of envs/suites.py (one task, no measures)."""

    def __init__(self, task, num_envs: int, action_repeat: int, first_index: int = 0, measure=None):
        import jax

        if not isinstance(task, str):
            raise ValueError(f"playground: multi-task pools are not supported (tasks {list(task)})")
        if measure is not None:
            raise ValueError(f"playground:{task}: this suite measures nothing per control step (reward shaping "
                             "reads dm_control's physics)")
        self.env = env = load(task)
        self.num_envs, self.action_repeat = int(num_envs), int(action_repeat)
        self.obs_dim, self.act_dim = task_spec(task)
        low, high = np.asarray(env.mj_model.actuator_ctrlrange, np.float64).T
        self.low, self.rescale = low, action_rescale(low, high)
        self._reset = jax.jit(jax.vmap(env.reset))
        self._step = jax.jit(jax.vmap(env.step))
        self.state = None
        self.touch_index = list(touch_indices(task))

    def reset(self, seeds: np.ndarray, task_ids=None) -> np.ndarray:
        """seeds (n,) ints -> obs (n, obs_dim) float32; each env's reset is a pure function of its seed."""
        import jax
        import jax.numpy as jnp

        keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(np.asarray(seeds, np.int64) % 2**32, jnp.uint32))
        self.state = self._reset(keys)
        return np.asarray(self.state.obs, np.float32)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """actions (n, act_dim) -> (obs (n, obs_dim) float32, reward (n,) float32 summed over the repeats)."""
        action = np.clip(np.asarray(actions, np.float64).reshape(self.num_envs, -1), -1.0, 1.0)
        if self.rescale is not None:
            mid, half = self.rescale
            action = mid + half * action
        action = action.astype(np.float32)
        total = np.zeros(self.num_envs, np.float64)
        for _ in range(self.action_repeat):
            self.state = self._step(self.state, action)
            total += np.asarray(self.state.reward, np.float64)
        return np.asarray(self.state.obs, np.float32), total.astype(np.float32)

    def physics_states(self) -> np.ndarray:
        """(n, nq + nv) float64: qpos and qvel of each env, concatenated."""
        data = self.state.data
        return np.concatenate([np.asarray(data.qpos, np.float64), np.asarray(data.qvel, np.float64)], axis=1)

    def touch(self) -> np.ndarray:
        """(n, k) float32: the touch readings of the observation (hopper: log1p of toe, heel), or (n, 0)."""
        return np.asarray(self.state.obs, np.float32)[:, self.touch_index]

    def close(self) -> None:
        self.state = None
