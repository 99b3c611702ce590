"""Learning curves: per phase the mean over seeds with a 95% bootstrap band, against env steps.

  python analysis/curves.py --phases 1b f aa:k128 [--runs DIR] [--metric mppi_return|pi_return|<train.csv column>]
                            [--out curves.png|curves.svg] [--reference] [--reps 1000]

Each phase label (`phase`, or `phase:variant`) is drawn in its stable colour (analysis/colors.py): every seed as
a faint line, the mean over seeds as a bold line, and a 95% percentile-bootstrap band of that mean (seeds
resampled with replacement, seeded). Seeds are aligned on the env_step values they share; where seeds have
different lengths (a running seed, a failed one) each step uses the seeds that reached it: the mean is dashed
there, and the band needs two seeds. Return metrics of runs on hopper-hop (GOAL_TASK, the task G1 and G2 were
set for; a run's task is config.task of its config.yaml) get dotted lines at 500 (G1 threshold) and 600 (G2
ceiling); other tasks get none. train.csv metrics are averaged into at most --points bins of env steps.
--reference overlays the published curves of TD-MPC2, TD-MPC, DreamerV3 and SAC for the runs' task
(analysis/reference_data/, from the TD-MPC2 authors' results; drawn up to the runs' last env step). Writes --out (default curves.png in the current
directory; the suffix picks the format) and prints its path. Errors print one line `error: ...` and exit 2.
A drawn run with a damaged file (config.yaml, or the metric's eval.csv / train.csv: cut short, emptied,
corrupted, the wrong columns) gives one line `warning: <file>: <what is wrong>: ...` on stderr and is drawn
with what can be read, or left out when nothing can.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from analysis.colors import phase_color  # noqa: E402
from analysis.runs import AnalysisError, PhaseNames, Run, load_runs, phase_catalogue, split_label  # noqa: E402
from tdmpc_glass import runlayout  # noqa: E402
from tdmpc_glass.runlayout import CONFIG, DEFAULT_VARIANT, EVAL, RUNS_ENV, TRAIN, count_text, runs_root  # noqa: E402

REFERENCE_DIR = Path(__file__).resolve().parent / "reference_data"
EVAL_METRICS, RETURN_METRICS = runlayout.EVAL_METRICS, runlayout.RETURN_METRICS
GOAL_TASK = "hopper-hop"  # the task the goals below were set for: their lines are drawn for its runs only
THRESHOLDS = ((500.0, "G1 threshold 500"), (600.0, "G2 ceiling 600"))
REFERENCE_STYLES = {"tdmpc2": ("-.", "0.15"), "tdmpc": (":", "0.35"), "dreamerv3": ("--", "0.45"),
                    "sac": ((0, (1, 3)), "0.55")}
FORMATS = (".png", ".svg", ".pdf")


# ---- data ------------------------------------------------------------------------------------------------------

def select_runs(runs: list[Run], labels: list[str], names: PhaseNames) -> dict[str, list[Run]]:
    """label -> its runs, labels resolved through aliases. Unknown labels raise AnalysisError naming the known."""
    known = sorted({r.label for r in runs})
    out = {}
    for raw in labels:
        label = names.label(raw)
        chosen = [r for r in runs if r.label == label]
        if not chosen:
            phase, variant = split_label(label)
            variants = sorted(r.label for r in runs if r.phase == phase)
            hint = (f"; phase {phase} has variants: {', '.join(sorted(set(variants)))}" if variants and
                    variant == DEFAULT_VARIANT else f"; phases: {', '.join(known)}")
            raise AnalysisError(f"no runs for '{raw}'{hint}")
        out[label] = chosen
    return out


def _frame_for(run: Run, metric: str) -> pd.DataFrame:
    return run.eval if metric in EVAL_METRICS else run.train()


def metric_file(metric: str) -> str:
    """The run file a metric is read from: eval.csv for the evaluation scores, else train.csv."""
    return EVAL if metric in EVAL_METRICS else TRAIN


def goals_apply(tasks) -> bool:
    """Whether the G1/G2 lines belong on a plot of runs of `tasks` (config.task values; None = unknown): only
    when some run is on GOAL_TASK."""
    return any(task and str(task).replace("_", "-") == GOAL_TASK for task in tasks)


def damage_notes(runs_by_label: dict[str, list[Run]], metric: str) -> list[str]:
    """One line per damaged file among the files a plot of `metric` reads (config.yaml and the metric's CSV)
    of the chosen runs, saying what happens to the run."""
    notes = []
    for runs in runs_by_label.values():
        for run in runs:
            for damage in run.damage((CONFIG, metric_file(metric))):
                if damage.file == CONFIG:
                    what = "run drawn, its phase and task taken from its folder" if not damage.usable else \
                        "run drawn with what was read"
                else:
                    what = "run drawn with its readable rows" if damage.usable else "run left out"
                notes.append(f"{damage}: {what}")
    return notes


def seed_curves(runs: list[Run], metric: str, max_points: int = 400) -> pd.DataFrame:
    """Wide frame: index env_step, one column per seed (NaN where a seed has no value at that step).

    A step logged twice (a resumed run) keeps its last value. With more than max_points distinct steps the
    steps are averaged into max_points equal-width bins of env steps, indexed by the bin's centre.
    """
    series = {}
    for run in runs:
        frame = _frame_for(run, metric)
        if metric not in frame or "env_step" not in frame:
            continue
        part = pd.DataFrame({"env_step": pd.to_numeric(frame["env_step"], errors="coerce"),
                             "value": pd.to_numeric(frame[metric], errors="coerce")}).dropna()
        if part.empty:
            continue
        series[run.seed] = part.drop_duplicates("env_step", keep="last").set_index("env_step")["value"]
    wide = pd.DataFrame(series).sort_index()
    if len(wide) > max_points:
        edges = np.linspace(wide.index.min(), wide.index.max(), max_points + 1)
        centres = (edges[:-1] + edges[1:]) / 2
        bins = np.clip(np.searchsorted(edges, wide.index.to_numpy(), side="right") - 1, 0, max_points - 1)
        wide = wide.groupby(centres[bins]).mean()
    wide.index.name = "env_step"
    return wide


def bootstrap_band(matrix: np.ndarray, reps: int = 1000, seed: int = 0, size: float = 0.95
                   ) -> tuple[np.ndarray, np.ndarray]:
    """95% percentile-bootstrap band of the mean over rows (seeds) for each column (env step).

    matrix (seeds, steps) may hold NaN where a seed has no value; a column's band is NaN with fewer than two
    values. Returns (low, high), each (steps,).
    """
    rng = np.random.default_rng(seed)
    n_seeds, n_steps = matrix.shape
    rows = rng.integers(0, n_seeds, size=(reps, n_seeds))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        means = np.nanmean(matrix[rows], axis=1)  # (reps, steps)
        alpha = (1.0 - size) / 2
        low, high = np.nanpercentile(means, [100 * alpha, 100 * (1 - alpha)], axis=0)
    enough = (~np.isnan(matrix)).sum(axis=0) >= 2
    return np.where(enough, low, np.nan), np.where(enough, high, np.nan)


@dataclass
class CurveSummary:
    """What a phase's curve is drawn from: the seeds aligned on env steps, their mean and its 95% band.

    wide: index env_step, one column per seed; mean, low, high: (steps,); full: (steps,) bool, True where every
    seed has a value (the mean is solid there, dashed elsewhere); low/high are NaN where fewer than two seeds.
    """
    wide: pd.DataFrame
    steps: np.ndarray
    mean: np.ndarray
    full: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @property
    def n_seeds(self) -> int:
        return int(self.wide.shape[1])


def curve_summary(runs: list[Run], metric: str, reps: int = 1000, max_points: int = 400) -> CurveSummary | None:
    """The mean over seeds and its 95% bootstrap band for one phase label (None without any value of metric).

    Shared by plot_curves and the dashboard, so both draw the same numbers.
    """
    wide = seed_curves(runs, metric, max_points)
    if wide.empty:
        return None
    matrix = wide.to_numpy(float).T  # (seeds, steps)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(matrix, axis=0)
    full = (~np.isnan(matrix)).sum(axis=0) == wide.shape[1]
    if wide.shape[1] >= 2:
        low, high = bootstrap_band(matrix, reps=reps)
    else:
        low = high = np.full(len(wide), np.nan)
    return CurveSummary(wide=wide, steps=wide.index.to_numpy(float), mean=mean, full=full, low=low, high=high)


def reference_curves(task: str) -> dict[str, pd.Series]:
    """Published mean curves for `task` (e.g. hopper-hop): algorithm -> mean reward by env step."""
    task = task.replace("_", "-")
    out = {}
    for path in sorted(REFERENCE_DIR.glob(f"*-{task}.csv")):
        algorithm = path.stem[: -len(task) - 1]
        table = pd.read_csv(path)
        if {"step", "reward"} <= set(table.columns):
            out[algorithm] = table.groupby("step")["reward"].mean()
    return out


# ---- figure ----------------------------------------------------------------------------------------------------

def _steps_formatter(x, _pos) -> str:
    return count_text(x)


def plot_curves(runs_by_label: dict[str, list[Run]], metric: str = "mppi_return", reference: bool = False,
                reps: int = 1000, max_points: int = 400) -> plt.Figure:
    """The figure: per label faint seeds, the mean over seeds (legend `label (n=seeds)`) and its 95% band."""
    fig, ax = plt.subplots(figsize=(10, 5.6))
    last_step = 0.0
    drawn = 0
    for label, runs in runs_by_label.items():
        summary = curve_summary(runs, metric, reps, max_points)
        if summary is None:
            continue
        drawn += 1
        colour = phase_color(label)
        wide, steps, mean, full, n_seeds = summary.wide, summary.steps, summary.mean, summary.full, summary.n_seeds
        last_step = max(last_step, steps.max())
        for seed in wide.columns:
            one = wide[seed].dropna()
            ax.plot(one.index, one.to_numpy(), color=colour, alpha=0.28, linewidth=0.9)
        ax.plot(steps, np.where(full, mean, np.nan), color=colour, linewidth=2.2, label=f"{label} (n={n_seeds})",
                gid=f"{label}:mean")
        partial = ~full
        partial[:-1] |= ~full[1:]  # join the dashed part to the solid one on either side
        partial[1:] |= ~full[:-1]
        if (~full).any():
            ax.plot(steps, np.where(partial, mean, np.nan), color=colour, linewidth=1.4, linestyle="--",
                    gid=f"{label}:partial")
        if n_seeds >= 2:
            ax.fill_between(steps, summary.low, summary.high, color=colour, alpha=0.18, linewidth=0)
    if drawn == 0:
        plt.close(fig)
        raise AnalysisError(f"no values of '{metric}' in the selected runs")
    tasks = {r.task for runs in runs_by_label.values() for r in runs if r.task}
    if metric in RETURN_METRICS and goals_apply(tasks):
        for y, text in THRESHOLDS:
            ax.axhline(y, color="0.4", linestyle=":", linewidth=1, gid=f"goal:{y:g}")
            ax.annotate(f"{text} ({GOAL_TASK})", (0, y), xycoords=("axes fraction", "data"), xytext=(4, 2),
                        textcoords="offset points", fontsize=7, color="0.35")
    if reference and metric in RETURN_METRICS:
        if len(tasks) == 1:
            task = tasks.pop()
            published = reference_curves(task)
            if not published:
                print(f"warning: --reference: no published curves for {task} in {REFERENCE_DIR}", file=sys.stderr)
            for algorithm, curve in published.items():
                curve = curve[curve.index <= last_step * 1.02] if last_step > 0 else curve
                style, colour = REFERENCE_STYLES.get(algorithm, ("--", "0.5"))
                ax.plot(curve.index, curve.to_numpy(), linestyle=style, color=colour, linewidth=1.3,
                        label=f"{algorithm} {task} (published)")
            tasks = {task}
        else:
            print(f"warning: --reference skipped: the runs' task is {' / '.join(sorted(tasks)) or 'unknown'}",
                  file=sys.stderr)
    ax.xaxis.set_major_formatter(FuncFormatter(_steps_formatter))
    ax.set_xlabel("env steps")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}" + (f" on {', '.join(sorted(tasks))}" if tasks else "") +
                 ": mean over seeds (dashed where some seeds have not reached the step), 95% bootstrap band, "
                 "single seeds faint", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


# ---- command line ----------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="curves.py", description="Learning curves: mean over seeds with a 95% "
                                "bootstrap band against env steps.")
    p.add_argument("--phases", nargs="+", required=True, metavar="LABEL", help="phase labels, e.g. 1b f aa:k128")
    p.add_argument("--runs", default=None, metavar="DIR", help=f"runs root (default: ${RUNS_ENV}, else ./runs)")
    p.add_argument("--metric", default="mppi_return", help=f"mppi_return, pi_return or a {TRAIN} column")
    p.add_argument("--out", default="curves.png", help="figure file; .png, .svg or .pdf (default curves.png)")
    p.add_argument("--reference", action="store_true", help="overlay the published curves of the runs' task")
    p.add_argument("--reps", type=int, default=1000, help="bootstrap resamples for the bands (1000)")
    p.add_argument("--points", type=int, default=400, help="at most this many env-step bins for train metrics")
    p.add_argument("--phases-dir", default=None, help=argparse.SUPPRESS)  # tests: another phases/ folder
    args = p.parse_args(argv)
    out = Path(args.out)
    try:
        if out.suffix.lower() not in FORMATS:
            raise AnalysisError(f"--out {out}: unknown figure format '{out.suffix}' (use {', '.join(FORMATS)})")
        names = PhaseNames(phase_catalogue(args.phases_dir) if args.phases_dir else phase_catalogue())
        root = runs_root(args.runs)
        runs = load_runs(root, names=names)
        if not runs:
            raise AnalysisError(f"no runs found under {root}")
        chosen = select_runs(runs, args.phases, names)
        for note in damage_notes(chosen, args.metric):
            print(f"warning: {note}", file=sys.stderr)
        fig = plot_curves(chosen, args.metric, args.reference, args.reps, args.points)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
            fig.savefig(tmp, dpi=130)
            tmp.replace(out)  # never a half-written figure
        except OSError as e:
            raise AnalysisError(f"--out {out}: cannot write: {e.strerror or e}") from None
        finally:
            plt.close(fig)
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
