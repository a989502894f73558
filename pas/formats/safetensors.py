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
from ..errors import BadInput, BadName, UnsupportedDType
from ..names import MAX_TENSOR_NAME, check_tensor_name
from ..snapshot import Snapshot, Tensor
from ._common import atomic_file, check_tensor, gc_paused, open_input, snapshot_tensors

MAX_HEADER_BYTES = 100 * 1000 * 1000     # the official reader's limit too
MAX_TENSORS = 1_000_000
MAX_NDIM = 64                            # no real tensor comes close; bounds work per entry
_INT64_MAX = 2**63 - 1
METADATA_KEY = "__metadata__"
_DTYPES = dtypes.DTYPES
_NP_DTYPES = {name: dt.np_dtype for name, dt in _DTYPES.items()}
_U1 = np.dtype("u1")


# A validated header entry: (name, dtype, shape, begin, end). A plain tuple:
# headers may list a million of them and namedtuple construction is slow.
_Entry = tuple


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A repeated key means two parsers may disagree on what the file says.
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _RepeatedKey(k)
            seen.add(k)
    return d


class _RepeatedKey(ValueError):
    pass


def _parse_entry(where: str, name: str, info: object, data_size: int) -> _Entry:
    # Written for speed (a header may list a million tensors): exact type
    # checks (`type(x) is int` also refuses bools), few calls on the common path.
    if not (name.isascii() and 0 < len(name) <= MAX_TENSOR_NAME and "\x00" not in name):
        try:
            check_tensor_name(name)
        except BadName as e:
            raise BadName(f"{where}: {e}") from None
    if type(info) is not dict:
        raise BadInput(f"{where}: entry for tensor {name!r} is not a JSON object")
    try:
        dtype_name, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    except KeyError as e:
        raise BadInput(f"{where}: tensor {name!r} has no {e.args[0]!r}") from None
    dt = _DTYPES.get(dtype_name) if type(dtype_name) is str else None
    if dt is None:
        if type(dtype_name) is not str:
            raise BadInput(f"{where}: tensor {name!r}: dtype is not a string")
        raise UnsupportedDType(f"{where}: tensor {name!r} has unsupported dtype {dtype_name!r} "
                               f"(known: {', '.join(_DTYPES)})")
    if type(shape) is not list or len(shape) > MAX_NDIM:
        raise BadInput(f"{where}: tensor {name!r}: shape must be a list of at most {MAX_NDIM} ints")
    count = 1
    for dim in shape:
        if type(dim) is not int or dim < 0:
            raise BadInput(f"{where}: tensor {name!r}: shape {shape} must hold non-negative ints")
        count *= dim
    # Python ints never overflow (and at most MAX_NDIM factors): check once, for int64 consumers.
    if count > _INT64_MAX:
        raise BadInput(f"{where}: tensor {name!r}: shape {shape} has more than 2^63-1 elements")
    if type(offsets) is not list or len(offsets) != 2 or type(offsets[0]) is not int or type(offsets[1]) is not int:
        raise BadInput(f"{where}: tensor {name!r}: data_offsets must be [begin, end] ints")
    begin, end = offsets
    if not 0 <= begin <= end <= data_size:
        raise BadInput(f"{where}: tensor {name!r}: data_offsets {offsets} outside the "
                       f"{data_size}-byte data section")
    if end - begin != count * dt.itemsize:
        raise BadInput(f"{where}: tensor {name!r}: data_offsets {offsets} span {end - begin} bytes, "
                       f"but {dt.name}{shape} needs {count * dt.itemsize}")
    return (name, dt, tuple(shape), begin, end)


def parse_header(where: str, header: bytes, data_size: int) -> tuple[dict[str, str], list[_Entry]]:
    """Validate a header against a data section of ``data_size`` bytes.

    Returns the metadata and the entries in data order.
    """
    try:
        obj = json.loads(header.decode("utf-8"), object_pairs_hook=_no_repeated_keys)
    except _RepeatedKey as e:
        raise BadInput(f"{where}: safetensors header repeats the key {e.args[0]!r}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise BadInput(f"{where}: safetensors header is not valid UTF-8 JSON ({e})") from None
    if type(obj) is not dict:
        raise BadInput(f"{where}: safetensors header is not a JSON object")
    metadata = obj.pop(METADATA_KEY, {})
    if type(metadata) is not dict or not all(type(v) is str for v in metadata.values()):
        raise BadInput(f"{where}: __metadata__ must map strings to strings")
    if len(obj) > MAX_TENSORS:
        raise BadInput(f"{where}: header lists {len(obj)} tensors (max {MAX_TENSORS})")
    entries = [_parse_entry(where, name, info, data_size) for name, info in obj.items()]
    entries.sort(key=lambda e: (e[3], e[4]))              # by data offset; stable for ties
    prev = None
    for e in entries:
        if e[3] == e[4]:
            continue                                        # zero-size tensors may share offsets
        if prev is not None and e[3] < prev[4]:
            raise BadInput(f"{where}: tensors {prev[0]!r} {[prev[3], prev[4]]} and "
                           f"{e[0]!r} {[e[3], e[4]]} overlap")
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
    with gc_paused():
        return _read(path)


def _read(path: str | os.PathLike) -> Snapshot:
    where = os.fspath(path)
    with open_input(path) as f:
        start, metadata, entries, data_size = read_header_of(f, where)
        if data_size and any(e[4] > e[3] for e in entries):
            # One read-only map of the file we validated; tensors are views of it.
            buf = np.asarray(np.memmap(f, dtype=np.uint8, mode="r", offset=start, shape=(data_size,)))
        else:
            buf = np.zeros(0, np.uint8)                     # mmap cannot map 0 bytes
    tensors = {}
    for name, dt, shape, begin, end in entries:
        # Views of the map (slicing past an empty map just gives empty views);
        # each step only when needed: headers may list a million tensors.
        arr = buf[begin:end]
        np_dtype = _NP_DTYPES[dt.name]
        if np_dtype != _U1:
            arr = arr.view(np_dtype)
        if len(shape) != 1:
            arr = arr.reshape(shape)
        tensors[name] = Tensor(name, dt.name, shape, arr)
    return Snapshot(tensors=tensors, metadata=dict(metadata), format="safetensors", layout={})


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
