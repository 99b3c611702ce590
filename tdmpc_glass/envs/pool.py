"""A pool of `num_envs` envs of one task, of any suite (envs/suites.py), stepped in this process or in worker
processes. The pool knows no suite and no training feature: a suite's EnvChunk does the simulating, and the
wrappers of envs/training.py (shaping, multi-task, action noise) sit above the pool.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from typing import Any, Sequence

import numpy as np

from .. import seams
from . import suites, worker

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


class EnvPool:
    """`num_envs` envs of `task`, in contiguous chunks over `num_workers` worker processes.

    num_workers: None -> min(usable CPU cores, num_envs); 0 -> every env in this process (no subprocess). A suite
    that batches its envs itself (suites.in_process: Playground's MJX) always steps them in this process.
    Workers are started with 'spawn' (the parent runs multi-threaded JAX and must never be forked), are daemons,
    ignore SIGINT (the trainer handles Ctrl-C and still needs its envs) and exit when their pipe closes.

      reset(episode_seeds (N,) ints) -> obs (N, obs_dim) float32
      step(actions (N, act_dim))     -> (obs (N, obs_dim) float32, reward (N,) float32)
      step_async(actions); step_wait() -> the same as step, so device work can overlap env stepping
      physics_states() -> (N, nq + nv) float64;  touch() -> (N, k) float32 (k = 0 without a touch sensor)
    Arrays are stacked in env order.

    Multi-task: `task` a list of names with one obs/act spec; `reset(seeds, task_ids)` picks each env's task
    per episode (ids index the list; default all 0); `self.task` is the first. measure (a picklable factory,
    see dmc.EnvChunk): after each step `measured` (N, m) holds its readings summed over the repeats, else it
    is None. A worker that dies raises RuntimeError naming the worker and the task.
    Like any 'spawn' user, a script that starts worker pools needs an `if __name__ == "__main__":` guard.
    """

    def __init__(self, task, num_envs: int, action_repeat: int = 2, num_workers: int | None = None,
                 measure=None):
        self._closed = True  # until construction succeeds; close() and __del__ then have nothing to do
        self._local: EnvChunk | None = None
        self._procs: list = []
        self._conns: list = []
        self.tasks = (task,) if isinstance(task, str) else tuple(task)
        if not self.tasks:
            raise ValueError("EnvPool: no task given")
        for name in self.tasks:
            suites.validate_task(name)
        specs = {name: suites.task_spec(name) for name in self.tasks}
        if len(set(specs.values())) > 1:
            raise ValueError(f"EnvPool: the tasks of one pool need the same (obs_dim, act_dim), got {specs}")
        self.measure = measure
        self.measured = None
        task = self.tasks[0] if len(self.tasks) == 1 else self.tasks
        for name, value, low in (("num_envs", num_envs, 1), ("action_repeat", action_repeat, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"EnvPool: {name} must be an integer >= {low}, got {value!r}")
        if num_workers is None:
            num_workers = min(_usable_cpus(), int(num_envs))
        if suites.in_process(self.tasks[0]):
            num_workers = 0
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
            self._local = suites.chunk_factory(task, self.num_envs, self.action_repeat, 0, measure)()
            self._closed = False
            return
        ctx = mp.get_context("spawn")
        self._closed = False
        try:
            for i, chunk in enumerate(self._chunks):
                parent_end, child_end = ctx.Pipe(duplex=True)
                make_chunk = suites.chunk_factory(task, len(chunk), self.action_repeat, int(chunk[0]), measure)
                proc = ctx.Process(target=worker.run, name=f"envpool-{self.task}-{i}", daemon=True,
                                   args=(child_end, make_chunk, specs[self.tasks[0]]))
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

    @property
    def local_envs(self) -> list:
        """The suite's own environments of an in-process pool (num_workers=0), to inspect their simulator
        state; empty when the envs live in worker processes."""
        return list(getattr(self._local, "envs", []))

    def _send(self, i: int, message) -> None:
        try:
            self._conns[i].send(message)
        except (BrokenPipeError, ConnectionResetError, EOFError, OSError) as e:
            self._fail(i, f"cannot be reached ({type(e).__name__})")

    def _receive(self, i: int):
        conn, proc = self._conns[i], self._procs[i]
        seams.notify("env_receive", i)  # where a test interrupts the wait (tests/test_envs.py)
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
        if self.measure is not None:
            self.measured = result[2]
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
