"""The `tdmpc-glass` console command (pyproject.toml [project.scripts]): one entry to every tool of the project.

  tdmpc-glass run|sweep|describe|list|validate ...   the launcher (experiments/launch.py; same flags as
                                                    `python -m experiments.launch`)
  tdmpc-glass stats ...        seed statistics and the phase ledger (analysis/seed_stats.py)
  tdmpc-glass curves ...       learning curves (analysis/curves.py)
  tdmpc-glass dashboard ...    the live dashboard (analysis/dashboard.py)
  tdmpc-glass video ...        K-labelled rollout videos (videos/render.py)
  tdmpc-glass bench ...        benchmarks (experiments/bench.py)
  tdmpc-glass export ...       runs to TensorBoard / Weights & Biases (experiments/export.py)
  tdmpc-glass show RUN_DIR     a run's status, provenance and exports (experiments/export.py)
  tdmpc-glass import-official ...   an official TD-MPC2 checkpoint as a run (experiments/official_import.py)
  tdmpc-glass check-official ...    numerical equality with the official TD-MPC2 (experiments/official_check.py)

The forwarded ones hand every argument after their name to that tool's `main(argv)` (so `tdmpc-glass stats --help`
is the tool's own help); each is imported only when named, so the launcher never loads analysis, Dash or
the video code.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from experiments import allocator, launch

PROG = "tdmpc-glass"
TRAINING = ("run", "sweep", "resume", "bench")  # commands that run XLA programs at length: under tcmalloc (allocator.py)
# subcommand -> (module whose main(argv) -> int it calls, one line for --help)
FORWARDED = {
    "stats": ("analysis.seed_stats", "seed statistics and the phase ledger (analysis/seed_stats.py)"),
    "curves": ("analysis.curves", "learning curves of phases (analysis/curves.py)"),
    "dashboard": ("analysis.dashboard", "live dashboard of a runs root (analysis/dashboard.py)"),
    "video": ("videos.render", "K-labelled rollout video of a checkpoint (videos/render.py)"),
    "bench": ("experiments.bench", "benchmarks: updates/s, planner decisions/s, env steps/s (experiments/bench.py)"),
    "export": ("experiments.export:export_main", "send runs to TensorBoard / W&B, idempotent (experiments/export.py)"),
    "show": ("experiments.export:show_main", "a run's status, provenance and exports (experiments/export.py)"),
    "import-official": ("experiments.official_import", "an official TD-MPC2 .pt checkpoint as a run to evaluate, "
                        "render and fine-tune (experiments/official_import.py)"),
    "check-official": ("experiments.official_check", "our networks, update and planner against the official "
                       "TD-MPC2's outputs in a golden set (experiments/official_check.py)"),
}


def build_parser() -> argparse.ArgumentParser:
    """The launcher's subcommands plus the forwarded ones (listed by --help; their arguments are the tools')."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="TD-MPC2 + Glass: run phases, sweep them, and judge the runs.",
        epilog=f"`{PROG} COMMAND --help` shows a command's own flags.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    launch.add_commands(commands)
    for name, (_module, help_line) in FORWARDED.items():
        commands.add_parser(name, help=help_line, add_help=False)
    return parser


def forward(command: str, argv: list[str]) -> int:
    """Call the tool behind `command` with the rest of the command line; its exit code."""
    module_name, _, function = FORWARDED[command][0].partition(":")
    return getattr(importlib.import_module(module_name), function or "main")(argv)


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] and sys.argv[1] in TRAINING:  # the console command, not a caller's main(argv)
        allocator.use_tcmalloc()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in FORWARDED:
        return forward(argv[0], argv[1:])
    return launch.run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
