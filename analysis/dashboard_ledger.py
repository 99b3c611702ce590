"""The dashboard's ledger page, `/ledger`: the phase ledger with G1/G2 badges (unfair phases read "excl."), the
per-phase best MPPI by seed and the per-seed table, from analysis/seed_stats.py's own report with its default
settings (the dashboard's --import CSVs added as seed_stats.py --import adds them).

`register(app, source)` adds its callback; `layout()` is what the router shows.
"""
from __future__ import annotations

import json

from dash import Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from analysis import seed_stats as ss
from analysis.dashboard_parts import badge, fairness_badge, problem, swatch, unavailable
from analysis.runs import AnalysisError

LEDGER_HEADER = ("phase", "fair", "seeds", "best MPPI (seed)", "hit rate", "G1", "G2", "IQM [95% CI]",
                 "mean [95% CI]", "env steps", "description")


def layout():
    return html.Div([dcc.Store(id="ledger-id", data="ledger"), dcc.Store(id="ledger-key"),
                     html.Div(id="ledger-content", children="loading ...")])


def goal_badge(row: dict, goal: str):
    """G1 / G2 reached, "no", or "excl." for a benchmark-unfair phase's G1 (it never counts). G2 counts any phase:
    reached by benchmark-unfair seeds only, it reads "G2 (unfair)"."""
    if goal == "G2" and row["G2"] and not row["G2_fair"]:
        return badge("G2 (unfair)", "excl")
    if not row["benchmark_fair"] and goal == "G1":
        return badge("excl.", "excl")
    return badge(goal, "g") if row[goal] else badge("no", "no")


def ledger_row(r: dict):
    steps = "-" if r["env_steps"] is None else \
        f"{r['env_steps']:,}" + (f" ({r['n_running']} running)" if r["n_running"] else "")
    return html.Tr([
        html.Td([swatch(r["phase"]), html.B(r["phase"])], className="nowrap"),
        html.Td(fairness_badge(r["benchmark_fair"])),
        html.Td(r["n_seeds"], className="num"),
        html.Td(f"{ss.fmt_num(r['best_mppi'])} ({ss.fmt_seeds(r['best_seeds'])})"),
        html.Td(f"{r['hits']}/{r['n_seeds']}", className="num"),
        html.Td(goal_badge(r, "G1"), className="g1"), html.Td(goal_badge(r, "G2"), className="g2"),
        html.Td(f"{ss.fmt_num(r['iqm'])} {ss.fmt_ci(r['iqm_ci_low'], r['iqm_ci_high'])}", className="nowrap"),
        html.Td(f"{ss.fmt_num(r['mean'])} {ss.fmt_ci(r['mean_ci_low'], r['mean_ci_high'])}", className="nowrap"),
        html.Td(steps),
        html.Td(ss.short_description(r["description"], 90) or "-", className="desc"),
    ])


def table(header, rows, table_id: str):
    return html.Table([html.Thead(html.Tr([html.Th(h) for h in header])), html.Tbody(rows)], className="tbl",
                      id=table_id)


def per_phase_table(report: dict):
    header, rows = ss.per_phase_wide(report)
    return table(header, [html.Tr([html.Td(row[0])] + [html.Td(ss.fmt_num(v), className="num") for v in row[1:-1]]
                                  + [html.Td(row[-1])]) for row in rows], "per-phase-tbl")


def per_seed_table(report: dict):
    if not report["per_seed"]:
        return html.Div("(no phase has 2 or more seeds)", className="muted")
    return table(ss.PER_SEED_KEYS, [
        html.Tr([html.Td(f"s{r['seed']}"), html.Td(r["n_phases"], className="num")] +
                [html.Td(ss.fmt_num(r[k]), className="num") for k in ("mean", "median", "max", "min")] +
                [html.Td(r["times_best"], className="num"), html.Td(r["times_worst"], className="num")])
        for r in report["per_seed"]], "per-seed-tbl")


def damaged_card(report: dict):
    """The runs with damaged files and what the ledger did with each (seed_stats' warnings); None without."""
    lines = report.get("damaged") or []
    if not lines:
        return None
    return html.Div(className="card", id="ledger-damaged", children=[
        html.H3(f"Damaged run files ({len(lines)})"),
        *[html.Div(line, className="damaged") for line in lines]])


def ledger_view(report: dict):
    settings = report["settings"]
    g1 = [r["phase"] for r in report["ledger"] if r["G1"]]
    return html.Div([
        damaged_card(report),
        html.Div(className="card", children=[
            html.H3(f"Phase ledger (hit: best MPPI >= {settings['threshold']:g}; G1: >= {ss.MIN_SEEDS_G1} seeds, "
                    f"all hit; G2: a seed >= {settings['ceiling']:g}, any phase; unfair phases never count for G1)"),
            table(LEDGER_HEADER, [ledger_row(r) for r in report["ledger"]], "ledger-tbl"),
            html.P(f"G1 reached by: {', '.join(g1) or 'none'}. G2 reached by: {ss.g2_reached(report['ledger'])}. "
                   f"95% CIs: rliable's stratified bootstrap over seeds, {settings['reps']} resamples, seeded "
                   f"(computed by analysis/seed_stats.py).", className="muted")]),
        html.Div(className="card", children=[html.H3("Per-phase best MPPI by seed"), per_phase_table(report)]),
        html.Div(className="card", children=[
            html.H3("Per-seed statistics (best MPPI over phases with at least 2 seeds)"), per_seed_table(report)]),
    ])


def register(app, source) -> None:
    """The page's callback: the report is redrawn when it changed (source.ledger_report caches it by the
    fingerprints of the files it is computed from)."""

    @app.callback(Output("ledger-content", "children"), Output("ledger-key", "data"), Input("stamp", "data"),
                  Input("ledger-id", "data"), State("ledger-key", "data"))
    def update_ledger(_n, _path, previous):
        try:
            runs, _names = source.load()
            report = source.ledger_report(runs)
        except AnalysisError as e:
            return html.Div([html.H2("Phase ledger"), unavailable(str(e))]), None
        except Exception as e:  # noqa: BLE001
            return html.Div([html.H2("Phase ledger"), unavailable(problem(e))]), None
        key = json.dumps(report, default=str)
        if key == previous:
            raise PreventUpdate
        return ledger_view(report), key
