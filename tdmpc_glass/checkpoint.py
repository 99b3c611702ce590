"""Per-seed checkpoints: one .npz holding every array leaf of a seed's AgentState plus a JSON meta record.

Written to a temp file and renamed, so a kill at any moment leaves either the old or the new file; the last
`keep` checkpoints are kept. A write that fails (a full disk: runlayout.DiskFullError) removes its temp file
and keeps every older checkpoint. Loading checks the leaf count, shapes and dtypes against a template state;
a file that cannot be read at all raises DamagedCheckpointError (resume.py then falls back to the one before).
"""
from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path

import jax
import numpy as np

from . import runlayout, seams

PREFIX, SUFFIX = runlayout.CHECKPOINT_PREFIX, runlayout.CHECKPOINT_SUFFIX
TMP_SUFFIX = ".tmp"


class CheckpointError(runlayout.RunFileError):
    """A checkpoint that cannot be resumed here: one line naming the file."""


class DamagedCheckpointError(CheckpointError):
    """A checkpoint file that cannot be read (truncated, corrupted bytes): not a config mismatch."""


def path_for(ckpt_dir: Path, env_step: int) -> Path:
    return Path(ckpt_dir) / runlayout.checkpoint_name(env_step)


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    return sorted(p for p in ckpt_dir.glob(f"{PREFIX}*{SUFFIX}") if runlayout.checkpoint_step(p) is not None)


def save(ckpt_dir: Path, env_step: int, state_leaves: list[np.ndarray], meta: dict, keep: int = 2) -> Path:
    ckpt_dir = Path(ckpt_dir)
    final = path_for(ckpt_dir, env_step)
    tmp = final.with_name(final.name + TMP_SUFFIX)
    arrays = {f"leaf_{i:05d}": np.asarray(x) for i, x in enumerate(state_leaves)}
    try:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            seams.write("checkpoint_savez", np.savez, f,
                        __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
            f.flush()
            os.fsync(f.fileno())
        seams.write("checkpoint_rename", os.replace, tmp, final)
    except BaseException as e:  # nothing half-written stays; the older checkpoints are untouched
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise runlayout.disk_full(e, final) from None
        raise
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        old.unlink(missing_ok=True)
    for stale in ckpt_dir.glob(f"{PREFIX}*{SUFFIX}{TMP_SUFFIX}"):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)
    return final


def load(path: Path, template) -> tuple[object, dict]:
    """Restore a pytree shaped like `template` (arrays or ShapeDtypeStructs) from `path`."""
    leaves, treedef = jax.tree.flatten(template)
    try:
        with np.load(path) as data:
            meta = json.loads(data["__meta__"].tobytes().decode())
            names = sorted(k for k in data.files if k.startswith("leaf_"))
            if len(names) != len(leaves):
                raise CheckpointError(f"incompatible checkpoint {path}: {len(names)} arrays, the config needs "
                                      f"{len(leaves)} (different model or Glass settings?)")
            restored = []
            for i, (name, want) in enumerate(zip(names, leaves)):
                got = data[name]
                if got.shape != tuple(want.shape) or got.dtype != want.dtype:
                    raise CheckpointError(f"incompatible checkpoint {path}: array {i} is {got.dtype}{list(got.shape)}, "
                                          f"the config needs {want.dtype}{list(want.shape)}")
                restored.append(got)
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:  # cut short, bad bytes
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise DamagedCheckpointError(f"unreadable checkpoint {path}: {type(e).__name__}: {first}") from None
    return jax.tree.unflatten(treedef, restored), meta
