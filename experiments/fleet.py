"""Sweeps over a fleet of machines with no shared disk: the gatherer actor on the launching machine, a job's
life in node-local scratch, the shared-file-system probe and the check that a job's seeds fit its GPU.

- `start_gatherer(root)`: a Ray actor pinned to the driver's node (NodeAffinitySchedulingStrategy, not soft)
  that owns the runs root there and applies the changes workers ship (experiments/gather.py's GatheredRoot).
- `write_probe(root)`: a file with a random text in the runs root; a worker that reads the same text at the
  same path shares the driver's file system and writes its run dirs directly (as a local sweep does).
  TDMPC_GLASS_GATHER=always|never overrides the probe (tests gather on one machine; `never` trusts the disk).
- `run_gathered(job, gathering, run_job)` on a worker: lease the job's run dirs, pull the gathered copy into
  scratch (`$TDMPC_GLASS_SCRATCH`, default <tmp>/tdmpc-glass-scratch, one folder per Ray node), train there
  with a Shipper following the files, ship the rest, release the lease.
- `gpu_fit_error(...)`: one line naming node, GPU and memory needed when a job's seeds cannot fit.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
import sys
import tempfile
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from experiments.gather import GatheredRoot, GatherError, LeaseError
from experiments.shipper import Shipper, TransportError, pull
from tdmpc_glass import runlayout

GATHER_ENV = "TDMPC_GLASS_GATHER"  # auto (default) | always | never
SCRATCH_ENV = "TDMPC_GLASS_SCRATCH"
GATHER_MODES = ("auto", "always", "never")
CALL_TIMEOUT_S = 120.0  # one call to the gatherer; past it the shipper backs off and tries again
GIB = 1 << 30


@dataclass
class Gathering:
    """What a job needs to reach the launching machine's runs root: plain data, sent with every task."""

    gatherer: object  # the actor handle
    sweep_id: str
    root: str  # the runs root on the launching machine (absolute)
    probe: str  # its probe file's path and text
    probe_text: str

    def token(self, job) -> str:
        """One job's lease token: the same for Ray's retries of it, another for any other sweep's job."""
        return f"{self.sweep_id}:{job.label}"


# ---- the launching machine -----------------------------------------------------------------------------------

class GathererActor:
    """GatheredRoot as a Ray actor (threaded: one job's large upload does not hold up another's rows)."""

    def __init__(self, root: str):
        self.root = GatheredRoot(Path(root))

    def call(self, method: str, *args):
        return getattr(self.root, method)(*args)

    def node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()


def start_gatherer(root: Path, env_vars: dict) -> object:
    """The gatherer actor on this (the driver's) node, owning `root`."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    actor = ray.remote(GathererActor).options(
        num_cpus=0, max_concurrency=16, max_restarts=0, runtime_env={"env_vars": env_vars},
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False))
    handle = actor.remote(str(Path(root).absolute()))
    ray.get(handle.node.remote())  # started (its errors surface here, not in the first job)
    return handle


def write_probe(root: Path) -> tuple[str, str]:
    """(path, text) of a fresh probe file in the runs root."""
    root = Path(root).absolute()
    root.mkdir(parents=True, exist_ok=True)
    text = uuid.uuid4().hex
    path = root / runlayout.SHARED_PROBE
    runlayout.write_atomic(path, text)
    return str(path), text


def gathering_for(root: Path, env_vars: dict) -> Gathering:
    probe, text = write_probe(root)
    return Gathering(start_gatherer(root, env_vars), uuid.uuid4().hex[:12], str(Path(root).absolute()), probe,
                     text)


# ---- a worker ------------------------------------------------------------------------------------------------

def gather_mode(environ=None) -> str:
    environ = os.environ if environ is None else environ
    mode = environ.get(GATHER_ENV, "auto").strip().lower() or "auto"
    if mode not in GATHER_MODES:
        raise ValueError(f"{GATHER_ENV}={mode!r}: expected one of {', '.join(GATHER_MODES)}")
    return mode


def shares_runs_root(gathering: Gathering, environ=None) -> bool:
    """True when this worker writes the launching machine's runs root directly (same file system, or told)."""
    mode = gather_mode(environ)
    if mode != "auto":
        return mode == "never"
    try:
        return Path(gathering.probe).read_text() == gathering.probe_text
    except (OSError, ValueError):
        return False


def scratch_root(gathering: Gathering, node_id: str, environ=None) -> Path:
    """This node's scratch folder for one runs root: <scratch>/<node>/<hash of the runs root>/ (the layout
    under it mirrors the runs root)."""
    environ = os.environ if environ is None else environ
    base = Path(environ.get(SCRATCH_ENV) or Path(tempfile.gettempdir()) / "tdmpc-glass-scratch")
    digest = hashlib.sha1(gathering.root.encode()).hexdigest()[:10]
    return base / f"node-{node_id[:12]}" / f"{Path(gathering.root).name}-{digest}"


class RayTransport:
    """GatheredRoot's methods on the gatherer actor, each call bounded by a timeout: a lost network is a
    TransportError (tried again later), a refusal of the gathered copy its own GatherError / LeaseError."""

    def __init__(self, gatherer, timeout_s: float = CALL_TIMEOUT_S):
        self.gatherer, self.timeout_s = gatherer, timeout_s

    def _call(self, method: str, *args):
        import ray

        try:
            return ray.get(self.gatherer.call.remote(method, *args), timeout=self.timeout_s)
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, (GatherError, LeaseError)):
                raise cause from None
            raise TransportError(f"gatherer {method}: {e}") from None
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as e:
            raise TransportError(f"gatherer {method}: {type(e).__name__}") from None

    def __getattr__(self, method: str):
        if method.startswith("_"):
            raise AttributeError(method)
        return lambda *args: self._call(method, *args)


def run_gathered(job, gathering: Gathering, run_job, interval_s: float = 0.5) -> tuple[int, str]:
    """Train `job` in this node's scratch, its run files shipped to the gathered copy; (exit code, note).

    `run_job(job) -> exit code` is the sweep's training entry, called with the job's run dirs moved to scratch."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    transport = RayTransport(gathering.gatherer)
    token = gathering.token(job)
    rels = [Path(d).relative_to(gathering.root).as_posix() for d in job.run_dirs]
    holder = {"job": job.label, "node": node[:12], "host": socket.gethostname(), "pid": os.getpid(),
              "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    try:
        epoch = transport.acquire(rels, token, holder)
    except LeaseError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2, str(e)
    scratch = scratch_root(gathering, node)
    pulled = pull(transport, rels, scratch)
    print(f"gather: {job.label} on node {node[:12]} ({socket.gethostname()}), scratch {scratch}, epoch {epoch}, "
          f"{pulled / 1e6:.1f} MB pulled", file=sys.stderr, flush=True)
    local = replace(job, run_dirs=[str(scratch / rel) for rel in rels])
    shipper = Shipper(transport, scratch, [Path(d) for d in local.run_dirs], epoch, interval_s=interval_s)
    shipper.mark_shipped()
    shipper.start()
    try:
        code = run_job(local)
    finally:
        shipped = shipper.stop()
    note = ""
    if shipper.fenced:
        return 1, f"retried elsewhere, this worker's files not gathered ({shipper.fenced})"
    if not shipped:
        note = f"run files not all gathered ({shipper.last_error}); they stay in {scratch}"
        code = code or 1
    try:
        transport.release(token, epoch)
    except (TransportError, GatherError):
        pass  # the driver releases it when the job's outcome arrives
    return code, note


# ---- does a job fit its GPU ---------------------------------------------------------------------------------

def state_bytes(cfg) -> int:
    """Bytes of one seed's AgentState (parameters, target Q, optimiser states, replay buffer, keys), from the
    config's shapes alone (jax.eval_shape: nothing is allocated)."""
    import jax
    import numpy as np

    from tdmpc_glass import agent
    from tdmpc_glass.envs import task_spec
    from tdmpc_glass.multitask import model_obs_dim, tasks_of

    task = tasks_of(cfg)[0] if cfg.multitask.tasks else cfg.task
    obs_dim, act_dim = task_spec(task)
    shapes = jax.eval_shape(lambda: agent.init_state(cfg, model_obs_dim(cfg, obs_dim), act_dim, 0))
    return int(sum(np.prod(x.shape, dtype=np.int64) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(shapes)))


# XLA keeps a second copy of what an update writes (gradients, new optimiser state, the planner's samples)
# and its own runtime; a job needs its state times this factor plus a fixed reserve
WORKING_FACTOR = 2.0
RESERVE_BYTES = GIB // 2


def job_bytes_needed(seed_state_bytes: int, num_seeds: int) -> int:
    return int(seed_state_bytes * num_seeds * WORKING_FACTOR + RESERVE_BYTES)


def gpu_fit_error(need_bytes: int, free_bytes: int | None, node: str, gpu: str, label: str, num_seeds: int,
                  seed_state_bytes: int) -> str | None:
    """None when the job fits (or the GPU's free memory is unknown); else one line naming node, GPU and the
    memory needed."""
    if free_bytes is None or need_bytes <= free_bytes:
        return None
    fewer = max(int((free_bytes - RESERVE_BYTES) // (seed_state_bytes * WORKING_FACTOR)), 0)
    hint = (f"--seeds-per-task {fewer}" if 0 < fewer < num_seeds else "a GPU with more memory")
    return (f"{label}: node {node}, GPU {gpu}: needs ~{need_bytes / GIB:.1f} GiB for {num_seeds} seed(s) "
            f"({seed_state_bytes / GIB:.2f} GiB of parameters, optimiser and buffer each, x{WORKING_FACTOR:g} "
            f"working memory + {RESERVE_BYTES / GIB:.1f} GiB), {free_bytes / GIB:.1f} GiB free: use {hint}")


def device_free_bytes() -> tuple[str, int | None]:
    """(name of JAX's first device, its free memory in bytes); None where JAX cannot say (the CPU)."""
    import jax

    device = jax.local_devices()[0]
    name = getattr(device, "device_kind", device.platform)
    if device.platform == "cpu":
        return name, None
    try:
        stats = device.memory_stats() or {}
    except Exception:  # a backend without memory statistics
        return name, None
    limit = stats.get("bytes_limit")
    return name, (None if limit is None else int(limit - stats.get("bytes_in_use", 0)))


def check_fits(job, cfg) -> str | None:
    """gpu_fit_error for `job` on this worker's first JAX device (None on the CPU)."""
    gpu, free = device_free_bytes()
    if free is None:
        return None
    per_seed = state_bytes(cfg)
    node = socket.gethostname()
    try:
        import ray

        node = f"{node} ({ray.get_runtime_context().get_node_id()[:12]})"
    except Exception:
        pass
    return gpu_fit_error(job_bytes_needed(per_seed, len(job.seeds)), free, node, gpu, job.label, len(job.seeds),
                         per_seed)
