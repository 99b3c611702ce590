"""K-labelled videos: the CLI on tiny runs (fresh checkpoints in the fast suite, a trained one in the slow
test at the end), the K labels, the overlay, grids, Glass-off runs, checkpoint choice and errors, and the
training hook. Rendering is headless (egl or osmesa; .ci/run installs the GL packages). Episodes are 20
agent steps (the tiny config) or capped with --max-steps."""
import csv
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import jax
import numpy as np
import pytest
import yaml

from train_script import tiny_config

from tdmpc_glass import agent, checkpoint
from tdmpc_glass import glass as glass_lib
from tdmpc_glass.acting import jit_act
from tdmpc_glass.config import derive, to_dict
from tdmpc_glass.envs.dmc import load as load_env
from tdmpc_glass.envs.dmc import task_spec
from tdmpc_glass.planner import PlanSettings
from tdmpc_glass.resume import config_fingerprint
from tdmpc_glass.runlayout import CHECKPOINTS, CONFIG, EVAL, VIDEOS
from tdmpc_glass.train import train
from tdmpc_glass.video import frames, gl
from tdmpc_glass.video.recorder import EvalVideoRecorder
from tdmpc_glass.video import rollout
from tdmpc_glass.video.recorder import CSV_COLUMNS
from tdmpc_glass.video.rollout import Episode, RunError, load_run, run_label, select_checkpoint, stack_states

CLI = Path(__file__).resolve().parents[1] / "videos" / "render.py"


def cli(*args, timeout=900):
    """`python videos/render.py ARGS` as a user runs it (the package is installed in the interpreter)."""
    return subprocess.run([sys.executable, str(CLI), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def read_video(path):
    reader = imageio.get_reader(str(path))
    try:
        return np.stack([f for f in reader])
    finally:
        reader.close()


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_run(run_dir: Path, cfg, seed: int, steps=(80,)):
    """A run directory without training: config.yaml and checkpoints of a fresh state (as the launcher and the
    trainer write them)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"phase": {"name": "t", "variant": "default"}, "seed": seed, "config": to_dict(cfg)}
    (run_dir / CONFIG).write_text(yaml.safe_dump(record, sort_keys=False))
    obs_dim, act_dim = task_spec(cfg.task)
    leaves = jax.tree.leaves(jax.device_get(agent.init_state(cfg, obs_dim, act_dim, seed)))
    for step in steps:
        meta = {"seed": seed, "env_step": step, "counters": {}, "fingerprint": config_fingerprint(cfg)}
        checkpoint.save(run_dir / CHECKPOINTS, step, leaves, meta)
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two seeds of the tiny hopper config with Glass on, checkpoints at env steps 80 and 160 (fresh states:
    no training needed to test the machinery; test_trained_run_end_to_end below uses a trained one)."""
    root = tmp_path_factory.mktemp("runs") / "tiny" / "default"
    cfg = tiny_config()
    cfg.glass.enabled = True
    return [write_run(root / f"seed{seed}", cfg, seed, steps=(80, 160)) for seed in (1, 2)]


@pytest.mark.slow
def test_eval_recorder_writes_a_video_per_active_seed(tmp_path):
    """The trainer's hook with the trainer's act (acting.jit_act): one MPPI episode per seed, written only for
    the active seeds (train() calling it at every evaluation is checked by the slow test at the end)."""
    cfg = tiny_config(eval_episodes=1, video_at_eval=True)
    cfg.glass.enabled = True
    obs_dim, act_dim = task_spec(cfg.task)
    states = stack_states([agent.init_state(cfg, obs_dim, act_dim, seed) for seed in (1, 2)])
    act = jit_act(PlanSettings.from_config(cfg.planner, cfg.horizon, derive(cfg).discount))
    run_dirs = [tmp_path / "tiny" / "default" / f"seed{seed}" for seed in (1, 2)]
    recorder = EvalVideoRecorder(cfg, obs_dim, act_dim, act=act)
    try:
        written = recorder.record(states, run_dirs, [run_label(d) for d in run_dirs], [True, False], env_step=0)
    finally:
        recorder.close()
    stem = run_dirs[0] / VIDEOS / "eval_step0000000000_mppi"
    assert written == [stem.with_suffix(".mp4")] and not run_dirs[1].exists()
    assert read_video(stem.with_suffix(".mp4")).shape == (40, 240, 320, 3)  # 20 agent steps, 2 frames each
    rows = read_csv(stem.with_suffix(".csv"))
    assert len(rows) == 20 and all(r["K"] != "" for r in rows)
    summary = json.loads(Path(f"{stem}_summary.json").read_text())
    assert summary["checkpoint_env_step"] == 0 and summary["fps"] == 50.0 and summary["policy"] == "mppi"
    assert summary["run"] == "tiny/default/seed1"
    assert Path(f"{stem}_timeline.png").is_file()


def test_video_frames_and_k_labels(runs, tmp_path):
    out = tmp_path / "v"
    r = cli("--run", runs[0], "--max-steps", 12, "--out", out)
    assert r.returncode == 0, r.stderr
    stem = out / "step160_mppi_seed0_ep0"
    assert read_video(stem.with_suffix(".mp4")).shape == (24, 360, 480, 3)  # 12 agent steps x 2 frames, 480x360
    meta = imageio.get_reader(str(stem.with_suffix(".mp4"))).get_meta_data()
    assert meta["fps"] == 50.0 and meta["codec"] == "h264"
    rows = read_csv(stem.with_suffix(".csv"))
    assert [int(r["step"]) for r in rows] == list(range(12))
    assert set(rows[0]) >= {"step", "K", "n_star", "reward", "touch", "standing", "speed"}

    # K in the CSV is glass.k_label recomputed from the rollout's latents, which are the encoder's latents of
    # the observations, with the checkpoint's prototypes and cluster matrix
    data = np.load(f"{stem}_latents.npz")
    run = load_run(runs[0], "latest")
    world = run.state.world
    mu, S = world.glass.mu, glass_lib.cluster_matrix(world.glass.assign_logits)
    np.testing.assert_allclose(np.asarray(jax.vmap(world.encode)(data["obs"])), data["latents"], atol=1e-5)
    assert [int(r["K"]) for r in rows] == np.asarray(glass_lib.k_label(data["latents"], mu, S)).tolist()
    assert [int(r["n_star"]) for r in rows] == np.asarray(glass_lib.nearest_anchor(data["latents"], mu)).tolist()
    returns = np.cumsum([float(r["reward"]) for r in rows])
    np.testing.assert_allclose([float(r["return"]) for r in rows], returns, rtol=1e-4, atol=1e-6)

    summary = json.loads(Path(f"{stem}_summary.json").read_text())
    k = np.array([int(r["K"]) for r in rows])
    assert summary["switches"] == int(np.sum(k[1:] != k[:-1]))
    assert summary["clusters_used"] == sorted(set(k.tolist()))
    assert summary["frames"] == 24 and summary["size"] == [480, 360]
    assert Path(f"{stem}_timeline.png").stat().st_size > 0

    # the hopper's gait columns: the knee and torso measures of each row's own physics state (the state before
    # that row's first control step, saved in the latents file), and the posture / hop frames they give
    assert list(rows[0]) == CSV_COLUMNS
    env = load_env("hopper-hop")
    body, nq = rollout.HopperBody(env.physics), env.physics.model.nq
    for t, row in enumerate(rows):
        state = data["physics"][t * 2]  # action repeat 2
        with env.physics.reset_context():
            env.physics.data.qpos[:], env.physics.data.qvel[:] = state[:nq], state[nq:]
        knee, torso, up = body(env.physics)
        assert (float(row["knee_height"]), float(row["torso_height"]), float(row["torso_up"])) == pytest.approx(
            (knee, torso, up), abs=1e-4)
    touch = np.array([int(r["touch"]) for r in rows], bool)
    posture = rollout.postures([float(r["knee_height"]) for r in rows], [float(r["torso_up"]) for r in rows], touch)
    assert [r["gait"] for r in rows] == posture.tolist() and set(posture) <= set(rollout.POSTURES)
    assert [int(r["hop"]) for r in rows] == rollout.hop_frames(posture)[0].astype(int).tolist()
    for key in ("gait", "gait_fractions", "drop_steps", "hop_steps", "hop_cycles_in_hops", "hop_k_switches",
                "hop_k_switches_per_cycle", "hop_distinct_k", "hop_k_stable", "basin", "gait_thresholds"):
        assert key in summary, key
    assert summary["gait"] in rollout.GAITS and summary["basin"] in rollout.BASINS
    assert summary["gait_thresholds"]["knee_down_height_m"] == 0.2
    assert summary["drop_steps"] == posture.tolist().count("drop")
    assert {"posture", "hop_frames", "hop_k_stability", "basin"} <= set(summary["definitions"])


def test_overlay_changes_pixels_in_its_region(runs, tmp_path):
    args = ("--run", runs[0], "--max-steps", 3, "--policy", "pi", "--height", 120, "--width", 160)
    on, off = cli(*args, "--out", tmp_path / "on"), cli(*args, "--out", tmp_path / "off", "--no-overlay")
    assert on.returncode == 0 and off.returncode == 0, on.stderr + off.stderr
    a = read_video(tmp_path / "on" / "step160_pi_seed0_ep0.mp4").astype(float)
    b = read_video(tmp_path / "off" / "step160_pi_seed0_ep0.mp4").astype(float)
    assert a.shape == b.shape == (6, 120, 160, 3)
    x0, y0, x1, y1 = frames.overlay_box(120, 160)
    diff = np.abs(a - b)
    assert diff[:, y0:y1, x0:x1].mean() > 5  # the K box
    assert diff[:, 60:100, 130:].mean() < 2  # the right of the frame, away from the box and the footer

    # the library function alone: only the box and the footer change, and K's colour differs by cluster
    frame = np.full((120, 160, 3), 90, np.uint8)
    text = frames.FrameText(glass=True, k=2, n_star=5, step=3, env_step=6, ret=1.5, reward=0.5, contact="toe")
    drawn = frames.draw_overlay(frame, text)
    changed = np.abs(drawn.astype(int) - frame).sum(-1) > 0
    assert changed[y0:y1, x0:x1].any() and not changed[:, x1:].any() and not changed[y1:].any()
    other = frames.draw_overlay(frame, dataclasses.replace(text, k=3))
    assert not np.array_equal(drawn, other)


def test_grid_tiles_runs_side_by_side_from_one_episode_seed(runs, tmp_path):
    r = cli("--grid", *runs, "--max-steps", 4, "--policy", "pi", "--height", 100, "--width", 140,
            "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    assert read_video(tmp_path / "grid_pi_seed0_ep0.mp4").shape == (8, 100, 280, 3)
    summary = json.loads((tmp_path / "grid_pi_seed0_ep0_summary.json").read_text())
    assert [Path(s["run"]).name for s in summary["runs"]] == ["seed1", "seed2"]
    first = [np.load(tmp_path / f"grid_pi_seed0_ep0_{'tiny_default_' + d.name}_latents.npz")["obs"][0]
             for d in runs]
    np.testing.assert_array_equal(first[0], first[1])  # the same reset state for every run


def test_missing_or_incompatible_checkpoint_is_one_line(runs, tmp_path):
    def one_error_line(result, *needles):
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        for needle in needles:
            assert needle in lines[0]

    one_error_line(cli("--run", runs[0], "--checkpoint", 999), "no checkpoint at env step 999",
                   "available: 80, 160")
    one_error_line(cli("--run", tmp_path / "nope"), "no such run directory")
    broken = tmp_path / "broken"
    shutil.copytree(runs[0], broken)
    record = yaml.safe_load((broken / CONFIG).read_text())
    record["config"]["model"]["latent_dim"] = 24
    (broken / CONFIG).write_text(yaml.safe_dump(record, sort_keys=False))
    one_error_line(cli("--run", broken), "incompatible checkpoint")
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(runs[0] / CONFIG, empty / CONFIG)
    one_error_line(cli("--run", empty), "no checkpoints")


def test_glass_off_run_renders_without_k(tmp_path):
    cfg = tiny_config()
    cfg.task = "cartpole-swingup"
    run = write_run(tmp_path / "off" / "default" / "seed1", cfg, seed=1)
    r = cli("--run", run, "--max-steps", 4, "--policy", "pi", "--height", 96, "--width", 128)
    assert r.returncode == 0, r.stderr
    assert "Glass is off" in r.stderr
    stem = run / VIDEOS / "step80_pi_seed0_ep0"
    assert read_video(stem.with_suffix(".mp4")).shape == (4, 96, 128, 3)  # cartpole: 1 frame per agent step
    rows = read_csv(stem.with_suffix(".csv"))
    assert len(rows) == 4 and all(r["K"] == "" and r["n_star"] == "" and r["touch"] == "" for r in rows)
    assert all(r[c] == "" for r in rows for c in ("knee_height", "torso_height", "torso_up", "gait", "hop"))
    summary = json.loads(Path(f"{stem}_summary.json").read_text())
    assert summary["glass"] is False and summary["distinct_k"] is None and "Glass is off" in summary["timeline_skipped"]
    assert summary["gait"] is None and summary["basin"] is None and summary["hop_k_stable"] is None
    assert not Path(f"{stem}_timeline.png").exists()


def test_best_and_numbered_checkpoint_choice(tmp_path):
    ckpts = tmp_path / CHECKPOINTS
    ckpts.mkdir()
    for step in (60, 100):
        checkpoint.path_for(ckpts, step).write_bytes(b"")
    with pytest.raises(RunError, match="no MPPI rows"):
        select_checkpoint(tmp_path, "best")
    (tmp_path / EVAL).write_text("env_step,mppi_return\n0,1\n40,9\n80,3\n100,2\n")
    path, step, note = select_checkpoint(tmp_path, "best")
    assert step == 60 and "best MPPI eval 9.0 at env step 40" in note and "at or after" in note
    (tmp_path / EVAL).write_text("env_step,mppi_return\n0,1\n120,9\n")
    assert select_checkpoint(tmp_path, "best")[1] == 100  # nothing kept at or after: the closest before
    assert select_checkpoint(tmp_path, "latest")[1] == 100
    assert select_checkpoint(tmp_path, "60")[0] == checkpoint.path_for(ckpts, 60)
    with pytest.raises(RunError, match="no checkpoint at env step 50; available: 60, 100"):
        select_checkpoint(tmp_path, 50)


def test_summary_numbers():
    k = np.array([1, 1, 1, 2, 2, 1, 1, 1, 1, 3], np.int32)
    touch = np.zeros((10, 2), np.float32)
    touch[[2, 3, 6, 7], 0] = 2.0  # contact at 2-3 and 6-7: two flight -> contact transitions
    ep = Episode(task="hopper-hop", glass=True, num_clusters=8, action_repeat=2, control_dt=0.02, episode_seed=0,
                 policy="mppi", obs=np.zeros((10, 15)), latents=np.zeros((10, 4)), actions=np.zeros((10, 4)),
                 rewards=np.ones(10, np.float32), k=k, n_star=k, touch=touch, height=np.linspace(0, 1, 10),
                 stand_height=0.6, speed=np.zeros(10), physics=np.zeros((20, 14)))
    s = ep.summary()
    assert s["switches"] == 3 and s["hop_cycles"] == 2 and s["switches_per_hop_cycle"] == 1.5
    assert (s["longest_stable_steps"], s["longest_stable_k"], s["longest_stable_start"]) == (4, 1, 5)
    assert s["clusters_used"] == [1, 2, 3] and s["distinct_k"] == 3 and s["return"] == 10.0
    assert [r["touch"] for r in ep.rows()] == [0, 0, 1, 1, 0, 0, 1, 1, 0, 0]
    fps, stride, rows = ep.frame_plan()  # hopper: 0.02 s control steps, 2 frames per agent step at 50 fps
    assert (fps, stride, rows.tolist()) == (50.0, 1, np.repeat(np.arange(10), 2).tolist())


# ---- hopper gait: postures from posed physics, gait and basin, K stability during hops -------------------------
POSES = {  # qpos of dm_control's hopper (suite/hopper.xml); qpos 0 is the straight body, torso origin 1 m up
    "foot": {"rootz": -0.061},  # straight leg, the foot resting on the floor (foot capsule radius 0.04)
    "flight": {"rootz": 0.2},  # the same, 0.26 m up
    "crouch": {"rootz": -0.2, "hip": -np.pi / 6, "knee": np.pi / 3, "ankle": -np.pi / 6},  # a hop's push-off
    "knee": {"rootz": -0.385, "knee": np.pi / 2},  # kneeling: vertical thigh, calf flat behind, foot down
    "fallen": {"rooty": np.pi / 2, "rootz": -0.87},  # lying on its back
}


@pytest.fixture(scope="module")
def posed():
    """{pose: (knee height, torso height, torso up, touch (2,), task height)} read from the posed physics."""
    env = load_env("hopper-hop")
    physics, body, out = env.physics, rollout.HopperBody(env.physics), {}
    for name, qpos in POSES.items():
        with physics.reset_context():
            physics.data.qpos[:] = 0
            physics.data.qvel[:] = 0
            for joint, value in qpos.items():
                physics.named.data.qpos[joint] = value
        out[name] = (*body(physics), np.asarray(physics.touch(), np.float32), float(physics.height()))
    return out


def hopper_episode(posed, sequence, k=None) -> Episode:
    """An Episode whose row t has the body measures and touch of the pose sequence[t] (K optional)."""
    T = len(sequence)
    pick = [posed[name] for name in sequence]
    k = None if k is None else np.asarray(k, np.int32)
    return Episode(task="hopper-hop", glass=k is not None, num_clusters=8 if k is not None else 0, action_repeat=2,
                   control_dt=0.02, episode_seed=0, policy="mppi", obs=np.zeros((T, 15)),
                   latents=np.zeros((T, 4)), actions=np.zeros((T, 4)), rewards=np.zeros(T, np.float32), k=k,
                   n_star=k, touch=np.stack([p[3] for p in pick]), height=np.array([p[4] for p in pick]),
                   stand_height=0.6, speed=np.zeros(T), physics=np.zeros((2 * T, 14)),
                   knee_height=np.array([p[0] for p in pick]), torso_height=np.array([p[1] for p in pick]),
                   torso_up=np.array([p[2] for p in pick]))


def test_hopper_body_heights_behind_the_thresholds(posed):
    """The numbers the README and the summary quote: knee 0.36 m over a grounded straight leg and 0.03-0.04 m on
    the floor, 0.2 m their midpoint; kneeling upright is `standing` by the task's own 0.6 m measure."""
    knee_up, knee_down = posed["foot"][0], posed["knee"][0]
    assert knee_up == pytest.approx(0.36, abs=0.005) and 0.03 <= knee_down <= 0.04
    assert rollout.KNEE_DOWN_HEIGHT == pytest.approx((0.36 + 0.04) / 2)
    assert posed["knee"][4] == pytest.approx(0.70, abs=0.01) and posed["knee"][4] >= 0.6
    assert posed["foot"][1] == pytest.approx(1.0, abs=0.03) and posed["fallen"][1] < 0.2
    assert posed["crouch"][0] > rollout.KNEE_DOWN_HEIGHT  # a push-off crouch keeps the knee up
    assert posed["fallen"][2] < rollout.UPRIGHT_COS <= posed["knee"][2]
    contact = {name: bool((p[3] > glass_lib.CONTACT_THRESHOLD).any()) for name, p in posed.items()}
    assert contact == {"foot": True, "flight": False, "crouch": True, "knee": True, "fallen": True}
    ep = hopper_episode(posed, ["foot", "flight", "crouch", "knee", "fallen"])
    assert ep.posture.tolist() == ["foot", "flight", "foot", "knee", "fallen"]


def test_gait_and_basin_of_posed_episodes(posed):
    drop = ["flight"] * 3
    hop = drop + (["crouch", "foot", "flight", "flight", "flight"] * 6) + ["foot"]
    ep = hopper_episode(posed, hop, k=[0] * 3 + [4] * (len(hop) - 3))
    s = ep.summary()
    assert ep.posture[:3].tolist() == ["drop"] * 3 and s["drop_steps"] == 3
    assert (s["gait"], s["hop_cycles_in_hops"], s["hop_k_switches"], s["hop_k_stable"], s["basin"]) == \
        ("foot-hop", 5, 0, True, "stable-hop")
    assert s["switches"] == 1  # the drop's K=0 -> 4 is a switch of the episode, not of the hops
    # the first touchdown ends the drop; hop frames run from the first landing after a flight (row 8) to the last
    assert [r["hop"] for r in ep.rows()] == [0] * 8 + [1] * (len(hop) - 8)
    assert hopper_episode(posed, hop).summary()["basin"] == "hop"  # Glass off: no K, no stability verdict

    knee_walk = drop + ["knee", "knee", "knee", "crouch", "flight", "foot"] * 6  # knee-thrusts never close a hop
    s = hopper_episode(posed, knee_walk, k=[1, 5] * (len(knee_walk) // 2)).summary()
    assert (s["gait"], s["hop_steps"], s["hop_k_switches"], s["basin"]) == ("knee-walk", 0, None, "knee-walk")
    assert s["gait_fractions"]["knee-walk"] == pytest.approx(0.5)

    s = hopper_episode(posed, ["foot"] * 30).summary()
    assert (s["gait"], s["basin"], s["drop_steps"]) == ("stand", "stand", 0)
    s = hopper_episode(posed, drop + ["foot"] * 4 + ["fallen"] * 20 + ["knee"] * 3).summary()
    assert (s["gait"], s["basin"]) == ("fallen", "fallen-stuck")
    s = hopper_episode(posed, ["flight"] * 5).summary()  # nothing but the drop: no gait
    assert s["gait"] is None and s["basin"] is None and s["gait_fractions"]["foot-hop"] is None


def test_k_stability_counts_switches_during_hops_only(posed):
    """A hop bout, a fall with getting up, another bout: the K flicker of the fall recovery is excluded."""
    bout = ["foot", "flight", "flight", "foot", "flight", "flight", "foot", "flight", "flight", "foot"]  # 3 cycles
    recovery = ["fallen"] * 4 + ["knee"] * 3 + ["foot", "foot", "flight"]  # falls, kneels, stands up
    seq = ["flight"] * 2 + bout + recovery + bout
    k = [0, 0] + [2] * len(bout) + [5, 6, 5, 7, 6, 7, 5, 1, 3, 1] + [2] * len(bout)
    ep = hopper_episode(posed, seq, k=k)
    s = ep.summary()
    # bout 1 starts at the drop's touchdown: hop frames from its first landing (row 5) to row 11, 2 cycles; the
    # recovery's flight lands on bout 2's first row: rows 22-31, 3 cycles
    assert s["hop_cycles_in_hops"] == 5 and s["hop_steps"] == 7 + 10
    hop = np.array([r["hop"] for r in ep.rows()], bool)
    assert not hop[12:22].any()  # the fall and the getting up are not hop frames
    assert s["switches"] == 12 and s["hop_k_switches"] == 0  # every switch of the episode is in the recovery
    assert (s["hop_distinct_k"], s["hop_dominant_k"], s["hop_dominant_k_fraction"]) == (1, 2, 1.0)
    assert s["hop_k_stable"] is True and s["basin"] == "stable-hop"

    # inside the hops: a push-off / takeoff pair (Phase-f s1: two switches per cycle) is still stable ...
    pair = [2, 3, 3, 2, 3, 3, 2, 3, 3, 2]
    s = hopper_episode(posed, seq, k=[0, 0] + pair + k[12:22] + pair).summary()
    assert (s["hop_k_switches_per_cycle"], s["hop_distinct_k"], s["hop_k_stable"]) == (2.0, 2, True)
    # ... a third cluster during hops, or more than two switches per cycle, is not
    three = [2, 3, 4, 2, 3, 4, 2, 3, 4, 2]
    s = hopper_episode(posed, seq, k=[0, 0] + three + k[12:22] + three).summary()
    assert s["hop_distinct_k"] == 3 and s["hop_k_stable"] is False and s["basin"] == "unstable-hop"
    flicker = [2, 3, 2, 3, 2, 3, 2, 3, 2, 3]
    s = hopper_episode(posed, seq, k=[0, 0] + flicker + k[12:22] + flicker).summary()
    assert s["hop_k_switches_per_cycle"] == 3.0 and s["hop_k_stable"] is False


def test_backend_order_and_no_backend_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    assert gl.backend_candidates() == ["osmesa", "egl"]  # the caller's choice first, then the others
    monkeypatch.setenv("MUJOCO_GL", "disable")
    assert gl.backend_candidates() == ["egl", "osmesa"]
    monkeypatch.setenv("MUJOCO_GL", "nonexistent")
    assert gl.backend_candidates(fallbacks=()) == ["nonexistent"]
    with pytest.raises(gl.RenderError) as e:
        gl.GLRenderer(gl.backend_candidates(fallbacks=()))
    message = str(e.value)
    assert "\n" not in message and "nonexistent" in message and "libosmesa6" in message


def test_video_switch_leaves_the_resume_fingerprint_alone():
    on = tiny_config(video_at_eval=True)
    assert config_fingerprint(on) == config_fingerprint(tiny_config())


@pytest.mark.slow
def test_trained_run_end_to_end(tmp_path):
    """A tiny Glass run trained through train() with the switch on: a video at every evaluation, then the CLI on
    its best checkpoint with MPPI."""
    cfg = tiny_config(steps=160, eval_freq=80, checkpoint_freq=80, eval_episodes=1, video_at_eval=True)
    cfg.glass.enabled = True
    dirs = []
    for seed in (1, 2):
        d = tmp_path / "tiny" / "default" / f"seed{seed}"
        d.mkdir(parents=True)
        (d / CONFIG).write_text(yaml.safe_dump({"phase": {"name": "tiny", "variant": "default"},
                                                       "seed": seed, "config": to_dict(cfg)}, sort_keys=False))
        dirs.append(d)
    assert train(cfg, [1, 2], dirs, progress=False) == 0
    for d in dirs:
        assert [r["env_step"] for r in read_csv(d / EVAL)] == ["0", "80", "160"]
        for step in (0, 80, 160):
            assert read_video(d / VIDEOS / f"eval_step{step:010d}_mppi.mp4").shape == (40, 240, 320, 3)
    r = cli("--run", dirs[0], "--checkpoint", "best", "--out", tmp_path / "v")
    assert r.returncode == 0, r.stderr
    assert "best MPPI eval" in r.stderr
    summary = next((tmp_path / "v").glob("*_summary.json"))
    data = json.loads(summary.read_text())
    assert data["checkpoint_env_step"] in (80, 160) and data["steps"] == 20 and data["distinct_k"] >= 1
