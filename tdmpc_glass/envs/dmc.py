"""dm_control suite tasks by name, one env or a pool of envs stepped in worker processes.

Names are `domain-task` (split on the first hyphen: `ball_in_cup-catch`, `cartpole-swingup_sparse`).
Observations are the observation dict's values flattened in order (float32); one agent step repeats the
action `action_repeat` times and sums the rewards. dm_control's own time limit is switched off: the caller
ends episodes (TD-MPC2: 500 agent steps x 2 = dm_control's 1000 steps) and resets each env with an explicit
seed, so a reset never depends on an env's history.
"""
from __future__ import annotations

import difflib
import functools
import multiprocessing as mp
import os

import numpy as np


def _suite():
    # Stepping needs no OpenGL. Without a display and without an explicit MUJOCO_GL, dm_control would probe
    # GLFW and warn; rendering code (videos/) sets MUJOCO_GL itself before anything imports dm_control.
    if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
        os.environ["MUJOCO_GL"] = "disable"
    from dm_control import suite
    return suite


def list_tasks() -> list[str]:
    return sorted(f"{domain}-{task}" for domain, task in _suite().ALL_TASKS)


def validate_task(task: str) -> None:
    """Raise ValueError (one line) naming an unknown task and the nearest valid one."""
    names = list_tasks()
    if task not in names:
        close = difflib.get_close_matches(str(task), names, n=1, cutoff=0.0)
        raise ValueError(f"unknown task {task!r}; did you mean {close[0]!r}?" if close else f"unknown task {task!r}")


def load(task: str, seed: int = 0):
    validate_task(task)
    domain, name = task.split("-", 1)
    env = _suite().load(domain, name, task_kwargs={"random": seed})
    env._step_limit = float("inf")  # episodes are ended by the caller (tasks pass their own time_limit)
    return env


def flatten(observation) -> np.ndarray:
    return np.concatenate([np.asarray(v, np.float32).ravel() for v in observation.values()])


@functools.lru_cache(maxsize=None)
def task_spec(task: str) -> tuple[int, int]:
    """(obs_dim, act_dim) of a task."""
    env = load(task)
    obs_dim = sum(int(np.prod(s.shape)) for s in env.observation_spec().values())
    return obs_dim, int(env.action_spec().shape[0])


class Envs:
    """A list of envs of one task stepped in this process."""

    def __init__(self, task: str, num_envs: int, action_repeat: int):
        self.envs = [load(task, i) for i in range(num_envs)]
        self.action_repeat = action_repeat
        spec = self.envs[0].action_spec()
        self.low, self.high = spec.minimum, spec.maximum

    def reset(self, seeds) -> np.ndarray:
        out = []
        for env, seed in zip(self.envs, seeds):
            env.task.random.seed(int(seed) % 2**32)
            out.append(flatten(env.reset().observation))
        return np.stack(out)

    def step(self, actions) -> tuple[np.ndarray, np.ndarray]:
        obs, rewards = [], []
        for env, action in zip(self.envs, actions):
            action = np.clip(action, self.low, self.high)
            total = 0.0
            for _ in range(self.action_repeat):
                step = env.step(action)
                total += step.reward or 0.0
            obs.append(flatten(step.observation))
            rewards.append(total)
        return np.stack(obs), np.asarray(rewards, np.float32)

    def touch(self) -> np.ndarray:
        rows = [np.asarray(env.physics.named.data.sensordata[[n for n in env.physics.named.data.sensordata.axes[0].names
                                                                 if n in ("touch_toe", "touch_heel")]], np.float32)
                if env.physics.model.nsensor else np.zeros(0, np.float32) for env in self.envs]
        return np.stack(rows)

    def physics_states(self) -> np.ndarray:
        return np.stack([np.concatenate([env.physics.data.qpos, env.physics.data.qvel]) for env in self.envs])


def _worker(conn, task, num_envs, action_repeat):
    envs = Envs(task, num_envs, action_repeat)
    try:
        while True:
            try:
                command, payload = conn.recv()
            except EOFError:
                return
            if command == "close":
                return
            try:
                conn.send(("ok", getattr(envs, command)(*payload)))
            except Exception as e:  # report to the parent instead of dying silently
                conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


class EnvPool:
    """`num_envs` envs of `task` spread over worker processes (num_workers=0: all in this process).

    reset(episode_seeds (N,)) -> obs (N, obs_dim); step(actions (N, act_dim)) -> (obs (N, obs_dim), reward (N,)).
    step = step_async + step_wait, so a caller can overlap device work with simulation.
    """

    def __init__(self, task: str, num_envs: int, action_repeat: int = 2, num_workers: int | None = None):
        validate_task(task)
        self.task, self.num_envs, self.action_repeat = task, num_envs, action_repeat
        self.obs_dim, self.act_dim = task_spec(task)
        if num_workers is None:
            num_workers = min(os.cpu_count() or 1, num_envs)
        self.num_workers = min(num_workers, num_envs)
        self._local, self._workers, self._pending = None, [], None
        if self.num_workers == 0:
            self._local = Envs(task, num_envs, action_repeat)
            return
        ctx = mp.get_context("spawn")  # the parent runs JAX (threads): never fork it
        self._chunks = np.array_split(np.arange(num_envs), self.num_workers)
        for chunk in self._chunks:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, task, len(chunk), action_repeat), daemon=True)
            proc.start()
            child.close()
            self._workers.append((proc, parent))

    def _call(self, command, per_worker_args):
        for (proc, conn), args in zip(self._workers, per_worker_args):
            conn.send((command, args))
        return [self._receive(i) for i in range(len(self._workers))]

    def _receive(self, i):
        proc, conn = self._workers[i]
        while not conn.poll(1.0):
            if not proc.is_alive():
                raise RuntimeError(f"env worker {i} ({self.task}) died with exit code {proc.exitcode}")
        status, value = conn.recv()
        if status == "error":
            raise RuntimeError(f"env worker {i} ({self.task}): {value}")
        return value

    def reset(self, episode_seeds) -> np.ndarray:
        seeds = np.asarray(episode_seeds).reshape(-1)
        if seeds.shape != (self.num_envs,):
            raise ValueError(f"reset: expected {self.num_envs} episode seeds, got shape {np.shape(episode_seeds)}")
        if self._local is not None:
            return self._local.reset(seeds)
        return np.concatenate(self._call("reset", [(seeds[c],) for c in self._chunks]))

    def step_async(self, actions) -> None:
        actions = np.asarray(actions, np.float32)
        if actions.shape != (self.num_envs, self.act_dim):
            raise ValueError(f"step: expected actions of shape {(self.num_envs, self.act_dim)}, got {actions.shape}")
        if self._local is not None:
            self._pending = self._local.step(actions)
            return
        for (proc, conn), chunk in zip(self._workers, self._chunks):
            conn.send(("step", (actions[chunk],)))
        self._pending = "workers"

    def step_wait(self) -> tuple[np.ndarray, np.ndarray]:
        pending, self._pending = self._pending, None
        if pending is None:
            raise RuntimeError("step_wait without step_async")
        if pending != "workers":
            return pending
        results = [self._receive(i) for i in range(len(self._workers))]
        return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])

    def step(self, actions) -> tuple[np.ndarray, np.ndarray]:
        self.step_async(actions)
        return self.step_wait()

    def _gather(self, command) -> np.ndarray:
        if self._local is not None:
            return getattr(self._local, command)()
        return np.concatenate(self._call(command, [()] * len(self._workers)))

    def touch(self) -> np.ndarray:
        return self._gather("touch")

    def physics_states(self) -> np.ndarray:
        return self._gather("physics_states")

    def close(self) -> None:
        for proc, conn in self._workers:
            try:
                conn.send(("close", ()))
                conn.close()
            except (OSError, BrokenPipeError):
                pass
        for proc, _ in self._workers:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        self._workers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
