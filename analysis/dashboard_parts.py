"""Small Dash components that more than one dashboard page shows: badges, "unavailable" notes, a run's status
badge and progress bar, and the grouping of runs by label.

Pages (analysis/dashboard_curves.py, dashboard_run.py, dashboard_ledger.py) import this; it imports no page and
not analysis/dashboard.py, so the app factory can import the pages without an import cycle.
"""
from __future__ import annotations

import datetime as dt
import sys
import traceback

from dash import html

from analysis import dashboard_figures as figs
from analysis.colors import phase_color
from analysis.runs import AnalysisError, Run
from tdmpc_glass.runlayout import DONE, FAILED, INTERRUPTED, RUNNING

STALE_AFTER_S = 15 * 60  # a "running" run without a status update for this long is flagged
STATUS_BADGES = (RUNNING, DONE, FAILED, INTERRUPTED)  # the statuses with a badge colour of their own


def badge(text: str, kind: str):
    """A small coloured label; `kind` picks its colours (the .b-<kind> rules of the page's CSS)."""
    return html.Span(text, className=f"badge b-{kind}")


def fairness_badge(fair: bool):
    return badge("fair", "fair") if fair else badge("unfair", "unfair")


def swatch(label: str):
    """The square in a phase label's stable colour."""
    return html.Span(className="swatch", style={"background": phase_color(label)})


def unavailable(message: str):
    return html.Div(f"unavailable: {message}", className="unavailable")


def problem(e: BaseException) -> str:
    """What a page says about a failed read: the message of an expected problem (bad input, a file that
    vanished); anything else is named by its type and its traceback goes to the server's stderr."""
    if not isinstance(e, (AnalysisError, OSError)):
        traceback.print_exc(file=sys.stderr)
    return str(e) if isinstance(e, AnalysisError) else f"{type(e).__name__}: {e}"


def status_badge(run: Run):
    """The run's status; a running run whose status.json was not updated for STALE_AFTER_S says so."""
    status = run.status
    updated = figs.parse_time(run.status_record.get("updated"))
    if status == RUNNING and updated and \
            (dt.datetime.now(dt.timezone.utc) - updated).total_seconds() > STALE_AFTER_S:
        return badge(f"running? no update for {figs.age_text(updated)[:-4]}", "stale")
    return badge(status, status if status in STATUS_BADGES else "unknown")


def progress(run: Run):
    """Env steps so far, and a bar with the share of total_env_steps where status.json gives it."""
    total = run.status_record.get("total_env_steps")
    step = run.env_steps
    if not isinstance(total, (int, float)) or not total or step is None:
        return html.Span(figs.steps_text(step))
    share = max(0.0, min(1.0, step / total))
    return html.Span([figs.steps_text(step), html.Span(html.Div(style={"width": f"{share:.1%}"}),
                                                       className="progress"),
                      f"{figs.steps_text(total)} ({share:.0%})"])


def by_label(runs: list[Run]) -> dict[str, list[Run]]:
    """label -> its runs, labels in the order of their first run."""
    out: dict[str, list[Run]] = {}
    for run in runs:
        out.setdefault(run.label, []).append(run)
    return out


def damage_flags(damage: list):
    """One line per damaged file of a run (analysis/runs.py's Damage): `damaged: eval.csv: empty (0 bytes)`."""
    return [html.Div(f"damaged: {d.file}: {d.reason}" + ("" if d.usable else " (not used)"), className="damaged")
            for d in damage]
