"""Headless MuJoCo frames: the OpenGL backend choice and the render worker process.

MuJoCo picks its OpenGL backend from MUJOCO_GL when first imported, so frames are rendered in a child process
(`python -m tdmpc_glass.video.gl_worker`) started with the backend set: MUJOCO_GL's value first when the
caller set one, then egl (a GPU, or Mesa's software EGL on a CPU), then osmesa. The first backend whose probe
frame renders is kept for the rest of the process; when none works, GLRenderer raises RenderError with one
line naming each backend's failure and the packages to install. The process that rolls the agent out never
touches OpenGL. Videos are written by ffmpeg (through imageio-ffmpeg): GLRenderer checks it is there before any
worker starts, so a missing ffmpeg is one line naming the fix before anything is rolled out.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import select
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

BACKENDS = ("egl", "osmesa")
INSTALL_HINT = "apt-get install libosmesa6 libgl1 libegl1 libegl-mesa0"
FFMPEG_HINT = "pip install imageio-ffmpeg (it bundles an ffmpeg) or apt-get install ffmpeg"
WORKER_MODULE = "tdmpc_glass.video.gl_worker"
START_TIMEOUT_S = 120.0
CHUNK_FRAMES = 64
_OFF = ("disable", "disabled", "off", "false", "0")  # MUJOCO_GL values that name no backend


class RenderError(RuntimeError):
    """Rendering cannot work here (no OpenGL backend) or the render worker failed; the message is one line."""


@contextlib.contextmanager
def quiet_fork():
    """JAX warns on every fork of its (multithreaded) process; subprocess forks only to exec a new program at
    once (the GL worker, ffmpeg), which is safe, so the warning is silenced around those calls."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        yield


_WORKING_BACKEND: Optional[str] = None  # the backend that rendered a probe frame in this process


def find_ffmpeg() -> str:
    """The ffmpeg that imageio writes mp4 files with (imageio-ffmpeg's choice: $IMAGEIO_FFMPEG_EXE, its bundled
    binary, then the system's); RenderError with one line naming the fix when there is none."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise RenderError(f"cannot write videos: imageio-ffmpeg is not installed ({FFMPEG_HINT})") from None
    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:
        raise RenderError(f"cannot write videos: no ffmpeg found ({FFMPEG_HINT})") from None
    if shutil.which(exe) is None:  # $IMAGEIO_FFMPEG_EXE is taken as it is, unchecked
        raise RenderError(f"cannot write videos: IMAGEIO_FFMPEG_EXE={exe} is not an executable (unset it, or "
                          f"{FFMPEG_HINT})")
    return exe


def backend_candidates(chosen: Optional[str] = None, fallbacks: Sequence[str] = BACKENDS) -> list[str]:
    """The backends to try, in order: `chosen` (default: $MUJOCO_GL) when it names one, then the fallbacks."""
    if chosen is None:
        chosen = os.environ.get("MUJOCO_GL", "")
    chosen = chosen.strip().lower()
    first = [chosen] if chosen and chosen not in _OFF else []
    return first + [b for b in fallbacks if b not in first]


class GLRenderer:
    """A render worker process holding one dm_control env per (task, frame size).

    backends: the backends to try in order; by default the one that already worked in this process, else
    backend_candidates(). videos: check first that ffmpeg is there to write them (find_ffmpeg).
    """

    def __init__(self, backends: Optional[Sequence[str]] = None, videos: bool = True):
        global _WORKING_BACKEND
        self.proc = None
        if videos:
            self.ffmpeg = find_ffmpeg()
        if backends is None:
            backends = [_WORKING_BACKEND] if _WORKING_BACKEND else backend_candidates()
        failures = []
        for backend in backends:
            error = self._start(backend)
            if error is None:
                _WORKING_BACKEND = self.backend = backend
                return
            failures.append(f"{backend}: {error}")
        raise RenderError("no headless OpenGL backend works for MuJoCo rendering (" + "; ".join(failures) +
                          f"); install the GL libraries ({INSTALL_HINT}) or set MUJOCO_GL to a working backend")

    def _start(self, backend: str) -> Optional[str]:
        """Start a worker with `backend`; None once its probe frame rendered, else why not (one line)."""
        env = dict(os.environ, MUJOCO_GL=backend)
        if backend in BACKENDS:
            env["PYOPENGL_PLATFORM"] = backend
        else:
            env.pop("PYOPENGL_PLATFORM", None)
        # the worker imports the same tdmpc_glass as this process, installed or not
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self._stderr = tempfile.TemporaryFile()
        with quiet_fork():
            self.proc = subprocess.Popen([sys.executable, "-m", WORKER_MODULE], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self._stderr, env=env)
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT_S)
        if not ready:
            self._kill()
            return f"no answer within {START_TIMEOUT_S:.0f} s"
        try:
            status, value = pickle.load(self.proc.stdout)
        except (EOFError, pickle.UnpicklingError):
            self._kill()
            return f"the worker exited ({self._stderr_tail()})"
        if status != "ok":
            self._kill()
            return value
        self.gl_renderer, self.software = value.get("gl_renderer", ""), bool(value.get("software"))
        return None

    def describe(self) -> str:
        """e.g. 'egl (llvmpipe (LLVM 15.0.6, 256 bits); software: no shadows or reflections)'."""
        soft = "; software: no shadows or reflections" if self.software else ""
        return f"{self.backend} ({self.gl_renderer or 'unknown renderer'}{soft})"

    def _stderr_tail(self) -> str:
        try:
            self._stderr.seek(0)
            lines = [ln for ln in self._stderr.read().decode(errors="replace").splitlines() if ln.strip()]
        except (OSError, ValueError):
            lines = []
        return " ".join(lines[-1].split())[:300] if lines else "no message"

    def _kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def render(self, task: str, states: np.ndarray, height: int, width: int, camera: int = 0) -> np.ndarray:
        """Frames (n, height, width, 3) uint8 of the physics states (n, nq + nv) of `task` from `camera`."""
        if self.proc.poll() is not None:
            raise RenderError(f"the render worker is gone (exit code {self.proc.returncode})")
        try:
            pickle.dump(("render", task, np.asarray(states, np.float64), int(height), int(width), int(camera)),
                        self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.proc.stdin.flush()
            status, value = pickle.load(self.proc.stdout)
        except (BrokenPipeError, EOFError, pickle.UnpicklingError):
            self.proc.wait()
            raise RenderError(f"the render worker died (exit code {self.proc.returncode}: {self._stderr_tail()})") \
                from None
        if status != "ok":
            raise RenderError(f"rendering {task} failed: {value}")
        return value

    def frames(self, task: str, states: np.ndarray, height: int, width: int, camera: int = 0,
               chunk: int = CHUNK_FRAMES) -> Iterator[np.ndarray]:
        """The frames of `states` one by one, rendered `chunk` at a time."""
        for start in range(0, len(states), chunk):
            yield from self.render(task, states[start:start + chunk], height, width, camera)

    def close(self):
        proc = getattr(self, "proc", None)
        if proc is None or proc.poll() is not None:
            return
        try:
            pickle.dump(("close",), proc.stdin)
            proc.stdin.close()
            proc.wait(timeout=30)
        except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
            self._kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
