"""Run directories as the launcher and its sweep backends use them: the config record of a run, the check that
a run dir may be (re)used for a config, writing that record, and the launcher's one error type.

Imported by both experiments.sweep (whose workers check and write run dirs) and experiments.launch; it imports
neither. Paths, file names and the atomic write come from tdmpc_glass.runlayout.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from experiments.phases import Resolved
from tdmpc_glass import runlayout
from tdmpc_glass.config import Config, ConfigError, config_from_dict, to_dict


class LaunchError(ValueError):
    """A one-line message naming what is wrong and where (the launcher prints it and exits 2)."""


def run_record(resolved: Resolved, seed: int) -> dict:
    """What a run's config file holds: phase metadata, seed, the fully resolved config."""
    phase = resolved.phase
    return {
        "phase": {"name": phase.name, "variant": resolved.variant, "description": phase.description,
                  "benchmark_fair": phase.benchmark_fair, "aliases": list(phase.aliases)},
        "seed": seed,
        "config": to_dict(resolved.cfg),
    }


def check_run_dir(path: Path, cfg: Config, seed: int) -> None:
    """A run dir may be new, or resumed / extended with the same config; never reused for another one."""
    config_file = path / runlayout.CONFIG
    if path.exists() and not path.is_dir():
        raise LaunchError(f"{path}: exists and is not a directory")
    if not config_file.exists():
        leftovers = [p.name for p in path.iterdir() if not p.name.endswith(".tmp")] if path.is_dir() else []
        if leftovers:
            raise LaunchError(f"{path}: holds files ({', '.join(sorted(leftovers)[:3])}) but no "
                              f"{runlayout.CONFIG}; not a run of this launcher: move it away or use another "
                              f"--runs-root")
        return
    try:
        record = yaml.safe_load(config_file.read_text())
        old_cfg = config_from_dict(record["config"], source=str(config_file))
        old_seed = record["seed"]
    except ConfigError as e:
        raise LaunchError(f"{e} (an existing run: move it away or use another --runs-root)") from None
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise LaunchError(f"{config_file}: unreadable or not a run config ({type(e).__name__}); "
                          f"move it away or use another --runs-root") from None
    if old_seed != seed:
        raise LaunchError(f"{config_file}: holds seed {old_seed!r}, expected {seed}")
    diff = runlayout.config_difference(to_dict(cfg), to_dict(old_cfg))
    if diff:
        raise LaunchError(f"{config_file} holds a different config: {diff} (only train.steps may change to "
                          f"resume a run; use another --runs-root or phase variant)")


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
    """Reuse compiled XLA programs across runs of the same shapes (minutes of compilation on a CPU)."""
    import jax

    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(Path.home() / ".cache" / "tdmpc-glass" / "jax")
    jax.config.update("jax_compilation_cache_dir", cache)
