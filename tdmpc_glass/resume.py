"""Checkpoints of a batch of seeds: what must match to resume, and writing and reading every seed's file.

A seed's checkpoint (checkpoint.py: one .npz per seed) holds its AgentState and a meta record:
    {"seed", "env_step", "counters": the loop's Counters as a dict, "fingerprint": config_fingerprint,
     "schedule": {"attempt", "run_seed", + the training env's wrapper state (multi-task p and u)}}
A batch resumes from the newest env step at which every seed's checkpoint reads (restore): a damaged newest
file falls back to the one before it with a warning naming the file.
"""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from . import checkpoint, runlayout, seams
from .config import Config, to_dict
from .rounds import Counters


def config_fingerprint(cfg: Config) -> str:
    """Everything that must match to resume a checkpoint: the config less the keys a resume may change
    (runlayout.extendable, the one rule launcher, trainer and videos share). train.steps stays as 0, as
    checkpoints have always recorded it."""
    tree = to_dict(replace(cfg, train=replace(cfg.train, steps=0)))
    return json.dumps(_without_extendable(tree), sort_keys=True)


def _without_extendable(tree: dict, prefix: str = "") -> dict:
    """`tree` less its extendable keys (train.steps kept); a section left empty by that goes too."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            kept = _without_extendable(value, name + ".")
            if kept:
                out[key] = kept
        elif name == "train.steps" or not runlayout.extendable(name):
            out[key] = value
    return out


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
            seams.notify("checkpoint_saved")


def warn_on_stderr(seed_index: int, message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def restore(template, ckpt_dirs: list[Path], seeds, attempts, cfg: Config,
            on_warning: Optional[Callable[[int, str], None]] = None) -> Optional[tuple]:
    """(stacked states, counters, [schedule state per seed]) from the newest env step at which every seed has a
    readable checkpoint; None when no seed has one.

    A seed's newest checkpoint that cannot be read (truncated, corrupted: checkpoint.DamagedCheckpointError), or
    one a kill left behind for only some seeds of the batch, is passed over for the one before it: every seed
    resumes from that same env step, and `on_warning(seed index, one line naming the file)` is called for each
    file passed over (default: a line on stderr); such files are removed. A kill inside the batch's first
    checkpoint (some seeds have it, the others none) starts the batch over (None). Raises
    checkpoint.CheckpointError (one line) when no common step exists otherwise, and for a checkpoint of another
    config, seed or restart attempt (never passed over: those are not damage but a wrong run dir)."""
    warn = on_warning or warn_on_stderr
    found = [{runlayout.checkpoint_step(p): p for p in checkpoint.list_checkpoints(d)} for d in ckpt_dirs]
    if not any(found):
        for i, d in enumerate(ckpt_dirs):
            recorded = runlayout.read_status(Path(d).parent).get("env_step")
            if isinstance(recorded, int) and recorded > 0:
                warn(i, f"no checkpoint in {d} although {Path(d).parent / runlayout.STATUS} records env step "
                        f"{recorded}: starting over from env step 0")
        return None
    fingerprint = config_fingerprint(cfg)
    common = sorted(set.intersection(*(set(f) for f in found)), reverse=True)
    damaged: dict[Path, str] = {}
    for step in common:
        loaded = []
        for i, (seed, attempt) in enumerate(zip(seeds, attempts)):
            path = found[i][step]
            try:
                state, meta = checkpoint.load(path, template)
            except checkpoint.DamagedCheckpointError as e:
                damaged[path] = str(e)
                break
            _check_meta(path, meta, fingerprint, seed, attempt)
            loaded.append((state, meta))
        else:
            _warn_passed_over(found, step, damaged, warn)
            states = [state for state, _ in loaded]
            metas = [meta for _, meta in loaded]
            stacked = jax.tree.map(lambda *xs: jnp.asarray(np.stack(xs)), *states)
            return stacked, Counters(**metas[0]["counters"]), [m.get("schedule", {}) for m in metas]
    if all(len(f) <= 1 for f in found) and len(set().union(*found)) == 1:
        # a kill inside the batch's first checkpoint (some seeds have it, some not): the batch starts over
        _warn_passed_over(found, -1, damaged, warn)
        return None
    if damaged:
        raise checkpoint.CheckpointError("no env step at which every seed of the batch has a readable checkpoint: "
                                         + "; ".join(damaged.values()))
    detail = ", ".join(f"seed {s}: {', '.join(p.name for p in f.values()) if f else f'none in {d}'}"
                       for s, f, d in zip(seeds, found, ckpt_dirs))
    raise checkpoint.CheckpointError(f"seeds of one batch must resume from the same env step ({detail}); "
                                     "run them in separate batches")


def fingerprint_difference(old: str, new: str) -> Optional[str]:
    """The first config key on which a checkpoint's fingerprint `old` and this run's `new` differ, described;
    None when they match. A key the schema gained after the checkpoint was written matches while it holds
    its default, so runs started before a new option existed resume with it off."""
    if old == new:
        return None
    try:
        old_flat = runlayout.flatten(json.loads(old))
    except (TypeError, ValueError):
        return "its config fingerprint is unreadable"
    new_flat = runlayout.flatten(json.loads(new))
    defaults = runlayout.flatten(json.loads(config_fingerprint(Config())))
    for key in list(new_flat) + [k for k in old_flat if k not in new_flat]:
        if runlayout.extendable(key):
            continue
        if key not in old_flat and key in defaults and new_flat.get(key) == defaults[key]:
            continue
        if old_flat.get(key, "(absent)") != new_flat.get(key, "(absent)"):
            return f"{key} is {old_flat.get(key, '(absent)')!r} there, {new_flat.get(key, '(absent)')!r} now"
    return None


def _check_meta(path: Path, meta: dict, fingerprint: str, seed: int, attempt: int) -> None:
    difference = fingerprint_difference(meta.get("fingerprint", ""), fingerprint)
    if difference:
        raise checkpoint.CheckpointError(f"incompatible checkpoint {path}: written with a different config "
                                         f"({difference})")
    if meta.get("seed") != seed:
        raise checkpoint.CheckpointError(f"incompatible checkpoint {path}: it is seed {meta.get('seed')}, "
                                         f"not seed {seed}")
    schedule = meta.get("schedule", {})
    if int(schedule.get("attempt", 0)) != attempt:
        raise checkpoint.CheckpointError(f"incompatible checkpoint {path}: it is restart attempt "
                                         f"{schedule.get('attempt', 0)}, this run is attempt {attempt}")


def _warn_passed_over(found: list[dict], step: int, damaged: dict, warn) -> None:
    """One warning per newer checkpoint a batch resuming at `step` does not use; those files are removed (a
    later kill must not resume a seed from a file of the trajectory before this resume)."""
    for i, by_step in enumerate(found):
        for newer in sorted(s for s in by_step if s > step):
            path = by_step[newer]
            if path in damaged:
                why = damaged[path]
            elif any(newer in f and f[newer] in damaged for f in found):
                why = f"checkpoint {path} not used: another seed's checkpoint at env step {newer} is unreadable"
            else:
                why = (f"checkpoint {path} not used: not every seed of the batch reached env step {newer} (a kill "
                       "between the seeds' checkpoint writes)")
            where = f"resuming from env step {step} ({by_step[step].name})" if step >= 0 else "starting over"
            warn(i, f"{why}; {where}, the newer file removed")
            path.unlink(missing_ok=True)  # so the checkpoints left always belong to the resumed run
