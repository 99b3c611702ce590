"""The common launcher: python -m experiments.launch {run, describe, list, validate} ...

  run PHASE --seeds 1-5 [--variant V] [--steps N] [--runs-root DIR] [--set key=value ...]
  describe PHASE [--variant V] [--json]
  list
  validate [--all | PHASE ... | FILE.yaml ...]

Every error prints one line `error: ...` and exits 2 before anything is written.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import yaml

from experiments.phases import DEFAULT_VARIANT, PhaseError, all_phases, parse_seeds, resolve
from tdmpc_glass.checkpoint import CheckpointError
from tdmpc_glass.config import ConfigError, config_from_dict, parse_override, to_dict

RUNS_ENV = "TDMPC_GLASS_RUNS"


class UsageError(ValueError):
    pass


def runs_root(arg: str | None) -> Path:
    return Path(arg or os.environ.get(RUNS_ENV) or "runs")


def run_dir(root: Path, phase: str, variant: str, seed: int) -> Path:
    return root / phase / variant / f"seed{seed}"


def cli_overrides(args) -> dict:
    overrides = dict(parse_override(s) for s in (args.set or []))
    if getattr(args, "steps", None) is not None:
        overrides["train.steps"] = args.steps
    return overrides


def resolve_all(args) -> list[tuple[str, object, object]]:
    """[(variant, phase, cfg)] for the requested variant or every variant of the phase."""
    from tdmpc_glass.envs import validate_task
    phase, _ = resolve(args.phase, None if args.variant is None else args.variant, cli_overrides(args))
    variants = [args.variant] if args.variant else phase.variant_names()
    out = []
    for v in variants:
        phase, cfg = resolve(args.phase, v, cli_overrides(args))
        try:
            validate_task(cfg.task)
        except ValueError as e:
            raise UsageError(f"task: {e}") from None
        out.append((v, phase, cfg))
    return out


def first_difference(a: dict, b: dict, prefix: str = "") -> str | None:
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            found = first_difference(x, y, f"{prefix}{key}.")
            if found:
                return found
        elif x != y:
            return f"{prefix}{key} ({y!r} there, {x!r} now)"
    return None


def run_record(phase, variant: str, seed: int, cfg) -> dict:
    return {"phase": {"name": phase.name, "variant": variant, "description": phase.description,
                      "benchmark_fair": phase.benchmark_fair, "aliases": phase.aliases},
            "seed": seed, "config": to_dict(cfg)}


def check_existing(path: Path, cfg) -> None:
    """A run dir may be resumed or extended (train.steps), never reused for another config."""
    config_file = path / "config.yaml"
    if not config_file.exists():
        return
    try:
        old = yaml.safe_load(config_file.read_text())["config"]
        config_from_dict(old, str(config_file))
    except (OSError, yaml.YAMLError, KeyError, TypeError, ConfigError):
        raise UsageError(f"{config_file}: unreadable or foreign config.yaml; move it away or use another --runs-root")
    new = to_dict(replace(cfg, train=replace(cfg.train, steps=0)))
    old["train"]["steps"] = 0
    diff = first_difference(new, old)
    if diff:
        raise UsageError(f"{config_file} holds a different config: {diff}; use another --runs-root or phase")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def cmd_run(args) -> int:
    seeds = parse_seeds(args.seeds)
    root = runs_root(args.runs_root)
    plans = resolve_all(args)
    for variant, phase, cfg in plans:  # check everything before writing anything
        for seed in seeds:
            check_existing(run_dir(root, phase.name, variant, seed), cfg)
    enable_compilation_cache()
    from tdmpc_glass.train import train
    code = 0
    for variant, phase, cfg in plans:
        dirs = [run_dir(root, phase.name, variant, s) for s in seeds]
        for seed, d in zip(seeds, dirs):
            d.mkdir(parents=True, exist_ok=True)
            write_atomic(d / "config.yaml", yaml.safe_dump(run_record(phase, variant, seed, cfg), sort_keys=False))
        print(f"{phase.name}/{variant}: seeds {args.seeds} -> {dirs[0].parent}", file=sys.stderr)
        result = train(cfg, seeds, dirs, progress=not args.no_progress)
        if result in (130, 143):
            return result
        code = code or result
    return code


def enable_compilation_cache() -> None:
    """Reuse compiled XLA programs across runs of the same shapes (minutes of compile on a CPU)."""
    import jax
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(Path.home() / ".cache" / "tdmpc-glass" / "jax")
    jax.config.update("jax_compilation_cache_dir", cache)


def cmd_describe(args) -> int:
    from tdmpc_glass.envs import task_spec
    from tdmpc_glass.world_model import count_params
    root = runs_root(args.runs_root)
    seeds = parse_seeds(args.seeds) if args.seeds else parse_seeds(resolve(args.phase)[0].seeds)
    records = []
    for variant, phase, cfg in resolve_all(args):
        obs_dim, act_dim = task_spec(cfg.task)
        records.append({
            "phase": phase.name, "variant": variant, "description": phase.description,
            "benchmark_fair": phase.benchmark_fair, "task": cfg.task, "obs_dim": obs_dim, "act_dim": act_dim,
            "config": to_dict(cfg), "num_params": count_params(cfg, obs_dim, act_dim),
            "run_dirs": [str(run_dir(root, phase.name, variant, s)) for s in seeds],
        })
    if args.json:
        print(json.dumps(records[0] if len(records) == 1 else records, indent=1))
        return 0
    for r in records:
        print(f"# phase {r['phase']} / variant {r['variant']}  "
              f"({'benchmark-fair' if r['benchmark_fair'] else 'NOT benchmark-fair'})")
        if r["description"]:
            print("# " + r["description"].replace("\n", "\n# "))
        print(f"# task {r['task']}: obs {r['obs_dim']}, action {r['act_dim']}")
        print("# parameters: " + ", ".join(f"{k} {v:,}" for k, v in r["num_params"].items()))
        print("# run dirs: " + " ".join(r["run_dirs"]))
        print(yaml.safe_dump(r["config"], sort_keys=False))
    return 0


def cmd_list(args) -> int:
    rows = [(p.name, p.extends or "-", "yes" if p.benchmark_fair else "NO", ",".join(p.variant_names()),
             (p.description.splitlines() or [""])[0]) for p in all_phases()]
    widths = [max(len(r[i]) for r in rows + [("phase", "extends", "fair", "variants", "")]) for i in range(4)]
    print("  ".join(h.ljust(w) for h, w in zip(("phase", "extends", "fair", "variants"), widths)) + "  description")
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
    return 0


def cmd_validate(args) -> int:
    from experiments.phases import PHASES_DIR
    targets = args.phases or (sorted(str(p) for p in PHASES_DIR.glob("*.yaml")) if args.all else None)
    if not targets:
        raise UsageError("validate: name phases or files, or pass --all")
    failed = 0
    for target in targets:
        try:
            phase, _ = resolve(target)
            for v in phase.variant_names():
                resolve(target, v)
            parse_seeds(phase.seeds)
            print(f"ok     {target}")
        except (PhaseError, ConfigError) as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.launch", description="Run and inspect phases.")
    sub = p.add_subparsers(dest="command", required=True)

    def phase_args(sp, seeds_required=False):
        sp.add_argument("phase", help="phase name (phases/NAME.yaml) or path to a phase YAML")
        sp.add_argument("--variant", default=None, help="one variant (default: every variant of the phase)")
        sp.add_argument("--steps", type=int, default=None, help="env steps per seed (train.steps)")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="extra dotted override (repeatable)")
        sp.add_argument("--runs-root", default=None, help=f"runs root (default: ${RUNS_ENV} or ./runs)")
        sp.add_argument("--seeds", required=seeds_required, default=None, help="seeds, e.g. 1-5 or 1,3")

    run = sub.add_parser("run", help="train a phase (all seeds vmapped in one process)")
    phase_args(run, seeds_required=True)
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)
    describe = sub.add_parser("describe", help="resolved config, parameter counts and run dirs")
    phase_args(describe)
    describe.add_argument("--json", action="store_true")
    describe.set_defaults(func=cmd_describe)
    sub.add_parser("list", help="phases with descriptions and fairness").set_defaults(func=cmd_list)
    validate = sub.add_parser("validate", help="check phase files")
    validate.add_argument("phases", nargs="*")
    validate.add_argument("--all", action="store_true")
    validate.set_defaults(func=cmd_validate)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (PhaseError, ConfigError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except CheckpointError as e:  # found while resuming: a foreign or damaged checkpoint
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
