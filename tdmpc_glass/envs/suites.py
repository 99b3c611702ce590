"""The environment-suite seam: which module builds, steps, resets and describes a task.

A task names its suite with a prefix: `playground:hopper-hop` is MuJoCo Playground's hopper-hop; a name without
a prefix (`hopper-hop`) is dm_control's, so every phase and every existing run keeps its meaning. The registry
below maps a suite name to its module, imported on first use (a suite's simulator is imported only by the
commands that use it; an optional suite whose package is missing fails with the extra to install).

A suite module offers, for its own bare task names (no prefix):
  list_tasks() -> list[str]                   every task it knows
  validate_task(name)                         ValueError (one line, nearest valid name) for an unknown task
  task_spec(name) -> (obs_dim, act_dim)       flat float32 observation, actions in [-1, 1]
  control_timestep(name) -> float             simulated seconds per control (env) step
  touch_indices(name) -> tuple[int, ...]      positions of touch readings in the observation, () if none
  describe(name) -> str                       one line: the simulator and what a step is
  EnvChunk(names, num_envs, action_repeat, first_index=0, measure=None)
      reset(seeds (n,), task_ids=None) -> obs (n, obs_dim); step(actions (n, A)) -> (obs, reward (n,)), or
      (obs, reward, measured (n, m)) with a measure; physics_states() -> (n, nq + nv); touch() -> (n, k); close()
  IN_PROCESS: bool                            True: the pool steps its envs in the calling process (a JAX
                                              simulator batches its envs itself; worker processes would each
                                              compile it again)
Everything above the suite (reward shaping, multi-task draws, action noise) is a wrapper in envs/training.py.

Adding a suite: one module with the functions above and one line in SUITES.
"""
from __future__ import annotations

import functools
import importlib
from types import ModuleType

SUITES = {  # suite name -> its module
    "dmc": "tdmpc_glass.envs.dmc",  # dm_control: the benchmark of record, and the default
    "playground": "tdmpc_glass.envs.playground",  # MuJoCo Playground's dm_control suite on MJX (extra `playground`)
}
DEFAULT = "dmc"
SEPARATOR = ":"
EXTRAS = {"playground": "playground"}  # suite -> the pyproject extra that installs its simulator


def split_task(task: str) -> tuple[str, str]:
    """'playground:hopper-hop' -> ('playground', 'hopper-hop'); 'hopper-hop' -> ('dmc', 'hopper-hop').
    Raises ValueError for a prefix no suite has."""
    if not isinstance(task, str):
        raise ValueError(f"task must be a string like 'hopper-hop', got {type(task).__name__} {task!r}")
    suite, sep, name = task.partition(SEPARATOR)
    if not sep:
        return DEFAULT, task
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r} in task {task!r} (suites: {', '.join(SUITES)})")
    return suite, name


def suite_module(suite: str) -> ModuleType:
    """The module of a registered suite; ValueError naming the extra to install when its simulator is missing."""
    try:
        return importlib.import_module(SUITES[suite])
    except ModuleNotFoundError as e:
        extra = EXTRAS.get(suite)
        hint = f": pip install 'tdmpc-glass[{extra}]'" if extra else ""
        raise ValueError(f"suite {suite!r} cannot be loaded ({e}){hint}") from None


def resolve(task: str) -> tuple[ModuleType, str]:
    """(suite module, bare task name) of a task."""
    suite, name = split_task(task)
    return suite_module(suite), name


def suite_of(task: str) -> str:
    return split_task(task)[0]


# ------------------------------------------------------------------ the suite functions, on prefixed task names
def list_tasks(suite: str = DEFAULT) -> list[str]:
    """Every task of a suite, as the names a config writes (prefixed for every suite but the default)."""
    prefix = "" if suite == DEFAULT else suite + SEPARATOR
    return [prefix + name for name in suite_module(suite).list_tasks()]


def validate_task(task) -> None:
    """Raise ValueError (one line) naming an unknown task (or suite) and the nearest valid one."""
    module, name = resolve(task)
    module.validate_task(name)


@functools.lru_cache(maxsize=None)  # per process, like the suites' own
def task_spec(task: str) -> tuple[int, int]:
    module, name = resolve(task)
    return module.task_spec(name)


@functools.lru_cache(maxsize=None)  # per process, like the suites' own
def control_timestep(task: str) -> float:
    module, name = resolve(task)
    return module.control_timestep(name)


@functools.lru_cache(maxsize=None)  # per process, like the suites' own
def touch_indices(task: str) -> tuple[int, ...]:
    module, name = resolve(task)
    return module.touch_indices(name)


def describe(task: str) -> str:
    module, name = resolve(task)
    return module.describe(name)


def chunk_factory(tasks, num_envs: int, action_repeat: int, first_index: int = 0, measure=None):
    """A picklable callable building the EnvChunk of `tasks` (one name, or several of ONE suite for multi-task),
    for the pool to call in-process or inside a worker."""
    tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
    suites = {suite_of(t) for t in tasks}
    if len(suites) > 1:
        raise ValueError(f"the tasks of one pool must come from one suite, got {list(tasks)}")
    suite = suites.pop()
    names = tuple(split_task(t)[1] for t in tasks)
    return functools.partial(_build_chunk, suite, names[0] if len(names) == 1 else names, int(num_envs),
                             int(action_repeat), int(first_index), measure)


def in_process(task: str) -> bool:
    """Whether the suite of `task` steps its envs in the calling process (no worker processes)."""
    return bool(getattr(resolve(task)[0], "IN_PROCESS", False))


def _build_chunk(suite, names, num_envs, action_repeat, first_index, measure):
    return suite_module(suite).EnvChunk(names, num_envs, action_repeat, first_index, measure)
