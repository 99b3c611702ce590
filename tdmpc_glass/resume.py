"""Checkpoints of a batch of seeds: what must match to resume, and writing and reading every seed's file.

A seed's checkpoint (checkpoint.py: one .npz per seed) holds its AgentState and a meta record:
    {"seed", "env_step", "counters": the loop's Counters as a dict, "fingerprint": config_fingerprint,
     "schedule": {"attempt", "run_seed", + the training env's wrapper state (multi-task p and u)}}
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from . import checkpoint
from .config import Config, to_dict
from .rounds import Counters


def config_fingerprint(cfg: Config) -> str:
    """Everything that must match to resume a checkpoint (train.steps may grow to extend a run; the
    train.video_at_eval switch changes no result, so it is left out and may be flipped on resume)."""
    tree = to_dict(replace(cfg, train=replace(cfg.train, steps=0)))
    tree["train"].pop("video_at_eval", None)
    return json.dumps(tree, sort_keys=True)


def save(states, ckpt_dirs: list[Path], active, seeds, env_step: int, counters: Counters,
         schedule_states: list[dict], cfg: Config) -> None:
    """One checkpoint per active seed at env_step (states: the batch's stacked AgentState)."""
    leaves = jax.tree.leaves(jax.device_get(states))
    fingerprint = config_fingerprint(cfg)
    for i, (seed, ckpt_dir) in enumerate(zip(seeds, ckpt_dirs)):
        if active[i]:
            meta = {"seed": seed, "env_step": env_step, "counters": counters._asdict(), "fingerprint": fingerprint,
                    "schedule": schedule_states[i]}
            checkpoint.save(ckpt_dir, env_step, [x[i] for x in leaves], meta)


def restore(template, ckpt_dirs: list[Path], seeds, attempts, cfg: Config) -> Optional[tuple]:
    """(stacked states, counters, [schedule state per seed]) from every seed's latest checkpoint; None when no
    seed has one. Raises checkpoint.CheckpointError (one line) for checkpoints that cannot be resumed here."""
    latest = [checkpoint.list_checkpoints(d) for d in ckpt_dirs]
    if not any(latest):
        return None
    steps = {int(c[-1].stem.split("_")[1]) if c else None for c in latest}
    if len(steps) != 1:
        detail = ", ".join(f"seed {s}: {c[-1].name if c else 'none'}" for s, c in zip(seeds, latest))
        raise checkpoint.CheckpointError(f"seeds of one batch must resume from the same env step ({detail}); "
                                         "run them in separate batches")
    fingerprint = config_fingerprint(cfg)
    states, metas = [], []
    for seed, attempt, ckpts in zip(seeds, attempts, latest):
        state, meta = checkpoint.load(ckpts[-1], template)
        if meta.get("fingerprint") != fingerprint:
            raise checkpoint.CheckpointError(f"incompatible checkpoint {ckpts[-1]}: written with a different config")
        if meta.get("seed") != seed:
            raise checkpoint.CheckpointError(f"incompatible checkpoint {ckpts[-1]}: it is seed {meta.get('seed')}, "
                                             f"not seed {seed}")
        schedule = meta.get("schedule", {})
        if int(schedule.get("attempt", 0)) != attempt:
            raise checkpoint.CheckpointError(f"incompatible checkpoint {ckpts[-1]}: it is restart attempt "
                                             f"{schedule.get('attempt', 0)}, this run is attempt {attempt}")
        states.append(state)
        metas.append(meta)
    stacked = jax.tree.map(lambda *xs: jnp.asarray(np.stack(xs)), *states)
    return stacked, Counters(**metas[0]["counters"]), [m.get("schedule", {}) for m in metas]
