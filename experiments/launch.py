"""The common launcher: python -m experiments.launch {run, sweep, describe, list, validate} ...

  run PHASE [--seeds 1-5] [--variant V] [--steps N] [--runs-root DIR] [--set key=value ...] [--no-progress]
  sweep PHASE [--seeds 1-5] [--variant V] [--backend local|ray] [--address ADDR] [--num-gpus G] [--num-cpus C]
        [--seeds-per-task N] [--max-retries R] [--steps N] [--runs-root DIR] [--set key=value ...] [--no-progress]
  describe PHASE [--variant V] [--seeds S] [--steps N] [--set key=value ...] [--runs-root DIR] [--json]
  resume RUN_DIR ... [--steps N] [--no-progress]
  list
  validate [--all | PHASE ... | FILE.yaml ...]

The same commands are `tdmpc-glass run|sweep|describe|list|validate ...` (experiments/cli.py).
PHASE is a name (phases/NAME.yaml), an alias, or a path to a .yaml file. Runs go to
<runs_root>/<phase>/<variant>/seed<k> (runs root: --runs-root, else $TDMPC_GLASS_RUNS, else ./runs). Every
error prints one line `error: ...` to stderr and exits 2, before anything is written.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path

import yaml

from experiments import allocator, sweep
from experiments.phases import (
    PhaseError, Resolved, Units, all_phase_files, format_seeds, intrinsic_bonus_max, parse_seeds, read_phase,
    resolve_variants, short_count, units,
)
from experiments.rundirs import LaunchError, check_run_dir, check_run_dirs, read_run_record
from tdmpc_glass import runlayout
from tdmpc_glass.config import ConfigError, config_from_dict, parse_override, to_dict


# ---- resolving what to run ----------------------------------------------------------------------------------

def cli_overrides(args) -> dict:
    """--set key=value ... then --steps N (so --steps wins over --set train.steps)."""
    overrides = dict(parse_override(text) for text in (args.set or []))
    if args.steps is not None:
        overrides["train.steps"] = args.steps
    return overrides


def check_task(resolved: Resolved) -> None:
    from tdmpc_glass.envs import validate_task

    try:
        validate_task(resolved.cfg.task)
    except ValueError as e:
        raise LaunchError(f"{resolved.source_of('task')}: task: {e}") from None


def resolve_command(args) -> tuple[list[Resolved], list[int]]:
    """Every variant the command asks for (resolved, task checked) and its seeds (--seeds, else the phase's)."""
    seeds = parse_seeds(args.seeds, source="--seeds") if args.seeds is not None else None
    plans = resolve_variants(args.phase, args.variant, cli_overrides(args))
    for resolved in plans:
        check_task(resolved)
    return plans, seeds if seeds is not None else plans[0].phase.seeds


# ---- commands -------------------------------------------------------------------------------------------------

def cmd_run(args) -> int:
    plans, seeds = resolve_command(args)
    root = runlayout.runs_root(args.runs_root)
    check_run_dirs(plans, seeds, root)
    # variants one after another; the seeds of a variant vmapped in one process
    return sweep.exit_code(sweep.run_local(sweep.make_jobs(plans, seeds, root, progress=not args.no_progress)))


def resume_jobs(run_dirs: list[str], steps: int | None, progress: bool) -> list[sweep.Job]:
    """One job per group of run dirs holding the same phase, variant and config (their seeds vmapped in one
    process), each run trained under the config its own config.yaml holds, not the phase file's of today."""
    groups: dict[str, list[tuple[Path, dict]]] = {}
    for text in run_dirs:
        path = Path(text).absolute()
        record, cfg = read_run_record(path)
        if not isinstance(record.get("phase"), dict) or not {"name", "variant"} <= set(record["phase"]):
            raise LaunchError(f"{path / runlayout.CONFIG}: names no phase and variant; not a run of this launcher")
        if steps is not None:  # extend (or shorten the target of) the run, as `run --steps` does
            record["config"]["train"]["steps"] = steps
            cfg = config_from_dict(record["config"], source=f"{path / runlayout.CONFIG} with --steps")
        check_run_dir(path, cfg, record["seed"])
        key = json.dumps([record["phase"]["name"], record["phase"]["variant"], to_dict(cfg)], sort_keys=True)
        groups.setdefault(key, []).append((path, record))
    jobs = []
    for members in groups.values():
        phase = members[0][1]["phase"]
        seeds = [record["seed"] for _, record in members]
        if len(set(seeds)) != len(seeds):
            raise LaunchError(f"{members[0][0]}: seed {members[0][1]['seed']} of {phase['name']}/{phase['variant']} "
                              f"named twice (two runs roots?); resume them one at a time")
        jobs.append(sweep.Job(phase["name"], phase["variant"], seeds, [str(path) for path, _ in members],
                              [record for _, record in members], progress))
    return jobs


def cmd_resume(args) -> int:
    if args.steps is not None and args.steps < 1:
        raise LaunchError(f"--steps: must be >= 1, got {args.steps}")
    jobs = resume_jobs(args.run_dirs, args.steps, progress=not args.no_progress)
    return sweep.exit_code(sweep.run_local(jobs))  # train skips the seeds that ended earlier


def cmd_sweep(args) -> int:
    plans, seeds = resolve_command(args)
    if args.seeds_per_task is not None and args.seeds_per_task < 1:
        raise LaunchError(f"--seeds-per-task: must be >= 1, got {args.seeds_per_task}")
    if args.backend == "local" and (args.address or args.num_gpus is not None):
        raise LaunchError("--address and --num-gpus belong to --backend ray")
    for flag, value in (("--num-gpus", args.num_gpus), ("--num-cpus", args.num_cpus),
                        ("--max-retries", args.max_retries)):
        if value is not None and value < 0:
            raise LaunchError(f"{flag}: must be >= 0, got {value:g}")
    root = runlayout.runs_root(args.runs_root)
    check_run_dirs(plans, seeds, root)
    # a progress bar where training runs in this process; Ray workers' output is interleaved, so none there
    jobs = sweep.make_jobs(plans, seeds, root, args.seeds_per_task,
                           progress=args.backend == "local" and not args.no_progress)
    if args.backend == "ray":
        def backend(todo):
            return sweep.run_ray(todo, address=args.address, num_gpus=args.num_gpus, num_cpus=args.num_cpus,
                                 max_retries=args.max_retries)
    else:
        backend = sweep.run_local
    outcomes = sweep.run_unfinished(jobs, backend)  # jobs whose seeds all ended earlier are not started
    print(f"sweep {plans[0].phase.name} ({args.backend}), runs in {root / plans[0].phase.dir_name}:")
    print(sweep.summary(outcomes))
    return sweep.exit_code(outcomes)


def units_record(u: Units) -> dict:
    """The clock, update rate and schedule points of a config (README "Units and the schedule")."""
    return {
        "action_repeat": u.action_repeat, "control_timestep_s": u.control_timestep_s,
        "decision_period_ms": u.decision_period_ms, "decisions_per_episode": u.decisions_per_episode,
        "updates_per_round": u.updates_per_round, "decisions_per_round": u.decisions_per_round,
        "updates_per_decision": u.updates_per_decision, "explore_updates": u.explore_updates,
        "update_warmup_decisions": u.decisions(u.update_warmup), "seed_updates": u.seed_updates,
        "schedule_points": [{"key": key, "env_steps": env, "decisions": u.decisions(env), "seconds": u.seconds(env)}
                            for key, env in u.points],
    }


def describe_record(resolved: Resolved, seeds: list[int], root: Path) -> dict:
    from tdmpc_glass.envs import task_spec
    from tdmpc_glass.multitask import model_obs_dim
    from tdmpc_glass.planner import mppi_iterations
    from tdmpc_glass.world_model import count_params

    env_obs_dim, act_dim = task_spec(resolved.cfg.task)
    obs_dim = model_obs_dim(resolved.cfg, env_obs_dim)  # + one task-id entry per task when multi-task
    phase = resolved.phase
    return {
        "phase": phase.name, "variant": resolved.variant, "description": phase.description,
        "benchmark_fair": phase.benchmark_fair, "task": resolved.cfg.task, "obs_dim": obs_dim, "act_dim": act_dim,
        "config": to_dict(resolved.cfg),
        "num_params": {k: int(v) for k, v in count_params(resolved.cfg, obs_dim, act_dim).items()},
        "run_dirs": [str(runlayout.run_dir(root, phase.dir_name, resolved.variant, s)) for s in seeds],
        "units": units_record(units(resolved.cfg)),
        "planner_iterations": mppi_iterations(resolved.cfg.planner.iterations, act_dim),
        "intrinsic_bonus_max_per_episode": intrinsic_bonus_max(resolved.cfg),
    }


def _points_text(u: Units, sep: str = ", ") -> str:
    """'train.steps 4M (80k s), train.expl_until 25k (500 s)': decisions, simulated time in brackets."""
    return sep.join(f"{key} {short_count(u.decisions(env))} ({short_count(u.seconds(env))} s)" for key, env in u.points)


def describe_units_lines(record: dict) -> list[str]:
    """The '# ...' lines of `describe` on the clock, update rate, schedule points, MPPI iterations and bonus."""
    u, cfg = record["units"], record["config"]
    repeat, dt_ms = u["action_repeat"], 1000 * u["control_timestep_s"]
    lines = [(f"clock: a decision every {u['decision_period_ms']:g} ms (action repeat {repeat} x {dt_ms:g} ms control "
              f"step), {u['decisions_per_episode']:,} decisions per episode "
              f"({u['decisions_per_episode'] * u['decision_period_ms'] / 1000:g} s)"),
             (f"updates: {u['updates_per_round']} per round of {u['decisions_per_round']} decisions = "
              f"{u['updates_per_decision']:g} per decision (TD-MPC2: 1 per decision); "
              + (f"while exploring too, from decision {u['update_warmup_decisions']:,.0f} on (steady, no burst)"
                 if u["explore_updates"] == "steady" else
                 f"none while exploring, then {u['seed_updates']:,} at once when the uniform-random phase ends "
                 f"(burst)")),
             f"schedule points in decisions (env steps = decisions x {repeat}; simulated time): " + ", ".join(
                 f"{p['key']} {p['decisions']:,.0f} ({p['seconds']:,.6g} s)" for p in u["schedule_points"])]
    base = cfg["planner"]["iterations"]
    extra = record["planner_iterations"] - base
    lines.append(f"planner: {record['planner_iterations']} MPPI iterations (planner.iterations {base}"
                 + (f" + {extra}: act_dim {record['act_dim']} >= 20)" if extra else ")"))
    bonus = record["intrinsic_bonus_max_per_episode"]
    if bonus is not None:
        g, t = cfg["glass"], cfg["train"]
        lines.append(f"intrinsic bonus: at most {g['intrinsic_coef']:g} x ln {g['num_clusters']} per decision x "
                     f"{t['episode_length']:,} decisions = {bonus:.1f} per episode, paid once per decision "
                     f"(the research log's \"max bonus ~210\")")
    return lines


def cmd_describe(args) -> int:
    plans, seeds = resolve_command(args)
    records = [describe_record(r, seeds, runlayout.runs_root(args.runs_root)) for r in plans]
    for record in records:
        if args.json:  # one JSON object per line: one line for a single variant
            print(json.dumps(record))
            continue
        fair = "benchmark-fair" if record["benchmark_fair"] else "NOT benchmark-fair (shaping or env edits)"
        print(f"# phase {record['phase']}, variant {record['variant']}: {fair}")
        for line in textwrap.wrap(record["description"], width=110):
            print(f"# {line}")
        print(f"# task {record['task']}: obs_dim {record['obs_dim']}, act_dim {record['act_dim']}")
        print("# parameters: " + ", ".join(f"{k} {v:,}" for k, v in record["num_params"].items()))
        for line in describe_units_lines(record):
            for part in textwrap.wrap(line, width=110, subsequent_indent="    "):
                print(f"# {part}")
        print(f"# run dirs (seeds {format_seeds(seeds)}):")
        for path in record["run_dirs"]:
            print(f"#   {path}")
        print(yaml.safe_dump(record["config"], sort_keys=False))
    return 0


def _first_line(text: str, width: int = 100) -> str:
    line = (text.strip().splitlines() or [""])[0]
    return line if len(line) <= width else line[: width - 3].rstrip() + "..."


def _schedule_line(plans: list[Resolved], all_units: list[Units]) -> str:
    """The schedule points of a phase's variants (once when they agree), decisions with simulated time."""
    texts = [_points_text(u) for u in all_units]
    if len(set(texts)) == 1:
        return texts[0]
    return "; ".join(f"{r.variant}: {text}" for r, text in zip(plans, texts))


def cmd_list(args) -> int:
    """One row per phase; under it, its schedule points in decisions (simulated time in brackets). dec_ms: the
    decision period; dec/ep: decisions per episode; upd/dec: updates per decision, one value per variant;
    explore: how updates run while actions are random (burst: TD-MPC2's, steady: the log's loop)."""
    header = ("phase", "extends", "fair", "seeds", "variants", "dec_ms", "dec/ep", "upd/dec", "explore",
              "description")
    rows, broken = [], 0
    for path in all_phase_files():
        try:
            p = read_phase(path)
            plans = resolve_variants(str(path))
            all_units = [units(r.cfg) for r in plans]
            per_variant = lambda f: ",".join(dict.fromkeys(f(u) for u in all_units))  # noqa: E731
            rows.append(((p.name, p.extends or "-", "yes" if p.benchmark_fair else "NO", format_seeds(p.seeds),
                          ",".join(p.variant_names()), per_variant(lambda u: f"{u.decision_period_ms:g}"),
                          per_variant(lambda u: f"{u.decisions_per_episode}"),
                          ",".join(f"{u.updates_per_decision:g}" for u in all_units),
                          per_variant(lambda u: u.explore_updates), _first_line(p.description)),
                         _schedule_line(plans, all_units)))
        except (PhaseError, ConfigError) as e:
            print(f"error: {e}", file=sys.stderr)
            rows.append(((path.stem, "?", "?", "?", "?", "?", "?", "?", "?", "INVALID (tdmpc-glass validate)"), ""))
            broken += 1
    widths = [max(len(r[i]) for r in [header] + [row for row, _ in rows]) for i in range(len(header) - 1)]
    for row, schedule in [(header, "")] + rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
        if schedule:
            print(f"    decisions (simulated time): {schedule}")
    return 2 if broken else 0


def cmd_validate(args) -> int:
    if args.all == bool(args.phases):
        raise LaunchError("validate: name phases or .yaml files, or pass --all (not both)")
    targets = [str(p) for p in all_phase_files()] if args.all else args.phases
    failed = 0
    owners: dict[str, str] = {}  # phase name or alias -> file, so results merge under one canonical name
    folded: dict[str, str] = {}  # file stem and runs dir, case-folded -> file: distinct on every disk
    for target in targets:
        try:
            plans = resolve_variants(target)
            for resolved in plans:
                check_task(resolved)
            phase = plans[0].phase
            for name in [phase.name] + phase.aliases:
                if owners.setdefault(name, phase.source) != phase.source:
                    raise LaunchError(f"{phase.source}: '{name}' (name or alias) is also a name or alias of "
                                      f"{owners[name]}: results would merge under two phases")
            for what, name in (("file name", phase.path.stem), ("runs directory", phase.dir_name)):
                if folded.setdefault(name.lower(), phase.source) != phase.source:
                    raise LaunchError(f"{phase.source}: {what} '{name}' equals that of {folded[name.lower()]} "
                                      f"on a case-insensitive disk; name the file <name>_<tag>.yaml")
            print(f"ok  {phase.source}  ({', '.join(r.variant for r in plans)})")
        except (PhaseError, ConfigError, LaunchError) as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


# ---- command line ---------------------------------------------------------------------------------------------

def add_commands(commands) -> None:
    """The launcher's subcommands (run, describe, sweep, list, validate) on an argparse subparsers action;
    each sets `func`, the command that `run_command` calls."""

    def phase_arguments(sub):
        sub.add_argument("phase", help="phase name (phases/NAME.yaml) or path to a phase .yaml file")
        sub.add_argument("--variant", default=None, help="one variant (default: every variant, one after another)")
        sub.add_argument("--seeds", default=None, help="seeds, e.g. 1-5, 3, 1,3,5 or 1-3,7 (default: the phase's)")
        sub.add_argument("--steps", type=int, default=None, help="env steps per seed (sets train.steps)")
        sub.add_argument("--set", action="append", metavar="KEY=VALUE", help="dotted config override (repeatable)")
        sub.add_argument("--runs-root", default=None,
                         help=f"runs root (default: ${runlayout.RUNS_ENV}, else ./{runlayout.DEFAULT_RUNS_ROOT})")

    run = commands.add_parser("run", help="train a phase: each variant's seeds vmapped in one process")
    phase_arguments(run)
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)

    describe = commands.add_parser("describe", help="resolved config, task dims, parameter counts, run dirs")
    phase_arguments(describe)
    describe.add_argument("--json", action="store_true", help="one JSON object per variant, one per line")
    describe.set_defaults(func=cmd_describe)

    sweep_cmd = commands.add_parser("sweep", help="train every (variant, seed group) of a phase, locally or on "
                                                  "Ray; print a summary table")
    phase_arguments(sweep_cmd)
    sweep_cmd.add_argument("--backend", choices=("local", "ray"), default="local",
                           help="local: one after another in this process (default); ray: one Ray task each")
    sweep_cmd.add_argument("--address", default=None,
                           help="Ray cluster to join: HEAD:6379 or auto (default: start Ray here)")
    sweep_cmd.add_argument("--num-gpus", type=float, default=None,
                           help="GPUs per Ray task (default: 1 if the cluster has GPUs, else 0; fractions share a GPU)")
    sweep_cmd.add_argument("--num-cpus", type=float, default=1, help="CPUs per Ray task (default 1)")
    sweep_cmd.add_argument("--max-retries", type=int, default=3,
                           help="Ray retries of a task whose worker died; a retry resumes from the last checkpoint")
    sweep_cmd.add_argument("--seeds-per-task", type=int, default=None,
                           help="seeds per job, vmapped in one process (default: all seeds of a variant in one job)")
    sweep_cmd.add_argument("--no-progress", action="store_true", help="no progress bar (local backend)")
    sweep_cmd.set_defaults(func=cmd_sweep)

    resume = commands.add_parser(
        "resume", help="train run dirs on under the config their own config.yaml holds (runs started by older "
                       "code, imported official checkpoints)")
    resume.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="runs/<phase>/<variant>/seed<k> directories")
    resume.add_argument("--steps", type=int, default=None, help="env steps per seed (extends the runs)")
    resume.add_argument("--no-progress", action="store_true", help="no progress bar")
    resume.set_defaults(func=cmd_resume)

    commands.add_parser("list", help="phases with parents, fairness, seeds, variants").set_defaults(func=cmd_list)

    validate = commands.add_parser("validate", help="resolve every variant of phases; report OK or the error")
    validate.add_argument("phases", nargs="*", metavar="PHASE", help="phase names or .yaml files")
    validate.add_argument("--all", action="store_true", help="every file in phases/")
    validate.set_defaults(func=cmd_validate)


def build_parser(prog: str = "python -m experiments.launch") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Run, describe, list and validate phases.")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed launcher command: its exit code; an error in the input prints one line and returns 2."""
    try:
        return args.func(args)
    except (PhaseError, ConfigError, LaunchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `describe ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv))  # usage errors exit 2 (argparse's default)


if __name__ == "__main__":
    allocator.use_tcmalloc()
    sys.exit(main())
