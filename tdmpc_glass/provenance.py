"""Provenance of a run: what produced its numbers, one record per process life in <run>/provenance.jsonl.

A record holds the versions (python, jax, jaxlib, equinox, optax, mujoco, dm_control, numpy, this package and
its git commit with a dirty flag), the devices JAX trains on (kind and count), XLA_FLAGS, whether GPU
reductions were asked to be deterministic, the allocator (experiments/allocator.py preloads tcmalloc), host,
pid and command. GPU reductions are not deterministic by default: a result repeats only with the versions,
device and XLA flags it was made with.

`runtime.deterministic_ops` adds --xla_gpu_deterministic_ops=true to XLA_FLAGS; XLA reads the variable once,
when JAX starts its backend, so `apply_runtime` runs before anything touches a device.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Optional

from . import runlayout
from .runlog import append_or_undo, end_partial_line, now_iso

DETERMINISTIC_FLAG = "--xla_gpu_deterministic_ops=true"
PACKAGES = ("jax", "jaxlib", "equinox", "optax", "mujoco", "dm-control", "numpy", "tdmpc-glass", "tensorboardX",
            "wandb")
REPO = Path(__file__).resolve().parents[1]


def use_compilation_cache() -> None:
    """Reuse compiled XLA programs across processes of the same shapes (minutes of compilation on a CPU): in
    $JAX_COMPILATION_CACHE_DIR, else ~/.cache/tdmpc-glass/jax. The launcher and the video tools both call it."""
    import jax

    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(Path.home() / ".cache" / "tdmpc-glass" / "jax")
    jax.config.update("jax_compilation_cache_dir", cache)


def apply_runtime(cfg) -> Optional[str]:
    """Put --xla_gpu_deterministic_ops=true in XLA_FLAGS when cfg.runtime.deterministic_ops asks for it; a
    one-line warning (returned, not printed) when JAX's backend started before and the flag cannot act."""
    if not cfg.runtime.deterministic_ops:
        return None
    flags = os.environ.get("XLA_FLAGS", "")
    if DETERMINISTIC_FLAG in flags.split():
        return None
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        return (f"runtime.deterministic_ops: JAX's backend started before the flag could be set in this process; "
                f"set XLA_FLAGS={DETERMINISTIC_FLAG} before starting it")
    os.environ["XLA_FLAGS"] = f"{flags} {DETERMINISTIC_FLAG}".strip()
    return None


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state(repo: Path = REPO) -> dict:
    """{"commit": sha or None, "dirty": bool or None} of the checkout this package runs from."""
    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def devices() -> dict:
    import jax

    found = jax.devices()
    return {"backend": jax.default_backend(), "kind": getattr(found[0], "device_kind", str(found[0])),
            "count": len(found), "process_count": jax.process_count()}


def allocator() -> str:
    """The allocator this process runs under (as experiments/allocator.py sets it up)."""
    return "tcmalloc" if "tcmalloc" in os.environ.get("LD_PRELOAD", "") else "system"


def record(cfg, env_step: int, resumed: bool) -> dict:
    """The provenance of this process training `cfg` from env_step."""
    flags = os.environ.get("XLA_FLAGS", "")
    return {"time": now_iso(), "env_step": int(env_step), "event": "resume" if resumed else "start",
            "host": socket.gethostname(), "pid": os.getpid(), "command": " ".join(sys.argv),
            "versions": versions(), "git": git_state(), "devices": devices(),
            "xla_flags": flags, "deterministic_ops": bool(cfg.runtime.deterministic_ops),
            "deterministic_ops_in_flags": DETERMINISTIC_FLAG in flags.split(),
            "allocator": allocator(), "jax_platforms": os.environ.get("JAX_PLATFORMS")}


def write(run_dir: Path, rec: dict) -> None:
    """Append one record to <run>/provenance.jsonl (a killed writer's partial last line cut first)."""
    path = Path(run_dir) / runlayout.PROVENANCE
    end_partial_line(path)
    with append_or_undo(path) as f:
        f.write(json.dumps(rec) + "\n")


def read(run_dir: Path) -> list[dict]:
    """The records of <run>/provenance.jsonl, oldest first (unreadable lines left out)."""
    out = []
    try:
        lines = (Path(run_dir) / runlayout.PROVENANCE).read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out
