"""analysis/: the run loader, seed_stats.py, the bootstrap, colours and curves.py, on hand-made runs roots.

Every expected number below was worked out by hand from the values written into the runs (see the comments),
not recomputed with the code under test.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from analysis import colors, curves, seed_stats, uncertainty
from analysis import runs as runs_mod
from analysis.runs import AnalysisError
from tdmpc_glass import runlayout
from tdmpc_glass.runlayout import CONFIG, EVAL, EVENTS, STATUS, TRAIN

REPO = Path(__file__).resolve().parents[1]
EVAL_HEADER = ["env_step", "agent_step", "mppi_return", "mppi_return_std", "pi_return", "pi_return_std",
               "episodes", "wall_time_s"]
TRAIN_HEADER = ["env_step", "agent_step", "update", "consistency_loss", "reward_loss", "value_loss", "pi_loss",
                "total_loss", "grad_norm", "pi_grad_norm", "q_scale", "updates_per_s", "env_steps_per_s",
                "wall_time_s"]


# ---- building runs roots ---------------------------------------------------------------------------------------

def make_run(root: Path, phase_dir: str, seed: int, mppi: list[float] | None, *, variant: str = "default",
             meta: dict | None = None, status: str | None = "done", partial: str | None = None,
             step: int = 100_000, train_rows: int = 0) -> Path:
    """A run directory; mppi[i] is the MPPI score of the evaluation at env step (i + 1) * step."""
    run = root / phase_dir / variant / f"seed{seed}"
    run.mkdir(parents=True)
    if meta is not None:
        (run / CONFIG).write_text(yaml.safe_dump(
            {"phase": {"variant": variant, **meta}, "seed": seed, "config": {"task": "hopper-hop"}}))
    if mppi is not None:
        with open(run / EVAL, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(EVAL_HEADER)
            for i, score in enumerate(mppi):
                env_step = (i + 1) * step
                w.writerow([env_step, env_step // 2, score, 10.0, score / 2, 5.0, 10, 60.0 * (i + 1)])
        if partial is not None:
            with open(run / EVAL, "a") as f:
                f.write(partial)  # the writer was killed mid-row: no newline
    if train_rows:
        with open(run / TRAIN, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(TRAIN_HEADER)
            for i in range(train_rows):
                env_step = (i + 1) * 1000
                w.writerow([env_step, env_step // 2, i, 1.0, 1.0, 1.0, 1.0, 4.0 - i * 1e-3, 1.0, 1.0, 1.0, 50.0,
                            100.0, float(i)])
    if status is not None:
        last = (len(mppi or []) * step)
        (run / STATUS).write_text(json.dumps(
            {"status": status, "env_step": last, "total_env_steps": 1_000_000, "updated": "2026-01-01T00:00:00",
             "last_mppi_return": None, "best_mppi_return": None, "env_steps_per_s": None}))
    (run / EVENTS).write_text('{"time": "2026-01-01T00:00:00", "env_step": 0, "event": "start"}\n'
                                      '{"time": "2026-01-01T00:0')  # partial last event line
    return run


@pytest.fixture
def phases_dir(tmp_path: Path) -> Path:
    d = tmp_path / "phases"
    d.mkdir()
    (d / "base.yaml").write_text("name: base\ndescription: defaults\nbenchmark_fair: true\nseeds: 1-5\n")
    (d / "x.yaml").write_text(yaml.safe_dump({
        "name": "x", "description": "Phase x. Merged from two machines.", "extends": "base",
        "benchmark_fair": True, "seeds": "1-5", "aliases": ["phasex_local", "phasex_4060"], "overrides": {}}))
    return d


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The hand-made runs root. Best MPPI per run (the max over its evaluations):

    alpha     s1 510  s2 300  s3 510  s4 120  s5 450        ties at the top (s1 = s3); s6 running, no eval yet
    beta      s1 200  s2 600  s4 200  s5 350               seed 3 missing; ties at the bottom (s1 = s4);
                                                            s5 running with a partial last row '300000,150000,999'
                                                            (999 must not count); s4 failed
    gamma     s1 700                                        a single seed
    x         s1 400  s2 520  (filed as phasex_local)       merged by phases/x.yaml aliases
              s3 100          (filed as phasex_4060, no config.yaml)
    delta     s1 250  (filed as delta_local, config: name delta, aliases [delta_local, delta_4060])
              s2 260  (filed as delta_4060, config: name delta_4060)
    shaped    s1 610  s2 550  s3 520  s4 505  s5 530        benchmark_fair: false
    kk:k128   s1 90   s2 95                                 a variant
    plus foreign folders that are not runs.
    """
    r = tmp_path / "runs"
    alpha = {"name": "alpha", "description": "Alpha phase. Five seeds.", "benchmark_fair": True, "aliases": []}
    for seed, scores in {1: [100, 510, 480], 2: [300, 250, 120], 3: [510, 510, 200], 4: [50, 120, 110],
                         5: [450, 400]}.items():
        make_run(r, "alpha", seed, scores, meta=alpha)
    make_run(r, "alpha", 6, [], meta=alpha, status="running")  # header only: no evaluation yet
    beta = {"name": "beta", "description": "Beta phase", "benchmark_fair": True, "aliases": []}
    make_run(r, "beta", 1, [200, 150], meta=beta)
    make_run(r, "beta", 2, [100, 600, 590], meta=beta)
    make_run(r, "beta", 4, [200], meta=beta, status="failed")
    make_run(r, "beta", 5, [120, 350], meta=beta, status="running", partial="300000,150000,999")
    make_run(r, "gamma", 1, [300, 700], meta={"name": "gamma", "description": "", "benchmark_fair": True})
    make_run(r, "phasex_local", 1, [400], meta={"name": "phasex_local", "benchmark_fair": True})
    make_run(r, "phasex_local", 2, [480, 520], meta={"name": "phasex_local", "benchmark_fair": True})
    make_run(r, "phasex_4060", 3, [100], meta=None, status=None)
    make_run(r, "delta_local", 1, [250], meta={"name": "delta", "benchmark_fair": True,
                                                "aliases": ["delta_local", "delta_4060"]})
    make_run(r, "delta_4060", 2, [260], meta={"name": "delta_4060", "benchmark_fair": True})
    shaped = {"name": "shaped", "description": "Knee penalty shaping", "benchmark_fair": False, "aliases": []}
    for seed, best in {1: 610, 2: 550, 3: 520, 4: 505, 5: 530}.items():
        make_run(r, "shaped", seed, [best - 100, best], meta=shaped)
    kk = {"name": "kk", "benchmark_fair": True}
    make_run(r, "kk", 1, [90], variant="k128", meta=kk, train_rows=30)
    make_run(r, "kk", 2, [95], variant="k128", meta=kk, train_rows=20)
    # foreign things that are not runs
    (r / "notes").mkdir()
    (r / "notes" / "README.txt").write_text("not a run")
    (r / "alpha" / "default" / "scratch").mkdir()
    (r / "alpha" / "default" / "scratch" / EVAL).write_text("env_step,mppi_return\n1,10000\n")
    (r / "alpha" / "default" / "seed9").mkdir()  # empty: no run files
    (r / ".cache" / "x" / "seed1").mkdir(parents=True)
    (r / ".cache" / "x" / "seed1" / EVAL).write_text("env_step,mppi_return\n1,10000\n")
    (r / "stray.csv").write_text("a,b\n")
    return r


def stats_main(capsys, *argv) -> tuple[int, str, str]:
    code = seed_stats.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_script(script: str, *argv, env_extra: dict | None = None, cwd: Path | None = None):
    env = {k: v for k, v in os.environ.items() if k != runlayout.RUNS_ENV}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(REPO / "analysis" / script), *argv], capture_output=True,
                          text=True, env=env, cwd=cwd or REPO, timeout=120)


# ---- the loader ------------------------------------------------------------------------------------------------

def test_read_csv_drops_partial_last_row_and_tolerates_missing_and_empty(tmp_path):
    path = tmp_path / "eval.csv"
    path.write_text("env_step,mppi_return\n100,1.5\n200,2.5\n300,99")
    frame = runs_mod.read_csv(path)
    assert frame["env_step"].tolist() == [100, 200] and frame["mppi_return"].tolist() == [1.5, 2.5]
    path.write_text("env_step,mppi_ret")  # cut inside the header
    assert runs_mod.read_csv(path).empty
    path.write_text("")
    assert runs_mod.read_csv(path).empty
    assert runs_mod.read_csv(tmp_path / "missing.csv").empty
    path.write_text("env_step,mppi_return\n")
    assert runs_mod.read_csv(path).empty


def test_load_runs_labels_aliases_fairness_and_foreign_dirs(root, phases_dir):
    loaded = runs_mod.load_runs(root, phases_dir=phases_dir)
    found = {(r.label, r.seed) for r in loaded}
    assert found == {("alpha", s) for s in range(1, 7)} | {("beta", s) for s in (1, 2, 4, 5)} | {("gamma", 1)} | \
        {("x", 1), ("x", 2), ("x", 3)} | {("delta", 1), ("delta", 2)} | {("shaped", s) for s in range(1, 6)} | \
        {("kk:k128", 1), ("kk:k128", 2)}
    by = {(r.label, r.seed): r for r in loaded}
    assert by[("beta", 5)].best_mppi == 350.0  # the partial row '300000,150000,999' is not an evaluation
    assert by[("beta", 5)].status == "running" and by[("beta", 4)].status == "failed"
    assert by[("alpha", 6)].best_mppi is None and by[("alpha", 6)].status == "running"
    assert by[("alpha", 1)].best_mppi == 510.0  # the max over evaluations, not the last one (480)
    assert by[("x", 3)].filed_as == "phasex_4060" and by[("x", 3)].status == "unknown"
    assert by[("x", 3)].description == "Phase x. Merged from two machines."
    assert by[("delta", 2)].filed_as == "delta_4060"
    assert by[("shaped", 3)].benchmark_fair is False and by[("alpha", 3)].benchmark_fair is True
    assert by[("kk:k128", 1)].variant == "k128" and by[("kk:k128", 1)].task == "hopper-hop"
    assert len(by[("kk:k128", 1)].train()) == 30
    assert [e["event"] for e in by[("alpha", 1)].events()] == ["start"]
    # a phase file that marks the phase unfair wins over a run record that says fair
    (phases_dir / "gamma.yaml").write_text("name: gamma\nbenchmark_fair: false\n")
    gamma = [r for r in runs_mod.load_runs(root, phases_dir=phases_dir) if r.phase == "gamma"]
    assert [r.benchmark_fair for r in gamma] == [False]


def test_phase_names_resolve_chains_and_prefer_phase_files():
    names = runs_mod.PhaseNames({"z": runs_mod.PhaseInfo("z", aliases=["phasez"])})
    names.add("phasez_old", ["phasez_4060"])
    names.add("phasez", ["phasez_old"])  # a run whose config calls the phase phasez
    assert names.canonical("phasez_4060") == "z" and names.canonical("phasez_old") == "z"
    assert names.label("phasez:k128") == "z:k128" and names.label("phasez:default") == "z"
    assert names.canonical("unknown") == "unknown"
    loose = runs_mod.PhaseNames()
    loose.add("y_local", ["y_4060"])
    loose.add("y", ["y_local", "y_4060"])  # the name nobody lists as an alias is canonical
    assert {loose.canonical(n) for n in ("y", "y_local", "y_4060")} == {"y"}


def test_runs_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(runlayout.RUNS_ENV, raising=False)
    assert runlayout.runs_root(None) == Path("runs")
    monkeypatch.setenv(runlayout.RUNS_ENV, str(tmp_path))
    assert runlayout.runs_root(None) == tmp_path
    assert runlayout.runs_root("elsewhere") == Path("elsewhere")


# ---- seed_stats: tables ----------------------------------------------------------------------------------------

def test_per_seed_table_by_hand(root, phases_dir, capsys):
    code, out, _ = stats_main(capsys, "--runs", str(root), "--phases-dir", str(phases_dir), "--format", "json",
                              "--reps", "200")
    assert code == 0
    report = json.loads(out)
    # phases with >= 2 seeds: alpha, beta, x, delta, shaped, kk:k128 (gamma has one seed).
    # best / worst seeds: alpha s1,s3 / s4; beta s2 / s1,s4; x s2 / s3; delta s2 / s1; shaped s1 / s4;
    # kk:k128 s2 / s1.
    # s1: 510 200 400 250 610 90 -> mean 2060/6, sorted 90 200 250 400 510 610 -> median 325
    # s2: 300 600 520 260 550 95 -> mean 2325/6 = 387.5, median (300 + 520) / 2 = 410
    # s3: 510 100 520 -> mean 1130/3, median 510;  s4: 120 200 505 -> mean 275, median 200
    # s5: 450 350 530 -> mean 1330/3, median 450
    expected = [
        {"seed": 1, "n_phases": 6, "mean": 2060 / 6, "median": 325.0, "max": 610.0, "min": 90.0,
         "times_best": 2, "times_worst": 3},
        {"seed": 2, "n_phases": 6, "mean": 387.5, "median": 410.0, "max": 600.0, "min": 95.0,
         "times_best": 4, "times_worst": 0},
        {"seed": 3, "n_phases": 3, "mean": 1130 / 3, "median": 510.0, "max": 520.0, "min": 100.0,
         "times_best": 1, "times_worst": 1},
        {"seed": 4, "n_phases": 3, "mean": 275.0, "median": 200.0, "max": 505.0, "min": 120.0,
         "times_best": 0, "times_worst": 3},
        {"seed": 5, "n_phases": 3, "mean": 1330 / 3, "median": 450.0, "max": 530.0, "min": 350.0,
         "times_best": 0, "times_worst": 0},
    ]
    assert [set(row) for row in report["per_seed"]] == [set(seed_stats.PER_SEED_KEYS)] * 5
    for got, want in zip(report["per_seed"], expected):
        assert got == pytest.approx(want)
    assert set(report) >= {"per_seed", "per_phase", "ledger"}


def test_per_phase_and_ledger_by_hand(root, phases_dir, capsys):
    code, out, _ = stats_main(capsys, "--runs", str(root), "--phases-dir", str(phases_dir), "--format", "json",
                              "--reps", "300")
    assert code == 0
    report = json.loads(out)
    per_phase = {p["phase"]: p for p in report["per_phase"]}
    assert list(per_phase) == ["alpha", "beta", "delta", "gamma", "kk:k128", "shaped", "x"]
    assert per_phase["alpha"]["best_mppi"] == {"1": 510.0, "2": 300.0, "3": 510.0, "4": 120.0, "5": 450.0}
    assert per_phase["alpha"]["best_seeds"] == [1, 3]
    assert per_phase["beta"]["best_mppi"] == {"1": 200.0, "2": 600.0, "4": 200.0, "5": 350.0}
    assert per_phase["x"]["best_mppi"] == {"1": 400.0, "2": 520.0, "3": 100.0}
    ledger = {row["phase"]: row for row in report["ledger"]}
    want = {  # phase: (n_seeds, best, best_seeds, hits, G1, G2, fair)
        "alpha": (5, 510.0, [1, 3], 2, False, False, True),
        "beta": (4, 600.0, [2], 1, False, True, True),  # 600 >= ceiling 600
        "gamma": (1, 700.0, [1], 1, False, True, True),
        "x": (3, 520.0, [2], 1, False, False, True),
        "delta": (2, 260.0, [2], 0, False, False, True),
        "shaped": (5, 610.0, [1], 5, False, True, False),  # would be G1, but benchmark-unfair; G2 counts any phase
        "kk:k128": (2, 95.0, [2], 0, False, False, True),
    }
    for phase, (n, best, best_seeds, hits, g1, g2, fair) in want.items():
        row = ledger[phase]
        assert (row["n_seeds"], row["best_mppi"], row["best_seeds"], row["hits"], row["G1"], row["G2"],
                row["benchmark_fair"]) == (n, best, best_seeds, hits, g1, g2, fair), phase
        assert row["hit_rate"] == pytest.approx(hits / n)
    assert ledger["beta"]["n_running"] == 1 and ledger["alpha"]["n_running"] == 0  # alpha s6 has no eval
    assert ledger["alpha"]["env_steps"] == 300_000
    assert ledger["x"]["description"] == "Phase x. Merged from two machines."
    # IQM = 25% trimmed mean: alpha 120 300 450 510 510 -> mean(300, 450, 510) = 420; mean 1890/5 = 378
    assert ledger["alpha"]["iqm"] == pytest.approx(420.0) and ledger["alpha"]["mean"] == pytest.approx(378.0)
    # shaped 505 520 530 550 610 -> IQM (520 + 530 + 550) / 3; beta 200 200 350 600 -> IQM (200 + 350) / 2
    assert ledger["shaped"]["iqm"] == pytest.approx(1600 / 3) and ledger["beta"]["iqm"] == pytest.approx(275.0)
    assert ledger["x"]["iqm"] == pytest.approx(340.0)  # IQM of 3 values is their mean
    for row in report["ledger"]:
        if row["n_seeds"] >= 2:
            values = [per_phase[row["phase"]]["best_mppi"][str(s)] for s in row["seeds"]]
            lo, hi = min(values), max(values)
            assert lo <= row["mean_ci_low"] <= row["mean"] <= row["mean_ci_high"] <= hi
            assert lo <= row["iqm_ci_low"] <= row["iqm"] <= row["iqm_ci_high"] <= hi
        else:
            assert row["iqm_ci_low"] is None and row["mean_ci_high"] is None
    assert ledger["delta"]["mean_ci_low"] >= 250.0 and ledger["delta"]["mean_ci_high"] <= 260.0


def test_threshold_and_ceiling_flags(root, phases_dir, capsys):
    code, out, _ = stats_main(capsys, "--runs", str(root), "--phases-dir", str(phases_dir), "--format", "json",
                              "--threshold", "100", "--ceiling", "700", "--reps", "50")
    ledger = {row["phase"]: row for row in json.loads(out)["ledger"]}
    # alpha 510 300 510 120 450: all >= 100 and 5 seeds -> G1; 700 reached only by gamma
    assert ledger["alpha"]["hits"] == 5 and ledger["alpha"]["G1"] is True
    assert ledger["beta"]["G2"] is False and ledger["gamma"]["G2"] is True
    assert ledger["x"]["hits"] == 3  # 400 520 100: 100 >= 100 counts
    assert ledger["delta"]["hits"] == 2


def test_markdown_and_out_csvs(root, phases_dir, capsys, tmp_path):
    out_dir = tmp_path / "tables"
    code, out, _ = stats_main(capsys, "--runs", str(root), "--phases-dir", str(phases_dir), "--out", str(out_dir),
                              "--reps", "100")
    assert code == 0
    assert "| s1 | 6 | 343.3 | 325.0 | 610.0 | 90.0 | 2 | 3 |" in out
    assert "| alpha | 510.0 | 300.0 | 510.0 | 120.0 | 450.0 | s1, s3 |" in out
    assert "| beta | 200.0 | 600.0 | - | 200.0 | 350.0 | s2 |" in out
    assert "| shaped (unfair) | **no** | 5 | 610.0 (s1) | 5/5 | excl. | **G2** (unfair) |" in out
    assert ("G1 reached by: none. G2 reached by: beta (s2, benchmark-fair), gamma (s1, benchmark-fair), "
            "shaped (s1, benchmark-unfair).") in out
    with open(out_dir / "per_seed.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(seed_stats.PER_SEED_KEYS)
    assert [(r["seed"], r["n_phases"], r["times_best"], r["times_worst"]) for r in rows] == \
        [("1", "6", "2", "3"), ("2", "6", "4", "0"), ("3", "3", "1", "1"), ("4", "3", "0", "3"), ("5", "3", "0", "0")]
    with open(out_dir / "per_phase.csv") as f:
        per_phase = {r["phase"]: r for r in csv.DictReader(f)}
    assert per_phase["beta"]["s3"] == "" and per_phase["beta"]["s2"] == "600.0"
    with open(out_dir / "ledger.csv") as f:
        ledger = {r["phase"]: r for r in csv.DictReader(f)}
    assert ledger["shaped"]["benchmark_fair"] == "False" and ledger["alpha"]["best_seeds"] == "1 3"
    code, out, _ = stats_main(capsys, "--runs", str(root), "--phases-dir", str(phases_dir), "--format", "csv",
                              "--reps", "20")
    assert out.startswith(",".join(seed_stats.PER_SEED_KEYS) + "\n1,6,")


def test_compare_probability_of_improvement_and_welch(root, phases_dir, capsys):
    code, out, err = stats_main(capsys, "--runs", str(root), "--phases-dir", str(phases_dir), "--format", "json",
                                "--compare", "alpha", "beta", "--reps", "500")
    assert code == 0
    c = json.loads(out)["compare"]
    # alpha 510 300 510 120 450 vs beta 200 600 200 350: pairs alpha > beta: 510 -> 3, 300 -> 2, 510 -> 3,
    # 120 -> 0, 450 -> 3; 11 of 20, no ties
    assert c["probability_of_improvement"] == pytest.approx(11 / 20)
    assert 0.0 <= c["poi_ci_low"] <= 0.55 <= c["poi_ci_high"] <= 1.0
    # Welch: means 378 and 337.5, sample variances 112680/4 = 28170 and 106875/3 = 35625;
    # t = 40.5 / sqrt(28170/5 + 35625/4) = 40.5 / sqrt(14540.25)
    assert c["welch_t"] == pytest.approx(40.5 / 14540.25 ** 0.5)
    assert 0.5 < c["welch_p"] < 1.0
    assert c["n_a"] == 5 and c["n_b"] == 4
    assert any("beta has 4 seeds" in w for w in c["warnings"]) and not any("alpha" in w for w in c["warnings"])
    assert "warning: beta has 4 seeds" in err
    code, out, _ = stats_main(capsys, "--runs", str(root), "--phases-dir", str(phases_dir), "--compare",
                              "phasex_local", "alpha", "--reps", "100")
    assert code == 0 and "## x vs alpha" in out and "**warning**: x has 3 seeds" in out
    code, _, err = stats_main(capsys, "--runs", str(root), "--phases-dir", str(phases_dir), "--compare", "alpha",
                              "nope")
    assert code == 2 and err.startswith("error: --compare: no results for phase 'nope'")


def test_plain_function_gives_the_cli_report(root, phases_dir, tmp_path, capsys):
    """stats_report with plain arguments is the report the command line prints, flag for flag."""
    imported = tmp_path / "more.csv"
    imported.write_text("phase,seed,best_mppi\nimp,1,510\nimp,2,620\nphasex_4060,4,505\n")
    argv = ["--runs", str(root), "--phases-dir", str(phases_dir), "--import", str(imported), "--reps", "150",
            "--threshold", "450", "--ceiling", "650", "--compare", "alpha", "beta"]
    code, printed_md, _ = stats_main(capsys, *argv)
    assert code == 0
    code, printed_json, _ = stats_main(capsys, *argv, "--format", "json")
    assert code == 0
    report = seed_stats.stats_report(root, [imported], threshold=450, ceiling=650, reps=150,
                                     compare_phases=("alpha", "beta"), phases_dir=phases_dir)
    assert capsys.readouterr() == ("", "")  # the plain function prints nothing (main prints the warnings)
    assert json.loads(seed_stats.render_json(report)) == json.loads(printed_json)
    assert seed_stats.render_markdown(report) == printed_md
    ledger = {row["phase"]: row for row in report["ledger"]}
    assert ledger["alpha"]["hits"] == 3 and ledger["imp"]["G2"] is False  # 450 and 650, not the defaults
    # the two steps it is made of, and the defaults of the command line
    names = seed_stats.phase_names(phases_dir)
    results = seed_stats.gather(root, names=names)
    default = seed_stats.build_report(results, names, reps=150)
    assert default["settings"] == {"threshold": 500.0, "ceiling": 600.0, "reps": 150, "bootstrap": "numpy"}
    code, out, _ = stats_main(capsys, "--runs", str(root), "--phases-dir", str(phases_dir), "--reps", "150",
                              "--format", "json")
    assert json.loads(seed_stats.render_json(default)) == json.loads(out)
    # bad input raises AnalysisError (the command line prints it as `error: ...`, exit 2)
    with pytest.raises(AnalysisError, match="does not exist"):
        seed_stats.stats_report(tmp_path / "nowhere", phases_dir=phases_dir)


# ---- seed_stats: imports ---------------------------------------------------------------------------------------

def test_import_combines_with_runs_and_runs_win(root, phases_dir, tmp_path, capsys):
    imported = tmp_path / "elsewhere.csv"
    imported.write_text("phase,seed,best_mppi,benchmark_fair,env_steps\n"
                        "imp,1,500,true,1000000\nimp,2,501,,\nimp,3,520,true,\nimp,4,530,true,\nimp,5,599,1,\n"
                        "alpha,2,999,true,\n"  # a run of alpha seed 2 exists: the run (300) wins
                        "phasex_4060,4,505,true,\n")  # an alias: becomes x seed 4
    code, out, err = stats_main(capsys, "--runs", str(root), "--phases-dir", str(phases_dir), "--import",
                                str(imported), "--format", "json", "--reps", "100")
    assert code == 0
    assert "alpha seed 2" in err
    report = json.loads(out)
    ledger = {row["phase"]: row for row in report["ledger"]}
    # imp: 500 501 520 530 599, 5 seeds all >= 500 (500 counts) -> G1; none >= 600 -> no G2
    assert ledger["imp"]["G1"] is True and ledger["imp"]["G2"] is False and ledger["imp"]["hits"] == 5
    assert ledger["imp"]["env_steps"] == 1_000_000
    per_phase = {p["phase"]: p for p in report["per_phase"]}
    assert per_phase["alpha"]["best_mppi"]["2"] == 300.0
    assert per_phase["x"]["best_mppi"] == {"1": 400.0, "2": 520.0, "3": 100.0, "4": 505.0}


def test_duplicates_later_import_and_furthest_run_win(tmp_path, phases_dir, capsys):
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_text("phase,seed,best_mppi\nq,1,100\nq,2,200\n")
    second.write_text("phase,seed,best_mppi\nq,2,250\n")
    code, out, err = stats_main(capsys, "--import", str(first), str(second), "--format", "json", "--reps", "10")
    assert code == 0 and "q seed 2" in err
    assert json.loads(out)["per_phase"][0]["best_mppi"] == {"1": 100.0, "2": 250.0}
    # x seed 1 filed twice, under phasex_local (2 evals, best 300) and phasex_4060 (1 eval, best 900)
    r = tmp_path / "runs"
    make_run(r, "phasex_local", 1, [100, 300])
    make_run(r, "phasex_4060", 1, [900])
    make_run(r, "phasex_4060", 2, [50])
    code, out, err = stats_main(capsys, "--runs", str(r), "--phases-dir", str(phases_dir), "--format", "json",
                                "--reps", "10")
    assert code == 0 and "x seed 1" in err
    assert json.loads(out)["per_phase"][0]["best_mppi"] == {"1": 300.0, "2": 50.0}


def test_import_alone_reproduces_log_section_9_2(capsys, monkeypatch):
    """The research log's section 9.2 table, typed in (analysis/import/README.md says how it was read)."""
    monkeypatch.delenv(runlayout.RUNS_ENV, raising=False)
    code, out, _ = stats_main(capsys, "--import", str(REPO / "analysis/import/glass_log_9_2.csv"), "--format",
                              "json", "--reps", "100")
    assert code == 0
    report = json.loads(out)
    # by hand from the log's values:
    # s1: baseline 284, 1b 526, f 572, j 452, t 375 -> mean 2209/5, median 452; best in f; worst in t
    # s2: 341 526 284 518 612 268 -> mean 2549/6, median (341+518)/2; best in j, t; worst in z
    # s3: 526 294 262 322 578 197 534 535 -> mean 3248/8 = 406, median (322+526)/2 = 424; best in baseline, o, z
    # s4: 356 227 266 266 254 538 448 -> mean 2355/7, median 266; best in p; worst in 1b, j
    # s5: 264 562 255 354 33 27 467 -> mean 1962/7, median 264; best in 1b; worst in baseline, f, o, p
    expected = [(1, 5, 2209 / 5, 452, 572, 284, 1, 1), (2, 6, 2549 / 6, 429.5, 612, 268, 2, 1),
                (3, 8, 406.0, 424, 578, 197, 3, 0), (4, 7, 2355 / 7, 266, 538, 227, 1, 2),
                (5, 7, 1962 / 7, 264, 562, 27, 1, 4)]
    got = [tuple(row[k] for k in seed_stats.PER_SEED_KEYS) for row in report["per_seed"]]
    assert got == [pytest.approx(e) for e in expected]
    ledger = {row["phase"]: row for row in report["ledger"]}
    # G1 is fair-only and nobody reached it; G2 counts any phase: the log's "G2 hit!" by t (612, benchmark-unfair)
    assert ledger["t"]["benchmark_fair"] is False and ledger["t"]["best_mppi"] == 612
    assert (ledger["t"]["G2"], ledger["t"]["G2_seeds"], ledger["t"]["G2_fair"]) == (True, [2], False)
    assert not any(row["G1"] for row in report["ledger"])
    assert [row["phase"] for row in report["ledger"] if row["G2"]] == ["t"]
    code, out, _ = stats_main(capsys, "--import", str(REPO / "analysis/import/glass_log_9_2.csv"), "--reps", "100")
    assert code == 0 and "G1 reached by: none. G2 reached by: t (s2, benchmark-unfair)." in out
    assert "| t (unfair) | **no** |" in out and "| excl. | **G2** (unfair) |" in out
    assert ledger["1b"]["hits"] == 3  # 526, 526, 562


# ---- error paths (the script, as a user runs it) ---------------------------------------------------------------

def test_error_missing_runs_root(tmp_path):
    result = run_script("seed_stats.py", "--runs", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: runs root") and "nowhere" in result.stderr


def test_error_no_runs_found_and_default_root(tmp_path):
    empty = tmp_path / "empty"
    (empty / "notes").mkdir(parents=True)
    result = run_script("seed_stats.py", env_extra={runlayout.RUNS_ENV: str(empty)}, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: no runs found under")
    assert result.stderr.strip().count("\n") == 0 and str(empty) in result.stderr


def test_error_import_with_wrong_columns(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("phase,seed,score\n1b,1,526\n")
    result = run_script("seed_stats.py", "--import", str(bad), cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().count("\n") == 0
    assert str(bad) in result.stderr and "missing column 'best_mppi'" in result.stderr


def test_error_bad_values_in_import(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("phase,seed,best_mppi\n1b,1,526\n1b,two,300\n")
    code, _, err = stats_main(capsys, "--import", str(bad))
    assert code == 2 and err == f"error: {bad}: line 3: seed 'two' is not an integer\n"
    bad.write_text("")
    code, _, err = stats_main(capsys, "--import", str(bad))
    assert code == 2 and err.startswith(f"error: {bad}: empty file")


# ---- the bootstrap ---------------------------------------------------------------------------------------------

def test_bootstrap_is_seeded_and_matches_rliable_where_it_imports():
    values = [284.0, 341.0, 526.0, 356.0, 264.0]
    first = uncertainty.iqm_and_mean(values, reps=300)
    assert uncertainty.iqm_and_mean(values, reps=300) == first  # the global RNG is seeded each time
    assert uncertainty.probability_of_improvement([1.0, 2.0], [1.0, 2.0], reps=50)[0] == 0.5
    if uncertainty.rliable_library() is None:
        pytest.skip("rliable.library does not import here (arch/pandas versions); the numpy engine is used")
    for a, b in (([526.0, 526.0, 294.0, 227.0, 562.0], [578.0, 254.0, 33.0]), ([1.0, 5.0, 3.0], [2.0, 4.0, 6.0])):
        assert uncertainty.iqm_and_mean(a, reps=300) == uncertainty.iqm_and_mean(a, reps=300, engine="rliable")
        assert uncertainty.probability_of_improvement(a, b, reps=200) == \
            uncertainty.probability_of_improvement(a, b, reps=200, engine="rliable")


def test_numpy_engine_resamples_as_rliable_does():
    """The numpy engine's CIs are those of rliable's scheme written as a plain loop: numpy's global RNG seeded,
    then per replicate `np.random.choice(n, (n, 1))` for each score array in turn, 95% percentile interval."""
    from scipy import stats

    reps, seed = 60, 7
    values = np.array([284.0, 341.0, 526.0, 356.0, 264.0])
    np.random.seed(seed)
    rows = [np.random.choice(len(values), (len(values), 1), replace=True)[:, 0] for _ in range(reps)]
    iqms = [stats.trim_mean(values[r], 0.25) for r in rows]
    means = [values[r].mean() for r in rows]
    got = uncertainty.iqm_and_mean(values, reps=reps, seed=seed)
    assert (got["iqm_ci_low"], got["iqm_ci_high"]) == pytest.approx(tuple(np.percentile(iqms, [2.5, 97.5])))
    assert (got["mean_ci_low"], got["mean_ci_high"]) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))

    def improvement(x, y) -> float:  # P(x > y), ties half
        return ((x[:, None] > y[None, :]).sum() + 0.5 * (x[:, None] == y[None, :]).sum()) / (len(x) * len(y))

    # arrays of the same size (drawn in one call by the engine) and of different sizes (drawn one by one)
    for a, b in ((np.array([526.0, 294.0, 227.0, 562.0]), np.array([578.0, 254.0, 33.0, 300.0])),
                 (np.array([526.0, 294.0, 227.0, 562.0]), np.array([578.0, 254.0, 33.0]))):
        np.random.seed(seed)
        replicates = []
        for _ in range(reps):
            ra = np.random.choice(len(a), (len(a), 1), replace=True)[:, 0]
            rb = np.random.choice(len(b), (len(b), 1), replace=True)[:, 0]
            replicates.append(improvement(a[ra], b[rb]))
        _, low, high = uncertainty.probability_of_improvement(a, b, reps=reps, seed=seed)
        assert (low, high) == pytest.approx(tuple(np.percentile(replicates, [2.5, 97.5])))


# ---- colours and curves ----------------------------------------------------------------------------------------

def test_colours_are_stable_and_distinct():
    assert colors.phase_color("1b") == colors.phase_color("1b")
    assert colors.phase_color("1b").startswith("#") and len(colors.phase_color("1b")) == 7
    assert len({colors.phase_color(p) for p in ["1b", "f", "j", "o", "p", "t", "z", "aa"]}) == 8
    assert colors.phase_color("aa:k128") != colors.phase_color("aa:k256")
    # the value is a function of the name only (a digest, not Python's salted hash): same in a fresh process
    fresh = subprocess.run([sys.executable, "-c", "from analysis.colors import phase_color as c; print(c('1b'))"],
                           capture_output=True, text=True, cwd=REPO, timeout=60)
    assert fresh.stdout.strip() == colors.phase_color("1b")


def test_curves_figure_has_the_phases(root, phases_dir):
    names = runs_mod.PhaseNames(runs_mod.phase_catalogue(phases_dir))
    loaded = runs_mod.load_runs(root, names=names)
    chosen = curves.select_runs(loaded, ["alpha", "beta", "phasex_local"], names)
    assert list(chosen) == ["alpha", "beta", "x"]
    fig = curves.plot_curves(chosen, "mppi_return", reference=True, reps=100)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels[:3] == ["alpha (n=5)", "beta (n=4)", "x (n=3)"]
    assert "tdmpc2 hopper-hop (published)" in labels
    lines = {line.get_gid(): line for line in fig.axes[0].get_lines() if line.get_gid()}
    # alpha at 100k: 100 300 510 50 450 -> 1410/5; at 200k: 510 250 510 120 400 -> 1790/5 (all 5 seeds: solid);
    # at 300k only s1-s4 (s5 has 2 evals): 480 120 200 110 -> 910/4 (dashed, joined to the solid part at 200k)
    solid, dashed = lines["alpha:mean"], lines["alpha:partial"]
    assert solid.get_label() == "alpha (n=5)" and solid.get_color() == colors.phase_color("alpha")
    assert solid.get_xdata().tolist() == [100_000, 200_000, 300_000]
    assert np.allclose(solid.get_ydata(), [282.0, 358.0, np.nan], equal_nan=True)
    assert np.allclose(dashed.get_ydata(), [np.nan, 358.0, 227.5], equal_nan=True)
    # x at 100k: 400 480 100 -> 980/3; at 200k only seed 2 (520): dashed
    assert np.allclose(lines["x:mean"].get_ydata(), [980 / 3, np.nan], equal_nan=True)
    assert np.allclose(lines["x:partial"].get_ydata(), [980 / 3, 520.0])
    curves.plt.close(fig)


def test_bootstrap_band_needs_two_seeds():
    matrix = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, np.nan]])
    low, high = curves.bootstrap_band(matrix, reps=200)
    assert low[0] >= 1.0 and high[0] <= 3.0 and low[1] == high[1] == 2.0
    assert np.isnan(low[2]) and np.isnan(high[2])


def test_curves_script_writes_png_and_errors(root, phases_dir, tmp_path, capsys):
    out = tmp_path / "fig" / "curves.png"
    result = run_script("curves.py", "--runs", str(root), "--phases-dir", str(phases_dir), "--phases", "alpha",
                        "kk:k128", "--out", str(out), "--reference", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out.resolve())
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    svg = tmp_path / "loss.svg"
    code = curves.main(["--runs", str(root), "--phases-dir", str(phases_dir), "--phases", "kk:k128", "--metric",
                        "total_loss", "--out", str(svg)])
    assert code == 0 and svg.read_text().lstrip().startswith("<?xml")
    code = curves.main(["--runs", str(root), "--phases-dir", str(phases_dir), "--phases", "kk", "--out",
                        str(tmp_path / "a.png")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: no runs for 'kk'; phase kk has variants: kk:k128")
    code = curves.main(["--runs", str(root), "--phases-dir", str(phases_dir), "--phases", "alpha", "--metric",
                        "no_such_column", "--out", str(tmp_path / "b.png")])
    assert code == 2 and "no values of 'no_such_column'" in capsys.readouterr().err
    code = curves.main(["--runs", str(tmp_path / "nowhere"), "--phases", "alpha"])
    assert code == 2 and capsys.readouterr().err.startswith("error: runs root")


# ---- goal lines only for the goal task; the phase card's summary ----------------------------------------------

def set_task(run: Path, task: str) -> None:
    record = yaml.safe_load((run / CONFIG).read_text())
    record["config"]["task"] = task
    (run / CONFIG).write_text(yaml.safe_dump(record))


@pytest.fixture
def two_tasks(tmp_path: Path) -> Path:
    """hop (hopper-hop) and pole (cartpole-swingup), two seeds each, scores well above 600 for cartpole."""
    root = tmp_path / "runs"
    for seed in (1, 2):
        make_run(root, "hop", seed, [300.0, 450.0 + seed], meta={"name": "hop"})
        set_task(make_run(root, "pole", seed, [700.0, 840.0 + seed], meta={"name": "pole"}), "cartpole-swingup")
    return root


def goal_lines(fig) -> list:
    return sorted(line.get_gid() for line in fig.axes[0].get_lines() if (line.get_gid() or "").startswith("goal:"))


def test_goal_lines_only_on_plots_of_the_goal_task(two_tasks, tmp_path, capsys):
    from analysis import dashboard_figures as figs

    assert curves.GOAL_TASK == "hopper-hop"
    loaded = runs_mod.load_runs(two_tasks, phases_dir=None)
    hop = [r for r in loaded if r.phase == "hop"]
    pole = [r for r in loaded if r.phase == "pole"]
    assert {r.task for r in hop} == {"hopper-hop"} and {r.task for r in pole} == {"cartpole-swingup"}
    for chosen, expected in (({"hop": hop}, ["goal:500", "goal:600"]), ({"pole": pole}, []),
                             ({"hop": hop, "pole": pole}, ["goal:500", "goal:600"])):
        fig = curves.plot_curves(chosen, "mppi_return", reps=20)
        assert goal_lines(fig) == expected, chosen.keys()
        texts = [t.get_text() for t in fig.axes[0].texts]
        assert ("G1 threshold 500 (hopper-hop)" in texts) == bool(expected)
        curves.plt.close(fig)
        shapes = figs.curves_figure(chosen, "mppi_return", reps=20)["layout"]["shapes"]
        assert sorted(s["y0"] for s in shapes) == ([500.0, 600.0] if expected else [])
    # the run page's evaluation figure follows the run's task; an unknown task draws no goals
    assert len(figs.run_eval_figure(hop[0].eval, "hop", hop[0].task)["layout"]["shapes"]) == 2
    assert figs.run_eval_figure(pole[0].eval, "pole", pole[0].task)["layout"]["shapes"] == []
    assert figs.run_eval_figure(pole[0].eval, "pole")["layout"]["shapes"] == []
    # the pi score is a return too: the same goal lines
    fig = curves.plot_curves({"hop": hop}, "pi_return", reps=20)
    assert goal_lines(fig) == ["goal:500", "goal:600"]
    curves.plt.close(fig)
    out = tmp_path / "pole.png"
    assert curves.main(["--runs", str(two_tasks), "--phases", "pole", "--out", str(out), "--reps", "20"]) == 0
    assert capsys.readouterr().err == ""


def test_phase_card_shows_the_description_summary_once(tmp_path):
    """A description opens with a one-line summary, then a paragraph restating it: the phase picker shows the
    summary once (the whole description on hover)."""
    from analysis import dashboard_curves

    phases = tmp_path / "phases"
    phases.mkdir()
    (phases / "sweep.yaml").write_text(
        "name: sweep\n"
        "description: >-\n"
        "  K_UPDATE sweep at NS=2048: 0.25 / 0.5 / 1 update per env step.\n"
        "\n"
        "  K_UPDATE sweep at NS=2048: 0.25 / 0.5 / 1 update per env step, as the research log's iteration 7\n"
        "  ran it, seeds 1-3.\n")
    summary = "K_UPDATE sweep at NS=2048: 0.25 / 0.5 / 1 update per env step."
    root = tmp_path / "runs"
    make_run(root, "sweep", 1, [100.0], meta={"name": "sweep"})  # no description in the run record
    record = yaml.safe_load((phases / "sweep.yaml").read_text())
    make_run(root, "sweep", 2, [120.0], meta={"name": "sweep", "description": record["description"]})
    names = runs_mod.PhaseNames(runs_mod.phase_catalogue(phases))
    assert names.catalogue["sweep"].summary == summary
    loaded = runs_mod.load_runs(root, names=names)
    assert [r.summary for r in loaded] == [summary, summary]
    assert all(r.description.startswith(summary + " K_UPDATE sweep") for r in loaded)  # the whole text is kept
    option = dashboard_curves.phase_options(loaded, names)[0]["label"]
    desc = next(child for child in option.children if getattr(child, "className", None) == "desc")
    assert desc.children == summary and desc.title == loaded[0].description

    def text(node) -> str:
        if isinstance(node, str):
            return node
        if isinstance(node, (list, tuple)):
            return " ".join(text(n) for n in node)
        return text(getattr(node, "children", None) or "")

    assert text(option).count("K_UPDATE sweep") == 1
