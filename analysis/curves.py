"""Learning curves: per phase the mean over seeds with a 95% bootstrap band against env steps.

  python analysis/curves.py --phases 1b f aa:k128 [--runs DIR] [--metric mppi_return|pi_return|<train.csv column>]
                            [--out fig.png|svg] [--reference]

Single seeds are drawn faint, each phase in its stable colour (analysis/colors.py), with threshold lines at
500 and 600 for return metrics. --reference overlays the published TD-MPC2 / DreamerV3 / SAC curves of the
runs' task (analysis/reference_data/, from the TD-MPC2 authors' results).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.colors import phase_color  # noqa: E402
from analysis.runs import AnalysisError, load_runs, runs_root  # noqa: E402

REFERENCE_DIR = Path(__file__).resolve().parent / "reference_data"
RETURN_METRICS = ("mppi_return", "pi_return")


def bootstrap_band(matrix: np.ndarray, reps: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """95% percentile-bootstrap band of the mean over rows (seeds), per column (env step); NaN-aware."""
    rng = np.random.default_rng(seed)
    n = matrix.shape[0]
    idx = rng.integers(0, n, (reps, n))
    with np.errstate(all="ignore"):
        means = np.nanmean(matrix[idx], axis=1)  # (reps, steps)
        return np.nanpercentile(means, 2.5, axis=0), np.nanpercentile(means, 97.5, axis=0)


def seed_curves(runs, metric: str) -> pd.DataFrame:
    """Wide frame: index env_step, one column per seed."""
    columns = {}
    for run in runs:
        frame = run.eval if metric in RETURN_METRICS else run.train()
        if metric in frame and "env_step" in frame:
            columns[run.seed] = frame.groupby("env_step")[metric].mean()
    return pd.DataFrame(columns).sort_index()


def plot(runs_by_label: dict, metric: str, out: Path, task: str | None, reference: bool) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for label, runs in runs_by_label.items():
        wide = seed_curves(runs, metric)
        if wide.empty:
            continue
        colour = phase_color(label)
        steps = wide.index.to_numpy()
        for seed in wide.columns:
            s = wide[seed].dropna()
            ax.plot(s.index, s.to_numpy(), color=colour, alpha=0.25, linewidth=0.8)
        matrix = wide.to_numpy(float).T
        with np.errstate(all="ignore"):
            mean = np.nanmean(matrix, axis=0)
        ax.plot(steps, mean, color=colour, linewidth=2, label=f"{label} (n={wide.shape[1]})")
        if wide.shape[1] >= 2:
            lo, hi = bootstrap_band(matrix)
            ax.fill_between(steps, lo, hi, color=colour, alpha=0.2, linewidth=0)
    if reference and task and metric in RETURN_METRICS:
        for path in sorted(REFERENCE_DIR.glob(f"*-{task}.csv")):
            ref = pd.read_csv(path).groupby("step")["reward"].mean()
            ax.plot(ref.index, ref.to_numpy(), linestyle="--", linewidth=1.2, color="0.4" if "tdmpc2" in path.stem
                    else "0.7", label=f"{path.stem.rsplit('-' + task, 1)[0]} (published)")
    if metric in RETURN_METRICS:
        for y in (500, 600):
            ax.axhline(y, color="0.5", linestyle=":", linewidth=1)
    ax.set_xlabel("env steps")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return fig


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="curves.py", description=__doc__.splitlines()[0])
    p.add_argument("--phases", nargs="+", required=True, help="phase labels, e.g. 1b f aa:k128")
    p.add_argument("--runs", default=None)
    p.add_argument("--metric", default="mppi_return")
    p.add_argument("--out", default="curves.png")
    p.add_argument("--reference", action="store_true", help="overlay the published curves of the same task")
    args = p.parse_args(argv)
    try:
        runs = load_runs(runs_root(args.runs))
        by_label = {label: [r for r in runs if r.label == label or (":" not in label and r.phase == label)]
                    for label in args.phases}
        missing = [label for label, rs in by_label.items() if not rs]
        if missing:
            raise AnalysisError(f"no runs for phase '{missing[0]}' under {runs_root(args.runs)}")
        tasks = {yaml_task(r.path) for rs in by_label.values() for r in rs}
        task = tasks.pop() if len(tasks) == 1 else None
        plot(by_label, args.metric, Path(args.out), task, args.reference)
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


def yaml_task(run_dir: Path) -> str | None:
    import yaml
    try:
        return yaml.safe_load((run_dir / "config.yaml").read_text())["config"]["task"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return None


if __name__ == "__main__":
    sys.exit(main())
