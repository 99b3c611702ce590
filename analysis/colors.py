"""A stable colour per phase, shared by the curves and the dashboard.

The colour is a function of the canonical phase name alone, never of which other phases are on the same figure,
so a phase keeps its colour in every figure, on every machine:

- the phases of the research programme (PINNED, in roughly the order they get compared: the vanilla baseline z,
  Glass 1b, the f/j smoothing phases, the K_UPDATE sweep aa ...) take hues along the golden-angle sequence,
  which keeps any few of them far apart on the colour wheel, with alternating lightness;
- any other name takes a hue from its SHA-256 digest (not Python's salted `hash`), so it is stable too, though
  two such names can land close together.

Variants of a phase (`aa:k128`, `aa:k256`) keep the phase's hue and differ in lightness and saturation, so a
family of variants reads as one family.
"""
from __future__ import annotations

import colorsys
import hashlib

from tdmpc_glass.runlayout import DEFAULT_VARIANT

PINNED = ("z", "1b", "f", "aa", "t", "j", "o", "p", "baseline", "x", "ab", "ac", "g", "y", "h", "m", "1c", "d_v2",
          "e", "i", "k", "l", "n", "v", "P", "Pa", "q_knee", "r1_soft", "r2_gait", "rstack")
GOLDEN = 0.6180339887498949
HUE_OFFSET = 0.58  # the first pinned phase (z) is blue


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _base(phase: str) -> tuple[float, float, float]:
    """(hue, lightness, saturation) of a phase name."""
    if phase in PINNED:
        i = PINNED.index(phase)
        return (HUE_OFFSET + i * GOLDEN) % 1.0, (0.42, 0.30, 0.52)[i % 3], 0.80
    digest = _digest(phase)
    return int.from_bytes(digest[:2], "big") / 65536, 0.34 + 0.16 * digest[3] / 255, 0.60 + 0.30 * digest[2] / 255


def phase_color(label: str) -> str:
    """'#rrggbb' for a phase label `phase` or `phase:variant`."""
    phase, _, variant = str(label).partition(":")
    hue, lightness, saturation = _base(phase)
    if variant and variant != DEFAULT_VARIANT:
        shift = _digest(f"{phase}:{variant}")
        lightness = 0.28 + 0.34 * shift[0] / 255
        saturation = 0.50 + 0.45 * shift[1] / 255
    r, g, b = colorsys.hls_to_rgb(hue, lightness, saturation)
    return "#{:02x}{:02x}{:02x}".format(*(round(c * 255) for c in (r, g, b)))

