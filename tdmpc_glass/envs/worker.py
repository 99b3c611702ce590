"""The loop of one EnvPool worker process: a chunk of envs driven over a pipe.

Protocol (parent -> worker): (command, payload) with command in reset / step / physics_states / touch / close.
Worker -> parent: ("ok", result) or ("error", "Type: message"). The first message a worker sends is
("ok", (obs_dim, act_dim)) once its envs are built. The worker exits on "close" or when the pipe closes
(the parent closed it or died), so it never outlives the parent.
"""
from __future__ import annotations

import os
import signal
import traceback


def run(conn, task, num_envs: int, action_repeat: int, first_index: int, shaping: bool = False) -> None:
    """task: a name, or a tuple of names (multi-task chunk; reset payloads are then (seeds, task_ids))."""
    # Ctrl-C reaches the whole process group; the parent decides what happens (the trainer finishes its
    # episode and checkpoints, which needs the envs alive). SIGTERM still ends a worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A worker never renders: keep dm_control from probing for an OpenGL backend. Set only in this process.
    os.environ.setdefault("MUJOCO_GL", "disable")
    from .dmc import EnvChunk, task_spec

    try:
        chunk = EnvChunk(task, num_envs, action_repeat, first_index, shaping)
        conn.send(("ok", task_spec(task if isinstance(task, str) else task[0])))
    except Exception as e:
        _send_error(conn, e)
        conn.close()
        return
    commands = {"reset": lambda p: chunk.reset(*p) if isinstance(p, tuple) else chunk.reset(p), "step": chunk.step,
                "physics_states": lambda _: chunk.physics_states(), "touch": lambda _: chunk.touch()}
    try:
        while True:
            try:
                command, payload = conn.recv()
            except (EOFError, OSError):
                return
            if command == "close":
                return
            try:
                result = commands[command](payload)
            except Exception as e:  # report it; the parent raises and closes the pool
                _send_error(conn, e)
                continue
            try:
                conn.send(("ok", result))
            except (BrokenPipeError, OSError):
                return
    finally:
        chunk.close()
        conn.close()


def _send_error(conn, error: Exception) -> None:
    where = traceback.extract_tb(error.__traceback__)[-1:]
    location = f" at {where[0].filename}:{where[0].lineno}" if where else ""
    try:
        conn.send(("error", f"{type(error).__name__}: {error}{location}"))
    except (BrokenPipeError, OSError):
        pass
