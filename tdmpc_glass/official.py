"""Official TD-MPC2 checkpoints (nicklashansen/tdmpc2 `TDMPC2.save()` files) read without torch and mapped onto
our networks.

A `.pt` file is a zip archive: `<stem>/data.pkl` (a protocol-2 pickle of `{"model": OrderedDict}`, the official
`WorldModel.state_dict()`) and `<stem>/data/<key>`, one raw little-endian storage per tensor. The pickle is read
by an unpickler that resolves only the tensor-rebuild names (`ALLOWED_GLOBALS`) and refuses every other global,
so a foreign pickle cannot run code. Layouts (../shared/reference/tdmpc2-golden/README.md): Linear weights are
(out, in) like ours; LayerNorm `ln.weight` / `ln.bias` are our `scale` / `offset`; the Q ensemble is stacked on a
leading head axis like ours; `_detach_Qs_params` is a copy of the online heads (checked equal, not loaded).
Every error is an OfficialCheckpointError with a one-line message naming the file and the key.
"""
from __future__ import annotations

import collections
import io
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

# storage class name -> dtype (torch's legacy typed storages)
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": None,  # no numpy dtype: refused with a clear line if a tensor uses it
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
ALLOWED_GLOBALS = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"), ("torch", "Size")} | {
    ("torch", name) for name in STORAGE_DTYPES}
LAYER_FIELDS = ("weight", "bias", "ln.weight", "ln.bias")  # old flat Q names: n -> layer n // 4, field n % 4


class OfficialCheckpointError(ValueError):
    """An official checkpoint that cannot be read or does not fit: a one-line message naming file and key."""


# ---- reading the file ------------------------------------------------------------------------------------------

class _StorageType:
    def __init__(self, name: str):
        self.name = name


class _Size(tuple):
    """torch.Size: a tuple."""


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    buffer, dtype, key = storage
    itemsize = np.dtype(dtype).itemsize
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    needed = offset + sum((s - 1) * st for s, st in zip(size, stride)) + 1 if all(size) else 0
    if len(buffer) < needed:
        raise OfficialCheckpointError(f"storage data/{key} holds {len(buffer)} elements, a tensor of shape "
                                      f"{size} needs {needed}")
    view = np.lib.stride_tricks.as_strided(buffer[offset:], shape=size, strides=[s * itemsize for s in stride])
    return np.array(view)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, source: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.source = archive, prefix, source

    def find_class(self, module, name):
        if (module, name) not in ALLOWED_GLOBALS:
            raise OfficialCheckpointError(f"{self.source}: refused: its pickle calls {module}.{name}, which is not "
                                          "a tensor-rebuild function (a foreign or malicious file?)")
        if module == "collections":
            return collections.OrderedDict
        if name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if name == "Size":
            return _Size
        return _StorageType(name)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise OfficialCheckpointError(f"{self.source}: refused: persistent id {str(pid)[:60]} is not a tensor "
                                          "storage")
        _, kind, key, _location, numel = pid
        dtype = STORAGE_DTYPES[kind.name]
        if dtype is None:
            raise OfficialCheckpointError(f"{self.source}: storage data/{key} is {kind.name}, which numpy cannot "
                                          "hold; convert the checkpoint to float32")
        try:
            raw = self.archive.read(f"{self.prefix}data/{key}")
        except KeyError:
            raise OfficialCheckpointError(f"{self.source}: storage data/{key} is missing from the archive") from None
        buffer = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"), count=len(raw) // np.dtype(dtype).itemsize)
        if buffer.size < int(numel):
            raise OfficialCheckpointError(f"{self.source}: storage data/{key} holds {buffer.size} elements, its "
                                          f"header says {numel}")
        return buffer.astype(dtype), dtype, key


def read_state_dict(path) -> dict[str, np.ndarray | None]:
    """The official model's state_dict from a `.pt` file: key -> numpy array (tensordict metadata entries such
    as `_Qs.params.__batch_size` are kept as given: tuples or None). Raises OfficialCheckpointError."""
    path = Path(path)
    source = str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pickles = [n for n in names if n.endswith("data.pkl")]
            if len(pickles) != 1:
                raise OfficialCheckpointError(f"{source}: not a torch checkpoint (no single data.pkl in the zip "
                                              "archive)")
            prefix = pickles[0][: -len("data.pkl")]
            byteorder = f"{prefix}byteorder"
            if byteorder in names and archive.read(byteorder).strip() not in (b"little", b""):
                raise OfficialCheckpointError(f"{source}: big-endian storages are not supported")
            obj = _RestrictedUnpickler(archive.read(pickles[0]), archive, prefix, source).load()
    except OfficialCheckpointError:
        raise
    except FileNotFoundError:
        raise OfficialCheckpointError(f"{source}: no such file") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise OfficialCheckpointError(f"{source}: unreadable (truncated or not a torch .pt zip archive: "
                                      f"{type(e).__name__}: {_first_line(e)})") from None
    except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise OfficialCheckpointError(f"{source}: damaged pickle ({type(e).__name__}: {_first_line(e)})") from None
    state = obj.get("model") if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise OfficialCheckpointError(f"{source}: not an official TD-MPC2 checkpoint (no 'model' state_dict: "
                                      "expected the output of TDMPC2.save())")
    return dict(state)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:120]


def convert_old_q_names(state: dict) -> dict:
    """Pre-tensordict names `_Qs.params.<n>` / `_target_Qs.params.<n>` -> `_Qs.params.<n//4>.<field n%4>` /
    `_target_Qs_params.<...>` (the official converter's rule); current names pass through."""
    out = {}
    for key, value in state.items():
        for old, new in (("_Qs.params.", "_Qs.params."), ("_target_Qs.params.", "_target_Qs_params.")):
            rest = key[len(old):] if key.startswith(old) else None
            if rest is not None and rest.isdigit():
                n = int(rest)
                key = f"{new}{n // 4}.{LAYER_FIELDS[n % 4]}"
                break
        out[key] = value
    return out


# ---- model size from the shapes ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class OfficialDims:
    obs_dim: int
    act_dim: int
    latent_dim: int
    enc_dim: int
    num_enc_layers: int
    mlp_dim: int
    num_q: int
    num_bins: int
    log_std_min: float
    log_std_max: float

    def overrides(self) -> dict:
        """Dotted config keys that build our networks of this size."""
        return {"model.enc_dim": self.enc_dim, "model.mlp_dim": self.mlp_dim, "model.latent_dim": self.latent_dim,
                "model.num_enc_layers": self.num_enc_layers, "model.num_q": self.num_q,
                "model.num_bins": self.num_bins, "model.log_std_min": self.log_std_min,
                "model.log_std_max": self.log_std_max}


def _need(state: dict, key: str, source: str, ndim: int) -> np.ndarray:
    value = state.get(key)
    if not isinstance(value, np.ndarray):
        raise OfficialCheckpointError(f"{source}: key {key} is missing (not an official single-task TD-MPC2 "
                                      "state-based checkpoint?)")
    if value.ndim != ndim:
        raise OfficialCheckpointError(f"{source}: {key} has shape {tuple(value.shape)}, expected {ndim} axes")
    return value


def infer_dims(state: dict, source: str = "checkpoint") -> OfficialDims:
    """The model size written in the tensor shapes. Multi-task (task embeddings), episodic (a termination head)
    and pixel-encoder checkpoints are refused in one line."""
    if any(k.startswith("_task_emb") for k in state):
        raise OfficialCheckpointError(f"{source}: _task_emb.weight: official multi-task checkpoints are not "
                                      "supported (only single-task state-based ones)")
    if any(k.startswith("_termination") for k in state):
        raise OfficialCheckpointError(f"{source}: _termination.*: episodic checkpoints (a termination head) are "
                                      "not supported")
    if any(k.startswith("_encoder.") and not k.startswith("_encoder.state.") for k in state):
        other = next(k for k in state if k.startswith("_encoder.") and not k.startswith("_encoder.state."))
        raise OfficialCheckpointError(f"{source}: {other}: only state-based checkpoints are supported")
    enc_layers = sorted({int(k.split(".")[2]) for k in state if k.startswith("_encoder.state.")})
    if not enc_layers:
        raise OfficialCheckpointError(f"{source}: key _encoder.state.0.weight is missing (not an official "
                                      "TD-MPC2 state-based checkpoint?)")
    first = _need(state, "_encoder.state.0.weight", source, 2)
    last = _need(state, f"_encoder.state.{enc_layers[-1]}.weight", source, 2)
    dyn = _need(state, "_dynamics.0.weight", source, 2)
    q_last = _need(state, "_Qs.params.2.weight", source, 3)
    _need(state, "_pi.2.weight", source, 2)
    latent = int(last.shape[0])
    log_min = _need(state, "log_std_min", source, 0)
    log_dif = _need(state, "log_std_dif", source, 0)
    return OfficialDims(
        obs_dim=int(first.shape[1]), act_dim=int(dyn.shape[1]) - latent, latent_dim=latent,
        enc_dim=int(first.shape[0]), num_enc_layers=len(enc_layers), mlp_dim=int(dyn.shape[0]),
        num_q=int(q_last.shape[0]), num_bins=int(q_last.shape[1]), log_std_min=float(log_min),
        log_std_max=float(log_min) + float(log_dif),
    )


# ---- official names of our parameters ---------------------------------------------------------------------------

def _layer_getters(prefix: str, layers: list[Callable], normed: list[bool]) -> list[tuple[str, Callable]]:
    """(official key, getter of our array) for a stack of layers; getters take the root (world, policy, target)."""
    out = []
    for i, (layer, has_norm) in enumerate(zip(layers, normed)):
        linear = (lambda r, layer=layer: layer(r).linear) if has_norm else layer
        out += [(f"{prefix}{i}.weight", lambda r, f=linear: f(r).weight),
                (f"{prefix}{i}.bias", lambda r, f=linear: f(r).bias)]
        if has_norm:
            out += [(f"{prefix}{i}.ln.weight", lambda r, layer=layer: layer(r).norm.scale),
                    (f"{prefix}{i}.ln.bias", lambda r, layer=layer: layer(r).norm.offset)]
    return out


def _mlp_getters(prefix: str, get_mlp: Callable, num_hidden: int, normed_out: bool) -> list[tuple[str, Callable]]:
    layers = [lambda r, i=i: get_mlp(r).hidden[i] for i in range(num_hidden)] + [lambda r: get_mlp(r).out]
    return _layer_getters(prefix, layers, [True] * num_hidden + [normed_out])


def parameter_getters(num_enc_hidden: int) -> list[tuple[str, Callable]]:
    """Every official state_dict key that holds a parameter, with the getter of our array in the root
    (world, policy, target_qs): encoder, dynamics, reward, policy, online Q heads, target Q heads."""
    return (_mlp_getters("_encoder.state.", lambda r: r[0].encoder, num_enc_hidden, True)
            + _mlp_getters("_dynamics.", lambda r: r[0].dynamics, 2, True)
            + _mlp_getters("_reward.", lambda r: r[0].reward, 2, False)
            + _mlp_getters("_pi.", lambda r: r[1].mlp, 2, False)
            + _mlp_getters("_Qs.params.", lambda r: r[0].qs, 2, False)
            + _mlp_getters("_target_Qs_params.", lambda r: r[2], 2, False))


IGNORED = ("log_std_min", "log_std_dif", "_Qs.params.__batch_size", "_Qs.params.__device",
           "_target_Qs_params.__batch_size", "_target_Qs_params.__device", "_detach_Qs_params.__batch_size",
           "_detach_Qs_params.__device")


def load_into(world, policy, target_qs, state: dict, source: str = "checkpoint"):
    """(world, policy, target_qs) with every array replaced by the checkpoint's. Shapes must match exactly:
    a mismatch raises one line naming the key and both shapes; unknown keys are refused too."""
    import equinox as eqx
    import jax.numpy as jnp

    root = (world, policy, target_qs)
    getters = parameter_getters(len(world.encoder.hidden))
    known = {key for key, _ in getters}
    for key in state:
        detached = key.replace("_detach_Qs_params.", "_Qs.params.", 1)
        if key in IGNORED or key in known:
            continue
        if key.startswith("_detach_Qs_params.") and detached in known:
            if not np.array_equal(state[key], state.get(detached)):
                raise OfficialCheckpointError(f"{source}: {key} differs from {detached} (the detached copy must "
                                              "equal the online Q parameters)")
            continue
        raise OfficialCheckpointError(f"{source}: unexpected key {key} (not part of the model this checkpoint's "
                                      "shapes describe)")
    values = []
    for key, get in getters:
        ours = get(root)
        theirs = state.get(key)
        if not isinstance(theirs, np.ndarray):
            raise OfficialCheckpointError(f"{source}: key {key} is missing")
        if tuple(theirs.shape) != tuple(ours.shape):
            raise OfficialCheckpointError(f"{source}: {key} has shape {tuple(theirs.shape)}, the model needs "
                                          f"{tuple(ours.shape)}")
        if not np.issubdtype(theirs.dtype, np.floating):
            raise OfficialCheckpointError(f"{source}: {key} is {theirs.dtype}, expected floating point")
        if not np.all(np.isfinite(theirs)):
            raise OfficialCheckpointError(f"{source}: {key} holds non-finite values")
        values.append(jnp.asarray(theirs, dtype=ours.dtype))
    return eqx.tree_at(lambda r: [get(r) for _, get in getters], root, values)


def named_arrays(world, policy, target_qs) -> dict:
    """Our parameters under their official names (the inverse of load_into), e.g. to compare with official
    gradients or parameters."""
    root = (world, policy, target_qs)
    return {key: get(root) for key, get in parameter_getters(len(world.encoder.hidden))}
