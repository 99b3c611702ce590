"""What gathering costs training: ms per agent step of the trainer's own loop with the shipper on vs off, one run.

  python -m experiments.fleet_bench [--phase demo] [--blocks 3] [--rounds 20] [--checkpoint-mb 155] [--out f.jsonl]

A Trainer of the phase's config (one seed) trains in a scratch folder, after warm-up rounds (exploration, the
seeding burst, compilation). Then blocks alternate, off / on, so a noisy machine slows both alike: each block
first takes a checkpoint (trainer.save_checkpoints, the demo-size one) and, with --checkpoint-mb, drops a
synthetic checkpoint of that many MB beside it (`base` scale: ~155 MB, the size of its AgentState), then times
--rounds rounds. With gathering on, a Shipper thread in this process follows the scratch run dir and sends
every change to a gatherer actor (Ray, started here) owning another runs root, as a sweep's worker does, so the
rounds run while the checkpoints travel. One JSON line: medians of ms per agent step off and on, their ratio,
and how long each checkpoint took to reach the gathered copy.

On one machine the gatherer's writes share the training process's cores and disk; on a fleet they run on the
launching machine, so the ratio here is an upper bound of what a worker pays.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tdmpc_glass import checkpoint, runlayout


def bench_gathering(cfg, blocks: int, rounds: int, checkpoint_mb: float, interval_s: float = 0.5) -> dict:
    import jax
    import numpy as np
    import ray

    from experiments import fleet
    from experiments.shipper import Shipper
    from tdmpc_glass.train import Trainer

    rel = "bench/default/seed1"
    with tempfile.TemporaryDirectory() as tmp:
        scratch, gathered = Path(tmp) / "scratch", Path(tmp) / "gathered"
        run_dir = scratch / rel
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        trainer = Trainer(cfg, [1], [run_dir], progress=False)
        try:
            gatherer = fleet.start_gatherer(gathered, {"PYTHONPATH": os.environ.get("PYTHONPATH", "")})
            transport = fleet.RayTransport(gatherer)
            epoch = transport.acquire([rel], "bench", {"job": "bench", "node": "here", "pid": os.getpid()})
            loop = trainer.restore_or_init()
            ticks, d = trainer.d.steps_per_env_per_round, trainer.d
            warm = -(-d.expl_until_env_steps // (ticks * trainer.schedule.env_steps_per_tick)) + 3
            for _ in range(warm):
                loop = trainer.advance(loop)
            jax.block_until_ready(loop.states)
            synthetic = np.random.default_rng(0).bytes(int(checkpoint_mb * 1e6)) if checkpoint_mb else b""
            shipper = Shipper(transport, scratch, [run_dir], epoch, interval_s=interval_s)
            shipper.scan()  # what warm-up wrote is gathered before timing starts
            while not shipper.scan():
                pass
            ms = {"off": [], "on": []}
            gathered_after_s, demo_bytes = [], 0
            for block in range(2 * blocks):
                on = block % 2 == 1
                trainer.save_checkpoints(loop)
                demo_bytes = checkpoint.path_for(run_dir / runlayout.CHECKPOINTS,
                                                 trainer.env_step(loop.counters)).stat().st_size
                if synthetic:  # a new file each block, the one before the last rotated out as checkpoints are
                    big = run_dir / runlayout.CHECKPOINTS / f"synthetic_{block:03d}.npz"
                    with open(big, "wb") as f:
                        f.write(synthetic)
                    for old in sorted((run_dir / runlayout.CHECKPOINTS).glob("synthetic_*.npz"))[:-2]:
                        old.unlink()
                if on:
                    shipper.start()
                t0 = time.perf_counter()
                for _ in range(rounds):
                    loop = trainer.advance(loop)
                jax.block_until_ready(loop.states)
                ms["on" if on else "off"].append(1e3 * (time.perf_counter() - t0) / (rounds * ticks))
                if on:
                    if not shipper.stop():
                        raise RuntimeError(f"gathering failed: {shipper.last_error}")
                    gathered_after_s.append(time.perf_counter() - t0)
                else:  # off: what this block wrote is sent after it, untimed
                    while not shipper.scan():
                        pass
            for path in (run_dir / runlayout.CHECKPOINTS).glob("*.npz"):
                copy = gathered / path.relative_to(scratch)
                assert copy.stat().st_size == path.stat().st_size, copy
            off, on_ = statistics.median(ms["off"]), statistics.median(ms["on"])
            return {"bench": "gathering", "seeds": 1, "envs": trainer.E, "agent_steps_per_block": rounds * ticks,
                    "blocks_each": blocks, "demo_checkpoint_mb": round(demo_bytes / 1e6, 3),
                    "synthetic_checkpoint_mb": checkpoint_mb,
                    "ms_per_agent_step_off": round(off, 3), "ms_per_agent_step_on": round(on_, 3),
                    "ratio_on_off": round(on_ / off, 3), "blocks_off_ms": [round(x, 3) for x in ms["off"]],
                    "blocks_on_ms": [round(x, 3) for x in ms["on"]],
                    "block_s": round(statistics.median(ms["on"]) * rounds * ticks / 1e3, 2),
                    "on_block_gathered_after_s": [round(x, 2) for x in gathered_after_s]}
        finally:
            trainer.close()
            ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    from experiments.bench import _phase_config
    from experiments.rundirs import LaunchError, enable_compilation_cache

    p = argparse.ArgumentParser(prog="python -m experiments.fleet_bench", description=__doc__.splitlines()[0])
    p.add_argument("--phase", default="demo")
    p.add_argument("--variant", default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--blocks", type=int, default=3, help="blocks with gathering off, and as many on")
    p.add_argument("--rounds", type=int, default=20, help="rounds per block")
    p.add_argument("--checkpoint-mb", type=float, default=0.0, help="a synthetic checkpoint of this size per block")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    try:
        cfg = _phase_config(args)
        enable_compilation_cache()
    except LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    record = bench_gathering(cfg, args.blocks, args.rounds, args.checkpoint_mb)
    line = json.dumps(record)
    print(line, flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
