"""Tests of pas.formats: round trips (bit-exact), structure, hostile inputs.

Tensors are always compared as bytes + dtype name + shape, never with ``==``
on floats (NaN payloads, -0.0 and signalling NaNs must survive untouched).
"""
from __future__ import annotations

import collections
import io
import json
import math
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch
from conftest import seconds_within
from hypothesis import given, settings
from hypothesis import strategies as st

from pas import formats
from pas.errors import (
    BadInput,
    BadName,
    NotFound,
    PasError,
    StoreError,
    UnsupportedDType,
)
from pas.formats import hf as hf_format
from pas.formats import npz as npz_format
from pas.formats import pytorch as pt_format
from pas.formats import safetensors as st_format
from pas.snapshot import Snapshot, Tensor

REPO = Path(__file__).resolve().parent.parent
FAST = 2.0      # seconds: "fast" for the biggest hostile inputs, with slack for busy machines

# ---------------------------------------------------------------- fixtures

# Raw bit patterns per dtype: NaN payloads, signalling NaN, -0.0, +-inf,
# subnormals, extremes. Held as unsigned ints and viewed as the dtype.
_BITS = {
    "F64": ("<u8", [0x7FF8000000012345, 0x7FF0000000000001, 0x8000000000000000, 0x7FF0000000000000,
                    0xFFF0000000000000, 0x0000000000000001, 0x000FFFFFFFFFFFFF, 0x3FF0000000000000]),
    "F32": ("<u4", [0x7FC12345, 0x7F800001, 0x80000000, 0x7F800000,
                    0xFF800000, 0x00000001, 0x007FFFFF, 0x3F800000]),
    "F16": ("<u2", [0x7E01, 0x7C01, 0x8000, 0x7C00, 0xFC00, 0x0001, 0x03FF, 0x3C00]),
    "BF16": ("<u2", [0x7FC1, 0x7F81, 0x8000, 0x7F80, 0xFF80, 0x0001, 0x007F, 0x3F80]),
    "F8_E4M3": ("u1", [0x7F, 0xFF, 0x80, 0x7E, 0xFE, 0x01, 0x07, 0x38]),
    "F8_E5M2": ("u1", [0x7D, 0x7E, 0x80, 0x7C, 0xFC, 0x01, 0x03, 0x3C]),
}
_INTS = {"I8": "i1", "I16": "<i2", "I32": "<i4", "I64": "<i8", "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8"}
ALL_DTYPES = list(_BITS) + list(_INTS) + ["BOOL"]
NPZ_DTYPES = [d for d in ALL_DTYPES if d not in ("BF16", "F8_E4M3", "F8_E5M2")]


def make(name: str, dtype: str, array: np.ndarray) -> Tensor:
    """A Tensor built directly (keeps 0-d arrays 0-d)."""
    from pas import dtypes
    dt = dtypes.get(dtype)
    array = np.ascontiguousarray(array).view(dt.np_dtype).reshape(array.shape)
    return Tensor(name, dt.name, tuple(array.shape), array)


def values(dtype: str) -> np.ndarray:
    """Eight interesting values of a dtype, as a (2, 4) array."""
    if dtype in _BITS:
        bits_dt, bits = _BITS[dtype]
        from pas import dtypes
        return np.array(bits, dtype=bits_dt).view(dtypes.get(dtype).np_dtype).reshape(2, 4)
    if dtype == "BOOL":
        return np.array([True, False, True, True, False, False, True, False]).reshape(2, 4)
    info = np.iinfo(np.dtype(_INTS[dtype]))
    return np.array([info.min, info.max, 0, 1, info.max - 1, info.min + 1, 7, 42], dtype=_INTS[dtype]).reshape(2, 4)


def dtype_snapshot(dtypes_: list[str], fmt: str = "safetensors") -> Snapshot:
    """For each dtype: special values, a transposed (non-contiguous) view, a 0-d and a zero-size tensor."""
    snap = Snapshot(format=fmt, metadata={"made_by": "test", "unicode": "é✓"})
    for d in dtypes_:
        v = values(d)
        snap.add(make(f"{d}.main", d, v))
        snap.add(make(f"{d}.scalar", d, v.reshape(-1)[0].reshape(())))
        snap.add(make(f"{d}.empty", d, v.reshape(-1)[:0].reshape(0, 3)))
    return snap


def assert_same_tensor(a: Tensor, b: Tensor) -> None:
    assert a.dtype == b.dtype, (a.name, a.dtype, b.dtype)
    assert tuple(a.shape) == tuple(b.shape), (a.name, a.shape, b.shape)
    assert tuple(a.data.shape) == tuple(b.shape)
    assert a.data.tobytes() == b.data.tobytes(), a.name


def assert_same_tensors(a: Snapshot, b: Snapshot, ordered: bool = True) -> None:
    if ordered:
        assert list(a.tensors) == list(b.tensors)
    else:
        assert set(a.tensors) == set(b.tensors)
    for name in a.tensors:
        assert_same_tensor(a.tensors[name], b.tensors[name])


def torch_bytes(t: torch.Tensor) -> bytes:
    t = t.contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def listing(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- import hygiene

def test_import_does_not_load_torch():
    code = "import sys, pas.formats, pas.names; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ---------------------------------------------------------------- safetensors

def test_safetensors_roundtrip_every_dtype(tmp_path):
    snap = dtype_snapshot(ALL_DTYPES)
    out = formats.write(snap, tmp_path / "m.safetensors")
    back = formats.read(out)
    assert back.format == "safetensors"
    assert back.metadata == snap.metadata
    assert_same_tensors(snap, back)
    # Written again, the file is byte-identical.
    formats.write(back, tmp_path / "again.safetensors")
    assert (tmp_path / "again.safetensors").read_bytes() == out.read_bytes()


def test_safetensors_header_is_padded_and_contiguous(tmp_path):
    out = formats.write(dtype_snapshot(["F32", "I8"]), tmp_path / "m.safetensors")
    raw = out.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0
    header = json.loads(raw[8:8 + n])
    assert next(iter(header)) == "__metadata__"
    end = 0
    for name, info in header.items():
        if name != "__metadata__":
            assert info["data_offsets"][0] == end
            end = info["data_offsets"][1]
    assert end == len(raw) - 8 - n


def test_safetensors_loads_with_official_package(tmp_path):
    snap = dtype_snapshot(ALL_DTYPES)
    out = formats.write(snap, tmp_path / "m.safetensors")
    loaded = safetensors.torch.load_file(str(out))
    assert list(loaded) == list(snap.tensors)
    for name, t in snap.tensors.items():
        assert tuple(loaded[name].shape) == t.shape
        assert torch_bytes(loaded[name]) == t.data.tobytes(), name
    assert loaded["BF16.main"].dtype == torch.bfloat16
    assert loaded["F8_E4M3.main"].dtype == torch.float8_e4m3fn
    assert loaded["F8_E5M2.main"].dtype == torch.float8_e5m2
    with safetensors.safe_open(str(out), "np") as f:
        assert f.metadata() == snap.metadata
    # numpy has no bfloat16/float8: check the rest with the official numpy loader too.
    native = dtype_snapshot(NPZ_DTYPES)
    plain = safetensors.numpy.load_file(str(formats.write(native, tmp_path / "n.safetensors")))
    for name, t in native.tensors.items():
        assert plain[name].dtype == t.data.dtype and plain[name].shape == t.shape
        assert plain[name].tobytes() == t.data.tobytes(), name


def test_safetensors_official_file_reproduced_byte_for_byte(tmp_path):
    tensors = {"b": values("F32"), "a": values("I16"), "s": np.array(3.0), "e": np.zeros((0, 2), np.uint8),
               "bf": torch.tensor([1.5, -0.0], dtype=torch.bfloat16)}
    path = tmp_path / "official.safetensors"
    as_torch = {k: (v if isinstance(v, torch.Tensor) else torch.from_numpy(v.copy())) for k, v in tensors.items()}
    safetensors.torch.save_file(as_torch, str(path), metadata={"format": "pt"})
    snap = formats.read(path)
    assert snap.tensors["s"].shape == () and snap.tensors["bf"].dtype == "BF16"
    assert snap.tensors["bf"].data.dtype == np.dtype("<u2")
    formats.write(snap, tmp_path / "ours.safetensors")
    assert (tmp_path / "ours.safetensors").read_bytes() == path.read_bytes()


def test_safetensors_reads_views_of_one_map(tmp_path):
    out = formats.write(dtype_snapshot(["F32", "U16"]), tmp_path / "m.safetensors")
    back = formats.read(out)
    t = back.tensors["F32.main"].data
    assert not t.flags.writeable and not t.flags.owndata     # a view of the memory map, no copy


def test_safetensors_empty_and_all_zero_size(tmp_path):
    for snap in (Snapshot(), Snapshot(tensors={"e": make("e", "F32", np.zeros((0,), np.float32))})):
        out = formats.write(snap, tmp_path / "e.safetensors")
        back = formats.read(out)
        assert_same_tensors(snap, back)


def test_safetensors_zero_size_tensors_may_share_offsets(tmp_path):
    path = _st_file(tmp_path, {"a": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]},
                               "b": {"dtype": "I8", "shape": [0, 5], "data_offsets": [4, 4]},
                               "c": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8)
    snap = formats.read(path)
    assert [snap.tensors[n].shape for n in "cab"] == [(2,), (0,), (0, 5)]
    # Converting to pt must not trip over empty tensors sharing an address.
    formats.write(snap, tmp_path / "x.pt", "pt")
    assert torch.load(tmp_path / "x.pt", weights_only=True)["b"].shape == (0, 5)


# hostile safetensors -----------------------------------------------------------

def _st_file(tmp_path: Path, header: object, data: bytes = b"", name: str = "bad.safetensors",
             raw_header: bytes | None = None, claimed: int | None = None) -> Path:
    hdr = raw_header if raw_header is not None else json.dumps(header).encode()
    path = tmp_path / name
    path.write_bytes(struct.pack("<Q", len(hdr) if claimed is None else claimed) + hdr + data)
    return path


def _f32(shape, offsets):
    return {"dtype": "F32", "shape": shape, "data_offsets": offsets}


HOSTILE_SAFETENSORS = {
    "header longer than file": dict(header={}, claimed=10_000),
    "giant claimed header": dict(header={}, claimed=2**63 + 5),
    "header just over 100 MB": dict(header={}, claimed=100_000_001),
    "not json": dict(header=None, raw_header=b"{not json at all"),
    "not utf-8": dict(header=None, raw_header=b'{"\xff\xfe": 1}'),
    "json list": dict(header=[1, 2, 3]),
    "deep json": dict(header=None, raw_header=b"[" * 100_000 + b"]" * 100_000),
    "overlapping offsets": dict(header={"a": _f32([2], [0, 8]), "b": _f32([2], [4, 12])}, data=b"\0" * 12),
    "shape product overflows int64": dict(header={"a": _f32([4194305, 4194305, 211106198978564], [0, 4])},
                                          data=b"\0" * 4),
    "offsets past data": dict(header={"a": _f32([4], [0, 16])}, data=b"\0" * 8),
    "size mismatch": dict(header={"a": _f32([3], [0, 8])}, data=b"\0" * 8),
    "negative dim": dict(header={"a": _f32([-1], [0, 0])}),
    "float dim": dict(header={"a": _f32([2.0], [0, 8])}, data=b"\0" * 8),
    "bool dim": dict(header={"a": _f32([True], [0, 4])}, data=b"\0" * 4),
    "reversed offsets": dict(header={"a": _f32([0], [8, 0])}, data=b"\0" * 8),
    "three offsets": dict(header={"a": _f32([2], [0, 4, 8])}, data=b"\0" * 8),
    "missing dtype": dict(header={"a": {"shape": [1], "data_offsets": [0, 4]}}, data=b"\0" * 4),
    "entry not an object": dict(header={"a": [1, 2]}),
    "metadata not str->str": dict(header={"__metadata__": {"a": 1}}),
    "metadata not an object": dict(header={"__metadata__": "x"}),
    "duplicate key": dict(header=None, raw_header=b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                                                  b'"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}',
                          data=b"\0"),
    "NUL in name": dict(header={"a\0b": _f32([0], [0, 0])}),
    "empty name": dict(header={"": _f32([0], [0, 0])}),
    "huge int": dict(header=None, raw_header=b'{"a":{"dtype":"F32","shape":[' + b"9" * 5000 + b'],"data_offsets":[0,0]}}'),
    "too many dims": dict(header={"a": _f32([1] * 1000, [0, 4])}, data=b"\0" * 4),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_SAFETENSORS))
def test_safetensors_hostile_headers(tmp_path, case):
    path = _st_file(tmp_path, **HOSTILE_SAFETENSORS[case])
    out = tmp_path / "out.safetensors"
    with pytest.raises(BadInput) as err:
        formats.write(formats.read(path), out)
    assert "bad.safetensors" in str(err.value)
    refused = lambda: pytest.raises(BadInput, lambda: formats.write(formats.read(path), out))
    assert seconds_within(refused, 1.0) < 1.0
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors"]


def test_safetensors_unknown_dtype(tmp_path):
    path = _st_file(tmp_path, {"a": {"dtype": "F4_MAGIC", "shape": [1], "data_offsets": [0, 1]}}, b"\0")
    with pytest.raises(UnsupportedDType, match="F4_MAGIC"):
        formats.read(path)


def test_safetensors_too_short_file(tmp_path):
    path = tmp_path / "short.safetensors"
    path.write_bytes(b"\x01\x00")
    with pytest.raises(BadInput, match="too short"):
        formats.read(path)


def test_safetensors_hundred_thousand_tensors_fast(tmp_path):
    n = 100_000
    header = {f"t{i}": {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]} for i in range(n)}
    path = _st_file(tmp_path, header, b"\0" * n, name="many.safetensors")
    assert len(formats.read(path).tensors) == n
    # ~0.35 s on an idle laptop; the bound leaves room for loaded CI machines.
    assert seconds_within(lambda: formats.read(path), FAST) < FAST
    # The same header with one overlap at the very end is rejected, just as fast.
    header[f"t{n - 1}"]["data_offsets"] = [n - 2, n - 1]
    bad = _st_file(tmp_path, header, b"\0" * n, name="many_bad.safetensors")
    with pytest.raises(BadInput, match="overlap"):
        formats.read(bad)
    assert seconds_within(lambda: pytest.raises(BadInput, formats.read, bad), FAST) < FAST


def test_safetensors_tensor_count_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(st_format, "MAX_TENSORS", 10)
    header = {f"t{i}": _f32([0], [0, 0]) for i in range(11)}
    with pytest.raises(BadInput, match="max 10"):
        formats.read(_st_file(tmp_path, header))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_safetensors_fuzzed_headers_only_typed_errors(raw):
    data = b"\0" * 64
    try:
        st_format.parse_header("fuzz", raw, len(data))
    except PasError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
                    max_leaves=20))
def test_safetensors_fuzzed_json_only_typed_errors(obj):
    try:
        st_format.parse_header("fuzz", json.dumps(obj).encode(), 64)
    except PasError:
        pass


def test_writer_validates_before_writing(tmp_path):
    bad = Snapshot(tensors={"a": make("a", "F32", np.zeros(2, np.float32)),
                            "b": Tensor("b", "F32", (3,), np.zeros(2, np.float32))})   # shape lies
    for fmt, name in (("safetensors", "x.safetensors"), ("pt", "x.pt"), ("npz", "x.npz"), ("hf", "dir")):
        with pytest.raises(BadInput):
            formats.write(bad, tmp_path / name, fmt)
    assert list(tmp_path.iterdir()) == []


def test_write_replaces_atomically_and_keeps_old_on_failure(tmp_path):
    out = tmp_path / "m.safetensors"
    formats.write(dtype_snapshot(["F32"]), out)
    before = out.read_bytes()
    bad = Snapshot(tensors={"__metadata__": make("__metadata__", "F32", np.zeros(1, np.float32))})
    with pytest.raises(BadName):
        formats.write(bad, out)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_written_files_get_normal_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        f = formats.write(dtype_snapshot(["F32"]), tmp_path / "m.safetensors")
        d = formats.write(dtype_snapshot(["F32"]), tmp_path / "dir", "hf")
    finally:
        os.umask(umask)
    assert f.stat().st_mode & 0o777 == 0o644
    assert d.stat().st_mode & 0o777 == 0o755
    assert (d / "model.safetensors").stat().st_mode & 0o777 == 0o644


def test_unwritable_output_is_store_error(tmp_path):
    (tmp_path / "afile").write_bytes(b"")
    with pytest.raises(StoreError):
        formats.write(dtype_snapshot(["F32"]), tmp_path / "afile" / "m.safetensors")
    with pytest.raises(StoreError):
        formats.write(dtype_snapshot(["F32"]), tmp_path / "afile" / "m.pt", "pt")


def test_write_bad_metadata_and_unknown_format(tmp_path):
    with pytest.raises(BadInput):
        formats.write(Snapshot(metadata={"a": 1}), tmp_path / "m.safetensors")     # type: ignore[dict-item]
    with pytest.raises(BadInput, match="unknown format"):
        formats.write(Snapshot(), tmp_path / "m.gguf", "gguf")
    with pytest.raises(BadInput, match="is a directory"):
        formats.write(Snapshot(), tmp_path, "safetensors")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- PyTorch

def test_pt_roundtrip_every_dtype_flat(tmp_path):
    snap = dtype_snapshot(ALL_DTYPES)
    out = formats.write(snap, tmp_path / "m.pt", "pt")
    loaded = torch.load(out, weights_only=True)
    assert type(loaded) is dict and list(loaded) == list(snap.tensors)
    assert loaded["BF16.main"].dtype == torch.bfloat16
    assert loaded["F8_E4M3.main"].dtype == torch.float8_e4m3fn
    assert loaded["U64.main"].dtype == torch.uint64
    assert loaded["F32.scalar"].shape == ()
    for name, t in snap.tensors.items():
        assert torch_bytes(loaded[name]) == t.data.tobytes(), name
    back = formats.read(out)
    assert back.format == "pt"
    assert_same_tensors(snap, back)


def _nested_checkpoint():
    model = collections.OrderedDict([("fc.weight", torch.arange(6, dtype=torch.float32).reshape(2, 3)),
                                     ("fc.bias", torch.tensor([0.5, -0.0])),
                                     ("emb.weight", torch.ones(4, 3, dtype=torch.bfloat16))])
    model._metadata = collections.OrderedDict([("", {"version": 1}), ("fc", {"version": 2})])
    model["head.weight"] = model["emb.weight"]                       # tied: the same object
    base = torch.arange(12, dtype=torch.float64)
    return {
        "model_state": model,
        "optimizer_state": {
            "state": {0: {"exp_avg": torch.zeros(2, 3), "step": torch.tensor(5.0)},
                      1: {"exp_avg": torch.full((2,), float("nan"))}},
            "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "params": [0, 1],
                              "amsgrad": False, "foreach": None, "name": "default"}],
        },
        "step": 5,
        "big": 2**80,
        "neg": -(2**70),
        "floats": [float("nan"), float("inf"), float("-inf"), -0.0, 5e-324, struct.unpack("<d", struct.pack("<Q", 0x7FF8000000012345))[0]],
        "keys": {1: "int key", "1": "str key", None: "none key", 2.5: "float key", (1, "a"): "tuple key"},
        "bool_keys": {True: "bool key", False: "false key"},   # True == 1: needs a dict of its own
        "nested_tuple": (1, (2, [3, ()])),
        "bytes": b"\x00\xffabc",
        "complex": 1 - 2j,
        "size": torch.Size([2, 3]),
        "dtype": torch.bfloat16,
        "device": torch.device("cpu"),
        "set": {1, 2, 3},
        "views": {"whole": base, "alias": base.view(12), "t": base.view(3, 4).t(), "tail": base[6:]},
        "param": torch.nn.Parameter(torch.ones(2)),
        "frozen": torch.nn.Parameter(torch.ones(2), requires_grad=False),
        "grad": torch.ones(3, requires_grad=True),
        "bare": torch.tensor(7, dtype=torch.int8),
        "empty": torch.zeros(0, 4, dtype=torch.uint32),
        "empty2": torch.zeros(0, dtype=torch.float16),
    }


def _same_object_tree(a, b, path="root"):
    """Same structure, same leaf types, same values (floats and tensors by bits)."""
    assert type(a) is type(b), (path, type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch_bytes(a) == torch_bytes(b), path
        assert a.requires_grad == b.requires_grad, path
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b), path
    elif isinstance(a, complex):
        assert struct.pack("<dd", a.real, a.imag) == struct.pack("<dd", b.real, b.imag), path
    elif isinstance(a, dict):
        assert [(type(k), k) for k in a] == [(type(k), k) for k in b], path
        for k in a:
            _same_object_tree(a[k], b[k], f"{path}.{k}")
        if isinstance(a, collections.OrderedDict):               # state_dict()'s _metadata
            assert vars(a).keys() == vars(b).keys(), path
            for k in vars(a):
                _same_object_tree(getattr(a, k), getattr(b, k), f"{path}@{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same_object_tree(x, y, f"{path}.{i}")
    else:
        assert a == b, path


def test_pt_nested_checkpoint_restored_in_shape(tmp_path):
    ckpt = _nested_checkpoint()
    src = tmp_path / "ckpt.pt"
    torch.save(ckpt, src)
    snap = formats.read(src)
    names = list(snap.tensors)
    assert "model_state.fc.weight" in names
    assert "optimizer_state.state.0.exp_avg" in names
    assert "optimizer_state.state.1.exp_avg" in names
    assert names.count("model_state.fc.weight") == 1
    json.dumps(snap.layout, allow_nan=False)                 # plain JSON, no NaN literals
    out = formats.write(snap, tmp_path / "again.pt")
    back = torch.load(out, weights_only=True)
    original = torch.load(src, weights_only=True)
    _same_object_tree(original, back)
    # Reading the rewritten file gives the same snapshot and layout.
    snap2 = formats.read(out)
    assert snap2.layout == snap.layout
    assert_same_tensors(snap, snap2)


def test_pt_tied_tensors_restored_tied(tmp_path):
    ckpt = _nested_checkpoint()
    src = tmp_path / "ckpt.pt"
    torch.save(ckpt, src)
    snap = formats.read(src)
    back = torch.load(formats.write(snap, tmp_path / "again.pt"), weights_only=True)
    m = back["model_state"]
    assert m["head.weight"] is m["emb.weight"]                             # one object, as saved
    v = back["views"]
    assert v["alias"] is not v["whole"]
    assert v["alias"].untyped_storage().data_ptr() == v["whole"].untyped_storage().data_ptr()
    # Other views come back with their values, as independent contiguous tensors.
    assert torch_bytes(v["t"]) == torch_bytes(ckpt["views"]["t"])
    assert torch_bytes(v["tail"]) == torch_bytes(ckpt["views"]["tail"])
    assert back["empty"].untyped_storage().data_ptr() != back["views"]["whole"].untyped_storage().data_ptr()


def test_pt_state_dict_ties_are_distinct_objects_on_one_storage(tmp_path):
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(5, 3)
            self.head = torch.nn.Linear(3, 5, bias=False)
            self.head.weight = self.emb.weight
    sd = Tied().state_dict()
    torch.save(sd, tmp_path / "tied.pt")
    snap = formats.read(tmp_path / "tied.pt")
    node = snap.layout["root"]["items"][1][1]
    assert node == {"type": "tensor", "name": "head.weight", "tied_to": "emb.weight"}
    back = torch.load(formats.write(snap, tmp_path / "out.pt"), weights_only=True)
    assert back["emb.weight"] is not back["head.weight"]
    assert back["emb.weight"].untyped_storage().data_ptr() == back["head.weight"].untyped_storage().data_ptr()
    assert back._metadata == sd._metadata


def test_pt_bare_tensor_and_list_roots(tmp_path):
    torch.save(torch.arange(3), tmp_path / "bare.pt")
    snap = formats.read(tmp_path / "bare.pt")
    assert list(snap.tensors) == ["tensor"]
    assert torch.equal(torch.load(formats.write(snap, tmp_path / "b2.pt"), weights_only=True), torch.arange(3))
    torch.save([torch.ones(1), (torch.zeros(1),)], tmp_path / "list.pt")
    snap = formats.read(tmp_path / "list.pt")
    assert list(snap.tensors) == ["0", "1.0"]


def test_pt_to_safetensors_flattens_and_back_is_flat(tmp_path):
    torch.save(_nested_checkpoint(), tmp_path / "ckpt.pt")
    snap = formats.read(tmp_path / "ckpt.pt")
    out = formats.write(snap, tmp_path / "flat.safetensors", "safetensors")
    loaded = safetensors.torch.load_file(str(out))
    assert set(loaded) == set(snap.tensors)
    assert torch_bytes(loaded["model_state.emb.weight"]) == torch_bytes(torch.ones(4, 3, dtype=torch.bfloat16))
    flat = formats.read(out)
    pt_out = formats.write(flat, tmp_path / "flat.pt", "pt")
    back = torch.load(pt_out, weights_only=True)
    assert type(back) is dict and list(back) == list(flat.tensors)


def test_pt_name_clash_is_refused(tmp_path):
    torch.save({"a.b": torch.ones(1), "a": {"b": torch.zeros(1)}}, tmp_path / "clash.pt")
    with pytest.raises(BadInput, match="same name"):
        formats.read(tmp_path / "clash.pt")
    torch.save({0: torch.ones(1), "0": torch.zeros(1)}, tmp_path / "clash2.pt")
    with pytest.raises(BadInput, match="same name"):
        formats.read(tmp_path / "clash2.pt")


_ODD_TENSORS = {
    "complex": lambda: torch.ones(2, dtype=torch.complex64),
    "sparse": lambda: torch.ones(2).to_sparse(),
    "quantized": lambda: torch.quantize_per_tensor(torch.ones(2), 0.1, 0, torch.qint8),
    "fnuz": lambda: torch.ones(2, dtype=torch.float8_e4m3fnuz),
}


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("kind", sorted(_ODD_TENSORS))
def test_pt_unsupported_dtypes(tmp_path, kind):
    tensor = _ODD_TENSORS[kind]()
    path = tmp_path / "x.pt"
    torch.save({"x": tensor}, path)
    with pytest.raises(UnsupportedDType, match="tensor 'x'"):
        formats.read(path)


class _Evil:
    canary = ""

    def __reduce__(self):
        return (open, (self.canary, "w"))


@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_pt_malicious_pickle_refused(tmp_path, container):
    canary = tmp_path / "canary"
    evil = _Evil()
    evil.canary = str(canary)
    path = tmp_path / "evil.pt"
    if container == "zip":
        torch.save({"w": torch.ones(1), "x": evil}, path)
    else:
        path.write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(BadInput, match="refused") as err:
        formats.write(formats.read(path), tmp_path / "out.safetensors", "safetensors")
    assert type(err.value) is BadInput
    assert not canary.exists()
    assert not (tmp_path / "out.safetensors").exists()


def test_pt_compressed_zip_ok_but_bomb_refused(tmp_path):
    torch.save({"w": torch.zeros(1000)}, tmp_path / "plain.pt")
    with zipfile.ZipFile(tmp_path / "plain.pt") as zi, \
            zipfile.ZipFile(tmp_path / "deflated.pt", "w", zipfile.ZIP_DEFLATED) as zo:
        for info in zi.infolist():
            zo.writestr(info.filename, zi.read(info))
    assert formats.read(tmp_path / "deflated.pt").tensors["w"].data.tobytes() == bytes(4000)
    raw = bytearray((tmp_path / "deflated.pt").read_bytes())
    cd = raw.index(b"PK\x01\x02")
    raw[cd + 24:cd + 28] = struct.pack("<I", 0xFFFFFFF0)
    (tmp_path / "bomb.pt").write_bytes(bytes(raw))
    with pytest.raises(BadInput, match="zip bomb"):
        formats.read(tmp_path / "bomb.pt")
    assert seconds_within(lambda: pytest.raises(BadInput, formats.read, tmp_path / "bomb.pt"), FAST) < FAST


def test_pt_corrupt_file_refused(tmp_path):
    torch.save({"w": torch.ones(100)}, tmp_path / "ok.pt")
    raw = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "junk.bin").write_bytes(b"\x00" * 100)
    for name in ("trunc.pt", "junk.bin"):
        with pytest.raises(BadInput, match="refused"):
            formats.read(tmp_path / name)


def test_pt_hostile_layout_refused(tmp_path):
    snap = Snapshot(tensors={"a": make("a", "F32", np.ones(2, np.float32))}, format="pt")
    bad_layouts = [
        {"version": 99, "root": {"type": "tensor", "name": "a"}},
        {"version": 1, "root": {"type": "tensor", "name": "missing"}},
        {"version": 1, "root": {"type": "list", "items": [{"type": "tensor", "name": "a"}] * 2}},
        {"version": 1, "root": {"type": "dict", "items": []}},                          # "a" not placed
        {"version": 1, "root": {"type": "odict", "items": [], "attrs": {"__class__": {"type": "none"}}}},
        {"version": 1, "root": {"type": "eval", "value": "os.system('x')"}},
        {"version": 1, "root": {"type": "int", "value": "9" * 10_000}},
        {"version": 1, "root": {"type": "float", "bits": "zz"}},
    ]
    for layout in bad_layouts:
        snap.layout = layout
        with pytest.raises(BadInput):
            formats.write(snap, tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- npz

def test_npz_roundtrip_native_dtypes(tmp_path):
    snap = dtype_snapshot(NPZ_DTYPES)
    snap.add(make("file", "F32", values("F32")))          # would collide with np.savez(file=...)
    snap.add(make("nested/name", "I8", values("I8")))
    out = formats.write(snap, tmp_path / "m.npz", "npz")
    with np.load(out, allow_pickle=False) as z:
        assert list(z.keys()) == list(snap.tensors)
    back = formats.read(out)
    assert back.format == "npz"
    assert_same_tensors(snap, back)


@pytest.mark.parametrize("dtype", ["BF16", "F8_E4M3", "F8_E5M2"])
def test_npz_cannot_hold_bf16_or_float8(tmp_path, dtype):
    # numpy has no bfloat16/float8: the bits would come back as U16/U8, so refuse.
    with pytest.raises(UnsupportedDType, match="npz cannot hold"):
        formats.write(dtype_snapshot([dtype]), tmp_path / "m.npz", "npz")
    assert list(tmp_path.iterdir()) == []


def test_npz_big_endian_and_fortran_normalized(tmp_path):
    be = np.array([1.5, float("nan"), -0.0], dtype=">f4")
    fo = np.asfortranarray(np.arange(6, dtype="<i2").reshape(2, 3))
    np.savez(tmp_path / "x.npz", be=be, fo=fo, scalar=np.array(7, dtype=">u8"))
    snap = formats.read(tmp_path / "x.npz")
    assert snap.tensors["be"].data.dtype == np.dtype("<f4")
    assert snap.tensors["be"].data.tobytes() == be.astype("<f4").tobytes()
    assert snap.tensors["fo"].data.flags.c_contiguous
    assert snap.tensors["fo"].data.tobytes() == np.ascontiguousarray(fo).tobytes()
    assert snap.tensors["scalar"].shape == () and snap.tensors["scalar"].dtype == "U64"


def test_npz_object_array_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, ok=np.zeros(2), bad=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(BadInput, match="object array"):
        formats.read(path)


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array)
    return buf.getvalue()


def test_npz_zip_bomb_lying_directory(tmp_path):
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.npy", _npy_bytes(np.zeros(1000)))
    raw = bytearray(path.read_bytes())
    cd = raw.rindex(b"PK\x01\x02")
    raw[cd + 24:cd + 28] = struct.pack("<I", 0xFFFFFFF0)        # claimed uncompressed size
    path.write_bytes(bytes(raw))
    with pytest.raises(BadInput, match="zip bomb"):
        formats.read(path)
    assert seconds_within(lambda: pytest.raises(BadInput, formats.read, path), 1.0) < 1.0


def test_npz_total_size_limit_and_claimed_sizes(tmp_path):
    path = tmp_path / "big.npz"
    np.savez(path, a=np.zeros(1000))
    with pytest.raises(BadInput, match="uncompressed"):
        npz_format.read(path, max_bytes=1000)
    # An .npy header claiming more data than its member holds.
    lie = _npy_bytes(np.zeros(4))
    header_end = lie.index(b"\n") + 1
    fake = np.lib.format.header_data_from_array_1_0(np.zeros(10**9))
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, fake)
    with zipfile.ZipFile(tmp_path / "lie.npz", "w") as zf:
        zf.writestr("a.npy", buf.getvalue() + lie[header_end:])
    with pytest.raises(BadInput, match="claims"):
        formats.read(tmp_path / "lie.npz")


def test_npz_overlapping_members(tmp_path):
    path = tmp_path / "overlap.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.npy", _npy_bytes(np.zeros(100)))
        zf.writestr("b.npy", _npy_bytes(np.zeros(100)))
    raw = bytearray(path.read_bytes())
    second = raw.rindex(b"PK\x01\x02")
    raw[second + 42:second + 46] = struct.pack("<I", 0)       # b.npy's data = a.npy's data
    path.write_bytes(bytes(raw))
    with pytest.raises(BadInput, match="overlap"):
        formats.read(path)


def test_npz_overlapping_members_and_foreign_members(tmp_path):
    with zipfile.ZipFile(tmp_path / "other.npz", "w") as zf:
        zf.writestr("a.npy", _npy_bytes(np.zeros(2)))
        zf.writestr("evil.txt", b"hello")
    with pytest.raises(BadInput, match="not a .npy"):
        formats.read(tmp_path / "other.npz")
    with zipfile.ZipFile(tmp_path / "trav.npz", "w") as zf:
        zf.writestr("../a.npy", _npy_bytes(np.zeros(2)))
    with pytest.raises(BadName):
        formats.read(tmp_path / "trav.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(BadInput):
        formats.read(tmp_path / "junk.npz")


def test_npz_unsupported_numpy_dtype(tmp_path):
    np.savez(tmp_path / "c.npz", c=np.ones(2, dtype=np.complex64))
    with pytest.raises(UnsupportedDType):
        formats.read(tmp_path / "c.npz")


# ---------------------------------------------------------------- Hugging Face folders

def _hf_folder(root: Path) -> Path:
    """A small sharded HF folder with side files, a subfolder and a .git dir."""
    root.mkdir()
    shard1 = {"embed.weight": torch.arange(12, dtype=torch.float32).reshape(4, 3),
              "layers.0.w": torch.ones(3, 3, dtype=torch.bfloat16)}
    shard2 = {"layers.1.w": torch.full((3, 3), -0.0), "lm_head.weight": torch.zeros(4, 3, dtype=torch.float16),
              "scalar": torch.tensor(1, dtype=torch.int64)}
    safetensors.torch.save_file(shard1, str(root / "model-00001-of-00002.safetensors"), metadata={"format": "pt"})
    safetensors.torch.save_file(shard2, str(root / "model-00002-of-00002.safetensors"), metadata={"format": "pt", "x": "2"})
    index = {"metadata": {"total_size": 123},
             "weight_map": {**{k: "model-00001-of-00002.safetensors" for k in shard1},
                            **{k: "model-00002-of-00002.safetensors" for k in shard2}}}
    (root / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    (root / "config.json").write_text('{"model_type": "tiny", "hidden_size": 3}\n')
    (root / "tokenizer.json").write_bytes(b'{"version": "1.0", "added_tokens": []}\r\n\xe2\x9c\x93')
    (root / "vocab.txt").write_bytes(b"[PAD]\n[UNK]\nhello\n")
    (root / "README.md").write_text("# tiny\n")
    (root / "training_args.bin").write_bytes(pickle.dumps({"lr": 1}))   # never unpickled: a side file
    (root / "empty.txt").write_bytes(b"")
    (root / "sub").mkdir()
    (root / "sub" / "notes.txt").write_bytes(b"nested side file")
    safetensors.torch.save_file({"conv.weight": torch.ones(2)}, str(root / "sub" / "model.safetensors"),
                                metadata={"format": "pt"})
    (root / ".git").mkdir()
    (root / ".git" / "config").write_bytes(b"[core]")
    return root


def test_hf_sharded_folder_roundtrip(tmp_path):
    src = _hf_folder(tmp_path / "src")
    assert formats.detect(src) == "hf"
    snap = formats.read(src)
    assert snap.format == "hf"
    assert ".git/config" not in snap.files
    assert set(snap.files) == {"model.safetensors.index.json", "config.json", "tokenizer.json", "vocab.txt",
                               "README.md", "training_args.bin", "empty.txt", "sub/notes.txt"}
    # Shard by shard in path order, each in its data order (the official writer sorts by alignment).
    assert list(snap.tensors) == ["embed.weight", "layers.0.w", "scalar", "layers.1.w", "lm_head.weight",
                                  "sub/conv.weight"]
    assert snap.metadata == {"format": "pt"}                       # what all shards agree on
    shards = snap.layout["shards"]
    assert [s["file"] for s in shards] == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                                           "sub/model.safetensors"]
    assert shards[1]["metadata"] == {"format": "pt", "x": "2"}
    assert shards[2]["tensors"] == ["conv.weight"]
    json.dumps(snap.layout)

    out = formats.write(snap, tmp_path / "out")
    expected = {k: v for k, v in listing(src).items() if not k.startswith(".git/")}
    got = listing(out)
    assert set(got) == set(expected)
    for rel, data in expected.items():
        if rel.endswith(".safetensors"):
            a, b = safetensors.torch.load_file(str(src / rel)), safetensors.torch.load_file(str(out / rel))
            assert list(a) == list(b)
            for k in a:
                assert a[k].dtype == b[k].dtype and torch_bytes(a[k]) == torch_bytes(b[k])
            assert got[rel] == data              # our writer reproduces official shards exactly
        else:
            assert got[rel] == data, rel
    assert not any(p.name.endswith(".pas-tmp") for p in tmp_path.iterdir())


def test_hf_single_file_and_pytorch_bin_folders(tmp_path):
    single = tmp_path / "single"
    single.mkdir()
    safetensors.torch.save_file({"w": torch.ones(2)}, str(single / "model.safetensors"))
    (single / "config.json").write_text("{}")
    snap = formats.read(single)
    assert list(snap.tensors) == ["w"] and list(snap.files) == ["config.json"]

    binf = tmp_path / "bin"
    binf.mkdir()
    torch.save(collections.OrderedDict(a=torch.ones(2), b=torch.zeros(1, dtype=torch.bfloat16)),
               binf / "pytorch_model-00001-of-00002.bin")
    torch.save({"c": torch.arange(3)}, binf / "pytorch_model-00002-of-00002.bin")
    torch.save({"d": torch.arange(2)}, binf / "weights-extra.bin")      # only the index names it
    wm = {"a": "pytorch_model-00001-of-00002.bin", "b": "pytorch_model-00001-of-00002.bin",
          "c": "pytorch_model-00002-of-00002.bin", "d": "weights-extra.bin"}
    (binf / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": wm}))
    snap = formats.read(binf)
    assert list(snap.tensors) == ["a", "b", "c", "d"]
    assert [s["format"] for s in snap.layout["shards"]] == ["pt", "pt", "pt"]
    out = formats.write(snap, tmp_path / "bin_out")
    assert sorted(listing(out)) == sorted(listing(binf))
    first = torch.load(out / "pytorch_model-00001-of-00002.bin", weights_only=True)
    assert type(first) is collections.OrderedDict and list(first) == ["a", "b"]
    assert first["b"].dtype == torch.bfloat16


def test_hf_convert_to_and_from_files(tmp_path):
    snap = formats.read(_hf_folder(tmp_path / "src"))
    out = formats.write(snap, tmp_path / "all.safetensors", "safetensors")
    assert set(safetensors.torch.load_file(str(out))) == set(snap.tensors)
    back = torch.load(formats.write(snap, tmp_path / "all.pt", "pt"), weights_only=True)
    assert type(back) is dict and list(back) == list(snap.tensors)
    # A file snapshot written as a folder: one model.safetensors.
    flat = formats.read(out)
    folder = formats.write(flat, tmp_path / "folder", "hf")
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors"]


def test_hf_writer_refuses_non_empty_output(tmp_path):
    snap = formats.read(_hf_folder(tmp_path / "src"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    with pytest.raises(BadInput, match="not empty"):
        formats.write(snap, out)
    assert listing(out) == {"old.txt": b"keep me"}
    (out / "old.txt").unlink()
    formats.write(snap, out)                     # an empty folder is fine
    assert "config.json" in listing(out)


def test_hf_index_with_traversal_shard(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    safetensors.torch.save_file({"w": torch.ones(1)}, str(src / "model.safetensors"))
    safetensors.torch.save_file({"evil": torch.ones(1)}, str(tmp_path / "evil.safetensors"))
    for shard in ("../evil.safetensors", "/etc/passwd", "sub/../../evil.safetensors", "C:/evil.safetensors",
                  "..\\evil.safetensors"):
        (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"evil": shard}}))
        with pytest.raises(BadName):
            formats.read(src)


def test_hf_index_naming_missing_or_wrong_shard(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    safetensors.torch.save_file({"w": torch.ones(1)}, str(src / "model.safetensors"))
    for wm, match in (({"w": "nope.safetensors"}, "not in the folder"),
                      ({"x": "model.safetensors"}, "but it is not"),
                      ({"w": "config.json"}, "not a weight file")):
        (src / "config.json").write_text("{}")
        (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wm}))
        with pytest.raises(BadInput, match=match):
            formats.read(src)
    (src / "model.safetensors.index.json").write_text("not json")
    with pytest.raises(BadInput, match="not valid JSON"):
        formats.read(src)


@pytest.mark.parametrize("bad", ["../evil.txt", "/tmp/evil.txt", "a/../../evil.txt", "C:evil.txt", "a\\..\\evil.txt",
                                 "a//b", "./x", "", "a\0b", ".git/hooks/post-checkout"])
def test_hf_writer_refuses_side_paths_outside(tmp_path, bad):
    snap = Snapshot(tensors={"w": make("w", "F32", np.ones(1, np.float32))}, files={bad: b"pwned"}, format="hf")
    out = tmp_path / "nested" / "out"
    with pytest.raises(BadName):
        formats.write(snap, out)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "nested" / "evil.txt").exists()
    assert list(tmp_path.iterdir()) == []         # not even the parent folder was created


def test_hf_writer_refuses_hostile_layout(tmp_path):
    t = make("w", "F32", np.ones(1, np.float32))
    cases = [
        ({"version": 1, "shards": [{"file": "../evil.safetensors", "format": "safetensors", "tensors": ["w"]}]}, BadName),
        ({"version": 1, "shards": [{"file": "model.safetensors", "format": "safetensors", "tensors": []}]}, BadInput),
        ({"version": 1, "shards": [{"file": "a.safetensors", "format": "safetensors", "tensors": ["w"]},
                                   {"file": "b.safetensors", "format": "safetensors", "tensors": ["w"]}]}, BadInput),
        ({"version": 1, "shards": [{"file": "a.gguf", "format": "gguf", "tensors": ["w"]}]}, BadInput),
        ({"version": 2, "shards": []}, BadInput),
        ({"version": 1, "shards": [{"file": "x.bin", "format": "pt", "tensors": ["w"], "pt": [1]}]}, BadInput),
        ({"version": 1, "shards": [{"file": "x.bin", "format": "pt", "tensors": ["w"],
                                    "pt": {"version": 1, "root": {"type": "list", "items": []}}}]}, BadInput),
        ({"version": 1, "shards": "model.safetensors"}, BadInput),
        ([1, 2], BadInput),
    ]
    for layout, err in cases:
        snap = Snapshot(tensors={"w": t}, format="hf", layout=layout)
        with pytest.raises(err):
            formats.write(snap, tmp_path / "out")
    snap = Snapshot(tensors={"w": t}, format="hf", files={"model.safetensors": b"x"})
    with pytest.raises(BadInput, match="twice"):
        formats.write(snap, tmp_path / "out")
    snap = Snapshot(tensors={"w": t}, format="hf", files={"a": b"x", "a/b": b"y"})
    with pytest.raises(BadInput, match="both a file and the folder"):
        formats.write(snap, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_hf_side_file_cap_and_odd_entries(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    safetensors.torch.save_file({"w": torch.ones(1)}, str(src / "model.safetensors"))
    (src / "big.onnx").write_bytes(b"\0" * 2000)
    monkeypatch.setattr(hf_format, "MAX_SIDE_FILE", 1000)
    with pytest.raises(BadInput, match="limit"):
        formats.read(src)
    (src / "big.onnx").unlink()
    os.symlink(tmp_path, src / "loop")
    with pytest.raises(BadInput, match="symlinked folder"):
        formats.read(src)
    (src / "loop").unlink()
    os.mkfifo(src / "fifo")
    with pytest.raises(BadInput, match="not a regular file"):
        formats.read(src)
    (src / "fifo").unlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(BadInput, match="no weights"):
        formats.read(empty)


def test_hf_symlinks(tmp_path):
    # The Hugging Face cache layout: snapshot files are symlinks into ../../blobs.
    cache = tmp_path / "models--org--tiny"
    (cache / "blobs").mkdir(parents=True)
    snap_dir = cache / "snapshots" / "abc123"
    snap_dir.mkdir(parents=True)
    safetensors.torch.save_file({"w": torch.ones(2)}, str(cache / "blobs" / "1111"))
    (cache / "blobs" / "2222").write_text("{}")
    os.symlink("../../blobs/1111", snap_dir / "model.safetensors")
    os.symlink("../../blobs/2222", snap_dir / "config.json")
    snap = formats.read(snap_dir)
    assert list(snap.tensors) == ["w"] and snap.files == {"config.json": b"{}"}
    # A link to a file elsewhere (a planted "config.json -> ~/.ssh/id_rsa") is refused.
    secret = tmp_path / "id_rsa"
    secret.write_text("PRIVATE")
    src = tmp_path / "src"
    src.mkdir()
    safetensors.torch.save_file({"w": torch.ones(2)}, str(src / "model.safetensors"))
    os.symlink(src / "model.safetensors", src / "alias.txt")          # inside: fine
    assert formats.read(src).files["alias.txt"] == (src / "model.safetensors").read_bytes()
    os.symlink(secret, src / "config.json")
    with pytest.raises(BadInput, match="outside the folder"):
        formats.read(src)


def test_hf_name_clash_between_shards(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    safetensors.torch.save_file({"w": torch.ones(1)}, str(src / "a.safetensors"))
    safetensors.torch.save_file({"w": torch.zeros(1)}, str(src / "b.safetensors"))
    with pytest.raises(BadInput, match="more than one weight file"):
        formats.read(src)


# ---------------------------------------------------------------- detect / dispatch

def test_detect_by_suffix_and_content(tmp_path):
    snap = dtype_snapshot(["F32"])
    cases = {"safetensors": "m.safetensors", "pt": "m.pt", "npz": "m.npz"}
    for fmt, name in cases.items():
        path = formats.write(snap, tmp_path / name, fmt)
        assert formats.detect(path) == fmt
        renamed = path.rename(tmp_path / f"noext_{fmt}")
        assert formats.detect(renamed) == fmt                          # sniffed from the bytes
        assert_same_tensors(snap, formats.read(renamed), ordered=fmt != "hf")
    (tmp_path / "legacy").write_bytes(pickle.dumps({"a": 1}, protocol=2))
    assert formats.detect(tmp_path / "legacy") == "pt"
    for name in ("m.pth", "m.bin", "m.ckpt", "M.SAFETENSORS"):
        (tmp_path / name).write_bytes(b"x")
        assert formats.detect(tmp_path / name) in ("pt", "safetensors")
    (tmp_path / "weird.gguf").write_bytes(b"GGUF\0\0\0\0\0\0\0\0")
    with pytest.raises(BadInput, match="unknown format"):
        formats.detect(tmp_path / "weird.gguf")
    with pytest.raises(BadInput, match="unknown format"):
        formats.read(tmp_path / "weird.gguf", format="onnx")


@pytest.mark.parametrize("fmt", [None, "safetensors", "pt", "npz", "hf"])
def test_missing_path_is_not_found(tmp_path, fmt):
    with pytest.raises(NotFound):
        formats.read(tmp_path / "nope.safetensors", format=fmt)
    with pytest.raises(NotFound):
        formats.detect(tmp_path / "nope")
    for module in (st_format, pt_format, npz_format, hf_format):
        with pytest.raises(NotFound):
            module.read(tmp_path / "nope")


def test_format_of_snapshot_is_default_for_write(tmp_path):
    snap = dtype_snapshot(["I32"], fmt="npz")
    out = formats.write(snap, tmp_path / "x.npz")
    assert zipfile.is_zipfile(out)
    assert formats.read(out).format == "npz"
    assert math.prod(formats.read(out).tensors["I32.main"].shape) == 8
