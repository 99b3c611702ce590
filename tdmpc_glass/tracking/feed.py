"""What one tracker has durably sent, and the order in which a run's steps reach it.

A tracker (a "sink": TensorBoard, W&B) receives whole env steps: the eval.csv and train.csv values written at
that step and its media, in one call. A step is held back until a later step arrives (or the run has ended):
an interrupted run that resumes at its checkpoint step may still add rows at that step (an evaluation stopped
half-way runs again), and W&B drops any step at or below one it has already committed.

`sent` is the last step a tracker holds for certain. It is kept in <run>/tracking.json (TrackingState),
written after the tracker has the data, so after a SIGKILL it may lag what the tracker holds, never lead it:
TensorBoard then hides the events from sent + 1 on (purge_step) and they are written again; W&B reads back
what it really holds (its own files, or the server) when it opens.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional, Protocol

from .. import runlayout


class TrackingState:
    """<run>/tracking.json: {"tensorboard": {"sent": step}, "wandb": {"id": ..., "sent": step}} (atomic writes)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / runlayout.TRACKING
        self.data = runlayout.read_json_object(self.path)

    def section(self, name: str) -> dict:
        value = self.data.get(name)
        if not isinstance(value, dict):
            value = self.data[name] = {}
        return value

    def sent(self, name: str) -> int:
        value = self.section(name).get("sent", -1)
        return value if isinstance(value, int) else -1

    def update(self, name: str, **fields) -> None:
        self.section(name).update(fields)
        runlayout.write_atomic(self.path, json.dumps(self.data, indent=1) + "\n")


class Sink(Protocol):
    """What a tracker offers a Feed (TensorBoardSink, WandbSink)."""

    name: str

    def open(self, sent: int) -> int:
        """Start (or continue) the tracker's run; the last step it already holds (>= sent)."""
        ...

    def send(self, step: int, values: dict, media: dict) -> None:
        ...

    def close(self) -> None:
        ...


class Feed:
    """Steps in order into one sink, each step once. The sink opens at its first step to send (an export with
    nothing new opens nothing). `fail(sink name, error)` is called once when the sink raises; the feed is then
    off for the rest of this process (its state is whatever was durably sent: a later export catches up)."""

    def __init__(self, sink: Sink, sent: int, fail: Callable[[str, BaseException], None]):
        self.sink, self.sent, self.fail = sink, sent, fail
        self.pending: Optional[tuple[int, dict, dict]] = None
        self.opened = self.broken = False
        self.sent_now = 0  # steps sent by this process (for `export`'s report)

    def add(self, step: int, values: dict, media: dict) -> None:
        if self.broken or step <= self.sent:
            return  # the sink holds this step already
        if self.pending is not None and step > self.pending[0]:
            self._commit()
        if self.pending is not None and step == self.pending[0]:
            self.pending[1].update(values)
            self.pending[2].update(media)
        elif self.pending is None or step > self.pending[0]:
            self.pending = (step, dict(values), dict(media))
        # a step below the one held back came from a file read after the live row: it is there already

    def _commit(self) -> None:
        step, values, media = self.pending
        self.pending = None
        if self.broken:
            return
        try:
            if not self.opened:
                self.sent = max(self.sent, self.sink.open(self.sent))
                self.opened = True
            if step > self.sent:
                self.sink.send(step, values, media)
                self.sent, self.sent_now = step, self.sent_now + 1
        except Exception as e:  # noqa: BLE001 - a tracker must never stop training
            self._break(e)

    def close(self, final: bool) -> None:
        """Send the held-back step when the run has ended (`final`), then close the sink."""
        if final and self.pending is not None:
            self._commit()
        if self.opened and not self.broken:
            try:
                self.sink.close()
            except Exception as e:  # noqa: BLE001
                self._break(e)
        self.opened = False

    def _break(self, error: BaseException) -> None:
        self.broken = True
        self.fail(self.sink.name, error)
        try:
            if self.opened:
                self.sink.close()
        except Exception:  # noqa: BLE001 - closing a broken tracker is best effort
            pass
