"""Minimal, dependency-light tensor I/O for the baselines and the checks.

Every tensor is a C-contiguous little-endian numpy array whose dtype follows
pas's table (BF16 as ``<u2`` and float8 as ``u1`` bit views), so arrays from
any scheme compare as bytes against the source.

Formats: safetensors (parsed here, zero-copy views of the file bytes) and
PyTorch pickles (``.pt/.pth/.bin/.ckpt``, via ``torch.load(weights_only=True)``;
nested dicts/lists are flattened with "." and non-tensor leaves are skipped).
A folder is the union of the weight files inside it.
"""
from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np

ST_TO_NP = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "F8_E4M3": "u1", "F8_E5M2": "u1",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "|b1",
}
NP_TO_ST = {"<f8": "F64", "<f4": "F32", "<f2": "F16", "<i8": "I64", "<i4": "I32", "<i2": "I16", "|i1": "I8",
            "<u8": "U64", "<u4": "U32", "<u2": "U16", "|u1": "U8", "|b1": "BOOL"}
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def c_order(a: np.ndarray) -> np.ndarray:
    """C-contiguous, keeping 0-d arrays 0-d (np.ascontiguousarray makes them 1-d)."""
    a = np.asarray(a)
    return a if a.flags.c_contiguous else a.copy(order="C")


def is_safetensors(path: Path | str) -> bool:
    return str(path).endswith(".safetensors")


def weight_files(path: Path) -> list[Path]:
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file()
                      and (is_safetensors(p) or p.name.endswith(TORCH_SUFFIXES)))
    return [path]


# ----------------------------------------------------------------------------
# safetensors
# ----------------------------------------------------------------------------
def st_header(buf) -> tuple[dict, int]:
    """(header without __metadata__, offset of the data section) of safetensors bytes."""
    (hlen,) = struct.unpack("<Q", bytes(buf[:8]))
    header = json.loads(bytes(buf[8:8 + hlen]))
    header.pop("__metadata__", None)
    return header, 8 + hlen


def st_parse(buf) -> dict[str, np.ndarray]:
    """Zero-copy arrays over safetensors bytes (bytes, bytearray or memoryview)."""
    header, base = st_header(buf)
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        dt = np.dtype(ST_TO_NP[info["dtype"]])
        out[name] = np.frombuffer(buf, dtype=dt, count=(e - b) // dt.itemsize, offset=base + b).reshape(info["shape"])
    return out


def st_read_header_file(path: Path) -> tuple[dict, int]:
    with open(path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(hlen))
    header.pop("__metadata__", None)
    return header, 8 + hlen


def st_load_one(path: Path, name: str) -> np.ndarray:
    """Read one tensor of a safetensors file: the header, then a seek to its bytes."""
    with open(path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(hlen))
        info = header[name]
        b, e = info["data_offsets"]
        f.seek(8 + hlen + b)
        buf = bytearray(e - b)
        f.readinto(buf)
    return np.frombuffer(buf, dtype=ST_TO_NP[info["dtype"]]).reshape(info["shape"])


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtypes: dict[str, str] | None = None,
                      metadata: dict[str, str] | None = None) -> None:
    """Write numpy arrays as safetensors (names sorted). ``dtypes`` overrides the
    safetensors dtype of bit-view arrays (e.g. ``{"w": "BF16"}`` for a ``<u2`` array)."""
    header, chunks, off = {}, [], 0
    for name in sorted(tensors):
        a = c_order(tensors[name])
        st = (dtypes or {}).get(name) or NP_TO_ST[a.dtype.str if a.dtype.str[0] in "<|" else a.dtype.newbyteorder("<").str]
        b = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": st, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        chunks.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for c in chunks:
            f.write(c)


# ----------------------------------------------------------------------------
# PyTorch pickles
# ----------------------------------------------------------------------------
def _torch_to_numpy(t) -> np.ndarray:
    import torch
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view("<u2")
    if t.dtype in (getattr(torch, "float8_e4m3fn", None), getattr(torch, "float8_e5m2", None)):
        return t.view(torch.uint8).numpy()
    return t.numpy()


def _flatten(obj, prefix: str, out: dict) -> None:
    import torch
    if isinstance(obj, torch.Tensor):
        out[prefix] = _torch_to_numpy(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _flatten(v, f"{prefix}.{i}" if prefix else str(i), out)


def torch_parse(src, mmap: bool = False) -> dict[str, np.ndarray]:
    """Tensors of a PyTorch checkpoint (a path or bytes)."""
    import torch
    if isinstance(src, (bytes, bytearray, memoryview)):
        src = io.BytesIO(src)
        mmap = False
    if mmap and not zipfile.is_zipfile(src):
        mmap = False  # the legacy (pre-zip) torch.save format cannot be memory-mapped
    obj = torch.load(src, map_location="cpu", weights_only=True, mmap=mmap)
    out: dict[str, np.ndarray] = {}
    _flatten(obj, "", out)
    return out


# ----------------------------------------------------------------------------
# format-independent entry points
# ----------------------------------------------------------------------------
def parse_bytes(buf, filename: str) -> dict[str, np.ndarray]:
    """Tensors of one weight file given its bytes."""
    return st_parse(buf) if is_safetensors(filename) else torch_parse(buf)


def load(path: Path) -> dict[str, np.ndarray]:
    """All tensors of a weight file or folder (reads the file bytes)."""
    out: dict[str, np.ndarray] = {}
    for f in weight_files(path):
        out.update(parse_bytes(f.read_bytes(), f.name))
    return out


def load_one(path: Path, name: str) -> np.ndarray:
    """One tensor, reading as little as the format allows."""
    for f in weight_files(path):
        if is_safetensors(f):
            header, _ = st_read_header_file(f)
            if name in header:
                return st_load_one(f, name)
        else:
            t = torch_parse(f, mmap=True)
            if name in t:
                return np.array(t[name], copy=True)
    raise KeyError(name)


def tensor_sizes(path: Path) -> dict[str, int]:
    """name -> nbytes of every tensor of a weight file or folder."""
    out: dict[str, int] = {}
    for f in weight_files(path):
        if is_safetensors(f):
            header, _ = st_read_header_file(f)
            out.update({k: v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items()})
        else:
            out.update({k: int(v.nbytes) for k, v in torch_parse(f, mmap=True).items()})
    return out


def same_bytes(a: np.ndarray, b: np.ndarray) -> str | None:
    """None when ``b`` has the dtype, shape and exact bytes of ``a``; else what differs."""
    if not isinstance(b, np.ndarray):
        return f"not an ndarray ({type(b).__name__})"
    if np.dtype(a.dtype) != np.dtype(b.dtype):
        return f"dtype {b.dtype} != {a.dtype}"
    if tuple(a.shape) != tuple(b.shape):
        return f"shape {tuple(b.shape)} != {tuple(a.shape)}"
    ua = c_order(a).reshape(-1).view(np.uint8)
    ub = c_order(b).reshape(-1).view(np.uint8)
    if not np.array_equal(ua, ub):
        return f"{int(np.count_nonzero(ua != ub))} of {ua.size} bytes differ"
    return None
