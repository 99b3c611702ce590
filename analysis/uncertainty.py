"""Interval estimates for few-seed RL results: rliable's stratified bootstrap, and Welch's t-test from scipy.

Scores of one phase are an array (runs,) of best MPPI returns, one task (dm_control hopper-hop), so rliable's
score matrices are (runs, 1). rliable draws its bootstrap resamples from numpy's *global* RNG; every function
here seeds it first (`seed`, default 0), so a table printed twice is the same table.

rliable 1.2.0 needs `arch` < 8 (arch 8 removed the `random_state` argument rliable passes), and arch 7 imports a
pandas-internal decorator whose signature pandas 3 changed, so `rliable.library` cannot be imported next to
pandas >= 3. Where it cannot, the same resampling scheme is run here, draw for draw: each replicate draws
`np.random.choice(n, (n, tasks))` per score array from the seeded global RNG, applies the same rliable metric, and
takes arch's percentile interval. With the same seed the numbers equal rliable's (tests/test_analysis.py checks
this where rliable imports). `BACKEND` says which path is in use.
"""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
from rliable import metrics  # plain numpy/scipy; imports with any pandas

try:
    from rliable import library as _rly
    BACKEND = "rliable"
except Exception:  # noqa: BLE001 - any import-time failure of rliable's arch dependency
    _rly = None
    BACKEND = "rliable metrics, bootstrap re-implemented (rliable.library not importable)"

CONFIDENCE = 0.95


def _percentile_interval(replicates: np.ndarray, size: float = CONFIDENCE) -> np.ndarray:
    """arch's 'percentile' interval: rows (lower, upper) over the replicate axis 0, alpha split between tails."""
    alpha = (1.0 - size) / 2
    lower, upper = np.percentile(replicates, [100 * alpha, 100 * (1.0 - alpha)], axis=0)
    return np.vstack([np.atleast_1d(lower), np.atleast_1d(upper)])


def _resample(scores: np.ndarray) -> np.ndarray:
    """One stratified resample: runs drawn with replacement within each task (column)."""
    n_runs = scores.shape[0]
    rows = np.random.choice(n_runs, scores.shape, replace=True)
    return scores[rows, np.arange(scores.shape[1])[None, :]]


def interval_estimates(score_arrays: tuple[np.ndarray, ...], func: Callable, reps: int, seed: int = 0
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Point estimate of func(*score_arrays) and its 95% stratified-bootstrap interval (2, k).

    One array: rliable's StratifiedBootstrap; several: StratifiedIndependentBootstrap (each array resampled on
    its own, as for the probability of improvement).
    """
    score_arrays = tuple(np.asarray(a, dtype=float) for a in score_arrays)
    np.random.seed(seed)
    if _rly is not None:
        data = score_arrays[0] if len(score_arrays) == 1 else score_arrays
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            point, interval = _rly.get_interval_estimates({"x": data}, func, reps=reps)
        return np.atleast_1d(point["x"]).astype(float), np.asarray(interval["x"], float).reshape(2, -1)
    point = np.atleast_1d(func(*score_arrays)).astype(float)
    replicates = np.array([np.atleast_1d(func(*(_resample(a) for a in score_arrays))) for _ in range(reps)], float)
    return point, _percentile_interval(replicates)


def iqm_and_mean(values, reps: int = 2000, seed: int = 0) -> dict:
    """IQM and mean of one phase's per-seed scores with 95% CIs; CIs are None below 2 seeds.

    Returns {iqm, iqm_ci_low, iqm_ci_high, mean, mean_ci_low, mean_ci_high}.
    """
    values = np.asarray(values, dtype=float).reshape(-1)
    scores = values.reshape(-1, 1)
    iqm, mean = float(metrics.aggregate_iqm(scores)), float(metrics.aggregate_mean(scores))
    out = {"iqm": iqm, "iqm_ci_low": None, "iqm_ci_high": None,
           "mean": mean, "mean_ci_low": None, "mean_ci_high": None}
    if len(values) < 2:
        return out
    both = lambda s: np.array([metrics.aggregate_iqm(s), metrics.aggregate_mean(s)])  # noqa: E731
    point, interval = interval_estimates((scores,), both, reps, seed)
    out.update(iqm=float(point[0]), iqm_ci_low=float(interval[0, 0]), iqm_ci_high=float(interval[1, 0]),
               mean=float(point[1]), mean_ci_low=float(interval[0, 1]), mean_ci_high=float(interval[1, 1]))
    return out


def probability_of_improvement(a, b, reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """P(a > b) (Mann-Whitney U / (n_a n_b), ties count half) and its 95% CI: (point, low, high)."""
    a = np.asarray(a, dtype=float).reshape(-1, 1)
    b = np.asarray(b, dtype=float).reshape(-1, 1)
    point, interval = interval_estimates((a, b), metrics.probability_of_improvement, reps, seed)
    return float(point[0]), float(interval[0, 0]), float(interval[1, 0])


def welch_test(a, b) -> tuple[float, float]:
    """Welch's two-sample t-test (unequal variances): (t, two-sided p). NaN where a side has < 2 seeds."""
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return float("nan"), float("nan")
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.ttest_ind(a, b, equal_var=False)
    return float(result.statistic), float(result.pvalue)
