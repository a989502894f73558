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
import warnings
from collections import Counter
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
from .hashing import digest
from .journal import FILE_NAME as JOURNAL_FILE, Journal, JournalWarning
from .records import CHUNK, REF, TENSOR, VERSION, TensorEntry, Version
from .snapshot import Snapshot, Tensor
from . import reader as reader_mod
from .reader import TensorReader, parse_record
from .stores.base import Store
from .writer import DEFAULT_MEMORY_LIMIT, BaseIndex, VersionWriter
from .delta.select import MIN_SAVING

FORMAT_VERSION = 1
REPO_DIR = ".pas"
DEFAULT_CONFIG = {
    "format_version": FORMAT_VERSION,
    "hash": "xxh3-128",
    "chunker": {"id": "fixed", "size": 1 << 20},
    # Side files (tokenizers, configs) are cut by content, so an edit shares the rest.
    "file_chunker": {"id": "cdc", "min": 16 << 10, "avg": 64 << 10, "max": 256 << 10},
    "codec": {"id": "zstd", "level": 1},
    # Plane layouts the writer may choose per tensor. Without "planes-exp" the
    # first plane always holds the sign (what 1-byte progressive reads need),
    # at a small cost in size.
    "layouts": ["planes", "planes-exp"],
    # Delta chains: at most max_depth deltas are applied to rebuild any tensor.
    "delta": {"max_depth": 4, "ops": ["xor", "sub"]},
}

Progress = Callable[[int], None]  # called with the number of logical bytes just processed


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


#: Tensors at least this big are decoded on the pool; smaller ones on the
#: calling thread. Decoding runs at about 1 GB/s, so a 256 KiB tensor is a
#: quarter-millisecond task, and handing it to a worker (a wake-up, the GIL
#: passed back and forth) costs as much: on the 2-CPU VM, 16 tensors of 256
#: KiB retrieved 1.4 x faster on the calling thread alone, 16 of 512 KiB
#: about as fast, 8 of 1 MiB 1.2 x slower (bench/reports/2026-11-28-session12).
#: Encoding costs several times more per byte, so the writer's threshold
#: (`writer.PARALLEL_MIN_BYTES`) is lower.
DECODE_PARALLEL_MIN_BYTES = 512 << 10


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
    message: str = ""
    encodings: dict = field(default_factory=dict)   # "whole" / "xor" / "sub" -> tensors
    delta_source: str | None = None                 # version deltas were taken from, if not the parent
    lossy: dict | None = None                       # the manifest's lossy summary (pas.quantize), if any

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
        self.file_chunker = get_chunker(config.get("file_chunker", DEFAULT_CONFIG["file_chunker"]))
        self.compressor = codecs.get_codec(config["codec"])
        self._pool: ThreadPoolExecutor | None = None
        self.reader = TensorReader(store, lambda: self.pool)
        #: Bytes archiving may hold for data (slabs, batches, cached bases; `MemoryBudget`).
        self.memory_limit = parse_size(os.environ["PAS_MEMORY_LIMIT"]) if os.environ.get("PAS_MEMORY_LIMIT") \
            else DEFAULT_MEMORY_LIMIT
        #: Copies of the tensors of the version last archived through this object
        #: (content address -> words), up to a quarter of the memory limit: the
        #: next version of a lineage deltas against them without decoding them
        #: back from the store (most of an archive's time otherwise). Checked
        #: against their address before use; `forget_bases` frees them.
        self.recent_bases: dict[bytes, np.ndarray] = {}

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
             codec: dict | None = None, layouts: list[str] | None = None,
             storage_options: dict | None = None) -> "Repository":
        """Create a repository at ``path`` (its data lives in ``path/.pas``; an
        ``s3://bucket/prefix`` URL: in that bucket) and open it for writing."""
        root = None if is_url(path) else Path(path) / REPO_DIR
        if root is not None and (root / "config.json").exists():
            raise BadInput(f"a pas repository already exists at {path}")
        config = json.loads(json.dumps(DEFAULT_CONFIG))
        config["repo_id"] = uuid.uuid4().hex
        if chunk_size:
            config["chunker"]["size"] = int(chunk_size)
        if codec:
            codecs.get_codec(codec)  # validate before anything is written
            config["codec"] = codec
        if layouts:
            unknown = [x for x in layouts if x not in planes.LAYOUTS] + ([] if "planes" in layouts else ["(planes is required)"])
            if unknown:
                raise BadInput(f"unknown or missing plane layouts: {unknown} (known: {list(planes.LAYOUTS)})")
            config["layouts"] = list(layouts)
        if root is None:
            return cls._init_url(str(path), config, storage_options)
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
    def _init_url(cls, url: str, config: dict, storage_options: dict | None) -> "Repository":
        # An object store: the config is an object beside the data, created
        # only if absent (two inits of one prefix: the second is refused).
        from .stores.s3 import open_store
        store = open_store(url, storage_options)
        if not store.create_object("config.json", json.dumps(config, indent=2, sort_keys=True).encode()):
            store.close()
            raise BadInput(f"a pas repository already exists at {url}")
        return cls(store, config, None)

    @classmethod
    def open(cls, path: str | os.PathLike | None = None, write: bool = False,
             storage_options: dict | None = None) -> "Repository":
        if path is None:
            path = os.environ.get("PAS_REPO") or None
        if path is not None and is_url(path):
            # No journal for these (root None): it is a local file beside a local store.
            from .stores.s3 import open_store
            store = open_store(str(path), storage_options, read_only=not write)
            try:
                data = store.get_object("config.json")
                if data is None:
                    raise NotARepository(f"no pas repository at {path} (run `pas init {path}`)")
                config = check_config(json.loads(data))
            except ValueError as exc:
                store.close()
                raise NotARepository(f"cannot read {path}/config.json: {exc}") from None
            except BaseException:
                store.close()
                raise
            return cls(store, config, None)
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
        self.forget_bases()
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
        """Version id of a ref name, a full id, or a unique id prefix (4+ hex digits);
        ``REF~N`` is its N-th ancestor along parents (``~`` alone: ``~1``), as in git."""
        base, tilde, back = ref.partition("~")
        if tilde:   # '~' is in no ref name (names.check_ref_name) nor id
            if back and not back.isdigit():
                raise BadInput(f"{ref!r}: after '~' comes a number of generations")
            vid = self.resolve(base)
            for i in range(int(back or 1)):
                parent = self.version(vid).parent
                if parent is None:
                    raise NotFound(f"{ref!r}: {base} has only {i} ancestor{'s' if i != 1 else ''}")
                vid = parent
            return vid
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
                progress: Progress | None = None, scheme=None, keep_exact=()) -> ArchiveResult:
        """Read ``src`` (safetensors, PyTorch, npz or an HF folder) and archive it as a new version.
        ``scheme``/``keep_exact``: opt-in lossy storage, see `archive_snapshot`."""
        from . import formats
        spec = _scheme_spec(scheme, keep_exact)   # a bad scheme name fails before the source is read
        snapshot = formats.read(src, format)
        return self.archive_snapshot(snapshot, name, parent=parent, message=message, progress=progress,
                                     scheme=spec)

    def archive_snapshot(self, snapshot: Snapshot, name: str, parent: str | None = None,
                         message: str = "", progress: Progress | None = None,
                         keep_bases: bool = False, scheme=None, keep_exact=()) -> ArchiveResult:
        """Archive ``snapshot`` as a new version and move ref ``name`` to it.

        ``scheme`` (a name like ``"quant-kmeans:4"``, ``"GLOB=SCHEME"`` rules, a
        list of them, or a `pas.quantize.SchemeSpec`) stores the float tensors it
        chooses lossy, ``keep_exact`` globs keep tensors exact (pas/quantize): the
        version is then marked lossy and records each tensor's scheme and error.

        ``keep_bases`` keeps this version's tensors (the snapshot's own arrays)
        in the reader's cache for the next call (archive_series). Otherwise
        copies of them, up to a quarter of the memory limit, are kept in
        `recent_bases` for the next archive through this object.
        """
        spec = _scheme_spec(scheme, keep_exact)
        lossy = None
        if spec is not None:
            from . import quantize
            lossy = quantize.apply(snapshot, spec)
            snapshot = lossy.snapshot     # what is stored: lossy tensors as their representation
        try:
            with planes.workload(sum(t.data.size for t in snapshot.tensors.values())):
                result = self._archive_snapshot(snapshot, name, parent, message, progress, lossy)
        finally:
            if not keep_bases:
                self.reader.clear_cache()
        if not keep_bases:   # after the cache is cleared: it may hold the buffers about to be reused
            self._keep_recent_bases(snapshot, result.version_id)
        return result

    def forget_bases(self) -> None:
        """Free the copies kept of the last archived version (`recent_bases`)."""
        self.recent_bases = {}

    def _keep_recent_bases(self, snapshot: Snapshot, version_id: str) -> None:
        # Copies, not the snapshot's arrays: a training loop updates its
        # weights in place, and a checkpoint file may be overwritten.
        # The last version's copies are reused as buffers (same dtype and size):
        # writing into warm memory is several times faster than into fresh pages.
        spare: dict[tuple, list[np.ndarray]] = {}
        for old in self.recent_bases.values():
            spare.setdefault((old.dtype.str, old.shape), []).append(old)
        self.recent_bases = {}
        budget = self.memory_limit // 4
        kept: dict[bytes, np.ndarray] = {}
        for e in self.version(version_id).tensors:
            t = snapshot.tensors.get(e.name)
            if t is None or e.nbytes > budget or e.nbytes < MIN_SAVING or e.object in kept:
                continue   # a tensor too small to be stored as a delta is never a base
            # (small bases too: decoding one from the store, a record, a frame per
            # plane and a digest check, cost ~14% of archiving a small model's versions)
            words = dtypes.as_le_contiguous(t.data).reshape(-1).view(dtypes.get(e.dtype).bits_dtype)
            reuse = spare.get((words.dtype.str, words.shape))
            copy = reuse.pop() if reuse else np.empty_like(words)
            np.copyto(copy, words)
            kept[e.object] = copy
            budget -= e.nbytes
        self.recent_bases = kept

    def recent_base(self, e: TensorEntry) -> np.ndarray | None:
        """The kept copy of tensor ``e``'s words, if it was archived last through
        this object and still matches its address (else None: decode it)."""
        words = self.recent_bases.get(e.object)
        if words is None or not records.tensor_matches(e.object, e.dtype, e.shape, words):
            return None
        return words

    def _archive_snapshot(self, snapshot: Snapshot, name: str, parent: str | None,
                          message: str, progress: Progress | None, lossy=None) -> ArchiveResult:
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
        # Delta bases: the parent's tensors; with no parent, the most similar
        # stored version (a fine-tune archived without its lineage).
        base_version = self.version(parent_id) if parent_id else self.find_similar(snapshot)
        bases = BaseIndex(self, base_version) if base_version is not None else None
        w = VersionWriter(self, progress, bases, workers=_workers())
        lossy_info = lossy.entries if lossy is not None else {}
        if lossy_info:
            # Lossy representations are addressed apart from exact data (format.md §2).
            exact = w.add_tensors([t for t in snapshot.tensors.values() if t.name not in lossy_info])
            approx = w.add_tensors([t for t in snapshot.tensors.values() if t.name in lossy_info], lossy=True)
            by_name = {e.name: e for e in exact}
            by_name.update({e.name: TensorEntry(e.name, e.dtype, e.shape, e.nbytes, e.object, lossy_info[e.name])
                            for e in approx})
            entries = [by_name[t.name] for t in snapshot.tensors.values()]
        else:
            entries = w.add_tensors(snapshot.tensors.values())
        logical = lossy.logical_bytes if lossy is not None else snapshot.nbytes
        w.bases = None  # side files are stored whole (deduplicated by content)
        files = w.add_tensors([Tensor.from_array(p, np.frombuffer(b, np.uint8)) for p, b in snapshot.files.items()],
                              side_file=True)
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
            "logical_bytes": logical,
        }
        if base_version is not None and base_version.id != parent_id:
            manifest["delta_source"] = base_version.hex
        if lossy is not None and lossy.summary is not None:
            manifest["lossy"] = lossy.summary
        body, vid = self._new_version_id(manifest)
        w.commit(VERSION + vid, body, name)
        if self.root is not None:
            try:
                Journal(self.root / JOURNAL_FILE).append(vid, name)
            except OSError as exc:
                # The version is saved: failing now would have the user archive it twice.
                warnings.warn(f"version {vid.hex()[:12]} is saved, but the journal could not record it "
                              f"({exc}); verify cannot cross-check it", JournalWarning, stacklevel=2)
        return ArchiveResult(
            version_id=vid.hex(), name=name, parent=parent_id.hex() if parent_id else None,
            logical_bytes=logical, physical_added=w.physical_added,
            tensors=len(entries) + len(files), tensors_reused=w.tensors_reused,
            chunks_written=w.chunks_written, chunks_reused=w.chunks_reused,
            seconds=time.perf_counter() - started, message=message, encodings=dict(w.deltas),
            delta_source=manifest.get("delta_source"), lossy=manifest.get("lossy"))

    def archive_series(self, sources: list, name: str, parent: str | None = None,
                       message: str = "", format: str | None = None,
                       progress: Progress | None = None, scheme=None, keep_exact=()) -> list[ArchiveResult]:
        """Archive files in order as a chain of versions (a training run's checkpoints).

        Each version's parent is the one before; ref ``name`` ends on the last.
        The previous snapshot's tensors stay decoded in memory as delta bases.
        """
        from . import formats
        spec = _scheme_spec(scheme, keep_exact)
        results = []
        try:
            for i, src in enumerate(sources):
                snap = formats.read(src, format)
                msg = message if len(sources) == 1 else (message + " " if message else "") + Path(src).name
                results.append(self.archive_snapshot(snap, name, parent=parent if i == 0 else None,
                                                     message=msg, progress=progress, keep_bases=True,
                                                     scheme=spec))
        finally:
            self.reader.clear_cache()
        return results

    def find_similar(self, snapshot: Snapshot, max_versions: int = 64) -> Version | None:
        """The stored version most like ``snapshot`` by sampled bitwise similarity, if any is alike.

        Candidates are the versions refs point at (newest first); each is
        scored on up to four of its largest tensors that ``snapshot`` has
        under the same name, dtype and row shape, reading only their first rows.
        """
        from .delta.select import similarity
        heads: list[bytes] = []
        for vid in self.refs().values():
            if bytes.fromhex(vid) not in heads:
                heads.append(bytes.fromhex(vid))
        best, best_score = None, 0.5   # below this, a delta would not pay
        for vid in heads[:max_versions]:
            try:
                v = self.version(vid)
            except (IntegrityError, NotFound):
                continue
            common = [e for e in v.tensors if e.name in snapshot.tensors
                      and snapshot.tensors[e.name].dtype == e.dtype and e.shape
                      and snapshot.tensors[e.name].shape[1:] == e.shape[1:]]
            common = sorted(common, key=lambda e: -e.nbytes)[:4]
            if not common:
                continue
            scores = []
            for e in common:
                dt = dtypes.get(e.dtype)
                mine = dtypes.as_le_contiguous(snapshot.tensors[e.name].data).reshape(-1).view(dt.bits_dtype)
                head = self.reader.range_words(e.object, 0, min(1 << 14, mine.shape[0]))
                scores.append(similarity(mine[:head.shape[0]], head, dt))
            score = float(np.mean(scores))
            if score > best_score:
                best, best_score = v, score
        return best

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
                 files: bool = True, progress: Progress | None = None,
                 top_bytes: int | None = None) -> Snapshot:
        """The snapshot of a version (only ``names`` if given), every byte verified.

        With ``top_bytes`` K, every tensor of more than K bytes per element is
        rebuilt from its top K planes only (see `read_approx`): lossy, and
        not checked against the content address (the low bytes are not read);
        the snapshot's metadata then records ``pas.approx_bytes``.
        """
        try:
            return self._retrieve(self.version(ref), names, files, progress, top_bytes)
        finally:
            self.reader.clear_cache()  # decoded bases are shared within one retrieve only

    def retrieve_many(self, refs: Iterable[str | bytes | Version], files: bool = True,
                      progress: Progress | None = None) -> Iterator[tuple[Version, Snapshot]]:
        """Several versions, each verified as `retrieve` verifies one, with every
        stored delta decoded once.

        Retrieved one by one, a version whose tensors are deltas rebuilds
        each tensor's whole chain down to a keyframe, so a lineage costs the
        sum of its chain depths. Here a decoded tensor that a later version's
        chain passes through is kept until that version has been read, and the
        later version applies only its own level. Versions are yielded, with
        their snapshots, in an order where the versions a version's tensors
        delta against come first (the given order where that allows); at most
        the decoded tensors still needed as bases are held, within the base
        cache's bound (`TensorReader`, BASE_CACHE_BYTES). A version named twice
        is yielded once. A `Version` already read may stand for its ref.
        """
        versions = list({v.id: v for v in (r if isinstance(r, Version) else self.version(r) for r in refs)}.values())
        order, uses = self._shared_bases(versions)
        needed = Counter(a for used in uses.values() for a in used)
        try:
            for v in order:
                keep = {e.object for e in v.tensors} & needed.keys()

                def read_keeping(e: TensorEntry, parallel: bool, out: np.ndarray | None = None) -> np.ndarray:
                    data = self.read_tensor(e, parallel=parallel, out=out)
                    if e.object in keep and e.lossy is None:
                        self.reader.remember(e.object, data.reshape(-1).view(dtypes.get(e.dtype).bits_dtype))
                    return data

                snap = self._retrieve(v, None, files, progress, None, read_keeping)
                for a in uses[v.id]:
                    needed[a] -= 1
                    if needed[a] == 0:
                        del needed[a]
                        self.reader.forget(a)
                yield v, snap
        finally:
            self.reader.clear_cache()

    def _shared_bases(self, versions: list[Version]) -> tuple[list[Version], dict[bytes, list[bytes]]]:
        """The order to read ``versions`` in, and for each version the tensors
        of earlier ones in that order where its tensors' delta chains stop
        (each use counted once per tensor)."""
        made_by: dict[bytes, bytes] = {}   # tensor address -> the first version holding it
        chains: dict[bytes, list[list[bytes]]] = {}
        for v in versions:
            self.reader.prefetch([e.object for e in v.tensors])
            chains[v.id] = [[a for a, _ in self.reader.chain(e.object)] for e in v.tensors if e.lossy is None]
            for e in v.tensors:
                made_by.setdefault(e.object, v.id)
        # Only bases order versions: a tensor identical to another version's is
        # shared whichever comes first.
        after = {v.id: {made_by[a] for chain in chains[v.id] for a in chain[1:] if made_by.get(a, v.id) != v.id}
                 for v in versions}
        order: list[Version] = []
        left = list(versions)
        while left:   # bases first; a cycle (possible after repack) is broken in the given order
            done = {u.id for u in order}
            v = next((v for v in left if after[v.id] <= done), left[0])
            left.remove(v)
            order.append(v)
        uses: dict[bytes, list[bytes]] = {}
        seen: set[bytes] = set()
        for v in order:
            stops = (next((a for a in chain if a in seen), None) for chain in chains[v.id])
            uses[v.id] = [a for a in stops if a is not None]
            seen.update(e.object for e in v.tensors)
        return order, uses

    def _retrieve(self, v: Version, names, files, progress, top_bytes,
                  read_tensor: Callable[..., np.ndarray] | None = None) -> Snapshot:
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
        if top_bytes is not None and top_bytes < 1:
            raise BadInput("--bytes must be at least 1")

        def approx(e: TensorEntry, parallel: bool) -> np.ndarray:
            if e.lossy is None and dtypes.get(e.dtype).itemsize > top_bytes:   # lossy: codes read whole
                return self.read_approx(e, top_bytes, parallel=parallel)
            return self.read_tensor(e, parallel=parallel)

        with planes.workload(sum(e.nbytes // dtypes.get(e.dtype).itemsize for e in entries)):
            if top_bytes is not None:
                datas = self._read_entries(entries, progress, approx)
                snap.metadata["pas.approx_bytes"] = str(top_bytes)
            else:
                datas = self._read_entries(entries, progress, read_tensor or self.read_tensor, into=True)
            for e, data in zip(entries, datas):
                snap.add(Tensor(e.name, e.out_dtype, e.shape, data))
            if files and names is None:
                for f in v.files:
                    snap.files[f.name] = self.read_entry(f).tobytes()
        return snap

    def _read_entries(self, entries: list[TensorEntry], progress: Progress | None,
                      read_one: Callable[..., np.ndarray], into: bool = False) -> list[np.ndarray]:
        """Decode many tensors: big ones on the pool (zstd, the Numba merge and
        hashing release the GIL), small ones here with their records read in
        one batch, where a thread hand-off would cost more than the work.

        ``into``: ``read_one(entry, parallel, out=...)`` decodes a big tensor's
        stored words into a buffer allocated here, on the calling thread. A
        buffer allocated on a pool thread comes from glibc's arena of that
        thread, whose heaps are unmapped as soon as they are empty, so every
        retrieve would fault its pages in afresh (measured: 60,000 faults a
        lineage retrieve, where the calling thread's heap keeps its pages
        under a retaining allocator setting)."""
        out: list = [None] * len(entries)

        def read(indexes: list[int], parallel: bool, buf: np.ndarray | None = None) -> None:
            for i in indexes:
                out[i] = read_one(entries[i], parallel) if buf is None else read_one(entries[i], parallel, out=buf)
                if progress:
                    progress(entries[i].nbytes)

        big = [i for i, e in enumerate(entries) if e.nbytes >= DECODE_PARALLEL_MIN_BYTES]
        small = [i for i, e in enumerate(entries) if e.nbytes < DECODE_PARALLEL_MIN_BYTES]
        if len(entries) < 2:
            read(big + small, parallel=True)
            return out
        # Big tensors one per task on the pool, each reading its own record;
        # small ones here meanwhile, their records in one batch (on the pool
        # they only contend for the GIL: measured slower).
        futures = [self.pool.submit(read, [i], False, self._words_buffer(entries[i]) if into else None)
                   for i in big]
        self.reader.prefetch([entries[i].object for i in small])
        read(small, parallel=False)
        for f in futures:
            f.result()
        return out

    @staticmethod
    def _words_buffer(entry: TensorEntry) -> np.ndarray:
        """An uninitialised flat buffer for a tensor's stored words."""
        dt = dtypes.get(entry.dtype)
        return np.empty(entry.nbytes // dt.itemsize, dt.bits_dtype)

    def _checked_layout(self, entry: TensorEntry):
        """The entry's parsed tensor record, which must agree with the manifest on dtype and shape."""
        lay = self.reader.parse(entry.object)
        if lay.dtype.name != entry.dtype or lay.shape != entry.shape:
            raise IntegrityError(f"tensor {entry.name!r}: record does not match the manifest")
        return lay

    def read_entry(self, entry: TensorEntry, parallel: bool = True, out: np.ndarray | None = None) -> np.ndarray:
        """One tensor's data, checked against its content address.

        The whole-tensor digest checks every byte end to end (every chunk and
        every delta base), so chunks are not hashed one by one on this path;
        only when the tensor fails is it decoded again chunk by chunk, to
        name the damaged chunk.
        """
        self._checked_layout(entry)
        words = self.reader.checked_words(entry.object, parallel=parallel, what=f"tensor {entry.name!r}", out=out)
        return words.view(dtypes.get(entry.dtype).np_dtype).reshape(entry.shape)

    def decode_lossy(self, entry: TensorEntry, stored: np.ndarray) -> np.ndarray:
        """A lossy tensor's values (original dtype) from its stored representation
        (``stored``: what `read_entry` or `read_rows` returned for ``entry``)."""
        from .quantize import decode
        try:
            return decode(entry.lossy, stored, entry.dtype, stored.shape)
        except IntegrityError as exc:
            raise IntegrityError(f"tensor {entry.name!r}: {exc}") from None

    def read_tensor(self, entry: TensorEntry, parallel: bool = True, out: np.ndarray | None = None) -> np.ndarray:
        """One tensor as retrieval returns it: `read_entry` (into ``out``, its
        stored words, when given), decoded when the tensor is lossy."""
        data = self.read_entry(entry, parallel=parallel, out=out)
        return data if entry.lossy is None else self.decode_lossy(entry, data)

    def _exact_only(self, entry: TensorEntry, what: str) -> None:
        if entry.lossy is not None:
            raise BadInput(f"tensor {entry.name!r} is stored lossy ({entry.lossy.get('scheme')}): {what} "
                           f"works on exact tensors only; read it whole")

    def read_rows(self, entry: TensorEntry, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of a tensor (along its first axis); reads only the chunks they lie in."""
        if not entry.shape:
            raise BadInput(f"tensor {entry.name!r} is 0-d: it has no rows")
        row = int(np.prod(entry.shape[1:], dtype=np.int64))
        start, stop = max(0, start), min(stop, entry.shape[0])
        stop = max(start, stop)
        dt = dtypes.get(entry.dtype)
        words = self.reader.range_words(entry.object, start * row, stop * row)
        rows = words.view(dt.np_dtype).reshape((stop - start,) + tuple(entry.shape[1:]))
        return rows if entry.lossy is None else self.decode_lossy(entry, rows)   # codes keep the shape

    def read_planes(self, entry: TensorEntry, k: int, parallel: bool = True) -> tuple[np.ndarray, str]:
        """The top ``k`` byte planes of a tensor (reads only their chunks where it can) and its layout."""
        self._exact_only(entry, "a top-byte read")
        self._checked_layout(entry)
        return self.reader.top_planes(entry.object, k, parallel=parallel)

    def read_planes_many(self, entries: list[TensorEntry], k: int) -> list[tuple[np.ndarray, str]]:
        """`read_planes` of many tensors (a version's, for progressive evaluation):
        big ones on the pool, small ones here with their records read in one batch."""
        try:
            return self._read_entries(list(entries), None, lambda e, parallel: self.read_planes(e, k, parallel))
        finally:
            self.reader.clear_cache()

    def planes_stored_bytes(self, entry: TensorEntry, k: int) -> int:
        """Stored bytes a read of the top ``k`` planes of a tensor touches (its
        chunks and inline frames, down its delta chain; `read_planes` reads
        these). ``k`` >= the item size: what a full read touches."""
        self._checked_layout(entry)
        return self.reader.top_stored_bytes(entry.object, k)

    def read_approx(self, entry: TensorEntry, k: int, parallel: bool = True) -> np.ndarray:
        """A tensor rebuilt from its top ``k`` bytes per element (progressive retrieval).

        Reads only the top k planes' chunks (for whole tensors and XOR chains);
        each element's missing low part is set to the middle of its interval
        (`pas.reader.midpoint`). Every chunk read is checked (its frame and
        its address); a tensor that has to be decoded whole is checked whole.
        """
        self._exact_only(entry, "a top-byte read")
        self._checked_layout(entry)
        dt = dtypes.get(entry.dtype)
        return self.reader.approx_words(entry.object, k, parallel=parallel).view(dt.np_dtype).reshape(entry.shape)

    def read_interval(self, entry: TensorEntry, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact [lo, hi] bounds of every element of a float tensor from its top ``k`` bytes."""
        top, layout = self.read_planes(entry, k)
        lo, hi = reader_mod.interval(top, dtypes.get(entry.dtype), layout, top.shape[1])
        return lo.reshape(entry.shape), hi.reshape(entry.shape)

    # ------------------------------------------------------------------- verify
    def verify(self, progress: Progress | None = None) -> VerifyReport:
        """Re-hash every chunk, check every record, and report damaged versions by name."""
        self.reader.clear_cache()   # judge the store as it is now, not as parsed before
        rep = VerifyReport()
        # Judged by what the store lists, not by point lookups: a damaged table
        # index can hide keys from a listing that a lookup still finds (and
        # would never have been checked), so anything named but not listed is damage.
        bad_chunks: set[bytes] = set()
        listed_chunks: set[bytes] = set()

        def unreadable_chunk(key: bytes, exc: IntegrityError) -> None:
            listed_chunks.add(key[1:])
            bad_chunks.add(key[1:])
            rep.chunks += 1
            rep.errors.append(str(exc))
        for key, value in self._items_or_damage(CHUNK, unreadable_chunk):
            addr = key[1:]
            listed_chunks.add(addr)
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
        base_of: dict[bytes, bytes] = {}
        depth_of: dict[bytes, tuple] = {}

        def unreadable_tensor(key: bytes, exc: IntegrityError) -> None:
            bad_tensors.add(key[1:])
            rep.tensors += 1
            rep.errors.append(str(exc))
        for key, value in self._items_or_damage(TENSOR, unreadable_tensor):
            addr = key[1:]
            rep.tensors += 1
            try:
                lay = parse_record(addr, value)
                for frame in lay.inline or ():
                    codecs.decode_chunk(frame, lay.n, checked=False)
                for plane in lay.addrs:
                    for a in plane:
                        if a in bad_chunks or a not in listed_chunks:
                            raise IntegrityError(f"tensor record {addr.hex()[:16]} names a missing or damaged chunk")
                if lay.base is not None:
                    base_of[addr] = lay.base
                depth_of[addr] = (lay.depth, lay.dtype, lay.shape)
            except (IntegrityError, KeyError, TypeError, ValueError) as exc:
                bad_tensors.add(addr)
                rep.errors.append(str(exc))
        # A delta is as damaged as its base, down the whole chain.
        changed = True
        while changed:
            changed = False
            for addr, base in base_of.items():
                if addr not in bad_tensors and (base in bad_tensors or base not in depth_of):
                    bad_tensors.add(addr)
                    rep.errors.append(f"tensor record {addr.hex()[:16]}: its delta base {base.hex()[:16]} "
                                      "is missing or damaged")
                    changed = True
        # Every tensor decodes to the content its address names (catches records
        # swapped or rewritten under a valid check). Shallow first: bases stay cached.
        try:
            for addr in sorted(depth_of, key=lambda a: depth_of[a][0]):
                if addr in bad_tensors:
                    continue
                _, dt, shape = depth_of[addr]
                try:
                    words = self.reader.words(addr, parallel=True)
                    if not records.tensor_matches(addr, dt.name, shape, words):
                        raise IntegrityError(f"tensor record {addr.hex()[:16]} does not decode to its content address")
                    self.reader.remember(addr, words)
                except IntegrityError as exc:
                    bad_tensors.add(addr)
                    rep.errors.append(str(exc))
        finally:
            self.reader.clear_cache()
        # ... and a delta of a tensor found damaged there is damaged too.
        for addr in sorted(base_of, key=lambda a: depth_of.get(a, (0,))[0]):
            if addr not in bad_tensors and base_of[addr] in bad_tensors:
                bad_tensors.add(addr)
                rep.errors.append(f"tensor record {addr.hex()[:16]}: its delta base {base_of[addr].hex()[:16]} is damaged")
        refs_of: dict[bytes, list[str]] = {}
        for key, value in self.store.items_prefix(REF):
            try:
                refs_of.setdefault(records.unpack_ref(value, ""), []).append(key[1:].decode(errors="replace"))
            except IntegrityError:
                pass  # reported below
        unreadable: list[tuple[bytes, IntegrityError]] = []
        version_items = list(self._items_or_damage(VERSION, lambda k, exc: unreadable.append((k, exc))))
        listed_versions = {key[1:] for key, _ in version_items} | {key[1:] for key, _ in unreadable}
        for key, exc in unreadable:
            rep.versions += 1
            rep.damaged_versions.append("/".join(sorted(refs_of.get(key[1:], []))) + f"@{key[1:].hex()[:12]}")
            rep.errors.append(str(exc))
        for key, value in version_items:
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
                    if e.object in bad_tensors or e.object not in depth_of:
                        raise IntegrityError(f"version {label}: tensor {e.name!r} is missing or damaged")
                parent = manifest.get("parent")
                if parent and bytes.fromhex(parent) not in listed_versions:
                    raise IntegrityError(f"version {label}: parent {parent[:12]} is missing")
            except (IntegrityError, KeyError, TypeError, ValueError) as exc:
                rep.damaged_versions.append(label)
                rep.errors.append(str(exc))
        for key, value in self.store.items_prefix(REF):
            name = key[1:].decode(errors="replace")
            try:
                vid = records.unpack_ref(value, name)
                if vid not in listed_versions:
                    raise IntegrityError(f"ref {name!r} points to a missing version")
            except IntegrityError as exc:
                rep.damaged_refs.append(name)
                rep.errors.append(str(exc))
        self._verify_journal(rep, listed_versions)
        return rep

    def _items_or_damage(self, prefix: bytes, unreadable: Callable[[bytes, IntegrityError], None]):
        """``store.items_prefix(prefix)``, except that a value the store refuses as
        damaged (IntegrityError: the S3 store checks every value it reads against
        its index) goes to ``unreadable(key, error)`` and the others are still
        read, so that verify names what is damaged instead of stopping at it."""
        last = None
        try:
            for key, value in self.store.items_prefix(prefix):
                last = key
                yield key, value
            return
        except IntegrityError:
            pass      # one value (or a batch read with it) was refused: the rest key by key
        rest = [k for k in self.store.list_prefix(prefix) if last is None or k > last]
        for i in range(0, len(rest), 256):
            part = rest[i:i + 256]
            try:
                values = self.store.get_many(part)
            except IntegrityError:
                values = []
                for k in part:
                    try:
                        values.append(self.store.get(k))
                    except IntegrityError as exc:
                        unreadable(k, exc)
                        values.append(None)
            for k, v in zip(part, values):
                if v is not None:
                    yield k, v

    def _verify_journal(self, rep: VerifyReport, listed_versions: set[bytes]) -> None:
        """Every version the journal names is in the store (versions are never
        deleted): a store that lost one opens without complaint (pas/journal.py)."""
        if self.root is None:
            return
        entries, problems = Journal(self.root / JOURNAL_FILE).read()
        rep.errors.extend(problems)
        for e in entries:
            if e.version not in listed_versions:
                label = f"{e.ref}@{e.version.hex()[:12]}"
                if label not in rep.damaged_versions:
                    rep.damaged_versions.append(label)
                rep.errors.append(f"version {label} (journal line {e.line}) is missing from the store: lost")

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
        todo = list(live_tensors)
        while todo:  # mark: every live tensor's chunks and its delta base, down the chain
            addr = todo.pop()
            lay = self.reader.parse(addr)
            live_chunks.update(a for plane in lay.addrs for a in plane)
            if lay.base is not None and lay.base not in live_tensors:
                live_tensors.add(lay.base)
                todo.append(lay.base)
        dead: list[bytes] = []
        rep = GcReport(dry_run=not force)
        for key, value in self.store.items_prefix(TENSOR):
            if key[1:] in live_tensors:
                continue
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
            self.store.compact()   # the space comes back now, not at some later compaction
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


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _scheme_spec(scheme, keep_exact):
    """The parsed lossy rules (pas.quantize.SchemeSpec), or None: store everything exact."""
    if scheme is None and not keep_exact:
        return None
    from .quantize import SchemeSpec
    return SchemeSpec.parse(scheme, keep_exact)


def parse_size(text: str) -> int:
    """A byte count written as ``123``, ``512M``, ``2G``, ``1.5GiB`` (binary units)."""
    import re
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise BadInput(f"not a size: {str(text)[:40]!r} (write e.g. 512M or 2G)")
    value = int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])
    if value < 1 << 20:
        raise BadInput(f"size {text!r} is below the 1 MiB minimum")
    return value


def _is_repo_dir(path: Path) -> bool:
    # config.json alone is not enough: model folders have one too.
    return (path / "config.json").is_file() and (path / "db").is_dir()


def is_url(path) -> bool:
    """An object-store repository location (``s3://bucket/prefix``), not a local path."""
    return isinstance(path, str) and path.startswith("s3://")


def read_config(root: Path) -> dict:
    try:
        config = json.loads((root / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise NotARepository(f"cannot read {root / 'config.json'}: {exc}") from None
    return check_config(config)


def check_config(config) -> dict:
    version = config.get("format_version") if isinstance(config, dict) else None
    if version != FORMAT_VERSION:
        raise UnsupportedFormat(
            f"repository format version {version!r} is not supported by this pas "
            f"(supports {FORMAT_VERSION}); upgrade pas")
    return config
