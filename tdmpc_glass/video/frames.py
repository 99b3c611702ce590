"""Pixels of a K-labelled frame: the cluster palette, the text overlay and the side-by-side tiling of grids.

Colours: a fixed categorical palette keyed by the cluster id K (PALETTE: tab10, lightened where it was too
dark to read on the overlay's dark box, then the light half of tab20; K >= 20 wraps around), the same in
the overlay and the K timeline (tdmpc_glass.video.timeline).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

# matplotlib's tab10 with its dark members (blue, red, purple, brown) lightened so that every colour reads on
# the overlay's dark box as well as on the timeline's white background, then the light half of tab20
PALETTE = (
    "#3a8fd6", "#ff7f0e", "#2ca02c", "#e8413e", "#a47fd0", "#c0875a", "#e377c2", "#8f8f8f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)
GLASS_OFF_RGB = (220, 220, 220)


def k_colour(k: int) -> str:
    return PALETTE[int(k) % len(PALETTE)]


def k_rgb(k: int) -> tuple[int, int, int]:
    h = k_colour(k).lstrip("#")
    return tuple(int(h[i:i + 2], 16) for i in (0, 2, 4))


def even(n: int) -> int:
    """H.264 with yuv420p needs even frame sides."""
    n = int(n)
    return n + (n % 2)


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


# ----------------------------------------------------------------------------------------------- grids
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
