"""Writing one version: dedup, whole-or-delta choice, plane split, chunking, safe write order.

For each tensor, in order: if its content address exists (confirmed byte for
byte) it is reused; otherwise it is encoded on a worker thread:
`pas.delta.select` picks whole storage or a delta against a base from
`BaseIndex`, the planes are split (delta fused in), cut into chunks,
deduplicated and compressed. Chunks are written in
bulk as they come (or, for a small version, with its records); the tensor
records, manifest and ref are written by `commit` in one synced batch
(docs/format.md §6).
"""
from __future__ import annotations

import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable

import numpy as np

from . import codecs, dtypes, planes, records
from .delta import aligned_base, change, select
from .errors import BadInput, IntegrityError
from .hashing import digest
from .records import CHUNK, REF, TENSOR, TensorEntry, Version, tensor_digest
from .snapshot import Tensor

#: Bytes of new chunks held in memory before they are written in one batch
#: (at most; a small memory limit lowers it, see `MemoryBudget`).
BATCH_BYTES = 64 << 20
#: A version whose new chunks add up to at most this many bytes writes them in
#: its one synced batch (through the write-ahead log); more are written WAL-free
#: and flushed first. Through the log every byte is written twice (log, then
#: memtable flush, which closing the store does anyway) and synced in one go:
#: for 30 MB of chunks 0.1-0.3 s, against 0.01 s + one flush (10-50 ms) WAL-free.
#: A flush costs about as much as logging a few MiB, hence the limit.
FINAL_BATCH_CHUNK_BYTES = 4 << 20
#: The memory archiving may use for data by default (PAS_MEMORY_LIMIT, or
#: `pas archive --memory-limit`, or `Repository.memory_limit` override it).
DEFAULT_MEMORY_LIMIT = 4 << 30
#: Tensors up to this size keep their plane frames inside their record
#: (one object instead of a record plus one chunk per plane).
INLINE_MAX = 1 << 20
#: Tensors at least this big are encoded on worker threads (decoding: `repo.DECODE_PARALLEL_MIN_BYTES`).
PARALLEL_MIN_BYTES = 256 << 10
#: Elements read from a candidate base to rank it by bitwise similarity.
SIMILARITY_ELEMENTS = 1 << 14
#: Same-shaped tensors of other names considered as bases for one tensor.
MAX_OTHER_CANDIDATES = 8
#: Below this similarity (top-16-bit agreement) a same-named base is not
#: trusted alone, and same-shaped tensors of other names are tried too.
SAME_NAME_TRUST = 0.5

Progress = Callable[[int], None]


class MemoryBudget:
    """How a memory limit for archiving is shared out.

    Each encode worker holds about four slabs at once (the plane buffer, the
    base's decoded range, compressed pieces, decode scratch), the pending
    batch of chunks waits for its write, and decoded delta bases are cached.
    A tensor bigger than one slab is encoded slab by slab, so its size never
    sets the peak: the source is read through (an mmap for safetensors) and
    its delta base is decoded range by range.
    """

    def __init__(self, limit: int, workers: int, chunk_elements: int):
        self.limit = int(limit)
        per_slab = max(1, self.limit // (8 * max(1, workers)))
        self.slab_bytes = max(chunk_elements, per_slab)
        self.batch_bytes = min(BATCH_BYTES, max(1 << 20, self.limit // 8))
        self.cache_bytes = self.limit // 4
        # Chunks written in bulk wait in the store's write buffer (RocksDB
        # memtables: up to 2 x 64 MiB) until it flushes them to disk; past
        # this many bytes the writer flushes it itself.
        self.unflushed_bytes = max(self.batch_bytes, self.limit // 8)

    def slab_elements(self, itemsize: int, chunk_elements: int) -> int:
        """Elements per slab: whole chunks (so slabs cut planes where whole streams would)."""
        return max(1, self.slab_bytes // itemsize // chunk_elements) * chunk_elements


class BaseIndex:
    """Candidate delta bases for a new version: the tensors of one stored version."""

    def __init__(self, repo, version: Version):
        self.repo = repo
        self.version = version
        self.by_name = {e.name: e for e in version.tensors}
        self.by_shape: dict[tuple, list[TensorEntry]] = defaultdict(list)
        for e in version.tensors:
            self.by_shape[(e.dtype, e.shape)].append(e)

    def candidates(self, t: Tensor, words: np.ndarray, whole: bool = True) -> list[TensorEntry]:
        """The same-named tensor when it lines up (same dtype and row shape), and,
        when that is missing or unlike ``t``, the most similar same-shaped others.
        ``whole=False`` (a tensor encoded in slabs) judges every base on its head."""
        dt = dtypes.get(t.dtype)
        out = []
        same = self.by_name.get(t.name)
        if same is not None and same.dtype == t.dtype and (
                same.shape == t.shape or (len(same.shape) == len(t.shape) >= 1
                                          and same.shape[1:] == t.shape[1:])):
            out.append(same)
            if whole:
                # The same-named base is decoded whole anyway if chosen: judge it on all of it.
                score = select.similarity(words, self.words(same), dt)
            else:
                score = self._similarity(same, words, dt)
            if score >= SAME_NAME_TRUST:
                return out
        others = [e for e in self.by_shape.get((t.dtype, t.shape), []) if e.name != t.name]
        if others:
            ranked = sorted(others[:MAX_OTHER_CANDIDATES],
                            key=lambda e: -self._similarity(e, words, dt))
            out.extend(ranked[:2])
        return out

    def words(self, e: TensorEntry) -> np.ndarray:
        """A base's words, checked against its content address before a delta is
        taken against them: a damaged base would otherwise be built into the new
        version (which decodes against the same damage, so nothing would notice
        until the base is repaired or read alone). Decoded as retrieval does: rows
        in parallel, chunks checked by their frames, the whole tensor by one digest.
        Kept (`remember`) for the next tensor or version that uses it."""
        reader = self.repo.reader
        hit = reader.cached(e.object)
        if hit is not None:
            return hit   # the words of a tensor archived in this series, or checked here before
        words = self.repo.recent_base(e)   # archived last through this Repository
        if words is not None:
            reader.remember(e.object, words)
            return words
        words = reader.checked_words(e.object, what=f"delta base {e.name!r} ({e.object.hex()[:16]}) of version "
                                                    f"{self.version.hex[:12]}")
        reader.remember(e.object, words)
        return words

    def _similarity(self, e: TensorEntry, words: np.ndarray, dt: dtypes.DType) -> float:
        head = self.repo.reader.range_words(e.object, 0, min(SIMILARITY_ELEMENTS, words.shape[0]))
        return select.similarity(words[:head.shape[0]], head, dt)


class VersionWriter:
    """Collects the objects of one version and writes them in the safe order."""

    def __init__(self, repo, progress: Progress | None = None, bases: BaseIndex | None = None,
                 workers: int = 1):
        self.repo = repo
        self.store = repo.store
        self.reader = repo.reader
        self.progress = progress
        self.bases = bases
        self.max_depth = int(repo.config.get("delta", {}).get("max_depth", 8))
        self.ops = tuple(repo.config.get("delta", {}).get("ops", ("xor", "sub")))
        self.layouts = tuple(repo.config.get("layouts", planes.LAYOUTS))
        self.pending: dict[bytes, bytes] = {}   # chunk key -> framed value, not yet written
        self.pending_bytes = 0
        self.unflushed = 0                          # bytes put in bulk since the store last flushed
        self.final: list[tuple[bytes, bytes]] = []
        self.new_tensors: dict[bytes, np.ndarray] = {}  # tensor key -> its words (this version)
        self.physical_added = 0
        self.tensors_reused = self.chunks_written = self.chunks_reused = 0
        self.deltas: dict[str, int] = defaultdict(int)   # "whole", "xor", "sub" -> count
        self.reserved: dict[bytes, np.ndarray] = {}      # chunk key -> piece another thread is encoding
        self.bulk_written = False                        # chunks went to the store before commit
        self._lock = threading.RLock()                   # guards the fields above across encode threads
        self.workers = workers
        self.chunk_elements = int(getattr(repo.chunker, "size", 1 << 20))   # a plane byte per element
        self.budget = MemoryBudget(repo.memory_limit, workers, self.chunk_elements)
        self.plane_compressor = codecs.for_planes(repo.compressor)
        repo.reader.limit_cache(self.budget.cache_bytes)

    # ----------------------------------------------------------------- tensors
    def add_tensor(self, t: Tensor, side_file: bool = False) -> TensorEntry:
        """Store one tensor (or, with ``side_file``, a file's bytes as a U8 tensor:
        cut by content-defined chunks, so an edited file shares most of them)."""
        return self.add_tensors([t], side_file)[0]

    def add_tensors(self, tensors: Iterable[Tensor], side_file: bool = False,
                    lossy: bool = False) -> list[TensorEntry]:
        """Store tensors; entries in order. Deduplication runs here, in order (so
        equal tensors of one version are stored once); new tensors are encoded
        on worker threads: choosing, splitting and compressing release the GIL.
        ``lossy``: the tensors are lossy representations (pas.quantize), addressed
        in their own domain (variants 128-255), never deduplicated with exact data."""
        entries, jobs = [], []
        for t in tensors:
            entry, job = self._claim(t, side_file, lossy)
            entries.append(entry)
            if job is not None:
                jobs.append(job)
        # Big tensors on worker threads; small ones here meanwhile: handing a
        # tensor of a few KiB to a thread costs more than encoding it (a
        # 100,000-tensor state_dict spent 70% of its time in thread hand-offs).
        big = [job for job in jobs if job[3].nbytes >= PARALLEL_MIN_BYTES]
        small = [job for job in jobs if job[3].nbytes < PARALLEL_MIN_BYTES]
        if len(big) > 1 and self.workers > 1:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="pas-encode") as ex:
                futures = [ex.submit(self._store_tensor, *job) for job in big]
                for job in small:
                    self._store_tensor(*job)
                for f in futures:
                    f.result()
        else:
            for job in big + small:
                self._store_tensor(*job)
        return entries

    def _claim(self, t: Tensor, side_file: bool, lossy: bool = False) -> tuple[TensorEntry, tuple | None]:
        """The tensor's entry, and the encoding job when its content is new."""
        dt = dtypes.get(t.dtype)
        data = dtypes.as_le_contiguous(t.data)
        if tuple(data.shape) != tuple(t.shape) or data.dtype.itemsize != dt.itemsize:
            raise BadInput(f"tensor {t.name!r}: data does not match its dtype/shape")
        words = data.reshape(-1).view(dt.bits_dtype)
        addr = records.address(tensor_digest(t.dtype, t.shape, data), data.nbytes)
        job = None
        for variant in (range(records.LOSSY_VARIANT, 256) if lossy else range(records.LOSSY_VARIANT)):
            addr = records.with_variant(addr, variant)
            key = TENSOR + addr
            if key in self.new_tensors:
                if self._same_words(self.new_tensors[key], words):
                    break
                continue
            value = self.store.get(key)
            if value is None:
                self.new_tensors[key] = words
                job = (t, addr, dt, words, side_file)
                break
            if self._same_stored_tensor(addr, words):
                self.tensors_reused += 1
                break
        else:
            raise IntegrityError("too many digest collisions")
        self.reader.remember(addr, words)   # the next version in a chain deltas against it
        if self.progress:
            self.progress(data.nbytes)
        return TensorEntry(t.name, t.dtype, tuple(t.shape), int(data.nbytes), addr), job

    def _same_stored_tensor(self, addr: bytes, words: np.ndarray) -> bool:
        # Confirm a dedup hit: compare bytes with what is stored. The last
        # version archived through this Repository keeps a copy of its tensors
        # (`Repository.recent_bases`): those are the bytes stored under their
        # addresses, and comparing with them spares decoding the tensor (on the
        # corpus's variants, whose frozen trunk is reused, decoding was half of
        # archiving). Otherwise decode and compare, slab by slab for a big
        # tensor, so the check needs no second copy of it.
        kept = self.repo.recent_bases.get(addr)
        if kept is not None:
            return kept.dtype == words.dtype and kept.shape == words.shape and np.array_equal(kept, words)
        try:
            if words.nbytes <= self.budget.slab_bytes:
                return self.reader.words(addr).tobytes() == words.tobytes()
            if self.reader.parse(addr).n != words.shape[0]:
                return False
            for a, b in self._slabs(words):
                if self.reader.range_words(addr, a, b).tobytes() != words[a:b].tobytes():
                    return False
            return True
        except IntegrityError:
            return False

    def _slabs(self, words: np.ndarray) -> list[tuple[int, int]]:
        return self.slabs(words.shape[0], words.dtype.itemsize)

    def slabs(self, n: int, itemsize: int) -> list[tuple[int, int]]:
        """Element ranges of one slab each (whole chunks) covering n elements."""
        step = self.budget.slab_elements(itemsize, self.chunk_elements)
        return [(a, min(a + step, n)) for a in range(0, n, step)] or [(0, 0)]

    def _same_words(self, a: np.ndarray, b: np.ndarray) -> bool:
        return a.shape == b.shape and all(a[i:j].tobytes() == b[i:j].tobytes() for i, j in self._slabs(a))

    def _store_tensor(self, t: Tensor, addr: bytes, dt: dtypes.DType, words: np.ndarray,
                      side_file: bool = False) -> None:
        if not side_file and words.nbytes > self.budget.slab_bytes:
            return self._store_in_slabs(t, addr, dt, words)
        candidates = []
        # A tensor smaller than select.MIN_SAVING can never be a delta: skip decoding bases.
        if self.bases is not None and words.nbytes >= select.MIN_SAVING:
            for e in self.bases.candidates(t, words):
                lay = self.reader.parse(e.object)
                if lay.depth + 1 > self.max_depth or lay.dtype.name != dt.name:
                    continue
                candidates.append((e, self.bases.words(e), lay.layout))
        choice = select.choose(words, dt, candidates, self.ops, self.layouts)
        rec = {"dtype": dt.name, "shape": list(t.shape)}
        same = self._parent_same(t, addr, side_file)
        if same is not None:
            # Decoded already: candidates() judges the same-named base on all of it.
            self._note_change(rec, same, change.measure(self.bases.words(same), words, dt.name))
        base_words = None
        if choice.op is not None:
            entry = choice.base
            base_words = next(w for e, w, _ in candidates if e is entry)
            base_words = aligned_base(base_words, words.shape[0])
            rec["delta"] = {"op": choice.op, "base": entry.object.hex()}
            rec["depth"] = self.reader.parse(entry.object).depth + 1
        fields, payload = self.encode_planes(
            words.shape[0], dt, choice.layout, choice.op, lambda a, b: words[a:b],
            lambda a, b: None if base_words is None else base_words[a:b], side_file)
        rec.update(fields)
        self._add_record(addr, rec, payload, choice.op)

    def _store_in_slabs(self, t: Tensor, addr: bytes, dt: dtypes.DType, words: np.ndarray) -> None:
        """Encode a tensor bigger than a slab one slab at a time: the choice is
        made on windows spread over it, and the delta base is decoded range by
        range, so memory stays within the budget whatever the tensor's size.
        Slabs are whole chunks, so the chunks are those of a whole-tensor encode."""
        n = words.shape[0]
        windows = select.sample_windows(n)
        sample = np.concatenate([words[a:b] for a, b in windows])
        candidates = []
        if self.bases is not None:
            for e in self.bases.candidates(t, words, whole=False):
                lay = self.reader.parse(e.object)
                if lay.depth + 1 > self.max_depth or lay.dtype.name != dt.name:
                    continue
                base_sample = np.concatenate([self.base_range(e.object, a, b) for a, b in windows])
                candidates.append((e, base_sample, lay.layout))
        choice = select.choose(sample, dt, candidates, self.ops, self.layouts, n_total=n)
        rec = {"dtype": dt.name, "shape": list(t.shape)}
        base_of = lambda a, b: self.base_range(choice.base.object, a, b) if choice.op else None
        same = self._parent_same(t, addr)
        parts: list[change.Change] = []
        if same is not None and choice.op is not None and choice.base is same:
            # The base is decoded slab by slab for the delta anyway: measure each slab as it goes by.
            def base_of(a, b, plain=base_of):
                base = plain(a, b)
                parts.append(change.measure(base, words[a:b], dt.name))
                return base
        if choice.op is not None:
            rec["delta"] = {"op": choice.op, "base": choice.base.object.hex()}
            rec["depth"] = self.reader.parse(choice.base.object).depth + 1
        fields, payload = self.encode_planes(n, dt, choice.layout, choice.op, lambda a, b: words[a:b], base_of)
        if parts:
            self._note_change(rec, same, sum(parts[1:], parts[0]))
        rec.update(fields)
        self._add_record(addr, rec, payload, choice.op)

    def _parent_same(self, t: Tensor, addr: bytes, side_file: bool = False) -> TensorEntry | None:
        """The base version's same-named tensor when the change from it to ``t``
        is worth recording (`pas.delta.change`): same dtype and shape, exact
        data (a lossy tensor's stored words are not its values), at least
        select.MIN_SAVING bytes (smaller ones are cheap for a diff to read)."""
        if self.bases is None or side_file or records.is_lossy_address(addr):
            return None
        same = self.bases.by_name.get(t.name)
        if (same is None or same.dtype != t.dtype or tuple(same.shape) != tuple(t.shape)
                or same.nbytes < select.MIN_SAVING or records.is_lossy_address(same.object)):
            return None
        return same

    @staticmethod
    def _note_change(rec: dict, same: TensorEntry, measured: change.Change) -> None:
        field = measured.to_record(same.object)
        if field is not None:
            rec["change"] = field

    def encode_planes(self, n: int, dt: dtypes.DType, layout: str, op: str | None,
                      words_of: Callable[[int, int], np.ndarray],
                      base_of: Callable[[int, int], np.ndarray | None],
                      side_file: bool = False) -> tuple[dict, bytes]:
        """Split, chunk and compress a tensor's planes: the record's ``layout``,
        ``codec`` and ``inline`` (with the returned payload) or ``chunks`` fields.

        ``words_of(a, b)`` gives elements [a, b) of the tensor, ``base_of(a, b)``
        those of its aligned delta base (None when whole). A tensor bigger than
        a slab is asked for one slab at a time, so only a slab of it (and of its
        base) is ever held; slabs are whole chunks, so the chunks are those of a
        whole-tensor encode. Side files are cut by content, whole."""
        compressor = self.repo.compressor if side_file else self.plane_compressor
        fields: dict = {"layout": layout, "codec": compressor.get_config()}
        nbytes = n * dt.itemsize
        if nbytes <= INLINE_MAX:
            plane_buf = planes.split(words_of(0, n), dt, layout, base=base_of(0, n), op=op)
            frames = [codecs.encode_chunk(plane_buf[p], compressor, checked=False) for p in range(dt.itemsize)]
            fields["inline"] = [len(f) for f in frames]
            return fields, b"".join(frames)
        chunker = self.repo.file_chunker if side_file else self.repo.chunker
        slabs = [(0, n)] if side_file or nbytes <= self.budget.slab_bytes else self.slabs(n, dt.itemsize)
        streams: list[list[str]] = [[] for _ in range(dt.itemsize)]
        for a, b in slabs:
            plane_buf = planes.split(words_of(a, b), dt, layout, base=base_of(a, b), op=op)
            for p in range(dt.itemsize):
                streams[p].extend(self._add_stream(plane_buf[p], chunker, compressor))
            del plane_buf
        fields["chunks"] = streams
        return fields, b""

    def base_range(self, base_addr: bytes, a: int, b: int) -> np.ndarray:
        """Base elements [a, b), padded with zeros past the base's end (`aligned_base`)."""
        have = self.reader.range_words(base_addr, a, b)
        return aligned_base(have, b - a) if have.shape[0] < b - a else have

    def _add_record(self, addr: bytes, rec: dict, payload: bytes, op: str | None) -> None:
        value = records.pack_tensor_record(rec, payload)
        key = TENSOR + addr
        with self._lock:
            self.deltas[op or "whole"] += 1
            self.final.append((key, value))
            self.physical_added += len(key) + len(value)

    # ------------------------------------------------------------------ chunks
    def _add_stream(self, stream: np.ndarray, chunker, compressor: codecs.Codec) -> list[str]:
        cuts = chunker.cuts_of(stream)
        pieces = [stream[off:off + n] for off, n in cuts]
        digests = [records.address(digest(memoryview(piece)), piece.size) for piece in pieces]
        addrs = []
        new: dict[bytes, int] = {}   # key of a piece this call writes -> its index
        with self._lock:   # resolving and reserving are one step: another thread may hold the same piece
            for i, piece in enumerate(pieces):
                addr, is_new = self._resolve_chunk(digests[i], piece, new, pieces)
                addrs.append(addr)
                if is_new:
                    new[CHUNK + addr] = i
                    self.reserved[CHUNK + addr] = piece
                else:
                    self.chunks_reused += 1
        todo = list(new.items())
        if len(todo) > 1:
            values = list(self.repo.pool.map(lambda kv: codecs.encode_chunk(pieces[kv[1]], compressor), todo))
        else:
            values = [codecs.encode_chunk(pieces[i], compressor) for _, i in todo]
        with self._lock:
            for (key, _), value in zip(todo, values):
                self.pending[key] = value
                del self.reserved[key]
                self.pending_bytes += len(value)
                self.physical_added += len(key) + len(value)
                self.chunks_written += 1
            if self.pending_bytes >= self.budget.batch_bytes:
                self.flush()
        return [a.hex() for a in addrs]

    def _resolve_chunk(self, addr: bytes, piece: np.ndarray, new: dict[bytes, int],
                       pieces: list[np.ndarray]) -> tuple[bytes, bool]:
        """The address this piece is stored under, and whether it still has to be written.

        A digest match is confirmed by comparing bytes: against pieces of this
        stream not yet encoded, pieces other threads are encoding, pending
        chunks, then the store. Called under the writer's lock.
        """
        raw = piece.tobytes()
        for variant in range(256):
            addr = records.with_variant(addr, variant)
            key = CHUNK + addr
            other = pieces[new[key]] if key in new else self.reserved.get(key)
            if other is not None:
                if other.tobytes() == raw:
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

    # ------------------------------------------------------------------ commit
    def flush(self) -> None:
        if self.pending:
            self.store.put_many(self.pending.items())
            self.unflushed += self.pending_bytes
            self.pending.clear()
            self.pending_bytes = 0
            self.bulk_written = True
            if self.unflushed >= self.budget.unflushed_bytes:
                self.store.flush()
                self.unflushed = 0

    def commit(self, version_key: bytes, manifest_body: bytes, ref_name: str) -> None:
        """Write the version: records, manifest and ref in one synced batch, after its chunks.

        A version with few new chunks (at most FINAL_BATCH_CHUNK_BYTES) puts them in
        that same batch: one atomic, synced write, no memtable flush (a flush per
        small version costs ~8 ms and an SST file). Other versions write chunks in
        bulk, WAL-free; those are flushed to disk before any record names them."""
        if self.bulk_written or self.pending_bytes > min(FINAL_BATCH_CHUNK_BYTES, self.budget.batch_bytes):
            self.flush()
            self.store.flush()  # chunks durable before the records that name them
            chunks = []
        else:
            chunks = list(self.pending.items())
        final = chunks + self.final + [(version_key, manifest_body),
                                       (REF + ref_name.encode(), records.pack_ref(version_key[1:]))]
        self.store.write(final, sync=True)
        self.pending.clear()
        self.pending_bytes = 0
        self.physical_added += len(version_key) + len(manifest_body) + len(final[-1][0]) + len(final[-1][1])
