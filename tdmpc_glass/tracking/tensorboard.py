"""TensorBoard export: tensorboardX event files in <run>/tensorboard/ (no TensorFlow, no torch).

Each process that sends something opens one event file whose first events purge from `sent + 1` on (what
tensorboardX's SummaryWriter(purge_step=...) writes): TensorBoard then hides whatever earlier files hold from
that step on (rows a kill left past the checkpoint, or a step written but not yet recorded as sent), and the
steps from there are written again. Scalars are `eval/<column>` and `train/<column>` against env steps; an
evaluation's K timeline is an image (TensorBoard shows no mp4).

Events are written synchronously (tensorboardX's EventsWriter, not SummaryWriter's queue and thread), so a
step is in the file before `sent` says so in tracking.json.
"""
from __future__ import annotations

import time
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

    def _event(self, step: int, **fields):
        from tensorboardX.proto import event_pb2

        return event_pb2.Event(wall_time=time.time(), step=step, **fields)

    def open(self, sent: int) -> int:
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto import event_pb2

        self.dir.mkdir(parents=True, exist_ok=True)
        # events.out.tfevents.<second>.<host>.<n>: a new file per process, in the order TensorBoard reads them
        count = sum(1 for _ in self.dir.glob("events.out.tfevents.*"))
        self.writer = EventsWriter(str(self.dir / "events"), f".{count:06d}")
        self.writer.write_event(self._event(sent + 1, file_version="brain.Event:2"))
        self.writer.write_event(self._event(sent + 1, session_log=event_pb2.SessionLog(
            status=event_pb2.SessionLog.START)))
        if sent < 0:  # the first events of the run: what it is
            from tensorboardX import summary

            for tag, text in self.texts.items():
                self.writer.write_event(self._event(0, summary=summary.text(tag, text)))
        self.writer.flush()
        return sent

    def send(self, step: int, values: dict, media: dict) -> None:
        from tensorboardX import summary

        for tag, value in values.items():
            self.writer.write_event(self._event(step, summary=summary.scalar(tag, value)))
        if "timeline" in media:
            from PIL import Image

            with Image.open(media["timeline"]) as image:
                pixels = np.asarray(image.convert("RGB"))
            self.writer.write_event(self._event(step, summary=summary.image("videos/k_timeline", pixels,
                                                                            dataformats="HWC")))
        self.writer.flush()  # in the file (the OS's) before `sent` says so
        self.state.update(self.name, sent=step)

    def close(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.close()
