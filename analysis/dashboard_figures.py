"""Plotly figures and small text helpers for the dashboard's pages; no Dash, no I/O of its own.

The learning curves use analysis/curves.py's computation (curve_summary: seeds aligned on env steps, the mean,
the 95% percentile-bootstrap band) and analysis/colors.py's stable colour per phase, so a phase looks the same
and has the same numbers on the dashboard as in curves.py's figures.

Figures are plain dicts in plotly.js's JSON schema ({"data": [traces], "layout": {...}}), which dcc.Graph takes
as they are: building plotly.graph_objects would validate every trace again on each redraw (a quarter of a
second per figure with a handful of phases, more with many), for nothing the dashboard needs.
"""
from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd

from analysis import curves
from analysis.colors import phase_color
from tdmpc_glass.runlayout import EVAL, TRAIN, count_text

METRIC_TITLES = {"mppi_return": "MPPI score (mppi_return)", "pi_return": "pi score (pi_return)"}
# Glass diagnostics in train.csv (the trainer's Glass diagnostics columns), grouped into panels
GLASS_PANELS = (("structural entropy", ("se", "h1", "resistance", "se_hier")),
                ("active prototypes / clusters", ("active_prototypes", "active_clusters")),
                ("K switch rate", ("k_switch_rate",)),
                ("window MI", ("window_mi",)))
THROUGHPUT_COLUMNS = ("env_steps_per_s", "updates_per_s")
LOSS_COLUMNS = ("total_loss", "consistency_loss", "reward_loss", "value_loss", "pi_loss")
MAX_TRAIN_POINTS = 1000
REFERENCE_DASH = {"tdmpc2": "dashdot", "tdmpc": "dot", "dreamerv3": "dash", "sac": "longdash"}
# one colour per train.csv column, the same in every panel and on every run page
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#e377c2", "#7f7f7f")


def rgba(hex_colour: str, alpha: float) -> str:
    hex_colour = hex_colour.lstrip("#")
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _list(values) -> list:
    """JSON-safe list: NaN and inf become None (a gap in the line)."""
    out = []
    for v in np.asarray(values, dtype=float).tolist():
        out.append(v if math.isfinite(v) else None)
    return out


def defined_stretches(defined: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) index pairs of the runs of True in a boolean array: where a 0/1 step changes, a stretch
    starts (0 -> 1) or stops (1 -> 0); padding with 0 at both ends closes stretches touching an end."""
    changes = np.flatnonzero(np.diff(np.concatenate(([0], np.asarray(defined, dtype=np.int8), [0]))))
    return [(int(start), int(stop)) for start, stop in changes.reshape(-1, 2)]


def band_polygon(steps: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[list, list]:
    """x, y of a closed polygon per stretch where the band is defined, separated by None (fill='toself')."""
    xs, ys = [], []
    for start, stop in defined_stretches(np.isfinite(low) & np.isfinite(high)):
        if xs:
            xs.append(None)
            ys.append(None)
        x = steps[start:stop].tolist()
        xs += x + x[::-1]
        ys += high[start:stop].tolist() + low[start:stop][::-1].tolist()
    return xs, ys


# a light version of plotly's "plotly_white" template (template names mean nothing to plotly.js itself)
_AXIS = {"gridcolor": "#ebf0f8", "zerolinecolor": "#ebf0f8", "linecolor": "#d0d7e2", "automargin": True}
_STYLE = {"paper_bgcolor": "white", "plot_bgcolor": "white", "font": {"color": "#2a3f5f", "size": 12},
          "hoverlabel": {"align": "left"}}


def figure(data: list[dict], title: str, height: int, **layout) -> dict:
    """A figure dict: the traces, a title, the common style; `layout` adds or overrides layout keys."""
    base = {**_STYLE, "title": {"text": title, "font": {"size": 14}}, "height": height,
            "margin": {"l": 60, "r": 20, "t": 50, "b": 45}, "xaxis": {**_AXIS, "title": {"text": "env steps"}},
            "yaxis": dict(_AXIS)}
    for key, value in layout.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return {"data": data, "layout": base}


def scatter(x, y, name: str, **fields) -> dict:
    return {"type": "scatter", "mode": "lines", "x": _list(x), "y": _list(y), "name": name, **fields}


def empty_figure(message: str, height: int = 260) -> dict:
    return {"data": [], "layout": {**_STYLE, "height": height, "xaxis": {"visible": False},
                                   "yaxis": {"visible": False}, "margin": {"l": 20, "r": 20, "t": 30, "b": 20},
                                   "annotations": [{"text": message, "showarrow": False, "xref": "paper",
                                                    "yref": "paper", "x": 0.5, "y": 0.5,
                                                    "font": {"color": "#777", "size": 14}}]}}


def threshold_lines(tasks) -> tuple[list[dict], list[dict]]:
    """(shapes, annotations): dotted lines across the plot at 500 (G1 threshold) and 600 (G2 ceiling) when the
    plot has runs of curves.GOAL_TASK among `tasks` (the runs' config.task values), else none."""
    shapes, notes = [], []
    if not curves.goals_apply(tasks):
        return shapes, notes
    for y, text in curves.THRESHOLDS:
        shapes.append({"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "y0": y, "y1": y,
                       "line": {"color": "#666", "dash": "dot", "width": 1}, "layer": "above"})
        notes.append({"text": f"{text} ({curves.GOAL_TASK})", "xref": "paper", "x": 0, "xanchor": "left",
                      "yref": "y", "y": y, "yanchor": "bottom", "showarrow": False,
                      "font": {"size": 10, "color": "#555"}})
    return shapes, notes


def curves_figure(runs_by_label: dict, metric: str, show_seeds: bool = True, reference: bool = False,
                  reps: int = 1000, summaries: dict | None = None) -> dict:
    """Per label: faint seeds (optional), the mean over seeds (dashed where some seeds have not reached the step)
    and its 95% bootstrap band (a filled polygon, fill='toself'), in the label's stable colour; threshold lines
    at 500 and 600 where some run is on curves.GOAL_TASK; optionally the published curves of the runs' task.

    runs_by_label: label -> runs (already restricted to the chosen seeds). summaries: label -> CurveSummary, to
    reuse ones already computed (the dashboard caches them); missing ones are computed here.
    """
    data = []
    last_step, drawn = 0.0, 0
    for label, runs in runs_by_label.items():
        summary = (summaries or {}).get(label) or curves.curve_summary(runs, metric, reps=reps)
        if summary is None:
            continue
        drawn += 1
        colour = phase_color(label)
        steps = summary.steps
        last_step = max(last_step, float(steps.max()))
        if summary.n_seeds >= 2:
            xs, ys = band_polygon(steps, summary.low, summary.high)
            if xs:
                data.append({"type": "scatter", "mode": "lines", "x": xs, "y": ys, "fill": "toself",
                             "fillcolor": rgba(colour, 0.18), "line": {"width": 0, "color": rgba(colour, 0.0)},
                             "hoverinfo": "skip", "name": f"{label} 95% CI", "legendgroup": label,
                             "showlegend": False})
        if show_seeds:
            for seed in summary.wide.columns:
                one = summary.wide[seed].dropna()
                data.append(scatter(one.index, one.to_numpy(), f"{label} s{seed}", legendgroup=label,
                                    showlegend=False, line={"color": rgba(colour, 0.35), "width": 1},
                                    hovertemplate=f"{label} seed {seed}<br>env step %{{x:,.0f}}<br>%{{y:.1f}}"
                                                  "<extra></extra>"))
        full = summary.full
        data.append(scatter(steps, np.where(full, summary.mean, np.nan), f"{label} (n={summary.n_seeds})",
                            legendgroup=label, line={"color": colour, "width": 2.4},
                            customdata=[list(pair) for pair in zip(_list(summary.low), _list(summary.high))],
                            hovertemplate=f"{label} mean<br>env step %{{x:,.0f}}<br>%{{y:.1f}} "
                                          "[95% CI %{customdata[0]:.1f}, %{customdata[1]:.1f}]<extra></extra>"))
        if (~full).any():
            partial = ~full
            partial[:-1] |= ~full[1:]
            partial[1:] |= ~full[:-1]
            data.append(scatter(steps, np.where(partial, summary.mean, np.nan), f"{label} (not all seeds)",
                                legendgroup=label, showlegend=False,
                                line={"color": colour, "width": 1.6, "dash": "dash"},
                                hovertemplate=f"{label} mean of the seeds that got here<br>env step %{{x:,.0f}}"
                                              "<br>%{y:.1f}<extra></extra>"))
    title = METRIC_TITLES.get(metric, metric)
    if drawn == 0:
        return empty_figure(f"{title}: no evaluations in the chosen phases and seeds yet")
    tasks = sorted({r.task for runs in runs_by_label.values() for r in runs if r.task})
    note = ""
    if reference:
        if len(tasks) == 1:
            for algorithm, curve in curves.reference_curves(tasks[0]).items():
                curve = curve[curve.index <= last_step * 1.02] if last_step > 0 else curve
                data.append(scatter(curve.index, curve.to_numpy(), f"{algorithm} {tasks[0]} (published)",
                                    line={"color": "#888", "width": 1.3,
                                          "dash": REFERENCE_DASH.get(algorithm, "dash")}))
        else:
            note = f" (reference curves need one task; here: {', '.join(tasks) or 'unknown'})"
    shapes, notes = threshold_lines(tasks)
    on = f" on {tasks[0]}" if len(tasks) == 1 else ""
    return figure(data, f"{title}{on}: mean over seeds, 95% bootstrap band{note}", 420,
                  xaxis={"rangemode": "tozero"}, yaxis={"title": {"text": title}}, shapes=shapes,
                  annotations=notes, legend={"font": {"size": 11}}, hovermode="closest", uirevision=metric)


# ---- one run ---------------------------------------------------------------------------------------------------

def thin(frame: pd.DataFrame, max_points: int = MAX_TRAIN_POINTS) -> pd.DataFrame:
    """At most max_points rows: numeric columns averaged over equal-width env_step bins."""
    if len(frame) <= max_points or "env_step" not in frame:
        return frame
    numeric = frame.select_dtypes("number")
    steps = numeric["env_step"].to_numpy(float)
    edges = np.linspace(np.nanmin(steps), np.nanmax(steps), max_points + 1)
    bins = np.clip(np.searchsorted(edges, steps, side="right") - 1, 0, max_points - 1)
    return numeric.groupby(bins).mean()


def run_eval_figure(eval_frame: pd.DataFrame, label: str, task: str | None = None) -> dict:
    """One run's MPPI and pi scores against env steps, with +- one std over the evaluation episodes; the G1/G2
    lines when `task` (the run's config.task) is curves.GOAL_TASK."""
    if eval_frame.empty or "env_step" not in eval_frame:
        return empty_figure(f"no evaluation yet ({EVAL} is empty or missing)")
    colour = phase_color(label)
    data = []
    frame = eval_frame.apply(pd.to_numeric, errors="coerce").dropna(subset=["env_step"]).sort_values("env_step")
    for metric, dash, fill_alpha in (("mppi_return", "solid", 0.15), ("pi_return", "dash", 0.08)):
        if metric not in frame:
            continue
        steps, values = frame["env_step"].to_numpy(float), frame[metric].to_numpy(float)
        std_col = f"{metric}_std"
        if std_col in frame:
            std = frame[std_col].to_numpy(float)
            xs, ys = band_polygon(steps, values - std, values + std)
            if xs:
                data.append({"type": "scatter", "mode": "lines", "x": xs, "y": ys, "fill": "toself",
                             "fillcolor": rgba(colour, fill_alpha), "line": {"width": 0}, "hoverinfo": "skip",
                             "showlegend": False, "name": f"{metric} +- std"})
        data.append(scatter(steps, values, METRIC_TITLES[metric], mode="lines+markers", marker={"size": 5},
                            line={"color": colour, "width": 2, "dash": dash}))
    shapes, notes = threshold_lines([task])
    return figure(data, "evaluation: MPPI and pi scores (band: +- std over episodes)", 360,
                  yaxis={"title": {"text": "return"}}, shapes=shapes, annotations=notes, uirevision="eval")


def glass_figure(train: pd.DataFrame) -> dict:
    """Glass diagnostics from train.csv (SE / H1 / resistance, active prototypes and clusters, K switch rate,
    window MI), one panel each that the file has, side by side."""
    panels = [(title, [c for c in columns if c in train]) for title, columns in GLASS_PANELS]
    panels = [(t, cols) for t, cols in panels if cols and "env_step" in train]
    if not panels:
        return empty_figure(f"no Glass diagnostics in {TRAIN} (Glass off, or no training row yet)", height=200)
    frame = thin(train)
    gap = 0.06
    width = (1 - gap * (len(panels) - 1)) / len(panels)
    data, layout, titles, i = [], {}, [], 0
    for k, (title, columns) in enumerate(panels, start=1):
        suffix = "" if k == 1 else str(k)
        domain = [(k - 1) * (width + gap), (k - 1) * (width + gap) + width]
        layout[f"xaxis{suffix}"] = {**_AXIS, "domain": domain, "anchor": f"y{suffix}",
                                    "title": {"text": "env steps"}}
        layout[f"yaxis{suffix}"] = {**_AXIS, "anchor": f"x{suffix}"}
        titles.append({"text": title, "xref": "paper", "x": (domain[0] + domain[1]) / 2, "yref": "paper", "y": 1.0,
                       "xanchor": "center", "yanchor": "bottom", "showarrow": False, "font": {"size": 13}})
        for column in columns:
            data.append(scatter(frame["env_step"], frame[column], column, xaxis=f"x{suffix}", yaxis=f"y{suffix}",
                                line={"color": PALETTE[i % len(PALETTE)], "width": 1.5}))
            i += 1
    return figure(data, f"Glass diagnostics ({TRAIN})", 350, margin={"t": 70, "b": 95}, annotations=titles,
                  legend={"orientation": "h", "y": -0.42}, uirevision="glass", **layout)


def lines_figure(train: pd.DataFrame, columns, title: str, message: str, right: tuple = ()) -> dict:
    """train.csv columns against env steps; those named in `right` on a second y axis."""
    columns = [c for c in columns if c in train]
    if not columns or "env_step" not in train:
        return empty_figure(message, height=200)
    frame = thin(train)
    data = [scatter(frame["env_step"], frame[column], column, yaxis="y2" if column in right else "y",
                    line={"color": PALETTE[i % len(PALETTE)], "width": 1.5}) for i, column in enumerate(columns)]
    extra = {}
    if any(c in right for c in columns):
        extra = {"yaxis": {"title": {"text": " / ".join(c for c in columns if c not in right)}},
                 "yaxis2": {**_AXIS, "overlaying": "y", "side": "right", "showgrid": False,
                            "title": {"text": " / ".join(c for c in columns if c in right)}},
                 "legend": {"x": 1.08}}
    return figure(data, title, 300, uirevision=title, **extra)


def throughput_figure(train: pd.DataFrame) -> dict:
    return lines_figure(train, THROUGHPUT_COLUMNS, f"throughput ({TRAIN}): env steps/s and updates/s",
                        f"no throughput yet ({TRAIN} is empty or missing)", right=("updates_per_s",))


def losses_figure(train: pd.DataFrame) -> dict:
    return lines_figure(train, LOSS_COLUMNS, f"losses ({TRAIN})", f"no losses yet ({TRAIN} is empty or missing)")


# ---- text ------------------------------------------------------------------------------------------------------

def steps_text(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return count_text(float(value), ".3g", ".0f")


def number_text(value, digits: int = 1) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "-"
    return f"{value:.{digits}f}" if math.isfinite(value) else "-"


def duration_text(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    return f"{hours // 24}d {hours % 24}h"


def parse_time(text) -> dt.datetime | None:
    """An ISO time from status.json / events.jsonl (naive times are taken as UTC)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def age_text(when: dt.datetime | None, now: dt.datetime | None = None) -> str:
    if when is None:
        return "-"
    now = now or dt.datetime.now(dt.timezone.utc)
    return duration_text((now - when).total_seconds()) + " ago"


def eta_seconds(status: dict, train: pd.DataFrame | None = None) -> float | None:
    """Seconds left for a running run: (total_env_steps - env_step) / env_steps_per_s, the rate from
    status.json, else from the last train.csv row. None when not running or unknown."""
    if str(status.get("status")) != "running":
        return None
    total, step, rate = status.get("total_env_steps"), status.get("env_step"), status.get("env_steps_per_s")
    if not _finite(rate) and train is not None and "env_steps_per_s" in train:
        rates = pd.to_numeric(train["env_steps_per_s"], errors="coerce").dropna()
        rate = float(rates.iloc[-1]) if len(rates) else None
    if not (_finite(total) and _finite(step) and _finite(rate)) or rate <= 0:
        return None
    return max(float(total) - float(step), 0.0) / float(rate)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
