"""PyTorch checkpoints (``.pt``, ``.pth``, ``.bin``, ``.ckpt``).

Loading goes through ``torch.load(..., weights_only=True)`` and nothing
else: a pickle is a program, and only torch's restricted unpickler may run
it. Anything it refuses (arbitrary globals, a corrupt archive) is BadInput.

A checkpoint is a tree (dicts, lists, tuples, ...) with tensors at some
leaves. Tensors are flattened to dotted names (``model.fc.weight``,
``optimizer.state.0.exp_avg``); the tree itself goes into ``layout`` as
plain JSON so the writer can rebuild it exactly::

    {"version": 1,
     "root": {"type": "dict", "items": [
        [{"type": "str", "value": "model"}, {"type": "odict", "items": [
            [{"type": "str", "value": "fc.weight"}, {"type": "tensor", "name": "model.fc.weight"}],
            [{"type": "str", "value": "head"},
             {"type": "tensor", "name": "model.head", "tied_to": "model.fc.weight"}]],
          "attrs": {"_metadata": {...}}}],
        [{"type": "str", "value": "step"}, {"type": "int", "value": 5}],
        [{"type": "str", "value": "lr"}, {"type": "float", "bits": "3f50624dd2f1a9fc", "repr": "0.001"}]]}}

Leaves are typed exactly (bool vs int, list vs tuple, int vs str keys,
float bit patterns so nan payloads and -0.0 survive). Tensors sharing the
same storage, offset, shape and strides (tied weights) are recorded with
``tied_to`` (the first name of that storage) and restored sharing storage;
``same_object`` (the earlier name holding the very same Python object) makes
them one object again. Tied tensors stay in ``Snapshot.tensors`` under every
name (same array; a content-addressed store keeps the bytes once). Other
views (offsets, transposes) are stored as their contiguous values.

torch is imported lazily: ``import pas.formats`` must stay fast without it.
"""
from __future__ import annotations

import base64
import collections
import json
import os
import struct
import warnings
import zipfile
from typing import Any

import numpy as np

from .. import dtypes
from ..errors import BadInput, PasError, StoreError, UnsupportedDType
from ..names import check_tensor_name
from ..snapshot import Snapshot, Tensor
from ._common import atomic_file, check_tensor, check_zip_directory, existing, le_contiguous, snapshot_tensors

LAYOUT_VERSION = 1
MAX_DEPTH = 100                 # nesting of real checkpoints is < 10; bounds recursion
MAX_INFLATED = 4 * 2**30        # torch.save never compresses; re-zipped archives may
ROOT_TENSOR_NAME = "tensor"     # name of a checkpoint that is one bare tensor
_SAFE_INT = 2**53               # larger ints go to JSON as strings (exact in any JSON reader)

# pas dtype name -> torch dtype attribute name.
_TORCH_NAME = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8",
    "BOOL": "bool",
}
_FROM_TORCH = {v: k for k, v in _TORCH_NAME.items()}
# Same-width integer dtypes numpy and torch both have: the bridge for raw bits.
_BITS_NP = {1: np.uint8, 2: np.int16, 4: np.int32, 8: np.int64}
_BITS_TORCH = {1: "uint8", 2: "int16", 4: "int32", 8: "int64"}


def _torch():
    import torch  # noqa: PLC0415 - deliberately lazy
    return torch


def to_torch_dtype(name: str):
    torch = _torch()
    dtypes.get(name)
    return getattr(torch, _TORCH_NAME[name])


def from_torch_dtype(torch_dtype) -> dtypes.DType:
    name = str(torch_dtype).removeprefix("torch.")
    if name not in _FROM_TORCH:
        raise UnsupportedDType(f"unsupported torch dtype {name} (pas stores {', '.join(_FROM_TORCH)})")
    return dtypes.DTYPES[_FROM_TORCH[name]]


def tensor_to_array(t, name: str) -> np.ndarray:
    """The tensor's values as a C-contiguous numpy array of the pas dtype."""
    torch = _torch()
    if t.layout != torch.strided:
        raise UnsupportedDType(f"tensor {name!r}: layout {t.layout} is not supported (dense tensors only)")
    if t.is_quantized:
        raise UnsupportedDType(f"tensor {name!r}: quantized dtype {t.dtype} is not supported")
    try:
        dt = from_torch_dtype(t.dtype)
    except UnsupportedDType as e:
        raise UnsupportedDType(f"tensor {name!r}: {e}") from None
    if t.device.type != "cpu":
        raise BadInput(f"tensor {name!r} is on device {t.device}, which holds no data")
    t = t.detach().resolve_conj().resolve_neg().contiguous()
    bits = getattr(torch, _BITS_TORCH[dt.itemsize])
    return t.view(bits).numpy().view(dt.np_dtype)


def array_to_tensor(array: np.ndarray, dtype_name: str):
    """A torch tensor with the array's bits (sharing memory when possible)."""
    torch = _torch()
    tdtype = to_torch_dtype(dtype_name)
    if array.size == 0:
        # Empty arrays may share an address with a neighbour of another dtype,
        # which torch.save refuses; they hold no bytes, so make fresh ones.
        return torch.empty(array.shape, dtype=tdtype)
    bits = le_contiguous(array).view(_BITS_NP[array.dtype.itemsize])
    with warnings.catch_warnings():
        # Read-only memory maps: torch warns, but torch.save only reads them.
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(bits)
    return t.view(tdtype)


# ---------------------------------------------------------------- reading

def load(path: str | os.PathLike) -> Any:
    """torch.load with weights_only=True; every failure is BadInput."""
    p = existing(path)
    if not p.is_file():
        raise BadInput(f"{p}: not a regular file")
    torch = _torch()
    try:
        if zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as zf:
                # torch inflates deflated members in memory: refuse bombs first.
                check_zip_directory(zf, str(p), max_total=None, max_inflated=MAX_INFLATED)
            # Zip checkpoints can be memory-mapped (tensors stay views of the
            # file); archives from old writers may not allow it.
            try:
                return torch.load(p, map_location="cpu", weights_only=True, mmap=True)
            except Exception:  # noqa: BLE001 - retried without mmap, still weights_only
                pass
        return torch.load(p, map_location="cpu", weights_only=True)
    except PasError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of the loader means "refused"
        msg = str(e)
        if "WeightsUnpickler error:" in msg:
            msg = msg.split("WeightsUnpickler error:", 1)[1]
        msg = " ".join(msg.split())[:300]
        raise BadInput(f"{p}: refused to load with torch.load(weights_only=True): "
                       f"{type(e).__name__}: {msg}") from None


def _float_node(x: float) -> dict[str, Any]:
    return {"type": "float", "bits": struct.pack(">d", x).hex(), "repr": repr(x)}


def _int_node(x: int) -> dict[str, Any]:
    return {"type": "int", "value": x if -_SAFE_INT <= x <= _SAFE_INT else str(x)}


class _Flattener:
    def __init__(self) -> None:
        self.tensors: dict[str, Tensor] = {}
        self._by_id: dict[int, str] = {}          # id(tensor object) -> first name
        self._by_view: dict[tuple, str] = {}      # (storage ptr, offset, shape, strides, dtype) -> root name
        self._active: set[int] = set()            # containers on the current path (cycle check)
        self._tied: dict[str, str] = {}           # alias name -> root name

    def node(self, obj: Any, path: list[str], depth: int, tensors_ok: bool = True) -> dict[str, Any]:
        torch = _torch()
        where = ".".join(path) or "<root>"
        if depth > MAX_DEPTH:
            raise BadInput(f"checkpoint nested deeper than {MAX_DEPTH} at {where!r}")
        if isinstance(obj, torch.Tensor):
            if not tensors_ok:
                raise BadInput(f"tensor at {where!r} where pas only stores plain values")
            return self.tensor(obj, ".".join(path) or ROOT_TENSOR_NAME)
        # Scalars. bool before int: bool is an int subclass.
        if obj is None:
            return {"type": "none"}
        if type(obj) is bool:
            return {"type": "bool", "value": obj}
        if type(obj) is int:
            return _int_node(obj)
        if type(obj) is float:
            return _float_node(obj)
        if type(obj) is complex:
            return {"type": "complex", "real": _float_node(obj.real), "imag": _float_node(obj.imag)}
        if type(obj) is str:
            return {"type": "str", "value": obj}
        if type(obj) is bytes:
            return {"type": "bytes", "base64": base64.b64encode(obj).decode("ascii")}
        if isinstance(obj, torch.dtype):
            return {"type": "dtype", "value": str(obj).removeprefix("torch.")}
        if isinstance(obj, torch.device):
            return {"type": "device", "value": str(obj)}
        if type(obj) is torch.Size:
            return {"type": "size", "items": [int(s) for s in obj]}
        # Containers.
        if id(obj) in self._active:
            raise BadInput(f"checkpoint contains a reference cycle at {where!r}")
        self._active.add(id(obj))
        try:
            return self.container(obj, path, depth, tensors_ok, where)
        finally:
            self._active.discard(id(obj))

    def container(self, obj: Any, path: list[str], depth: int, tensors_ok: bool, where: str) -> dict[str, Any]:
        if type(obj) in (dict, collections.OrderedDict):
            items = []
            for k, v in obj.items():
                key = self.node(k, path, depth + 1, tensors_ok=False)
                items.append([key, self.node(v, path + [k if isinstance(k, str) else str(k)], depth + 1, tensors_ok)])
            if type(obj) is dict:
                return {"type": "dict", "items": items}
            node: dict[str, Any] = {"type": "odict", "items": items}
            attrs = vars(obj)     # state_dict()s carry `_metadata` (module versions)
            if attrs:
                node["attrs"] = {str(k): self.node(v, path, depth + 1, tensors_ok=False) for k, v in attrs.items()}
            return node
        if type(obj) in (list, tuple):
            kind = "list" if type(obj) is list else "tuple"
            return {"type": kind, "items": [self.node(v, path + [str(i)], depth + 1, tensors_ok)
                                            for i, v in enumerate(obj)]}
        if type(obj) is set:
            # Sorted: set order of strings changes from run to run (hash seed),
            # and a content-addressed layout must not.
            items = [self.node(v, path, depth + 1, tensors_ok=False) for v in obj]
            return {"type": "set", "items": sorted(items, key=lambda n: json.dumps(n, sort_keys=True))}
        raise BadInput(f"unsupported object of type {type(obj).__qualname__} at {where!r}")

    def tensor(self, t, name: str) -> dict[str, Any]:
        torch = _torch()
        check_tensor_name(name)
        if name in self.tensors:
            raise BadInput(f"two tensors flatten to the same name {name!r}")
        if type(t) not in (torch.Tensor, torch.nn.Parameter):
            raise BadInput(f"tensor {name!r} is a {type(t).__qualname__}, not a plain tensor")
        node: dict[str, Any] = {"type": "tensor", "name": name}
        if type(t) is torch.nn.Parameter:
            node["parameter"] = True
            node["requires_grad"] = bool(t.requires_grad)
        elif t.requires_grad:
            node["requires_grad"] = True
        if id(t) in self._by_id:
            first = self._by_id[id(t)]
            root = self.tied_root(first)
            node["tied_to"], node["same_object"] = root, first
            self.tensors[name] = Tensor(name, self.tensors[root].dtype, self.tensors[root].shape,
                                        self.tensors[root].data)
            self._tied[name] = root
            return node
        self._by_id[id(t)] = name
        key = None
        if t.layout == torch.strided and t.device.type == "cpu" and t.numel() > 0:
            # Zero-size tensors all share address 0: never treat those as tied.
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape),
                   tuple(t.stride()), t.dtype)
        if key is not None and key in self._by_view:
            root = self._by_view[key]
            node["tied_to"] = root
            src = self.tensors[root]
            self.tensors[name] = Tensor(name, src.dtype, src.shape, src.data)
            self._tied[name] = root
            return node
        if key is not None:
            self._by_view[key] = name
        array = tensor_to_array(t, name)
        dt = from_torch_dtype(t.dtype)
        self.tensors[name] = Tensor(name, dt.name, tuple(array.shape), array)
        return node

    def tied_root(self, name: str) -> str:
        return self._tied.get(name, name)


def flatten(obj: Any) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors by dotted name, layout) of a loaded checkpoint."""
    fl = _Flattener()
    root = fl.node(obj, [], 0)
    return fl.tensors, {"version": LAYOUT_VERSION, "root": root}


def read(path: str | os.PathLike) -> Snapshot:
    tensors, layout = flatten(load(path))
    return Snapshot(tensors=tensors, format="pt", layout=layout)


# ---------------------------------------------------------------- writing

class _Builder:
    """Rebuilds the checkpoint object from a layout; the layout may be hostile."""

    def __init__(self, tensors: dict[str, Tensor]):
        self.tensors = tensors
        self.bases: dict[str, Any] = {}     # root name -> torch tensor owning the storage
        self.placed: dict[str, Any] = {}    # name -> the object put at that place
        self.used: set[str] = set()

    def build(self, node: Any, depth: int) -> Any:
        torch = _torch()
        if depth > MAX_DEPTH:
            raise BadInput(f"layout nested deeper than {MAX_DEPTH}")
        if not isinstance(node, dict) or not isinstance(node.get("type"), str):
            raise BadInput("layout node is not an object with a 'type'")
        kind = node["type"]
        if kind == "tensor":
            return self.tensor(node)
        if kind == "none":
            return None
        if kind == "bool":
            return _typed(node["value"], bool)
        if kind == "int":
            v = node["value"]
            return int(v) if type(v) is str else _typed(v, int)
        if kind == "float":
            return _float(node)
        if kind == "complex":
            return complex(_float(node["real"]), _float(node["imag"]))
        if kind == "str":
            return _typed(node["value"], str)
        if kind == "bytes":
            return base64.b64decode(_typed(node["base64"], str), validate=True)
        if kind == "dtype":
            dt = getattr(torch, _typed(node["value"], str), None)
            if not isinstance(dt, torch.dtype):
                raise BadInput(f"layout names unknown torch dtype {node['value']!r}")
            return dt
        if kind == "device":
            return torch.device(_typed(node["value"], str))
        if kind == "size":
            return torch.Size([_typed(v, int) for v in _typed(node["items"], list)])
        items = _typed(node.get("items"), list)
        if kind in ("list", "tuple", "set"):
            values = [self.build(v, depth + 1) for v in items]
            return {"list": list, "tuple": tuple, "set": set}[kind](values)
        if kind in ("dict", "odict"):
            out = {} if kind == "dict" else collections.OrderedDict()
            for pair in items:
                k, v = _typed(pair, list)
                out[self.build(k, depth + 1)] = self.build(v, depth + 1)
            for attr, v in _typed(node.get("attrs", {}), dict).items():
                if kind != "odict" or not attr.isidentifier() or attr.startswith("__"):
                    raise BadInput(f"layout sets attribute {attr!r} that pas does not restore")
                setattr(out, attr, self.build(v, depth + 1))
            return out
        raise BadInput(f"unknown layout node type {kind!r}")

    def tensor(self, node: dict[str, Any]) -> Any:
        torch = _torch()
        name = _typed(node.get("name"), str)
        if name in self.used:
            raise BadInput(f"layout places tensor {name!r} twice")
        if name not in self.tensors:
            raise BadInput(f"layout names tensor {name!r}, which the snapshot lacks")
        self.used.add(name)
        same = node.get("same_object")
        if same is not None:
            if same not in self.placed:
                raise BadInput(f"layout: {name!r} is the same object as {same!r}, not placed before it")
            obj = self.placed[same]
        else:
            root = node.get("tied_to", name)
            if root not in self.bases:
                if root != name:
                    raise BadInput(f"layout: {name!r} is tied to {root!r}, not placed before it")
                t = self.tensors[name]
                self.bases[name] = array_to_tensor(t.data, t.dtype)
            base = self.bases[root]
            mine = self.tensors[name]
            if root != name and (mine.dtype != self.tensors[root].dtype
                                 or tuple(mine.shape) != tuple(base.shape)):
                raise BadInput(f"layout ties {name!r} to {root!r}, but dtype or shape differ")
            # A distinct tensor object on the shared storage, like state_dict() gives.
            obj = base.view(base.shape)
            if node.get("parameter"):
                obj = torch.nn.Parameter(obj, requires_grad=bool(node.get("requires_grad", True)))
            elif node.get("requires_grad"):
                obj.requires_grad_(True)
        self.placed[name] = obj
        return obj


def _typed(value: Any, kind: type) -> Any:
    if type(value) is not kind:
        raise BadInput(f"layout value {value!r:.60} is not a {kind.__name__}")
    return value


def _float(node: dict[str, Any]) -> float:
    bits = bytes.fromhex(_typed(node["bits"], str))
    if len(bits) != 8:
        raise BadInput("layout float is not 8 bytes")
    return struct.unpack(">d", bits)[0]


def unflatten(tensors: dict[str, Tensor], layout: dict[str, Any]) -> Any:
    """The checkpoint object described by ``layout`` with ``tensors`` at its leaves."""
    if layout.get("version") != LAYOUT_VERSION:
        raise BadInput(f"unsupported PyTorch layout version {layout.get('version')!r}")
    b = _Builder(tensors)
    try:
        obj = b.build(layout.get("root"), 0)
    except PasError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise BadInput(f"malformed PyTorch layout: {type(e).__name__}: {e}") from None
    missing = [n for n in tensors if n not in b.used]
    if missing:
        raise BadInput(f"layout does not place {len(missing)} tensor(s), e.g. {missing[0]!r}")
    return obj


def checkpoint_object(snapshot: Snapshot) -> Any:
    """What to torch.save: the original tree for pt snapshots, else a flat state dict."""
    tensors = {t.name: t for t in snapshot_tensors(snapshot)}
    for t in tensors.values():
        check_tensor(t)
    layout = snapshot.layout
    if not isinstance(layout, dict):
        raise BadInput(f"PyTorch layout is a {type(layout).__name__}, not an object")
    if snapshot.format == "pt" and layout.get("root") is not None:
        return unflatten(tensors, layout)
    return {name: array_to_tensor(t.data, t.dtype) for name, t in tensors.items()}


def write(snapshot: Snapshot, out_path: str | os.PathLike) -> None:
    save(checkpoint_object(snapshot), out_path)


def save(obj: Any, out_path: str | os.PathLike) -> None:
    torch = _torch()
    with atomic_file(out_path) as f:
        try:
            torch.save(obj, f)
        except RuntimeError as e:    # torch reports write failures (disk full) this way
            raise StoreError(f"{out_path}: torch.save failed: {e}") from None
