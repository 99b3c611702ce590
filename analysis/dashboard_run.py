"""The dashboard's run page, `/run/<phase>/<variant>/seed<k>`: status, env steps, last update, ETA, links to the
raw files; the eval curve; Glass diagnostics, throughput and losses from train.csv; the run's videos played in
the page, each with its episode's gait, K stability during hops and basin label (read from the video's
`<stem>_summary.json`, which tdmpc_glass/video writes), and the run's basin; its events, newest first. Also the
page's URLs (run_href, parse_run_path, find_run).

`register(app, source)` adds its callbacks; `layout(phase, variant, seed)` is what the router shows.
"""
from __future__ import annotations

import json
from urllib.parse import quote, unquote

from dash import Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from analysis import dashboard_figures as figs
from analysis.dashboard_parts import (damage_flags, fairness_badge, problem, progress, status_badge, swatch,
                                      unavailable)
from analysis.runs import Run, natural_key
from tdmpc_glass.runlayout import (CONFIG, DEFAULT_VARIANT, EVAL, EVENTS, PROVENANCE, RUNNING, STATUS, TRAIN, VIDEOS,
                                   seed_of)

VIDEO_SUFFIXES = (".mp4", ".webm")
SUMMARY_SUFFIX = "_summary.json"  # <stem>_summary.json next to <stem>.mp4 (tdmpc_glass/video/recorder.py)
MAX_EVENTS = 300
LINKED_FILES = (EVAL, TRAIN, EVENTS, STATUS, CONFIG, PROVENANCE)  # the raw files linked from the page, in this order
DRAWN_FILES = (EVAL, TRAIN, EVENTS, CONFIG)  # the files the figures and events come from: redrawn when they change
ALARMING_EVENTS = ("nonfinite", "failed")


# ---- URLs ------------------------------------------------------------------------------------------------------

def run_href(run: Run, runs: list[Run]) -> str:
    """/run/<phase>/<variant>/seed<k>: the canonical phase, or the folder name where two folders share it."""
    twins = [r for r in runs if (r.phase, r.variant, r.seed) == (run.phase, run.variant, run.seed)]
    phase = run.phase if len(twins) == 1 or run.filed_as == run.phase else run.filed_as
    return f"/run/{quote(phase, safe='')}/{quote(run.variant, safe='')}/seed{run.seed}"


def parse_run_path(pathname: str) -> tuple[str, str, int] | None:
    """(phase, variant, seed) of a /run/ URL; None for any other path."""
    parts = [unquote(p) for p in pathname.strip("/").split("/")]
    if len(parts) == 4 and parts[0] == "run":
        seed = seed_of(parts[3])
        if seed is not None:
            return parts[1], parts[2], seed
    return None


def find_run(runs: list[Run], phase: str, variant: str, seed: int) -> Run | None:
    """The run a /run/ URL names: by folder name first, else by canonical phase (the furthest one)."""
    same = [r for r in runs if r.variant == variant and r.seed == seed]
    exact = [r for r in same if r.filed_as == phase]
    if exact:
        return exact[0]
    canonical = sorted((r for r in same if r.phase == phase), key=lambda r: -(r.env_steps or 0))
    return canonical[0] if canonical else None


# ---- the page --------------------------------------------------------------------------------------------------

def graph_card(graph_id: str):
    return html.Div(className="card", children=[dcc.Graph(id=graph_id, figure=figs.empty_figure("loading ..."))])


def layout(phase: str, variant: str, seed: int):
    title = f"{phase}{'' if variant == DEFAULT_VARIANT else ':' + variant} seed {seed}"
    return html.Div([
        dcc.Store(id="run-id", data={"phase": phase, "variant": variant, "seed": seed}),
        dcc.Store(id="run-key"), dcc.Store(id="video-key"),
        html.Div([dcc.Link("<- all runs", href="/")], className="muted"),
        html.H2(title, id="run-title"),
        html.Div(id="run-status", className="card"),
        *[graph_card(graph_id) for graph_id in ("run-eval", "run-glass", "run-throughput", "run-losses")],
        html.Div(className="card", children=[html.H3("Videos"), html.Div(id="run-videos")]),
        html.Div(className="card", children=[html.H3("Events"), html.Div(id="run-events")]),
    ])


def last_mppi(run: Run):
    """The latest evaluation's MPPI score from status.json, else from eval.csv; None before any."""
    last = run.status_record.get("last_mppi_return")
    if last is None and "mppi_return" in run.eval and run.eval["mppi_return"].notna().any():
        last = run.eval["mppi_return"].dropna().iloc[-1]
    return last


def provenance_text(path) -> str:
    """The run's provenance.jsonl in one line: process lives, and what the last one ran with."""
    lives = []
    try:
        for line in (path / PROVENANCE).read_text(errors="replace").splitlines():
            try:
                lives.append(json.loads(line))
            except ValueError:
                continue
    except OSError:
        return "-"
    lives = [life for life in lives if isinstance(life, dict)]
    if not lives:
        return "-"
    last = lives[-1]
    v, git, dev = last.get("versions") or {}, last.get("git") or {}, last.get("devices") or {}
    commit = (git.get("commit") or "?")[:10] + (" (dirty)" if git.get("dirty") else "")
    return (f"{len(lives)} process {'life' if len(lives) == 1 else 'lives'}; last: {dev.get('count', '?')} x "
            f"{dev.get('kind', '?')}, jax {v.get('jax', '?')}, python {v.get('python', '?')}, mujoco "
            f"{v.get('mujoco', '?')}, commit {commit}, XLA_FLAGS {last.get('xla_flags') or '(none)'}, deterministic "
            f"ops {'on' if last.get('deterministic_ops_in_flags') else 'off'}, allocator {last.get('allocator', '?')}")


def run_status(run: Run, train, source):
    """The key-value card: status, env steps, last update, ETA, throughput, scores, phase, files."""
    record = run.status_record
    updated = figs.parse_time(record.get("updated"))
    eta = figs.eta_seconds(record, train)
    rate = record.get("env_steps_per_s")
    if not isinstance(rate, (int, float)) and "env_steps_per_s" in train:
        rates = train["env_steps_per_s"].dropna()
        rate = float(rates.iloc[-1]) if len(rates) else None
    links = [html.A(name, href=source.file_href(run.path / name), target="_blank", style={"marginRight": "10px"})
             for name in LINKED_FILES if (run.path / name).is_file()]
    if eta is not None:
        eta_text = figs.duration_text(eta)
    else:
        eta_text = "unknown (no throughput yet)" if run.status == RUNNING else "-"
    folder = run.path.relative_to(source.root) if run.path.is_relative_to(source.root) else run.path
    rows = [
        ("status", [status_badge(run)]),
        ("env steps", [progress(run)]),
        ("last update", f"{figs.age_text(updated)} ({record.get('updated', '-')})" if updated else "-"),
        ("ETA", eta_text),
        ("throughput", f"{figs.number_text(rate, 0)} env steps/s" if rate is not None else "-"),
        ("MPPI score", f"last {figs.number_text(last_mppi(run))}, best {figs.number_text(run.best_mppi)}"),
        ("phase", [swatch(run.label), run.label, fairness_badge(run.benchmark_fair)]),
        ("description", run.summary or run.description or "-"),
        ("task", run.task or "-"),
        ("folder", html.Code(str(folder))),
        ("files", links or "-"),
        ("provenance", provenance_text(run.path)),
    ]
    flags = damage_flags(source.damage(run))
    if flags:
        rows.append(("damaged files", flags))
    cells = []
    for key, value in rows:
        cells += [html.Div(key), html.Div(value, id="kv-" + key.replace(" ", "-"))]
    return html.Div(cells, className="kv", id="run-kv")


def events_table(events: list[dict]):
    """The run's events, newest first (at most MAX_EVENTS); nonfinite and failed in bold."""
    if not events:
        return html.Div(f"no events ({EVENTS} is empty or missing)", className="muted")
    rows = []
    for event in reversed(events[-MAX_EVENTS:]):
        kind = str(event.get("event", "?"))
        details = ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("time", "env_step", "event"))
        step = event.get("env_step")
        rows.append(html.Tr([html.Td(str(event.get("time", "-"))),
                             html.Td(figs.steps_text(step) if isinstance(step, (int, float)) else "-",
                                     className="num"),
                             html.Td(html.B(kind) if kind in ALARMING_EVENTS else kind),
                             html.Td(details)], className=f"ev-{kind}"))
    note = f" (newest first; the last {MAX_EVENTS} of {len(events)})" if len(events) > MAX_EVENTS else \
        " (newest first)"
    header = html.Thead(html.Tr([html.Th(h) for h in ("time", "env step", "event", "details")]))
    return html.Div([html.Div(f"{len(events)} events{note}", className="muted"),
                     html.Table([header, html.Tbody(rows)], className="tbl", id="events-tbl")])


def summary_path(video):
    return video.with_name(video.stem + SUMMARY_SUFFIX)


def read_summary(video) -> dict | None:
    """The video's summary JSON; None when there is none; {"unreadable": why} when it cannot be read."""
    path = summary_path(video)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return {"unreadable": f"{path.name}: {type(e).__name__}"}
    return data if isinstance(data, dict) else {"unreadable": f"{path.name}: not an object"}


def stability_text(summary: dict) -> str:
    """K stability during hops only (fall recovery excluded), as the summary states it."""
    if summary.get("glass") is False:
        return "hop K: - (Glass off)"
    per_cycle, cycles = summary.get("hop_k_switches_per_cycle"), summary.get("hop_cycles_in_hops")
    if per_cycle is None:
        return "hop K: - (no hop cycles)"
    verdict = {True: "stable", False: "unstable"}.get(summary.get("hop_k_stable"), "?")
    return (f"hop K: {per_cycle:.2f} switches/cycle over {cycles} hop cycles, {summary.get('hop_distinct_k')} "
            f"K ({verdict})")


def gait_line(summary: dict | None, label: str = ""):
    """One line under a video: gait, K stability during hops, basin (or why they are missing)."""
    prefix = f"{label}: " if label else ""
    if summary is None:
        return html.Div(f"{prefix}no summary JSON", className="muted video-gait")
    if "unreadable" in summary:
        return html.Div(f"{prefix}summary unreadable ({summary['unreadable']})", className="muted video-gait")
    if "gait" not in summary:
        return html.Div(f"{prefix}no gait in the summary (written before gait labels)", className="muted video-gait")
    if summary["gait"] is None:
        return html.Div(f"{prefix}gait: - (hopper only)", className="muted video-gait")
    return html.Div([prefix, "gait ", html.B(summary["gait"]), f" | {stability_text(summary)} | basin ",
                     html.B(str(summary.get("basin")))], className="video-gait")


def video_gait(summary: dict | None):
    """The gait lines of one video: its episode's, or each run's for a grid."""
    if summary is not None and isinstance(summary.get("runs"), list):
        return [gait_line(r, str(r.get("run", "?"))) for r in summary["runs"] if isinstance(r, dict)]
    return [gait_line(summary)]


def run_basin(summaries: list) -> str | None:
    """The run's basin: the most common basin among the episodes of its latest checkpoint with videos (a basin
    locks early and is almost never left, log section 9.3); ties list every leader. None without labels."""
    labelled = [s for s in summaries if isinstance(s, dict) and s.get("basin")
                and isinstance(s.get("checkpoint_env_step"), (int, float))]
    if not labelled:
        return None
    step = max(s["checkpoint_env_step"] for s in labelled)
    latest = [s["basin"] for s in labelled if s["checkpoint_env_step"] == step]
    counts = {b: latest.count(b) for b in dict.fromkeys(latest)}
    top = max(counts.values())
    leaders = " / ".join(b for b, c in counts.items() if c == top)
    return f"{leaders} ({top} of {len(latest)} episodes at env step {int(step)}, the latest with videos)"


def video_list(videos: list, fingerprint: list, source):
    """A <video> per file, playing from /files/, with its name, size and gait line; the run's basin above."""
    if not videos:
        return html.Div(f"no videos yet ({VIDEOS}/*.mp4)", className="muted")
    summaries = [read_summary(path) for path in videos]
    basin = run_basin(summaries)
    items = []
    for path, summary, (_name, stat) in zip(videos, summaries, fingerprint):
        href = source.file_href(path)
        if href is None:
            continue
        size = (stat or [0, 0])[1]
        items.append(html.Figure([
            html.Video(src=href, controls=True, muted=True, preload="auto", loop=True, className="run-video"),
            html.Figcaption([html.A(path.name, href=href, target="_blank"),
                             html.Span(f" {size / 1e6:.1f} MB" if size >= 1e5 else f" {size / 1e3:.0f} kB",
                                       className="muted"), *video_gait(summary)],
                            style={"maxWidth": "420px", "fontSize": "12px"})]))
    head = html.Div(["run basin: ", html.B(basin) if basin else "- (no hopper videos with gait labels)"],
                    id="run-basin", style={"fontSize": "13px", "marginBottom": "6px"})
    return html.Div([head, html.Div(items, className="videos")])


def register(app, source) -> None:
    """The run page's callbacks: its status card on every change of the stamp, its figures and events when
    one of DRAWN_FILES changed, its videos when a video file did."""

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
            key = json.dumps(source.fingerprint(run.path / name for name in DRAWN_FILES))
            train = run.train()
            status = run_status(run, train, source)
            if key == previous:
                return (status,) + (no_update,) * 6
            return (status, figs.run_eval_figure(run.eval, run.label, run.task), figs.glass_figure(train),
                    figs.throughput_figure(train), figs.losses_figure(train), events_table(run.events()), key)
        except Exception as e:  # noqa: BLE001 - shown, the server stays up
            return (unavailable(problem(e)),) + (no_update,) * 6

    @app.callback(Output("run-videos", "children"), Output("video-key", "data"), Input("stamp", "data"),
                  Input("run-id", "data"), State("video-key", "data"))
    def update_videos(_n, ident, previous):
        try:
            runs, _names = source.load()
            run = find_run(runs, ident["phase"], ident["variant"], int(ident["seed"]))
            if run is None:
                raise PreventUpdate
            folder = run.path / VIDEOS
            videos = sorted((p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()),
                            key=lambda p: natural_key(p.name)) if folder.is_dir() else []
            fingerprint = source.fingerprint(videos)
            # a summary is written after its video: redraw when one appears or changes
            key = json.dumps([fingerprint, source.fingerprint(summary_path(p) for p in videos)])
            if key == previous:
                raise PreventUpdate
            return video_list(videos, fingerprint, source), key
        except PreventUpdate:
            raise
        except Exception as e:  # noqa: BLE001
            return unavailable(problem(e)), None
