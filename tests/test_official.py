"""The official TD-MPC2: numerical equality with its golden outputs (check-official), the random-source seam,
reading its checkpoints without torch (import-official) and refusing damaged or foreign ones in one line."""
import io
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from train_script import tiny_config

from experiments import official_check, official_import
from tdmpc_glass import agent, official
from tdmpc_glass import buffer as replay
from tdmpc_glass.config import derive
from tdmpc_glass.draws import SAMPLE, Replay, Sample

GOLDEN = Path(__file__).resolve().parents[2] / "shared/reference/tdmpc2-golden"
needs_golden = pytest.mark.skipif(not (GOLDEN / "checkpoint.pt").exists(),
                                  reason=f"no golden set at {GOLDEN} (CI lays ../shared beside the repo)")


# ---- writing .pt files without torch (the tests' own minimal writer) --------------------------------------------

class _Global:
    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle's save_reduce asks for a callable; never called
        raise NotImplementedError


class _Tensor:
    def __init__(self, array):
        self.array = np.array(array, order="C")  # keeps 0-d arrays 0-d


class _PtPickler(pickle._Pickler):
    """Writes GLOBAL opcodes for _Global markers and tensors as torch's rebuild calls + persistent storages."""

    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, f):
        super().__init__(f, protocol=2)
        self.storages = []

    def save_marker(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())

    dispatch[_Global] = save_marker

    def persistent_id(self, obj):
        if isinstance(obj, tuple) and len(obj) == 2 and obj[0] == "__storage__":
            key = str(len(self.storages))
            self.storages.append(obj[1])
            kind = "LongStorage" if obj[1].dtype == np.int64 else "FloatStorage"
            return ("storage", _Global("torch", kind), key, "cpu", int(obj[1].size))
        return None

    def reducer_override(self, obj):
        if isinstance(obj, _Tensor):
            a = obj.array
            stride = tuple(s // a.itemsize for s in a.strides)
            return (_Global("torch._utils", "_rebuild_tensor_v2"),
                    (("__storage__", a.reshape(-1)), 0, tuple(a.shape), stride, False, _OrderedDictCall()))
        return NotImplemented


class _OrderedDictCall:
    def __reduce__(self):
        return (_Global("collections", "OrderedDict"), ())


def write_pt(path: Path, state: dict, payload=None) -> Path:
    """A .pt archive of {"model": state} (arrays become tensors); payload: any other object to pickle instead."""
    buf = io.BytesIO()
    pickler = _PtPickler(buf)
    pickler.dump({"model": {k: (_Tensor(v) if isinstance(v, np.ndarray) else v) for k, v in state.items()}}
                 if payload is None else payload)
    stem = path.stem
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{stem}/data.pkl", buf.getvalue())
        z.writestr(f"{stem}/byteorder", "little")
        for i, a in enumerate(pickler.storages):
            z.writestr(f"{stem}/data/{i}", a.astype(a.dtype.newbyteorder("<")).tobytes())
    return path


def golden_state():
    return official.read_state_dict(GOLDEN / "checkpoint.pt")


def refusal(capsys, *argv):
    """import-official's exit code and its stderr; asserts the one-line form."""
    code = official_import.main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err, err
    return err


# ---- check-official --------------------------------------------------------------------------------------------

@needs_golden
def test_check_official_passes_on_the_golden_set(capsys):
    """Every network head, one update (losses, gradients, parameters after) and three planner calls equal the
    official TD-MPC2's within the golden README's float32 tolerances, with its recorded draws replayed."""
    code = official_check.main([str(GOLDEN)])
    out = capsys.readouterr().out.splitlines()
    assert code == 0, "\n".join(line for line in out if not line.startswith("ok"))
    names = {line.split()[1] for line in out[:-1]}
    for name in ("encode.z", "q_target.min2", "td.target", "info.value_loss", "grad._Qs.params.0.weight",
                 "after._target_Qs_params.2.weight", "info.pi_scale", "call1.iter5.elite_idxs", "call2.rand_idx",
                 "call0.action"):
        assert name in names
    assert len(names) > 300 and out[-1].endswith("quantities within tolerance")


@needs_golden
def test_check_official_fails_on_a_wrong_output_or_draw(tmp_path):
    """A changed official output fails its line; the draws matter (another pair of target heads fails min2)."""
    golden = official_check.load_golden(GOLDEN)
    dims = official.infer_dims(golden_state())
    cfg = official_check.golden_config(golden["config"]["config"], dims)
    state = agent.init_state(cfg, dims.obs_dim, dims.act_dim, 0)
    world, policy, target_qs = official.load_into(state.world, state.policy, state.target_qs, golden_state())
    state = agent.AgentState(world, policy, target_qs, state.world_opt, state.policy_opt, state.q_scale,
                             state.buffer, state.key)
    fwd = dict(golden["forward"])
    fwd["encode.z"] = fwd["encode.z"] + 1e-3 * (np.arange(fwd["encode.z"].size).reshape(fwd["encode.z"].shape) == 7)
    fwd["rand_1_randperm"] = np.roll(fwd["rand_1_randperm"], 1)
    lines = {line.name: line for line in official_check.check_forward(
        cfg, derive(cfg), state, golden["inputs"], fwd, jax.random.PRNGKey(0))}
    assert not lines["encode.z"].ok and lines["encode.z"].abs_err == pytest.approx(1e-3, rel=1e-2)
    assert not lines["q_target.min2"].ok
    assert lines["q.avg2"].ok and lines["pi.action"].ok


def test_check_official_refuses_a_missing_dir(tmp_path, capsys):
    assert official_check.main([str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "nowhere" in err


# ---- the random-source seam -------------------------------------------------------------------------------------

class Recorder(Sample):
    """Draws like SAMPLE and keeps every draw by site (eager only)."""

    def __init__(self, num_q: int):
        self.recorded, self.num_q = {}, num_q

    def _keep(self, site, value):
        self.recorded.setdefault(site, []).append(value)
        return value

    def policy_eps(self, key, shape):
        return self._keep("policy_eps", super().policy_eps(key, shape))

    def q_pair(self, key, num_q):
        return self._keep("q_pair", super().q_pair(key, num_q))

    def q_dropout(self, key, heads, shape, rate):
        masks = super().q_dropout(key, heads, shape, rate)
        full = jnp.zeros((self.num_q, *shape), bool).at[heads].set(masks)  # every head's row, as official
        self._keep("q_dropout", full)
        return masks


@pytest.mark.slow  # compiles the update three ways (about 40 s)
def test_default_draws_are_the_seams_and_replay_reproduces_an_update():
    """Replaying the draws SAMPLE made, under another key, gives the same update bit for bit: every random
    number of the update goes through the seam (a draw outside it would follow the new key)."""
    cfg = tiny_config()
    obs_dim, act_dim = 15, 4
    state = agent.init_state(cfg, obs_dim, act_dim, 3)
    k = jax.random.split(jax.random.PRNGKey(5), 3)
    H, B = cfg.horizon, cfg.optim.batch_size
    batch = replay.Batch(jax.random.normal(k[0], (H + 1, B, obs_dim)), jax.random.uniform(k[1], (H, B, act_dim),
                         minval=-1, maxval=1), jax.random.normal(k[2], (H, B)))
    h = agent.Hyper.from_config(cfg)
    world_tx, policy_tx = agent.optimisers(cfg)
    def update(key, recorded=None):
        """One jitted update; with `recorded`, replaying those draws (passed as arguments, not constants)."""
        return eqx.filter_jit(lambda s, r: agent.update(s, batch, jax.random.PRNGKey(key), h, world_tx, policy_tx,
                                                        draws=SAMPLE if r is None else Replay(r)))(state, recorded)

    default, m0 = update(1)
    recorder = Recorder(cfg.model.num_q)
    # jitted: the recorder keeps traced draws, returned as outputs to become arrays
    (recorded, m1), draws = eqx.filter_jit(lambda s: (agent.update(
        s, batch, jax.random.PRNGKey(1), h, world_tx, policy_tx, draws=recorder), recorder.recorded))(state)
    replayed, m2 = update(99, draws)
    other, m3 = update(99)
    leaves = lambda s: jax.tree.leaves((s.world, s.policy, s.target_qs, s.q_scale))
    for a, b, c in zip(leaves(default), leaves(recorded), leaves(replayed)):
        np.testing.assert_array_equal(a, b)  # SAMPLE through a recording wrapper: bit for bit
        np.testing.assert_allclose(c, a, rtol=0, atol=1e-8)  # replayed: the same up to XLA's fusion choices
    for name in ("total_loss", "pi_loss", "grad_norm", "pi_grad_norm"):
        assert m0[name] == m1[name] and m2[name] == pytest.approx(float(m0[name]), rel=1e-6)
    # another key, other draws (fresh Q heads output 0 whatever the draws, so the policy side shows it)
    assert m3["pi_loss"] != pytest.approx(float(m0["pi_loss"]), rel=1e-4)
    assert any(np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-6 for a, b in zip(leaves(default), leaves(other)))
    assert {k: len(v) for k, v in draws.items()} == {"policy_eps": 2, "q_pair": 2, "q_dropout": 2}


def test_replay_refuses_a_missing_or_misshapen_draw():
    from tdmpc_glass.draws import ReplayError

    r = Replay({"policy_eps": [np.zeros((2, 3))]})
    with pytest.raises(ReplayError, match="policy_eps"):
        r.policy_eps(None, (3, 3))
    with pytest.raises(ReplayError, match="q_pair"):
        r.q_pair(None, 5)
    assert SAMPLE.q_pair(jax.random.PRNGKey(0), 5).shape == (2,)


# ---- reading official checkpoints --------------------------------------------------------------------------------

@needs_golden
def test_reader_maps_every_tensor_and_back():
    state = golden_state()
    dims = official.infer_dims(state)
    assert (dims.obs_dim, dims.act_dim, dims.latent_dim, dims.enc_dim, dims.num_enc_layers, dims.mlp_dim,
            dims.num_q, dims.num_bins, dims.log_std_min, dims.log_std_max) == (15, 4, 32, 64, 2, 64, 5, 101, -10, 2)
    golden = official_check.load_golden(GOLDEN)
    cfg = official_check.golden_config(golden["config"]["config"], dims)
    s = agent.init_state(cfg, 15, 4, 0)
    named = official.named_arrays(*official.load_into(s.world, s.policy, s.target_qs, state))
    assert len(named) == sum(1 for k, v in state.items() if isinstance(v, np.ndarray)
                             and not k.startswith(("_detach", "log_std")))
    for key, value in named.items():
        np.testing.assert_array_equal(value, state[key])


@needs_golden
def test_old_q_names_map_to_layer_and_field():
    state = golden_state()
    old = {}
    fields = official.LAYER_FIELDS
    for key, value in state.items():
        for prefix, old_prefix in (("_Qs.params.", "_Qs.params."), ("_target_Qs_params.", "_target_Qs.params.")):
            rest = key[len(prefix):] if key.startswith(prefix) else ""
            layer, _, field = rest.partition(".")
            if layer.isdigit() and field in fields:
                key = f"{old_prefix}{int(layer) * 4 + fields.index(field)}"
        old[key] = value
    assert "_Qs.params.9" in old and "_target_Qs.params.8" in old
    converted = official.convert_old_q_names(old)
    assert set(converted) == set(state)
    for key in state:
        if isinstance(state[key], np.ndarray):
            np.testing.assert_array_equal(converted[key], state[key])


@needs_golden
def test_the_test_writer_round_trips():
    state = {k: v for k, v in golden_state().items() if isinstance(v, np.ndarray)}
    path = write_pt(Path(__import__("tempfile").mkdtemp()) / "copy.pt", state)
    back = official.read_state_dict(path)
    for key in state:
        np.testing.assert_array_equal(back[key], state[key])


@needs_golden
def test_damaged_and_foreign_checkpoints_are_refused_in_one_line(tmp_path, capsys):
    root = tmp_path / "runs"
    args = ("--task", "hopper-hop", "--runs-root", root)
    # a truncated zip archive
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((GOLDEN / "checkpoint.pt").read_bytes()[:300_000])
    assert "unreadable (truncated" in refusal(capsys, truncated, *args)
    # a pickle that calls something else: refused before anything runs
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"model": Evil()}, protocol=2))
    err = refusal(capsys, evil, *args)
    assert "refused" in err and "system" in err and not marker.exists()
    # wrong shapes: a tensor that does not fit the others, and a checkpoint of another task's dimensions
    state = {k: v for k, v in golden_state().items() if isinstance(v, np.ndarray)}
    state["_reward.1.weight"] = state["_reward.1.weight"][:, :60]
    err = refusal(capsys, write_pt(tmp_path / "shapes.pt", state), *args)
    assert "_reward.1.weight has shape (64, 60), the model needs (64, 64)" in err
    err = refusal(capsys, GOLDEN / "checkpoint.pt", "--task", "cartpole-swingup", "--runs-root", root)
    assert "_encoder.state.0.weight has shape (64, 15), the model needs (64, 5)" in err
    # a multi-task checkpoint
    state = {k: v for k, v in golden_state().items() if isinstance(v, np.ndarray)}
    state["_task_emb.weight"] = np.zeros((80, 96), np.float32)
    assert "multi-task" in refusal(capsys, write_pt(tmp_path / "mt.pt", state), *args)
    assert not root.exists()  # nothing written by a refused import


# ---- import-official, then video (slow: renders) -------------------------------------------------------------------

@needs_golden
@pytest.mark.slow
def test_import_official_then_video_and_evaluation(tmp_path):
    root = tmp_path / "runs"
    code = official_import.main([str(GOLDEN / "checkpoint.pt"), "--task", "hopper-hop", "--runs-root", str(root),
                                 "--set", "train.buffer_capacity=2000", "--set", "train.eval_episodes=1",
                                 "--set", "train.num_workers=0", "--set", "planner.num_samples=64",
                                 "--set", "train.episode_length=20"])
    assert code == 0
    run = root / "official-hopper-hop" / "default" / "seed1"
    record = yaml.safe_load((run / "config.yaml").read_text())
    assert record["config"]["model"]["latent_dim"] == 32 and record["config"]["model"]["num_q"] == 5
    env = {**__import__("os").environ, "MUJOCO_GL": "osmesa"}
    video = subprocess.run([sys.executable, "-m", "experiments.cli", "video", "--run", str(run), "--max-steps", "5",
                            "--height", "64", "--width", "64"], capture_output=True, text=True, env=env,
                           cwd=Path(__file__).resolve().parents[1], timeout=900)
    assert video.returncode == 0, video.stderr
    assert list((run / "videos").glob("step0000000000_mppi_seed0_ep0.mp4")) or list((run / "videos").glob("*.mp4"))
    # the run command resumes the imported checkpoint: it evaluates it at env step 0, then trains one episode
    ran = subprocess.run([sys.executable, "-m", "experiments.cli", "run", str(run.parents[1] / "phase.yaml"),
                          "--runs-root", str(root), "--steps", "40", "--no-progress"], capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parents[1], timeout=1800)
    assert ran.returncode == 0, ran.stderr
    rows = (run / "eval.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "40"]
    assert "resume" in (run / "events.jsonl").read_text()
    assert json.loads((run / "status.json").read_text())["status"] == "done"
    # `resume` trains the same run on by its run dir alone
    more = subprocess.run([sys.executable, "-m", "experiments.cli", "resume", str(run), "--steps", "80",
                           "--no-progress"], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
                          timeout=1800)
    assert more.returncode == 0, more.stderr
    assert [r.split(",")[0] for r in (run / "eval.csv").read_text().splitlines()[1:]] == ["0", "40", "80"]
