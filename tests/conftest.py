"""Shared test setup: CPU only, a persistent XLA cache, and one tiny trained run for every fast test that
needs a trained run's files."""
import os
from pathlib import Path

# CPU only, and a persistent XLA compilation cache shared by the test process and the training subprocesses
# it starts. Most of a tiny run's time is compilation; caching every program (not only slow compiles) lets
# each later trainer, subprocess and test of the same shapes skip it.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # noqa: E402

from train_script import tiny_config  # noqa: E402


class TrainedRuns:
    """Two seeds of the tiny config trained for 320 env steps in this process (tests/train_script.py)."""

    seeds = (1, 2)

    def __init__(self, root: Path):
        from tdmpc_glass.train import Trainer

        self.cfg = tiny_config()
        self.dirs = [root / f"seed{s}" for s in self.seeds]
        trainer = Trainer(self.cfg, list(self.seeds), self.dirs, progress=False)
        try:
            self.exit_code = trainer.run()
        finally:
            trainer.close()
        self.traces = dict(trainer.traces)
        self.state_template = trainer.state_template()


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory) -> TrainedRuns:
    """One tiny training job shared by the fast suite: its run dirs, traces and state shapes (read only)."""
    return TrainedRuns(tmp_path_factory.mktemp("trained"))
