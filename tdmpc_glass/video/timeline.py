"""The K-timeline figure: each episode's K over time, contact steps shaded, and each cluster's occupancy."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .frames import k_colour


def true_spans(mask) -> list[tuple[int, int]]:
    """[start, end) index ranges where a boolean sequence is True (the contact spans the figure shades)."""
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
    occupancy as a bar on the right, saved as a PNG at `path`; dt is the seconds per agent step (the x label).
    Episodes with Glass off are left out; returns None when none is left."""
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
