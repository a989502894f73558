"""Re-packing a repository by a storage plan (`pas repack`, docs/planning.md).

The plan is computed as `pas plan` computes it (`repo_graph.build`, the
budgets, a planner bounded by the repository's ``delta.max_depth``). Then,
for every tensor whose storage changes (whole -> delta, delta -> whole,
another base, or only its depth), a new record is written under the SAME key
(``t`` + address: the content is the same, only its encoding changes).

Safety order (docs/format.md §6):

  (a) the new plane streams are cut, deduplicated and compressed by the
      writer's own machinery (`VersionWriter._add_stream`, its batches and
      memory budget) and written as chunks, then the store is flushed: the
      new chunks are durable, and nothing names them yet;
  (b) every rewritten tensor is decoded from the new records (held in memory,
      over the store: `_Overlay`) and checked against its content address,
      and every chain's depths are checked; one mismatch and nothing is
      committed (`IntegrityError`);
  (c) all new records go in ONE synced RocksDB write batch: after a crash the
      store holds the old layout or the new one, never a mix (a chain's
      depths must agree level by level);
  (d) the chunks nothing names any more are removed by `Repository.gc` (itself
      crash-safe), or left for `pas gc` (``gc=False``).

Crash points (pas.faults): ``repack.chunks``, ``repack.verify``,
``repack.commit``, ``repack.gc`` before each step and ``<name>.done`` after.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import xxhash

from .. import planes, records
from ..delta import aligned_base, select
from ..errors import BadInput, IntegrityError, PasError, StoreError
from ..faults import crash_point
from ..records import TENSOR
from .algorithms import budgets_for
from .plan import check_model, evaluate

POINTS = ("repack.chunks", "repack.chunks.done", "repack.verify", "repack.verify.done",
          "repack.commit", "repack.commit.done", "repack.gc", "repack.gc.done")


def _step(name: str) -> None:
    """A repack crash point; an injected failure there (PAS_FAIL_AT) is a typed StoreError."""
    try:
        crash_point(name)
    except OSError as exc:
        raise StoreError(f"repack failed at {name}: {exc}") from None


@dataclass
class Target:
    """One tensor's storage today and under the plan."""

    vertex: str
    address: bytes
    base: bytes | None                  # planned delta base (None: whole)
    op: str | None                      # planned operator (None: whole)
    depth: int                          # planned depth
    old_base: bytes | None
    old_op: str | None
    old_depth: int
    kind: str                           # "unchanged" | "depth" (record only) | "encode" (new planes)

    def to_json(self) -> dict:
        def how(base, op):
            return "whole" if base is None else f"{op} against {base.hex()[:16]}"
        return {"vertex": self.vertex, "address": self.address.hex(), "kind": self.kind,
                "before": how(self.old_base, self.old_op), "after": how(self.base, self.op),
                "depth_before": self.old_depth, "depth_after": self.depth}


@dataclass
class RepackResult:
    dry_run: bool
    algorithm: str
    recreation_model: str
    max_depth: int
    storage: dict                        # estimated bytes: before / after
    recreation: dict                     # snapshot -> {"before", "after", "budget"}
    feasible: dict                       # before / after
    depth: dict                          # deepest chain before / after
    tensors: dict                        # unchanged / depth / encode -> count
    changes: list = field(default_factory=list)
    chunks_written: int = 0
    chunks_reused: int = 0
    records_written: int = 0
    orphan_records_removed: int = 0
    bytes_written: int = 0               # new chunks and records (keys and values)
    verified: int = 0                    # tensors decoded from the new layout and checked
    gc: dict | None = None
    physical_before: int = 0
    physical_after: int | None = None
    seconds: float = 0.0
    version_factors: dict | None = None  # measured / modelled retrieval per version, if measured
    margin: float = 0.0                  # each version planned this fraction under its budget
    passes: list | None = None           # a refined repack's two passes (`repack`, ``refine``)

    def to_json(self) -> dict:
        out = dict(self.__dict__)
        out["budgets"] = {s: (None if v["budget"] is None else v["budget"]) for s, v in self.recreation.items()}
        return out


class _Overlay:
    """The store as the commit will leave it: new tensor records over the
    current store (read-only, for `TensorReader`)."""

    read_only = True

    def __init__(self, store, new_records: dict[bytes, bytes]):
        self.store = store
        self.new = new_records

    def get(self, key: bytes):
        v = self.new.get(bytes(key))
        return v if v is not None else self.store.get(key)

    def get_many(self, keys):
        keys = [bytes(k) for k in keys]
        missing = [k for k in keys if k not in self.new]
        found = dict(zip(missing, self.store.get_many(missing)))
        return [self.new[k] if k in self.new else found[k] for k in keys]


def targets(repo, rg, p) -> list[Target]:
    """Per stored tensor of the graph, its storage today and under plan ``p``,
    bases before the tensors stored against them (ascending planned depth)."""
    g = rg.graph
    depth = rg.depths(p)
    out = []
    for vname, tv in rg.vertices.items():
        if tv.address is None:          # a group of tiny tensors: always whole, never changed
            continue
        arc = p.parents[vname]
        if arc.src == g.root:
            base, op = None, None
        else:
            base = rg.vertices[arc.src].address
            if base is None:
                raise PasError(f"plan stores {vname} against a group of small tensors")
            op = rg.edge_ops.get(arc.edge) or "xor"
        lay = repo.reader.parse(tv.address)
        if base == lay.base:
            op = lay.op                 # same base: keep today's planes (and operator)
            kind = "unchanged" if depth[vname] == lay.depth else "depth"
        else:
            kind = "encode"
        out.append(Target(vname, tv.address, base, op, depth[vname], lay.base, lay.op, lay.depth, kind))
    out.sort(key=lambda t: (t.depth, t.vertex))
    return out


class _Repacker:
    def __init__(self, repo, rg, tgts: list[Target]):
        from ..writer import VersionWriter
        self.repo = repo
        self.rg = rg
        self.targets = tgts
        self.reader = repo.reader
        self.w = VersionWriter(repo, bases=None, workers=1)   # its chunk machinery, batches and memory budget
        self.layout_of: dict[bytes, str] = {}
        self.new_records: dict[bytes, bytes] = {}

    # ----------------------------------------------------------------- read
    def _words(self, addr: bytes) -> np.ndarray:
        """A tensor's words from today's layout, checked against its address (kept, bounded, for its deltas)."""
        hit = self.reader.cached(addr)
        if hit is not None:
            return hit
        try:
            words = self.reader.checked_words(addr)
        except IntegrityError as exc:
            raise IntegrityError(f"{exc}; run `pas verify` (nothing was changed)") from None
        self.reader.remember(addr, words)
        return words

    # --------------------------------------------------------------- encode
    def _choose(self, sample: np.ndarray, dt, base_sample, base_layout: str | None, n_total: int,
                planned_op: str) -> tuple[str, str | None]:
        """The plane layout (whole: the writer's choice; delta: the base's, as
        the writer keeps it) and the cheaper operator on the sample."""
        if base_sample is None:
            return select.choose(sample, dt, [], self.w.ops, self.w.layouts, n_total=n_total).layout, None
        ops = [o for o in self.w.ops] or [planned_op]
        if len(ops) == 1:
            return base_layout, ops[0]
        est = {o: select.plane_entropy_bytes(planes.split(sample, dt, base_layout, base=base_sample, op=o))
               for o in ops}
        return base_layout, min(ops, key=lambda o: (est[o], o != planned_op))

    def encode(self, t: Target) -> None:
        lay = self.reader.parse(t.address)
        dt, n = lay.dtype, lay.n
        base_layout = self.layout_of[t.base] if t.base is not None else None
        rec = {"dtype": dt.name, "shape": list(lay.shape)}
        if "change" in lay.rec:
            rec["change"] = lay.rec["change"]   # a fact about the tensor's content, not its encoding
        w = self.w
        if n * dt.itemsize <= w.budget.slab_bytes:
            words = self._words(t.address)
            base = aligned_base(self._words(t.base), n) if t.base is not None else None
            idx = select.sample_index(n)
            layout, op = self._choose(words[idx], dt, None if base is None else base[idx], base_layout,
                                      n, t.op)
            words_of = lambda a, b: words[a:b]
            base_of = lambda a, b: None if base is None else base[a:b]
        else:   # slab by slab, as the writer encodes a tensor bigger than a slab
            windows = select.sample_windows(n)
            sample = np.concatenate([self.reader.range_words(t.address, a, b) for a, b in windows])
            base_sample = (np.concatenate([self.w.base_range(t.base, a, b) for a, b in windows])
                           if t.base is not None else None)
            layout, op = self._choose(sample, dt, base_sample, base_layout, n, t.op)
            words_of = lambda a, b: self.reader.range_words(t.address, a, b)
            base_of = lambda a, b: None if t.base is None else self.w.base_range(t.base, a, b)
        fields, payload = w.encode_planes(n, dt, layout, op, words_of, base_of)
        rec.update(fields)
        if op is not None:
            rec["delta"] = {"op": op, "base": t.base.hex()}
            rec["depth"] = t.depth
        t.op = op
        self.layout_of[t.address] = layout
        self.new_records[TENSOR + t.address] = records.pack_tensor_record(rec, payload)

    def restamp(self, t: Target) -> None:
        """Same planes, new depth: the record rewritten with its depth only."""
        rec, payload = records.unpack_tensor_record(self.repo.store.get(TENSOR + t.address),
                                                    f"tensor record {t.address.hex()[:16]}")
        rec["depth"] = t.depth
        self.new_records[TENSOR + t.address] = records.pack_tensor_record(rec, bytes(payload))

    def run_encode(self, progress=None) -> None:
        for t in self.targets:
            lay = self.reader.parse(t.address)
            if t.kind != "encode" and t.base is not None and t.op == "xor" and \
                    self.layout_of.get(t.base, lay.layout) != lay.layout:
                t.kind = "encode"       # an XOR delta keeps its base's layout (format §4): re-split it
            if t.kind == "encode":
                self.encode(t)
            else:
                self.layout_of[t.address] = lay.layout
                if t.kind == "depth":
                    self.restamp(t)
            if progress:
                progress(lay.n * lay.dtype.itemsize)

    # --------------------------------------------------------------- verify
    def verify(self, max_depth: int) -> int:
        """Decode every rewritten tensor from the new records (over the store)
        and check it against its content address; check every chain's depths.
        IntegrityError on any mismatch: the caller commits nothing."""
        from ..reader import TensorReader
        vr = TensorReader(_Overlay(self.repo.store, self.new_records), lambda: self.repo.pool,
                          cache_bytes=self.w.budget.cache_bytes)
        for t in self.targets:         # structure: depth = base depth + 1, within the bound
            lay = vr.parse(t.address)
            want = 0 if lay.base is None else vr.parse(lay.base).depth + 1
            if lay.depth != want or lay.depth > max_depth or lay.base != t.base or lay.depth != t.depth:
                raise IntegrityError(f"repack: tensor {t.address.hex()[:16]} would be stored at depth "
                                     f"{lay.depth} (expected {want}, bound {max_depth}); nothing was changed")
        checked = 0
        for t in self.targets:          # bases first: a verified base may be kept for its deltas
            if TENSOR + t.address not in self.new_records:
                continue
            lay = vr.parse(t.address)
            nbytes = lay.n * lay.dtype.itemsize
            if nbytes <= self.w.budget.slab_bytes:
                words = vr.words(t.address, parallel=True)
                ok = records.tensor_matches(t.address, lay.dtype.name, lay.shape, words)
                if ok:
                    vr.remember(t.address, words)
                del words
            else:
                h = xxhash.xxh3_128()
                h.update(f"{lay.dtype.name}|{','.join(map(str, lay.shape))}|".encode())
                step = self.w.budget.slab_elements(lay.dtype.itemsize, self.w.chunk_elements)
                for a in range(0, lay.n, step):
                    h.update(memoryview(np.ascontiguousarray(vr.range_words(t.address, a, min(lay.n, a + step)))
                                        .view(np.uint8)))
                ok = h.digest() == records.address_digest(t.address)
            if not ok:
                raise IntegrityError(f"repack: the new encoding of tensor {t.address.hex()[:16]} ({t.vertex}) "
                                     "does not decode to its content; nothing was changed")
            checked += 1
        vr.clear_cache()
        return checked


def _orphans_to_remove(repo, changed: set[bytes]) -> list[bytes]:
    """Tensor records no version reaches (leftovers of interrupted archives, which
    `gc` removes anyway) whose chain runs through a rewritten record: their
    depths would no longer agree, so they go in the commit's batch."""
    live: set[bytes] = set()
    for v in repo.versions():
        live.update(e.object for e in v.tensors + v.files)
    todo = list(live)
    while todo:
        lay = repo.reader.parse(todo.pop())
        if lay.base is not None and lay.base not in live:
            live.add(lay.base)
            todo.append(lay.base)
    base_of: dict[bytes, bytes | None] = {}
    for key in repo.store.list_prefix(TENSOR):
        if key[1:] not in live:
            try:
                base_of[key[1:]] = repo.reader.parse(key[1:]).base
            except IntegrityError:
                base_of[key[1:]] = None      # damaged leftovers: gc's business, not ours
    doomed: set[bytes] = set()
    grew = True
    while grew:                              # through chains of leftovers too
        grew = False
        for a, base in base_of.items():
            if a not in doomed and base is not None and (base in changed or base in doomed):
                doomed.add(a)
                grew = True
    return sorted(doomed)


def repack(repo, algorithm: str = "best", alpha: float | None = None, max_seconds: float | None = None,
           model: str = "independent", dry_run: bool = False, gc: bool = True, recalibrate: bool = False,
           progress=None, measure_versions: bool = False, margin: float = 0.0,
           refine: bool = False) -> RepackResult:
    """Plan ``repo`` (as `pas plan`) and re-encode every tensor whose storage the plan changes.

    ``repo`` must be open for writing unless ``dry_run`` (which only reports).
    The repository's write lock (RocksDB's LOCK) is held by that open handle.
    ``measure_versions``: time every version's retrieval first and plan each
    one against its budget less the model's measured error on it
    (`repo_graph.version_factors`). ``margin``: every version planned that
    fraction under its budget (`repo_graph.planning_budgets`). ``refine``:
    apply the plan, then time every version in its new layout and plan and
    apply again with those factors: the model's error on a version depends on
    its layout, and this measures it in the layout the plan chose. The result
    is the second pass's, with the first's "before" figures and both passes'
    work added up (``passes`` has each)."""
    check_model(model)
    if alpha is not None and max_seconds is not None:
        raise BadInput("a budget factor and a time budget exclude each other")
    if not dry_run and repo.store.read_only:
        raise BadInput("repository was opened read-only")
    if not refine:
        return _repack_once(repo, algorithm, alpha, max_seconds, model, dry_run, gc, recalibrate, progress,
                            measure_versions, margin)
    if dry_run:
        raise BadInput("refining applies a plan and measures it: it cannot be a dry run")
    # The store's size is read (every key and value) before the first pass and
    # after the second only: the result reports no size in between.
    first = _repack_once(repo, algorithm, alpha, max_seconds, model, False, False, recalibrate, progress,
                         measure_versions, margin, size_after=False)
    second = _repack_once(repo, algorithm, alpha, max_seconds, model, False, gc, False, progress, True, margin,
                          physical_before=first.physical_before)
    return _two_passes(first, second)


def _two_passes(first: RepackResult, second: RepackResult) -> RepackResult:
    """One result for a refined repack: the second pass's plan and layout, the
    first pass's starting point, the work of both."""
    res = second
    res.passes = [{k: getattr(r, k) for k in ("storage", "feasible", "depth", "tensors", "chunks_written",
                                              "records_written", "verified", "seconds", "version_factors")}
                  for r in (first, second)]
    for key in ("storage", "feasible", "depth"):
        setattr(res, key, {"before": getattr(first, key)["before"], "after": getattr(second, key)["after"]})
    for s, r in res.recreation.items():
        r["before"] = first.recreation[s]["before"]
    for key in ("chunks_written", "chunks_reused", "records_written", "orphan_records_removed", "bytes_written",
                "verified"):
        setattr(res, key, getattr(first, key) + getattr(second, key))
    res.seconds = first.seconds + second.seconds
    return res


def _repack_once(repo, algorithm, alpha, max_seconds, model, dry_run, gc, recalibrate, progress,
                 measure_versions, margin, physical_before: int | None = None,
                 size_after: bool = True) -> RepackResult:
    from . import repo_graph
    started = time.perf_counter()
    rg = repo_graph.build(repo, model, recalibrate=recalibrate, measure=False)
    g = rg.graph
    if max_seconds is not None:
        if not (max_seconds >= 0 and math.isfinite(max_seconds)):
            raise BadInput(f"the time budget must be a finite number >= 0, got {max_seconds!r}")
        budgets = {s: float(max_seconds) for s in g.snapshots}
    else:
        budgets = budgets_for(g, model, alpha)
    p, factors = repo_graph.plan_repository(repo, rg, algorithm, budgets, measure_versions=measure_versions,
                                            margin=margin)
    ev, before = evaluate(g, p, budgets, model), evaluate(g, rg.current, budgets, model)
    d_before, d_after = rg.depths(rg.current), rg.depths(p)
    if max(d_after.values(), default=0) > rg.max_depth:
        raise PasError(f"plan chains deeper than delta.max_depth {rg.max_depth} (a planner bug); nothing was changed")
    tgts = targets(repo, rg, p)
    fin = (lambda x: None if math.isinf(x) else x)
    res = RepackResult(
        dry_run=dry_run, algorithm=p.algorithm, recreation_model=model, max_depth=rg.max_depth,
        storage={"before": before.storage, "after": ev.storage, "units": "bytes (estimated)"},
        recreation={s: {"before": before.recreation[s], "after": ev.recreation[s], "budget": fin(budgets[s])}
                    for s in g.snapshots},
        feasible={"before": before.feasible, "after": ev.feasible},
        depth={"before": max(d_before.values(), default=0), "after": max(d_after.values(), default=0)},
        tensors={}, physical_before=repo.physical_bytes() if physical_before is None else physical_before,
        version_factors=factors, margin=margin)
    if dry_run:
        _summarise(res, tgts)
        res.seconds = time.perf_counter() - started
        return res
    rp = _Repacker(repo, rg, tgts)
    try:
        if any(t.kind != "unchanged" for t in tgts):
            rp.run_encode(progress)
            changed = {k[1:] for k in rp.new_records}
            _step("repack.chunks")                   # (a) new chunks durable
            rp.w.flush()
            if rp.w.bulk_written:
                repo.store.flush()
            _step("repack.chunks.done")
            _step("repack.verify")                   # (b) every rewritten tensor bit-exact
            res.verified = rp.verify(rg.max_depth)
            _step("repack.verify.done")
            orphans = _orphans_to_remove(repo, changed)
            _step("repack.commit")                   # (c) one synced atomic batch
            repo.store.write(list(rp.new_records.items()), deletes=[TENSOR + a for a in orphans], sync=True)
            _step("repack.commit.done")
            res.orphan_records_removed = len(orphans)
            res.records_written = len(rp.new_records)
            res.chunks_written, res.chunks_reused = rp.w.chunks_written, rp.w.chunks_reused
            res.bytes_written = rp.w.physical_added + sum(len(k) + len(v) for k, v in rp.new_records.items())
    finally:
        repo.reader.clear_cache()                    # parsed records are stale after the commit
    _summarise(res, tgts)
    if gc:
        _step("repack.gc")                           # (d) chunks nothing names any more
        res.gc = repo.gc(force=True).to_json()
        _step("repack.gc.done")
    if size_after:
        res.physical_after = repo.physical_bytes()
    res.seconds = time.perf_counter() - started
    return res


def _summarise(res: RepackResult, tgts: list[Target]) -> None:
    res.tensors = {k: sum(1 for t in tgts if t.kind == k) for k in ("unchanged", "depth", "encode")}
    res.changes = [t.to_json() for t in tgts if t.kind != "unchanged"]
