"""W&B's transaction logs (<dir>/wandb/{offline-run,run}-<time>-<id>/run-<id>.wandb), read back without W&B.

W&B writes every record of a run (history rows among them) to this file as the run goes: a 7-byte header
(":W&B", 0xBEE1, version 0), then blocks of 32 KiB holding records as in LevelDB's log (crc32, length, type:
full / first / middle / last; a record never straddles a block, a block's tail under 7 bytes is padding),
each a wandb.proto Record. A record cut short by a kill fails its checksum and ends the read.
`history_steps` is how an offline W&B run learns which steps a killed process had really written.
"""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Iterator

from .. import runlayout

HEADER = struct.Struct("<4sHB")
RECORD = struct.Struct("<IHB")
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def run_files(run_dir: Path, run_id: str) -> list[Path]:
    """The transaction logs of W&B run `run_id` under a run dir, oldest process first."""
    folder = Path(run_dir) / runlayout.WANDB
    found = list(folder.glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    found += list(folder.glob(f"run-*-{run_id}/run-{run_id}.wandb"))
    return sorted(found, key=lambda p: p.parent.name.removeprefix("offline-").split("-")[1])  # start time


def records(path: Path) -> Iterator[bytes]:
    """The complete records of one transaction log, in order (stops at the first damaged or partial one)."""
    data = Path(path).read_bytes()
    if len(data) < HEADER.size or HEADER.unpack_from(data)[:2] != (b":W&B", 0xBEE1):
        return
    pos, parts = HEADER.size, []
    while pos + RECORD.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < RECORD.size:
            pos += left
            continue
        crc, length, kind = RECORD.unpack_from(data, pos)
        chunk = data[pos + RECORD.size: pos + RECORD.size + length]
        if len(chunk) < length or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            return
        pos += RECORD.size + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            parts = [chunk]
        elif kind == MIDDLE:
            parts.append(chunk)
        elif kind == LAST:
            yield b"".join(parts + [chunk])
            parts = []


def history(path: Path) -> Iterator[tuple[int, dict]]:
    """(step, {key: value}) of each history row a transaction log holds (W&B's own _step, _runtime, ...
    included)."""
    from wandb.proto import wandb_internal_pb2

    for data in records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") != "history":
            continue
        row = {}
        for item in record.history.item:
            key = item.key or "/".join(item.nested_key)
            row[key] = json.loads(item.value_json)
        yield int(record.history.step.num), row


def history_steps(run_dir: Path, run_id: str) -> list[int]:
    """Every history step W&B run `run_id` has written under a run dir, over all its processes, in order."""
    return [step for path in run_files(run_dir, run_id) for step, _ in history(path)]
