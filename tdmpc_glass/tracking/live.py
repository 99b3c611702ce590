"""A training batch's exports on one background thread: the trainer hands over each row after writing it and
goes on; the thread catches each run up from its files, then sends the live rows. Nothing here runs inside a
jitted call or makes the trainer wait, except `close`, bounded by a timeout.

A tracker that fails (no network, a bad key, a full disk in the export dir) is off for the rest of the
process: `failures()` returns (seed index, tracker, message) for the trainer to print one warning and write
one event; the next process of the run (or `tdmpc-glass export`) catches up from the files.
"""
from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Optional

from .exporter import RunExporter, describe_error

CLOSE_TIMEOUT_S = 120.0  # how long the end of training waits for the exports to finish


class LiveTracking:
    def __init__(self, tracking, run_dirs: list[Path], config: dict, floors: list[int], attempts: list[int]):
        self._failures: queue.SimpleQueue = queue.SimpleQueue()
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self.tracking, self.config, self.floors = tracking, config, list(floors)
        self.dirs, self.attempts = [Path(d) for d in run_dirs], list(attempts)
        self.exporters: list[Optional[RunExporter]] = [None] * len(self.dirs)
        self.thread = threading.Thread(target=self._run, name="tracking", daemon=True)
        self.thread.start()

    # ---- the trainer's side (never blocks) ----------------------------------------------------------------------
    def row(self, i: int, kind: str, row: dict) -> None:
        self._work.put(("row", i, kind, dict(row)))

    def video(self, i: int, env_step: int) -> None:
        self._work.put(("video", i, env_step))

    def failures(self) -> list[tuple[int, str, str]]:
        out = []
        while True:
            try:
                out.append(self._failures.get_nowait())
            except queue.Empty:
                return out

    def close(self, final: list[bool], timeout_s: float = CLOSE_TIMEOUT_S) -> bool:
        """Send what is left (a run that has ended sends its last step too) and close the trackers; False when
        they did not finish within timeout_s (what they had not sent is sent by the next process or export)."""
        self._work.put(("close", list(final)))
        self.thread.join(timeout_s)
        return not self.thread.is_alive()

    # ---- the thread -------------------------------------------------------------------------------------------------
    def _run(self) -> None:
        for i, run_dir in enumerate(self.dirs):
            self._guard(i, "tracking", self._open, i, run_dir)
        while True:
            message = self._work.get()
            if message[0] == "close":
                for i, exporter in enumerate(self.exporters):
                    if exporter is not None:
                        self._guard(i, "tracking", exporter.close, message[1][i])
                return
            exporter = self.exporters[message[1]]
            if exporter is None:
                continue
            if message[0] == "row":
                self._guard(message[1], "tracking", exporter.row, message[2], message[3])
            else:
                self._guard(message[1], "tracking", exporter.video, message[2])

    def _open(self, i: int, run_dir: Path) -> None:
        self.exporters[i] = RunExporter(run_dir, self.tracking, self.config, floor=self.floors[i],
                                        attempt=self.attempts[i],
                                        on_failure=lambda tracker, text: self._failures.put((i, tracker, text)))
        self.exporters[i].catch_up()

    def _guard(self, i: int, tracker: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - reading files or starting a tracker must never stop training
            self.exporters[i] = None
            self._failures.put((i, tracker, describe_error(e)))
