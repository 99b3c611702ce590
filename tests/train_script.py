"""Runs a tiny training job in its own process (used by test_train.py to kill and resume it), and the
helpers the training tests share: the tiny config, CSV rows without timings, the extend-equals-uninterrupted check."""
import csv
import json
import sys
from dataclasses import replace

from tdmpc_glass.config import Config
from tdmpc_glass.train import train


def tiny_config(**train_overrides) -> Config:
    cfg = Config(task="hopper-hop", horizon=3)
    m = cfg.model
    m.size, m.enc_dim, m.mlp_dim, m.latent_dim, m.num_q = 1, 32, 32, 16, 2
    p = cfg.planner
    p.iterations, p.num_samples, p.num_elites, p.num_pi_trajs = 2, 16, 4, 2
    cfg.optim.batch_size = 16
    t = cfg.train
    t.steps, t.num_envs, t.episode_length, t.collect_steps, t.k_update = 320, 2, 20, 10, 4
    t.expl_until, t.seed_updates, t.buffer_capacity = 80, 8, 400
    t.eval_freq, t.eval_episodes, t.log_freq, t.checkpoint_freq, t.num_workers = 80, 2, 40, 80, 0
    for key, value in train_overrides.items():
        setattr(t, key, value)
    return cfg


def rows(path, drop=("wall_time_s", "updates_per_s", "env_steps_per_s")):
    """A run's CSV rows without the wall-clock columns (the rest is deterministic on CPU)."""
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(f)]


def assert_extension_reproduces(cfg: Config, seeds, full_dirs, parts_root, stop_at: int) -> None:
    """Train `seeds` to stop_at env steps, then extend to cfg.train.steps: eval.csv and train.csv must equal those
    of the uninterrupted runs in full_dirs."""
    parts = [parts_root / f"seed{s}" for s in seeds]
    assert train(replace(cfg, train=replace(cfg.train, steps=stop_at)), list(seeds), parts, progress=False) == 0
    assert train(cfg, list(seeds), parts, progress=False) == 0
    for run, ref in zip(parts, full_dirs):
        assert rows(run / "eval.csv") == rows(ref / "eval.csv")
        assert rows(run / "train.csv") == rows(ref / "train.csv")


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    cfg = tiny_config(**spec.get("train", {}))
    for key, value in spec.get("planner", {}).items():
        setattr(cfg.planner, key, value)
    sys.exit(train(cfg, spec["seeds"], spec["run_dirs"], progress=spec.get("progress", False)))
