"""Fuzz targets: every decoder of stored bytes and every parser of input files.

Each target takes arbitrary bytes and either returns or raises a `PasError`
(a typed error); any other exception is a bug. The same targets serve:

- `python tests/fuzz.py TARGET` (make fuzz): coverage-guided fuzzing with
  atheris; an input that breaks a target is saved to
  ``tests/fuzz_corpus/TARGET/crash-<sha1>``;
- `tests/test_fuzz_corpus.py`: every saved input (the seeds and each crash
  found, kept after its fix) replayed on every test run.
"""
from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

CORPUS = Path(__file__).parent / "fuzz_corpus"
_SCRATCH = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())


def _through_file(data: bytes, suffix: str, read: Callable[[str], object]) -> None:
    fd, path = tempfile.mkstemp(suffix=suffix, dir=_SCRATCH)
    try:
        os.write(fd, data)
        os.close(fd)
        read(path)
    finally:
        os.unlink(path)


# Stored values carry an xxh3-64 check that a random mutation almost never
# passes, so most targets forge it: they fuzz what lies behind the check, as a
# hostile writer of the store (who can compute xxh3) would.

def chunk_frame(data: bytes) -> None:
    """A stored chunk with a forged check: first 3 bytes give the length it must decode to."""
    from pas import codecs
    from pas.hashing import checksum64
    if len(data) < 3:
        return
    n = int.from_bytes(data[:3], "little") >> 1
    frame = data[3:] + checksum64(data[3:]) if data[0] & 1 else data[3:]
    out = codecs.decode_chunk(frame, n, checked=bool(data[0] & 1))
    assert len(bytes(out)) == n or not data[0] & 1


def tensor_record(data: bytes) -> None:
    """A tensor record (forged check; its address's length in the first 3 bytes)
    parsed, then decoded whole and by its top plane."""
    from pas import records
    from pas.hashing import checksum64
    from pas.reader import TensorReader, parse_record
    from pas.stores.memory import MemoryStore
    addr = records.address(bytes(16), int.from_bytes(data[:3], "little"))
    value = data[3:] + checksum64(data[3:])
    parse_record(addr, value)
    store = MemoryStore()
    store.put_many([(records.TENSOR + addr, value)])
    reader = TensorReader(store, lambda: None)
    reader.words(addr, parallel=False)
    reader.top_planes(addr, 1, parallel=False)


def manifest(data: bytes) -> None:
    """A version manifest: JSON text, compressed and checked as stored."""
    import zstandard

    from pas import records
    from pas.hashing import checksum64
    body = zstandard.ZstdCompressor(level=1).compress(data)
    v = records.Version(bytes(16), records.unpack_json(body + checksum64(body), "fuzzed manifest"))
    _ = [(e.name, e.object, e.shape) for e in v.tensors + v.files], v.parent, v.name


def ref(data: bytes) -> None:
    from pas import records
    records.unpack_ref(data, "fuzzed")


def journal(data: bytes) -> None:
    from pas.journal import Journal
    def read(path: str) -> None:
        Journal(path).read()
    _through_file(data, ".journal", read)


def safetensors_file(data: bytes) -> None:
    from pas.formats import safetensors
    _through_file(data, ".safetensors", safetensors.read)


def npz_file(data: bytes) -> None:
    from pas.formats import npz
    _through_file(data, ".npz", npz.read)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "chunk_frame": chunk_frame, "tensor_record": tensor_record, "manifest": manifest, "ref": ref,
    "journal": journal, "safetensors_file": safetensors_file, "npz_file": npz_file,
}


def run(target: str, data: bytes) -> None:
    """Run one input; a `PasError` is the expected refusal."""
    from pas.errors import PasError
    try:
        TARGETS[target](data)
    except PasError:
        pass


def seeds() -> dict[str, list[bytes]]:
    """Valid inputs of every target, made by pas itself: where fuzzing starts."""
    from pas import records
    from pas.formats import safetensors
    from pas.repo import Repository
    from pas.snapshot import Snapshot, Tensor
    repo = Repository.in_memory(chunker={"id": "fixed", "size": 4096})
    snap = Snapshot()
    rng = np.random.default_rng(0)
    snap.add(Tensor.from_array("w", rng.normal(0, 0.02, 300_000).astype("<f4")))   # > INLINE_MAX: chunked
    snap.add(Tensor.from_array("b", np.zeros(7, "<f4")))
    repo.archive_snapshot(snap, "m")
    by_kind: dict[bytes, list[tuple[bytes, bytes]]] = {}
    for key, value in repo.store.items_prefix(b""):
        by_kind.setdefault(key[:1], []).append((key[1:], value))
    out: dict[str, list[bytes]] = {name: [] for name in TARGETS}
    for addr, value in by_kind[records.CHUNK][:3]:
        n = records.address_length(addr)
        out["chunk_frame"].append(((n << 1) | 1).to_bytes(3, "little") + value[:-8])
    out["tensor_record"] = [records.address_length(a).to_bytes(3, "little") + v[:-8]
                            for a, v in by_kind[records.TENSOR][:3]]
    import zstandard
    out["manifest"] = [zstandard.ZstdDecompressor().decompress(v[:-8]) for _, v in by_kind[records.VERSION]]
    out["ref"] = [v for _, v in by_kind[records.REF]]
    out["journal"] = [b'{"ref": "m", "version": "' + b"ab" * 16 + b'"}\t0123456789abcdef\n']
    header = safetensors.build_header(snap.tensors.values(), {"k": "v"})
    body = b"".join(t.data.tobytes() for t in snap.tensors.values())
    out["safetensors_file"] = [len(header).to_bytes(8, "little") + header + body]
    buf = io.BytesIO()
    np.savez(buf, a=np.arange(10, dtype="<f4"), b=np.zeros((2, 3), "<i8"))
    out["npz_file"] = [buf.getvalue()]
    npy = io.BytesIO()
    np.save(npy, np.arange(6, dtype=">f8").reshape(2, 3))   # big-endian, stored deflated
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("c.npy", npy.getvalue())
    out["npz_file"].append(zbuf.getvalue())
    return out


def write_seeds(target: str, folder: str) -> None:
    """Write the seeds of ``target`` into ``folder`` (tests/fuzz.py, in a child process)."""
    for i, data in enumerate(seeds()[target]):
        Path(folder, f"seed-{i}").write_bytes(data)
