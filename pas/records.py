"""Keys and records: how repository objects are named and serialised in a store.

Key space (every key starts with a one-byte kind; see docs/format.md):

    c <digest:16> <length:8 BE> <variant:1>   chunk: framed, encoded bytes of one stream piece
    t <digest:16> <length:8 BE> <variant:1>   tensor record: how one tensor's bytes are stored
    v <version id:16>                          version manifest (JSON), immutable
    r <ref name, UTF-8>                        ref: a version id, mutable

Chunk and tensor keys are content addresses of the *decoded* bytes; the
variant byte separates distinct contents whose digests collide (a dedup hit
is always confirmed). Every JSON record carries a trailing 8-byte xxh3-64 of
its body, so a damaged record is detected before it is trusted.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import IntegrityError
from .hashing import DIGEST_SIZE, checksum64, checksum64_parts, digest, digest_parts

CHUNK, TENSOR, VERSION, REF = b"c", b"t", b"v", b"r"
ADDRESS_SIZE = DIGEST_SIZE + 8 + 1
VERSION_ID_SIZE = 16


#: Tensor addresses with a variant of at least this name lossy representations
#: (pas.quantize); exact tensors use variants below it (docs/format.md §2).
LOSSY_VARIANT = 0x80


def is_lossy_address(addr: bytes) -> bool:
    return addr[-1] >= LOSSY_VARIANT


def address(digest_: bytes, length: int, variant: int = 0) -> bytes:
    return digest_ + struct.pack(">QB", length, variant)


def address_length(addr: bytes) -> int:
    return struct.unpack(">Q", addr[DIGEST_SIZE:DIGEST_SIZE + 8])[0]


def address_digest(addr: bytes) -> bytes:
    return addr[:DIGEST_SIZE]


def with_variant(addr: bytes, variant: int) -> bytes:
    if variant > 255:
        raise IntegrityError("more than 256 distinct contents share one digest")
    return addr[:-1] + bytes((variant,))


def tensor_digest(dtype: str, shape: tuple[int, ...], data: np.ndarray) -> bytes:
    """A tensor's content digest: dtype and shape are hashed in with the raw bytes."""
    header = f"{dtype}|{','.join(map(str, shape))}|".encode()
    return digest_parts(header, memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8)))


def tensor_matches(addr: bytes, dtype: str, shape: tuple[int, ...], data: np.ndarray) -> bool:
    """Whether decoded tensor data (its raw bits, any view) is what tensor address ``addr`` names."""
    return data.nbytes == address_length(addr) and tensor_digest(dtype, shape, data) == address_digest(addr)


def check_address(data, addr: bytes, what: str) -> None:
    """Raise IntegrityError unless ``data`` is what ``addr`` names."""
    if len(data) != address_length(addr) or digest(data) != address_digest(addr):
        raise IntegrityError(f"{what} {addr.hex()[:16]} does not match its content address")


def pack_json(obj: Any) -> bytes:
    """A JSON record (manifests): zstd-compressed compact JSON + xxh3-64 check.

    Manifests repeat names and keys (a model's state dict layout, hundreds of
    tensor entries); compressed they cost a tenth of the bytes.
    """
    import zstandard
    body = zstandard.ZstdCompressor(level=9).compress(
        json.dumps(obj, separators=(",", ":"), sort_keys=True).encode())
    return body + checksum64(body)


def unpack_json(value: bytes, what: str) -> Any:
    import zstandard
    body, check = value[:-8], value[-8:]
    if len(value) < 8 or checksum64(body) != check:
        raise IntegrityError(f"{what} is damaged (checksum mismatch)")
    try:
        return json.loads(zstandard.ZstdDecompressor().decompress(body))
    except (ValueError, zstandard.ZstdError) as exc:
        raise IntegrityError(f"{what} is damaged: {exc}") from None


def pack_tensor_record(rec: dict, payload: bytes = b"") -> bytes:
    """A tensor record: u32 LE length of the JSON body, the body, inline frames, xxh3-64 of all."""
    body = json.dumps(rec, separators=(",", ":"), sort_keys=True).encode()
    head = struct.pack("<I", len(body)) + body
    return b"".join((head, payload, checksum64_parts(head, payload)))


def unpack_tensor_record(value: bytes, what: str) -> tuple[dict, memoryview]:
    """The record's JSON and its inline payload (checked)."""
    view = memoryview(value)
    if len(view) < 12 or checksum64(view[:-8]) != view[-8:]:
        raise IntegrityError(f"{what} is damaged (checksum mismatch)")
    (n,) = struct.unpack("<I", view[:4])
    if 4 + n > len(view) - 8:
        raise IntegrityError(f"{what} is damaged (bad length)")
    try:
        rec = json.loads(bytes(view[4:4 + n]))
    except ValueError as exc:
        raise IntegrityError(f"{what} is damaged: {exc}") from None
    if not isinstance(rec, dict):
        raise IntegrityError(f"{what} is damaged (not an object)")
    return rec, view[4 + n:-8]


def pack_ref(version_id: bytes) -> bytes:
    return version_id + checksum64(version_id)


def unpack_ref(value: bytes, name: str) -> bytes:
    vid, check = value[:VERSION_ID_SIZE], value[VERSION_ID_SIZE:]
    if len(value) != VERSION_ID_SIZE + 8 or checksum64(vid) != check:
        raise IntegrityError(f"ref {name!r} is damaged (checksum mismatch)")
    return vid


@dataclass(frozen=True)
class TensorEntry:
    """One tensor (or side file) of a version, as listed in its manifest."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    object: bytes  # tensor record address
    #: A lossy tensor (docs/format.md §5.1): dtype/shape/nbytes/object above describe
    #: its stored representation; this says how to decode it (pas.quantize.decode).
    lossy: dict | None = field(default=None, compare=False)

    def to_json(self) -> dict:
        d = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape),
             "nbytes": self.nbytes, "object": self.object.hex()}
        if self.lossy is not None:
            d["lossy"] = self.lossy
        return d

    @classmethod
    def from_json(cls, d: dict) -> "TensorEntry":
        return cls(d["name"], d["dtype"], tuple(d["shape"]), int(d["nbytes"]), bytes.fromhex(d["object"]),
                   d.get("lossy"))

    @property
    def out_dtype(self) -> str:
        """The dtype retrieval returns: the original one for a lossy tensor."""
        return self.lossy["dtype"] if self.lossy is not None else self.dtype


@dataclass
class Version:
    """An immutable version: its id is the digest of its manifest.

    The manifest's structure is checked on construction, so a damaged or
    forged one is an `IntegrityError` here, not a TypeError wherever a field
    is first used."""

    id: bytes
    manifest: dict

    def __post_init__(self):
        problem = _manifest_problem(self.manifest)
        if problem:
            raise IntegrityError(f"manifest {self.id.hex()[:12]} is damaged: {problem}")

    @property
    def hex(self) -> str:
        return self.id.hex()

    @property
    def short(self) -> str:
        return self.id.hex()[:12]

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def parent(self) -> bytes | None:
        p = self.manifest.get("parent")
        return bytes.fromhex(p) if p else None

    @property
    def time(self) -> str:
        return self.manifest["time"]

    @property
    def message(self) -> str:
        return self.manifest.get("message", "")

    @property
    def tensors(self) -> list[TensorEntry]:
        # Parsed once: a retrieve walks a version's entries several times
        # (thousands of small tensors in a checkpoint). A new list each call.
        parsed = self.__dict__.get("_tensors")
        if parsed is None:
            parsed = self.__dict__["_tensors"] = tuple(TensorEntry.from_json(d) for d in self.manifest["tensors"])
        return list(parsed)

    @property
    def files(self) -> list[TensorEntry]:
        return [TensorEntry.from_json(d) for d in self.manifest.get("files", [])]

    @property
    def logical_bytes(self) -> int:
        return int(self.manifest["logical_bytes"])

    def summary(self) -> dict:
        m = self.manifest
        return {"id": self.hex, "name": self.name, "parent": m.get("parent"), "time": self.time,
                "message": self.message, "tensors": len(m["tensors"]), "files": len(m.get("files", [])),
                "logical_bytes": self.logical_bytes, "format": m["source"]["format"],
                "metadata": m["source"].get("metadata", {}), "lossy": m.get("lossy")}

    @property
    def lossy(self) -> dict | None:
        """The manifest's lossy summary, or None: every tensor of the version is bit-exact."""
        return self.manifest.get("lossy")


def nonnegative_ints(values, what: str) -> list[int]:
    """``values`` if it is a list of non-negative integers, else ValueError: the
    integer lists of a stored record or manifest (damaged or forged ones may hold anything)."""
    if type(values) is not list:
        raise ValueError(f"{what} must be a list of non-negative integers")
    for v in values:   # a loop, not all(<generator>): records of 100,000 small tensors are parsed
        if type(v) is not int or v < 0:
            raise ValueError(f"{what} must be a list of non-negative integers")
    return values


def hex_id(text, nbytes: int = ADDRESS_SIZE) -> bytes:
    """The ``nbytes`` bytes an object address (or version id) in hex names, else ValueError."""
    if type(text) is not str or len(text) != 2 * nbytes:
        raise ValueError("not an object address" if nbytes == ADDRESS_SIZE else "not a version id")
    return bytes.fromhex(text)


def _entry_problem(d) -> str | None:
    if type(d) is not dict:
        return "an entry is not an object"
    if type(d.get("name")) is not str or type(d.get("dtype")) is not str:
        return "an entry's name or dtype is not a string"
    try:
        nonnegative_ints(d.get("shape"), "shape")
        nonnegative_ints([d.get("nbytes")], "size")
        hex_id(d.get("object"))
    except ValueError as exc:
        return f"entry {d['name'][:100]!r}: {exc}"
    lossy = d.get("lossy")
    if lossy is not None and (type(lossy) is not dict or type(lossy.get("scheme")) is not str
                              or type(lossy.get("dtype")) is not str):
        return f"entry {d['name'][:100]!r}: its lossy description is malformed"
    return None


def _manifest_problem(m) -> str | None:
    """What is wrong with a manifest's structure (docs/format.md §5), or None."""
    if type(m) is not dict:
        return "not a JSON object"
    if type(m.get("name")) is not str or type(m.get("time")) is not str:
        return "name or time is not a string"
    if m.get("parent") is not None:
        try:
            hex_id(m["parent"], VERSION_ID_SIZE)
        except ValueError:
            return "parent is not a version id"
    if type(m.get("message", "")) is not str or type(m.get("logical_bytes")) is not int:
        return "message or logical_bytes has the wrong type"
    src = m.get("source")
    if type(src) is not dict or type(src.get("format")) is not str or \
            type(src.get("metadata", {})) is not dict or type(src.get("layout", {})) is not dict:
        return "source is malformed"
    for key in ("tensors", "files"):
        entries = m.get(key, [])
        if type(entries) is not list:
            return f"{key} is not a list"
        for d in entries:
            problem = _entry_problem(d)
            if problem:
                return problem
    if "tensors" not in m:
        return "it lists no tensors"
    if m.get("lossy") is not None and type(m["lossy"]) is not dict:
        return "lossy is not an object"
    return None
