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

Each page's layout and callbacks live in its own module (analysis/dashboard_curves.py, dashboard_run.py,
dashboard_ledger.py; shared components in dashboard_parts.py, figures in dashboard_figures.py). This module
holds what they share: the Source (the runs root read through analysis/runs.py, cached in memory, stamped
each poll), the /files/ route, the app factory with its page frame and router, and the command line.

Files are served only from inside the runs root (`/files/<path relative to the runs root>`; paths are resolved,
symlinks included, and anything outside is refused with 403; folders and missing files are 404, no listing).
The dashboard never writes into the runs root. It binds 127.0.0.1 unless --host says otherwise. A file being
written, a partial CSV line or a run folder removed while it is read shows as "unavailable" and the server stays up.
A damaged run file (cut short, emptied, corrupted, the wrong columns) is flagged under the run in the runs table
(`damaged: <file>: <what is wrong>`) and in the ledger's list of runs left out or counted; what can be read of the
run is still shown.
Bad input (a missing runs root, a port in use) prints one line `error: ...` and exits 2.
"""
from __future__ import annotations

import argparse
import errno
import hashlib
import json
import socket
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

from analysis.runs import PHASES_DIR, AnalysisError, PhaseNames, Run, find_run_dirs, load_runs, phase_catalogue
from tdmpc_glass.runlayout import CONFIG, EVAL, RUN_FILES, RUNS_ENV, STATUS, VIDEOS, runs_root

DEFAULT_PORT = 5055
DEFAULT_HOST = "127.0.0.1"
FILES_ROUTE = "/files/"  # /files/<path relative to the runs root>
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
.damaged { color: #a3271b; font-size: 12px; margin-top: 2px; }
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
        self._damage: dict = {}
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
                videos = sorted((folder / VIDEOS).iterdir()) if (folder / VIDEOS).is_dir() else []
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

        key = (label, metric, tuple((str(r.path), r.seed, json.dumps(stat_key(r.path / EVAL)))
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

    def damage(self, run: Run) -> list:
        """run.damage(): what is wrong with each of the run's files (analysis/runs.py's Damage), cached by the
        files' fingerprints."""
        key = (str(run.path), json.dumps([stat_key(run.path / name) for name in RUN_FILES]))
        with self._lock:
            if key in self._damage:
                return self._damage[key]
        value = run.damage()
        with self._lock:
            if len(self._damage) > 4096:
                self._damage.clear()
            self._damage[key] = value
        return value

    def ledger_report(self, runs: list[Run]) -> dict:
        """seed_stats.py's report (per seed, per phase, ledger) with its command line's defaults."""
        from analysis import seed_stats

        key = json.dumps([[str(r.path), stat_key(r.path / EVAL), stat_key(r.path / STATUS),
                           stat_key(r.path / CONFIG)] for r in runs] + [stat_key(Path(p)) for p in self.imports])
        with self._lock:
            if self._ledger and self._ledger[0] == key:
                return self._ledger[1]
        report = seed_stats.stats_report(self.root, self.imports, reps=self.ledger_reps, phases_dir=self.phases_dir)
        with self._lock:
            self._ledger = (key, report)
        return report

    def fingerprint(self, paths: Iterable[Path]) -> list:
        """[[path, (mtime_ns, size) or None], ...]: what a page compares to tell whether to redraw."""
        return [[str(path), stat_key(path)] for path in paths]

    def file_href(self, path: Path) -> str | None:
        """The URL that serves `path` (FILES_ROUTE + its path relative to the runs root); None outside the root."""
        try:
            rel = Path(path).relative_to(self.root)
        except ValueError:
            return None
        return FILES_ROUTE + quote(rel.as_posix())


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
    """The Dash app for a runs root (its Flask server is `app.server`, its Source `app.dashboard_source`): the
    /files/ route, the page frame with the poll that stamps the runs root, the router, and each page's callbacks
    (analysis/dashboard_curves.py, dashboard_run.py, dashboard_ledger.py)."""
    import dash
    import flask
    from dash import Input, Output, State, dcc, html, no_update

    from analysis import dashboard_curves, dashboard_ledger, dashboard_run

    source = Source(root, phases_dir=phases_dir, imports=imports, reps=reps, max_age_s=min(0.5, poll_ms / 2000))
    app = dash.Dash(__name__, title="tdmpc-glass dashboard", update_title=None, suppress_callback_exceptions=True,
                    assets_folder=str(Path(__file__).resolve().parent / "dashboard_assets"), serve_locally=True)
    app.index_string = INDEX
    app.dashboard_source = source

    @app.server.before_request
    def files_from_the_runs_root_only():
        """Every request under /files/ ends here, before routing can redirect it or hand it to Dash's catch-all
        page: the decoded path (`..`, %2e%2e, %2f, // included) is resolved and must stay inside the runs root."""
        path = flask.request.path
        if path != FILES_ROUTE.rstrip("/") and not path.startswith(FILES_ROUTE):
            return None
        if flask.request.method not in ("GET", "HEAD"):
            flask.abort(405)
        status, target = resolve_inside(source.root, path[len(FILES_ROUTE):])
        if status != 200:
            flask.abort(status)
        return flask.send_file(target, conditional=True, max_age=0)

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
            return dashboard_curves.layout(source)
        if pathname.rstrip("/") == "/ledger":
            return dashboard_ledger.layout()
        parsed = dashboard_run.parse_run_path(pathname)
        if parsed:
            return dashboard_run.layout(*parsed)
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

    for page in (dashboard_curves, dashboard_run, dashboard_ledger):
        page.register(app, source)
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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


def main(argv: list[str] | None = None) -> int:
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
