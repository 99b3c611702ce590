"""Seed statistics and the phase ledger, from a runs root and/or imported CSVs.

  python analysis/seed_stats.py [--runs DIR] [--import CSV ...] [--threshold 500] [--ceiling 600]
                                [--format md|csv|json] [--out DIR] [--compare A B] [--reps 2000]

Inputs. The runs root (--runs, else $TDMPC_GLASS_RUNS, else ./runs) gives one result per run: its best MPPI,
the highest mppi_return over its evaluations (running runs count with what they have; runs without an
evaluation yet are left out). --import adds results run elsewhere, CSVs with columns phase, seed, best_mppi
[, benchmark_fair, env_steps, description]. With --import and neither --runs nor $TDMPC_GLASS_RUNS, only the
imports are read. A phase is named by its label: `phase`, or `phase:variant` for a variant (aa:k128); names are
merged through the aliases of phases/*.yaml and of the runs' config.yaml (phasez -> z). If a run and an import
give the same phase and seed, the run wins (a warning says so).

Tables.
- per seed, over phases with at least 2 seeds: n_phases, mean, median, max, min of best MPPI, times_best and
  times_worst (ties: every tied seed counts);
- per phase: each seed's best MPPI and the best seed(s);
- ledger: description, best MPPI and its seed, hit rate (seeds >= threshold / seeds), G1 (at least 5 seeds, all
  >= threshold, benchmark-fair phases only), G2 (any seed >= ceiling, any phase: the research log's G2 was hit by
  phase t, benchmark-unfair; G2_seeds names the seeds and G2_fair whether a benchmark-fair one reached it),
  benchmark_fair (unfair phases are marked and never count for G1),
  IQM and mean of best MPPI with stratified-bootstrap 95% CIs (rliable).
--compare A B adds the probability of improvement P(A > B) with its 95% CI and Welch's t-test, with a warning when
a side has fewer than 5 seeds. Output: Markdown (default), CSV (the per-seed, per-phase and ledger tables, blank
line between) or one JSON object; --out DIR also writes per_seed.csv, per_phase.csv, ledger.csv (compare.csv).
Bad input (missing runs root, no runs, a CSV with wrong columns) prints one line `error: ...` and exits 2.
A run file that is damaged (cut short, emptied, corrupted, the wrong columns) gives one line `warning: <file>:
<what is wrong>: run left out | run counted ...` on stderr: a damaged config.yaml or an eval.csv with nothing
readable leaves the run out, a cut or partly unreadable eval.csv counts its readable rows, a damaged
status.json counts the run with status unknown; train.csv and events.jsonl are not read. The exit code is as
above (0 while some result remains).

From Python (the dashboard's ledger page does this), the same report without a command line:

  report = seed_stats.stats_report(runs="runs", imports=["a.csv"], threshold=500, ceiling=600, reps=2000)
  print(seed_stats.render_markdown(report))
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.runs import AnalysisError, PhaseNames, as_bool, load_runs, natural_key, phase_catalogue, split_label
from tdmpc_glass.runlayout import CONFIG, DEFAULT_VARIANT, EVAL, RUNNING, RUNS_ENV, STATUS, runs_root

IMPORT_REQUIRED = ("phase", "seed", "best_mppi")
PER_SEED_KEYS = ("seed", "n_phases", "mean", "median", "max", "min", "times_best", "times_worst")
RESULT_COLUMNS = ("phase", "seed", "best_mppi", "benchmark_fair", "env_steps", "description", "status", "source")
LEDGER_KEYS = ("phase", "description", "benchmark_fair", "n_seeds", "seeds", "best_mppi", "best_seeds", "hits",
               "hit_rate", "G1", "G2", "G2_seeds", "G2_fair", "iqm", "iqm_ci_low", "iqm_ci_high", "mean",
               "mean_ci_low", "mean_ci_high", "env_steps", "n_running")
BOOTSTRAP_ENGINES = ("numpy", "rliable")  # = uncertainty.ENGINES; that module is imported late (scipy is slow)
MIN_SEEDS_G1 = 5
MIN_SEEDS_COMPARE = 5
DEFAULT_THRESHOLD = 500.0  # a seed hits when its best MPPI is at least this
DEFAULT_CEILING = 600.0  # G2: some seed's best MPPI is at least this
DEFAULT_REPS = 2000  # bootstrap resamples


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# ---- inputs ----------------------------------------------------------------------------------------------------

READ_FILES = (CONFIG, STATUS, EVAL)  # the run files a result is computed from


def usable_runs(runs: list, notes: list[str] | None = None) -> list:
    """The runs whose results can be trusted, with one line in `notes` per damaged file (READ_FILES).

    A run is left out when its config.yaml is damaged (the phase, variant and fairness it counts for are
    unsure) or no evaluation of its damaged eval.csv can be read; a cut or partly unreadable eval.csv counts
    with its readable rows, a damaged status.json counts with status unknown."""
    kept = []
    for run in runs:
        damage = run.damage(READ_FILES)
        left_out = any(d.file == CONFIG or (d.file == EVAL and run.best_mppi is None) for d in damage)
        for d in damage:
            if left_out:
                consequence = "run left out"
            elif d.file == STATUS:
                consequence = "run counted, status unknown"
            else:
                consequence = "run counted with its readable rows"
            if notes is not None:
                notes.append(f"{d}: {consequence}")
        if not left_out:
            kept.append(run)
    return kept


def results_from_runs(root: Path, names: PhaseNames, notes: list[str] | None = None) -> tuple[pd.DataFrame, int]:
    """One row per run that has at least one evaluation; also the number of run directories found. Runs with
    damaged files are left out or counted as usable_runs says, with one line each in `notes`."""
    found = load_runs(root, names=names)
    # the same phase and seed filed twice (under two aliases): the run that got furthest comes first and is kept
    runs = sorted(usable_runs(found, notes), key=lambda r: -(r.env_steps or 0))
    rows = [{"phase": r.label, "seed": r.seed, "best_mppi": r.best_mppi, "benchmark_fair": r.benchmark_fair,
             "env_steps": r.env_steps, "description": r.description, "status": r.status, "source": str(r.path)}
            for r in runs if r.best_mppi is not None]
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS)), len(found)


def _parse_seed(value) -> int:
    text = str(value).strip().lower()
    for prefix in ("seed", "s"):
        if text.startswith(prefix) and text[len(prefix):].strip().isdigit():
            text = text[len(prefix):].strip()
            break
    number = float(text)
    if not number.is_integer():
        raise ValueError(value)
    return int(number)


def read_import(path: Path, names: PhaseNames) -> pd.DataFrame:
    """An imported results CSV: columns phase, seed, best_mppi [, benchmark_fair, env_steps, description]."""
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"{path}: no such file")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        raise AnalysisError(f"{path}: empty file (expected a header phase,seed,best_mppi)") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise AnalysisError(f"{path}: cannot read as CSV: {str(e).splitlines()[0]}") from None
    table.columns = [str(c).strip() for c in table.columns]
    for column in IMPORT_REQUIRED:
        if column not in table.columns:
            raise AnalysisError(f"{path}: missing column '{column}' (need {', '.join(IMPORT_REQUIRED)}; "
                                f"found {', '.join(table.columns) or 'none'})")
    rows = []
    for i, record in enumerate(table.to_dict("records")):
        line = i + 2  # 1-based, after the header
        if not any(str(v).strip() for v in record.values()):
            continue  # a blank line
        phase = str(record["phase"]).strip()
        if not phase:
            raise AnalysisError(f"{path}: line {line}: empty phase")
        try:
            seed = _parse_seed(record["seed"])
        except ValueError:
            raise AnalysisError(f"{path}: line {line}: seed {record['seed']!r} is not an integer") from None
        try:
            best = float(record["best_mppi"])
        except ValueError:
            raise AnalysisError(f"{path}: line {line}: best_mppi {record['best_mppi']!r} is not a number") from None
        if math.isnan(best):
            continue
        label = names.label(phase)
        info = names.info(split_label(label)[0])
        fair_default = info.benchmark_fair if info else True
        env_steps = str(record.get("env_steps", "")).strip()
        try:
            env_steps = int(float(env_steps)) if env_steps else None
        except ValueError:
            raise AnalysisError(f"{path}: line {line}: env_steps {env_steps!r} is not a number") from None
        description = " ".join(str(record.get("description", "")).split()) or (info.description if info else "")
        rows.append({"phase": label, "seed": seed, "best_mppi": best,
                     # unfair if the CSV or the phase file says so
                     "benchmark_fair": as_bool(record.get("benchmark_fair") or None, True) and fair_default,
                     "env_steps": env_steps, "description": description, "status": "imported",
                     "source": str(path)})
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


def combine(run_results: pd.DataFrame, imports: list[pd.DataFrame]) -> pd.DataFrame:
    """Runs and imports together, one row per (phase, seed): a run beats an import, a later import an earlier."""
    parts = [f for f in [run_results, *imports[::-1]] if len(f)]  # runs, the last import, ..., the first
    if not parts:
        return pd.DataFrame(columns=list(RESULT_COLUMNS))
    frame = pd.concat(parts, ignore_index=True)
    duplicated = frame.duplicated(subset=["phase", "seed"], keep="first")
    for _, row in frame[duplicated].iterrows():
        kept = frame[(frame["phase"] == row["phase"]) & (frame["seed"] == row["seed"])].iloc[0]
        warn(f"{row['phase']} seed {row['seed']}: {row['source']} ignored, {kept['source']} used")
    frame = frame[~duplicated].copy()
    frame["seed"] = frame["seed"].astype(int)
    frame["best_mppi"] = frame["best_mppi"].astype(float)
    order = sorted(frame["phase"].unique(), key=label_key)
    frame["_order"] = frame["phase"].map({p: i for i, p in enumerate(order)})
    return frame.sort_values(["_order", "seed"]).drop(columns="_order").reset_index(drop=True)


def label_key(label: str) -> tuple:
    phase, variant = split_label(label)
    return natural_key(phase), natural_key(variant) if variant != DEFAULT_VARIANT else ()


def phase_names(phases_dir: str | os.PathLike | None = None) -> PhaseNames:
    """The phase names of phases/*.yaml (or of another phases folder), to resolve labels and aliases with."""
    return PhaseNames(phase_catalogue(phases_dir) if phases_dir else phase_catalogue())


def gather(runs: str | os.PathLike | None = None, imports: Sequence[str | os.PathLike] = (),
           names: PhaseNames | None = None, notes: list[str] | None = None) -> pd.DataFrame:
    """One row per (phase label, seed) from a runs root and imported CSVs (RESULT_COLUMNS).

    runs: the runs root; None means $TDMPC_GLASS_RUNS, else ./runs, except that with `imports` and no
    $TDMPC_GLASS_RUNS only the imports are read. names: updated with the aliases the runs declare (default:
    phases/*.yaml's). notes: gets one line per damaged run file (usable_runs), also when an error is raised.
    Raises AnalysisError for a missing root, no runs or no results, or a bad CSV.
    """
    names = names if names is not None else phase_names()
    imports = list(imports or [])
    imported = [read_import(Path(p), names) for p in imports]
    run_results = pd.DataFrame(columns=list(RESULT_COLUMNS))
    if runs or not imports or os.environ.get(RUNS_ENV):
        root = runs_root(runs)
        notes = notes if notes is not None else []
        before = len(notes)
        run_results, n_runs = results_from_runs(root, names, notes)
        if not imports:
            if n_runs == 0:
                raise AnalysisError(f"no runs found under {root} (expected <phase>/<variant>/seed<k>/ folders)")
            if run_results.empty:
                damaged = f" ({len(notes) - before} damaged files, see the warnings)" if len(notes) > before else ""
                raise AnalysisError(f"no evaluations yet under {root}: {n_runs} runs found, none has a readable "
                                    f"{EVAL} row{damaged}")
        elif n_runs == 0:
            warn(f"no runs found under {root}; using the imports only")
        if len(imported):  # an import read before the runs' aliases were known: resolve its labels again
            for frame in imported:
                frame["phase"] = frame["phase"].map(names.label)
    results = combine(run_results, imported)
    if results.empty:
        raise AnalysisError("no results: the imported CSVs have no rows")
    return results


# ---- tables ----------------------------------------------------------------------------------------------------

def _best_and_worst(results: pd.DataFrame) -> pd.DataFrame:
    grouped = results.groupby("phase")["best_mppi"]
    return results.assign(is_best=results["best_mppi"] == grouped.transform("max"),
                          is_worst=results["best_mppi"] == grouped.transform("min"))


def per_seed_table(results: pd.DataFrame) -> list[dict]:
    """One row per seed over the phases with at least 2 seeds (ties for best/worst count for every tied seed)."""
    multi = results.groupby("phase").filter(lambda g: g["seed"].nunique() >= 2)
    if multi.empty:
        return []
    multi = _best_and_worst(multi)
    out = []
    for seed, group in multi.groupby("seed"):
        values = group["best_mppi"]
        out.append({"seed": int(seed), "n_phases": int(len(group)), "mean": float(values.mean()),
                    "median": float(values.median()), "max": float(values.max()), "min": float(values.min()),
                    "times_best": int(group["is_best"].sum()), "times_worst": int(group["is_worst"].sum())})
    return out


def per_phase_table(results: pd.DataFrame) -> list[dict]:
    """One row per phase label: each seed's best MPPI and the best seed(s)."""
    out = []
    for phase, group in results.groupby("phase", sort=False):
        best = group["best_mppi"].max()
        out.append({"phase": phase, "n_seeds": int(len(group)),
                    "best_mppi": {int(s): float(v) for s, v in zip(group["seed"], group["best_mppi"])},
                    "best_seeds": [int(s) for s in group.loc[group["best_mppi"] == best, "seed"]]})
    return out


def ledger_table(results: pd.DataFrame, threshold: float, ceiling: float, reps: int, engine: str = "numpy"
                 ) -> list[dict]:
    from analysis import uncertainty

    out = []
    for phase, group in results.groupby("phase", sort=False):
        values = group["best_mppi"].to_numpy(float)
        fair = bool(group["benchmark_fair"].map(as_bool).all())
        hits = int((values >= threshold).sum())
        at_ceiling = values >= ceiling
        seed_fair = group["benchmark_fair"].map(as_bool).to_numpy(bool)
        descriptions = [d for d in group["description"] if isinstance(d, str) and d]
        steps = pd.to_numeric(group["env_steps"], errors="coerce").dropna()
        row = {"phase": phase, "description": descriptions[0] if descriptions else "", "benchmark_fair": fair,
               "n_seeds": int(len(values)), "seeds": [int(s) for s in group["seed"]],
               "best_mppi": float(values.max()),
               "best_seeds": [int(s) for s in group.loc[group["best_mppi"] == values.max(), "seed"]],
               "hits": hits, "hit_rate": hits / len(values),
               "G1": fair and len(values) >= MIN_SEEDS_G1 and hits == len(values),
               "G2": bool(at_ceiling.any()),  # any phase; G2_fair says whether a fair seed reached it
               "G2_seeds": [int(s) for s in group.loc[at_ceiling, "seed"]],
               "G2_fair": bool((at_ceiling & seed_fair).any()),
               "env_steps": int(steps.max()) if len(steps) else None,
               "n_running": int((group["status"] == RUNNING).sum())}
        row.update(uncertainty.iqm_and_mean(values, reps=reps, engine=engine))
        out.append({key: row[key] for key in LEDGER_KEYS})
    return out


def compare(results: pd.DataFrame, names: PhaseNames, a: str, b: str, reps: int, engine: str = "numpy") -> dict:
    from analysis import uncertainty

    available = list(results["phase"].unique())

    def side(raw: str) -> tuple[str, np.ndarray]:
        label = names.label(raw)
        values = results.loc[results["phase"] == label, "best_mppi"].to_numpy(float)
        if len(values) == 0:
            raise AnalysisError(f"--compare: no results for phase '{raw}' (phases: {', '.join(available)})")
        return label, values

    (a, va), (b, vb) = side(a), side(b)
    poi, low, high = uncertainty.probability_of_improvement(va, vb, reps=reps, engine=engine)
    t, p = uncertainty.welch_test(va, vb)
    warnings = [f"{name} has {len(v)} seed{'s' if len(v) != 1 else ''} (< {MIN_SEEDS_COMPARE}): too few for a "
                f"reliable comparison" for name, v in dict(((a, va), (b, vb))).items() if len(v) < MIN_SEEDS_COMPARE]
    if a == b:
        warnings.append("both sides are the same phase")
    return {"a": a, "b": b, "n_a": int(len(va)), "n_b": int(len(vb)), "mean_a": float(va.mean()),
            "mean_b": float(vb.mean()), "probability_of_improvement": poi, "poi_ci_low": low, "poi_ci_high": high,
            "welch_t": t, "welch_p": p, "reps": reps, "warnings": warnings}


def build_report(results: pd.DataFrame, names: PhaseNames | None = None, *, threshold: float = DEFAULT_THRESHOLD,
                 ceiling: float = DEFAULT_CEILING, reps: int = DEFAULT_REPS, bootstrap: str = "numpy",
                 compare_phases: Sequence[str] | None = None, damaged: Sequence[str] = ()) -> dict:
    """The tables of `results` (gather's rows): {per_seed, per_phase, ledger, settings, damaged[, compare]}.

    damaged: gather's notes, one line per damaged run file and what was done with the run.
    compare_phases: two phase labels (A, B) to add P(A > B) and Welch's test for, resolved through `names`.
    bootstrap: "numpy" or "rliable" (uncertainty.ENGINES); uncertainty.EngineUnavailable where rliable's
    library cannot be imported.
    """
    names = names if names is not None else phase_names()
    report = {"per_seed": per_seed_table(results), "per_phase": per_phase_table(results),
              "ledger": ledger_table(results, threshold, ceiling, reps, bootstrap),
              "settings": {"threshold": threshold, "ceiling": ceiling, "reps": reps, "bootstrap": bootstrap},
              "damaged": list(damaged)}
    if compare_phases:
        report["compare"] = compare(results, names, *compare_phases, reps=reps, engine=bootstrap)
    return report


def stats_report(runs: str | os.PathLike | None = None, imports: Sequence[str | os.PathLike] = (), *,
                 threshold: float = DEFAULT_THRESHOLD, ceiling: float = DEFAULT_CEILING, reps: int = DEFAULT_REPS,
                 bootstrap: str = "numpy", compare_phases: Sequence[str] | None = None,
                 phases_dir: str | os.PathLike | None = None, notes: list[str] | None = None) -> dict:
    """The report the command line prints, from plain arguments (the flags of the same names; compare_phases is
    --compare A B, phases_dir another phases/ folder): gather, then build_report, plus report["damaged"]: one
    line per damaged run file and what was done with the run (the command line prints them as warnings).
    notes: a list that gets those lines too, also when AnalysisError is raised (bad input, as the command line
    reports it)."""
    names = phase_names(phases_dir)
    notes = notes if notes is not None else []
    results = gather(runs, imports, names, notes)
    return build_report(results, names, threshold=threshold, ceiling=ceiling, reps=reps, bootstrap=bootstrap,
                        compare_phases=compare_phases, damaged=notes)


# ---- output ----------------------------------------------------------------------------------------------------

def fmt_num(value, digits: int = 1) -> str:
    """A table cell: the number with `digits` decimals, "-" for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def fmt_ci(low, high) -> str:
    """A confidence interval cell "[low, high]", "-" without one (fewer than two seeds)."""
    return "-" if low is None else f"[{fmt_num(low)}, {fmt_num(high)}]"


def fmt_seeds(seeds: list[int]) -> str:
    """[1, 3] -> "s1, s3"."""
    return ", ".join(f"s{s}" for s in seeds)


def short_description(text: str, width: int = 70) -> str:
    """The first sentence of a phase description, cut to `width` characters."""
    first = text.split(". ")[0].rstrip(".")
    return first if len(first) <= width else first[: width - 1].rstrip() + "…"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def per_phase_wide(report: dict) -> tuple[list[str], list[list]]:
    seeds = sorted({s for p in report["per_phase"] for s in p["best_mppi"]})
    header = ["phase", *[f"s{s}" for s in seeds], "best_seed"]
    rows = [[p["phase"], *[p["best_mppi"].get(s) for s in seeds], fmt_seeds(p["best_seeds"])]
            for p in report["per_phase"]]
    return header, rows


def g2_cell(row: dict) -> str:
    """The ledger's G2 cell: reached or not, and for a phase reached only by benchmark-unfair seeds, says so."""
    if not row["G2"]:
        return "no"
    return "**G2**" if row["G2_fair"] else "**G2** (unfair)"


def g2_reached(ledger: list[dict]) -> str:
    """'t (s2, benchmark-unfair), x (s3, benchmark-fair)' or 'none': the phases that reached G2, their seeds at
    the ceiling and whether a benchmark-fair seed was among them."""
    parts = [f"{r['phase']} ({fmt_seeds(r['G2_seeds'])}, {'benchmark-fair' if r['G2_fair'] else 'benchmark-unfair'})"
             for r in ledger if r["G2"]]
    return ", ".join(parts) or "none"


def render_markdown(report: dict) -> str:
    settings = report["settings"]
    threshold, ceiling = settings["threshold"], settings["ceiling"]
    parts = []
    per_seed = report["per_seed"]
    parts.append("## Per-seed statistics (best MPPI over phases with at least 2 seeds)")
    if per_seed:
        parts.append(md_table(["seed", "n_phases", "mean", "median", "max", "min", "times_best", "times_worst"],
                              [[f"s{r['seed']}", r["n_phases"], fmt_num(r["mean"]), fmt_num(r["median"]),
                                fmt_num(r["max"]), fmt_num(r["min"]), r["times_best"], r["times_worst"]]
                               for r in per_seed]))
    else:
        parts.append("(no phase has 2 or more seeds)")
    header, rows = per_phase_wide(report)
    parts += ["## Per-phase best MPPI by seed",
              md_table(header, [[r[0], *[fmt_num(v) for v in r[1:-1]], r[-1]] for r in rows])]
    ledger_rows = []
    for r in report["ledger"]:
        excluded = "excl." if not r["benchmark_fair"] else None
        ledger_rows.append([
            r["phase"] + ("" if r["benchmark_fair"] else " (unfair)"), "yes" if r["benchmark_fair"] else "**no**",
            r["n_seeds"], f"{fmt_num(r['best_mppi'])} ({fmt_seeds(r['best_seeds'])})", f"{r['hits']}/{r['n_seeds']}",
            excluded or ("**G1**" if r["G1"] else "no"), g2_cell(r),
            f"{fmt_num(r['iqm'])} {fmt_ci(r['iqm_ci_low'], r['iqm_ci_high'])}",
            f"{fmt_num(r['mean'])} {fmt_ci(r['mean_ci_low'], r['mean_ci_high'])}",
            "-" if r["env_steps"] is None else f"{r['env_steps']:,}" + (f" ({r['n_running']} running)"
                                                                        if r["n_running"] else ""),
            short_description(r["description"]) or "-"])
    parts += [f"## Phase ledger (hit: best MPPI >= {threshold:g}; G1: >= {MIN_SEEDS_G1} seeds, all hit; "
              f"G2: a seed >= {ceiling:g}, any phase; unfair phases never count for G1)",
              md_table(["phase", "fair", "seeds", "best MPPI (seed)", "hit rate", "G1", "G2", "IQM [95% CI]",
                        "mean [95% CI]", "env steps", "description"], ledger_rows)]
    g1 = [r["phase"] for r in report["ledger"] if r["G1"]]
    parts.append(f"G1 reached by: {', '.join(g1) or 'none'}. G2 reached by: {g2_reached(report['ledger'])}. "
                 f"95% CIs: rliable's stratified bootstrap over seeds, {settings['reps']} resamples, seeded "
                 f"({settings['bootstrap']} engine).")
    if "compare" in report:
        c = report["compare"]
        lines = [f"## {c['a']} vs {c['b']}",
                 f"- {c['a']}: {c['n_a']} seeds, mean {fmt_num(c['mean_a'])}; {c['b']}: {c['n_b']} seeds, "
                 f"mean {fmt_num(c['mean_b'])}",
                 f"- probability of improvement P({c['a']} > {c['b']}) = {fmt_num(c['probability_of_improvement'], 3)} "
                 f"(95% CI {fmt_num(c['poi_ci_low'], 3)} to {fmt_num(c['poi_ci_high'], 3)}, stratified bootstrap)",
                 f"- Welch's t-test: t = {fmt_num(c['welch_t'], 3)}, p = {fmt_num(c['welch_p'], 4)}"]
        lines += [f"- **warning**: {w}" for w in c["warnings"]]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def frames(report: dict) -> dict[str, pd.DataFrame]:
    """The tables as flat frames (lists joined with spaces), for CSV output."""
    header, rows = per_phase_wide(report)
    ledger = pd.DataFrame(report["ledger"], columns=list(LEDGER_KEYS))
    for column in ("seeds", "best_seeds"):
        ledger[column] = ledger[column].map(lambda xs: " ".join(str(x) for x in xs))
    out = {"per_seed": pd.DataFrame(report["per_seed"], columns=list(PER_SEED_KEYS)),
           "per_phase": pd.DataFrame(rows, columns=header), "ledger": ledger}
    if "compare" in report:
        c = dict(report["compare"], warnings="; ".join(report["compare"]["warnings"]))
        out["compare"] = pd.DataFrame([c])
    return out


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def render_json(report: dict) -> str:
    return json.dumps(_json_safe(report), indent=1)


def render_csv(report: dict) -> str:
    return "\n".join(f.to_csv(index=False) for f in frames(report).values())


def write_csvs(report: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in frames(report).items():
        path = out / f"{name}.csv"
        tmp = path.with_suffix(".csv.tmp")
        frame.to_csv(tmp, index=False)
        tmp.replace(path)  # nothing half-written
        written.append(path)
    return written


# ---- command line ----------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="seed_stats.py", description="Seed statistics, the phase ledger and "
                                "honest comparisons of best MPPI over seeds.")
    p.add_argument("--runs", default=None, metavar="DIR", help=f"runs root (default: ${RUNS_ENV}, else ./runs)")
    p.add_argument("--import", dest="imports", nargs="+", metavar="CSV", default=[],
                   help="CSVs of results run elsewhere: phase, seed, best_mppi [, benchmark_fair, env_steps]")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"a seed hits when best MPPI >= this ({DEFAULT_THRESHOLD:g})")
    p.add_argument("--ceiling", type=float, default=DEFAULT_CEILING,
                   help=f"G2: some seed's best MPPI >= this ({DEFAULT_CEILING:g})")
    p.add_argument("--format", choices=("md", "csv", "json"), default="md")
    p.add_argument("--out", default=None, metavar="DIR", help="also write per_seed.csv, per_phase.csv, ledger.csv")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="P(A > B) with CI, Welch's t-test")
    p.add_argument("--reps", type=int, default=DEFAULT_REPS, help=f"bootstrap resamples ({DEFAULT_REPS})")
    p.add_argument("--bootstrap", choices=BOOTSTRAP_ENGINES, default="numpy",
                   help="numpy: rliable's resampling draw for draw, vectorised (default); rliable: "
                        "rliable.library itself (same numbers, slower; needs an importable rliable.library)")
    p.add_argument("--phases-dir", default=None, help=argparse.SUPPRESS)  # tests: another phases/ folder
    args = p.parse_args(argv)
    if args.reps < 1:
        p.error("--reps must be at least 1")
    from analysis.uncertainty import EngineUnavailable

    notes: list[str] = []
    try:
        try:
            report = stats_report(args.runs, args.imports, threshold=args.threshold, ceiling=args.ceiling,
                                  reps=args.reps, bootstrap=args.bootstrap, compare_phases=args.compare,
                                  phases_dir=args.phases_dir, notes=notes)
        except EngineUnavailable as e:  # --bootstrap rliable where rliable.library cannot be imported
            raise AnalysisError(f"--bootstrap rliable: {e}") from None
        if args.out:
            try:
                write_csvs(report, Path(args.out))
            except OSError as e:
                raise AnalysisError(f"--out {args.out}: cannot write: {e.strerror or e}") from None
    except AnalysisError as e:
        for note in notes:
            warn(note)
        print(f"error: {e}", file=sys.stderr)
        return 2
    for note in notes:
        warn(note)
    for w in report.get("compare", {}).get("warnings", []):
        warn(w)
    text = {"md": render_markdown, "csv": render_csv, "json": render_json}[args.format](report)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
