"""safetensors files: our own validating reader and our own writer.

Layout of a file: 8-byte little-endian header length N, N bytes of UTF-8
JSON (``{"__metadata__": {str: str}, name: {"dtype", "shape",
"data_offsets": [begin, end]}, ...}``, space-padded), then the data section
that offsets are relative to.

The reader trusts nothing: every field is checked before any data is
touched, sizes are checked against the file before anything is allocated,
and tensors are numpy views of one read-only memory map (no copies).
Snapshot order is data order, which is also the order the official writer
uses for the header, so reading then writing an official file gives back
the same bytes. ``layout`` is ``{}``: the file has no structure beyond that.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Any, BinaryIO, Iterable

import numpy as np

from .. import dtypes
from ..errors import BadInput, BadName
from ..names import check_tensor_name
from ..snapshot import Snapshot, Tensor
from ._common import atomic_file, check_tensor, open_input, snapshot_tensors

MAX_HEADER_BYTES = 100 * 1000 * 1000     # the official reader's limit too
MAX_TENSORS = 1_000_000
MAX_NDIM = 64                            # no real tensor comes close; bounds work per entry
_INT64_MAX = 2**63 - 1
METADATA_KEY = "__metadata__"


class _Entry:
    __slots__ = ("name", "dtype", "shape", "begin", "end")

    def __init__(self, name: str, dtype: dtypes.DType, shape: tuple[int, ...], begin: int, end: int):
        self.name, self.dtype, self.shape, self.begin, self.end = name, dtype, shape, begin, end


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A JSON object with a repeated key means two parsers may disagree on it.
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise BadInput(f"duplicate key {k!r} in safetensors header")
            seen.add(k)
    return d


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _parse_entry(where: str, name: str, info: object, data_size: int) -> _Entry:
    check_tensor_name(name)
    if not isinstance(info, dict):
        raise BadInput(f"{where}: entry for tensor {name!r} is not a JSON object")
    for key in ("dtype", "shape", "data_offsets"):
        if key not in info:
            raise BadInput(f"{where}: tensor {name!r} has no {key!r}")
    dtype_name = info["dtype"]
    if not isinstance(dtype_name, str):
        raise BadInput(f"{where}: tensor {name!r}: dtype is not a string")
    dt = dtypes.get(dtype_name)                                  # UnsupportedDType if unknown
    shape = info["shape"]
    if not isinstance(shape, list) or len(shape) > MAX_NDIM:
        raise BadInput(f"{where}: tensor {name!r}: shape must be a list of at most {MAX_NDIM} ints")
    count = 1
    for s in shape:
        if not _is_int(s) or s < 0:
            raise BadInput(f"{where}: tensor {name!r}: shape {shape} must hold non-negative ints")
        count *= s
        if count > _INT64_MAX:    # Python ints never overflow; this keeps int64 consumers safe
            raise BadInput(f"{where}: tensor {name!r}: shape {shape} has more than 2^63-1 elements")
    offsets = info["data_offsets"]
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
        raise BadInput(f"{where}: tensor {name!r}: data_offsets must be [begin, end] ints")
    begin, end = offsets
    if not 0 <= begin <= end <= data_size:
        raise BadInput(f"{where}: tensor {name!r}: data_offsets {offsets} outside the "
                       f"{data_size}-byte data section")
    nbytes = count * dt.itemsize
    if end - begin != nbytes:
        raise BadInput(f"{where}: tensor {name!r}: data_offsets {offsets} span {end - begin} bytes, "
                       f"but {dt.name}{shape} needs {nbytes}")
    return _Entry(name, dt, tuple(shape), begin, end)


def parse_header(where: str, header: bytes, data_size: int) -> tuple[dict[str, str], list[_Entry]]:
    """Validate a header against a data section of ``data_size`` bytes.

    Returns the metadata and the entries in data order.
    """
    try:
        obj = json.loads(header.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except BadInput as e:
        raise BadInput(f"{where}: {e}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise BadInput(f"{where}: safetensors header is not valid UTF-8 JSON ({e})") from None
    if not isinstance(obj, dict):
        raise BadInput(f"{where}: safetensors header is not a JSON object")
    metadata = obj.pop(METADATA_KEY, {})
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise BadInput(f"{where}: __metadata__ must map strings to strings")
    if len(obj) > MAX_TENSORS:
        raise BadInput(f"{where}: header lists {len(obj)} tensors (max {MAX_TENSORS})")
    entries = [_parse_entry(where, name, info, data_size) for name, info in obj.items()]
    entries.sort(key=lambda e: (e.begin, e.end))          # stable: ties keep header order
    prev: _Entry | None = None
    for e in entries:
        if e.begin == e.end:
            continue                                        # zero-size tensors may share offsets
        if prev is not None and e.begin < prev.end:
            raise BadInput(f"{where}: tensors {prev.name!r} {[prev.begin, prev.end]} and "
                           f"{e.name!r} {[e.begin, e.end]} overlap")
        prev = e
    return metadata, entries


def read_header_of(f: BinaryIO, where: str) -> tuple[int, dict[str, str], list[_Entry], int]:
    """(data start, metadata, entries, data size) of an open file, fully validated."""
    size = os.fstat(f.fileno()).st_size
    if size < 8:
        raise BadInput(f"{where}: {size} bytes, too short for a safetensors file")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > MAX_HEADER_BYTES:
        raise BadInput(f"{where}: safetensors header claims {n} bytes (max {MAX_HEADER_BYTES})")
    if n > size - 8:
        raise BadInput(f"{where}: safetensors header claims {n} bytes but the file has only "
                       f"{size - 8} after the length field")
    header = f.read(n)
    if len(header) != n:
        raise BadInput(f"{where}: file shrank while reading the header")
    data_size = size - 8 - n
    metadata, entries = parse_header(where, header, data_size)
    return 8 + n, metadata, entries, data_size


def read(path: str | os.PathLike) -> Snapshot:
    where = os.fspath(path)
    with open_input(path) as f:
        start, metadata, entries, data_size = read_header_of(f, where)
        if data_size and any(e.end > e.begin for e in entries):
            # One read-only map of the file we validated; tensors are views of it.
            buf = np.asarray(np.memmap(f, dtype=np.uint8, mode="r", offset=start, shape=(data_size,)))
        else:
            buf = np.zeros(0, np.uint8)                     # mmap cannot map 0 bytes
    snap = Snapshot(metadata=dict(metadata), format="safetensors", layout={})
    for e in entries:
        raw = buf[e.begin:e.end] if e.end > e.begin else np.zeros(0, np.uint8)
        arr = raw.view(e.dtype.np_dtype).reshape(e.shape)
        snap.add(Tensor(e.name, e.dtype.name, e.shape, arr))
    return snap


# ---------------------------------------------------------------- writing

def build_header(tensors: Iterable[Tensor], metadata: dict[str, str]) -> bytes:
    """The padded header (without the length prefix) for contiguous data in the given order."""
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise BadInput("safetensors metadata must map strings to strings")
    header: dict[str, Any] = {}
    if metadata:
        header[METADATA_KEY] = dict(metadata)
    offset = 0
    for t in tensors:
        dt = check_tensor(t)
        if t.name == METADATA_KEY or t.name in header:
            raise BadName(f"tensor name {t.name!r} is reserved or repeated")
        n = t.nbytes
        header[t.name] = {"dtype": dt.name, "shape": [int(s) for s in t.shape],
                          "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)                # as the official writer: 8-byte aligned data
    if len(raw) > MAX_HEADER_BYTES:
        raise BadInput(f"safetensors header would be {len(raw)} bytes (max {MAX_HEADER_BYTES})")
    return raw


def write_tensors(out_path: str | os.PathLike, tensors: list[Tensor], metadata: dict[str, str]) -> None:
    header = build_header(tensors, metadata)               # validates everything before writing
    with atomic_file(out_path) as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for t in tensors:
            if t.nbytes:
                f.write(dtypes.raw_bytes(t.data))


def write(snapshot: Snapshot, out_path: str | os.PathLike) -> None:
    write_tensors(out_path, snapshot_tensors(snapshot), snapshot.metadata)
