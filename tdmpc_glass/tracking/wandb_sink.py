"""W&B export: one W&B run per seed, named <phase>/<variant>/seed<k>, grouped by phase and variant (or
tracking.group), its config the run's resolved config. Its id is kept in <run>/tracking.json before W&B
starts, so every process of the run (and `export`) continues the same W&B run (resume="allow").

Steps are env steps (W&B's own step and an `env_step` value, the x-axis of every eval/, train/ and videos/
chart). W&B drops any step at or below one it has committed, so a step is sent once: on opening, the sink
asks what W&B holds already: offline, its own transaction logs in <run>/wandb/ (a killed process may have
written a step that tracking.json does not record yet); online, the server's step of the resumed run.
Evaluation videos go as wandb.Video and their K timelines as wandb.Image. W&B's files stay in <run>/wandb/;
`wandb sync <run>/wandb/offline-run-*` uploads offline runs.
"""
from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from typing import Optional

from .. import runlayout
from . import wandb_files
from .feed import Sink, TrackingState

SAVED = (runlayout.CONFIG, runlayout.EVENTS, runlayout.PROVENANCE)  # uploaded with the run as files


class WandbSink(Sink):
    name = "wandb"

    def __init__(self, run_dir: Path, state: TrackingState, mode: str, project: str, entity: Optional[str],
                 group: str, name: str, config: Optional[dict]):
        self.run_dir, self.state, self.mode = Path(run_dir), state, mode
        self.project, self.entity, self.group, self.run_name, self.config = project, entity, group, name, config
        self.run = None

    def run_id(self) -> str:
        """The W&B run id of this run dir, made and saved (before W&B starts) the first time."""
        run_id = self.state.section(self.name).get("id")
        if not isinstance(run_id, str) or not run_id:
            run_id = secrets.token_hex(4)
            self.state.update(self.name, id=run_id)
        return run_id

    def open(self, sent: int) -> int:
        import wandb

        run_id = self.run_id()
        self.run = wandb.init(
            project=self.project, entity=self.entity, group=self.group, name=self.run_name, id=run_id,
            resume="allow", dir=str(self.run_dir), mode=self.mode, config=self.config, job_type="train",
            reinit="create_new",  # one W&B run per seed of the batch, side by side in this process
            settings=wandb.Settings(silent=True, quiet=True, show_warnings=False, console="off",
                                    x_disable_stats=True, save_code=False, init_timeout=60))
        self.run.define_metric("env_step")
        for prefix in ("eval", "train", "videos"):
            self.run.define_metric(f"{prefix}/*", step_metric="env_step")
        if self.mode == "offline":
            held = max(wandb_files.history_steps(self.run_dir, run_id), default=-1)
        else:  # the server's history of the resumed run: W&B continues at its next step
            held = (int(self.run.step) - 1) if self.run.resumed else -1
        return max(sent, held)

    def send(self, step: int, values: dict, media: dict) -> None:
        import wandb

        data = {"env_step": step, **values}
        if "video" in media:
            data["videos/mppi"] = wandb.Video(str(media["video"]), format="mp4")
        if "timeline" in media:
            data["videos/k_timeline"] = wandb.Image(str(media["timeline"]))
        self.run.log(data, step=step, commit=True)
        self.last = step

    def close(self) -> None:
        if self.run is None:
            return
        run, self.run = self.run, None
        for name in SAVED:  # copies in the W&B run's folder are uploaded with it (a save would symlink)
            if (self.run_dir / name).is_file():
                shutil.copyfile(self.run_dir / name, Path(run.dir) / name)
        run.finish()
        last = getattr(self, "last", None)
        if last is not None:  # everything up to here is in W&B's files now
            self.state.update(self.name, sent=max(last, self.state.sent(self.name)))
