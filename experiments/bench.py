"""Benchmarks: JSON lines of updates/s, planner decisions/s, env steps/s, compile times and peak memory.

  python -m experiments.bench --size 5 --seeds 1 5 --num-samples 512 --envs 1 16 [--out bench.jsonl]
  python -m experiments.bench --phase demo --seeds 1 5 [--set key=value ...] [--rounds 50] [--blocks 5] [--eval]
                             [--tracking]

The second form times the training loop itself on a phase's config (`loop` records): blocks of rounds of the
trainer's own loop (train.csv rows and interventions included), each followed by the compute alone on the same
states (COMPUTE_REPS planning calls, COMPUTE_REPS rounds of updates, each inside one jitted call), so a noisy
machine slows both alike. Medians over the blocks of ms per agent step: end to end, env stepping, the loop's
jitted calls, train.csv rows, the loop's own Python, the compute alone, the calls' fixed cost (their time
minus that compute) and the loop's own share of the step; `--eval` adds an evaluation and a checkpoint
amortised over their frequencies; `--tracking` alternates blocks with live exports off and on (TensorBoard +
offline W&B of every train.csv row) and reports both and their ratio. `allocator` says whether the process ran
under tcmalloc.

Each measurement is one JSON object per line (stdout, and appended to --out). Timings exclude compilation
(reported separately), synchronise with block_until_ready, and take the median of --repeats timed calls.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import allocator


def _device_info() -> dict:
    dev = jax.devices()[0]
    return {"backend": jax.default_backend(), "device": getattr(dev, "device_kind", str(dev)),
            "jax": jax.__version__, "host": platform.node()}


def _peak_memory_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
    if stats:
        return int(stats.get("peak_bytes_in_use", 0))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # host RSS on CPU


def _time(fn, repeats: int) -> tuple[float, float]:
    """(compile+first call seconds, median seconds of later calls)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def _config(args, num_envs: int):
    from tdmpc_glass.config import Config
    cfg = Config(task=args.task)
    cfg.model.size = args.size
    cfg.planner.num_samples = args.num_samples
    cfg.planner.num_elites = min(cfg.planner.num_elites, args.num_samples // 2)
    cfg.planner.num_pi_trajs = min(cfg.planner.num_pi_trajs, args.num_samples // 4)
    cfg.optim.batch_size = args.batch_size
    cfg.train.num_envs = num_envs
    cfg.train.buffer_capacity = max(args.buffer, num_envs * 1002)
    return cfg


def bench_updates(args, num_seeds: int, obs_dim: int, act_dim: int) -> dict:
    import equinox as eqx
    from tdmpc_glass import agent, buffer as replay
    cfg = _config(args, 1)
    states = jax.jit(jax.vmap(lambda s: agent.init_state(cfg, obs_dim, act_dim, s)))(jnp.arange(num_seeds))
    n = 1001  # two episodes of random rows so sampling has valid slices
    rng = np.random.default_rng(0)
    rows = lambda *shape: jnp.asarray(rng.standard_normal((num_seeds, n, 1, *shape)), jnp.float32)
    pos = jnp.broadcast_to((jnp.arange(n) % 501)[None, :, None], (num_seeds, n, 1))
    bufs = jax.vmap(replay.add)(states.buffer, rows(obs_dim), jnp.tanh(rows(act_dim)), rows(), pos)
    states = eqx.tree_at(lambda s: s.buffer, states, bufs)
    h = agent.Hyper.from_config(cfg)
    world_tx, policy_tx = agent.optimisers(cfg)
    k = args.updates_per_call
    run = jax.jit(jax.vmap(lambda s: agent.run_updates(s, 0, k, h, world_tx, policy_tx)))
    compile_s, call_s = _time(lambda: run(states), args.repeats)
    return {"bench": "updates", "size": args.size, "seeds": num_seeds, "batch_size": args.batch_size,
            "updates_per_call": k, "compile_s": compile_s - call_s, "ms_per_update": 1e3 * call_s / k,
            "updates_per_s_per_seed": k / call_s, "updates_per_s_total": k * num_seeds / call_s}


def bench_planner(args, num_seeds: int, num_envs: int, obs_dim: int, act_dim: int) -> dict:
    from tdmpc_glass import agent
    from tdmpc_glass.config import derive
    from tdmpc_glass.planner import PlanSettings, plan_batch
    cfg = _config(args, num_envs)
    states = jax.jit(jax.vmap(lambda s: agent.init_state(cfg, obs_dim, act_dim, s)))(jnp.arange(num_seeds))
    s = PlanSettings.from_config(cfg.planner, cfg.horizon, derive(cfg).discount)
    obs = jax.random.normal(jax.random.PRNGKey(0), (num_seeds, num_envs, obs_dim))
    keys = jax.random.split(jax.random.PRNGKey(1), num_seeds * num_envs).reshape(num_seeds, num_envs, -1)
    prev = jnp.zeros((num_seeds, num_envs, cfg.horizon, act_dim))
    plan = jax.jit(lambda st, o, p, k: plan_batch(st.world, st.policy, o, p, k, s, False))
    compile_s, call_s = _time(lambda: plan(states, obs, prev, keys), args.repeats)
    return {"bench": "planner", "size": args.size, "seeds": num_seeds, "envs": num_envs,
            "num_samples": args.num_samples, "iterations": cfg.planner.iterations, "compile_s": compile_s - call_s,
            "ms_per_call": 1e3 * call_s, "decisions_per_s": num_seeds * num_envs / call_s}


def bench_envs(args, num_envs: int) -> dict:
    from tdmpc_glass.envs import EnvPool
    with EnvPool(args.task, num_envs, 2, args.workers) as pool:
        pool.reset(np.arange(num_envs))
        actions = np.random.default_rng(0).uniform(-1, 1, (args.env_steps, num_envs, pool.act_dim))
        t0 = time.perf_counter()
        for a in actions:
            pool.step(a.astype(np.float32))
        dt = time.perf_counter() - t0
    return {"bench": "envs", "task": args.task, "envs": num_envs, "workers": args.workers,
            "agent_steps_per_s": args.env_steps * num_envs / dt, "env_steps_per_s": 2 * args.env_steps * num_envs / dt}


def _median_ms(fn, repeats: int) -> float:
    return 1e3 * _time(fn, repeats)[1]


def bench_loop(args, cfg, num_seeds: int) -> dict:
    """The trainer's own loop on a phase's config: warm-up rounds (exploration, the seeding burst, compilation),
    then --blocks blocks, each --rounds rounds of the loop (logging and interventions included) followed by the
    compute alone on the same states, so a noisy machine slows both alike; medians over the blocks."""
    import tempfile

    from tdmpc_glass.train import Trainer

    with tempfile.TemporaryDirectory() as root:
        trainer = Trainer(cfg, list(range(1, num_seeds + 1)), [f"{root}/seed{s}" for s in range(num_seeds)],
                          progress=False)
        try:
            loop = trainer.restore_or_init()
            ticks, d = trainer.d.steps_per_env_per_round, trainer.d
            warm = -(-d.expl_until_env_steps // (ticks * trainer.schedule.env_steps_per_tick)) + args.warmup_rounds
            for _ in range(warm):
                loop = trainer.advance(loop)
            plan_call, update_call = _compute_alone(cfg, trainer)
            plan_call(loop), update_call(loop)  # compile
            steps, blocks = args.rounds * ticks, []
            tracking = _live_tracking(cfg, trainer) if args.tracking else None
            for b in range(args.blocks):
                # --tracking: every other block exports each train.csv row live (TensorBoard + offline W&B)
                trainer.log.tracking = tracking if b % 2 else None
                before, t0 = dict(trainer.timings), time.perf_counter()
                for _ in range(args.rounds):
                    loop = trainer.advance(loop)
                jax.block_until_ready(loop.states)
                wall = time.perf_counter() - t0
                block = {f"{k}_ms": 1e3 * (trainer.timings[k] - before[k]) / steps
                         for k in ("env", "device", "act", "log")}
                block["ms_per_agent_step"] = 1e3 * wall / steps
                block["plan_compute_ms"] = _median_ms(lambda: plan_call(loop), args.repeats) / COMPUTE_REPS
                block["update_compute_ms"] = (_median_ms(lambda: update_call(loop), args.repeats)
                                              / (COMPUTE_REPS * ticks))
                block["tracking"] = trainer.log.tracking is not None
                blocks.append(block)
            trainer.log.tracking = None
            record = {"bench": "loop", "phase": args.phase, "seeds": num_seeds, "envs": trainer.E,
                      "updates_per_round": d.k_update, "agent_steps_per_round": ticks, "blocks": args.blocks,
                      "rounds_per_block": args.rounds, "overlap_updates": cfg.train.overlap_updates,
                      "allocator": allocator.active()}
            record.update(loop_split(blocks))
            if tracking is not None:
                record.update(_tracking_split(blocks, tracking, trainer))
            record["seed_agent_steps_per_s"] = 1e3 * num_seeds * trainer.E / record["ms_per_agent_step"]
            if args.eval:  # one evaluation and one checkpoint after warm ones, amortised over their frequencies
                _, eval_s = _time(lambda: trainer.evaluate(loop.states, 0), 1)
                _, ckpt_s = _time(lambda: trainer.save_checkpoints(loop), 1)
                per_tick = trainer.schedule.env_steps_per_tick
                record.update(eval_s=eval_s, eval_ms=1e3 * eval_s / (cfg.train.eval_freq / per_tick),
                              checkpoint_s=ckpt_s,
                              checkpoint_ms=1e3 * ckpt_s / (cfg.train.checkpoint_freq / per_tick))
        finally:
            trainer.close()
    return record


def _live_tracking(cfg, trainer):
    """The trainer's runs exported live to TensorBoard and offline W&B (their files in the bench's temp dir)."""
    from tdmpc_glass.config import to_dict
    from tdmpc_glass.tracking.live import LiveTracking

    tracking = replace(cfg.tracking, tensorboard=True, wandb="offline")
    S = len(trainer.seeds)
    return LiveTracking(tracking, trainer.log.dirs, {"config": to_dict(cfg)}, [-1] * S, [0] * S)


def _tracking_split(blocks: list[dict], tracking, trainer) -> dict:
    """ms per agent step with live exports on and off (median over their interleaved blocks), their ratio, and
    the rows the exports sent."""
    on = statistics.median(b["ms_per_agent_step"] for b in blocks if b["tracking"])
    off = statistics.median(b["ms_per_agent_step"] for b in blocks if not b["tracking"])
    tracking.close([True] * len(trainer.seeds))
    failures = tracking.failures()
    rows = [len(rows_of(d)) for d in trainer.log.dirs]
    return {"tracking_on_ms_per_agent_step": on, "tracking_off_ms_per_agent_step": off,
            "tracking_on_over_off": on / off, "train_rows_per_seed": rows[0],
            "tracking_failures": [f"{tracker}: {text}" for _, tracker, text in failures]}


def rows_of(run_dir) -> list:
    from tdmpc_glass import runlayout
    from tdmpc_glass.tracking.rows import read_rows

    return read_rows(Path(run_dir) / runlayout.TRAIN)


COMPUTE_REPS = 20  # planning calls and rounds of updates repeated inside one jitted call to time compute alone


def _compute_alone(cfg, trainer):
    """Two functions of the loop's state running COMPUTE_REPS plans and COMPUTE_REPS rounds of updates, each
    inside one jitted call so that a call's fixed cost is spread thin."""
    from tdmpc_glass import acting, agent
    from tdmpc_glass.planner import PlanSettings

    settings = PlanSettings.from_config(cfg.planner, cfg.horizon, trainer.d.discount, trainer.act_dim)

    def plans(st, o, p):
        return jax.lax.map(lambda i: acting.act(st, o, p, i, settings, False, cfg.planner.mpc)[0],
                           jnp.arange(COMPUTE_REPS))

    h = agent.Hyper.from_config(cfg)
    world_tx, policy_tx = agent.optimisers(cfg)
    k = trainer.d.k_update * COMPUTE_REPS
    # only the metrics come back, so no pass-through of the state (the buffer) is copied into the outputs
    updates = jax.vmap(lambda st: agent.run_updates(st, 0, k, h, world_tx, policy_tx)[1])
    plans, updates = jax.jit(plans), jax.jit(updates)
    return (lambda loop: plans(loop.states.tree(), jnp.asarray(loop.obs), loop.prev_mean),
            lambda loop: updates(loop.states.tree()))


def loop_split(blocks: list[dict]) -> dict:
    """Medians over blocks of ms per agent step: end to end; env stepping; the loop's jitted calls ("device",
    plus "act" for standalone planning calls); train.csv rows; the loop's own Python (the rest); compute alone
    (planning, updates); the calls' fixed cost (their time minus that compute); and the loop's own cost as a
    fraction of the step (end to end minus env and compute)."""
    def median(key):
        return statistics.median(b[key] for b in blocks)

    for b in blocks:
        calls = b["device_ms"] + b["act_ms"]
        compute = b["plan_compute_ms"] + b["update_compute_ms"]
        b["python_ms"] = b["ms_per_agent_step"] - b["env_ms"] - calls - b["log_ms"]
        b["fixed_call_ms"] = calls - compute
        b["loop_overhead_fraction"] = (b["ms_per_agent_step"] - b["env_ms"] - compute) / b["ms_per_agent_step"]
    keys = ("ms_per_agent_step", "env_ms", "device_ms", "act_ms", "log_ms", "python_ms", "plan_compute_ms",
            "update_compute_ms", "fixed_call_ms", "loop_overhead_fraction")
    return {k: median(k) for k in keys}


def _count(minimum: int):
    """An argparse type: an integer of at least `minimum` (a bad one is a usage error naming the flag)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    parse.__name__ = "integer"  # argparse names the type in its message for text that is not an integer
    return parse


def _phase_config(args):
    """The --phase config with --variant and --set applied, its task checked; a bad one raises a one-line error."""
    from experiments.launch import check_task, cli_overrides
    from experiments.phases import resolve

    resolved = resolve(args.phase, args.variant, cli_overrides(args))
    check_task(resolved)
    return resolved.cfg


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.bench", description=__doc__.splitlines()[0])
    p.add_argument("--task", default="hopper-hop")
    p.add_argument("--size", type=int, default=5, help="model size in millions (1, 5, 19, 48)")
    p.add_argument("--seeds", type=_count(1), nargs="+", default=[1, 5], help="seed counts S to measure")
    p.add_argument("--envs", type=int, nargs="+", default=[1, 16], help="envs per seed E for the planner")
    p.add_argument("--num-samples", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--buffer", type=int, default=10_000, help="buffer capacity per seed for the update bench")
    p.add_argument("--updates-per-call", type=int, default=20)
    p.add_argument("--repeats", type=_count(1), default=5)
    p.add_argument("--env-steps", type=int, default=200, help="agent steps per env for the env bench")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--only", choices=["updates", "planner", "envs"], nargs="+",
                   default=["updates", "planner", "envs"])
    p.add_argument("--out", default=None, help="append JSON lines to this file too")
    p.add_argument("--phase", default=None, help="time the training loop on this phase's config instead")
    p.add_argument("--variant", default=None, help="with --phase: the variant")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="with --phase: a config override")
    p.add_argument("--steps", type=int, default=None, help=argparse.SUPPRESS)  # read by cli_overrides
    p.add_argument("--rounds", type=_count(1), default=50, help="with --phase: rounds timed per block")
    p.add_argument("--blocks", type=_count(1), default=5,
                   help="with --phase: blocks of rounds, each followed by the compute alone")
    p.add_argument("--warmup-rounds", type=_count(0), default=10,
                   help="with --phase: rounds after exploration before timing")
    p.add_argument("--tracking", action="store_true",
                   help="with --phase: every other block exports train.csv rows live (TensorBoard + offline W&B); "
                        "reports ms per agent step with exports on and off and their ratio")
    p.add_argument("--eval", action="store_true",
                   help="with --phase: also time an evaluation and a checkpoint (amortised)")
    args = p.parse_args(argv)
    if args.phase:
        from experiments.phases import PhaseError
        from experiments.rundirs import LaunchError
        from tdmpc_glass.config import ConfigError

        try:
            cfg = _phase_config(args)
        except (PhaseError, ConfigError, LaunchError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for S in args.seeds:
            _emit({**bench_loop(args, cfg, S), **_device_info()}, args.out)
        return 0
    from tdmpc_glass.envs import task_spec, validate_task
    try:
        validate_task(args.task)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    obs_dim, act_dim = task_spec(args.task)
    info = _device_info()
    jobs = []
    if "updates" in args.only:
        jobs += [lambda S=S: bench_updates(args, S, obs_dim, act_dim) for S in args.seeds]
    if "planner" in args.only:
        jobs += [lambda S=S, E=E: bench_planner(args, S, E, obs_dim, act_dim) for S in args.seeds for E in args.envs]
    if "envs" in args.only:
        jobs += [lambda E=E: bench_envs(args, E) for E in sorted({S * E for S in args.seeds for E in args.envs})]
    for job in jobs:
        _emit({**job(), **info, "peak_memory_bytes": _peak_memory_bytes()}, args.out)
    return 0


def _emit(record: dict, out) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    allocator.use_tcmalloc()
    sys.exit(main())
