"""Decoding tensor records: chunks -> planes -> words, through delta chains.

Every plane of a tensor is cut at the same offsets, so row j of the tensor
is the j-th chunk of each plane. Rows are decoded and merged independently
(in parallel), straight from the decoded chunks into the output; a delta
record first decodes its base (cached), and the merge kernel applies the
delta in the same pass. A row range reads only the chunks it needs, and so
does a read of the top K planes: down an XOR chain each row XORs the top K
planes of every level's chunks in one buffer, and an approximate read
(`TensorReader.approx_words`) turns each row into words while it is in cache.
"""
from __future__ import annotations

import bisect
import itertools
import math
import threading
from collections import OrderedDict
from typing import Callable

import numpy as np

from . import codecs, delta, dtypes, planes, records
from .errors import IntegrityError, PasError
from .records import CHUNK, TENSOR
from .stores.base import Store

#: Decoded delta bases kept per repository handle (bytes).
BASE_CACHE_BYTES = 1 << 30


class _Layout:
    """The parsed, checked shape of one tensor record.

    Big tensors name one list of chunk addresses per plane (``chunks``);
    small ones carry their plane frames inline in the record (``inline``:
    the frame lengths), which saves a key, a frame check and a read per
    plane on the many small tensors (biases, norms) of a model.
    """

    def __init__(self, rec: dict, payload: memoryview | bytes = b""):
        self.rec = rec
        self.dtype = dtypes.get(rec["dtype"])
        self.shape = tuple(records.nonnegative_ints(rec["shape"], "shape"))
        self.n = math.prod(self.shape)
        self.layout = rec["layout"]
        if self.layout not in planes.LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}")
        self.inline = None
        if "inline" in rec:
            sizes = records.nonnegative_ints(rec["inline"], "inline frame sizes")
            if len(sizes) != self.dtype.itemsize or sum(sizes) != len(payload):
                raise IntegrityError("tensor record's inline frames do not add up")
            self.inline, pos = [], 0
            for size in sizes:
                self.inline.append(payload[pos:pos + size])
                pos += size
            self.addrs = [[] for _ in sizes]
            self.lengths = [self.n]
            self.offsets = [0, self.n]
        else:
            self.addrs = [[records.hex_id(h) for h in plane] for plane in rec["chunks"]]
            if len(self.addrs) != self.dtype.itemsize:
                raise IntegrityError("tensor record has the wrong number of planes")
            lengths = [[int.from_bytes(a[16:24], "big") for a in plane] for plane in self.addrs]
            if any(ls != lengths[0] for ls in lengths) or sum(lengths[0]) != self.n:
                raise IntegrityError("tensor record's chunks do not cover the tensor row by row")
            self.lengths = lengths[0]
            self.offsets = [0, *itertools.accumulate(self.lengths)]
        d = rec.get("delta")
        self.op = d["op"] if d else None
        self.base = records.hex_id(d["base"]) if d else None
        if self.op is not None:
            delta.op_code(self.op)  # unknown operator -> ValueError -> reported as damage
        self.depth = records.nonnegative_ints([rec.get("depth", 0)], "depth")[0]

    def rows(self, start: int, stop: int) -> range:
        """Indexes of the chunk rows that overlap elements [start, stop)."""
        if start >= stop:
            return range(0)
        if start == 0 and stop == self.n:
            return range(len(self.lengths))
        first = bisect.bisect_right(self.offsets, start) - 1
        last = bisect.bisect_left(self.offsets, stop)
        return range(max(first, 0), min(last, len(self.lengths)))


class TensorReader:
    def __init__(self, store: Store, pool: Callable, cache_bytes: int = BASE_CACHE_BYTES):
        self.store = store
        self._pool = pool
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._cached = 0
        self._lock = threading.Lock()
        self._parsed: dict[bytes, _Layout] = {}

    # ----------------------------------------------------------------- records
    def record(self, addr: bytes) -> dict:
        return self.parse(addr).rec

    def prefetch(self, addrs: list[bytes]) -> None:
        """Read and parse many records in one batch (a whole version's)."""
        todo = [a for a in addrs if a not in self._parsed]
        for a, value in zip(todo, self.store.get_many([TENSOR + a for a in todo])):
            if value is not None:
                self.parse(a, value)

    def parse(self, addr: bytes, value: bytes | None = None) -> _Layout:
        """The checked, parsed record (cached: records are immutable, and delta chains re-read them)."""
        lay = self._parsed.get(addr)
        if lay is not None:
            return lay
        if value is None:
            value = self.store.get(TENSOR + addr)
            if value is None:
                raise IntegrityError(f"tensor record {addr.hex()[:16]} is missing")
        lay = parse_record(addr, value)
        if len(self._parsed) > 100_000:
            self._parsed.clear()
        self._parsed[addr] = lay
        return lay

    # ------------------------------------------------------------------- cache
    def cached(self, addr: bytes) -> np.ndarray | None:
        with self._lock:
            words = self._cache.get(addr)
            if words is not None:
                self._cache.move_to_end(addr)
            return words

    def remember(self, addr: bytes, words: np.ndarray) -> None:
        """Keep decoded (or just archived) words as a delta base for later reads."""
        if words.nbytes > self._cache_bytes:
            return
        with self._lock:
            if addr in self._cache:
                return
            self._cache[addr] = words
            self._cached += words.nbytes
            while self._cached > self._cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached -= old.nbytes

    def forget(self, addr: bytes) -> None:
        """Drop one tensor's decoded words from the cache (no longer needed as a base)."""
        with self._lock:
            old = self._cache.pop(addr, None)
            if old is not None:
                self._cached -= old.nbytes

    def limit_cache(self, nbytes: int) -> None:
        """Hold at most ``nbytes`` of decoded words from now on (a memory limit)."""
        with self._lock:
            self._cache_bytes = int(nbytes)
            while self._cached > self._cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached -= old.nbytes

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()
            self._cached = 0
            self._parsed.clear()

    # ------------------------------------------------------------------ decode
    def words(self, addr: bytes, parallel: bool = True, verify_chunks: bool = False,
              out: np.ndarray | None = None) -> np.ndarray:
        """All elements of a tensor as a flat array of its unsigned bit dtype
        (decoded into ``out`` when given: a flat array of that dtype and length).

        The caller checks the result against the tensor's digest (which
        covers every chunk and every base); ``verify_chunks`` checks each
        chunk on its own, to name a damaged one.
        """
        hit = self.cached(addr)
        if hit is not None:
            return hit
        lay = self.parse(addr)
        return self._decode(lay, 0, lay.n, parallel, verify_chunks, out)

    def range_words(self, addr: bytes, start: int, stop: int) -> np.ndarray:
        """Elements [start, stop) in flat C order; reads only the chunks they lie in."""
        hit = self.cached(addr)
        if hit is not None:
            return hit[start:stop]
        lay = self.parse(addr)
        start, stop = max(0, start), min(stop, lay.n)
        return self._decode(lay, start, max(start, stop), parallel=False, verify_chunks=True)

    def _base_layout(self, lay: _Layout) -> _Layout:
        """The delta base's record, checked to continue the chain: same element
        width, depth one less (so every chain ends, even in a damaged store)."""
        base_lay = self.parse(lay.base)
        if base_lay.dtype.itemsize != lay.dtype.itemsize or base_lay.depth != lay.depth - 1 or lay.depth < 1:
            raise IntegrityError(f"delta chain is broken at base {lay.base.hex()[:16]}")
        return base_lay

    def chain(self, addr: bytes) -> list[tuple[bytes, _Layout]]:
        """(address, parsed record) of every level of a tensor's delta chain,
        the tensor first, down to its keyframe (each base checked to continue
        the chain)."""
        out = [(addr, self.parse(addr))]
        while out[-1][1].base is not None:
            lay = out[-1][1]
            out.append((lay.base, self._base_layout(lay)))
        return out

    def _chain(self, lay: _Layout) -> tuple[list[_Layout], np.ndarray | None]:
        """The records to apply, ``lay`` first, down to a whole one or to a base
        whose words are cached (returned with them)."""
        chain = [lay]
        while chain[-1].base is not None:
            hit = self.cached(chain[-1].base)
            if hit is not None:
                return chain, hit
            chain.append(self._base_layout(chain[-1]))
        return chain, None

    def _decode(self, lay: _Layout, start: int, stop: int, parallel: bool,
                verify_chunks: bool, out: np.ndarray | None = None) -> np.ndarray:
        """Elements [start, stop) of a tensor, its whole delta chain applied in one buffer.

        The buffer spans the chunk rows that cover [start, stop). Levels are
        applied bottom up, each merged in place over the one below (the
        kernels read the base element before writing it), so a chain of any
        depth allocates only the result. A base shorter than the tensor above
        it is padded with zeros (`delta.aligned_base`): after each level,
        elements past its end are cleared.
        """
        chain, cached = self._chain(lay)
        rows = lay.rows(start, stop)
        lo = int(lay.offsets[rows.start]) if rows else start
        hi = int(lay.offsets[rows.stop]) if rows else start
        if out is None or out.shape != (hi - lo,) or out.dtype != lay.dtype.bits_dtype:
            out = np.empty(hi - lo, lay.dtype.bits_dtype)
        base = cached   # the first level applied reads a cached base where it lies, not a copy of it
        for level in reversed(chain):
            self._apply_level(level, out, lo, start, stop, parallel, verify_chunks, base)
            base = None
            end = max(0, min(hi, level.n) - lo)
            if end < out.shape[0]:
                out[end:] = 0
        return out[start - lo: stop - lo]

    def _apply_level(self, lay: _Layout, out: np.ndarray, lo: int, start: int, stop: int,
                     parallel: bool, verify_chunks: bool, base: np.ndarray | None = None) -> None:
        """Merge the rows of one record that hold elements [start, stop) over
        ``out`` (elements from ``lo`` on; for a delta, the base's words there,
        or the whole base's words in ``base``).
        Elements of ``out`` outside [start, stop) may be left wrong: the caller drops them."""
        dt = lay.dtype
        if lay.inline is not None:
            # Small tensors: one record holds every plane; the common path, kept short.
            pieces = [np.frombuffer(codecs.decode_chunk(f, lay.n, checked=False), np.uint8)
                      for f in lay.inline]
            _merge_window(pieces, lay, 0, lay.n, out, lo, base)
            return
        rows = lay.rows(start, min(stop, lay.n))
        nrows = len(rows)
        values = self.store.get_many([CHUNK + lay.addrs[p][j] for p in range(dt.itemsize) for j in rows])

        def row(i: int) -> None:
            j = rows[i]
            scratch = self._scratch(dt.itemsize, lay.lengths[j])
            pieces = [self._plane_piece(lay, p, j, values[p * nrows + i], verify_chunks, scratch[p])
                      for p in range(dt.itemsize)]
            _merge_window(pieces, lay, int(lay.offsets[j]), int(lay.offsets[j + 1]), out, lo, base)

        span = (int(lay.offsets[rows.stop]) - int(lay.offsets[rows.start])) if rows else 0
        if parallel and nrows > 1 and span * dt.itemsize >= (4 << 20):
            list(self._pool().map(row, range(nrows)))
        else:
            for i in range(nrows):
                row(i)

    _local = threading.local()

    @classmethod
    def _scratch(cls, k: int, n: int) -> list[np.ndarray]:
        """This thread's k reusable plane buffers of n bytes (decoding into warm
        memory instead of fresh pages is most of the gain on big tensors)."""
        bufs = getattr(cls._local, "bufs", None)
        if bufs is None or len(bufs) < k or bufs[0].shape[0] < n:
            size = max(n, bufs[0].shape[0] if bufs else 0)
            bufs = cls._local.bufs = [np.empty(size, np.uint8) for _ in range(max(k, len(bufs or ())))]
        return [b[:n] for b in bufs[:k]]

    @staticmethod
    def _plane_piece(lay: _Layout, p: int, j: int, value, verify_chunks: bool,
                     into: np.ndarray | None = None) -> np.ndarray:
        """Decoded bytes of plane p in chunk row j (``value``: its stored chunk),
        into ``into`` where the codec can. The chunk's own check always runs (a
        damaged byte anywhere is refused); ``verify_chunks`` also checks its address."""
        addr = lay.addrs[p][j]
        if value is None:
            raise IntegrityError(f"chunk {addr.hex()[:16]} is missing")
        size = lay.lengths[j]
        if into is None:
            data = np.frombuffer(codecs.decode_chunk(value, size), np.uint8)
        else:
            data = np.frombuffer(codecs.decode_chunk_into(value, into), np.uint8)
        if verify_chunks:
            records.check_address(data, addr, "chunk")
        return data

    # ------------------------------------------------------------- top planes
    def top_planes(self, addr: bytes, k: int, parallel: bool = True) -> tuple[np.ndarray, str]:
        """The top ``k`` byte planes (MSB first) of a tensor, as a (k, n) array, and its layout.

        Whole tensors and XOR deltas whose base has the same layout read only
        the top k planes' chunks (down the chain); an integer-difference
        delta carries across bytes, so it is decoded whole and split.
        """
        lay = self.parse(addr)
        k = min(k, lay.dtype.itemsize)
        if lay.inline is not None and lay.base is None:   # small and whole: the common case, kept short
            out = np.empty((k, lay.n), np.uint8)
            for p in range(k):
                out[p] = np.frombuffer(codecs.decode_chunk(lay.inline[p], lay.n, checked=False), np.uint8)
            return out, lay.layout
        plan = self._top_plan(addr, lay, k, parallel)
        if plan is None:   # decoded whole
            return planes.split(self.checked_words(addr, parallel), lay.dtype, lay.layout)[:k], lay.layout
        out = np.empty((k, lay.n), np.uint8)
        self._top_rows(plan, k, parallel, lambda a, b: [out[p, a:b] for p in range(k)], None)
        return out, lay.layout

    def approx_words(self, addr: bytes, k: int, parallel: bool = True) -> np.ndarray:
        """A tensor's words rebuilt from its top ``k`` planes (`midpoint`), as a flat
        array of its bit dtype: what `top_planes` and `midpoint` give, but row by
        row, from each decoded chunk while it is in cache (no planes array)."""
        lay = self.parse(addr)
        dt = lay.dtype
        k = min(k, dt.itemsize)
        zero = _midpoint_is_zero(dt, lay.layout, k)
        if zero:
            # The answer is 0 whatever the plane holds, so its chunks are not
            # decoded; they are still read and checked, so a damaged or
            # missing one fails the read as it would on any other path.
            self._check_top_chunks(lay, k, parallel)
            return np.zeros(lay.n, dt.bits_dtype)
        if lay.inline is not None and lay.base is None:   # small and whole: the common case, kept short
            pieces = [np.frombuffer(codecs.decode_chunk(lay.inline[p], lay.n, checked=False), np.uint8)
                      for p in range(k)]
            if k == dt.itemsize:
                return planes.merge(pieces, dt, lay.layout)
            return planes.midpoint(pieces, dt, lay.layout)
        plan = self._top_plan(addr, lay, k, parallel)
        if plan is None:   # decoded whole (and checked whole): the midpoint in place
            hit = self.cached(addr)
            words = self.checked_words(addr, parallel)
            if k == dt.itemsize:
                return words.copy() if words is hit else words
            return planes.midpoint_words(words, dt, lay.layout, k,
                                         out=np.empty_like(words) if words is hit else words)
        out = np.empty(lay.n, dt.bits_dtype)

        def merge(pieces: list[np.ndarray], a: int, b: int) -> None:
            if k == dt.itemsize:
                planes.merge(pieces, dt, lay.layout, out=out[a:b])
            else:
                planes.midpoint(pieces, dt, lay.layout, out=out[a:b])

        self._top_rows(plan, k, parallel, None, merge)
        return out

    def _top_levels(self, lay: _Layout, k: int):
        """The levels a read of the top ``k`` planes of ``lay`` depends on, as
        (level, planes needed, elements that count): down an XOR chain of one
        layout the top k planes of every level; from a level that must be
        decoded whole (a difference delta, an XOR over another layout) on,
        all its planes and its bases'."""
        cur, limit, need = lay, lay.n, k
        while True:
            if cur.base is not None and need < cur.dtype.itemsize and (
                    cur.op != "xor" or self._base_layout(cur).layout != cur.layout):
                need = cur.dtype.itemsize
            yield cur, need, limit
            if cur.base is None:
                break
            cur = self._base_layout(cur)
            limit = min(limit, cur.n)
            if limit == 0:
                break

    def top_stored_bytes(self, addr: bytes, k: int) -> int:
        """Stored (compressed) bytes of every chunk and inline plane frame a
        read of the top ``k`` planes of a tensor touches, down its delta chain
        (its record not counted). Reads the chunks to learn their sizes: for
        accounting, not on a timed path."""
        lay = self.parse(addr)
        total, keys = 0, []
        for level, need, limit in self._top_levels(lay, min(k, lay.dtype.itemsize)):
            if level.inline is not None:
                total += sum(len(level.inline[p]) for p in range(need))
            else:
                keys += [CHUNK + level.addrs[p][j] for p in range(need) for j in level.rows(0, limit)]
        for i in range(0, len(keys), 1024):
            for key, value in zip(keys[i:i + 1024], self.store.get_many(keys[i:i + 1024])):
                if value is None:
                    raise IntegrityError(f"chunk {key[1:].hex()[:16]} is missing")
                total += len(value)
        return total

    def _check_top_chunks(self, lay: _Layout, k: int, parallel: bool) -> None:
        """Read and check every stored chunk the top ``k`` planes of a tensor
        depend on, without decoding them: down an XOR chain of one layout the
        top k planes' chunks of every level; from a level that must be decoded
        whole (a difference delta, an XOR over another layout) on, all its
        planes and its bases'. Each level's rows up to the elements that count
        (format §4). Inline planes are covered by their record's own check.

        Each chunk must be present, pass its frame's trailing check (which
        catches every damaged stored byte) and name a known codec whose frame
        says the length its address says (see `_check_frame`)."""
        todo = [item for level, need, limit in self._top_levels(lay, k) if level.inline is None
                for item in ((level.addrs[p][j], level.lengths[j]) for p in range(need) for j in level.rows(0, limit))]
        batches, batch, size = [], [], 0
        for item in todo:   # bounded reads: a whole chain's chunks need not be in memory at once
            batch.append(item)
            size += item[1]
            if size >= (64 << 20):
                batches.append(batch)
                batch, size = [], 0
        if batch:
            batches.append(batch)

        def check(batch: list[tuple[bytes, int]]) -> None:
            values = self.store.get_many([CHUNK + a for a, _ in batch])
            for (a, n), value in zip(batch, values):
                _check_frame(value, a, n)

        if parallel and len(batches) > 1:
            list(self._pool().map(check, batches))
        else:
            for b in batches:
                check(b)

    def checked_words(self, addr: bytes, parallel: bool = True, what: str | None = None,
                      out: np.ndarray | None = None) -> np.ndarray:
        """All words of a tensor decoded whole (into ``out`` when given, as
        `words`) and checked against its content address: one digest of the
        result covers every chunk and every delta base, cheaper than hashing
        each chunk; only when it fails is the tensor decoded again chunk by
        chunk, to name the damaged chunk. ``what`` names the tensor in the error."""
        lay = self.parse(addr)
        hit = self.cached(addr)
        words = self._decode(lay, 0, lay.n, parallel, False, out) if hit is None else hit
        if records.tensor_matches(addr, lay.dtype.name, lay.shape, words):
            # A cached array is also held by whoever put it there (a snapshot
            # handed out, an archived input): the caller gets its own copy.
            if hit is None:
                return words
            if out is not None and out.shape == hit.shape and out.dtype == hit.dtype:
                np.copyto(out, hit)
                return out
            return hit.copy()
        # Decoded words kept in the cache are also held by their owners, who
        # may have changed them: decode from the store alone before blaming it.
        self.clear_cache()
        words = self.words(addr, parallel=parallel, verify_chunks=True)   # names a damaged chunk
        if not records.tensor_matches(addr, lay.dtype.name, lay.shape, words):
            raise IntegrityError(f"{what or 'tensor ' + addr.hex()[:16]} does not match its content address")
        return words

    def _top_plan(self, addr: bytes, lay: _Layout, k: int, parallel: bool) -> list[_TopLevel] | None:
        """The levels whose top k planes make up the tensor's, ``lay`` first
        (None: decode it whole). Down an XOR chain of one layout, the planes
        are the XOR of every level's; a level that cannot be read by planes (an
        integer-difference delta, or an XOR over a base of another layout) ends
        the chain, decoded whole with its own chain and split. Each level
        counts for elements [0, limit): past a level's end its words are zero
        to the levels above (format §4), so limits only shrink down the chain."""
        if lay.base is not None and (lay.op != "xor" or self._base_layout(lay).layout != lay.layout):
            return None
        plan, cur, limit = [], lay, lay.n
        while True:
            plan.append(_TopLevel(cur, limit))
            if cur.base is None:
                break
            base_addr, base = cur.base, self._base_layout(cur)
            limit = min(limit, base.n)
            if limit == 0:
                break
            if base.base is not None and (base.op != "xor" or self._base_layout(base).layout != base.layout):
                words = self.checked_words(base_addr, parallel)
                plan.append(_TopLevel(base, limit, planes.split(words[:limit], base.dtype, base.layout)[:k]))
                break
            cur = base
        for level in plan:
            lv = level.lay
            if level.fixed is None and lv.inline is not None:
                level.fixed = [np.frombuffer(codecs.decode_chunk(lv.inline[p], lv.n, checked=False), np.uint8)
                               for p in range(k)]
            elif level.fixed is None:
                level.rows = lv.rows(0, level.limit)
        return plan

    def _top_rows(self, plan: list[_TopLevel], k: int, parallel: bool,
                  dest: Callable[[int, int], list[np.ndarray]] | None,
                  done: Callable[[list[np.ndarray], int, int], None] | None) -> None:
        """Build the top k planes of every row of the tensor (the first level's
        chunk rows) and hand them to ``done(pieces, a, b)`` (elements [a, b)).
        The pieces are ``dest(a, b)`` when given (the caller's buffers), else
        this thread's scratch. Rows run on the pool when the tensor is big.

        Every chunk read is checked twice: its frame's trailing check (stored
        bytes) and its address (the decoded bytes are that chunk's), so a
        damaged or misplaced chunk raises IntegrityError, never wrong planes.
        """
        top = plan[0]
        lay = top.lay
        if top.fixed is not None:
            bounds = [(0, lay.n)]
        else:
            bounds = [(int(lay.offsets[j]), int(lay.offsets[j + 1])) for j in top.rows]
        deep = max([lv.lay.lengths[j] for lv in plan[1:] if lv.fixed is None for j in lv.rows] or [0])

        def row(i: int) -> None:
            a, b = bounds[i]
            # What covers [a, b): the first level's row whole, then each base's
            # chunks (or fixed planes) over the part of it they count for.
            parts = [(top, None if top.fixed is not None else top.rows[i], a, b, a, b)]
            for level in plan[1:]:
                e = min(b, level.limit)
                if e <= a:
                    break   # limits only shrink down the chain
                if level.fixed is not None:
                    parts.append((level, None, a, e, a, e))
                    continue
                lv = level.lay
                for j in lv.rows(a, e):
                    oa, ob = int(lv.offsets[j]), int(lv.offsets[j + 1])
                    parts.append((level, j, oa, ob, max(a, oa), min(e, ob)))
            # their stored chunks, read in one batch per row (memory stays one row's)
            values = iter(self.store.get_many([CHUNK + level.lay.addrs[p][j] for level, j, *_ in parts
                                               if j is not None for p in range(k)]))
            scratch = self._top_scratch(k + 1 if dest is None else 1, max(b - a, deep))
            pieces = dest(a, b) if dest is not None else [buf[:b - a] for buf in scratch[1:]]
            for n, (level, j, oa, ob, s, t) in enumerate(parts):
                for p in range(k):
                    if j is None:
                        src = level.fixed[p][s:t]
                    else:
                        into = pieces[p] if n == 0 else scratch[0][:ob - oa]
                        src = self._plane_piece(level.lay, p, j, next(values), True, into)[s - oa:t - oa]
                    target = pieces[p][s - a:t - a]
                    if n == 0:   # the first level covers the row: its planes are the start
                        if src.ctypes.data != target.ctypes.data:
                            target[:] = src   # fixed planes, and raw chunks (views of the stored value)
                    else:
                        np.bitwise_xor(target, src, out=target)
            if done is not None:
                done(pieces, a, b)

        if parallel and len(bounds) > 1 and lay.n * lay.dtype.itemsize >= (4 << 20):
            list(self._pool().map(row, range(len(bounds))))
        else:
            for i in range(len(bounds)):
                row(i)

    _top_local = threading.local()

    @classmethod
    def _top_scratch(cls, count: int, n: int) -> list[np.ndarray]:
        """This thread's ``count`` reusable buffers of n bytes for top-plane rows
        (apart from `_scratch`: a row may decode a whole base meanwhile)."""
        bufs = getattr(cls._top_local, "bufs", None)
        if bufs is None or len(bufs) < count or bufs[0].shape[0] < n:
            size = max(n, bufs[0].shape[0] if bufs else 0)
            bufs = cls._top_local.bufs = [np.empty(size, np.uint8) for _ in range(max(count, len(bufs or ())))]
        return [b[:n] for b in bufs[:count]]


class _TopLevel:
    """One level of a top-plane read: a record, the elements it counts for
    ([0, limit)), and either its top planes decoded up front (``fixed``: inline
    frames, or a level decoded whole) or the chunk rows it is read from."""

    __slots__ = ("fixed", "lay", "limit", "rows")

    def __init__(self, lay: _Layout, limit: int, fixed: list[np.ndarray] | np.ndarray | None = None):
        self.lay, self.limit, self.fixed = lay, limit, fixed
        self.rows: range = range(0)


def _check_frame(value, addr: bytes, size: int) -> None:
    """A stored chunk, checked without decoding it: present, its trailing check
    intact (every damaged stored byte), a known codec, and a frame of the
    length its address says (raw and const payloads, the zstd frame header;
    other codecs are decoded)."""
    if value is None:
        raise IntegrityError(f"chunk {addr.hex()[:16]} is missing")
    try:
        codec, payload = codecs.unframe(value)
        if isinstance(codec, codecs.Raw):
            ok = len(payload) == size
        elif isinstance(codec, codecs.Constant):
            ok = len(payload) == 1 or size == 0
        elif isinstance(codec, codecs.Zstd):
            import zstandard
            ok = zstandard.get_frame_parameters(payload).content_size in (size, zstandard.CONTENTSIZE_UNKNOWN)
        else:
            ok = len(codecs.decode_chunk(value, size)) == size
    except IntegrityError as exc:
        raise IntegrityError(f"chunk {addr.hex()[:16]}: {exc}") from None
    except Exception as exc:   # noqa: BLE001 - e.g. a zstd frame header that does not parse
        raise IntegrityError(f"chunk {addr.hex()[:16]} is damaged: {exc}") from None
    if not ok:
        raise IntegrityError(f"chunk {addr.hex()[:16]} does not hold the {size} bytes its address says")


def _midpoint_is_zero(dt: dtypes.DType, layout: str, k: int) -> bool:
    """planes-exp with one plane: the sign is missing, so every interval is
    symmetric about zero and its midpoint is 0."""
    return layout == "planes-exp" and k == 1 and dt.is_float and dt.itemsize > 1


def parse_record(addr: bytes, value: bytes) -> _Layout:
    """Check and parse one stored tensor record (no cache)."""
    rec, payload = records.unpack_tensor_record(value, f"tensor record {addr.hex()[:16]}")
    try:
        lay = _Layout(rec, payload)
    except (KeyError, TypeError, ValueError, PasError) as exc:   # e.g. a dtype name bit-flipped
        raise IntegrityError(f"tensor record {addr.hex()[:16]} is damaged: {exc}") from None
    # The record must describe the bytes its address names: a forged shape
    # would otherwise have a reader allocate whatever it claims.
    if lay.n * lay.dtype.itemsize != records.address_length(addr):
        raise IntegrityError(f"tensor record {addr.hex()[:16]} is damaged: its shape does not match its address")
    return lay


def _merge_window(pieces: list[np.ndarray], lay: _Layout, a: int, b: int,
                  out: np.ndarray, lo: int, base: np.ndarray | None = None) -> None:
    """Merge the planes of elements [a, b) of ``lay`` over ``out`` (elements from
    ``lo`` on), in place, or over ``base`` (a whole tensor's words, zeros past
    its end) into ``out``; the part of [a, b) outside ``out`` is decoded against
    zeros and dropped (rows of another chunking, or an inline tensor read in part)."""
    s, e = max(a, lo) - lo, min(b, lo + out.shape[0]) - lo
    if base is not None and a - lo == s and b - lo == e and b <= base.shape[0]:
        planes.merge(pieces, lay.dtype, lay.layout, out[s:e], base=base[a:b], op=lay.op)
        return
    if base is not None and s < e:   # the base ends inside this row: copy, pad, merge in place
        m = max(0, min(e + lo, base.shape[0]) - (s + lo))
        out[s:s + m] = base[s + lo:s + lo + m]
        out[s + m:e] = 0
    if a - lo == s and b - lo == e:   # the common case: the row lies inside out
        target = out[s:e]
        planes.merge(pieces, lay.dtype, lay.layout, target, base=target, op=lay.op)
        return
    tmp = np.zeros(b - a, out.dtype)
    if s < e:
        tmp[s + lo - a:e + lo - a] = out[s:e]
    planes.merge(pieces, lay.dtype, lay.layout, tmp, base=tmp, op=lay.op)
    if s < e:
        out[s:e] = tmp[s + lo - a:e + lo - a]



def bounds(top: np.ndarray, dt: dtypes.DType, layout: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Bit patterns of elements known only by their top planes, with the
    missing low bytes all zeros and all ones (in the layout's bit order, then
    mapped back to the element's own)."""
    k = top.shape[0]
    full = np.zeros((dt.itemsize, n), np.uint8)
    full[:k] = top
    zeros = planes.merge(full, dt, layout)
    full[k:] = 0xFF
    ones = planes.merge(full, dt, layout)
    return zeros, ones


def float_values(bits: np.ndarray, dt: dtypes.DType) -> np.ndarray:
    """Bit patterns as numpy floats (BF16 widened exactly to float32)."""
    if dt.name == "BF16":
        return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)
    if dt.name in ("F16", "F32", "F64"):
        return bits.view(dt.np_dtype)
    raise ValueError(f"value intervals need a float dtype numpy can compute with, not {dt.name}")


def interval(top: np.ndarray, dt: dtypes.DType, layout: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi] of every element's value, knowing its top planes (F16/F32/F64/BF16).

    Filling the missing bits with zeros and with ones gives the ends of the
    magnitude range; for negative numbers they swap, and when the sign bit
    itself is missing (planes-exp with one plane) the range is symmetric
    about zero. So lo <= true value <= hi for every element that is not NaN;
    an element whose exponent is all ones (inf or NaN) gets [v, v] with v its
    zero-filled value, or [-inf, inf] when its sign is missing.
    """
    a, b = (float_values(x, dt) for x in bounds(top, dt, layout, n))
    with np.errstate(invalid="ignore"):
        sign_known = np.signbit(a) == np.signbit(b)
        mag = np.fmax(np.abs(a), np.abs(b))
        lo = np.where(sign_known, np.fmin(a, b), -mag)
        hi = np.where(sign_known, np.fmax(a, b), mag)
        special = ~np.isfinite(a) | ~np.isfinite(b)
        lo = np.where(special, np.where(sign_known, a, -np.inf), lo)
        hi = np.where(special, np.where(sign_known, a, np.inf), hi)
    return lo.astype(a.dtype), hi.astype(a.dtype)


def midpoint(top: np.ndarray, dt: dtypes.DType, layout: str, n: int) -> np.ndarray:
    """Elements rebuilt from their top planes, each missing low part set to the
    middle of its range (the first missing bit set, the rest clear), in the
    layout's bit order. With planes-exp and one plane the sign is missing too:
    the interval is symmetric about zero, and so the midpoint is 0."""
    k = top.shape[0]
    if k >= dt.itemsize:
        return planes.merge(top, dt, layout)
    if _midpoint_is_zero(dt, layout, k):
        return np.zeros(n, dt.bits_dtype)
    return planes.midpoint(top, dt, layout)
