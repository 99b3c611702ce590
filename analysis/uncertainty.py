"""Interval estimates for few-seed RL results: rliable's stratified bootstrap, and Welch's t-test from scipy.

Scores of one phase are an array (runs,) of best MPPI returns on one task (dm_control hopper-hop), so rliable's
score matrices are (runs, 1). Point estimates are rliable's metrics (aggregate_iqm, aggregate_mean,
probability_of_improvement). Intervals are rliable's stratified bootstrap with 95% percentile intervals, run by
one of two engines that give the same numbers:

- "numpy" (default): the resampling of rliable.library's StratifiedBootstrap / StratifiedIndependentBootstrap
  draw for draw (the global numpy RNG, seeded, `np.random.choice(n, ...)` per array and replicate in rliable's
  order), with the statistic computed for all replicates at once; about 50x faster than calling rliable's per
  replicate loop, and tests/test_analysis.py checks that it equals rliable wherever rliable.library imports;
- "rliable": rliable.library.get_interval_estimates itself.

rliable.library cannot always be imported: rliable 1.2.0 passes `random_state` to `arch`, which arch 8 no longer
accepts, and arch 7 imports a pandas-internal decorator whose signature changed in pandas 3.
`rliable_library()` returns the module, or None where it does not import (tried once, on first use).
Every estimate seeds numpy's global RNG first (`seed`, default 0), so a table printed twice is the same table.
"""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
from rliable import metrics  # numpy and scipy only: imports whatever the pandas version

ENGINES = ("numpy", "rliable")
_RLIABLE_LIBRARY: list = []  # [module or None] once tried


def rliable_library():
    """rliable.library, or None where it cannot be imported (see the module docstring)."""
    if not _RLIABLE_LIBRARY:
        try:
            from rliable import library
        except Exception:  # noqa: BLE001 - any import-time failure of rliable's arch dependency
            library = None
        _RLIABLE_LIBRARY.append(library)
    return _RLIABLE_LIBRARY[0]
CONFIDENCE = 0.95


def _percentile_interval(replicates: np.ndarray, size: float = CONFIDENCE) -> np.ndarray:
    """arch's 'percentile' interval: rows (lower, upper) over the replicate axis 0, alpha split between tails."""
    alpha = (1.0 - size) / 2
    lower, upper = np.percentile(replicates, [100 * alpha, 100 * (1.0 - alpha)], axis=0)
    return np.vstack([np.atleast_1d(lower), np.atleast_1d(upper)])


def _draws(sizes: tuple[int, ...], reps: int) -> list[np.ndarray]:
    """Bootstrap row indices (reps, n_i) per score array, drawn from the global RNG in rliable's order.

    rliable draws, replicate after replicate, `np.random.choice(n_i, (n_i, 1))` for each array in turn. Where all
    arrays have the same size, one `choice` call for everything consumes the stream in that same order.
    """
    if len(set(sizes)) == 1:
        flat = np.random.choice(sizes[0], (reps, sum(sizes)), replace=True)
        bounds = np.cumsum((0, *sizes))
        return [flat[:, lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]
    rows = [[np.random.choice(n, n, replace=True) for n in sizes] for _ in range(reps)]
    return [np.array([r[i] for r in rows]) for i in range(len(sizes))]


class EngineUnavailable(RuntimeError):
    """The rliable engine was asked for where rliable.library cannot be imported."""


def _check_engine(engine: str) -> bool:
    """True for the rliable engine; raises EngineUnavailable if it was asked for and cannot be imported."""
    if engine not in ENGINES:
        raise ValueError(f"unknown bootstrap engine {engine!r} (engines: {', '.join(ENGINES)})")
    if engine == "rliable" and rliable_library() is None:
        raise EngineUnavailable("rliable.library cannot be imported here (rliable 1.2.0 needs arch < 8, and arch 7 "
                           "needs pandas < 3); use the numpy engine, which gives the same numbers")
    return engine == "rliable"


def _rliable_estimates(score_arrays: tuple[np.ndarray, ...], func: Callable, reps: int, seed: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """rliable.get_interval_estimates for one score key: point (k,) and 95% interval (2, k)."""
    np.random.seed(seed)
    data = score_arrays[0] if len(score_arrays) == 1 else score_arrays
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        point, interval = rliable_library().get_interval_estimates({"x": data}, func, reps=reps)
    return np.atleast_1d(point["x"]).astype(float), np.asarray(interval["x"], float).reshape(2, -1)


def iqm_and_mean(values, reps: int = 2000, seed: int = 0, engine: str = "numpy") -> dict:
    """IQM and mean of one phase's per-seed scores with 95% CIs; CIs are None below 2 seeds.

    Returns {iqm, iqm_ci_low, iqm_ci_high, mean, mean_ci_low, mean_ci_high}.
    """
    values = np.asarray(values, dtype=float).reshape(-1)
    scores = values.reshape(-1, 1)
    out = {"iqm": float(metrics.aggregate_iqm(scores)), "iqm_ci_low": None, "iqm_ci_high": None,
           "mean": float(metrics.aggregate_mean(scores)), "mean_ci_low": None, "mean_ci_high": None}
    if len(values) < 2:
        return out
    if _check_engine(engine):
        both = lambda s: np.array([metrics.aggregate_iqm(s), metrics.aggregate_mean(s)])  # noqa: E731
        _, interval = _rliable_estimates((scores,), both, reps, seed)
    else:
        from scipy import stats

        np.random.seed(seed)
        (rows,) = _draws((len(values),), reps)
        resampled = values[rows]  # (reps, n)
        replicates = np.stack([stats.trim_mean(resampled, 0.25, axis=1), resampled.mean(axis=1)], axis=1)
        interval = _percentile_interval(replicates)
    out.update(iqm_ci_low=float(interval[0, 0]), iqm_ci_high=float(interval[1, 0]),
               mean_ci_low=float(interval[0, 1]), mean_ci_high=float(interval[1, 1]))
    return out


def _improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(x > y) + P(x = y) / 2 per replicate for x (reps, n), y (reps, m): Mann-Whitney U / (n m)."""
    greater = (x[:, :, None] > y[:, None, :]).sum(axis=(1, 2))
    ties = (x[:, :, None] == y[:, None, :]).sum(axis=(1, 2))
    return (greater + 0.5 * ties) / (x.shape[1] * y.shape[1])


def probability_of_improvement(a, b, reps: int = 2000, seed: int = 0, engine: str = "numpy"
                               ) -> tuple[float, float, float]:
    """P(a > b) (Mann-Whitney U / (n_a n_b), ties count half) and its 95% CI: (point, low, high)."""
    a = np.asarray(a, dtype=float).reshape(-1)
    b = np.asarray(b, dtype=float).reshape(-1)
    point = float(metrics.probability_of_improvement(a.reshape(-1, 1), b.reshape(-1, 1)))
    if _check_engine(engine):
        _, interval = _rliable_estimates((a.reshape(-1, 1), b.reshape(-1, 1)),
                                         metrics.probability_of_improvement, reps, seed)
    else:
        np.random.seed(seed)
        rows_a, rows_b = _draws((len(a), len(b)), reps)
        interval = _percentile_interval(_improvement(a[rows_a], b[rows_b])[:, None])
    return point, float(interval[0, 0]), float(interval[1, 0])


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
