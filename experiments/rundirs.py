"""Run directories as the launcher and its sweep backends use them: the config record of a run, the check that
a run dir may be (re)used for a config, writing that record, the launcher's one error type, and JAX's set-up
before training (the platform where no GPU is visible, the compilation cache).

Imported by both experiments.sweep (whose workers check and write run dirs) and experiments.launch; it imports
neither. Paths, file names and the atomic write come from tdmpc_glass.runlayout.
"""
from __future__ import annotations

import ctypes
import importlib.metadata
import os
import re
import sys
from pathlib import Path

import yaml

from experiments.phases import Resolved
from tdmpc_glass import runlayout
from tdmpc_glass.config import Config, ConfigError, config_from_dict, to_dict


# The meaning of a run's numbers that its config cannot say, recorded in every run's config.yaml. 2: the intrinsic
# bonus is paid once per decision (before, records without this key: once per simulator step, x action_repeat).
CLOCK_VERSION = 2


class LaunchError(ValueError):
    """A one-line message naming what is wrong and where (the launcher prints it and exits 2)."""


def run_record(resolved: Resolved, seed: int) -> dict:
    """What a run's config file holds: phase metadata, seed, the fully resolved config."""
    phase = resolved.phase
    return {
        "phase": {"name": phase.name, "variant": resolved.variant, "description": phase.description,
                  "benchmark_fair": phase.benchmark_fair, "aliases": list(phase.aliases)},
        "seed": seed,
        "clock": CLOCK_VERSION,
        "config": to_dict(resolved.cfg),
    }


def check_run_dir(path: Path, cfg: Config, seed: int) -> None:
    """A run dir may be new, or resumed / extended with the same config; never reused for another one."""
    config_file = path / runlayout.CONFIG
    if path.exists() and not path.is_dir():
        raise LaunchError(f"{path}: exists and is not a directory")
    if not config_file.exists():
        leftovers = ([p.name for p in path.iterdir() if not p.name.endswith(".tmp") and p.name != runlayout.LOCK]
                     if path.is_dir() else [])
        if leftovers:
            raise LaunchError(f"{path}: holds files ({', '.join(sorted(leftovers)[:3])}) but no "
                              f"{runlayout.CONFIG}; not a run of this launcher: move it away or use another "
                              f"--runs-root")
        return
    record, old_cfg = read_run_record(path)
    old_seed = record["seed"]
    if record.get("clock", 1) < 2 and old_cfg.glass.enabled and old_cfg.glass.intrinsic_coef > 0 \
            and old_cfg.train.action_repeat > 1:
        raise LaunchError(f"{config_file}: this run's intrinsic bonus was paid once per simulator step (x "
                          f"action_repeat {old_cfg.train.action_repeat}); it is now paid once per decision, so "
                          f"resuming would change the run's reward: move it away or use another --runs-root")
    if old_seed != seed:
        raise LaunchError(f"{config_file}: holds seed {old_seed!r}, expected {seed}")
    diff = runlayout.config_difference(to_dict(cfg), to_dict(old_cfg))
    if diff:
        raise LaunchError(f"{config_file} holds a different config: {diff} (only train.steps may change to "
                          f"resume a run; use another --runs-root or phase variant)")


def read_run_record(path: Path) -> tuple[dict, Config]:
    """A run dir's config.yaml record (phase, seed, clock, config) and its config, checked against the schema
    (keys added since the run started read their defaults). Raises LaunchError naming the file."""
    config_file = path / runlayout.CONFIG
    try:
        record = yaml.safe_load(config_file.read_text())
        cfg = config_from_dict(record["config"], source=str(config_file))
        record["seed"]  # noqa: B018 (a KeyError names a record that is not a run's)
    except ConfigError as e:
        raise LaunchError(f"{e} (an existing run: move it away or use another --runs-root)") from None
    except FileNotFoundError:
        raise LaunchError(f"{path}: no {runlayout.CONFIG}; not a run directory of this launcher") from None
    except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError) as e:  # ValueError: not UTF-8
        raise LaunchError(f"{config_file}: unreadable or not a run config ({type(e).__name__}); "
                          f"move it away or use another --runs-root") from None
    return record, cfg


def check_run_dirs(plans: list[Resolved], seeds: list[int], root: Path) -> None:
    """Every run dir of every variant, before anything is written."""
    for resolved in plans:
        for seed in seeds:
            check_run_dir(runlayout.run_dir(root, resolved.phase.dir_name, resolved.variant, seed), resolved.cfg,
                          seed)


def write_run_config(path: Path, record: dict) -> None:
    """Create the run dir if needed and (re)write its config file atomically."""
    path.mkdir(parents=True, exist_ok=True)
    runlayout.write_atomic(path / runlayout.CONFIG, yaml.safe_dump(record, sort_keys=False))


def enable_compilation_cache() -> None:
    """Before training starts JAX: choose_platform(), then reuse compiled XLA programs across runs of the same
    shapes (minutes of compilation on a CPU)."""
    choose_platform()
    from tdmpc_glass.provenance import use_compilation_cache

    use_compilation_cache()


_CUDA_PLUGIN = re.compile(r"^jax[-_]cuda\d+[-_](pjrt|plugin)$")


def cuda_plugin() -> str | None:
    """The installed distribution of JAX's CUDA plugin (what `.[gpu]` installs, e.g. jax-cuda12-pjrt); None."""
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if _CUDA_PLUGIN.match(name):
            return name
    return None


def visible_gpus() -> int | None:
    """NVIDIA GPUs the CUDA driver shows this process (0 without a driver or with CUDA_VISIBLE_DEVICES hiding
    them all); None when the driver cannot be asked."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0  # no NVIDIA driver
    try:
        if cuda.cuInit(0) != 0:
            return 0  # e.g. CUDA_ERROR_NO_DEVICE
        count = ctypes.c_int(0)
        if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return None
        return int(count.value)
    except (AttributeError, OSError):
        return None


def choose_platform() -> None:
    """Where JAX's CUDA plugin is installed but no GPU is visible, JAX prints a long warning (or, asked for
    cuda, a traceback) when it starts. Say it in one line instead: with JAX_PLATFORMS unset, note that training
    runs on the CPU and set JAX_PLATFORMS=cpu for this process; with JAX_PLATFORMS asking for cuda/gpu, raise
    LaunchError naming the fix. Nothing happens where a GPU is visible, the plugin is absent, or JAX_PLATFORMS
    names other platforms (the user's choice)."""
    asked = os.environ.get("JAX_PLATFORMS", "").strip().lower()
    wants_gpu = bool({"cuda", "gpu"} & {p.strip() for p in asked.split(",")})
    if asked and not wants_gpu:
        return
    plugin = cuda_plugin()
    if plugin is None or visible_gpus() != 0:
        return
    if wants_gpu:
        raise LaunchError(f"JAX_PLATFORMS={asked} but no GPU is visible here (no NVIDIA driver, or "
                          f"CUDA_VISIBLE_DEVICES hides them): run where one is, or set JAX_PLATFORMS=cpu")
    print(f"note: no GPU is visible here though JAX's CUDA plugin ({plugin}, the .[gpu] extra) is installed: "
          f"training on the CPU (set JAX_PLATFORMS=cpu to say so and skip this check)", file=sys.stderr, flush=True)
    os.environ["JAX_PLATFORMS"] = "cpu"
    if "jax" in sys.modules:  # imported already: JAX read the variable then, but starts no backend before use
        sys.modules["jax"].config.update("jax_platforms", "cpu")
