"""Pixels: headless MuJoCo rendering, the K overlay, grids, H.264 mp4 files and the K-timeline figure.

Headless OpenGL. MuJoCo picks its backend from MUJOCO_GL when first imported, so frames are rendered in a
child process (tdmpc_glass.gl_worker) started with the backend set: MUJOCO_GL's value first when the caller
set one, then egl (a GPU, or Mesa's software EGL on a CPU), then osmesa. The first backend whose probe frame
renders is kept for the rest of the process; when none works, GLRenderer raises RenderError with one line
naming each backend's failure and the packages to install. The process that rolls the agent out never
touches OpenGL.

Colours: a fixed categorical palette keyed by the cluster id K (PALETTE: tab10, lightened where it was too
dark to read on the overlay's dark box, then the light half of tab20; K >= 20 wraps around), the same in
the overlay and the timeline.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import select
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np

BACKENDS = ("egl", "osmesa")
INSTALL_HINT = "apt-get install libosmesa6 libgl1 libegl1 libegl-mesa0"
START_TIMEOUT_S = 120.0
CHUNK_FRAMES = 64

# matplotlib's tab10 with its dark members (blue, red, purple, brown) lightened so that every colour reads on
# the overlay's dark box as well as on the timeline's white background, then the light half of tab20
PALETTE = (
    "#3a8fd6", "#ff7f0e", "#2ca02c", "#e8413e", "#a47fd0", "#c0875a", "#e377c2", "#8f8f8f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)
GLASS_OFF_RGB = (220, 220, 220)


class RenderError(RuntimeError):
    """Rendering cannot work here (no OpenGL backend) or the render worker failed; the message is one line."""


def k_colour(k: int) -> str:
    return PALETTE[int(k) % len(PALETTE)]


def k_rgb(k: int) -> tuple[int, int, int]:
    h = k_colour(k).lstrip("#")
    return tuple(int(h[i:i + 2], 16) for i in (0, 2, 4))


def even(n: int) -> int:
    """H.264 with yuv420p needs even frame sides."""
    n = int(n)
    return n + (n % 2)


@contextlib.contextmanager
def _quiet_fork():
    """JAX warns on every fork of its (multithreaded) process; subprocess forks only to exec a new program at
    once (the GL worker, ffmpeg), which is safe, so the warning is silenced around those calls."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        yield


# ----------------------------------------------------------------------------------------------- the GL worker
_WORKING_BACKEND: Optional[str] = None  # the backend that rendered a probe frame in this process


def backend_candidates() -> list[str]:
    if _WORKING_BACKEND:
        return [_WORKING_BACKEND]
    chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
    first = [chosen] if chosen and chosen not in ("disable", "disabled", "off", "false", "0") else []
    return first + [b for b in BACKENDS if b not in first]


class GLRenderer:
    """A render worker process holding one dm_control env per (task, frame size)."""

    def __init__(self):
        global _WORKING_BACKEND
        failures = []
        for backend in backend_candidates():
            error = self._start(backend)
            if error is None:
                _WORKING_BACKEND = self.backend = backend
                return
            failures.append(f"{backend}: {error}")
        raise RenderError("no headless OpenGL backend works for MuJoCo rendering (" + "; ".join(failures) +
                          f"); install the GL libraries ({INSTALL_HINT}) or set MUJOCO_GL to a working backend")

    def _start(self, backend: str) -> Optional[str]:
        env = dict(os.environ, MUJOCO_GL=backend)
        if backend in ("egl", "osmesa"):
            env["PYOPENGL_PLATFORM"] = backend
        else:
            env.pop("PYOPENGL_PLATFORM", None)
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self._stderr = tempfile.TemporaryFile()
        with _quiet_fork():
            self.proc = subprocess.Popen([sys.executable, "-m", "tdmpc_glass.gl_worker"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self._stderr, env=env)
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT_S)
        if not ready:
            self._kill()
            return f"no answer within {START_TIMEOUT_S:.0f} s"
        try:
            status, value = pickle.load(self.proc.stdout)
        except (EOFError, pickle.UnpicklingError):
            self._kill()
            return f"the worker exited ({self._stderr_tail()})"
        if status != "ok":
            self._kill()
            return value
        self.gl_renderer, self.software = value.get("gl_renderer", ""), bool(value.get("software"))
        return None

    def describe(self) -> str:
        """e.g. 'egl (llvmpipe (LLVM 15.0.6, 256 bits); software: no shadows or reflections)'."""
        soft = "; software: no shadows or reflections" if self.software else ""
        return f"{self.backend} ({self.gl_renderer or 'unknown renderer'}{soft})"

    def _stderr_tail(self) -> str:
        try:
            self._stderr.seek(0)
            lines = [ln for ln in self._stderr.read().decode(errors="replace").splitlines() if ln.strip()]
        except (OSError, ValueError):
            lines = []
        return " ".join(lines[-1].split())[:300] if lines else "no message"

    def _kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def render(self, task: str, states: np.ndarray, height: int, width: int, camera: int = 0) -> np.ndarray:
        """Frames (n, height, width, 3) uint8 of the physics states (n, nq + nv) of `task` from `camera`."""
        if self.proc.poll() is not None:
            raise RenderError(f"the render worker is gone (exit code {self.proc.returncode})")
        try:
            pickle.dump(("render", task, np.asarray(states, np.float64), int(height), int(width), int(camera)),
                        self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.proc.stdin.flush()
            status, value = pickle.load(self.proc.stdout)
        except (BrokenPipeError, EOFError, pickle.UnpicklingError):
            self.proc.wait()
            raise RenderError(f"the render worker died (exit code {self.proc.returncode}: {self._stderr_tail()})") \
                from None
        if status != "ok":
            raise RenderError(f"rendering {task} failed: {value}")
        return value

    def frames(self, task: str, states: np.ndarray, height: int, width: int, camera: int = 0,
               chunk: int = CHUNK_FRAMES) -> Iterator[np.ndarray]:
        for start in range(0, len(states), chunk):
            yield from self.render(task, states[start:start + chunk], height, width, camera)

    def close(self):
        proc = getattr(self, "proc", None)
        if proc is None or proc.poll() is not None:
            return
        try:
            pickle.dump(("close",), proc.stdin)
            proc.stdin.close()
            proc.wait(timeout=30)
        except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
            self._kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


# ----------------------------------------------------------------------------------------------- the overlay
@dataclass
class FrameText:
    """What the overlay of one frame says."""

    glass: bool
    k: Optional[int]
    n_star: Optional[int]
    step: int  # agent step in the episode
    env_step: int  # env (control) step in the episode
    ret: float  # return so far
    reward: float
    contact: Optional[str]  # "toe+heel", "flight", ... or None without touch sensors
    footer: str = ""  # run label, checkpoint, policy


_FONTS: dict = {}


def _font(size: int):
    from PIL import ImageFont

    if size not in _FONTS:
        try:
            _FONTS[size] = ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1: a fixed bitmap font
            _FONTS[size] = ImageFont.load_default()
    return _FONTS[size]


def overlay_box(height: int, width: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the region the K overlay may draw in (the top-left block); tests compare it."""
    return 0, 0, max(width * 3 // 4, 1), max(height // 2, 1)


def draw_overlay(frame: np.ndarray, text: FrameText) -> np.ndarray:
    """The frame with the K overlay: K=<cluster> in its colour, n*, step, return, reward, contact; footer at the
    bottom. Text sits on translucent dark boxes so it reads over sky and floor alike."""
    from PIL import Image, ImageDraw

    h, w = frame.shape[:2]
    big, small = _font(max(12, h // 10)), _font(max(9, h // 23))
    pad = max(3, h // 80)
    white = (255, 255, 255, 255)
    if text.glass and text.k is not None:
        head, colour = f"K={text.k}", k_rgb(text.k) + (255,)
    else:
        head, colour = "K=- (Glass off)", GLASS_OFF_RGB + (255,)
    lines = [(head, big, colour),
             (f"n*={text.n_star}" if text.n_star is not None else "n*=-", small, white),
             (f"step {text.step} (env {text.env_step})", small, white),
             (f"return {text.ret:.1f}  r {text.reward:.2f}", small, white)]
    if text.contact is not None:
        lines.append(("flight", small, (160, 220, 255, 255)) if text.contact == "flight"
                     else (f"contact: {text.contact}", small, (255, 230, 120, 255)))

    image = Image.fromarray(np.ascontiguousarray(frame[..., :3])).convert("RGBA")
    measure = ImageDraw.Draw(image)
    x0, y0, bx1, by1 = overlay_box(h, w)
    boxes = [measure.textbbox((0, 0), s, font=f, stroke_width=1) for s, f, _ in lines]
    box_w = min(max(b[2] for b in boxes) + 2 * pad, bx1 - x0)
    box_h = min(sum(b[3] for b in boxes) + pad * (len(lines) + 1), by1 - y0)
    layer = Image.new("RGBA", (box_w, box_h), (0, 0, 0, 170))
    draw = ImageDraw.Draw(layer)
    y = pad
    for (s, f, c), b in zip(lines, boxes):
        draw.text((pad, y), s, font=f, fill=c, stroke_width=1 if f is big else 0, stroke_fill=(0, 0, 0, 255))
        y += b[3] + pad
    image.alpha_composite(layer, dest=(x0, y0))
    if text.footer:
        fb = measure.textbbox((0, 0), text.footer, font=small)
        fw, fh = min(fb[2] + 2 * pad, w), min(fb[3] + 2 * pad, h)
        footer = Image.new("RGBA", (fw, fh), (0, 0, 0, 170))
        ImageDraw.Draw(footer).text((pad, pad), text.footer, font=small, fill=white)
        image.alpha_composite(footer, dest=(0, h - fh))
    return np.asarray(image.convert("RGB"))


# ----------------------------------------------------------------------------------------------- grids and mp4
def grid_shape(n: int) -> tuple[int, int]:
    """(rows, cols): one row up to 5 tiles (e.g. the 5 seeds of a phase), else a near-square grid."""
    if n <= 5:
        return 1, n
    cols = int(np.ceil(np.sqrt(n)))
    return int(np.ceil(n / cols)), cols


def tile(frames: Sequence[np.ndarray]) -> np.ndarray:
    """Equal-size frames side by side (row-major, blank tiles to fill the last row)."""
    rows, cols = grid_shape(len(frames))
    h, w = frames[0].shape[:2]
    out = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i, f in enumerate(frames):
        r, c = divmod(i, cols)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = f
    return out


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
            with _quiet_fork():  # ffmpeg starts with the first frame
                writer.append_data(frame)
            count += 1
    finally:
        writer.close()
    os.replace(tmp, path)
    return count


# ----------------------------------------------------------------------------------------------- K timeline
def true_spans(mask) -> list[tuple[int, int]]:
    """[start, end) index ranges where a boolean sequence is True (also the dashboard's CI-band gaps)."""
    spans, start = [], None
    for t, m in enumerate(list(mask) + [False]):
        if m and start is None:
            start = t
        elif not m and start is not None:
            spans.append((start, t))
            start = None
    return spans


def timeline_figure(items: Sequence[tuple[str, object]], path: Path, dt: float) -> Optional[Path]:
    """K over time (one row per (label, Episode)), contact steps shaded, flight white, and each cluster's
    occupancy as a bar on the right. Episodes with Glass off are left out; returns None when none is left."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [(label, ep) for label, ep in items if ep.k is not None]
    if not items:
        return None
    K = max(max(ep.num_clusters, int(ep.k.max()) + 1) for _, ep in items)
    fig, axes = plt.subplots(len(items), 2, figsize=(12, 1.2 + 1.9 * len(items)), squeeze=False,
                             gridspec_kw={"width_ratios": [5, 1]})
    for (label, ep), (ax, bar) in zip(items, axes):
        t = np.arange(ep.steps)
        contact = ep.contact
        if contact is not None:
            for a, b in true_spans(contact):
                ax.axvspan(a - 0.5, b - 0.5, color="#bbbbbb", alpha=0.45, lw=0)
        ax.step(t, ep.k, where="mid", color="#555555", lw=0.6, alpha=0.6)
        ax.scatter(t, ep.k, c=[k_colour(k) for k in ep.k], s=9, marker="s", lw=0, zorder=3)
        ax.set_ylim(-0.6, K - 0.4)
        ax.set_yticks(range(K))
        ax.set_xlim(-0.5, max(ep.steps - 0.5, 0.5))
        ax.set_ylabel("K")
        s = ep.summary()
        per_hop = "n/a, no touch sensors" if s["hop_cycles"] is None else (
            f"{s['switches_per_hop_cycle']:.2f}" if s["switches_per_hop_cycle"] is not None else "n/a, no landing")
        ax.set_title(f"{label}: return {s['return']:.1f}, {s['distinct_k']} clusters used, {s['switches']} switches "
                     f"(per hop cycle: {per_hop}), longest stable {s['longest_stable_steps']} steps "
                     f"(K={s['longest_stable_k']})", fontsize=8.5, loc="left")
        occupancy = [np.mean(ep.k == k) for k in range(K)]
        bar.barh(range(K), occupancy, color=[k_colour(k) for k in range(K)])
        bar.set_ylim(-0.6, K - 0.4)
        bar.set_yticks(range(K))
        bar.set_xlim(0, 1)
        bar.set_xlabel("occupancy", fontsize=8)
    axes[-1][0].set_xlabel(f"agent step ({dt * 1000:.0f} ms each)")
    has_touch = any(ep.contact is not None for _, ep in items)
    note = ("grey: contact (a touch sensor above 1 N), white: flight; hop cycle = one flight->contact transition"
            if has_touch else "this task has no touch sensors: no contact / flight shading, no hop cycles")
    fig.text(0.01, 0.005, note, fontsize=8, color="#444444")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
