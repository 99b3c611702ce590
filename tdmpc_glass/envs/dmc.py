"""dm_control suite tasks by name, and a pool of them stepped in this process or in worker processes.

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
import multiprocessing as mp
import os
import warnings
from typing import Any, Sequence

import numpy as np

from . import worker

# Seconds between liveness checks of a worker while waiting for its answer.
_POLL_S = 0.5
# Seconds a closing worker gets to exit by itself before it is terminated.
_JOIN_S = 5.0


def _usable_cpus() -> int:
    """CPU cores this process may run on (the affinity mask, which cluster schedulers narrow), else cpu_count."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _suite():
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
    return tuple(sorted(f"{domain}-{name}" for domain, name in _suite().ALL_TASKS))


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
    return _suite().load(domain, name, task_kwargs={"random": int(seed) % 2**32, "time_limit": float("inf")})


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
    `reset(seeds, task_ids)` picks the task of each slot for the episode. shaping=True: `step` also returns
    the hopper's shaping terms (n, 3) summed over the repeats (envs/shaping.py).
    """

    def __init__(self, task, num_envs: int, action_repeat: int, first_index: int = 0, shaping: bool = False):
        tasks = (task,) if isinstance(task, str) else tuple(task)
        self.task_envs = [[load(name, seed=first_index + i) for i in range(num_envs)] for name in tasks]
        self.envs = list(self.task_envs[0])
        self.action_repeat = int(action_repeat)
        self.shaping = None
        if shaping:
            from .shaping import HopperTerms

            self.shaping = HopperTerms(self.envs[0].physics) if self.envs else None
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
            total, shaping = 0.0, 0.0
            for _ in range(self.action_repeat):
                timestep = env.step(action)
                total += timestep.reward or 0.0
                if self.shaping is not None:
                    shaping = shaping + self.shaping(env.physics)
                if timestep.last():
                    # Only tasks with a termination condition get here (the lqr ones). The caller owns
                    # episodes: keep stepping the physics instead of letting dm_control reset on the next step.
                    env._reset_next_step = False
            obs.append(flatten_observation(timestep.observation))
            rewards.append(total)
            terms.append(shaping)
        if self.shaping is not None:
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


# ------------------------------------------------------------------------------------------------- the pool
class EnvPool:
    """`num_envs` envs of `task`, in contiguous chunks over `num_workers` worker processes.

    num_workers: None -> min(usable CPU cores, num_envs); 0 -> every env in this process (no subprocess).
    Workers are started with 'spawn' (the parent runs multi-threaded JAX and must never be forked), are daemons,
    ignore SIGINT (the trainer handles Ctrl-C and still needs its envs) and exit when their pipe closes.

      reset(episode_seeds (N,) ints) -> obs (N, obs_dim) float32
      step(actions (N, act_dim))     -> (obs (N, obs_dim) float32, reward (N,) float32)
      step_async(actions); step_wait() -> the same as step, so device work can overlap env stepping
      physics_states() -> (N, nq + nv) float64;  touch() -> (N, k) float32 (k = 0 without a touch sensor)
    Arrays are stacked in env order.

    Multi-task: `task` a list of names with one obs/act spec; `reset(seeds, task_ids)` picks each env's task
    per episode (ids index the list; default all 0); `self.task` is the first. shaping=True: after each step,
    `shaping_terms` (N, 3) holds the hopper's shaping terms of that step (envs/shaping.py); else it is None. A worker that dies raises RuntimeError naming the worker and the task.
    Like any 'spawn' user, a script that starts worker pools needs an `if __name__ == "__main__":` guard.
    """

    def __init__(self, task, num_envs: int, action_repeat: int = 2, num_workers: int | None = None,
                 shaping: bool = False):
        self._closed = True  # until construction succeeds; close() and __del__ then have nothing to do
        self._local: EnvChunk | None = None
        self._procs: list = []
        self._conns: list = []
        self.tasks = (task,) if isinstance(task, str) else tuple(task)
        if not self.tasks:
            raise ValueError("EnvPool: no task given")
        for name in self.tasks:
            validate_task(name)
        specs = {name: task_spec(name) for name in self.tasks}
        if len(set(specs.values())) > 1:
            raise ValueError(f"EnvPool: the tasks of one pool need the same (obs_dim, act_dim), got {specs}")
        self.shaping = bool(shaping)
        self.shaping_terms = None
        task = self.tasks[0] if len(self.tasks) == 1 else self.tasks
        for name, value, low in (("num_envs", num_envs, 1), ("action_repeat", action_repeat, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"EnvPool: {name} must be an integer >= {low}, got {value!r}")
        if num_workers is None:
            num_workers = min(_usable_cpus(), int(num_envs))
        if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 0:
            raise ValueError(f"EnvPool: num_workers must be None or an integer >= 0, got {num_workers!r}")
        self.task = self.tasks[0]
        self.num_envs = int(num_envs)
        self.action_repeat = int(action_repeat)
        self.num_workers = min(int(num_workers), self.num_envs)
        self.obs_dim, self.act_dim = specs[self.task]
        self._pending = False  # a step_async waits for its step_wait
        self._was_reset = False
        self._async_result = None
        # contiguous chunks of env indices, the first ones one env larger when N does not divide evenly
        self._chunks = [c for c in np.array_split(np.arange(self.num_envs), max(self.num_workers, 1))]
        if self.num_workers == 0:
            self._local = EnvChunk(task, self.num_envs, self.action_repeat, shaping=self.shaping)
            self._closed = False
            return
        ctx = mp.get_context("spawn")
        self._closed = False
        try:
            for i, chunk in enumerate(self._chunks):
                parent_end, child_end = ctx.Pipe(duplex=True)
                make_chunk = functools.partial(EnvChunk, task, len(chunk), self.action_repeat, int(chunk[0]),
                                               self.shaping)
                proc = ctx.Process(target=worker.run, name=f"envpool-{self.task}-{i}", daemon=True,
                                   args=(child_end, make_chunk, task_spec(self.tasks[0])))
                proc.start()
                child_end.close()  # the worker holds the only other end: its death shows up as EOF here
                self._procs.append(proc)
                self._conns.append(parent_end)
            for i in range(self.num_workers):  # every worker answers once its envs are built
                spec = tuple(self._receive(i))
                if spec != (self.obs_dim, self.act_dim):
                    raise RuntimeError(f"env worker {i} ({self.task}): spec {spec} != "
                                       f"{(self.obs_dim, self.act_dim)}")
        except BaseException:
            self.close()
            raise

    # -- plumbing
    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the workers (empty in-process)."""
        return [p.pid for p in self._procs]

    def _describe(self, i: int) -> str:
        chunk = self._chunks[i]
        return f"env worker {i} (task {self.task}, envs {chunk[0]}..{chunk[-1]}, pid {self._procs[i].pid})"

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"EnvPool({self.task}) is closed")

    def _send(self, i: int, message) -> None:
        try:
            self._conns[i].send(message)
        except (BrokenPipeError, ConnectionResetError, EOFError, OSError) as e:
            self._fail(i, f"cannot be reached ({type(e).__name__})")

    def _receive(self, i: int):
        conn, proc = self._conns[i], self._procs[i]
        try:
            while not conn.poll(_POLL_S):
                if not proc.is_alive():
                    break
            status, value = conn.recv()
        except (EOFError, ConnectionResetError, OSError):
            proc.join(timeout=1.0)
            self._fail(i, f"died (exit code {proc.exitcode})")
        if status != "ok":
            self._fail(i, f"failed: {value}")
        return value

    def _fail(self, i: int, what: str):
        message = f"{self._describe(i)} {what}"
        self.close()  # the pool cannot continue with a chunk missing; stop the other workers too
        raise RuntimeError(message) from None

    def _receive_all(self) -> list:
        """One answer from every worker, in worker order. If anything interrupts the wait (Ctrl-C, a dead
        worker), answers may be left in the pipes and the pool can no longer tell which step they belong to:
        it closes itself rather than hand out stale results later."""
        try:
            return [self._receive(i) for i in range(self.num_workers)]
        except BaseException:
            self.close()
            raise

    def _broadcast(self, command: str, payloads: Sequence[Any]) -> list:
        for i, payload in enumerate(payloads):
            self._send(i, (command, payload))
        return self._receive_all()

    # -- public
    def reset(self, episode_seeds, task_ids=None) -> np.ndarray:
        """episode_seeds (N,) ints, one per env -> first observations (N, obs_dim) float32.
        task_ids (N,) ints < len(tasks): each env's task for this episode (multi-task pools; None keeps them)."""
        self._check_open()
        if self._pending:
            raise RuntimeError("EnvPool.reset: a step_async is still waiting for its step_wait")
        seeds = np.asarray(episode_seeds)
        if seeds.shape != (self.num_envs,):
            raise ValueError(f"EnvPool.reset: expected episode seeds of shape {(self.num_envs,)}, got {seeds.shape}")
        if not np.issubdtype(seeds.dtype, np.integer):
            raise ValueError(f"EnvPool.reset: episode seeds must be integers, got dtype {seeds.dtype}")
        seeds = seeds.astype(np.int64)
        if task_ids is not None:
            task_ids = np.asarray(task_ids).astype(np.int64)
            if task_ids.shape != (self.num_envs,) or task_ids.min() < 0 or task_ids.max() >= len(self.tasks):
                raise ValueError(f"EnvPool.reset: task_ids must be ({self.num_envs},) ints in "
                                 f"[0, {len(self.tasks)}), got {task_ids!r}")
        if self._local is not None:
            obs = self._local.reset(seeds, task_ids)
        elif task_ids is None:
            obs = np.concatenate(self._broadcast("reset", [seeds[c] for c in self._chunks]))
        else:
            obs = np.concatenate(self._broadcast("reset", [(seeds[c], task_ids[c]) for c in self._chunks]))
        self._was_reset = True
        return obs

    def step_async(self, actions) -> None:
        """Send actions (N, act_dim) to the envs; collect the result with step_wait()."""
        self._check_open()
        if self._pending:
            raise RuntimeError("EnvPool.step_async: the previous step_async has not been collected by step_wait")
        if not self._was_reset:
            raise RuntimeError("EnvPool.step_async: reset the pool before stepping it")
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (self.num_envs, self.act_dim):
            raise ValueError(f"EnvPool.step: expected actions of shape {(self.num_envs, self.act_dim)}, "
                             f"got {actions.shape}")
        if not np.all(np.isfinite(actions)):
            bad = sorted({int(i) for i in np.nonzero(~np.isfinite(actions))[0]})
            raise ValueError(f"EnvPool.step: non-finite actions for envs {bad[:8]}{'...' if len(bad) > 8 else ''}")
        if self._local is not None:
            self._async_result = self._local.step(actions)
        else:
            for i, chunk in enumerate(self._chunks):
                self._send(i, ("step", actions[chunk[0]:chunk[-1] + 1]))
        self._pending = True

    def step_wait(self) -> tuple[np.ndarray, np.ndarray]:
        """(obs (N, obs_dim) float32, reward (N,) float32) of the step sent by step_async."""
        self._check_open()
        if not self._pending:
            raise RuntimeError("EnvPool.step_wait: no step_async to wait for")
        self._pending = False
        if self._local is not None:
            result, self._async_result = self._async_result, None
        else:
            results = self._receive_all()
            result = tuple(np.concatenate([r[j] for r in results]) for j in range(len(results[0])))
        if self.shaping:
            self.shaping_terms = result[2]
        return result[0], result[1]

    def step(self, actions) -> tuple[np.ndarray, np.ndarray]:
        """One agent step of every env: step_async(actions) then step_wait()."""
        self.step_async(actions)
        return self.step_wait()

    def _gather(self, command: str) -> np.ndarray:
        self._check_open()
        if self._pending:
            raise RuntimeError(f"EnvPool.{command}: a step_async is still waiting for its step_wait")
        if self._local is not None:
            return getattr(self._local, command)()
        return np.concatenate(self._broadcast(command, [None] * self.num_workers))

    def physics_states(self) -> np.ndarray:
        """(N, nq + nv) float64: each env's qpos and qvel, concatenated."""
        return self._gather("physics_states")

    def touch(self) -> np.ndarray:
        """(N, k) float32: the `touch` observation of each env (hopper: k = 2, toe and heel, log1p'd), or (N, 0)."""
        return self._gather("touch")

    def close(self) -> None:
        """Stop the workers and release the envs. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._pending = False
        if self._local is not None:
            self._local.close()
            self._local = None
        for conn in self._conns:
            try:
                conn.send(("close", None))
            except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
                pass
        for proc in self._procs:
            proc.join(timeout=_JOIN_S)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=_JOIN_S)
        for conn in self._conns:
            conn.close()
        self._conns, self._procs = [], []

    def __enter__(self) -> "EnvPool":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        where = "in-process" if self.num_workers == 0 else f"{self.num_workers} workers"
        return (f"EnvPool({self.task!r}, num_envs={self.num_envs}, action_repeat={self.action_repeat}, {where}"
                f"{', closed' if self._closed else ''})")
