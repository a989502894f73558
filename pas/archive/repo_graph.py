"""The matrix storage graph of a repository's own versions (paper Def. 1, issue 6).

Vertices are the distinct stored tensors of every version (by tensor record
address), plus the root ``v0`` (store whole). Edges:

- ``v0 -> t``: store t whole; storage = its estimated whole size;
- ``a - b``: store one as a delta against the other, for tensors of the same
  name (dtype, row shape) in versions that are parent and child (manifest
  ``parent``, and ``delta_source``), and, when the same-named one is missing
  or unlike, the two most similar same-shaped tensors of other names there
  (as the writer picks bases); plus every delta the repository stores today.

Storage costs are bytes, estimated as the writer estimates them
(`pas.delta.select`): the order-0 entropy of the byte planes of a sample of
the tensor (windows read with `TensorReader.range_words`, so memory stays
bounded), the cheaper plane layout, and for deltas the cheaper of xor/sub;
plus the record and chunk overhead. Recreation costs are seconds from a cost
model calibrated on this machine (`calibrate`): decoding one level of a chain
costs ``a + b * stored_bytes + c * elements`` (read + decompress + merge), so a
chain costs the sum over its levels, as the storage graph's paths do.

Tiny tensors (below `select.MIN_SAVING` bytes, stored whole, nobody's base)
are always whole: they are folded into one vertex per set of versions that
holds them (cost: their sum; in the parallel model their maximum recreation).

Snapshots are versions (``name@shortid``). `RepoGraph.current` is the plan the
repository stores today, read from the records, so a plan can be compared
with it. Nothing here writes to the store; `.pas/costs.json` (the calibrated
model) is the only file written.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from .. import dtypes, planes
from ..delta import select
from ..errors import BadInput
from ..records import CHUNK, TENSOR
from .graph import Edge, StorageGraph
from .plan import Plan, check_model

COSTS_FILE = "costs.json"
#: Tensors at most this big are decoded whole to take their sample (one decode
#: instead of one per window); bigger ones are read window by window.
WHOLE_READ_BYTES = 8 << 20
#: Same-shaped tensors of other names considered per tensor, and kept.
OTHER_CANDIDATES, OTHER_KEPT = 8, 2
#: Bytes of a tensor record besides its frames (key, length, JSON body, check), and per chunk.
RECORD_OVERHEAD = 26 + 4 + 160 + 8
CHUNK_OVERHEAD = 26 + 9 + 55      # key, frame tag + check, its address in the record's JSON


# ------------------------------------------------------------------ cost model
@dataclass(frozen=True)
class CostModel:
    """Seconds to decode one level of a delta chain: a + b * stored bytes + c * elements."""

    a: float
    b: float
    c: float
    host: str = ""
    measured: str = ""
    samples: int = 0
    residual: float = 0.0           # root mean square relative error of the fit

    def seconds(self, stored_bytes: float, elements: int) -> float:
        return self.a + self.b * stored_bytes + self.c * elements

    def to_json(self) -> dict:
        return {"model": "seconds = a + b * stored_bytes + c * elements, per decoded chain level",
                "a": self.a, "b": self.b, "c": self.c, "host": self.host, "measured": self.measured,
                "samples": self.samples, "residual": self.residual}

    @classmethod
    def from_json(cls, obj) -> CostModel:
        if not isinstance(obj, dict):
            raise ValueError("not an object")
        vals = [obj.get(k) for k in ("a", "b", "c")]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                   for v in vals):
            raise ValueError("a, b, c must be finite numbers >= 0")
        return cls(*map(float, vals), host=str(obj.get("host", "")), measured=str(obj.get("measured", "")),
                   samples=int(obj.get("samples", 0)), residual=float(obj.get("residual", 0.0)))


def host_id() -> str:
    """What a calibration is valid for: this machine (name, architecture, CPUs)."""
    return f"{platform.node()}/{platform.machine()}/{os.cpu_count()}"


def _chain(reader, addr: bytes) -> list:
    """The parsed records of a tensor's delta chain, the tensor first."""
    lay = reader.parse(addr)
    out = [lay]
    while out[-1].base is not None:
        out.append(reader.parse(out[-1].base))
    return out


def stored_bytes(repo, addr: bytes, batch: int = 64) -> int:
    """Bytes a tensor's own record and chunks take in the store (keys and values;
    a chunk repeated within the tensor counted once). Chunks are read in
    batches, only to measure them."""
    value = repo.store.get(TENSOR + addr)
    if value is None:
        from ..errors import IntegrityError
        raise IntegrityError(f"tensor record {addr.hex()[:16]} is missing")
    total = len(TENSOR) + len(addr) + len(value)
    lay = repo.reader.parse(addr)
    chunks = list(dict.fromkeys(a for plane in lay.addrs for a in plane))
    for i in range(0, len(chunks), batch):
        keys = [CHUNK + a for a in chunks[i:i + batch]]
        total += sum(len(k) + len(v) for k, v in zip(keys, repo.store.get_many(keys)) if v is not None)
    return total


def _nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Non-negative least squares for a handful of columns: the best
    unconstrained fit over every subset of columns whose coefficients are all
    non-negative (exact; 2^k small fits). Keeps scipy out of `pas plan`:
    Numba imports scipy whenever it is installed, which costs every archive
    0.4 s of start-up, so pas does not depend on it."""
    k = a.shape[1]
    best, best_err = np.zeros(k), float(np.sum(b * b))
    for mask in range(1, 1 << k):
        cols = [j for j in range(k) if mask >> j & 1]
        sol, *_ = np.linalg.lstsq(a[:, cols], b, rcond=None)
        if np.all(sol >= 0):
            coef = np.zeros(k)
            coef[cols] = sol
            err = float(np.sum((a @ coef - b) ** 2))
            if err < best_err:
                best, best_err = coef, err
    return best


def calibrate(repo, max_tensors: int = 16, repeats: int = 3, max_bytes: int = 128 << 20,
              max_candidates: int = 400) -> CostModel:
    """Fit the cost model by timing real decodes of some of the repository's tensors.

    Picked so the three terms can be told apart: the two smallest tensors (the
    fixed cost), tensors spread over sizes, and those with the fewest and the
    most stored bytes per element (sparse deltas against whole tensors). Each
    is decoded ``repeats`` times from cold reader state (the record re-read and
    re-parsed, nothing decoded cached), the fastest time kept. A chain of L
    levels is modelled as the sum over its levels; a, b, c are the
    non-negative least-squares fit on relative errors.
    """
    reader = repo.reader
    addrs: dict[bytes, None] = {}
    for v in repo.versions():
        for e in v.tensors:
            addrs.setdefault(e.object)
    if not addrs:
        raise BadInput("the repository has no tensors to calibrate the cost model on")
    by_size = sorted((reader.parse(a).n * reader.parse(a).dtype.itemsize, a) for a in addrs)
    small = [a for _, a in by_size[:2]]
    pool = [(s, a) for s, a in by_size if s <= max_bytes and a not in small] or by_size[:1]
    if len(pool) > max_candidates:
        pool = [pool[round(i * (len(pool) - 1) / (max_candidates - 1))] for i in range(max_candidates)]
    sizes: dict[bytes, int] = {}

    def chain_features(a: bytes) -> list[float]:
        chain = _chain(reader, a)
        feats = [0.0, 0.0, 0.0]
        for lay, level_addr in zip(chain, [a] + [lay.base for lay in chain[:-1]]):
            if level_addr not in sizes:
                sizes[level_addr] = stored_bytes(repo, level_addr)
            feats[0] += 1
            feats[1] += sizes[level_addr]
            feats[2] += min(lay.n, chain[0].n)
        return feats

    feats = {a: chain_features(a) for _, a in pool}
    k = max(1, (max_tensors - len(small)) // 3)
    # Sizes spread on a log scale (most tensors of a model are small).
    lo, hi = math.log(max(1, pool[0][0])), math.log(max(1, pool[-1][0]))
    targets = [math.exp(lo + (hi - lo) * i / max(1, k - 1)) for i in range(k)]
    spread = [min(pool, key=lambda sa: abs(math.log(max(1, sa[0])) - math.log(t)))[1] for t in targets]
    # Bytes per element only mean something where the record overhead does not dominate.
    big = [a for s, a in pool if s >= (256 << 10)] or [a for _, a in pool]
    by_ratio = sorted(big, key=lambda a: feats[a][1] / max(1.0, feats[a][2]))
    picks = list(dict.fromkeys(small + spread + by_ratio[:k] + by_ratio[-k:]))
    for a in small:
        feats.setdefault(a, chain_features(a))
    rows, times = [], []
    calibrate.last = (rows, times)   # for inspection (tests, tuning)
    for a in picks:
        best = math.inf
        for _ in range(max(1, repeats)):
            reader.clear_cache()
            t0 = time.perf_counter()
            reader.words(a, parallel=False)
            best = min(best, time.perf_counter() - t0)
        reader.clear_cache()
        rows.append(feats[a])
        times.append(best)
    x, y = np.array(rows), np.array(times)
    # Relative errors (rows divided by their time), so the small tensors that
    # pin down the fixed cost count as much as the big ones; columns scaled
    # so the solver sees numbers of one magnitude.
    w = 1.0 / np.maximum(y, 1e-9)
    xs = x * w[:, None]
    scale = np.maximum(xs.max(axis=0), 1e-12)
    coef = _nnls(xs / scale, y * w)
    coef = coef / scale
    resid = float(np.sqrt(np.mean(((x @ coef - y) * w) ** 2)))
    return CostModel(float(coef[0]), float(coef[1]), float(coef[2]), host=host_id(),
                     measured=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     samples=len(picks), residual=resid)


def costs_path(repo):
    return None if repo.root is None else repo.root / COSTS_FILE


def load_costs(repo) -> CostModel | None:
    """The stored calibration, if there is one for this machine (None otherwise)."""
    path = costs_path(repo)
    if path is None or not path.is_file():
        return None
    try:
        model = CostModel.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        warnings.warn(f"{path} is unreadable ({exc}); calibrating again", stacklevel=2)
        return None
    return model if model.host == host_id() else None


def save_costs(repo, model: CostModel) -> bool:
    """Write `.pas/costs.json` (temporary file, rename); False if the directory is not writable."""
    path = costs_path(repo)
    if path is None:
        return False
    tmp = path.with_name(f"{COSTS_FILE}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(model.to_json(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        warnings.warn(f"could not save the calibrated cost model to {path} ({exc})", stacklevel=2)
        try:
            tmp.unlink()
        except OSError:
            pass
        return False
    return True


def cost_model(repo, recalibrate: bool = False) -> CostModel:
    """The repository's calibrated cost model: `.pas/costs.json`, else measured now and saved there."""
    model = None if recalibrate else load_costs(repo)
    if model is None:
        model = calibrate(repo)
        save_costs(repo, model)
    return model


# ------------------------------------------------------------------ the graph
@dataclass
class TensorVertex:
    """One vertex: a distinct stored tensor, or a group of tiny ones (``members``)."""

    vertex: str
    name: str                       # the first name it is listed under
    dtype: str
    shape: tuple[int, ...]
    elements: int
    address: bytes | None           # None for a group of tiny tensors
    whole_estimate: float           # estimated bytes stored whole (with overhead)
    stored: str = "whole"           # today: "whole" or the delta operator
    base: str | None = None         # today: the vertex it is a delta against
    depth: int = 0
    stored_bytes: int | None = None  # today: measured record + chunk bytes
    members: list[bytes] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)   # snapshots holding it

    def to_json(self) -> dict:
        out = {"vertex": self.vertex, "name": self.name, "dtype": self.dtype, "shape": list(self.shape),
               "elements": self.elements, "whole_estimate": self.whole_estimate,
               "stored": self.stored, "base": self.base, "depth": self.depth,
               "stored_bytes": self.stored_bytes, "versions": self.versions}
        if self.address is not None:
            out["address"] = self.address.hex()
        else:
            out["members"] = [m.hex() for m in self.members]
        return out


@dataclass
class RepoGraph:
    graph: StorageGraph
    costs: CostModel
    model: str                                  # recreation model the folded groups were built for
    vertices: dict[str, TensorVertex]
    snapshots: dict[str, dict]                  # label -> {"id", "name", "message", "parent"}
    edge_ops: dict[int, str]                    # edge index -> cheaper delta operator
    current: Plan                               # what the repository stores today
    max_depth: int                              # the repository's delta.max_depth
    seconds: float = 0.0                        # time to build

    def depths(self, plan: Plan) -> dict[str, int]:
        """Each vertex's chain depth under a plan (deltas applied to rebuild it)."""
        out: dict[str, int] = {}
        for v in plan.parents:
            path, u = [], v
            while u not in out and u != self.graph.root:
                path.append(u)
                u = plan.parents[u].src
            d = 0 if u == self.graph.root else out[u]
            for w in reversed(path):
                d += 1
                out[w] = d
        return {v: d - 1 for v, d in out.items()}   # a whole tensor (one arc from the root) has depth 0

    def describe(self, plan: Plan) -> list[dict]:
        """Per vertex: whole, or delta (operator) against which vertex."""
        rows = []
        for a in plan.arcs():
            whole = a.src == self.graph.root
            rows.append({"from": a.src, "to": a.dst, "storage": a.storage, "recreation": a.recreation,
                         "edge": a.edge, "op": None if whole else self.edge_ops.get(a.edge)})
        return rows


def _layouts(repo, dt: dtypes.DType, n: int) -> tuple[str, ...]:
    allowed = tuple(x for x in repo.config.get("layouts", ["planes"]) if x in planes.LAYOUTS) or ("planes",)
    # As select.choose: planes-exp only for floats of 2+ bytes and enough elements.
    if not (dt.is_float and dt.itemsize >= 2 and n >= select.PERMUTE_MIN_ELEMENTS):
        return ("planes",)
    return allowed


def _overhead(repo, nbytes: int, itemsize: int) -> float:
    from ..writer import INLINE_MAX  # a constant: read, not changed
    if nbytes <= INLINE_MAX:
        return RECORD_OVERHEAD + 5 * itemsize
    size = int(repo.config.get("chunker", {}).get("size", 1 << 20))
    per_plane = max(1, math.ceil(nbytes / itemsize / size))
    return RECORD_OVERHEAD + itemsize * per_plane * CHUNK_OVERHEAD


class _Sampler:
    """Samples of tensors' words at the writer's sample points (every
    ``max(1, n // select.SAMPLE)``-th element of n; points past a shorter
    tensor's end read as 0, as a delta's aligned base does), cached per
    (tensor, n). A big tensor is read slab by slab (`range_words`), so
    memory stays bounded by a slab, whatever its size."""

    def __init__(self, reader, slab_elements: int = 1 << 22):
        self.reader = reader
        self.slab = slab_elements
        self.cache: dict[tuple[bytes, int], np.ndarray] = {}

    def get(self, addr: bytes, n: int) -> np.ndarray:
        key = (addr, n)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        lay = self.reader.parse(addr)
        idx = np.arange(0, n, max(1, n // select.SAMPLE), dtype=np.int64)
        out = np.zeros(idx.shape[0], lay.dtype.bits_dtype)
        have = min(n, lay.n)
        if lay.n * lay.dtype.itemsize <= WHOLE_READ_BYTES:
            words = self.reader.words(addr, parallel=False)
            inside = idx < have
            out[inside] = words[idx[inside]]
        else:
            for a in range(0, have, self.slab):
                b = min(have, a + self.slab)
                lo, hi = np.searchsorted(idx, [a, b])
                if lo < hi:
                    out[lo:hi] = self.reader.range_words(addr, a, b)[idx[lo:hi] - a]
        self.cache[key] = out
        return out


def _entropy(sample: np.ndarray, dt: dtypes.DType, layout: str, n: int, base=None, op=None) -> float:
    return select.plane_entropy_bytes(planes.split(sample, dt, layout, base=base, op=op)) * n / sample.shape[0]


def _row_shape_ok(a, b) -> bool:
    """Same dtype and row shape: what a delta between two tensors needs (format §4)."""
    return a.dtype == b.dtype and (a.shape == b.shape or (len(a.shape) == len(b.shape) >= 1
                                                           and a.shape[1:] == b.shape[1:]))


def build(repo, model: str = "independent", costs: CostModel | None = None, others: bool = True,
          measure: bool = True, recalibrate: bool = False) -> RepoGraph:
    """The storage graph of every version of ``repo`` (opened read-only is enough).

    ``costs``: the cost model (default: `cost_model(repo)`, i.e. `.pas/costs.json`
    or a fresh calibration saved there). ``others``: also same-shaped tensors of
    other names as delta candidates. ``measure``: read every tensor's chunks to
    record the bytes it takes today (`TensorVertex.stored_bytes`).
    """
    check_model(model)
    started = time.perf_counter()
    costs = costs or cost_model(repo, recalibrate)
    reader = repo.reader
    versions = repo.versions()
    if not versions:
        raise BadInput("the repository has no versions to plan")
    by_id = {v.id: v for v in versions}
    ops = tuple(repo.config.get("delta", {}).get("ops", ["xor", "sub"]))

    # Snapshot labels: name@shortid, longer ids if two collide.
    labels: dict[bytes, str] = {}
    for v in versions:
        width = 12
        while f"{v.name}@{v.hex[:width]}" in labels.values():
            width += 4
        labels[v.id] = f"{v.name}@{v.hex[:width]}"

    # Distinct tensors and where they are listed.
    first: dict[bytes, object] = {}
    holders: dict[bytes, list[str]] = defaultdict(list)
    for v in versions:
        entries = v.tensors
        reader.prefetch([e.object for e in entries])
        for e in entries:
            first.setdefault(e.object, e)
            if labels[v.id] not in holders[e.object]:
                holders[e.object].append(labels[v.id])
    # Delta bases that no version lists (cannot happen with pas's writer, but
    # the records say so): vertices in no snapshot.
    todo = list(first)
    bases: set[bytes] = set()
    while todo:
        lay = reader.parse(todo.pop())
        if lay.base is not None:
            bases.add(lay.base)
            if lay.base not in first:
                blay = reader.parse(lay.base)
                first[lay.base] = _Entry(f"(base {lay.base.hex()[:12]})", blay.dtype.name, blay.shape, lay.base)
                todo.append(lay.base)

    def tiny(addr: bytes) -> bool:
        lay = reader.parse(addr)
        return lay.n * lay.dtype.itemsize < select.MIN_SAVING and lay.base is None and addr not in bases

    sampler = _Sampler(reader)
    vertices: dict[str, TensorVertex] = {}
    vertex_of: dict[bytes, str] = {}
    used_names: set[str] = {"v0"}

    def whole_estimate(addr: bytes) -> float:
        lay = reader.parse(addr)
        dt, n = lay.dtype, lay.n
        if n == 0:
            return _overhead(repo, 0, dt.itemsize)
        s = sampler.get(addr, n)
        est = min(_entropy(s, dt, lay_, n) for lay_ in _layouts(repo, dt, n))
        return est + _overhead(repo, n * dt.itemsize, dt.itemsize)

    groups: dict[tuple[str, ...], list[bytes]] = defaultdict(list)
    for addr, e in first.items():
        if tiny(addr):
            groups[tuple(holders[addr])].append(addr)
            continue
        lay = reader.parse(addr)
        vname = _unique(f"{e.name}#{addr.hex()[:8]}", used_names)
        vertex_of[addr] = vname
        vertices[vname] = TensorVertex(vname, e.name, lay.dtype.name, lay.shape, lay.n, addr,
                                       whole_estimate(addr), depth=lay.depth, versions=list(holders[addr]))
    group_cost: dict[str, tuple[float, float]] = {}
    for sig, members in groups.items():
        key = hashlib.blake2b("|".join(sig).encode(), digest_size=4).hexdigest()
        vname = _unique(f"small[{len(members)}]#{key}", used_names)
        ests = [whole_estimate(a) for a in members]
        lays = [reader.parse(a) for a in members]
        secs = [costs.seconds(s, lay.n) for s, lay in zip(ests, lays)]
        rec = math.fsum(secs) if model == "independent" else max(secs)
        group_cost[vname] = (math.fsum(ests), rec)
        for a in members:
            vertex_of[a] = vname
        vertices[vname] = TensorVertex(vname, f"{len(members)} small tensors", "", (), sum(x.n for x in lays),
                                       None, math.fsum(ests), members=list(members), versions=list(sig))

    # Current plan: from the records.
    for vname, tv in vertices.items():
        if tv.address is None:
            continue
        lay = reader.parse(tv.address)
        if lay.base is not None:
            tv.stored, tv.base = lay.op, vertex_of[lay.base]

    # Candidate delta pairs (base address, target address).
    pairs: dict[tuple[bytes, bytes], None] = {}
    for v in versions:
        srcs = dict.fromkeys(p for p in (v.parent, _hex(v.manifest.get("delta_source"))) if p in by_id)
        for p in (by_id[x] for x in srcs):
            pnames = {e.name: e for e in p.tensors}
            pshapes: dict[tuple, list] = defaultdict(list)
            for e in p.tensors:
                if not tiny(e.object):
                    pshapes[(e.dtype, e.shape)].append(e)
            for e in v.tensors:
                if tiny(e.object):
                    continue
                same = pnames.get(e.name)
                trusted = False
                if same is not None and _row_shape_ok(same, e) and not tiny(same.object):
                    if same.object != e.object:
                        pairs[(same.object, e.object)] = None
                    trusted = same.object == e.object or _similar(sampler, same.object, e.object, e.dtype)
                if others and not trusted:
                    cands = [o for o in pshapes.get((e.dtype, e.shape), []) if o.name != e.name
                             and o.object != e.object][:OTHER_CANDIDATES]
                    ranked = sorted(cands, key=lambda o: -_similarity(sampler, o.object, e.object, e.dtype))
                    for o in ranked[:OTHER_KEPT]:
                        pairs[(o.object, e.object)] = None
    for tv in vertices.values():   # every delta stored today is an edge
        if tv.address is not None and tv.base is not None:
            pairs[(vertices[tv.base].address, tv.address)] = None

    # Edges: the root's, then the deltas.
    edges: list[Edge] = []
    edge_ops: dict[int, str] = {}
    for vname, tv in vertices.items():
        if tv.address is None:
            storage, rec = group_cost[vname]
        else:
            storage, rec = tv.whole_estimate, costs.seconds(tv.whole_estimate, tv.elements)
        edges.append(Edge("v0", vname, storage, rec, True))
    current = {(vertices[tv.base].address, tv.address) for tv in vertices.values() if tv.base is not None}
    # Same length: one estimate serves both directions (xor is symmetric, a
    # zigzagged difference nearly so). Different lengths (a resized tensor):
    # each direction aligns its base to its own length, so each is estimated.
    todo_arcs: dict[tuple[bytes, bytes], None] = {}
    for b, t in pairs:
        same_n = reader.parse(b).n == reader.parse(t).n
        if same_n and (t, b) in todo_arcs:
            continue
        todo_arcs[(b, t)] = None
        if not same_n:
            todo_arcs.setdefault((t, b))
    for b, t in todo_arcs:
        lb, lt = reader.parse(b), reader.parse(t)
        same_n = lb.n == lt.n
        est, op = _delta_estimate(repo, sampler, b, t, ops)
        est += _overhead(repo, lt.n * lt.dtype.itemsize, lt.dtype.itemsize)
        # An arc that costs more than storing its target whole is dominated
        # (more storage and more recreation): left out, unless stored today.
        useful = [(x, y) for x, y in ([(b, t), (t, b)] if same_n else [(b, t)])
                  if est < vertices[vertex_of[y]].whole_estimate or (x, y) in current]
        if not useful:
            continue
        x, y = useful[0]
        edges.append(Edge(vertex_of[x], vertex_of[y], est, costs.seconds(est, lt.n), len(useful) == 1))
        edge_ops[len(edges) - 1] = op

    snapshots = {}
    snap_members: dict[str, list[str]] = {}
    for v in versions:
        label = labels[v.id]
        members = list(dict.fromkeys(vertex_of[e.object] for e in v.tensors))
        if members:
            snap_members[label] = members
        snapshots[label] = {"id": v.hex, "name": v.name, "message": v.message,
                            "parent": v.manifest.get("parent"), "tensors": len(v.tensors)}
    g = StorageGraph("v0", edges, snap_members)

    parents = {}
    for vname, tv in vertices.items():
        src = "v0" if tv.base is None else tv.base
        arcs = [a for a in g.in_arcs[vname] if a.src == src]
        if not arcs:
            raise AssertionError(f"the current layout of {vname} is not an edge of the graph")
        parents[vname] = min(arcs, key=lambda a: a.storage)
    if measure:
        for tv in vertices.values():
            tv.stored_bytes = (stored_bytes(repo, tv.address) if tv.address is not None
                               else sum(stored_bytes(repo, a) for a in tv.members))
    reader.clear_cache()
    return RepoGraph(g, costs, model, vertices, snapshots, edge_ops, Plan("current", parents),
                     int(repo.config.get("delta", {}).get("max_depth", 4)), time.perf_counter() - started)


@dataclass(frozen=True)
class _Entry:
    name: str
    dtype: str
    shape: tuple
    object: bytes


def _hex(h):
    return bytes.fromhex(h) if h else None


def _unique(name: str, used: set[str]) -> str:
    out, i = name, 1
    while out in used:
        i += 1
        out = f"{name}~{i}"
    used.add(out)
    return out


def _similarity(sampler: _Sampler, a: bytes, b: bytes, dtype: str) -> float:
    n = sampler.reader.parse(b).n
    return select.similarity(sampler.get(b, n), sampler.get(a, n), dtypes.get(dtype))


def _similar(sampler: _Sampler, a: bytes, b: bytes, dtype: str) -> bool:
    from ..writer import SAME_NAME_TRUST  # a constant: read, not changed
    return _similarity(sampler, a, b, dtype) >= SAME_NAME_TRUST


def _delta_estimate(repo, sampler: _Sampler, base: bytes, target: bytes, ops) -> tuple[float, str]:
    """Estimated bytes of ``target`` stored as a delta against ``base`` (the
    cheaper operator and plane layout), and that operator."""
    lt = repo.reader.parse(target)
    dt, n = lt.dtype, lt.n
    s, sb = sampler.get(target, n), sampler.get(base, n)
    best = (math.inf, ops[0])
    for layout in _layouts(repo, dt, n):
        for op in ops:
            est = _entropy(s, dt, layout, n, base=sb, op=op)
            best = min(best, (est, op))
    return best
