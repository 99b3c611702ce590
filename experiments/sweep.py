"""Sweep backends: every (variant, seed group) of a phase is one job, run in this process or as a Ray task.

A job is plain data (the run record of each seed, with its fully resolved config, and the absolute run
dirs), so a worker needs the package but not the phase files. Both backends call the same training entry,
`run_job`: check each run dir, write its config.yaml, then `tdmpc_glass.train.train` for the job's seeds
vmapped in one process; train resumes unfinished seeds from their last checkpoint and skips finished ones,
so re-running a sweep, or Ray retrying a task whose worker died, picks up where it stopped.

- local: the jobs one after another in this process, on the devices it sees (what `run` does).
- ray: each job a Ray task (`num_gpus`, `num_cpus` per task, `max_retries` on worker crashes) on the cluster
  at `address` ('auto' or HEAD:6379), else on a Ray started here (ray.init(num_cpus=..., no dashboard)).
  Workers get the repository on PYTHONPATH and this process's JAX/XLA/MuJoCo environment; the repository
  and its venv must sit at the same path on every machine. A worker that shares this machine's runs root
  writes its run dirs there; any other trains in its node's scratch and its run files are gathered into the
  runs root here as they are written (experiments/fleet.py), and a retried job resumes from that copy.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from experiments import rundirs
from experiments.phases import ROOT, Resolved, format_seeds
from experiments.rundirs import LaunchError
from tdmpc_glass import runlayout
from tdmpc_glass.config import ConfigError, config_from_dict

INTERRUPTED = (130, 143)  # train's exit codes after SIGINT / SIGTERM: stop, do not start the next job
# environment passed to Ray workers (plus PYTHONPATH): JAX and XLA settings, headless GL, our own variables
PASSED_ENV_PREFIXES = ("JAX_", "XLA_", "TF_CPP_", "MUJOCO_", "PYOPENGL_", "TDMPC_GLASS_")
NOT_RUN = -1  # exit code shown for a job that never started (an earlier one was interrupted)


@dataclass
class Job:
    """One (variant, seed group): trained by one call of `train` (its seeds vmapped in one process)."""

    phase: str
    variant: str
    seeds: list[int]
    run_dirs: list[str]  # absolute, so a worker with another working directory writes the same place
    records: list[dict]  # the config file of each seed (rundirs.run_record)
    progress: bool = False
    runs_root: str = ""  # absolute: the run dirs' paths relative to it are the same in a worker's scratch

    @property
    def label(self) -> str:
        return f"{self.phase}/{self.variant} seeds {format_seeds(self.seeds)}"


@dataclass
class Outcome:
    job: Job
    code: int
    note: str = ""


def make_jobs(plans: list[Resolved], seeds: list[int], root: Path, seeds_per_task: int | None = None,
              progress: bool = False) -> list[Job]:
    """One job per variant and group of `seeds_per_task` seeds (default: all seeds in one group)."""
    size = seeds_per_task or len(seeds)
    groups = [seeds[i:i + size] for i in range(0, len(seeds), size)]
    jobs = []
    for resolved in plans:
        for group in groups:
            dirs = [str(runlayout.run_dir(root, resolved.phase.dir_name, resolved.variant, s).absolute())
                    for s in group]
            jobs.append(Job(resolved.phase.name, resolved.variant, list(group), dirs,
                            [rundirs.run_record(resolved, s) for s in group], progress, str(Path(root).absolute())))
    return jobs


def run_job(job: Job) -> int:
    """The training entry of both backends: check the run dirs, write their config files, train. Raises
    LaunchError."""
    from tdmpc_glass.checkpoint import CheckpointError  # jax: loaded only when something trains

    cfg = config_from_dict(job.records[0]["config"], source=f"{job.phase}/{job.variant}")
    dirs = [Path(d) for d in job.run_dirs]
    for seed, path in zip(job.seeds, dirs):  # all checked before any is written
        rundirs.check_run_dir(path, cfg, seed)
    for record, path in zip(job.records, dirs):
        rundirs.write_run_config(path, record)
    print(f"{job.phase}/{job.variant}: seeds {format_seeds(job.seeds)} -> {dirs[0].parent}", file=sys.stderr,
          flush=True)
    rundirs.enable_compilation_cache()
    from tdmpc_glass.train import train

    try:
        return train(cfg, job.seeds, dirs, progress=job.progress)
    except CheckpointError as e:  # a damaged or foreign checkpoint found while resuming
        raise LaunchError(str(e)) from None


def finished(job: Job) -> Outcome | None:
    """The outcome of a job whose seeds all ended earlier (done for its train.steps, or failed): train would
    skip every one, so the sweep need not start it. None when some seed still has to train."""
    steps = job.records[0]["config"]["train"]["steps"]
    failed = []
    for seed, run_dir in zip(job.seeds, job.run_dirs):
        why = runlayout.ended(runlayout.read_status(Path(run_dir)), steps)
        if why is None:
            return None
        if why == runlayout.FAILED:
            failed.append(seed)
    if failed:
        return Outcome(job, 1, f"seed {format_seeds(failed)} failed earlier (see {runlayout.EVENTS})")
    return Outcome(job, 0, "already done")


def run_unfinished(jobs: list[Job], backend) -> list[Outcome]:
    """`backend(jobs) -> outcomes` for the jobs with something left to train; the others' earlier outcomes."""
    earlier = [finished(job) for job in jobs]
    todo = [job for job, outcome in zip(jobs, earlier) if outcome is None]
    fresh = iter(backend(todo) if todo else [])
    return [outcome if outcome is not None else next(fresh) for outcome in earlier]


# ---- local ------------------------------------------------------------------------------------------------------

def run_local(jobs: list[Job]) -> list[Outcome]:
    """The jobs one after another in this process; an interrupt (exit 130/143) stops the ones after it."""
    outcomes: list[Outcome] = []
    for i, job in enumerate(jobs):
        code = run_job(job)
        outcomes.append(Outcome(job, code))
        if code in INTERRUPTED:
            outcomes += [Outcome(later, NOT_RUN, "not started (interrupted)") for later in jobs[i + 1:]]
            break
    return outcomes


# ---- Ray --------------------------------------------------------------------------------------------------------

def worker_env(num_gpus: float, environ=None) -> dict[str, str]:
    """The environment of Ray workers: the repository first on PYTHONPATH, then this process's JAX/XLA,
    MuJoCo GL and TDMPC_GLASS_* variables. A task without a GPU runs JAX on the CPU; tasks sharing a GPU
    (num_gpus < 1) allocate GPU memory as needed instead of pre-allocating most of it each."""
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in environ.items() if k.startswith(PASSED_ENV_PREFIXES)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in environ.get("PYTHONPATH", "").split(os.pathsep)
                                                      if p and p != str(ROOT)])
    if num_gpus == 0:
        env.setdefault("JAX_PLATFORMS", "cpu")
    elif num_gpus < 1:
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    return env


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask), else the machine's count."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _ray_entry(job: Job, gathering=None) -> tuple[int, str]:
    """What a Ray task runs: run_job, in the runs root where this worker shares it, else in the node's scratch
    with the run files gathered (fleet.run_gathered); a bad run dir, and seeds too many for this GPU, reported
    as exit 2 and its message."""
    from experiments import fleet

    try:
        rundirs.choose_platform()
        cfg = config_from_dict(job.records[0]["config"], source=f"{job.phase}/{job.variant}")
        too_big = fleet.check_fits(job, cfg)
        if too_big:
            raise LaunchError(too_big)
        if gathering is None or fleet.shares_runs_root(gathering):
            return run_job(job), ""
        return fleet.run_gathered(job, gathering, run_job)
    except (LaunchError, ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2, str(e)


def _failure_note(error: BaseException) -> str:
    """One line for the summary: the task's own exception where Ray has it, else Ray's error's last line."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        error = cause
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1]}"[:200] if lines else type(error).__name__


def run_ray(jobs: list[Job], *, address: str | None = None, num_gpus: float | None = None, num_cpus: float = 1,
            max_retries: int = 3, local_cpus: int | None = None, entry=None, gather: bool = True) -> list[Outcome]:
    """Each job as a Ray task; the outcomes in the order of `jobs`. `entry` replaces _ray_entry (tests);
    `gather`: start the gatherer of the runs root here (fleet.py), which workers without this disk write to."""
    try:
        import ray
    except ImportError:
        raise LaunchError("--backend ray needs Ray: pip install -e '.[cluster]' (or the test extra)") from None
    try:
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            ray.init(num_cpus=max(local_cpus or usable_cpus(), math.ceil(num_cpus)), include_dashboard=False,
                     log_to_driver=True)
    except ConnectionError as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise LaunchError(f"--address {address}: cannot reach a Ray cluster ({first})") from None
    gathering = None
    try:
        resources = ray.cluster_resources()
        if num_gpus is None:  # one GPU per task on a cluster that has GPUs, else CPU tasks
            num_gpus = 1 if resources.get("GPU", 0) >= 1 else 0
        for name, need in (("GPU", num_gpus), ("CPU", num_cpus)):
            if need > resources.get(name, 0):
                raise LaunchError(f"--num-{name.lower()}s {need:g}: the Ray cluster has "
                                  f"{resources.get(name, 0):g} {name}s; no task could ever start")
        runtime_env = {"env_vars": worker_env(num_gpus)}
        remote = ray.remote(entry or _ray_entry).options(num_gpus=num_gpus, num_cpus=num_cpus,
                                                         max_retries=max_retries, runtime_env=runtime_env)
        if gather and jobs and entry is None:
            from experiments import fleet

            gathering = fleet.gathering_for(Path(jobs[0].runs_root), worker_env(0))
        print(f"ray: {len(jobs)} task(s), {num_gpus:g} GPU and {num_cpus:g} CPU each, up to {max_retries} "
              f"retries; cluster {resources.get('GPU', 0):g} GPUs, {resources.get('CPU', 0):g} CPUs",
              file=sys.stderr, flush=True)
        pending = {(remote.remote(job, gathering) if gathering else remote.remote(job)): i
                   for i, job in enumerate(jobs)}
        outcomes: dict[int, Outcome] = {}
        try:
            while pending:
                [ref], _ = ray.wait(list(pending), num_returns=1)
                i = pending.pop(ref)
                try:
                    code, note = ray.get(ref)
                except ray.exceptions.RayError as e:  # the task raised, or its worker died past its retries
                    code, note = 1, _failure_note(e)
                outcomes[i] = Outcome(jobs[i], code, note)
                if gathering is not None:  # the job ended (or failed past its retries): its lease goes
                    ray.get(gathering.gatherer.call.remote("release", gathering.token(jobs[i])))
                print(f"ray: {jobs[i].label}: exit {code}" + (f" ({note})" if note else ""), file=sys.stderr,
                      flush=True)
        except KeyboardInterrupt:
            for ref, i in pending.items():
                ray.cancel(ref)
                outcomes[i] = Outcome(jobs[i], 130, "cancelled (interrupted)")
        return [outcomes[i] for i in range(len(jobs))]
    finally:
        if gathering is not None:
            Path(gathering.probe).unlink(missing_ok=True)
        ray.shutdown()


# ---- summary ----------------------------------------------------------------------------------------------------

def summary(outcomes: list[Outcome]) -> str:
    """A table: variant, seeds, exit code, and a note column where a job failed to run or never started."""
    with_notes = any(o.note for o in outcomes)
    rows = [("variant", "seeds", "exit") + (("note",) if with_notes else ())]
    rows += [(o.job.variant, format_seeds(o.job.seeds), "-" if o.code == NOT_RUN else str(o.code))
             + ((o.note,) if with_notes else ()) for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(3)] + [0]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def exit_code(outcomes: list[Outcome]) -> int:
    """0 if every job succeeded; an interrupt's code if there was one; else the first failure's code."""
    codes = [o.code for o in outcomes]
    for code in codes:
        if code in INTERRUPTED:
            return code
    return next((c if c > 0 else 1 for c in codes if c != 0), 0)
