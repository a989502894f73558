"""The repository: archive snapshots as versions, retrieve them, verify, collect garbage.

Write order (what makes a version all-or-nothing, docs/format.md):
  1. chunks, in bulk batches (volatile; orphans if we crash, removed by gc);
  2. a store flush: every chunk is durable;
  3. one final synced batch: tensor records, the version manifest and the ref.
RocksDB applies a batch atomically, so a version is visible only once every
byte it names is durable.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from . import codecs, dtypes, planes, records
from .chunking import get_chunker
from .errors import (BadInput, IntegrityError, NotARepository, NotFound,
                     UnsupportedFormat)
from .hashing import digest, digest_parts
from .records import CHUNK, REF, TENSOR, VERSION, TensorEntry, Version
from .snapshot import Snapshot, Tensor
from .stores.base import Store

FORMAT_VERSION = 1
REPO_DIR = ".pas"
DEFAULT_CONFIG = {
    "format_version": FORMAT_VERSION,
    "hash": "xxh3-128",
    "chunker": {"id": "fixed", "size": 1 << 20},
    "codec": {"id": "zstd", "level": 1},
}
#: Bytes of new chunks held in memory before they are written in one batch.
BATCH_BYTES = 64 << 20
#: Elements sampled to choose a float tensor's plane layout.
LAYOUT_SAMPLE = 1 << 16

Progress = Callable[[int], None]  # called with the number of logical bytes just processed


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


@dataclass
class ArchiveResult:
    version_id: str
    name: str
    parent: str | None
    logical_bytes: int
    physical_added: int
    tensors: int
    tensors_reused: int
    chunks_written: int
    chunks_reused: int
    seconds: float

    @property
    def ratio(self) -> float:
        return self.logical_bytes / self.physical_added if self.physical_added else float("inf")

    def to_json(self) -> dict:
        d = dict(self.__dict__)
        d["ratio"] = round(self.ratio, 4) if self.physical_added else None
        return d


@dataclass
class VerifyReport:
    chunks: int = 0
    tensors: int = 0
    versions: int = 0
    bytes_checked: int = 0
    errors: list[str] = field(default_factory=list)
    damaged_versions: list[str] = field(default_factory=list)   # "name@shortid"
    damaged_refs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict:
        return dict(self.__dict__, ok=self.ok)


@dataclass
class GcReport:
    dry_run: bool
    chunks: int = 0
    tensors: int = 0
    bytes: int = 0

    def to_json(self) -> dict:
        return dict(self.__dict__)


class Repository:
    """A pas repository over a `Store`. Open with `Repository.open` / `init`."""

    def __init__(self, store: Store, config: dict, root: Path | None = None):
        self.store = store
        self.config = config
        self.root = root
        self.chunker = get_chunker(config["chunker"])
        self.compressor = codecs.get_codec(config["codec"])
        self._pool: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ opening
    @staticmethod
    def find(path: str | os.PathLike | None = None) -> Path:
        """The repository directory: ``path``, else $PAS_REPO, else the current directory or a parent."""
        if path is None:
            path = os.environ.get("PAS_REPO") or None
        if path is not None:
            p = Path(path)
            for cand in (p / REPO_DIR, p):
                if _is_repo_dir(cand):
                    return cand
            raise NotARepository(f"no pas repository at {p} (run `pas init {p}`)")
        here = Path.cwd().resolve()
        for cand in (here, *here.parents):
            if _is_repo_dir(cand / REPO_DIR):
                return cand / REPO_DIR
        raise NotARepository("not in a pas repository (use --repo, set PAS_REPO, or run `pas init`)")

    @classmethod
    def init(cls, path: str | os.PathLike, chunk_size: int | None = None,
             codec: dict | None = None) -> "Repository":
        """Create a repository at ``path`` (its data lives in ``path/.pas``) and open it for writing."""
        root = Path(path) / REPO_DIR
        if (root / "config.json").exists():
            raise BadInput(f"a pas repository already exists at {path}")
        config = json.loads(json.dumps(DEFAULT_CONFIG))
        config["repo_id"] = uuid.uuid4().hex
        if chunk_size:
            config["chunker"]["size"] = int(chunk_size)
        if codec:
            codecs.get_codec(codec)  # validate before anything is written
            config["codec"] = codec
        root.mkdir(parents=True, exist_ok=True)
        from .stores.rocks import RocksStore
        RocksStore(root / "db", create=True).close()
        tmp = root / "config.json.tmp"
        with open(tmp, "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, root / "config.json")
        return cls.open(path, write=True)

    @classmethod
    def open(cls, path: str | os.PathLike | None = None, write: bool = False) -> "Repository":
        root = cls.find(path)
        config = read_config(root)
        from .stores.rocks import RocksStore
        store = RocksStore(root / "db", read_only=not write)
        return cls(store, config, root)

    @classmethod
    def in_memory(cls, **overrides) -> "Repository":
        from .stores.memory import MemoryStore
        config = json.loads(json.dumps(DEFAULT_CONFIG))
        config.update(overrides)
        return cls(MemoryStore(), config)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(_workers())
        return self._pool

    # --------------------------------------------------------------------- refs
    def refs(self) -> dict[str, str]:
        out = {}
        for key, value in self.store.items_prefix(REF):
            name = key[1:].decode()
            out[name] = records.unpack_ref(value, name).hex()
        return out

    def resolve(self, ref: str) -> bytes:
        """Version id of a ref name, a full id, or a unique id prefix (4+ hex digits)."""
        value = self.store.get(REF + ref.encode())
        if value is not None:
            return records.unpack_ref(value, ref)
        hexchars = ref.lower()
        if len(hexchars) >= 4 and all(c in "0123456789abcdef" for c in hexchars):
            prefix = bytes.fromhex(hexchars[: len(hexchars) // 2 * 2])
            matches = [k[1:] for k in self.store.list_prefix(VERSION + prefix)
                       if k[1:].hex().startswith(hexchars)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise BadInput(f"id prefix {ref!r} is ambiguous ({len(matches)} versions)")
        raise NotFound(f"no ref or version {ref!r}")

    def set_ref(self, name: str, version_id: bytes) -> None:
        from .names import check_ref_name
        check_ref_name(name)
        self.version(version_id)  # must exist
        self.store.write([(REF + name.encode(), records.pack_ref(version_id))], sync=True)

    def delete_ref(self, name: str) -> None:
        if not self.store.exists(REF + name.encode()):
            raise NotFound(f"no ref {name!r}")
        self.store.write(deletes=[REF + name.encode()], sync=True)

    # ----------------------------------------------------------------- versions
    def version(self, ref: str | bytes) -> Version:
        vid = ref if isinstance(ref, bytes) else self.resolve(ref)
        value = self.store.get(VERSION + vid)
        if value is None:
            raise NotFound(f"version {vid.hex()[:12]} does not exist")
        manifest = records.unpack_json(value, f"manifest of version {vid.hex()[:12]}")
        if digest(value) != vid:
            raise IntegrityError(f"manifest of version {vid.hex()[:12]} does not match its id")
        return Version(vid, manifest)

    def versions(self) -> list[Version]:
        out = []
        for key, value in self.store.items_prefix(VERSION):
            out.append(Version(key[1:], records.unpack_json(value, f"manifest {key[1:].hex()[:12]}")))
        return sorted(out, key=lambda v: v.time)

    def log(self, ref: str) -> list[Version]:
        """The version named by ``ref`` and its ancestors, newest first."""
        chain, vid, seen = [], self.resolve(ref), set()
        while vid is not None and vid not in seen:
            seen.add(vid)
            v = self.version(vid)
            chain.append(v)
            vid = v.parent
        return chain

    # ------------------------------------------------------------------ archive
    def archive(self, src: str | os.PathLike, name: str, parent: str | None = None,
                message: str = "", format: str | None = None,
                progress: Progress | None = None) -> ArchiveResult:
        """Read ``src`` (safetensors, PyTorch, npz or an HF folder) and archive it as a new version."""
        from . import formats
        snapshot = formats.read(src, format)
        return self.archive_snapshot(snapshot, name, parent=parent, message=message, progress=progress)

    def archive_snapshot(self, snapshot: Snapshot, name: str, parent: str | None = None,
                         message: str = "", progress: Progress | None = None) -> ArchiveResult:
        from .names import check_file_path, check_ref_name, check_tensor_name
        check_ref_name(name)
        for key, t in snapshot.tensors.items():
            check_tensor_name(t.name)
            if key != t.name:
                raise BadInput(f"snapshot lists tensor {t.name!r} under the name {key!r}")
        for p in snapshot.files:
            check_file_path(p)
        if self.store.read_only:
            raise BadInput("repository was opened read-only")
        parent_id = self.resolve(parent) if parent else self._current(name)
        started = time.perf_counter()
        w = _Writer(self, progress)
        entries = [w.add_tensor(t) for t in snapshot.tensors.values()]
        files = [w.add_tensor(Tensor.from_array(p, np.frombuffer(b, np.uint8)))
                 for p, b in snapshot.files.items()]
        manifest = {
            "format": FORMAT_VERSION,
            "name": name,
            "parent": parent_id.hex() if parent_id else None,
            "time": _now(),
            "message": message,
            "source": {"format": snapshot.format, "layout": snapshot.layout,
                       "metadata": snapshot.metadata},
            "tensors": [e.to_json() for e in entries],
            "files": [e.to_json() for e in files],
            "logical_bytes": snapshot.nbytes,
        }
        body, vid = self._new_version_id(manifest)
        w.final.append((VERSION + vid, body))
        w.final.append((REF + name.encode(), records.pack_ref(vid)))
        w.commit()
        return ArchiveResult(
            version_id=vid.hex(), name=name, parent=parent_id.hex() if parent_id else None,
            logical_bytes=snapshot.nbytes, physical_added=w.physical_added,
            tensors=len(entries) + len(files), tensors_reused=w.tensors_reused,
            chunks_written=w.chunks_written, chunks_reused=w.chunks_reused,
            seconds=time.perf_counter() - started)

    def _new_version_id(self, manifest: dict) -> tuple[bytes, bytes]:
        """Serialise a manifest and name it by its digest; on a digest collision
        with a different stored manifest, salt it until the id is free."""
        for salt in range(256):
            if salt:
                manifest["salt"] = salt
            body = records.pack_json(manifest)
            vid = digest(body)
            existing = self.store.get(VERSION + vid)
            if existing is None or existing == body:
                return body, vid
        raise IntegrityError("too many version id collisions")

    def _current(self, name: str) -> bytes | None:
        value = self.store.get(REF + name.encode())
        return records.unpack_ref(value, name) if value is not None else None

    # ----------------------------------------------------------------- retrieve
    def retrieve(self, ref: str | bytes, names: Iterable[str] | None = None,
                 files: bool = True, progress: Progress | None = None) -> Snapshot:
        """The snapshot of a version (only ``names`` if given), every byte verified."""
        v = self.version(ref)
        entries = v.tensors
        if names is not None:
            wanted = list(names)
            by_name = {e.name: e for e in entries}
            missing = [n for n in wanted if n not in by_name]
            if missing:
                raise NotFound(f"version {v.short} has no tensor {missing[0]!r}")
            entries = [by_name[n] for n in wanted]
        src = v.manifest["source"]
        snap = Snapshot(metadata=dict(src.get("metadata", {})), format=src["format"],
                        layout=src.get("layout", {}))
        # Tensors decode in parallel (zstd, the Numba merge and hashing release
        # the GIL); a lone big tensor parallelises over its chunks instead.
        if len(entries) > 1:
            def read(e: TensorEntry) -> np.ndarray:
                data = self.read_entry(e, parallel=False)
                if progress:
                    progress(e.nbytes)
                return data
            datas = list(self.pool.map(read, entries))
        else:
            datas = [self.read_entry(e) for e in entries]
            if progress and entries:
                progress(entries[0].nbytes)
        for e, data in zip(entries, datas):
            snap.add(Tensor(e.name, e.dtype, e.shape, data))
        if files and names is None:
            for f in v.files:
                snap.files[f.name] = self.read_entry(f).tobytes()
        return snap

    def read_entry(self, entry: TensorEntry, parallel: bool = True) -> np.ndarray:
        """One tensor's data, checked against its content address.

        The whole-tensor digest checks every byte end to end, so chunks are
        not hashed one by one on this path (one pass less over the data);
        only when the tensor fails is it decoded again chunk by chunk, to
        name the damaged chunk.
        """
        rec = self._tensor_record(entry.object)
        if rec["dtype"] != entry.dtype or tuple(rec["shape"]) != entry.shape:
            raise IntegrityError(f"tensor {entry.name!r}: record does not match the manifest")
        data = self._decode_tensor(rec, parallel, verify_chunks=False)
        if _tensor_digest(entry.dtype, entry.shape, data) != records.address_digest(entry.object):
            self._decode_tensor(rec, parallel, verify_chunks=True)  # raises, naming the chunk
            raise IntegrityError(f"tensor {entry.name!r} does not match its content address")
        return data

    def _tensor_record(self, addr: bytes) -> dict:
        value = self.store.get(TENSOR + addr)
        if value is None:
            raise IntegrityError(f"tensor record {addr.hex()[:16]} is missing")
        return records.unpack_json(value, f"tensor record {addr.hex()[:16]}")

    def _decode_tensor(self, rec: dict, parallel: bool = True, verify_chunks: bool = True) -> np.ndarray:
        """Decode a tensor record into its array.

        Every plane is cut at the same offsets, so row j of the tensor is the
        j-th chunk of each plane: rows are decoded and merged independently
        (in parallel), straight from the decoded chunks into the output.
        ``parallel`` must be False when called from a pool thread (the pool
        would wait on itself).
        """
        dt = dtypes.get(rec["dtype"])
        shape = tuple(rec["shape"])
        n = int(np.prod(shape, dtype=np.int64))
        layout = rec["layout"]
        addrs = [[bytes.fromhex(h) for h in plane] for plane in rec["chunks"]]
        if len(addrs) != dt.itemsize:
            raise IntegrityError("tensor record has the wrong number of planes")
        lengths = [[records.address_length(a) for a in plane] for plane in addrs]
        if any(sum(ls) != n for ls in lengths) or any(ls != lengths[0] for ls in lengths):
            raise IntegrityError("tensor record's chunks do not cover the tensor row by row")
        values = self.store.get_many([CHUNK + a for plane in addrs for a in plane])
        per_plane = len(addrs[0])
        offsets = np.concatenate([[0], np.cumsum(lengths[0])]).astype(np.int64)
        out = np.empty(n, dt.bits_dtype)

        def row(j: int) -> None:
            pieces = []
            for p in range(dt.itemsize):
                addr, value = addrs[p][j], values[p * per_plane + j]
                if value is None:
                    raise IntegrityError(f"chunk {addr.hex()[:16]} is missing")
                data = codecs.decode_chunk(value, lengths[p][j])
                if verify_chunks:
                    records.check_address(data, addr, "chunk")
                pieces.append(np.frombuffer(data, np.uint8))
            planes.merge(pieces, dt, layout, out[offsets[j]:offsets[j + 1]])

        if parallel and per_plane > 1 and n * dt.itemsize >= (4 << 20):
            list(self.pool.map(row, range(per_plane)))
        else:
            for j in range(per_plane):
                row(j)
        return out.view(dt.np_dtype).reshape(shape)

    def read_planes(self, entry: TensorEntry, k: int) -> tuple[np.ndarray, str]:
        """The top ``k`` byte planes of a tensor (reads only their chunks) and its layout."""
        rec = self._tensor_record(entry.object)
        n = int(np.prod(entry.shape, dtype=np.int64))
        chunk_lists = rec["chunks"][:k]
        out = np.empty((len(chunk_lists), n), np.uint8)
        keys = [bytes.fromhex(h) for plane in chunk_lists for h in plane]
        values = self.store.get_many([CHUNK + a for a in keys])
        it = iter(zip(keys, values))
        for p, plane in enumerate(chunk_lists):
            off = 0
            for _ in plane:
                addr, value = next(it)
                if value is None:
                    raise IntegrityError(f"chunk {addr.hex()[:16]} is missing")
                length = records.address_length(addr)
                data = codecs.decode_chunk(value, length)
                records.check_address(data, addr, "chunk")
                out[p, off:off + length] = np.frombuffer(data, np.uint8)
                off += length
            if off != n:
                raise IntegrityError("tensor record's chunks do not cover the tensor")
        return out, rec["layout"]

    # ------------------------------------------------------------------- verify
    def verify(self, progress: Progress | None = None) -> VerifyReport:
        """Re-hash every chunk, check every record, and report damaged versions by name."""
        rep = VerifyReport()
        bad_chunks: set[bytes] = set()
        for key, value in self.store.items_prefix(CHUNK):
            addr = key[1:]
            rep.chunks += 1
            try:
                data = codecs.decode_chunk(value, records.address_length(addr))
                records.check_address(data, addr, "chunk")
                rep.bytes_checked += len(data)
            except IntegrityError as exc:
                bad_chunks.add(addr)
                rep.errors.append(str(exc))
            if progress:
                progress(records.address_length(addr))
        bad_tensors: set[bytes] = set()
        for key, value in self.store.items_prefix(TENSOR):
            addr = key[1:]
            rep.tensors += 1
            try:
                rec = records.unpack_json(value, f"tensor record {addr.hex()[:16]}")
                for plane in rec["chunks"]:
                    for h in plane:
                        a = bytes.fromhex(h)
                        if a in bad_chunks or not self.store.exists(CHUNK + a):
                            raise IntegrityError(f"tensor record {addr.hex()[:16]} names a missing or damaged chunk")
            except (IntegrityError, KeyError, TypeError, ValueError) as exc:
                bad_tensors.add(addr)
                rep.errors.append(str(exc))
        refs_of: dict[bytes, list[str]] = {}
        for key, value in self.store.items_prefix(REF):
            try:
                refs_of.setdefault(records.unpack_ref(value, ""), []).append(key[1:].decode(errors="replace"))
            except IntegrityError:
                pass  # reported below
        for key, value in self.store.items_prefix(VERSION):
            vid = key[1:]
            rep.versions += 1
            # Name a version by the refs that point at it: a damaged manifest cannot name itself.
            label = "/".join(sorted(refs_of.get(vid, []))) + f"@{vid.hex()[:12]}"
            try:
                manifest = records.unpack_json(value, f"manifest {label}")
                if not refs_of.get(vid):
                    label = f"{manifest.get('name', '?')}@{vid.hex()[:12]}"
                if digest(value) != vid:
                    raise IntegrityError(f"manifest {label} does not match its id")
                for e in Version(vid, manifest).tensors + Version(vid, manifest).files:
                    if e.object in bad_tensors or not self.store.exists(TENSOR + e.object):
                        raise IntegrityError(f"version {label}: tensor {e.name!r} is missing or damaged")
                parent = manifest.get("parent")
                if parent and not self.store.exists(VERSION + bytes.fromhex(parent)):
                    raise IntegrityError(f"version {label}: parent {parent[:12]} is missing")
            except (IntegrityError, KeyError, TypeError, ValueError) as exc:
                rep.damaged_versions.append(label)
                rep.errors.append(str(exc))
        for key, value in self.store.items_prefix(REF):
            name = key[1:].decode(errors="replace")
            try:
                vid = records.unpack_ref(value, name)
                if not self.store.exists(VERSION + vid):
                    raise IntegrityError(f"ref {name!r} points to a missing version")
            except IntegrityError as exc:
                rep.damaged_refs.append(name)
                rep.errors.append(str(exc))
        return rep

    # ----------------------------------------------------------------------- gc
    def gc(self, force: bool = False) -> GcReport:
        """Remove chunks and tensor records no version references (dry run unless ``force``).

        Every version is a root: gc never removes anything a version names,
        only what interrupted archives left behind.
        """
        live_tensors: set[bytes] = set()
        for v in self.versions():
            live_tensors.update(e.object for e in v.tensors + v.files)
        live_chunks: set[bytes] = set()
        dead: list[bytes] = []
        rep = GcReport(dry_run=not force)
        for key, value in self.store.items_prefix(TENSOR):
            if key[1:] in live_tensors:
                rec = records.unpack_json(value, f"tensor record {key[1:].hex()[:16]}")
                live_chunks.update(bytes.fromhex(h) for plane in rec["chunks"] for h in plane)
            else:
                dead.append(key)
                rep.tensors += 1
                rep.bytes += len(key) + len(value)
        for key, value in self.store.items_prefix(CHUNK):
            if key[1:] not in live_chunks:
                dead.append(key)
                rep.chunks += 1
                rep.bytes += len(key) + len(value)
        if force and dead:
            for i in range(0, len(dead), 10_000):
                self.store.write(deletes=dead[i:i + 10_000], sync=True)
        return rep

    # -------------------------------------------------------------------- stats
    def physical_bytes(self) -> int:
        """Bytes of every stored key and value (what the data costs, before store overhead)."""
        return sum(len(k) + len(v) for prefix in (CHUNK, TENSOR, VERSION, REF)
                   for k, v in self.store.items_prefix(prefix))

    def stats(self) -> dict:
        counts = {}
        for label, prefix in (("chunks", CHUNK), ("tensors", TENSOR), ("versions", VERSION), ("refs", REF)):
            n = b = 0
            for k, v in self.store.items_prefix(prefix):
                n += 1
                b += len(k) + len(v)
            counts[label] = {"count": n, "bytes": b}
        logical = sum(v.logical_bytes for v in self.versions())
        physical = sum(c["bytes"] for c in counts.values())
        return {"objects": counts, "logical_bytes": logical, "physical_bytes": physical,
                "ratio": round(logical / physical, 4) if physical else None,
                "disk_bytes": self.store.size_on_disk()}


def _is_repo_dir(path: Path) -> bool:
    # config.json alone is not enough: model folders have one too.
    return (path / "config.json").is_file() and (path / "db").is_dir()


def read_config(root: Path) -> dict:
    try:
        config = json.loads((root / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise NotARepository(f"cannot read {root / 'config.json'}: {exc}") from None
    version = config.get("format_version") if isinstance(config, dict) else None
    if version != FORMAT_VERSION:
        raise UnsupportedFormat(
            f"repository format version {version!r} is not supported by this pas "
            f"(supports {FORMAT_VERSION}); upgrade pas")
    return config


def _tensor_digest(dtype: str, shape: tuple[int, ...], data: np.ndarray) -> bytes:
    header = f"{dtype}|{','.join(map(str, shape))}|".encode()
    return digest_parts(header, memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8)))


class _Writer:
    """Collects the objects of one archive and writes them in the safe order."""

    def __init__(self, repo: Repository, progress: Progress | None):
        self.repo = repo
        self.store = repo.store
        self.progress = progress
        self.pending: dict[bytes, bytes] = {}   # chunk key -> framed value, not yet written
        self.pending_bytes = 0
        self.final: list[tuple[bytes, bytes]] = []
        self.final_keys: set[bytes] = set()
        self.physical_added = 0
        self.tensors_reused = self.chunks_written = self.chunks_reused = 0

    # -- tensors
    def add_tensor(self, t: Tensor) -> TensorEntry:
        dt = dtypes.get(t.dtype)
        data = dtypes.as_le_contiguous(t.data)
        if tuple(data.shape) != tuple(t.shape) or data.dtype.itemsize != dt.itemsize:
            raise BadInput(f"tensor {t.name!r}: data does not match its dtype/shape")
        tdigest = _tensor_digest(t.dtype, t.shape, data)
        addr = records.address(tdigest, data.nbytes)
        for variant in range(256):
            addr = records.with_variant(addr, variant)
            key = TENSOR + addr
            if key in self.final_keys:
                if self._same_pending_tensor(key, data):
                    break
                continue
            value = self.store.get(key)
            if value is None:
                self._store_tensor(addr, dt, t.shape, data)
                break
            if self._same_stored_tensor(value, data):
                self.tensors_reused += 1
                break
        else:
            raise IntegrityError("too many digest collisions")
        if self.progress:
            self.progress(data.nbytes)
        return TensorEntry(t.name, t.dtype, tuple(t.shape), int(data.nbytes), addr)

    def _same_stored_tensor(self, value: bytes, data: np.ndarray) -> bool:
        # Confirm a dedup hit: decode what is stored and compare bytes.
        try:
            stored = self.repo._decode_tensor(records.unpack_json(value, "tensor record"))
        except IntegrityError:
            return False
        return stored.tobytes() == data.tobytes()

    def _same_pending_tensor(self, key: bytes, data: np.ndarray) -> bool:
        value = dict(self.final)[key]
        rec = records.unpack_json(value, "tensor record")
        dt = dtypes.get(rec["dtype"])
        n = int(np.prod(rec["shape"], dtype=np.int64))
        buf = np.empty((dt.itemsize, n), np.uint8)
        for p, plane in enumerate(rec["chunks"]):
            off = 0
            for h in plane:
                a = bytes.fromhex(h)
                length = records.address_length(a)
                value = self.pending.get(CHUNK + a) or self.store.get(CHUNK + a)
                buf[p, off:off + length] = np.frombuffer(codecs.decode_chunk(value, length), np.uint8)
                off += length
        return planes.merge(buf, dt, rec["layout"]).tobytes() == data.tobytes()

    def _store_tensor(self, addr: bytes, dt: dtypes.DType, shape, data: np.ndarray) -> None:
        layout = choose_layout(data, dt, self.repo.compressor)
        plane_buf = planes.split(data, dt, layout)
        chunk_lists = [self._add_stream(plane_buf[p]) for p in range(plane_buf.shape[0])]
        rec = {"dtype": dt.name, "shape": list(shape), "layout": layout, "chunks": chunk_lists}
        value = records.pack_json(rec)
        key = TENSOR + addr
        self.final.append((key, value))
        self.final_keys.add(key)
        self.physical_added += len(key) + len(value)

    # -- chunks
    def _add_stream(self, stream: np.ndarray) -> list[str]:
        cuts = self.repo.chunker.cuts(stream.size)
        pieces = [stream[off:off + n] for off, n in cuts]
        addrs = []
        new: dict[bytes, int] = {}   # key of a piece first seen in this stream -> its index
        for i, piece in enumerate(pieces):
            addr, is_new = self._resolve_chunk(records.address(digest(memoryview(piece)), piece.size),
                                               piece, new, pieces)
            addrs.append(addr)
            if is_new:
                new[CHUNK + addr] = i
            else:
                self.chunks_reused += 1
        compressor = self.repo.compressor
        todo = list(new.items())
        if len(todo) > 1:
            values = list(self.repo.pool.map(lambda kv: codecs.encode_chunk(pieces[kv[1]], compressor), todo))
        else:
            values = [codecs.encode_chunk(pieces[i], compressor) for _, i in todo]
        for (key, _), value in zip(todo, values):
            self.pending[key] = value
            self.pending_bytes += len(value)
            self.physical_added += len(key) + len(value)
            self.chunks_written += 1
        if self.pending_bytes >= BATCH_BYTES:
            self.flush()
        return [a.hex() for a in addrs]

    def _resolve_chunk(self, addr: bytes, piece: np.ndarray, new: dict[bytes, int],
                       pieces: list[np.ndarray]) -> tuple[bytes, bool]:
        """The address this piece is stored under, and whether it still has to be written.

        A digest match is confirmed by comparing bytes: against pieces of this
        stream not yet encoded, pending chunks, then the store.
        """
        raw = piece.tobytes()
        for variant in range(256):
            addr = records.with_variant(addr, variant)
            key = CHUNK + addr
            if key in new:
                if pieces[new[key]].tobytes() == raw:
                    return addr, False
                continue
            value = self.pending.get(key)
            if value is None:
                value = self.store.get(key)
            if value is None:
                return addr, True
            try:
                if bytes(codecs.decode_chunk(value, len(raw))) == raw:
                    return addr, False
            except IntegrityError:
                pass  # a damaged stored chunk is not a match; keep looking
        raise IntegrityError("too many digest collisions")

    def flush(self) -> None:
        if self.pending:
            self.store.put_many(self.pending.items())
            self.pending.clear()
            self.pending_bytes = 0

    def commit(self) -> None:
        self.flush()
        self.store.flush()  # chunks durable before the records that name them
        self.store.write(self.final, sync=True)
        self.physical_added += sum(len(k) + len(v) for k, v in self.final
                                   if k[:1] in (VERSION, REF))


def choose_layout(data: np.ndarray, dt: dtypes.DType, compressor: codecs.Codec) -> str:
    """Pick the plane layout that compresses a sample of this tensor best."""
    if not dt.is_float or dt.itemsize < 2 or data.size < 4096:
        return "planes"
    flat = data.reshape(-1)
    sample = flat[:: max(1, flat.size // LAYOUT_SAMPLE)]
    sizes = {}
    for layout in planes.LAYOUTS:
        p = planes.split(sample, dt, layout)
        sizes[layout] = sum(len(compressor.encode(p[i].tobytes())) for i in range(min(2, dt.itemsize)))
    return min(sizes, key=sizes.get)
