"""The live dashboard: a Dash (Plotly) app that reads a runs root while runs write into it.

  python analysis/dashboard.py [--runs DIR] [--port 5055] [--host 127.0.0.1] [--poll-ms 5000] [--import CSV ...]
  make dashboard [RUNS=dir] [PORT=5055]

Views (the page polls the runs root every --poll-ms; new runs, seeds and rows appear without a restart):
- `/`: the phase picker (every phase label with runs: description, benchmark fairness, seeds, the phase's
  variants, the directory names merged into it through aliases), seed toggles, and the MPPI and pi scores against
  env steps: per phase the mean over the chosen seeds with its 95% bootstrap band (analysis/curves.py's
  computation), single seeds faint, in the stable colour of analysis/colors.py, threshold lines at 500 and 600,
  optionally the published TD-MPC2 / TD-MPC / DreamerV3 / SAC curves of the runs' task; below, every run with its
  status, progress, scores, last update and ETA, each linking to its page;
- `/run/<phase>/<variant>/seed<k>`: the run's eval curve, its Glass diagnostics, throughput and losses from
  train.csv, its status (running / done / failed / interrupted, last update, ETA from env_steps_per_s), its
  events (start, resume, interrupted, nonfinite, done) and its videos (videos/*.mp4, *.webm) played in the page;
- `/ledger`: the per-seed table, the per-phase best MPPI by seed and the phase ledger with G1/G2 badges,
  computed by analysis/seed_stats.py's own functions (same arguments as its command line's defaults).

Files are served only from inside the runs root (`/files/<path relative to the runs root>`; paths are resolved,
symlinks included, and anything outside is refused with 403; folders and missing files are 404, no listing).
The dashboard never writes into the runs root. It binds 127.0.0.1 unless --host says otherwise. A file being
written, a partial CSV line or a run folder removed while it is read shows as "unavailable" and the server stays up.
Bad input (a missing runs root, a port in use) prints one line `error: ...` and exits 2.
"""
from __future__ import annotations

import argparse
import datetime as dt
import errno
import hashlib
import json
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from urllib.parse import quote, unquote

if __package__ in (None, ""):  # run as a script: make `import analysis` work from any directory
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.runs import (PHASES_DIR, RUN_FILES, RUNS_ENV, AnalysisError, PhaseNames, Run,  # noqa: E402
                           find_run_dirs, load_runs, natural_key, phase_catalogue, runs_root)

DEFAULT_PORT = 5055
DEFAULT_HOST = "127.0.0.1"
VIDEO_SUFFIXES = (".mp4", ".webm")
MAX_EVENTS = 300
STALE_AFTER_S = 15 * 60  # a "running" run without a status update for this long is flagged
REFRESH_S = 30  # ages ("2m ago") and ETAs are redrawn at least this often even when no file changed
CSS = """
body { font-family: -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif; margin: 0; color: #222;
       background: #f6f7f9; font-size: 14px; }
a { color: #1f5fbf; text-decoration: none; } a:hover { text-decoration: underline; }
.top { display: flex; align-items: baseline; gap: 22px; padding: 10px 20px; background: #1d2633; color: #eee; }
.top a { color: #cfe0ff; font-weight: 600; } .top .brand { font-size: 17px; font-weight: 700; color: #fff; }
.top .root { color: #9aa7b8; font-family: monospace; font-size: 12px; } .top .clock { margin-left: auto;
  color: #9aa7b8; font-size: 12px; }
.page { padding: 14px 20px; }
.grid { display: grid; grid-template-columns: 380px 1fr; gap: 18px; align-items: start; }
.card { background: #fff; border: 1px solid #e1e4e8; border-radius: 6px; padding: 10px 14px; margin-bottom: 14px; }
.card h3 { margin: 4px 0 8px; font-size: 15px; }
.phase-list label { display: flex; align-items: flex-start; gap: 6px; padding: 5px 0;
                    border-bottom: 1px solid #f0f0f0; }
.phase-list input { margin-top: 4px; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 5px;
          vertical-align: -1px; }
.desc { color: #555; font-size: 12px; margin-top: 2px; } .muted { color: #777; font-size: 12px; }
.badge { display: inline-block; padding: 0 6px; border-radius: 9px; font-size: 11px; font-weight: 600;
         margin-left: 4px; border: 1px solid transparent; }
.b-fair { background: #e7f5ea; color: #22663a; } .b-unfair { background: #fdecea; color: #a3271b; }
.b-running { background: #e5f0ff; color: #1f5fbf; } .b-done { background: #e7f5ea; color: #22663a; }
.b-failed { background: #fdecea; color: #a3271b; } .b-interrupted { background: #fff4d6; color: #8a6100; }
.b-unknown, .b-stale { background: #eee; color: #555; } .b-stale { border-color: #c99; }
.b-g { background: #1e8e3e; color: #fff; } .b-no { background: #eee; color: #888; } .b-excl { background: #fff4d6;
  color: #8a6100; }
table.tbl { border-collapse: collapse; width: 100%; font-size: 13px; }
table.tbl th { text-align: left; background: #f3f4f6; font-weight: 600; padding: 4px 8px;
               border-bottom: 1px solid #ddd; }
table.tbl td { padding: 3px 8px; border-bottom: 1px solid #eee; vertical-align: top; }
table.tbl td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.tbl td.nowrap { white-space: nowrap; }
.ev-nonfinite td, .ev-failed td { background: #fdecea; } .ev-interrupted td, .ev-resume td { background: #fffaeb; }
.progress { display: inline-block; width: 160px; height: 9px; background: #e8eaed; border-radius: 5px;
            vertical-align: middle; overflow: hidden; margin: 0 6px; }
.progress > div { height: 100%; background: #1f5fbf; }
.unavailable { color: #a3271b; background: #fdecea; padding: 6px 10px; border-radius: 4px; margin: 6px 0; }
.kv { display: grid; grid-template-columns: 150px 1fr; gap: 3px 12px; font-size: 13px; }
.kv div:nth-child(odd) { color: #666; }
.videos { display: flex; flex-wrap: wrap; gap: 14px; } .videos figure { margin: 0; }
.videos video { width: 420px; max-width: 100%; background: #000; border-radius: 4px; }
"""
INDEX = """<!DOCTYPE html>
<html>
<head>{%metas%}<title>{%title%}</title>{%favicon%}{%css%}<style>""" + CSS + """</style></head>
<body>{%app_entry%}<footer>{%config%}{%scripts%}{%renderer%}</footer></body>
</html>"""


# ---- reading the runs root -------------------------------------------------------------------------------------

def stat_key(path: Path):
    """(mtime_ns, size) of a file, None when it is missing: the fingerprint that tells whether to redraw."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size]


class Source:
    """The runs root as the dashboard reads it: runs loaded by analysis/runs.py, briefly cached in memory so the
    callbacks of one poll share one read; curve summaries cached by the files' fingerprints. Nothing is written."""

    def __init__(self, root: Path, phases_dir: str | None = None, imports=(), reps: int = 1000,
                 ledger_reps: int = 2000, max_age_s: float = 0.5):
        self.root = Path(root)
        self.phases_dir = phases_dir
        self.imports = list(imports)
        self.reps, self.ledger_reps, self.max_age_s = reps, ledger_reps, max_age_s
        self._lock = threading.Lock()
        self._loaded: tuple[float, list[Run], PhaseNames] | None = None
        self._summaries: dict = {}
        self._ledger: tuple | None = None

    def stamp(self) -> str:
        """A short hash of what is on disk: every run folder and the (mtime, size) of its files and videos, the
        phase files, and the REFRESH_S time bucket. Cheap (no file is read); the page redraws only when it changes."""
        digest = hashlib.sha1(str(int(time.time() // REFRESH_S)).encode())
        try:
            folders = find_run_dirs(self.root)
        except OSError as e:
            folders = []
            digest.update(f"unreadable {e}".encode())
        for folder in folders:
            digest.update(str(folder).encode())
            for name in RUN_FILES:
                digest.update(repr(stat_key(folder / name)).encode())
            try:
                videos = sorted((folder / "videos").iterdir()) if (folder / "videos").is_dir() else []
            except OSError:
                videos = []
            for video in videos:
                digest.update(f"{video.name}{stat_key(video)}".encode())
        for path in sorted(Path(self.phases_dir or PHASES_DIR).glob("*.yaml")):
            digest.update(f"{path.name}{stat_key(path)}".encode())
        return digest.hexdigest()[:16]

    def warm(self) -> None:
        """Import the slow modules (the figure code with curves.py and matplotlib, scipy and rliable for the
        ledger) and read the root once, in the background at start-up, so the first page opened is not slow."""
        try:
            from analysis import dashboard_figures, seed_stats, uncertainty  # noqa: F401

            runs, _ = self.load()
            if any(r.best_mppi is not None for r in runs):
                self.ledger_report(runs)
        except Exception:  # noqa: BLE001 - only a head start; the pages report any real problem
            pass

    def names(self) -> PhaseNames:
        return PhaseNames(phase_catalogue(self.phases_dir) if self.phases_dir else phase_catalogue())

    def load(self) -> tuple[list[Run], PhaseNames]:
        """Every run under the root (a read that a vanishing folder breaks is retried twice, then raised)."""
        with self._lock:
            if self._loaded and time.monotonic() - self._loaded[0] < self.max_age_s:
                return self._loaded[1], self._loaded[2]
        for attempt in range(3):
            names = self.names()
            try:
                runs = load_runs(self.root, names=names)
                break
            except OSError:
                if attempt == 2:
                    raise
                time.sleep(0.05)
        with self._lock:
            self._loaded = (time.monotonic(), runs, names)
        return runs, names

    def summary(self, label: str, runs: list[Run], metric: str):
        """analysis/curves.py's curve_summary, cached by the eval.csv fingerprints of the runs."""
        from analysis import curves

        key = (label, metric, tuple((str(r.path), r.seed, json.dumps(stat_key(r.path / "eval.csv")))
                                    for r in runs))
        with self._lock:
            if key in self._summaries:
                return self._summaries[key]
        value = curves.curve_summary(runs, metric, reps=self.reps)
        with self._lock:
            if len(self._summaries) > 512:
                self._summaries.clear()
            self._summaries[key] = value
        return value

    def ledger_report(self, runs: list[Run]) -> dict:
        """seed_stats.py's report (per seed, per phase, ledger) with its command line's defaults."""
        from analysis import seed_stats

        key = json.dumps([[str(r.path), stat_key(r.path / "eval.csv"), stat_key(r.path / "status.json"),
                           stat_key(r.path / "config.yaml")] for r in runs] +
                         [stat_key(Path(p)) for p in self.imports])
        with self._lock:
            if self._ledger and self._ledger[0] == key:
                return self._ledger[1]
        argv = ["--runs", str(self.root), "--reps", str(self.ledger_reps)]
        argv += ["--phases-dir", str(self.phases_dir)] if self.phases_dir else []
        argv += ["--import", *self.imports] if self.imports else []
        args = seed_stats.parse_args(argv)
        names = self.names()
        report = seed_stats.build_report(seed_stats.gather(args, names), args, names)
        with self._lock:
            self._ledger = (key, report)
        return report


def run_href(run: Run, runs: list[Run]) -> str:
    """/run/<phase>/<variant>/seed<k>: the canonical phase, or the folder name where two folders share it."""
    twins = [r for r in runs if (r.phase, r.variant, r.seed) == (run.phase, run.variant, run.seed)]
    phase = run.phase if len(twins) == 1 or run.filed_as == run.phase else run.filed_as
    return f"/run/{quote(phase, safe='')}/{quote(run.variant, safe='')}/seed{run.seed}"


def find_run(runs: list[Run], phase: str, variant: str, seed: int) -> Run | None:
    """The run a /run/ URL names: by folder name first, else by canonical phase (the furthest one)."""
    same = [r for r in runs if r.variant == variant and r.seed == seed]
    exact = [r for r in same if r.filed_as == phase]
    if exact:
        return exact[0]
    canonical = sorted((r for r in same if r.phase == phase), key=lambda r: -(r.env_steps or 0))
    return canonical[0] if canonical else None


def parse_run_path(pathname: str) -> tuple[str, str, int] | None:
    parts = [unquote(p) for p in pathname.strip("/").split("/")]
    if len(parts) == 4 and parts[0] == "run" and parts[3].startswith("seed") and parts[3][4:].isdigit():
        return parts[1], parts[2], int(parts[3][4:])
    return None


def file_href(path: Path, root: Path) -> str | None:
    """/files/<path relative to the runs root>, or None for a path outside it."""
    try:
        rel = Path(path).relative_to(root)
    except ValueError:
        return None
    return "/files/" + quote(rel.as_posix())


def resolve_inside(root: Path, rel: str) -> tuple[int, Path | None]:
    """(HTTP status, file) for a path below the runs root: 200 with the file, 403 outside the root (after
    resolving `..` and symlinks), 404 for anything missing or not a regular file (no folder listings)."""
    try:
        real_root = root.resolve(strict=True)
        target = (real_root / rel).resolve()
    except (OSError, ValueError, RuntimeError):
        return 404, None
    if target != real_root and not target.is_relative_to(real_root):
        return 403, None
    try:
        if not target.is_file():
            return 404, None
    except (OSError, ValueError):
        return 404, None
    return 200, target


# ---- the app ---------------------------------------------------------------------------------------------------

def create_app(root: Path, poll_ms: int = 5000, phases_dir: str | None = None, imports=(), reps: int = 1000):
    """The Dash app for a runs root (its Flask server is `app.server`)."""
    import dash
    import flask
    from dash import Input, Output, State, dcc, html, no_update
    from dash.exceptions import PreventUpdate

    from analysis import dashboard_figures as figs
    from analysis.colors import phase_color

    source = Source(root, phases_dir=phases_dir, imports=imports, reps=reps,
                    max_age_s=min(0.5, poll_ms / 2000))
    app = dash.Dash(__name__, title="tdmpc-glass dashboard", update_title=None, suppress_callback_exceptions=True,
                    assets_folder=str(Path(__file__).resolve().parent / "dashboard_assets"), serve_locally=True)
    app.index_string = INDEX
    app.dashboard_source = source
    server = app.server

    # ---- files from the runs root only ----
    @server.before_request
    def files_from_the_runs_root_only():
        """Every request under /files/ ends here, before routing can redirect it or hand it to Dash's catch-all
        page: the decoded path (`..`, %2e%2e, %2f, // included) is resolved and must stay inside the runs root."""
        path = flask.request.path
        if path != "/files" and not path.startswith("/files/"):
            return None
        if flask.request.method not in ("GET", "HEAD"):
            flask.abort(405)
        status, target = resolve_inside(source.root, path[len("/files/"):])
        if status != 200:
            flask.abort(status)
        return flask.send_file(target, conditional=True, max_age=0)

    # ---- small components ----
    def badge(text: str, kind: str):
        return html.Span(text, className=f"badge b-{kind}")

    def unavailable(message: str):
        return html.Div(f"unavailable: {message}", className="unavailable")

    def problem(e: BaseException) -> str:
        if not isinstance(e, (AnalysisError, OSError)):
            traceback.print_exc(file=sys.stderr)
        return str(e) if isinstance(e, AnalysisError) else f"{type(e).__name__}: {e}"

    def status_badge(run: Run):
        status = run.status
        updated = figs.parse_time(run.status_record.get("updated"))
        if status == "running" and updated and (dt.datetime.now(dt.timezone.utc) - updated).total_seconds() > \
                STALE_AFTER_S:
            return badge(f"running? no update for {figs.age_text(updated)[:-4]}", "stale")
        return badge(status, status if status in ("running", "done", "failed", "interrupted") else "unknown")

    def progress(run: Run):
        record = run.status_record
        total = record.get("total_env_steps")
        step = run.env_steps
        if not isinstance(total, (int, float)) or not total or step is None:
            return html.Span(figs.steps_text(step))
        share = max(0.0, min(1.0, step / total))
        return html.Span([figs.steps_text(step), html.Span(html.Div(style={"width": f"{share:.1%}"}),
                                                           className="progress"),
                          f"{figs.steps_text(total)} ({share:.0%})"])

    def by_label(runs: list[Run]) -> dict[str, list[Run]]:
        out: dict[str, list[Run]] = {}
        for run in runs:
            out.setdefault(run.label, []).append(run)
        return out

    def phase_options(runs: list[Run], names: PhaseNames) -> list[dict]:
        groups = by_label(runs)
        variants_of: dict[str, set] = {}
        for run in runs:
            variants_of.setdefault(run.phase, set()).add(run.variant)
        options = []
        for label, members in groups.items():
            first = members[0]
            info = names.catalogue.get(first.phase)
            variants = sorted(variants_of[first.phase] | set(info.variants if info else []), key=natural_key)
            merged = sorted({r.filed_as for r in members if r.filed_as != r.phase}, key=natural_key)
            fair = all(r.benchmark_fair for r in members)
            running = sum(r.status == "running" for r in members)
            seeds = sorted({r.seed for r in members})
            details = []
            if len(variants) > 1 or variants != ["default"]:
                details.append(f"variants of {first.phase}: {', '.join(variants)}")
            if merged:
                details.append(f"merged from folder{'s' if len(merged) > 1 else ''} {', '.join(merged)}")
            options.append({"value": label, "label": html.Div([
                html.Span(className="swatch", style={"background": phase_color(label)}),
                html.B(label), badge("fair" if fair else "unfair", "fair" if fair else "unfair"),
                html.Span(f" {len(seeds)} seed{'s' if len(seeds) != 1 else ''} "
                          f"({' '.join(f's{s}' for s in seeds)})" + (f", {running} running" if running else ""),
                          className="muted"),
                html.Div(first.description or "(no description)", className="desc"),
                html.Div(" · ".join(details), className="muted") if details else None,
            ])})
        return options

    def option_signature(runs: list[Run]) -> str:
        """A hash of what the phase picker shows, to redraw it only when that changed."""
        text = json.dumps([[r.label, r.seed, r.filed_as, r.benchmark_fair, r.description, r.status] for r in runs])
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def runs_table(runs: list[Run]):
        if not runs:
            return html.Div("no runs yet", className="muted")
        rows = []
        now = dt.datetime.now(dt.timezone.utc)
        for run in runs:
            record = run.status_record
            last = run.eval["mppi_return"].dropna().iloc[-1] if "mppi_return" in run.eval and \
                run.eval["mppi_return"].notna().any() else None
            rows.append(html.Tr([
                html.Td([html.Span(className="swatch", style={"background": phase_color(run.label)}),
                         dcc.Link(f"{run.label} s{run.seed}", href=run_href(run, runs))]),
                html.Td(status_badge(run)), html.Td(progress(run)),
                html.Td(figs.number_text(last), className="num"),
                html.Td(figs.number_text(run.best_mppi), className="num"),
                html.Td(figs.age_text(figs.parse_time(record.get("updated")), now)),
                html.Td(figs.duration_text(figs.eta_seconds(record)) if run.status == "running" else "-"),
            ]))
        header = html.Tr([html.Th(h) for h in ("run", "status", "env steps", "last MPPI", "best MPPI",
                                               "last update", "ETA")])
        return html.Table([html.Thead(header), html.Tbody(rows)], className="tbl", id="runs-tbl")

    # ---- pages ----
    def overview_page():
        try:
            runs, names = source.load()
        except Exception as e:  # noqa: BLE001 - shown, the server stays up
            return unavailable(problem(e))
        labels = list(by_label(runs))
        seeds = sorted({r.seed for r in runs})
        return html.Div([
            dcc.Store(id="ov-known", data={"labels": labels, "seeds": seeds, "sig": option_signature(runs)}),
            dcc.Store(id="ov-key"),
            html.Div(className="grid", children=[
                html.Div([
                    html.Div(className="card", children=[
                        html.H3("Phases"),
                        dcc.Checklist(id="phase-picker", options=phase_options(runs, names), value=labels,
                                      className="phase-list"),
                        html.Div("no runs under the runs root yet" if not runs else None, className="muted")]),
                    html.Div(className="card", children=[
                        html.H3("Seeds"),
                        dcc.Checklist(id="seed-picker", options=[{"label": f" s{s}", "value": s} for s in seeds],
                                      value=seeds, inline=True, labelStyle={"marginRight": "12px"})]),
                    html.Div(className="card", children=[
                        html.H3("Show"),
                        dcc.Checklist(id="curve-options", value=["seeds"], options=[
                            {"label": " single seeds (faint)", "value": "seeds"},
                            {"label": " published curves of the task (TD-MPC2, TD-MPC, DreamerV3, SAC)",
                             "value": "reference"}], labelStyle={"display": "block"})]),
                ]),
                html.Div([
                    html.Div(id="ov-msg"),
                    html.Div(className="card", children=[dcc.Graph(id="graph-mppi", config={"displaylogo": False},
                                                                   figure=figs.empty_figure("loading ..."))]),
                    html.Div(className="card", children=[dcc.Graph(id="graph-pi", config={"displaylogo": False},
                                                                   figure=figs.empty_figure("loading ..."))]),
                    html.Div(className="card", children=[html.H3("Runs"), html.Div(runs_table(runs),
                                                                                   id="runs-table")]),
                ]),
            ]),
        ])

    def run_page(phase: str, variant: str, seed: int):
        return html.Div([
            dcc.Store(id="run-id", data={"phase": phase, "variant": variant, "seed": seed}),
            dcc.Store(id="run-key"), dcc.Store(id="video-key"),
            html.Div([dcc.Link("<- all runs", href="/")], className="muted"),
            html.H2(f"{phase}{'' if variant == 'default' else ':' + variant} seed {seed}", id="run-title"),
            html.Div(id="run-status", className="card"),
            html.Div(className="card", children=[dcc.Graph(id="run-eval", figure=figs.empty_figure("loading ..."))]),
            html.Div(className="card", children=[dcc.Graph(id="run-glass", figure=figs.empty_figure("loading ..."))]),
            html.Div(className="card", children=[dcc.Graph(id="run-throughput",
                                                           figure=figs.empty_figure("loading ..."))]),
            html.Div(className="card", children=[dcc.Graph(id="run-losses", figure=figs.empty_figure("loading ..."))]),
            html.Div(className="card", children=[html.H3("Videos"), html.Div(id="run-videos")]),
            html.Div(className="card", children=[html.H3("Events"), html.Div(id="run-events")]),
        ])

    def ledger_page():
        return html.Div([dcc.Store(id="ledger-id", data="ledger"), dcc.Store(id="ledger-key"),
                         html.Div(id="ledger-content", children="loading ...")])

    app.layout = html.Div([
        dcc.Location(id="url"),
        dcc.Interval(id="poll", interval=poll_ms),
        dcc.Store(id="stamp"),  # changes when something on disk changed: the pages redraw on it, not on every poll
        html.Div(className="top", children=[
            html.Span("tdmpc-glass", className="brand"), dcc.Link("Curves", href="/"),
            dcc.Link("Ledger", href="/ledger"), html.Span(f"runs root: {source.root}", className="root"),
            html.Span(id="clock", className="clock")]),
        html.Div(id="page", className="page"),
    ])

    @app.callback(Output("page", "children"), Input("url", "pathname"))
    def render_page(pathname):
        pathname = pathname or "/"
        if pathname in ("/", ""):
            return overview_page()
        if pathname.rstrip("/") == "/ledger":
            return ledger_page()
        parsed = parse_run_path(pathname)
        if parsed:
            return run_page(*parsed)
        return html.Div([html.H2("not found"), html.P(["no page ", html.Code(pathname), "; ",
                                                       dcc.Link("all runs", href="/")])])

    @app.callback(Output("stamp", "data"), Output("clock", "children"), Input("poll", "n_intervals"),
                  State("stamp", "data"))
    def poll(_n, previous):
        """Each poll only stats the runs root; the views' callbacks run when the stamp changed. (A heavy
        callback on the interval itself would be cancelled by the next tick whenever it took longer than one.)"""
        clock = f"live, polling every {poll_ms / 1000:g}s · {time.strftime('%H:%M:%S')}"
        try:
            stamp = source.stamp()
        except Exception as e:  # noqa: BLE001
            stamp = f"error {e}"
        return (no_update if stamp == previous else stamp), clock

    # ---- overview ----
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
                [{"label": f" s{s}", "value": s} for s in seeds] if changed else no_update, seed_value,
                {"labels": labels, "seeds": seeds, "sig": signature} if changed else no_update,
                runs_table(runs), None)

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
                          [[str(r.path), stat_key(r.path / "eval.csv")] for m in chosen.values() for r in m]])
        if key == previous:
            raise PreventUpdate
        out = []
        for metric in ("mppi_return", "pi_return"):
            try:
                summaries = {label: source.summary(label, members, metric) for label, members in chosen.items()}
                out.append(figs.curves_figure(chosen, metric, show_seeds="seeds" in options,
                                              reference="reference" in options, summaries=summaries))
            except Exception as e:  # noqa: BLE001
                out.append(figs.empty_figure(f"unavailable: {problem(e)}"))
        return out[0], out[1], key

    # ---- one run ----
    @app.callback(Output("run-status", "children"), Output("run-eval", "figure"), Output("run-glass", "figure"),
                  Output("run-throughput", "figure"), Output("run-losses", "figure"), Output("run-events", "children"),
                  Output("run-key", "data"), Input("stamp", "data"), Input("run-id", "data"),
                  State("run-key", "data"))
    def update_run(_n, ident, previous):
        try:
            runs, _names = source.load()
            run = find_run(runs, ident["phase"], ident["variant"], int(ident["seed"]))
            if run is None:
                where = f"{ident['phase']}/{ident['variant']}/seed{ident['seed']}"
                return (unavailable(f"no run {where} under {source.root} (not started yet, or its folder was "
                                    "removed)"),) + (no_update,) * 6
            files = ("eval.csv", "train.csv", "events.jsonl", "config.yaml")
            key = json.dumps([str(run.path)] + [stat_key(run.path / f) for f in files])
            train = run.train()
            status = run_status(run, runs, train)
            if key == previous:
                return (status,) + (no_update,) * 6
            return (status, figs.run_eval_figure(run.eval, run.label), figs.glass_figure(train),
                    figs.throughput_figure(train), figs.losses_figure(train), events_table(run.events()), key)
        except Exception as e:  # noqa: BLE001
            return (unavailable(problem(e)),) + (no_update,) * 6

    def run_status(run: Run, runs: list[Run], train):
        record = run.status_record
        updated = figs.parse_time(record.get("updated"))
        eta = figs.eta_seconds(record, train)
        rate = record.get("env_steps_per_s")
        if not isinstance(rate, (int, float)) and "env_steps_per_s" in train:
            rates = train["env_steps_per_s"].dropna()
            rate = float(rates.iloc[-1]) if len(rates) else None
        last = record.get("last_mppi_return")
        if last is None and "mppi_return" in run.eval and run.eval["mppi_return"].notna().any():
            last = run.eval["mppi_return"].dropna().iloc[-1]
        links = [html.A(name, href=file_href(run.path / name, source.root), target="_blank",
                        style={"marginRight": "10px"}) for name in ("eval.csv", "train.csv", "events.jsonl",
                                                                    "status.json", "config.yaml")
                 if (run.path / name).is_file()]
        rows = [
            ("status", [status_badge(run)]),
            ("env steps", [progress(run)]),
            ("last update", f"{figs.age_text(updated)} ({record.get('updated', '-')})" if updated else "-"),
            ("ETA", figs.duration_text(eta) if eta is not None else ("-" if run.status != "running"
                                                                      else "unknown (no throughput yet)")),
            ("throughput", f"{figs.number_text(rate, 0)} env steps/s" if rate is not None else "-"),
            ("MPPI score", f"last {figs.number_text(last)}, best {figs.number_text(run.best_mppi)}"),
            ("phase", [html.Span(className="swatch", style={"background": phase_color(run.label)}), run.label,
                       badge("fair" if run.benchmark_fair else "unfair",
                             "fair" if run.benchmark_fair else "unfair")]),
            ("description", run.description or "-"),
            ("task", run.task or "-"),
            ("folder", html.Code(str(run.path.relative_to(source.root)) if run.path.is_relative_to(source.root)
                                 else str(run.path))),
            ("files", links or "-"),
        ]
        cells = []
        for key, value in rows:
            cells += [html.Div(key), html.Div(value, id="kv-" + key.replace(" ", "-"))]
        return html.Div(cells, className="kv", id="run-kv")

    def events_table(events: list[dict]):
        if not events:
            return html.Div("no events (events.jsonl is empty or missing)", className="muted")
        rows = []
        for event in reversed(events[-MAX_EVENTS:]):
            kind = str(event.get("event", "?"))
            details = ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("time", "env_step", "event"))
            rows.append(html.Tr([html.Td(str(event.get("time", "-"))), html.Td(figs.steps_text(event.get("env_step"))
                                                                              if isinstance(event.get("env_step"),
                                                                                            (int, float)) else "-",
                                                                              className="num"),
                                 html.Td(html.B(kind) if kind in ("nonfinite", "failed") else kind),
                                 html.Td(details)], className=f"ev-{kind}"))
        note = f" (newest first; the last {MAX_EVENTS} of {len(events)})" if len(events) > MAX_EVENTS else \
            " (newest first)"
        return html.Div([html.Div(f"{len(events)} events{note}", className="muted"),
                         html.Table([html.Thead(html.Tr([html.Th(h) for h in ("time", "env step", "event",
                                                                               "details")])), html.Tbody(rows)],
                                    className="tbl", id="events-tbl")])

    @app.callback(Output("run-videos", "children"), Output("video-key", "data"), Input("stamp", "data"),
                  Input("run-id", "data"), State("video-key", "data"))
    def update_videos(_n, ident, previous):
        try:
            runs, _names = source.load()
            run = find_run(runs, ident["phase"], ident["variant"], int(ident["seed"]))
            if run is None:
                raise PreventUpdate
            folder = run.path / "videos"
            videos = sorted((p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()),
                            key=lambda p: natural_key(p.name)) if folder.is_dir() else []
            key = json.dumps([[str(p), stat_key(p)] for p in videos])
            if key == previous:
                raise PreventUpdate
            if not videos:
                return html.Div("no videos yet (videos/*.mp4)", className="muted"), key
            items = []
            for path in videos:
                href = file_href(path, source.root)
                if href is None:
                    continue
                size = (stat_key(path) or [0, 0])[1]
                items.append(html.Figure([
                    html.Video(src=href, controls=True, muted=True, preload="auto", loop=True,
                               className="run-video"),
                    html.Figcaption([html.A(path.name, href=href, target="_blank"),
                                     html.Span(f" {size / 1e6:.1f} MB" if size >= 1e5 else f" {size / 1e3:.0f} kB",
                                               className="muted")])]))
            return html.Div(items, className="videos"), key
        except PreventUpdate:
            raise
        except Exception as e:  # noqa: BLE001
            return unavailable(problem(e)), None

    # ---- ledger ----
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

    def ledger_view(report: dict):
        from analysis import seed_stats as ss

        settings = report["settings"]
        ledger_rows = []
        for r in report["ledger"]:
            fair = r["benchmark_fair"]

            def goal(name):
                if not fair:
                    return badge("excl.", "excl")
                return badge(name, "g") if r[name] else badge("no", "no")

            ledger_rows.append(html.Tr([
                html.Td([html.Span(className="swatch", style={"background": phase_color(r["phase"])}),
                         html.B(r["phase"])], className="nowrap"),
                html.Td(badge("fair", "fair") if fair else badge("unfair", "unfair")),
                html.Td(r["n_seeds"], className="num"),
                html.Td(f"{ss._num(r['best_mppi'])} ({ss._seeds(r['best_seeds'])})"),
                html.Td(f"{r['hits']}/{r['n_seeds']}", className="num"),
                html.Td(goal("G1"), className="g1"), html.Td(goal("G2"), className="g2"),
                html.Td(f"{ss._num(r['iqm'])} {ss._ci(r['iqm_ci_low'], r['iqm_ci_high'])}", className="nowrap"),
                html.Td(f"{ss._num(r['mean'])} {ss._ci(r['mean_ci_low'], r['mean_ci_high'])}", className="nowrap"),
                html.Td("-" if r["env_steps"] is None else f"{r['env_steps']:,}" +
                        (f" ({r['n_running']} running)" if r["n_running"] else "")),
                html.Td(ss._short(r["description"], 90) or "-", className="desc"),
            ]))
        g1 = [r["phase"] for r in report["ledger"] if r["G1"]]
        g2 = [r["phase"] for r in report["ledger"] if r["G2"]]
        header, rows = ss.per_phase_wide(report)
        per_phase = html.Table([html.Thead(html.Tr([html.Th(h) for h in header])), html.Tbody([
            html.Tr([html.Td(row[0])] + [html.Td(ss._num(v), className="num") for v in row[1:-1]] +
                    [html.Td(row[-1])]) for row in rows])], className="tbl", id="per-phase-tbl")
        if report["per_seed"]:
            per_seed = html.Table([html.Thead(html.Tr([html.Th(h) for h in ss.PER_SEED_KEYS])), html.Tbody([
                html.Tr([html.Td(f"s{r['seed']}"), html.Td(r["n_phases"], className="num")] +
                        [html.Td(ss._num(r[k]), className="num") for k in ("mean", "median", "max", "min")] +
                        [html.Td(r["times_best"], className="num"), html.Td(r["times_worst"], className="num")])
                for r in report["per_seed"]])], className="tbl", id="per-seed-tbl")
        else:
            per_seed = html.Div("(no phase has 2 or more seeds)", className="muted")
        return html.Div([
            html.Div(className="card", children=[
                html.H3(f"Phase ledger (hit: best MPPI >= {settings['threshold']:g}; G1: >= {ss.MIN_SEEDS_G1} seeds, "
                        f"all hit; G2: a seed >= {settings['ceiling']:g}; unfair phases never count)"),
                html.Table([html.Thead(html.Tr([html.Th(h) for h in (
                    "phase", "fair", "seeds", "best MPPI (seed)", "hit rate", "G1", "G2", "IQM [95% CI]",
                    "mean [95% CI]", "env steps", "description")])), html.Tbody(ledger_rows)], className="tbl",
                    id="ledger-tbl"),
                html.P(f"G1 reached by: {', '.join(g1) or 'none'}. G2 reached by: {', '.join(g2) or 'none'}. "
                       f"95% CIs: rliable's stratified bootstrap over seeds, {settings['reps']} resamples, seeded "
                       f"(computed by analysis/seed_stats.py).", className="muted")]),
            html.Div(className="card", children=[html.H3("Per-phase best MPPI by seed"), per_phase]),
            html.Div(className="card", children=[
                html.H3("Per-seed statistics (best MPPI over phases with at least 2 seeds)"), per_seed]),
        ])

    return app


# ---- command line ----------------------------------------------------------------------------------------------

def listen(host: str, port: int) -> socket.socket:
    """A listening socket, or AnalysisError with one line saying why not (port in use, unknown host)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OverflowError) as e:
        raise AnalysisError(f"--host {host}: cannot resolve ({getattr(e, 'strerror', None) or e})") from None
    family, _type, proto, _name, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what werkzeug's server does too
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise AnalysisError(f"port {port} on {host} is already in use (choose another with --port)") from None
        raise AnalysisError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dashboard.py", description="Live dashboard of a runs root: learning curves "
                                "with 95% CI bands, run pages, the phase ledger.")
    p.add_argument("--runs", default=None, metavar="DIR", help=f"runs root (default: ${RUNS_ENV}, else ./runs)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port ({DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind ({DEFAULT_HOST}: this machine only)")
    p.add_argument("--poll-ms", type=int, default=5000, help="how often the page re-reads the runs root (5000)")
    p.add_argument("--import", dest="imports", nargs="+", metavar="CSV", default=[],
                   help="results CSVs for the ledger, as seed_stats.py --import")
    p.add_argument("--reps", type=int, default=1000, help="bootstrap resamples for the curves' bands (1000)")
    p.add_argument("--verbose", action="store_true", help="log every HTTP request")
    p.add_argument("--phases-dir", default=None, help=argparse.SUPPRESS)  # tests: another phases/ folder
    args = p.parse_args(argv)
    if not 0 <= args.port <= 65535:
        p.error(f"--port {args.port}: must be 0..65535")
    if args.poll_ms < 100:
        p.error("--poll-ms must be at least 100")
    if args.reps < 10:
        p.error("--reps must be at least 10")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    root = runs_root(args.runs)
    try:
        if not root.exists():
            raise AnalysisError(f"runs root {root} does not exist (train a phase first, or pass --runs DIR)")
        if not root.is_dir():
            raise AnalysisError(f"runs root {root} is not a directory")
        for path in args.imports:
            if not Path(path).is_file():
                raise AnalysisError(f"--import {path}: no such file")
        try:
            import dash  # noqa: F401
        except ImportError:
            raise AnalysisError("dash is not installed: pip install -e '.[dashboard]' (make dashboard does it)") \
                from None
        sock = listen(args.host, args.port)
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from werkzeug.serving import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        def log_request(self, *a, **k):
            if args.verbose:
                super().log_request(*a, **k)

    app = create_app(root, poll_ms=args.poll_ms, phases_dir=args.phases_dir, imports=args.imports, reps=args.reps)
    threading.Thread(target=app.dashboard_source.warm, name="warm-up", daemon=True).start()
    server = make_server(args.host, args.port, app.server, threaded=True, request_handler=QuietHandler,
                         fd=sock.fileno())
    sock.close()  # the server holds its own copy of the descriptor
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in str(host) else host
    print(f"dashboard: http://{shown}:{port}/ (runs root {root.resolve()}; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
