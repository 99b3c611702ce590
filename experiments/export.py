"""Runs into the tools researchers already watch, and what a run was made with:

  tdmpc-glass export RUN_OR_ROOT ... --to tensorboard|wandb [--to ...] [--mode offline|online]
                     [--project P] [--entity E] [--group G]
  tdmpc-glass show RUN_DIR [--json]

`export` sends every env step of each run (a run dir <phase>/<variant>/seed<k>, or every run under a folder)
that its tracker does not hold yet: eval.csv and train.csv against env steps, evaluation videos and K timelines.
It follows the same rules as the live export (tdmpc_glass/tracking): a step is sent once, so running it twice
sends nothing the second time; the last step of a run that has not ended waits until it ends. A run another
process is writing is skipped (its own process exports it, when its config asks). W&B's mode defaults to
offline: `wandb sync <run>/wandb/offline-run-*` uploads later.

`show` prints a run's status, its config record and its provenance (versions, devices, commit, XLA flags and
allocator of every process that trained it), and what its exports have sent.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tdmpc_glass import provenance, runlayout
from tdmpc_glass.config import TrackingConfig
from tdmpc_glass.tracking.exporter import read_config

USAGE = 2


def find_runs(target: Path) -> list[Path]:
    """The run dirs at or under `target` (a seed<k> dir holding status.json); restarted attempts are exported
    only when named directly."""
    if runlayout.seed_of(target) is not None and (target / runlayout.STATUS).is_file():
        return [target]
    return sorted(p.parent for p in target.rglob(runlayout.STATUS)
                  if runlayout.seed_of(p.parent) is not None and runlayout.RESTARTS not in p.parent.parts)


def export_run(run_dir: Path, tracking: TrackingConfig) -> tuple[str, dict]:
    """('ok' | 'skipped: why' | 'failed: why', {tracker: steps sent}) for one run dir."""
    from tdmpc_glass.tracking.exporter import RunExporter

    failures = []
    try:
        with runlayout.RunLock([run_dir], command=" ".join(sys.argv)):
            status = runlayout.read_status(run_dir).get("status")
            exporter = RunExporter(run_dir, tracking, on_failure=lambda tracker, text: failures.append(
                f"{tracker}: {text}"))
            exporter.catch_up()
            exporter.close(final=status not in (None, runlayout.RUNNING, runlayout.INTERRUPTED))
            sent = exporter.sent_now()
    except runlayout.RunLockedError as e:
        return f"skipped: {e}", {}
    if failures:
        return "failed: " + "; ".join(failures), sent
    return "ok", sent


def cmd_export(args) -> int:
    modes = set(args.to)
    tracking = TrackingConfig(tensorboard="tensorboard" in modes, wandb=args.mode if "wandb" in modes else "off",
                              project=args.project, entity=args.entity, group=args.group)
    runs = []
    for text in args.runs:
        target = Path(text)
        if not target.is_dir():
            print(f"error: {target}: no such run dir or runs root", file=sys.stderr)
            return USAGE
        found = find_runs(target)
        if not found:
            print(f"error: {target}: holds no run (no <phase>/<variant>/seed<k>/{runlayout.STATUS})",
                  file=sys.stderr)
            return USAGE
        runs += found
    failed = 0
    for run_dir in runs:
        outcome, sent = export_run(run_dir, tracking)
        counts = ", ".join(f"{tracker} {n} step{'s' if n != 1 else ''}" for tracker, n in sent.items()) or "nothing"
        print(f"{run_dir}: {outcome}; sent {counts}")
        failed += outcome.startswith("failed")
    return 1 if failed else 0


def show_record(run_dir: Path) -> dict:
    return {"run_dir": str(run_dir), "status": runlayout.read_status(run_dir), "config": read_config(run_dir),
            "provenance": provenance.read(run_dir),
            "tracking": runlayout.read_json_object(run_dir / runlayout.TRACKING)}


def provenance_lines(record: dict) -> list[str]:
    """One process life of a run in a few lines."""
    v, git, dev = record.get("versions", {}), record.get("git", {}), record.get("devices", {})
    commit = (git.get("commit") or "?")[:12] + (" (dirty)" if git.get("dirty") else "")
    return [f"{record.get('time', '?')} {record.get('event', '?')} at env step {record.get('env_step', '?')} "
            f"on {record.get('host', '?')} (pid {record.get('pid', '?')})",
            f"  devices: {dev.get('count', '?')} x {dev.get('kind', '?')} ({dev.get('backend', '?')}); allocator "
            f"{record.get('allocator', '?')}; XLA_FLAGS {record.get('xla_flags') or '(none)'}; deterministic ops "
            f"{'on' if record.get('deterministic_ops_in_flags') else 'off'}",
            "  versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + f"; commit {commit}"]


def cmd_show(args) -> int:
    run_dir = Path(args.run)
    if not (run_dir / runlayout.CONFIG).is_file() and not (run_dir / runlayout.STATUS).is_file():
        print(f"error: {run_dir}: not a run dir (no {runlayout.CONFIG} or {runlayout.STATUS})", file=sys.stderr)
        return USAGE
    record = show_record(run_dir)
    if args.json:
        print(json.dumps(record))
        return 0
    status, config = record["status"], record["config"] or {}
    phase = config.get("phase", {}) if isinstance(config, dict) else {}
    print(f"# run {run_dir}: phase {phase.get('name', '?')}, variant {phase.get('variant', '?')}, "
          f"seed {config.get('seed', '?')}")
    print(f"# status {status.get('status', '?')} at env step {status.get('env_step', '?')}; best MPPI "
          f"{status.get('best_mppi_return')}")
    print(f"# provenance ({len(record['provenance'])} process lives, {runlayout.PROVENANCE}):")
    for life in record["provenance"]:
        for line in provenance_lines(life):
            print(f"#   {line}")
    for tracker, state in record["tracking"].items():
        if isinstance(state, dict):
            print(f"# export {tracker}: sent up to env step {state.get('sent', '-')}"
                  + (f", W&B run id {state['id']}" if state.get("id") else ""))
    return 0


def build_parser(prog: str = "tdmpc-glass") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="send runs to TensorBoard and/or W&B (idempotent)")
    export.add_argument("runs", nargs="+", metavar="RUN_OR_ROOT", help="run dirs or folders holding runs")
    export.add_argument("--to", action="append", choices=("tensorboard", "wandb"), required=True,
                        help="tracker (repeatable)")
    export.add_argument("--mode", choices=("offline", "online"), default="offline", help="W&B mode (default offline)")
    export.add_argument("--project", default=TrackingConfig.project, help="W&B project")
    export.add_argument("--entity", default=None, help="W&B entity")
    export.add_argument("--group", default=None, help="W&B group (default <phase>/<variant>)")
    export.set_defaults(func=cmd_export)
    show = commands.add_parser("show", help="a run's status, config, provenance and exports")
    show.add_argument("run", metavar="RUN_DIR")
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.set_defaults(func=cmd_show)
    return parser


def main(argv: list[str] | None = None, command: str | None = None) -> int:
    """`command` is export or show when called as `tdmpc-glass export ...` (argv then holds its arguments)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(([command] if command else []) + argv)
    return args.func(args)


def export_main(argv: list[str] | None = None) -> int:
    return main(argv, "export")


def show_main(argv: list[str] | None = None) -> int:
    return main(argv, "show")


if __name__ == "__main__":
    sys.exit(main())
