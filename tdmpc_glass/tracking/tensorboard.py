"""TensorBoard export: tensorboardX event files in <run>/tensorboard/ (no TensorFlow, no torch).

Each process that sends something opens one event file whose first event is a purge at `sent + 1`: TensorBoard
then hides whatever earlier files hold from that step on (rows a kill left past the checkpoint, or a step
written but not yet recorded as sent), and the steps from there are written again. Scalars are
`eval/<column>` and `train/<column>` against env steps; an evaluation's K timeline is an image (TensorBoard
shows no mp4). `sent` is saved after every flushed step.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .. import runlayout
from .feed import Sink, TrackingState


class TensorBoardSink(Sink):
    name = "tensorboard"

    def __init__(self, run_dir: Path, state: TrackingState, texts: Optional[dict] = None):
        self.dir = Path(run_dir) / runlayout.TENSORBOARD
        self.state, self.texts = state, texts or {}
        self.writer = None

    def open(self, sent: int) -> int:
        from tensorboardX import SummaryWriter

        self.dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(logdir=str(self.dir), purge_step=sent + 1, flush_secs=3600)
        if sent < 0:  # the first events of the run: what it is
            for tag, text in self.texts.items():
                self.writer.add_text(tag, text, 0)
        return sent

    def send(self, step: int, values: dict, media: dict) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        if "timeline" in media:
            from PIL import Image

            with Image.open(media["timeline"]) as image:
                pixels = np.asarray(image.convert("RGB"))
            self.writer.add_image("videos/k_timeline", pixels, step, dataformats="HWC")
        self.writer.flush()  # on disk (the OS's) before `sent` says so
        self.state.update(self.name, sent=step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
