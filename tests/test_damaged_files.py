"""Damaged run files seen by analysis/seed_stats.py, analysis/curves.py and the dashboard.

Each of config.yaml, eval.csv, train.csv, status.json and events.jsonl of one finished run is damaged in turn
(cut mid-line, cut to 0 bytes, replaced by random bytes, random bytes written inside it, the wrong columns,
bytes that are not UTF-8). Every tool must keep working: seed_stats and curves exit as documented and print
exactly one `warning: <that file>: ...` line for a damaged file they read (none for a file they do not read),
saying whether the run was left out or counted; the dashboard flags the run under its name in the runs table
and its ledger lists what seed_stats did; its pages still render. The other runs' numbers never change.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from analysis import curves, dashboard, dashboard_curves, dashboard_ledger, seed_stats
from analysis import dashboard_figures as figs
from analysis.runs import load_runs
from tdmpc_glass.runlayout import CONFIG, EVAL, EVENTS, RUN_FILES, STATUS, TRAIN

EVAL_HEADER = ["env_step", "agent_step", "mppi_return", "mppi_return_std", "pi_return", "pi_return_std",
               "episodes", "wall_time_s"]
TRAIN_HEADER = ["env_step", "agent_step", "update", "consistency_loss", "reward_loss", "value_loss", "pi_loss",
                "total_loss", "grad_norm", "pi_grad_norm", "q_scale", "updates_per_s", "env_steps_per_s",
                "wall_time_s"]
# best MPPI of each seed of phase `hop` (the max of its three evaluations below)
SCORES = {1: [100.0, 420.0, 380.0], 2: [150.0, 510.0, 505.0], 3: [90.0, 300.0, 610.0]}
DAMAGED_SEED = 2
DAMAGES = ("cut_mid_line", "empty", "random_bytes", "random_bytes_inside", "wrong_columns", "not_utf8")
READ_BY_SEED_STATS = (CONFIG, STATUS, EVAL)


# ---- a runs root as the trainer and the launcher write it ------------------------------------------------------

def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def make_run(root: Path, seed: int, scores: list[float], status: str = "done") -> Path:
    run = root / "hop" / "default" / f"seed{seed}"
    run.mkdir(parents=True)
    record = {"phase": {"name": "hop", "variant": "default", "description": "Hop phase.\nHop phase, in detail.",
                        "benchmark_fair": True, "aliases": []},
              "seed": seed, "config": {"task": "hopper-hop", "train": {"steps": 300_000}}}
    (run / CONFIG).write_text(yaml.safe_dump(record, sort_keys=False))
    write_csv(run / EVAL, EVAL_HEADER, [[(i + 1) * 100_000, (i + 1) * 50_000, s, 10.0, s / 2, 5.0, 10, 60.0 * i]
                                        for i, s in enumerate(scores)])
    write_csv(run / TRAIN, TRAIN_HEADER, [[(i + 1) * 10_000, (i + 1) * 5_000, i, 1.0, 0.5, 0.3, -1.0,
                                           2.0 / (i + 1), 3.0, 1.0, 50.0, 100.0, 250.0, 10.0 * i]
                                          for i in range(30)])
    (run / STATUS).write_text(json.dumps({"status": status, "env_step": 300_000, "total_env_steps": 300_000,
                                          "updated": "2026-01-01T00:00:00+00:00", "last_mppi_return": scores[-1],
                                          "best_mppi_return": max(scores), "env_steps_per_s": None},
                                         indent=1) + "\n")
    events = [{"time": "2026-01-01T00:00:00+00:00", "env_step": 0, "event": "start"},
              {"time": "2026-01-01T01:00:00+00:00", "env_step": 300_000, "event": status}]
    (run / EVENTS).write_text("".join(json.dumps(e) + "\n" for e in events))
    return run


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """(runs root, phases dir): phase hop, seeds 1-3, all finished."""
    phases = tmp_path / "phases"
    phases.mkdir()
    (phases / "hop.yaml").write_text("name: hop\ndescription: Hop phase.\nbenchmark_fair: true\nseeds: 1-3\n")
    root = tmp_path / "runs"
    for seed, scores in SCORES.items():
        make_run(root, seed, scores)
    return root, phases


# ---- damage ----------------------------------------------------------------------------------------------------

WRONG_COLUMNS = {  # the file replaced by one with the wrong columns (another file's, mostly)
    EVAL: lambda run: (",".join(TRAIN_HEADER) + "\n").encode() + (run / EVAL).read_bytes().split(b"\n", 1)[1],
    TRAIN: lambda run: (",".join(EVAL_HEADER) + "\n").encode() + (run / TRAIN).read_bytes().split(b"\n", 1)[1],
    STATUS: lambda run: json.dumps({"state": "done", "step": 300_000}).encode() + b"\n",
    CONFIG: lambda run: yaml.safe_dump({"name": "hop", "description": "a phase file, not a run record",
                                        "overrides": {"task": "hopper-hop"}}).encode(),
    EVENTS: lambda run: (run / EVAL).read_bytes(),
}


def damage(path: Path, kind: str) -> None:
    """Damage one file the way a killed writer, a full disk or a bad copy does."""
    data = path.read_bytes()
    rng = np.random.default_rng(len(kind) * 1000 + len(path.name))
    if kind == "cut_mid_line":  # in the middle of the last line of some length, where a killed writer stops
        lines = data.splitlines(keepends=True)
        last = max(i for i, line in enumerate(lines) if len(line) > 4)
        out = b"".join(lines[:last]) + lines[last][:len(lines[last]) // 2]
    elif kind == "empty":
        out = b""
    elif kind == "random_bytes":
        out = rng.integers(0, 256, 300, dtype=np.uint8).tobytes()
    elif kind == "random_bytes_inside":
        middle = len(data) // 2
        out = data[:middle] + rng.integers(0, 256, 24, dtype=np.uint8).tobytes() + data[middle + 24:]
    elif kind == "wrong_columns":
        out = WRONG_COLUMNS[path.name](path.parent)
    elif kind == "not_utf8":
        second_line = data.index(b"\n") + 1
        at = second_line + 3
        out = data[:at] + b"\xe9\xff" + data[at:]
    else:
        raise ValueError(kind)
    assert out != data
    path.write_bytes(out)


# what seed_stats does with the damaged run, where it is the same for every seed of the random bytes
SEED_STATS_OUTCOME = {
    CONFIG: dict.fromkeys(DAMAGES, "run left out"),
    STATUS: dict.fromkeys(DAMAGES, "run counted, status unknown"),
    EVAL: {"cut_mid_line": "run counted with its readable rows", "empty": "run left out",
           "random_bytes": "run left out", "random_bytes_inside": None, "wrong_columns": "run left out",
           "not_utf8": "run counted with its readable rows"},
}


def warnings_of(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning: ")]


def best_by_seed(report: dict) -> dict[int, float]:
    rows = {row["phase"]: row for row in report["per_phase"]}
    return {int(seed): value for seed, value in rows["hop"]["best_mppi"].items()}


CASES = [(name, kind) for name in RUN_FILES for kind in DAMAGES]
IDS = [f"{name}-{kind}" for name, kind in CASES]


# ---- seed_stats.py ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,kind", CASES, ids=IDS)
def test_seed_stats_skips_or_flags_the_run(layout, capsys, name, kind):
    root, phases = layout
    args = ["--runs", str(root), "--phases-dir", str(phases), "--format", "json", "--reps", "10"]
    assert seed_stats.main(args) == 0
    baseline = json.loads(capsys.readouterr().out)
    path = root / "hop" / "default" / f"seed{DAMAGED_SEED}" / name
    damage(path, kind)
    code = seed_stats.main(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    lines = warnings_of(err)
    best = best_by_seed(report)
    if name not in READ_BY_SEED_STATS:  # not read: nothing to say, nothing changes
        assert lines == [] and report["damaged"] == []
        assert best == best_by_seed(baseline)
        return
    assert len(lines) == 1, err
    assert lines[0].startswith(f"warning: {path}: ") and lines[0] == f"warning: {report['damaged'][0]}"
    expected = SEED_STATS_OUTCOME[name][kind]
    if expected is not None:
        assert lines[0].endswith(": " + expected), lines[0]
    if lines[0].endswith(": run left out"):
        assert DAMAGED_SEED not in best
    else:
        assert DAMAGED_SEED in best
    if name == EVAL and kind == "cut_mid_line":
        # the cut last row is not an evaluation: the best of the first two
        assert best[DAMAGED_SEED] == max(SCORES[DAMAGED_SEED][:2])
    elif name in (CONFIG, STATUS) and DAMAGED_SEED in best:
        assert best[DAMAGED_SEED] == max(SCORES[DAMAGED_SEED])
    others = {s: v for s, v in best_by_seed(baseline).items() if s != DAMAGED_SEED}
    assert {s: v for s, v in best.items() if s != DAMAGED_SEED} == others


def test_seed_stats_exit_2_when_every_run_is_damaged(tmp_path, capsys):
    root = tmp_path / "runs"
    run = make_run(root, 1, [100.0, 200.0, 300.0])
    damage(run / EVAL, "empty")
    code = seed_stats.main(["--runs", str(root), "--phases-dir", str(tmp_path), "--reps", "10"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.splitlines() == [f"warning: {run / EVAL}: empty (0 bytes): run left out",
                                f"error: no evaluations yet under {root}: 1 runs found, none has a readable "
                                f"{EVAL} row (1 damaged files, see the warnings)"]


def test_a_cut_last_row_of_a_running_run_is_a_row_being_written(layout, capsys):
    """A running run's writer may be mid-row while we read: not damage. A finished run's cut row is."""
    root, phases = layout
    args = ["--runs", str(root), "--phases-dir", str(phases), "--format", "json", "--reps", "10"]
    running = root / "hop" / "default" / "seed1"
    status = json.loads((running / STATUS).read_text())
    (running / STATUS).write_text(json.dumps(dict(status, status="running")) + "\n")
    with open(running / EVAL, "a") as f:
        f.write("400000,200000,999")
    with open(running / EVENTS, "a") as f:
        f.write('{"time": "2026-01-01T02:00:00+00:00", "env_s')
    assert seed_stats.main(args) == 0
    out, err = capsys.readouterr()
    assert warnings_of(err) == [] and best_by_seed(json.loads(out))[1] == 420.0  # 999 is not an evaluation
    source = dashboard.Source(root, phases_dir=str(phases))
    runs, _ = source.load()
    assert [source.damage(r) for r in runs] == [[], [], []]
    (running / STATUS).write_text(json.dumps(dict(status, status="done")) + "\n")
    assert seed_stats.main(args) == 0
    err = capsys.readouterr().err
    assert warnings_of(err) == [f"warning: {running / EVAL}: last line cut mid-row (dropped): run counted with "
                                f"its readable rows"]


# ---- curves.py -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,kind", CASES, ids=IDS)
def test_curves_draw_or_leave_out_the_run(layout, tmp_path, capsys, name, kind):
    root, phases = layout
    metric = "total_loss" if name == TRAIN else "mppi_return"
    path = root / "hop" / "default" / f"seed{DAMAGED_SEED}" / name
    damage(path, kind)
    out = tmp_path / "curves.png"
    code = curves.main(["--runs", str(root), "--phases-dir", str(phases), "--phases", "hop", "--metric", metric,
                        "--out", str(out), "--reps", "10"])
    printed, err = capsys.readouterr()
    assert code == 0, err
    assert printed.strip() == str(out.resolve()) and out.stat().st_size > 1000
    lines = warnings_of(err)
    if name in (STATUS, EVENTS):  # not read for a curve
        assert lines == []
        drawn = True
    else:
        assert len(lines) == 1 and lines[0].startswith(f"warning: {path}: "), err
        drawn = not lines[0].endswith(": run left out")
    runs = load_runs(root, phases_dir=phases)
    fig = curves.plot_curves({"hop": runs}, metric, reps=10)
    legend = fig.axes[0].get_legend_handles_labels()[1]
    curves.plt.close(fig)
    assert legend[0] == f"hop (n={3 if drawn else 2})"


# ---- the dashboard ---------------------------------------------------------------------------------------------

def text_of(node) -> str:
    """The text a Dash component tree shows."""
    if node is None:
        return ""
    if isinstance(node, (str, int, float)):
        return str(node)
    if isinstance(node, (list, tuple)):
        return " ".join(text_of(child) for child in node)
    return text_of(getattr(node, "children", None))


@pytest.mark.parametrize("name,kind", CASES, ids=IDS)
def test_dashboard_flags_the_run_and_its_pages_render(layout, capsys, name, kind):
    root, phases = layout
    path = root / "hop" / "default" / f"seed{DAMAGED_SEED}" / name
    damage(path, kind)
    source = dashboard.Source(root, phases_dir=str(phases), reps=10, ledger_reps=10)
    runs, _ = source.load()
    assert [r.seed for r in runs] == [1, 2, 3]
    # the runs table: one flag under the damaged run, naming the file
    flagged = {r.seed: [d.file for d in source.damage(r)] for r in runs}
    assert flagged == {1: [], 2: [name], 3: []}
    table = text_of(dashboard_curves.runs_table(runs, source.damage))
    assert table.count("damaged: ") == 1 and f"damaged: {name}: " in table
    row = next(tr for tr in dashboard_curves.runs_table(runs, source.damage).children[1].children
               if f"damaged: {name}" in text_of(tr))
    assert f"hop s{DAMAGED_SEED}" in text_of(row)
    # the curves page and its figures
    page = dashboard_curves.layout(source)
    assert "unavailable" not in text_of(page)
    for metric in dashboard_curves.METRICS:
        fig = figs.curves_figure({"hop": runs}, metric, reps=10)
        json.dumps(fig, allow_nan=False)
    # the ledger: seed_stats' report, with what it did to the damaged run
    report = source.ledger_report(runs)
    view = text_of(dashboard_ledger.ledger_view(report))
    if name in READ_BY_SEED_STATS:
        assert len(report["damaged"]) == 1 and report["damaged"][0].startswith(f"{path}: ")
        assert report["damaged"][0] in view
    else:
        assert report["damaged"] == []
    # the run page's pieces for the damaged run
    from analysis import dashboard_run

    run = next(r for r in runs if r.seed == DAMAGED_SEED)
    train = run.train()
    parts = [figs.run_eval_figure(run.eval, run.label, run.task), figs.glass_figure(train),
             figs.throughput_figure(train), figs.losses_figure(train)]
    for fig in parts:
        json.dumps(fig, allow_nan=False)
    text_of(dashboard_run.events_table(run.events()))
    text_of(dashboard_run.run_status(run, train, source))
    assert "Traceback" not in capsys.readouterr().err


def test_the_app_serves_its_pages_with_damaged_files(layout):
    """Through Flask's test client: the pages and the raw files are served; nothing raises."""
    root, phases = layout
    for seed, name, kind in ((1, EVAL, "random_bytes"), (2, STATUS, "cut_mid_line"), (3, CONFIG, "not_utf8")):
        damage(root / "hop" / "default" / f"seed{seed}" / name, kind)
    app = dashboard.create_app(root, phases_dir=str(phases), reps=10)
    client = app.server.test_client()
    for url in ("/", "/ledger", "/run/hop/default/seed1", "/_dash-layout"):
        assert client.get(url).status_code == 200, url
    served = client.get(f"/files/hop/default/seed2/{STATUS}")
    assert served.status_code == 200 and served.data == (root / "hop" / "default" / "seed2" / STATUS).read_bytes()
