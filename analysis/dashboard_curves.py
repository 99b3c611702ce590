"""The dashboard's curves page, `/`: the phase picker (every phase label with runs: colour, fairness badge,
seeds and how many are running, description, the phase's variants, the folders merged into it through
aliases), seed toggles, the MPPI and pi scores against env steps (analysis/curves.py's curve_summary in
analysis/colors.py's colours, optionally the published curves of the task), and the table of every run.

`register(app, source)` adds its callbacks; `layout(source)` is what the router shows.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json

from dash import Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from analysis import dashboard_figures as figs
from analysis.dashboard_parts import (by_label, damage_flags, fairness_badge, problem, progress, status_badge, swatch,
                                      unavailable)
from analysis.dashboard_run import run_href
from analysis.runs import PhaseNames, Run, natural_key
from tdmpc_glass.runlayout import DEFAULT_VARIANT, EVAL, RETURN_METRICS, RUNNING

METRICS = RETURN_METRICS  # one graph each, in this order
NO_GRAPH_BAR = {"displaylogo": False}


def phase_options(runs: list[Run], names: PhaseNames) -> list[dict]:
    """The phase picker's entries, one per label."""
    variants_of: dict[str, set] = {}
    for run in runs:
        variants_of.setdefault(run.phase, set()).add(run.variant)
    options = []
    for label, members in by_label(runs).items():
        first = members[0]
        info = names.catalogue.get(first.phase)
        variants = sorted(variants_of[first.phase] | set(info.variants if info else []), key=natural_key)
        merged = sorted({r.filed_as for r in members if r.filed_as != r.phase}, key=natural_key)
        running = sum(r.status == RUNNING for r in members)
        seeds = sorted({r.seed for r in members})
        details = []
        if len(variants) > 1 or variants != [DEFAULT_VARIANT]:
            details.append(f"variants of {first.phase}: {', '.join(variants)}")
        if merged:
            details.append(f"merged from folder{'s' if len(merged) > 1 else ''} {', '.join(merged)}")
        seeds_text = f" {len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({' '.join(f's{s}' for s in seeds)})"
        options.append({"value": label, "label": html.Div([
            swatch(label), html.B(label), fairness_badge(all(r.benchmark_fair for r in members)),
            html.Span(seeds_text + (f", {running} running" if running else ""), className="muted"),
            # the summary line once; the whole description on hover (its paragraph restates the summary)
            html.Div(first.summary or first.description or "(no description)", className="desc",
                     title=first.description or None),
            html.Div(" · ".join(details), className="muted") if details else None,
        ])})
    return options


def seed_options(seeds: list[int]) -> list[dict]:
    return [{"label": f" s{s}", "value": s} for s in seeds]


def option_signature(runs: list[Run]) -> str:
    """A hash of what the phase picker shows, to redraw it only when that changed."""
    text = json.dumps([[r.label, r.seed, r.filed_as, r.benchmark_fair, r.description, r.status] for r in runs])
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def last_evaluated_mppi(run: Run):
    if "mppi_return" in run.eval and run.eval["mppi_return"].notna().any():
        return run.eval["mppi_return"].dropna().iloc[-1]
    return None


def runs_table(runs: list[Run], damage=None):
    """Every run: status, progress, last and best MPPI, last update and ETA, linking to its page; under a run
    with damaged files, one flag per file. damage: run -> its Damage list (default: none shown)."""
    if not runs:
        return html.Div("no runs yet", className="muted")
    rows = []
    now = dt.datetime.now(dt.timezone.utc)
    for run in runs:
        record = run.status_record
        flags = damage_flags(damage(run)) if damage else []
        rows.append(html.Tr([
            html.Td([swatch(run.label), dcc.Link(f"{run.label} s{run.seed}", href=run_href(run, runs)), *flags]),
            html.Td(status_badge(run)), html.Td(progress(run)),
            html.Td(figs.number_text(last_evaluated_mppi(run)), className="num"),
            html.Td(figs.number_text(run.best_mppi), className="num"),
            html.Td(figs.age_text(figs.parse_time(record.get("updated")), now)),
            html.Td(figs.duration_text(figs.eta_seconds(record)) if run.status == RUNNING else "-"),
        ]))
    header = html.Tr([html.Th(h) for h in ("run", "status", "env steps", "last MPPI", "best MPPI", "last update",
                                           "ETA")])
    return html.Table([html.Thead(header), html.Tbody(rows)], className="tbl", id="runs-tbl")


def card(*children, title: str | None = None):
    return html.Div(className="card", children=([html.H3(title)] if title else []) + list(children))


def layout(source):
    try:
        runs, names = source.load()
    except Exception as e:  # noqa: BLE001 - shown, the server stays up
        return unavailable(problem(e))
    labels = list(by_label(runs))
    seeds = sorted({r.seed for r in runs})
    pickers = html.Div([
        card(dcc.Checklist(id="phase-picker", options=phase_options(runs, names), value=labels,
                           className="phase-list"),
             html.Div("no runs under the runs root yet" if not runs else None, className="muted"), title="Phases"),
        card(dcc.Checklist(id="seed-picker", options=seed_options(seeds), value=seeds, inline=True,
                           labelStyle={"marginRight": "12px"}), title="Seeds"),
        card(dcc.Checklist(id="curve-options", value=["seeds"], options=[
            {"label": " single seeds (faint)", "value": "seeds"},
            {"label": " published curves of the task (TD-MPC2, TD-MPC, DreamerV3, SAC)", "value": "reference"}],
            labelStyle={"display": "block"}), title="Show"),
    ])
    graphs = html.Div([
        html.Div(id="ov-msg"),
        card(dcc.Graph(id="graph-mppi", config=NO_GRAPH_BAR, figure=figs.empty_figure("loading ..."))),
        card(dcc.Graph(id="graph-pi", config=NO_GRAPH_BAR, figure=figs.empty_figure("loading ..."))),
        card(html.Div(runs_table(runs, source.damage), id="runs-table"), title="Runs"),
    ])
    return html.Div([
        dcc.Store(id="ov-known", data={"labels": labels, "seeds": seeds, "sig": option_signature(runs)}),
        dcc.Store(id="ov-key"),
        html.Div(className="grid", children=[pickers, graphs]),
    ])


def register(app, source) -> None:
    """The page's callbacks: the pickers and the runs table follow the runs root (new labels and seeds are
    ticked, the user's choices kept); the graphs follow the pickers and the eval.csv files."""

    @app.callback(Output("phase-picker", "options"), Output("phase-picker", "value"),
                  Output("seed-picker", "options"), Output("seed-picker", "value"), Output("ov-known", "data"),
                  Output("runs-table", "children"), Output("ov-msg", "children"),
                  Input("stamp", "data"), State("ov-known", "data"), State("phase-picker", "value"),
                  State("seed-picker", "value"), prevent_initial_call=True)
    def refresh_overview(_n, known, chosen_labels, chosen_seeds):
        try:
            runs, names = source.load()
        except Exception as e:  # noqa: BLE001
            return (no_update,) * 6 + (unavailable(problem(e)),)
        known = known or {"labels": [], "seeds": [], "sig": ""}
        labels = list(by_label(runs))
        seeds = sorted({r.seed for r in runs})
        new_labels = [lb for lb in labels if lb not in known["labels"]]
        new_seeds = [s for s in seeds if s not in known["seeds"]]
        signature = option_signature(runs)
        changed = signature != known.get("sig")
        label_value = (chosen_labels or []) + new_labels if new_labels else no_update
        seed_value = sorted((chosen_seeds or []) + new_seeds) if new_seeds else no_update
        return (phase_options(runs, names) if changed else no_update, label_value,
                seed_options(seeds) if changed else no_update, seed_value,
                {"labels": labels, "seeds": seeds, "sig": signature} if changed else no_update,
                runs_table(runs, source.damage), None)

    @app.callback(Output("graph-mppi", "figure"), Output("graph-pi", "figure"), Output("ov-key", "data"),
                  Input("phase-picker", "value"), Input("seed-picker", "value"), Input("curve-options", "value"),
                  Input("stamp", "data"), State("ov-key", "data"))
    def update_curves(labels, seeds, options, _n, previous):
        try:
            runs, _names = source.load()
        except Exception as e:  # noqa: BLE001
            message = f"unavailable: {problem(e)}"
            return figs.empty_figure(message), figs.empty_figure(message), None
        labels, seeds, options = labels or [], set(seeds or []), options or []
        chosen = {label: [r for r in runs if r.label == label and r.seed in seeds] for label in labels}
        chosen = {label: members for label, members in chosen.items() if members}
        key = json.dumps([sorted(chosen), sorted(seeds), sorted(options),
                          source.fingerprint(r.path / EVAL for members in chosen.values() for r in members)])
        if key == previous:
            raise PreventUpdate
        out = []
        for metric in METRICS:
            try:
                summaries = {label: source.summary(label, members, metric) for label, members in chosen.items()}
                out.append(figs.curves_figure(chosen, metric, show_seeds="seeds" in options,
                                              reference="reference" in options, summaries=summaries))
            except Exception as e:  # noqa: BLE001
                out.append(figs.empty_figure(f"unavailable: {problem(e)}"))
        return out[0], out[1], key
