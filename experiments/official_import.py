"""`tdmpc-glass import-official CHECKPOINT.pt --task TASK [--out RUN_DIR]`: an official TD-MPC2 checkpoint as a
run of ours, ready to evaluate, render and fine-tune.

The checkpoint is read without torch (tdmpc_glass/official.py: a restricted unpickler that accepts only the
tensor-rebuild calls), its model size is read off the tensor shapes, and every tensor is mapped onto our networks.
Written, for a run dir <runs root>/<name>/default/seed<k> (default name official-<task>, seed 1):

    <runs root>/<name>/phase.yaml       a phase: extends base, the task, the model size, your --set overrides
    <run dir>/config.yaml               the resolved config (as `run` writes it)
    <run dir>/checkpoints/step_0000000000.npz   the imported networks, fresh optimiser state, empty buffer,
                                        running Q scale 1 (the official save() stores neither optimiser nor scale)
    <run dir>/status.json, events.jsonl

Then `tdmpc-glass run <runs root>/<name>/phase.yaml --runs-root <runs root> --steps N` resumes from it: it
evaluates the imported agent at env step 0 (eval.csv's first row) and fine-tunes for N env steps, and
`tdmpc-glass resume <run dir> --steps N` does the same; `tdmpc-glass video --run <run dir>` renders it.
Training settings must be chosen at import (--set, e.g. train.expl_until=0 to skip the uniform-random phase):
a run resumes only with the config it was written with.
Errors: one line `error: ...`, exit 2, nothing written.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import yaml

PHASE_FILE = "phase.yaml"


class OfficialImportError(ValueError):
    """A one-line input error."""


def parse_args(argv):
    p = argparse.ArgumentParser(prog="tdmpc-glass import-official", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path, help="an official TD-MPC2 .pt file (TDMPC2.save())")
    p.add_argument("--task", required=True, help="the task it was trained on, e.g. hopper-hop")
    p.add_argument("--out", type=Path, default=None,
                   help="run dir <runs root>/<name>/default/seed<k> (default: <runs root>/official-<task>/default/"
                        "seed<seed>)")
    p.add_argument("--runs-root", default=None, help="runs root when --out is not given (default: "
                                                     "$TDMPC_GLASS_RUNS, else ./runs)")
    p.add_argument("--name", default=None, help="phase name when --out is not given (default official-<task>)")
    p.add_argument("--seed", type=int, default=1, help="seed of the run when --out is not given (default 1)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="config override for the imported run (repeatable), e.g. train.expl_until=0")
    return p.parse_args(argv)


def run_location(args) -> tuple[Path, str, int]:
    """(runs root, phase name, seed) of the run dir to write."""
    from experiments.phases import _NAME
    from tdmpc_glass import runlayout

    if args.out is None:
        name = args.name or f"official-{args.task}"
        if not _NAME.match(name):
            raise OfficialImportError(f"--name: {name!r} is not a valid phase name (letters, digits, _ . -)")
        return runlayout.runs_root(args.runs_root), name, args.seed
    out = Path(args.out)
    seed = runlayout.seed_of(out)
    if seed is None or out.parent.name != runlayout.DEFAULT_VARIANT or not _NAME.match(out.parent.parent.name):
        raise OfficialImportError(f"--out {out}: a run dir is <runs root>/<name>/{runlayout.DEFAULT_VARIANT}/seed<k> "
                           "(so `run` can resume it)")
    return out.parent.parent.parent, out.parent.parent.name, seed


def phase_record(name: str, task: str, checkpoint: Path, digest: str, overrides: dict, seed: int) -> dict:
    return {
        "name": name,
        "description": f"The official TD-MPC2 checkpoint {checkpoint} (sha256 {digest[:16]}) imported by "
                       f"import-official; fine-tuned from there by `run`.",
        "extends": "base",
        "benchmark_fair": True,
        "seeds": seed,
        "overrides": {"task": task, **overrides},
    }


def import_official(args) -> Path:
    from experiments.launch import check_task
    from experiments.phases import resolve_variants
    from experiments.rundirs import check_run_dir
    from tdmpc_glass import official, runlayout
    from tdmpc_glass.config import parse_override

    root, name, seed = run_location(args)
    run_dir = runlayout.run_dir(root, name, runlayout.DEFAULT_VARIANT, seed)
    phase_path = root / name / PHASE_FILE
    if run_dir.exists() and any(run_dir.iterdir()):
        raise OfficialImportError(f"{run_dir}: exists and is not empty; choose another --out (or --name / --seed)")
    state_dict = official.convert_old_q_names(official.read_state_dict(args.checkpoint))
    dims = official.infer_dims(state_dict, str(args.checkpoint))
    user = dict(parse_override(text, "--set") for text in (args.set or []))
    reserved = [k for k in user if k == "task" or k in dims.overrides()]
    if reserved:
        raise OfficialImportError(f"--set {reserved[0]}: set by the checkpoint's shapes or --task, not settable here")
    digest = hashlib.sha256(Path(args.checkpoint).read_bytes()).hexdigest()
    record = phase_record(name, args.task, args.checkpoint, digest, {**dims.overrides(), **user}, seed)

    # resolve the phase as `run` will (written to a temp file first: nothing is left behind on an error)
    created = [d for d in (phase_path.parent, *phase_path.parent.parents) if not d.exists()]
    phase_path.parent.mkdir(parents=True, exist_ok=True)
    existing = phase_path.read_text() if phase_path.exists() else None
    new_text = yaml.safe_dump(record, sort_keys=False)
    if existing is not None and existing != new_text:
        raise OfficialImportError(f"{phase_path}: holds another import (another checkpoint or settings); choose "
                           "another --name or --out")
    runlayout.write_atomic(phase_path, new_text)
    try:
        resolved = resolve_variants(str(phase_path))[0]
        check_task(resolved)
        check_run_dir(run_dir, resolved.cfg, seed)
        state = loaded_state(resolved.cfg, seed, state_dict, str(args.checkpoint))
    except BaseException:
        if existing is None:
            phase_path.unlink(missing_ok=True)
        for folder in created:  # the folders this import made, innermost first: nothing is left behind
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    write_run(run_dir, resolved, seed, state, record, digest, args.checkpoint)
    return run_dir


def loaded_state(cfg, seed: int, state_dict: dict, source: str):
    """One seed's AgentState of `cfg` with the official networks (fresh Adam, empty buffer, Q scale 1)."""
    import equinox as eqx

    from tdmpc_glass import agent, official
    from tdmpc_glass.envs import task_spec
    from tdmpc_glass.multitask import model_obs_dim

    env_obs_dim, act_dim = task_spec(cfg.task)
    state = agent.init_state(cfg, model_obs_dim(cfg, env_obs_dim), act_dim, seed)
    world, policy, target_qs = official.load_into(state.world, state.policy, state.target_qs, state_dict, source)
    return eqx.tree_at(lambda s: (s.world, s.policy, s.target_qs), state, (world, policy, target_qs))


def write_run(run_dir: Path, resolved, seed: int, state, record: dict, digest: str, checkpoint: Path) -> None:
    import jax

    from experiments.rundirs import run_record, write_run_config
    from tdmpc_glass import resume, runlayout
    from tdmpc_glass.rounds import Counters
    from tdmpc_glass.runlog import RunLog
    from tdmpc_glass.schedules import restart_seed

    cfg = resolved.cfg
    write_run_config(run_dir, run_record(resolved, seed))
    stacked = jax.tree.map(lambda x: x[None], state)
    schedule = {"attempt": 0, "run_seed": restart_seed(seed if cfg.streams.explore is None else cfg.streams.explore,
                                                        0, cfg.schedule)}
    resume.save(stacked, [run_dir / runlayout.CHECKPOINTS], [True], [seed], 0, Counters(), [schedule], cfg)
    log = RunLog(run_dir)
    log.event(0, "imported", checkpoint=str(checkpoint), sha256=digest)
    log.set_status(status=runlayout.INTERRUPTED, env_step=0, total_env_steps=cfg.train.steps, attempt=0,
                   message=f"imported from the official checkpoint {checkpoint}; `run` fine-tunes it")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from experiments.phases import PhaseError
    from experiments.rundirs import LaunchError
    from tdmpc_glass import official
    from tdmpc_glass.config import ConfigError

    try:
        run_dir = import_official(args)
    except (OfficialImportError, official.OfficialCheckpointError, PhaseError, ConfigError, LaunchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    root, phase = run_dir.parents[2], run_dir.parents[1] / PHASE_FILE
    print(f"imported {args.checkpoint} into {run_dir}")
    print(f"  evaluate (env step 0) and fine-tune: tdmpc-glass run {phase} --runs-root {root} --steps N")
    print(f"                                   or: tdmpc-glass resume {run_dir} --steps N")
    print(f"  video:                               tdmpc-glass video --run {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
