"""K-labelled videos of rollouts: the files one episode (or a grid of runs) becomes, and the hook training uses.

For an episode written under stem X in a folder:
    X.mp4            H.264, real time (about 50 fps, see Episode.frame_plan), the K overlay on every frame
    X.csv            one row per agent step: step, env_step, K, n_star, reward, return, touch, contact_id,
                     standing, height, speed, knee_height, torso_height, torso_up, gait, hop (K and n_star
                     empty with Glass off; the last five empty on tasks other than the hopper)
    X_latents.npz    obs, latents, actions, rewards, k, n_star (-1 with Glass off), touch, physics
    X_timeline.png   K over time with contact/flight shading and occupancy per cluster (skipped with Glass off)
    X_summary.json   run, checkpoint, policy, episode seed, frames, fps, and Episode.summary()'s numbers
                     (gait, K stability during hops and the basin label among them)
A grid writes X.mp4 (the runs side by side, labelled), X_timeline.png (one row per run), X_summary.json, and
per run X_<run label>.csv / _latents.npz.
"""
from __future__ import annotations

import csv
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np

from ..runlayout import VIDEOS, eval_video_stem
from .frames import FrameText, draw_overlay, even, tile
from .gl import GLRenderer, RenderError, quiet_fork
from .rollout import (KNEE_DOWN_HEIGHT, MIN_HOP_LANDINGS, STABLE_MAX_DISTINCT_K, STABLE_MAX_SWITCHES_PER_CYCLE,
                      Episode, Roller, episode_seed)
from .timeline import timeline_figure

CSV_COLUMNS = ["step", "env_step", "K", "n_star", "reward", "return", "touch", "contact_id", "standing", "height",
               "speed", "knee_height", "torso_height", "torso_up", "gait", "hop"]
DEFAULT_HEIGHT, DEFAULT_WIDTH = 360, 480


@dataclass
class Source:
    """One episode and where it came from (for labels and the summary)."""

    label: str
    episode: Episode
    checkpoint: str = ""
    checkpoint_env_step: Optional[int] = None
    note: str = ""


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "run"


def sensor_names(task: str, count: int) -> list[str]:
    return ["toe", "heel"][:count] if task.startswith("hopper") and count <= 2 else [f"s{j}" for j in range(count)]


def contact_text(ep: Episode, t: int) -> Optional[str]:
    cid = ep.contact_id
    if cid is None:
        return None
    if cid[t] == 0:
        return "flight"
    names = sensor_names(ep.task, ep.touch.shape[1])
    return "+".join(n for j, n in enumerate(names) if cid[t] >> j & 1)


def footer_text(src: Source) -> str:
    ckpt = f" @ {src.checkpoint_env_step} env steps" if src.checkpoint_env_step is not None else ""
    return f"{src.label}{ckpt} | {src.episode.policy.upper()}"


def episode_frames(src: Source, renderer: GLRenderer, height: int, width: int, camera: int = 0,
                   overlay: bool = True) -> Iterator[np.ndarray]:
    """The episode's frames (rendered in chunks), with the overlay unless overlay=False."""
    ep = src.episode
    _, stride, rows = ep.frame_plan()
    states = ep.physics[::stride]
    returns, footer = ep.returns, footer_text(src)
    for i, frame in enumerate(renderer.frames(ep.task, states, height, width, camera)):
        if not overlay:
            yield frame
            continue
        t = int(rows[i])
        yield draw_overlay(frame, FrameText(
            glass=ep.glass, k=None if ep.k is None else int(ep.k[t]),
            n_star=None if ep.n_star is None else int(ep.n_star[t]), step=t, env_step=i * stride,
            ret=float(returns[t]), reward=float(ep.rewards[t]), contact=contact_text(ep, t), footer=footer))


def write_mp4(path: Path, frames: Iterable[np.ndarray], fps: float) -> int:
    """H.264 (libx264, yuv420p) mp4 of uint8 frames with even sides; returns the number of frames written."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    count = 0
    writer = imageio.get_writer(str(tmp), format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                pixelformat="yuv420p", macro_block_size=1, quality=8, ffmpeg_log_level="error")
    try:
        for frame in frames:
            if frame.shape[0] % 2 or frame.shape[1] % 2:
                raise ValueError(f"frame size {frame.shape[1]}x{frame.shape[0]} is not even (H.264 yuv420p)")
            with quiet_fork():  # ffmpeg starts with the first frame
                writer.append_data(frame)
            count += 1
    finally:
        writer.close()
    os.replace(tmp, path)
    return count


def write_csv(path: Path, ep: Episode) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(ep.rows())
    return path


def write_latents(path: Path, ep: Episode) -> Path:
    missing = np.full(ep.steps, -1, np.int32)
    np.savez_compressed(path, obs=ep.obs, latents=ep.latents, actions=ep.actions, rewards=ep.rewards,
                        k=ep.k if ep.k is not None else missing, n_star=ep.n_star if ep.n_star is not None else missing,
                        touch=ep.touch, physics=ep.physics)
    return path


def _definitions(ep: Episode) -> dict:
    return {
        "rows": "row t: the observation the agent acted on, its K and n*, the reward of that action (summed over "
                "the action repeat), return = sum of rewards up to row t",
        "touch": "1 when any touch sensor reads above 1 N (glass.CONTACT_THRESHOLD), 0 in flight; empty without "
                 "touch sensors",
        "standing": (f"height >= {ep.stand_height} m (the task's own stand height)" if ep.stand_height is not None
                     else "not defined for this task"),
        "hop_cycle": "one flight -> contact transition (a landing)",
        "switch": "a step whose K differs from the previous step's",
        "longest_stable_steps": "the longest run of consecutive steps with one K, in agent steps",
        **(_gait_definitions() if ep.posture is not None else {"gait": "not defined for this task (hopper only)"}),
    }


def _gait_definitions() -> dict:
    return {
        "knee_height": "world z of the knee (body calf's origin), m: 0.36 over a grounded foot with a straight leg, "
                       "0.03-0.04 with the knee on the floor",
        "torso_height": "world z of the torso's centre of mass, m (about 1.0 standing, 0.70 kneeling upright, "
                        "0.1-0.2 lying)",
        "torso_up": "cos of the torso's lean from vertical (1 upright, 0 lying flat)",
        "posture": f"per row (CSV column gait): fallen = torso leaning >= 45 deg (torso_up < 0.7071, shaping's "
                   f"fall term); knee = upright with knee_height < {KNEE_DOWN_HEIGHT} m (shaping's knee term: the "
                   "midpoint of 0.36 and 0.04); foot = upright, knee up, a foot touch sensor above 1 N; flight = "
                   "upright, knee up, no touch; drop = the leading flight rows (the spawn drop)",
        "hop_frames": f"CSV column hop: in each stretch of upright knee-up rows (flight/foot) with at least "
                      f"{MIN_HOP_LANDINGS} landings (flight -> foot), the rows from its first landing to its last; "
                      "hop_cycles_in_hops counts the landing-to-landing cycles. Falls, getting up, kneeling and "
                      "the partial cycles around a stretch are not hop frames",
        "hop_k_stability": f"switches between consecutive hop frames only (fall recovery excluded), per hop cycle; "
                           f"stable when <= {STABLE_MAX_SWITCHES_PER_CYCLE:g} switches per cycle (Phase-f s1's "
                           f"push-off/takeoff pair, section 3) and <= {STABLE_MAX_DISTINCT_K} distinct K during "
                           "hops",
        "gait": "the plurality of rows after the drop: hop frames (foot-hop), knee rows (knee-walk), other upright "
                "rows (stand) or fallen rows (fallen); gait_fractions are those shares",
        "basin": "the log's basins (section 9.4): stable-hop = foot-hop with stable K during hops, unstable-hop = "
                 "foot-hop with K oscillating during hops, hop = foot-hop without K (Glass off), knee-walk, stand, "
                 "fallen-stuck (section 9.5's degenerate basin)",
    }


def write_episode(src: Source, out_dir: Path, stem: str, renderer: GLRenderer, height: int = DEFAULT_HEIGHT,
                  width: int = DEFAULT_WIDTH, camera: int = 0, overlay: bool = True) -> dict:
    """Every file of one episode (module docstring); returns the summary dict (also written as JSON)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ep = src.episode
    height, width = even(height), even(width)
    fps, stride, rows = ep.frame_plan()
    frames = write_mp4(out_dir / f"{stem}.mp4", episode_frames(src, renderer, height, width, camera, overlay), fps)
    write_csv(out_dir / f"{stem}.csv", ep)
    write_latents(out_dir / f"{stem}_latents.npz", ep)
    timeline = timeline_figure([(src.label, ep)], out_dir / f"{stem}_timeline.png", ep.control_dt * ep.action_repeat)
    summary = {
        "run": src.label, "checkpoint": src.checkpoint, "checkpoint_env_step": src.checkpoint_env_step,
        "checkpoint_note": src.note, "task": ep.task, "frames": frames, "fps": fps,
        "frames_per_agent_step": ep.action_repeat / stride, "size": [width, height], "camera": camera,
        **ep.summary(), "definitions": _definitions(ep),
        "files": {"video": f"{stem}.mp4", "csv": f"{stem}.csv", "latents": f"{stem}_latents.npz",
                  "timeline": timeline.name if timeline else None},
    }
    if timeline is None:
        summary["timeline_skipped"] = "Glass is off in this run: no K labels, so no K timeline"
    (out_dir / f"{stem}_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def write_grid(sources: Sequence[Source], out_dir: Path, stem: str, renderer: GLRenderer,
               height: int = DEFAULT_HEIGHT, width: int = DEFAULT_WIDTH, camera: int = 0,
               overlay: bool = True) -> dict:
    """The runs side by side in one mp4 (each tile labelled with its run), plus per-run CSV / latents, a
    stacked timeline and one summary. Shorter episodes hold their last frame; fps is the first run's."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    height, width = even(height), even(width)
    fps = sources[0].episode.frame_plan()[0]
    counts = [len(s.episode.frame_plan()[2]) for s in sources]

    def frames():
        streams = [episode_frames(s, renderer, height, width, camera, overlay) for s in sources]
        last = [None] * len(sources)
        for i in range(max(counts)):
            for j, stream in enumerate(streams):
                if i < counts[j]:
                    last[j] = next(stream)
            yield tile(last)

    n = write_mp4(out_dir / f"{stem}.mp4", frames(), fps)
    runs = []
    for s in sources:
        name = f"{stem}_{slug(s.label)}"
        write_csv(out_dir / f"{name}.csv", s.episode)
        write_latents(out_dir / f"{name}_latents.npz", s.episode)
        runs.append({"run": s.label, "checkpoint": s.checkpoint, "checkpoint_env_step": s.checkpoint_env_step,
                     "checkpoint_note": s.note, "csv": f"{name}.csv", **s.episode.summary()})
    timeline = timeline_figure([(s.label, s.episode) for s in sources], out_dir / f"{stem}_timeline.png",
                               sources[0].episode.control_dt * sources[0].episode.action_repeat)
    summary = {"grid": [s.label for s in sources], "frames": n, "fps": fps, "tile_size": [width, height],
               "video": f"{stem}.mp4", "timeline": timeline.name if timeline else None,
               "definitions": _definitions(sources[0].episode), "runs": runs}
    (out_dir / f"{stem}_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


# ----------------------------------------------------------------------------------------------- training hook
class EvalVideoRecorder:
    """train.video_at_eval: one MPPI episode per seed at each evaluation, written to <run>/videos/
    eval_step<env_step>_mppi.* (`act`: the trainer's jitted act, see Roller). Rendering problems (no OpenGL here) print one warning and switch videos off for
    the rest of the run instead of stopping training."""

    def __init__(self, cfg, obs_dim: int, act_dim: int, act=None, seed: int = 0, height: int = 240,
                 width: int = 320):
        self.roller = Roller(cfg, obs_dim, act_dim, act=act)
        self.seed, self.height, self.width = seed, height, width
        self.renderer: Optional[GLRenderer] = None
        self.disabled = False

    def record(self, states, run_dirs: Sequence[Path], labels: Sequence[str], active, env_step: int) -> list[Path]:
        """One episode of every seed of `states` (leading seed axis), written for the seeds `active` marks; the
        mp4 paths written (none once videos are off)."""
        if self.disabled:
            return []
        if self.roller.cfg.multitask.tasks:
            print("warning: train.video_at_eval: multi-task runs have no videos yet", file=sys.stderr)
            self.disabled = True
            return []
        written = []
        try:
            if self.renderer is None:
                self.renderer = GLRenderer()
            episodes = self.roller.run(states, episode_seed(self.seed, 0), "mppi")
            for ep, run_dir, label, ok in zip(episodes, run_dirs, labels, active):
                if not ok:
                    continue
                stem = eval_video_stem(env_step)
                src = Source(label=label, episode=ep, checkpoint="(training state at this evaluation)",
                             checkpoint_env_step=env_step)
                write_episode(src, Path(run_dir) / VIDEOS, stem, self.renderer, self.height, self.width)
                written.append(Path(run_dir) / VIDEOS / f"{stem}.mp4")
        except RenderError as e:
            print(f"warning: train.video_at_eval: {e}; no more videos in this run", file=sys.stderr)
            self.disabled = True
        except Exception as e:  # noqa: BLE001 - a video must never stop training
            print(f"warning: train.video_at_eval: the video at env step {env_step} failed "
                  f"({type(e).__name__}: {' '.join(str(e).split())}); no more videos in this run", file=sys.stderr)
            self.disabled = True
        return written

    def close(self):
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None
