"""A fleet with no shared disk: the gathered copy's rules (whole lines, idempotent re-sends, atomic replace, leases
and fencing), the shipper following a scratch run dir through a network cut, the GPU-fit check; and, slow, a
local multi-node Ray cluster whose workers train in their own scratch, one of them killed mid-job, the gathered
runs equal to uninterrupted ones and readable live by the dashboard's loader."""
import json
import os
import threading
import time
from pathlib import Path

import pytest

from experiments import fleet
from experiments.gather import UPLOAD_SUFFIX, GatheredRoot, GatherError, LeaseError
from experiments.shipper import Shipper, TransportError, pull
from tdmpc_glass import runlayout

RUN = "ph/default/seed1"
HOLDER = {"job": "ph/default seeds 1", "node": "abc", "host": "h1", "pid": 7, "since": "now"}


@pytest.fixture
def gathered(tmp_path):
    root = GatheredRoot(tmp_path / "gathered")
    yield root
    root.release_all()


# ---- the gathered copy --------------------------------------------------------------------------------------

def test_appends_take_whole_lines_at_their_offset_and_skip_what_is_held(gathered):
    epoch = gathered.acquire([RUN], "job-a", HOLDER)
    rel = f"{RUN}/eval.csv"
    assert gathered.append(rel, 0, b"env_step,r\n0,1.5\n", epoch) == 17
    with pytest.raises(GatherError, match="do not end a line"):
        gathered.append(rel, 17, b"80,2", epoch)  # half a row never reaches the copy
    assert gathered.append(rel, 0, b"env_step,r\n0,1.5\n", epoch) == 17  # a re-send after a lost reply
    assert gathered.append(rel, 11, b"0,1.5\n80,2.5\n", epoch) == 24  # overlapping: only the new bytes
    assert gathered.append(rel, 40, b"240,9\n", epoch) == 24  # a gap: nothing written, resend from 24
    assert (gathered.root / rel).read_bytes() == b"env_step,r\n0,1.5\n80,2.5\n"


def test_replace_and_chunked_uploads_are_atomic_and_checked(gathered):
    epoch = gathered.acquire([RUN], "job-a", HOLDER)
    status = f"{RUN}/status.json"
    gathered.replace(status, b'{"status": "running"}\n', epoch)
    assert json.loads((gathered.root / status).read_text()) == {"status": "running"}
    ckpt = f"{RUN}/checkpoints/step_0000000080.npz"
    gathered.replace(ckpt, b"old", epoch)
    gathered.begin(ckpt, epoch)
    assert gathered.chunk(ckpt, 0, b"abcd", epoch) == 4
    assert gathered.chunk(ckpt, 0, b"abcd", epoch) == 4  # idempotent
    assert gathered.chunk(ckpt, 2, b"cdef", epoch) == 6
    with pytest.raises(GatherError, match="holds 6 bytes, expected 8"):
        gathered.commit(ckpt, 8, epoch)
    assert (gathered.root / ckpt).read_bytes() == b"old"  # readers still see the complete old file
    gathered.chunk(ckpt, 6, b"gh", epoch)
    gathered.commit(ckpt, 8, epoch)
    assert (gathered.root / ckpt).read_bytes() == b"abcdefgh"
    assert not list((gathered.root / RUN).rglob(f"*{UPLOAD_SUFFIX}"))
    assert [r for r, _ in gathered.listing(RUN)] == [ckpt, status]  # the lock file is no part of the run
    gathered.remove(ckpt, epoch)
    assert not (gathered.root / ckpt).exists()


@pytest.mark.parametrize("rel", ["../escape.csv", "/etc/passwd", "ph/../../x", ""])
def test_paths_outside_the_runs_root_are_refused(gathered, rel):
    with pytest.raises(GatherError, match="not a path inside the runs root"):
        gathered.path(rel)


def test_a_file_of_a_run_dir_nobody_leased_is_refused(gathered):
    with pytest.raises(GatherError, match="no job holds a lease"):
        gathered.append(f"{RUN}/eval.csv", 0, b"a\n", 1)


def test_one_job_per_run_dir_a_retry_takes_over_and_fences_the_worker_before(gathered, tmp_path):
    first = gathered.acquire([RUN], "sweep1:job", HOLDER)
    with pytest.raises(LeaseError, match=f"{RUN}: another job is writing this run: job ph/default seeds 1 on node "
                                         "abc \\(host h1, pid 7\\)"):
        gathered.acquire([RUN], "sweep2:job", {**HOLDER, "host": "h2"})
    assert runlayout.read_lock(gathered.root / RUN)["pid"] == os.getpid()  # the RunLock here is held too
    retry = gathered.acquire([RUN], "sweep1:job", {**HOLDER, "node": "def"})  # Ray retried the job elsewhere
    assert retry == first + 1
    with pytest.raises(GatherError, match="is stale"):
        gathered.append(f"{RUN}/eval.csv", 0, b"a\n", first)  # the old worker, cut off, cannot write any more
    assert gathered.release("sweep1:job", first) == []  # nor release the new holder's lease
    assert gathered.release("sweep1:job") == [RUN]
    assert not (gathered.root / RUN / runlayout.LOCK).exists()
    assert gathered.acquire([RUN], "sweep2:job", HOLDER) == 1


def test_a_run_dir_another_process_writes_here_is_refused_to_the_gatherer(gathered):
    import subprocess
    import sys

    run_dir = gathered.root / RUN
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from tdmpc_glass.runlayout import RunLock; "
                               f"lock = RunLock([{str(run_dir)!r}]); lock.acquire(); print('held', flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LeaseError, match="another process is writing this run: pid"):
            gathered.acquire([RUN], "job", HOLDER)
        assert RUN not in gathered.leases
    finally:
        holder.kill()
        holder.wait()
    assert gathered.acquire([RUN], "job", HOLDER) == 1  # the kernel dropped the dead holder's lock


def test_a_partial_line_a_killed_gatherer_left_is_cut_when_the_run_is_leased_again(gathered):
    path = gathered.root / RUN / "train.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"env_step,a\n40,1\n80,")
    gathered.acquire([RUN], "job", HOLDER)
    assert path.read_bytes() == b"env_step,a\n40,1\n"


# ---- the shipper ----------------------------------------------------------------------------------------------

class FlakyTransport:
    """A GatheredRoot behind a network that can be cut (every call raises TransportError while cut)."""

    def __init__(self, root: GatheredRoot):
        self.root, self.cut, self.calls = root, False, []

    def __getattr__(self, method):
        def call(*args):
            self.calls.append(method)
            if self.cut:
                raise TransportError(f"{method}: network unreachable")
            return getattr(self.root, method)(*args)
        return call


def scratch_run(tmp_path) -> tuple[Path, Path]:
    scratch = tmp_path / "scratch"
    run = scratch / RUN
    (run / "checkpoints").mkdir(parents=True)
    return scratch, run


def test_the_shipper_sends_complete_lines_rewrites_and_deletions_and_survives_a_network_cut(gathered, tmp_path):
    scratch, run = scratch_run(tmp_path)
    net = FlakyTransport(gathered)
    shipper = Shipper(net, scratch, [run], gathered.acquire([RUN], "job", HOLDER), chunk_bytes=64, chunk_budget=2)
    (run / "eval.csv").write_bytes(b"env_step,r\n0,1\n80,")  # the trainer is mid-row
    runlayout.write_status(run, {"status": "running", "env_step": 80})
    assert shipper.scan() is True  # every complete line shipped; the partial row waits for its newline
    got = gathered.root / RUN
    assert (got / "eval.csv").read_bytes() == b"env_step,r\n0,1\n"
    assert runlayout.read_status(got)["env_step"] == 80

    with open(run / "eval.csv", "ab") as f:
        f.write(b"2\n160,3\n")
    big = bytes(range(256)) * 2  # 512 bytes: 8 chunks of 64, two per scan
    (run / "checkpoints" / "step_0000000160.npz").write_bytes(big)
    net.cut = True  # the network goes: nothing reaches the copy, nothing half does
    assert shipper.try_scan() is False and shipper.failures == 1
    assert (got / "eval.csv").read_bytes() == b"env_step,r\n0,1\n"
    net.cut = False
    shipper.try_scan()
    assert (got / "eval.csv").read_bytes() == b"env_step,r\n0,1\n80,2\n160,3\n"
    assert not (got / "checkpoints" / "step_0000000160.npz").exists()  # still uploading in the background
    while not shipper.scan():
        pass
    assert (got / "checkpoints" / "step_0000000160.npz").read_bytes() == big

    # a resume cuts rows past its checkpoint: the file is rewritten (new inode) and goes whole
    runlayout.write_atomic(run / "eval.csv", "env_step,r\n0,1\n")
    (run / "checkpoints" / "step_0000000160.npz").unlink()
    assert shipper.scan() is True
    assert (got / "eval.csv").read_bytes() == b"env_step,r\n0,1\n"
    assert not (got / "checkpoints" / "step_0000000160.npz").exists()


def test_a_rotated_checkpoint_is_removed_only_once_the_newer_one_is_complete(gathered, tmp_path):
    scratch, run = scratch_run(tmp_path)
    shipper = Shipper(gathered, scratch, [run], gathered.acquire([RUN], "job", HOLDER), chunk_bytes=10,
                      chunk_budget=1)
    old, new = run / "checkpoints" / "step_0000000080.npz", run / "checkpoints" / "step_0000000160.npz"
    old.write_bytes(b"o" * 5)
    assert shipper.scan() is True
    new.write_bytes(b"n" * 35)
    old.unlink()  # checkpoint.save keeps the last two; here the older one goes at once
    copy = gathered.root / RUN / "checkpoints"
    for _ in range(3):
        shipper.scan()
        assert (copy / old.name).exists() and not (copy / new.name).exists()
    assert shipper.scan() is True
    assert sorted(p.name for p in copy.iterdir()) == [new.name]


def test_the_shipper_thread_ships_live_and_pull_restores_scratch_from_the_copy(gathered, tmp_path):
    scratch, run = scratch_run(tmp_path)
    shipper = Shipper(gathered, scratch, [run], gathered.acquire([RUN], "job", HOLDER), interval_s=0.02).start()
    try:
        for step in range(0, 400, 80):
            with open(run / "train.csv", "a") as f:
                f.write(f"{step},0.5\n")
        copy, deadline = gathered.root / RUN / "train.csv", time.monotonic() + 10
        while (copy.read_text().count("\n") if copy.exists() else 0) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert copy.read_text().count("\n") == 5  # while the job runs
    finally:
        assert shipper.stop() is True
    elsewhere = tmp_path / "other-node"
    (elsewhere / RUN).mkdir(parents=True)
    (elsewhere / RUN / "stale.txt").write_text("left by an earlier attempt")
    assert pull(gathered, [RUN], elsewhere, chunk_bytes=7) == (run / "train.csv").stat().st_size
    assert sorted(p.name for p in (elsewhere / RUN).iterdir()) == ["train.csv"]  # the stale file is gone
    assert (elsewhere / RUN / "train.csv").read_bytes() == (run / "train.csv").read_bytes()


def test_a_stale_epoch_stops_the_shipper(gathered, tmp_path):
    scratch, run = scratch_run(tmp_path)
    shipper = Shipper(gathered, scratch, [run], gathered.acquire([RUN], "job", HOLDER))
    gathered.acquire([RUN], "job", HOLDER)  # retried elsewhere
    (run / "eval.csv").write_text("a\n")
    assert shipper.try_scan() is False and "is stale" in shipper.fenced
    assert shipper.stop(timeout_s=1) is False


# ---- probe, scratch and GPU fit ---------------------------------------------------------------------------------

def test_the_probe_tells_a_worker_sharing_the_runs_root_from_one_that_does_not(tmp_path):
    path, text = fleet.write_probe(tmp_path / "runs")
    gathering = fleet.Gathering(None, "s1", str(tmp_path / "runs"), path, text)
    assert fleet.shares_runs_root(gathering, {}) is True
    assert fleet.shares_runs_root(gathering, {fleet.GATHER_ENV: "always"}) is False
    assert fleet.shares_runs_root(fleet.Gathering(None, "s1", "/nowhere", "/nowhere/.p", text), {}) is False
    with pytest.raises(ValueError, match="TDMPC_GLASS_GATHER='sometimes'"):
        fleet.gather_mode({fleet.GATHER_ENV: "sometimes"})
    a = fleet.scratch_root(gathering, "node" * 10, {fleet.SCRATCH_ENV: str(tmp_path / "s")})
    b = fleet.scratch_root(gathering, "other" * 8, {fleet.SCRATCH_ENV: str(tmp_path / "s")})
    assert a != b and a.parent.parent == b.parent.parent == tmp_path / "s"


def test_a_job_too_big_for_its_gpu_fails_with_one_line_naming_node_gpu_and_memory():
    from train_script import tiny_config

    per_seed = fleet.state_bytes(tiny_config())
    # the tiny config's buffer (400 x ...) and networks: well under a megabyte each, but not nothing
    assert 10_000 < per_seed < 5_000_000
    need = fleet.job_bytes_needed(per_seed, 3)
    assert need == int(per_seed * 3 * fleet.WORKING_FACTOR + fleet.RESERVE_BYTES)
    assert fleet.gpu_fit_error(need, need, "n1", "RTX 3060", "aa/k64 seeds 1-3", 3, per_seed) is None
    assert fleet.gpu_fit_error(need, None, "n1", "cpu", "aa/k64 seeds 1-3", 3, per_seed) is None
    gib = 1 << 30
    line = fleet.gpu_fit_error(12 * gib, 6 * gib, "host3 (abc)", "NVIDIA GeForce RTX 3060", "aa/k64 seeds 1-3", 3,
                               2 * gib)
    assert line == ("aa/k64 seeds 1-3: node host3 (abc), GPU NVIDIA GeForce RTX 3060: needs ~12.0 GiB for 3 "
                    "seed(s) (2.00 GiB of parameters, optimiser and buffer each, x2 working memory + 0.5 GiB), "
                    "6.0 GiB free: use --seeds-per-task 1")
    assert fleet.gpu_fit_error(12 * gib, gib, "n", "g", "x", 3, 2 * gib).endswith("use a GPU with more memory")


def test_base_scale_state_is_about_155_mb_per_seed():
    from experiments.phases import resolve

    assert 120e6 < fleet.state_bytes(resolve("base").cfg) < 200e6


# ---- a local multi-node Ray cluster (slow) ----------------------------------------------------------------------

def fleet_phase(folder: Path, steps: int) -> Path:
    """test_train's tiny setting as a phase (its XLA programs come from the shared cache), `steps` long."""
    from experiments.phases import resolve
    from tdmpc_glass.config import flatten, to_dict
    from test_cli import write_phase
    from train_script import tiny_config

    demo, tiny = flatten(to_dict(resolve("demo").cfg)), flatten(to_dict(tiny_config(steps=steps)))
    path = write_phase(folder, "fleet", name="fleet", description="tiny, on a fleet", extends="demo", seeds="1-2",
                       overrides={k: v for k, v in tiny.items() if v != demo[k]})
    assert resolve(str(path)).cfg == tiny_config(steps=steps)
    return path


def node_of_scratch(scratch: Path, rel: str) -> list[str]:
    """The node-id prefixes whose scratch folder holds run dir `rel`."""
    return sorted(p.name[len("node-"):] for p in scratch.glob("node-*") if any(p.glob(f"*/{rel}/config.yaml")))


@pytest.mark.slow  # a 4-node Ray cluster on one machine and three tiny trainings: minutes on 2 cores
def test_a_fleet_gathers_every_seed_live_and_a_job_whose_node_dies_resumes_elsewhere_identically(tmp_path,
                                                                                                 monkeypatch):
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from analysis.runs import load_runs
    from experiments import sweep
    from experiments.phases import resolve_variants
    from tdmpc_glass.train import train
    from train_script import rows, tiny_config

    steps = 640
    root, scratch = tmp_path / "runs", tmp_path / "scratch"
    monkeypatch.setenv(fleet.GATHER_ENV, "always")  # one machine: force the gathering path, no shared disk
    monkeypatch.setenv(fleet.SCRATCH_ENV, str(scratch))  # each node trains under scratch/node-<its id>/
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    jobs = sweep.make_jobs(resolve_variants(str(fleet_phase(tmp_path, steps))), [1, 2], root, seeds_per_task=1)
    rel1, rel2 = "fleet/default/seed1", "fleet/default/seed2"

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the launching machine: no jobs
    workers = [cluster.add_node(num_cpus=1) for _ in range(3)]
    cluster.wait_for_nodes()
    seen: dict = {}

    def kill_seed1_node_mid_job():
        """Once seed 1's first checkpoint is gathered: read the runs root as the dashboard does, then remove
        the node training seed 1."""
        deadline = time.monotonic() + 900
        run1 = root / rel1
        while time.monotonic() < deadline:
            ckpts = list((run1 / "checkpoints").glob("step_*.npz")) if run1.is_dir() else []
            if ckpts and (run1 / "eval.csv").is_file():
                break
            time.sleep(0.2)
        else:
            seen["error"] = "seed 1's first checkpoint never reached the runs root"
            return
        live = {r.seed: r for r in load_runs(root)}
        seen["live"] = (live[1].status, len(live[1].eval), len(live[1].train()))
        seen["gathered_at_kill"] = sorted(p.name for p in (run1 / "checkpoints").glob("step_*.npz"))
        seen["status_at_kill"] = runlayout.read_status(run1)
        [prefix] = node_of_scratch(scratch, rel1)
        [node] = [n for n in workers if n.node_id.startswith(prefix)]
        seen["killed"] = prefix
        cluster.remove_node(node)
        print(f"killed node {prefix} while seed 1 was at env step {seen['status_at_kill'].get('env_step')} "
              f"(gathered checkpoints {seen['gathered_at_kill']})", flush=True)

    def monitor_body():
        try:
            kill_seed1_node_mid_job()
        except Exception as e:  # reported by the test, not lost in a thread
            seen["error"] = f"{type(e).__name__}: {e}"

    monitor = threading.Thread(target=monitor_body, daemon=True)
    start = time.time()
    try:
        monitor.start()
        outcomes = sweep.run_ray(jobs, address=cluster.address, num_cpus=1, max_retries=2)
        monitor.join(timeout=60)
    finally:
        cluster.shutdown()
    print(f"fleet sweep with a node killed: {time.time() - start:.1f} s; "
          f"outcomes {[(o.job.label, o.code, o.note) for o in outcomes]}", flush=True)
    assert "error" not in seen, seen["error"]
    assert [o.code for o in outcomes] == [0, 0], [o.note for o in outcomes]

    # the dashboard's loader saw seed 1 running, with rows, on the launching machine before its node died
    status, eval_rows, train_rows = seen["live"]
    assert status == runlayout.RUNNING and eval_rows >= 1 and train_rows >= 1
    assert 0 < seen["status_at_kill"]["env_step"] < steps
    # seed 1 ran on two nodes (the killed one, then another), seed 2 on a third; each in its own scratch
    assert seen["killed"] in node_of_scratch(scratch, rel1) and len(node_of_scratch(scratch, rel1)) == 2
    assert seen["killed"] not in node_of_scratch(scratch, rel2) and len(node_of_scratch(scratch, rel2)) == 1
    events = [json.loads(line)["event"] for line in (root / rel1 / "events.jsonl").read_text().splitlines()]
    assert events[0] == "start" and "resume" in events and events[-1] == "done", events

    # the gathered runs equal uninterrupted local runs of the same seeds, timing columns aside
    cfg = tiny_config(steps=steps)
    for seed, rel in ((1, rel1), (2, rel2)):
        ref = tmp_path / "reference" / f"seed{seed}"
        assert train(cfg, [seed], [ref], progress=False) == 0
        for name in ("eval.csv", "train.csv"):
            assert rows(root / rel / name) == rows(ref / name), f"seed {seed} {name}"
        print(f"seed {seed}: gathered eval.csv ({len(rows(ref / 'eval.csv'))} rows) and train.csv "
              f"({len(rows(ref / 'train.csv'))} rows) equal the uninterrupted local run", flush=True)
        gathered_status = runlayout.read_status(root / rel)
        assert gathered_status["status"] == runlayout.DONE and gathered_status["env_step"] == steps
        assert not (root / rel / runlayout.LOCK).exists()
        assert not [p for p in (root / rel).rglob("*") if p.name.endswith(".tmp")]
        assert sorted(p.name for p in (root / rel / "checkpoints").iterdir()) == \
            sorted(p.name for p in (ref / "checkpoints").iterdir())
