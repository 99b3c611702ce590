"""analysis/dashboard.py: the live Dash app, end to end in a real headless browser, and its pieces.

The browser tests start the dashboard as a subprocess on 127.0.0.1 (a free port) against a generated runs root
(tests/dashboard_runs.py) and drive Debian's chromium through its chromedriver with Selenium (no Selenium
Manager: the driver path is given). They are skipped, saying why, only where chromium, chromedriver or selenium is
missing; .ci/run installs chromium and chromium-driver, so they run in CI.
"""
from __future__ import annotations

import csv
import http.client
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("dash", reason="the dashboard extra is not installed (pip install -e '.[dashboard]')")

from dashboard_runs import EVAL_HEADER, make_runs_root, video_summary  # noqa: E402  (tests/ is on sys.path)

from analysis import curves, dashboard, dashboard_run, seed_stats  # noqa: E402
from analysis import dashboard_figures as figs  # noqa: E402
from analysis.runs import load_runs  # noqa: E402
from tdmpc_glass.runlayout import EVAL, RUNS_ENV  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "analysis" / "dashboard.py"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
POLL_MS = 300
APPENDED_SCORE = 777.7  # a score no generated run has, so its appearance on the page is unambiguous


def run_cli(*argv, timeout: float = 60):
    env = {k: v for k, v in os.environ.items() if k != RUNS_ENV}
    return subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=REPO)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root with what it is (file size + mtime, folder, link target)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            out[str(path)] = ("link", os.readlink(path))
        elif path.is_dir():
            out[str(path)] = ("dir",)
        else:
            st = path.stat()
            out[str(path)] = ("file", st.st_size, st.st_mtime_ns)
    return out


# ---- pieces, without a browser ---------------------------------------------------------------------------------

@pytest.fixture
def generated(tmp_path):
    return make_runs_root(tmp_path, video=False)


def test_curve_band_is_curves_py_computation(generated):
    """The figure's band polygon and mean are curves.curve_summary's numbers (the same bootstrap as curves.py)."""
    root, phases = generated
    runs = load_runs(root, phases_dir=phases)
    alpha = [r for r in runs if r.label == "alpha"]
    assert sorted(r.seed for r in alpha) == [1, 2, 3, 4, 5]  # seed 4 filed under alias alpha_old, merged
    fig = figs.curves_figure({"alpha": alpha}, "mppi_return", reps=300)
    summary = curves.curve_summary(alpha, "mppi_return", reps=300)
    band = [t for t in fig["data"] if t.get("fill") == "toself"]
    assert len(band) == 1 and band[0]["name"] == "alpha 95% CI"
    n = len(summary.steps)
    ys = np.array(band[0]["y"], dtype=float)
    np.testing.assert_allclose(ys[:n], summary.high)
    np.testing.assert_allclose(ys[n:], summary.low[::-1])
    assert (summary.high >= summary.low).all() and (summary.high > summary.low).any()
    mean = next(t for t in fig["data"] if t["name"] == "alpha (n=5)")
    full = np.array([np.nan if v is None else v for v in mean["y"]], dtype=float)
    # seed 3 is running with 6 of 10 evaluations: the solid mean covers the shared steps, the rest is dashed
    assert np.isfinite(full[:6]).all() and np.isnan(full[6:]).all()
    np.testing.assert_allclose(full[:6], summary.mean[:6])
    assert {s["y0"] for s in fig["layout"]["shapes"]} == {500.0, 600.0}  # G1 threshold and G2 ceiling lines
    # a single seed has no band (bootstrap_band needs two), and nothing at all gives a message, not an error
    one = figs.curves_figure({"alpha": alpha[:1]}, "mppi_return", reps=50)
    assert not [t for t in one["data"] if t.get("fill") == "toself"]
    assert "no evaluations" in figs.curves_figure({}, "mppi_return")["layout"]["annotations"][0]["text"]
    # the figure is plain JSON (what dcc.Graph is sent), NaN turned into gaps
    json.dumps(fig, allow_nan=False)


def test_band_polygon_splits_where_undefined():
    steps = np.array([1.0, 2, 3, 4, 5])
    low = np.array([np.nan, 1, 2, np.nan, 4])
    high = np.array([np.nan, 3, 4, np.nan, 6])
    xs, ys = figs.band_polygon(steps, low, high)
    assert xs == [2.0, 3.0, 3.0, 2.0, None, 5.0, 5.0]
    assert ys == [3.0, 4.0, 2.0, 1.0, None, 6.0, 4.0]
    # defined from the first step, and nowhere
    xs, ys = figs.band_polygon(steps[:3], low[1:4], high[1:4])
    assert (xs, ys) == ([1.0, 2.0, 2.0, 1.0], [3.0, 4.0, 2.0, 1.0])
    assert figs.band_polygon(steps, np.full(5, np.nan), high) == ([], [])


def test_ledger_is_seed_stats_report(generated, capsys):
    """The ledger and seed tables come from seed_stats.py's functions with its command line's defaults."""
    root, phases = generated
    source = dashboard.Source(root, phases_dir=str(phases), ledger_reps=300)
    runs, _ = source.load()
    report = source.ledger_report(runs)
    assert seed_stats.main(["--runs", str(root), "--phases-dir", str(phases), "--format", "json", "--reps", "300"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(seed_stats.render_json(report)) == printed
    ledger = {r["phase"]: r for r in report["ledger"]}
    assert ledger["alpha"]["G1"] and ledger["alpha"]["G2"]  # 5 seeds all >= 500, seed 2 >= 600
    assert not ledger["beta:k64"]["benchmark_fair"] and not ledger["beta:k64"]["G1"]


def test_resolve_inside_refuses_everything_outside(tmp_path):
    root = tmp_path / "runs"
    (root / "a").mkdir(parents=True)
    (root / "a" / "eval.csv").write_text("x\n")
    outside = tmp_path / "secret.txt"
    outside.write_text("secret\n")
    (root / "a" / "leak.txt").symlink_to(outside)
    (root / "a" / "up").symlink_to(tmp_path)
    (root / "a" / "same.csv").symlink_to(root / "a" / "eval.csv")  # a link that stays inside is fine
    assert dashboard.resolve_inside(root, "a/eval.csv") == (200, (root / "a" / "eval.csv").resolve())
    assert dashboard.resolve_inside(root, "a/same.csv")[0] == 200
    for rel in ("../secret.txt", "a/../../secret.txt", "a/leak.txt", "a/up/secret.txt", str(outside), "/etc/passwd"):
        assert dashboard.resolve_inside(root, rel) == (403, None), rel
    for rel in ("a", ".", "", "a/missing.csv", "a/eval.csv\x00"):
        assert dashboard.resolve_inside(root, rel) == (404, None), rel


def test_run_urls_round_trip(generated):
    root, phases = generated
    runs = load_runs(root, phases_dir=phases)
    for run in runs:
        href = dashboard_run.run_href(run, runs)
        assert dashboard_run.find_run(runs, *dashboard_run.parse_run_path(href)) is run
    seed4 = next(r for r in runs if r.seed == 4 and r.label == "alpha")
    assert dashboard_run.run_href(seed4, runs) == "/run/alpha/default/seed4"  # canonical name, folder alpha_old
    assert dashboard_run.parse_run_path("/run/beta/k128/seed2") == ("beta", "k128", 2)
    for other in ("/run/beta/k128", "/run/beta/k128/2", "/run/beta/k128/seedx", "/ledger", "/run/a/b/seed1/c"):
        assert dashboard_run.parse_run_path(other) is None, other


def test_video_gait_lines_and_run_basin(tmp_path):
    """Each video's gait line and the run's basin come from the summary JSONs next to the videos: the basin of the
    latest checkpoint with videos, the most common one among its episodes."""
    import dash

    def text(component) -> str:
        if isinstance(component, (list, tuple)):
            return "".join(text(c) for c in component)
        if isinstance(component, dash.development.base_component.Component):
            return text(getattr(component, "children", None) or "")
        return "" if component is None else str(component)

    folder = tmp_path / "videos"
    summaries = {"a_ep0": video_summary("r", 100_000, basin="knee-walk", gait="knee-walk"),
                 "b_ep0": video_summary("r", 200_000),
                 "b_ep1": video_summary("r", 200_000, hop_k_switches_per_cycle=3.5, hop_distinct_k=4,
                                        hop_k_stable=False, basin="unstable-hop"),
                 "b_ep2": video_summary("r", 200_000)}
    for stem, summary in summaries.items():
        (folder / f"{stem}_summary.json").parent.mkdir(exist_ok=True)
        (folder / f"{stem}_summary.json").write_text(json.dumps(summary))
    videos = [folder / f"{stem}.mp4" for stem in summaries]
    read = [dashboard_run.read_summary(v) for v in videos]
    assert dashboard_run.run_basin(read) == "stable-hop (2 of 3 episodes at env step 200000, the latest with videos)"
    assert dashboard_run.run_basin(read[:2]).startswith("stable-hop (1 of 1 episodes at env step 200000")
    assert dashboard_run.run_basin([None, {"unreadable": "x"}]) is None
    line = text(dashboard_run.video_gait(read[2]))
    assert line == "gait foot-hop | hop K: 3.50 switches/cycle over 14 hop cycles, 4 K (unstable) | basin unstable-hop"
    assert text(dashboard_run.video_gait(video_summary("r", glass=False, hop_k_stable=None, basin="hop"))).startswith(
        "gait foot-hop | hop K: - (Glass off) | basin hop")
    assert text(dashboard_run.video_gait(video_summary("r", gait=None, basin=None))) == "gait: - (hopper only)"
    assert text(dashboard_run.video_gait(None)) == "no summary JSON"
    grid = {"grid": ["x", "y"], "runs": [video_summary("x"), video_summary("y", basin="knee-walk", gait="knee-walk")]}
    assert [text(c).split(" |")[0] for c in dashboard_run.video_gait(grid)] == ["x: gait foot-hop", "y: gait knee-walk"]

    # the generated summary uses the keys a real hopper episode's summary has
    from tdmpc_glass.video.rollout import Episode

    T = 6
    episode = Episode(task="hopper-hop", glass=True, num_clusters=8, action_repeat=2, control_dt=0.02, episode_seed=0,
                      policy="mppi", obs=np.zeros((T, 15)), latents=np.zeros((T, 4)), actions=np.zeros((T, 4)),
                      rewards=np.zeros(T, np.float32), k=np.zeros(T, np.int32), n_star=np.zeros(T, np.int32),
                      touch=np.zeros((T, 2), np.float32), height=np.ones(T), stand_height=0.6, speed=np.zeros(T),
                      physics=np.zeros((2 * T, 14)), knee_height=np.full(T, 0.36), torso_height=np.ones(T),
                      torso_up=np.ones(T))
    real = set(episode.summary()) | {"run", "checkpoint", "checkpoint_env_step", "task"}
    assert set(video_summary("r")) <= real, set(video_summary("r")) - real


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys):
    assert dashboard.main(["--runs", str(tmp_path / "nowhere"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: runs root {tmp_path / 'nowhere'} does not exist")
    (tmp_path / "afile").write_text("")
    assert dashboard.main(["--runs", str(tmp_path / "afile"), "--port", "0"]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert dashboard.parse_args([]).host == "127.0.0.1" and dashboard.parse_args([]).port == 5055
    # the script itself, with its port taken: one line (not werkzeug's own message), exit code 2
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = run_cli("--runs", str(tmp_path), "--port", str(port))
    assert result.returncode == 2
    assert result.stderr == f"error: port {port} on 127.0.0.1 is already in use (choose another with --port)\n"


# ---- end to end in chromium ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The dashboard running as a subprocess against a generated runs root; {url, root, touched, before}."""
    base = tmp_path_factory.mktemp("dashboard")
    root, phases = make_runs_root(base)
    before = snapshot(root)
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--runs", str(root), "--phases-dir", str(phases),
                             "--port", "0", "--poll-ms", str(POLL_MS), "--reps", "200"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={k: v for k, v in os.environ.items() if k != RUNS_ENV})
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("dashboard: http://127.0.0.1:"):  # binds 127.0.0.1 by default
            proc.kill()
            pytest.fail(f"dashboard did not start: {line!r} {proc.stderr.read()[-2000:]}")
        url = line.split()[1].rstrip("/")
        yield {"url": url, "root": root, "touched": set(), "before": before, "proc": proc}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver; .ci/run does)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra)")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1500,1400", "--mute-audio"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(15)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(check, what: str, timeout: float = 15.0):
    """Poll check() until it returns something truthy; fail naming `what` after timeout seconds."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as e:  # noqa: BLE001 - the page is still rendering
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})")


GRAPH_DATA = """
const g = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
if (!g || !g.data) return null;
return g.data.map(t => ({name: t.name || '', fill: t.fill || null, x: Array.from(t.x || []),
                         y: Array.from(t.y || [])}));
"""


def goto(driver, live, path: str) -> None:
    """Open a dashboard page: a full load the first time, then the way dcc.Link navigates (no reload)."""
    if driver.current_url.startswith(live["url"]) and driver.execute_script("return !!document.getElementById('page')"):
        driver.execute_script("window.history.pushState({}, '', arguments[0]);"
                              "window.dispatchEvent(new CustomEvent('_dashprivate_pushstate'));", path)
    else:
        driver.get(live["url"] + path)


def page_text(driver) -> str:
    return driver.execute_script("return document.body.innerText")


def test_overview_lists_phases_and_draws_ci_bands(browser, live):
    goto(browser, live, "/")
    wait_for(lambda: "beta:k128" in page_text(browser), "the phase picker")
    text = page_text(browser)
    for expected in ("alpha", "beta:k64", "beta:k128", "Glass with the log's defaults",
                     "merged from folder alpha_old", "variants of beta: k64, k128", "unfair"):
        assert expected in text, expected
    labels = browser.execute_script(
        "return Array.from(document.querySelectorAll('#phase-picker input')).map(i => i.value)")
    assert labels == ["alpha", "beta:k64", "beta:k128"]  # alpha_old merged into alpha, not a phase of its own
    for graph in ("graph-mppi", "graph-pi"):
        data = wait_for(lambda: browser.execute_script(GRAPH_DATA, graph), f"{graph}'s figure")
        data = wait_for(lambda: [t for t in browser.execute_script(GRAPH_DATA, graph)
                                 if t["fill"] in ("toself", "tonexty")], f"a CI band in {graph}")
        assert {t["name"] for t in data} == {"alpha 95% CI", "beta:k64 95% CI", "beta:k128 95% CI"}
    # a file outside the runs root, asked for by the page itself, is refused (more paths in the test below)
    status = browser.execute_async_script("const done = arguments[arguments.length - 1];"
                                          "fetch('/files/..%2f..%2f..%2fetc%2fpasswd').then(r => done(r.status));")
    assert status == 403
    names = {t["name"] for t in browser.execute_script(GRAPH_DATA, "graph-mppi")}
    assert {"alpha (n=5)", "beta:k64 (n=2)", "alpha s1", "alpha s4"} <= names
    # seeds are toggleable: unticking s4 drops its line and the mean is over four seeds
    browser.execute_script("Array.from(document.querySelectorAll('#seed-picker input'))"
                           ".find(i => i.value === '4').click()")
    wait_for(lambda: "alpha (n=4)" in {t["name"] for t in browser.execute_script(GRAPH_DATA, "graph-mppi")},
             "the mean over four seeds after unticking s4")
    assert "alpha s4" not in {t["name"] for t in browser.execute_script(GRAPH_DATA, "graph-mppi")}
    browser.execute_script("Array.from(document.querySelectorAll('#seed-picker input'))"
                           ".find(i => i.value === '4').click()")
    wait_for(lambda: "alpha (n=5)" in {t["name"] for t in browser.execute_script(GRAPH_DATA, "graph-mppi")},
             "seed 4 back")


def test_row_appended_while_open_appears_after_polling(browser, live):
    goto(browser, live, "/")
    wait_for(lambda: browser.execute_script(GRAPH_DATA, "graph-mppi"), "the MPPI figure")

    def seed3():
        return next((t for t in browser.execute_script(GRAPH_DATA, "graph-mppi") if t["name"] == "alpha s3"), None)

    assert APPENDED_SCORE not in wait_for(seed3, "seed 3's line")["y"]
    path = live["root"] / "alpha" / "default" / "seed3" / EVAL
    live["touched"].add(str(path))
    with open(path, "a", newline="") as f:  # seed 3 (running) logs its 7th evaluation
        csv.writer(f).writerow([350_000, 175_000, APPENDED_SCORE, 20.0, 600.0, 25.0, 10, 210.0])
    line = wait_for(lambda: (t := seed3()) and APPENDED_SCORE in t["y"] and t, "the appended row on the page")
    assert line["x"][line["y"].index(APPENDED_SCORE)] == 350_000
    assert "777.7" in wait_for(lambda: (t := page_text(browser)) and "777.7" in t and t, "the runs table update")

    # a writer cut mid-row, then a new run of a new seed: the page keeps working and shows the new run
    with open(path, "a") as f:
        f.write("400000,200000,12")
    new_run = live["root"] / "alpha" / "default" / "seed6"
    new_run.mkdir()
    live["touched"].update({str(new_run), str(new_run / EVAL)})
    with open(new_run / EVAL, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(EVAL_HEADER)
        w.writerow([50_000, 25_000, 510.0, 5.0, 490.0, 5.0, 10, 30.0])  # a hit: alpha keeps G1
    wait_for(lambda: "alpha (n=6)" in {t["name"] for t in browser.execute_script(GRAPH_DATA, "graph-mppi")},
             "the new seed in the mean")
    assert "alpha s6" in page_text(browser) and "unavailable" not in page_text(browser)


def test_run_page_shows_diagnostics_events_and_plays_its_video(browser, live):
    goto(browser, live, "/run/alpha/default/seed1")
    wait_for(lambda: "nonfinite" in page_text(browser), "the events table")
    text = page_text(browser)
    for expected in ("alpha seed 1", "done", "term=loss_se", "resume", "interrupted", "hopper-hop", "env steps/s"):
        assert expected in text, expected
    assert browser.execute_script("return document.getElementById('kv-provenance').innerText") == (
        "1 process life; last: 1 x NVIDIA H100, jax 0.10.2, python 3.12.3, mujoco 3.17.0, commit 0123456789 "
        "(dirty), XLA_FLAGS --xla_gpu_deterministic_ops=true, deterministic ops on, allocator tcmalloc")
    for graph, names in (("run-glass", {"se", "active_prototypes", "active_clusters", "k_switch_rate"}),
                         ("run-throughput", {"env_steps_per_s", "updates_per_s"}),
                         ("run-eval", {"MPPI score (mppi_return)", "pi score (pi_return)"})):
        wait_for(lambda: names <= {t["name"] for t in browser.execute_script(GRAPH_DATA, graph) or []}, graph)
    src = wait_for(lambda: browser.execute_script("const v = document.querySelector('video.run-video');"
                                                  "return v && v.getAttribute('src')"), "the video element")
    assert src == "/files/alpha/default/seed1/videos/eval_step_500000.mp4"
    state = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const v = document.querySelector('video.run-video');
        v.muted = true;
        const report = () => done({ready: v.readyState, time: v.currentTime, error: v.error && v.error.code,
                                   duration: v.duration});
        v.play().then(() => setTimeout(report, 1200)).catch(e => done({failed: String(e), ready: v.readyState,
                                                                          error: v.error && v.error.code}));
    """)
    assert state.get("ready", 0) >= 2 and state.get("time", 0) > 0, state  # decoded and playing (H.264 mp4)
    # next to the video: its episode's gait, K stability during hops and basin (from its summary JSON), and the
    # run's basin above the videos
    gait = wait_for(lambda: browser.execute_script("const e = document.querySelector('.videos .video-gait');"
                                                   "return e && e.innerText"), "the video's gait line")
    assert gait == "gait foot-hop | hop K: 0.00 switches/cycle over 14 hop cycles, 1 K (stable) | basin stable-hop"
    basin = browser.execute_script("return document.getElementById('run-basin').innerText")
    assert basin == "run basin: stable-hop (1 of 1 episodes at env step 500000, the latest with videos)"
    # a running run shows its ETA from env_steps_per_s
    goto(browser, live, "/run/alpha/default/seed3")
    wait_for(lambda: browser.execute_script("const e = document.getElementById('kv-folder');"
                                            "return e && e.innerText") == "alpha/default/seed3", "seed 3's status")
    eta = browser.execute_script("return document.getElementById('kv-ETA').innerText")
    assert eta == "46m 40s"  # status.json: (1M - 300k env steps) / 250 env steps/s
    assert "running" in browser.execute_script("return document.getElementById('run-status').innerText")


def test_files_outside_the_runs_root_are_refused(live):
    host, port = live["url"].removeprefix("http://").split(":")
    seed1 = live["root"] / "alpha" / "default" / "seed1"
    (seed1 / "leak").symlink_to("/etc/passwd")
    (seed1 / "etc").symlink_to("/etc", target_is_directory=True)
    live["touched"].update({str(seed1 / "leak"), str(seed1 / "etc")})

    def get(path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request("GET", path)  # sent as written: no client-side normalisation of ..
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    assert get("/files/alpha/default/seed1/eval.csv")[0] == 200
    for path in ("/files/../../etc/passwd", "/files/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                 "/files/..%2f..%2f..%2f..%2fetc%2fpasswd", "/files/%2E%2E%2F%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
                 "/files/alpha/../../../../etc/passwd", "/files/alpha/default/seed1/leak",
                 "/files/alpha/default/seed1/etc/passwd", "/files/%2Fetc%2Fpasswd", "/files//etc/passwd",
                 "/files/alpha/default/seed1/etc/../../../../../etc/passwd"):
        status, body = get(path)
        assert status == 403, (path, status)
        assert b"root:" not in body
    for path in ("/files", "/files/", "/files/alpha", "/files/alpha/default/seed1/",
                 "/files/alpha/default/seed1/nope.csv"):
        status, body = get(path)
        assert status == 404, (path, status)  # no folder listings
        assert b"seed1" not in body and b"eval.csv" not in body


def test_ledger_page_has_g1_g2_badges(browser, live):
    goto(browser, live, "/ledger")
    wait_for(lambda: browser.execute_script("return document.querySelector('#ledger-tbl')"), "the ledger table")
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('#ledger-tbl tbody tr')).map(r => Array.from(r.cells)"
        ".map(c => c.innerText.trim()))")
    by_phase = {r[0]: r for r in rows}
    assert set(by_phase) == {"alpha", "beta:k64", "beta:k128"}
    assert by_phase["alpha"][5:7] == ["G1", "G2"]  # 6 seeds (one added by a test above), all >= 500; s2 >= 600
    # unfair: never G1; G2 counts any phase (no beta:k64 seed reaches 600)
    assert by_phase["beta:k64"][5:7] == ["excl.", "no"] and by_phase["beta:k64"][1] == "unfair"
    assert browser.execute_script("return document.querySelectorAll('#ledger-tbl .b-g').length") == 2
    text = page_text(browser)
    assert "Per-seed statistics" in text and "Per-phase best MPPI by seed" in text


def test_stays_up_when_a_run_folder_disappears(browser, live):
    gone = live["root"] / "beta" / "k128" / "seed2"
    goto(browser, live, "/run/beta/k128/seed2")
    wait_for(lambda: "failed" in page_text(browser), "the failed run's page")
    live["touched"].update(str(p) for p in [gone, *gone.rglob("*")])
    shutil.rmtree(gone)
    wait_for(lambda: "unavailable: no run beta/k128/seed2" in page_text(browser), "the run page saying unavailable")
    goto(browser, live, "/")
    wait_for(lambda: "beta:k128 s1" in page_text(browser), "the overview")
    wait_for(lambda: "beta:k128 (n=1)" in {t["name"] for t in browser.execute_script(GRAPH_DATA, "graph-mppi")},
             "the curve without the removed seed")
    assert "beta:k128 s2" not in page_text(browser)
    assert live["proc"].poll() is None  # the server is still up


def test_nothing_written_into_the_runs_root(live):
    after = snapshot(live["root"])
    touched = live["touched"]
    changed = {p for p in set(live["before"]) | set(after)
               if live["before"].get(p) != after.get(p) and p not in touched}
    assert not changed, sorted(changed)
