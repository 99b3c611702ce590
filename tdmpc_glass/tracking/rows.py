"""A run's rows as the exports see them: one entry per env step, the eval.csv and train.csv values written at
that step under `eval/<column>` and `train/<column>`, and the evaluation's video and K timeline as media.

The same function turns a live row (a dict the trainer has just appended) and a row read back from the file
into values, so what an export sends from either source is the same (a float written with repr reads back
equal).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Optional

from .. import runlayout

KINDS = {"eval": runlayout.EVAL, "train": runlayout.TRAIN}


def values_of(kind: str, row: dict) -> dict[str, float]:
    """{f"{kind}/{column}": float} of a row's numeric, finite values (env_step is the step, not a value)."""
    out = {}
    for key, value in row.items():
        if key == "env_step" or value is None or value == "":
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[f"{kind}/{key}"] = number
    return out


def step_of(row: dict) -> Optional[int]:
    try:
        return int(float(row.get("env_step")))
    except (TypeError, ValueError):
        return None


def read_rows(path: Path) -> list[dict]:
    """A CSV's complete rows as dicts (a partial last line, a killed writer's, is left out)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]
    return list(csv.DictReader(lines))


def eval_media(run_dir: Path) -> dict[int, dict[str, Path]]:
    """{env_step: {"video": mp4, "timeline": png}} of the evaluation videos whose summary is written (the
    summary is the last file of an episode, so its video and timeline are complete)."""
    out: dict[int, dict[str, Path]] = {}
    folder = Path(run_dir) / runlayout.VIDEOS
    for summary in sorted(folder.glob("*_summary.json")) if folder.is_dir() else []:
        stem = summary.name[: -len("_summary.json")]
        step = runlayout.eval_video_step(stem)
        if step is None:
            continue
        media = media_of(folder, stem)
        if media:
            out[step] = media
    return out


def media_of(folder: Path, stem: str) -> dict[str, Path]:
    """The video and K timeline of an episode written under `stem` in `folder` (those that exist)."""
    media = {}
    try:
        summary = json.loads((folder / f"{stem}_summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    for key, default in (("video", f"{stem}.mp4"), ("timeline", f"{stem}_timeline.png")):
        name = summary.get(key, default) if isinstance(summary, dict) else default
        if name and (folder / name).is_file():
            media[key] = folder / name
    return media


def run_steps(run_dir: Path) -> list[tuple[int, dict, dict]]:
    """Every env step of a run's files, in order: (env_step, values, media)."""
    steps: dict[int, tuple[dict, dict]] = {}
    for kind, name in KINDS.items():
        for row in read_rows(Path(run_dir) / name):
            step = step_of(row)
            if step is not None:
                steps.setdefault(step, ({}, {}))[0].update(values_of(kind, row))
    for step, media in eval_media(run_dir).items():
        steps.setdefault(step, ({}, {}))[1].update(media)
    return [(step, values, media) for step, (values, media) in sorted(steps.items())]


def last_step(run_dir: Path) -> int:
    """The last env step of a run's CSV rows (-1 without any)."""
    steps = [step_of(row) for name in KINDS.values() for row in read_rows(Path(run_dir) / name)[-1:]]
    return max([s for s in steps if s is not None], default=-1)


def identity(run_dir: Path) -> tuple[str, str, str]:
    """(phase, variant, seed<k>) of a run dir <root>/<phase>/<variant>/seed<k> (the tracker's run name)."""
    run_dir = Path(run_dir).absolute()
    return run_dir.parent.parent.name, run_dir.parent.name, run_dir.name
