"""A stable colour per canonical phase name: the same phase has the same colour in every figure and in the
dashboard, across machines and runs (a hash of the name, not an index into the phases present)."""
from __future__ import annotations

import colorsys
import hashlib


def phase_color(name: str) -> str:
    """Hex colour from the name's digest: hue from the digest, saturation and lightness kept readable."""
    digest = hashlib.sha256(name.encode()).digest()
    hue = int.from_bytes(digest[:2], "big") / 65536
    saturation = 0.55 + 0.35 * digest[2] / 255
    lightness = 0.38 + 0.17 * digest[3] / 255
    r, g, b = colorsys.hls_to_rgb(hue, lightness, saturation)
    return "#{:02x}{:02x}{:02x}".format(round(r * 255), round(g * 255), round(b * 255))
