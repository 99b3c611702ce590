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


def run(conn, make_chunk, spec) -> None:
    """make_chunk: a picklable callable building the worker's EnvChunk (suites.chunk_factory: a suite's EnvChunk
    with its arguments bound);
    spec: (obs_dim, act_dim), sent once the chunk is built. Reset payloads are seeds, or (seeds, task_ids)
    for a multi-task chunk. This module imports nothing of the pool's: the pool hands it what to build."""
    # Ctrl-C reaches the whole process group; the parent decides what happens (the trainer finishes its
    # episode and checkpoints, which needs the envs alive). SIGTERM still ends a worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A worker never renders: keep dm_control from probing for an OpenGL backend. Set only in this process.
    os.environ.setdefault("MUJOCO_GL", "disable")
    try:
        chunk = make_chunk()
        conn.send(("ok", spec))
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
