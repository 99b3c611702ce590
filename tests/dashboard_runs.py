"""A generated runs root for the dashboard tests (and for looking at the dashboard by hand):

  python tests/dashboard_runs.py DIR     writes DIR/runs and DIR/phases, prints the dashboard command

Phases (their own phases/ folder, so the tests do not depend on the repository's phase files):
- alpha: benchmark-fair Glass phase, seeds 1, 2, 3, 5 in runs/alpha/default/ and seed 4 filed under the alias
  `alpha_old` (merged into alpha); seed 1 has Glass diagnostics in train.csv, events and a video with its
  summary JSON (a stable foot-hop: gait, K stability during hops, basin); seed 3 is
  still running (fewer evaluations); every alpha seed reaches >= 500 at its best (G1) and seed 2 >= 600 (G2);
- beta: benchmark-unfair, variants k64 (2 seeds) and k128 (2 seeds), Glass off; one k128 seed failed.
Scores follow a known rising line per phase and seed, so what the page shows can be checked by eye.
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import yaml

from tdmpc_glass.runlayout import CHECKPOINTS, CONFIG, EVAL, EVENTS, PROVENANCE, STATUS, TRAIN, VIDEOS

EVAL_HEADER = ["env_step", "agent_step", "mppi_return", "mppi_return_std", "pi_return", "pi_return_std",
               "episodes", "wall_time_s"]
TRAIN_HEADER = ["env_step", "agent_step", "update", "consistency_loss", "reward_loss", "value_loss", "pi_loss",
                "total_loss", "grad_norm", "pi_grad_norm", "q_scale", "updates_per_s", "env_steps_per_s",
                "wall_time_s"]
GLASS_HEADER = ["se", "h1", "resistance", "active_prototypes", "active_clusters", "k_switch_rate", "window_mi",
                "loss_se"]
EVAL_EVERY = 50_000
TOTAL = 1_000_000


def write_phases(phases: Path) -> None:
    phases.mkdir(parents=True, exist_ok=True)
    (phases / "base.yaml").write_text("name: base\ndescription: defaults\nbenchmark_fair: true\nseeds: 1-5\n")
    (phases / "alpha.yaml").write_text(yaml.safe_dump({
        "name": "alpha", "extends": "base", "benchmark_fair": True, "seeds": "1-5", "aliases": ["alpha_old"],
        "description": "Glass with the log's defaults (N=16, K=8). Seeds run on two machines.",
        "overrides": {"glass.enabled": True}}))
    (phases / "beta.yaml").write_text(yaml.safe_dump({
        "name": "beta", "extends": "base", "benchmark_fair": False, "seeds": "1-2",
        "description": "Reward shaping on the forward velocity (not benchmark-fair), K_UPDATE sweep.",
        "overrides": {}, "variants": {"k64": {"train.k_update": 64}, "k128": {"train.k_update": 128}}}))


def eval_rows(scores: list[float]) -> list[list]:
    return [[(i + 1) * EVAL_EVERY, (i + 1) * EVAL_EVERY // 2, s, 20.0, s * 0.8, 25.0, 10, 30.0 * (i + 1)]
            for i, s in enumerate(scores)]


def append_csv(path: Path, header: list[str], rows: list[list]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(header)
        writer.writerows(rows)


def make_run(root: Path, folder: str, variant: str, seed: int, phase_meta: dict, scores: list[float], *,
             status: str = "done", glass: bool = False, train_rows: int = 40, events: list[dict] | None = None,
             rate: float = 250.0) -> Path:
    run = root / folder / variant / f"seed{seed}"
    run.mkdir(parents=True)
    (run / CHECKPOINTS).mkdir()
    (run / CONFIG).write_text(yaml.safe_dump({
        "phase": {"variant": variant, **phase_meta}, "seed": seed,
        "config": {"task": "hopper-hop", "train": {"steps": TOTAL}}}))
    append_csv(run / EVAL, EVAL_HEADER, eval_rows(scores))
    last_step = len(scores) * EVAL_EVERY
    rows = []
    for i in range(train_rows):
        step = (i + 1) * last_step // max(train_rows, 1)
        row = [step, step // 2, i * 10, 1.0 / (i + 1), 0.5, 0.3, -1.0, 2.0 / (i + 1) + 1, 3.0, 1.0, 50.0,
               100.0 + i, rate * (1 + 0.1 * np.sin(i)), 10.0 * i]
        if glass:
            se = 1.2 + 0.5 * np.exp(-i / 10)
            row += [se, 2.0, 2.0 - se, 16 - 8 * np.exp(-i / 8), 8 - 5 * np.exp(-i / 8), 0.3 * np.exp(-i / 15),
                    0.1 + 0.01 * i, se]
        rows.append(row)
    if train_rows:
        append_csv(run / TRAIN, TRAIN_HEADER + (GLASS_HEADER if glass else []), rows)
    # a running run was updated a minute ago, the others an hour ago
    updated = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1 if status == "running" else 60)
    (run / STATUS).write_text(json.dumps({
        "status": status, "env_step": last_step, "total_env_steps": TOTAL,
        "updated": updated.isoformat(timespec="seconds"),
        "last_mppi_return": scores[-1] if scores else None, "best_mppi_return": max(scores) if scores else None,
        "env_steps_per_s": rate if status == "running" else None}, indent=1) + "\n")
    events = events if events is not None else [
        {"time": "2026-01-01T10:00:00+00:00", "env_step": 0, "event": "start", "total_env_steps": TOTAL}]
    if status in ("done", "failed"):
        events = events + [{"time": "2026-01-01T12:00:00+00:00", "env_step": last_step, "event": status}]
    (run / EVENTS).write_text("".join(json.dumps(e) + "\n" for e in events))
    return run


def rising(n: int, top: float, seed: int) -> list[float]:
    """n scores rising to about `top`, a little different per seed."""
    x = np.linspace(0, 1, n)
    return [round(float(v), 1) for v in top * (1 - np.exp(-4 * x)) + 8 * np.sin(3 * x + seed) + 10 * seed]


def write_video(path: Path, frames: int = 30, fps: int = 10, codec: str = "libx264") -> Path:
    """A small valid video (a square moving across a gradient) written with imageio's ffmpeg."""
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    size = 64
    kwargs = {"fps": fps, "codec": codec, "macro_block_size": 16}
    kwargs["pixelformat"] = "yuv420p"
    if codec == "libx264":
        kwargs["output_params"] = ["-movflags", "+faststart"]
    with imageio.get_writer(str(path), **kwargs) as writer:
        for t in range(frames):
            frame = np.zeros((size, size, 3), np.uint8)
            frame[..., 0] = np.linspace(0, 255, size, dtype=np.uint8)[None, :]
            frame[..., 2] = 120
            x = (t * 2) % (size - 16)
            frame[24:40, x:x + 16] = 255
            writer.append_data(frame)
    return path


VIDEO_STEP = 500_000


def video_summary(run: str, env_step: int = VIDEO_STEP, **changes) -> dict:
    """What tdmpc_glass/video writes as <stem>_summary.json for a hopper episode (the gait part of it): a foot-hop
    of 14 hop cycles with one K during hops, the stable-hop basin."""
    summary = {
        "run": run, "checkpoint": "(training state at this evaluation)", "checkpoint_env_step": env_step,
        "task": "hopper-hop", "steps": 500, "return": 583.2, "glass": True, "policy": "mppi",
        "gait": "foot-hop", "gait_fractions": {"foot-hop": 0.84, "knee-walk": 0.0, "stand": 0.1, "fallen": 0.06},
        "drop_steps": 9, "hop_steps": 410, "hop_cycles_in_hops": 14, "hop_k_switches": 0,
        "hop_k_switches_per_cycle": 0.0, "hop_distinct_k": 1, "hop_dominant_k": 3, "hop_dominant_k_fraction": 1.0,
        "hop_k_stable": True, "basin": "stable-hop",
    }
    summary.update(changes)
    return summary


# a provenance record as tdmpc_glass/provenance.py writes it (one process life)
PROVENANCE_RECORD = {"time": "2026-01-01T10:00:00+00:00", "env_step": 0, "event": "start", "host": "gpu7",
                     "versions": {"python": "3.12.3", "jax": "0.10.2", "mujoco": "3.17.0"},
                     "git": {"commit": "0123456789abcdef", "dirty": True},
                     "devices": {"backend": "gpu", "kind": "NVIDIA H100", "count": 1},
                     "xla_flags": "--xla_gpu_deterministic_ops=true", "deterministic_ops_in_flags": True,
                     "allocator": "tcmalloc"}


def make_runs_root(base: Path, video: bool = True) -> tuple[Path, Path]:
    """(runs root, phases dir) under `base`."""
    root, phases = base / "runs", base / "phases"
    root.mkdir(parents=True)
    write_phases(phases)
    alpha = {"name": "alpha", "aliases": ["alpha_old"], "benchmark_fair": True,
             "description": "Glass with the log's defaults (N=16, K=8). Seeds run on two machines."}
    beta = {"name": "beta", "benchmark_fair": False,
            "description": "Reward shaping on the forward velocity (not benchmark-fair), K_UPDATE sweep."}
    events = [{"time": "2026-01-01T10:00:00+00:00", "env_step": 0, "event": "start", "total_env_steps": TOTAL},
              {"time": "2026-01-01T10:40:00+00:00", "env_step": 200_000, "event": "interrupted"},
              {"time": "2026-01-01T10:45:00+00:00", "env_step": 200_000, "event": "resume", "total_env_steps": TOTAL},
              {"time": "2026-01-01T11:10:00+00:00", "env_step": 350_000, "event": "nonfinite", "term": "loss_se",
               "update": 1234}]
    seed1 = make_run(root, "alpha", "default", 1, alpha, rising(10, 560, 1), glass=True, events=events)
    (seed1 / PROVENANCE).write_text(json.dumps(PROVENANCE_RECORD) + "\n")
    make_run(root, "alpha", "default", 2, alpha, rising(10, 600, 2), glass=True)
    make_run(root, "alpha", "default", 5, alpha, rising(10, 530, 5), glass=True)
    make_run(root, "alpha", "default", 3, alpha, rising(6, 520, 3), glass=True, status="running")
    make_run(root, "alpha_old", "default", 4, {**alpha, "name": "alpha_old"}, rising(10, 540, 4), glass=True)
    for variant, top in (("k64", 380), ("k128", 430)):
        for seed in (1, 2):
            make_run(root, "beta", variant, seed, beta, rising(8 if seed == 2 and variant == "k128" else 10, top,
                                                               seed),
                     status="failed" if seed == 2 and variant == "k128" else "done")
    if video:
        write_video(seed1 / VIDEOS / f"eval_step_{VIDEO_STEP}.mp4")
        (seed1 / VIDEOS / f"eval_step_{VIDEO_STEP}_summary.json").write_text(
            json.dumps(video_summary("alpha/default/seed1"), indent=1) + "\n")
    return root, phases


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/dashboard_runs.py DIR")
    runs, phases_dir = make_runs_root(Path(sys.argv[1]))
    print(f"python analysis/dashboard.py --runs {runs} --phases-dir {phases_dir}")
