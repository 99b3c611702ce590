"""One run's exports: a Feed per switched-on tracker, fed first from the run's files (what earlier processes
or an untracked run left to send), then from the rows the trainer writes live."""
from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Callable, Optional

import yaml

from .. import runlayout
from . import rows
from .feed import Feed, TrackingState


def describe_error(error: BaseException) -> str:
    text = " ".join(str(error).split()) or "(no message)"
    return f"{type(error).__name__}: {text[:300]}"


def read_config(run_dir: Path) -> Optional[dict]:
    """The run's config.yaml record ({phase, seed, config}), None when missing or unreadable."""
    try:
        record = yaml.safe_load((Path(run_dir) / runlayout.CONFIG).read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return record if isinstance(record, dict) else None


class RunExporter:
    """Exports of one run dir to the trackers `tracking` (a config.TrackingConfig) switches on.

    config: the run's config record when the run dir has no config.yaml (W&B's run config and TensorBoard's
    first text are the run's config.yaml: phase, seed and the resolved config). floor: the last env step
    on disk when this process began (rows a kill left past the checkpoint are cut by then: what TensorBoard
    holds past the floor is written again); None: read it now. on_failure(tracker, message) is
    called once per tracker that fails; the tracker is off for the rest of this process."""

    def __init__(self, run_dir: Path, tracking, config: Optional[dict] = None, floor: Optional[int] = None,
                 attempt: int = 0, on_failure: Optional[Callable[[str, str], None]] = None):
        self.run_dir = Path(run_dir)
        self.state = TrackingState(self.run_dir)
        self.on_failure = on_failure or (lambda tracker, message: None)
        floor = rows.last_step(self.run_dir) if floor is None else floor
        config = read_config(self.run_dir) or config
        phase, variant, seed = rows.identity(self.run_dir)
        self.feeds: list[Feed] = []
        if tracking.tensorboard:
            from .tensorboard import TensorBoardSink

            texts = {}
            if config is not None:
                texts["config"] = "```\n" + yaml.safe_dump(config, sort_keys=False) + "```"
            sink = TensorBoardSink(self.run_dir, self.state, texts)
            self.feeds.append(Feed(sink, min(self.state.sent(sink.name), floor), self._failed))
        if tracking.wandb != "off":
            from .wandb_sink import WandbSink

            name = f"{phase}/{variant}/{seed}" + (f"/attempt{attempt}" if attempt else "")
            sink = WandbSink(self.run_dir, self.state, tracking.wandb, tracking.project, tracking.entity,
                             tracking.group or f"{phase}/{variant}", name, config)
            self.feeds.append(Feed(sink, self.state.sent(sink.name), self._failed))

    def _failed(self, tracker: str, error: BaseException) -> None:
        message = describe_error(error)
        if os.environ.get("TDMPC_GLASS_TRACKING_TRACEBACK"):  # for debugging a tracker
            traceback.print_exception(error, file=sys.stderr)
        self.on_failure(tracker, message)

    def catch_up(self) -> None:
        """Every step on disk that a tracker does not hold yet (the last one held back until `close(final)`)."""
        if self.feeds:
            for step, values, media in rows.run_steps(self.run_dir):
                self.add(step, values, media)

    def add(self, step: int, values: dict, media: dict) -> None:
        for feed in self.feeds:
            feed.add(step, values, media)

    def row(self, kind: str, row: dict) -> None:
        """A row the trainer has just appended to <kind>.csv."""
        step = rows.step_of(row)
        if step is not None:
            self.add(step, rows.values_of(kind, row), {})

    def video(self, env_step: int) -> None:
        """The evaluation video at env_step has been written."""
        folder = self.run_dir / runlayout.VIDEOS
        media = rows.media_of(folder, runlayout.eval_video_stem(env_step))
        if media:
            self.add(env_step, {}, media)

    def close(self, final: bool) -> None:
        for feed in self.feeds:
            feed.close(final)

    def sent_now(self) -> dict[str, int]:
        """{tracker: steps sent by this process}."""
        return {feed.sink.name: feed.sent_now for feed in self.feeds}
