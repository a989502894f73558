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
model calibrated on this machine (`calibrate`) by timing real decodes and
real `Repository.retrieve` calls: decoding one level of a chain costs
``a + b * stored_bytes + c * elements`` (read + decompress + merge), so a
chain costs the sum over its levels, as the storage graph's paths do; and
every version has a fixed overhead, ``version + tensor * entries`` plus its
side files (the graph's snapshot overheads), so a snapshot's modelled cost is
the time to retrieve the whole version.

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
import statistics
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
#: Most seconds a calibration waits, in all, for the machine to be quiet (`Quiet`).
QUIET_SECONDS = 5.0
#: Tensors at most this big are decoded whole to take their sample (one decode
#: instead of one per window); bigger ones are read window by window.
WHOLE_READ_BYTES = 8 << 20
#: Same-shaped tensors of other names considered per tensor, and kept.
OTHER_CANDIDATES, OTHER_KEPT = 8, 2
#: Bytes of a tensor record besides its frames (key, length, JSON body, check), and per chunk.
RECORD_OVERHEAD = 26 + 4 + 160 + 8
CHUNK_OVERHEAD = 26 + 9 + 55      # key, frame tag + check, its address in the record's JSON


# ------------------------------------------------------------------ cost model
#: costs.json format 2: per-version and per-entry terms, and delta levels costed
#: apart from whole ones (a file of format 1 is measured again).
COSTS_FORMAT = 2


def _cost_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


@dataclass(frozen=True)
class CostModel:
    """Seconds to retrieve a version, as `Repository.retrieve` does it:

    ``version + tensor * entries`` (its manifest, per-entry bookkeeping and
    checks, output buffers: the same under every plan), plus, per tensor, the
    sum over its chain of each level's cost: ``a + b * stored bytes + c *
    elements`` for the whole tensor at its bottom, ``delta_a + delta_b *
    stored bytes + delta_c * elements`` for each delta applied over it.
    ``scale`` is what a level costs inside a whole retrieval against a lone
    decode when `calibrate` scaled its decode fit (the coefficients already
    include it), 0 when it fitted the retrievals directly. ``delta_a`` etc.
    default to the whole level's."""

    a: float
    b: float
    c: float
    host: str = ""
    measured: str = ""
    samples: int = 0
    residual: float = 0.0           # rms relative error of the retrieval fit (of the decode fit if none)
    version: float = 0.0            # seconds per version retrieved
    tensor: float = 0.0             # seconds per entry (tensor or side file) retrieved
    delta_a: float | None = None
    delta_b: float | None = None
    delta_c: float | None = None
    scale: float = 1.0              # what a level costs in a retrieval over decoded alone (0: fitted on retrievals)
    version_samples: int = 0        # timed retrievals (whole versions and subsets of them)
    decode_residual: float = 0.0    # rms relative error of the lone-decode fit

    def __post_init__(self):
        for k, whole in (("delta_a", self.a), ("delta_b", self.b), ("delta_c", self.c)):
            if getattr(self, k) is None:
                object.__setattr__(self, k, whole)

    def seconds(self, stored_bytes: float, elements: int, delta: bool = False) -> float:
        """One chain level: the whole tensor at the bottom, or (``delta``) one delta applied."""
        if delta:
            return self.delta_a + self.delta_b * stored_bytes + self.delta_c * elements
        return self.a + self.b * stored_bytes + self.c * elements

    def overhead(self, entries: int) -> float:
        """The fixed seconds of retrieving a version of ``entries`` tensors and side files."""
        return self.version + self.tensor * entries

    def to_json(self) -> dict:
        return {"format": COSTS_FORMAT,
                "model": "retrieve seconds = version + tensor * entries + per tensor, per chain level: "
                         "a + b * stored_bytes + c * elements (whole), delta_a + delta_b * stored_bytes + "
                         "delta_c * elements (each delta)",
                "a": self.a, "b": self.b, "c": self.c, "delta_a": self.delta_a, "delta_b": self.delta_b,
                "delta_c": self.delta_c, "version": self.version, "tensor": self.tensor, "scale": self.scale,
                "host": self.host, "measured": self.measured,
                "samples": self.samples, "version_samples": self.version_samples, "residual": self.residual,
                "decode_residual": self.decode_residual}

    @classmethod
    def from_json(cls, obj) -> CostModel:
        if not isinstance(obj, dict):
            raise ValueError("not an object")
        need = ("a", "b", "c", "version", "tensor")
        vals = {k: obj.get(k) for k in need}
        if not all(_cost_number(v) for v in vals.values()):
            raise ValueError(f"{', '.join(need)} must be finite numbers >= 0")
        opt = {k: obj.get(k) for k in ("delta_a", "delta_b", "delta_c", "scale") if obj.get(k) is not None}
        if not all(_cost_number(v) for v in opt.values()):
            raise ValueError("delta_a, delta_b, delta_c, scale must be finite numbers >= 0")
        return cls(**{k: float(v) for k, v in {**vals, **opt}.items()},
                   host=str(obj.get("host", "")), measured=str(obj.get("measured", "")),
                   samples=int(obj.get("samples", 0)), residual=float(obj.get("residual", 0.0)),
                   version_samples=int(obj.get("version_samples", 0)),
                   decode_residual=float(obj.get("decode_residual", 0.0)))


def host_id() -> str:
    """What a calibration is valid for: this machine (name, architecture, CPUs)."""
    return f"{platform.node()}/{platform.machine()}/{os.cpu_count()}"


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


def _warm_kernels() -> None:
    """Load pas's Numba plane kernels, as every process does once it has decoded
    enough: the calibration measures that steady state, not the first decodes of
    a fresh process (numpy, several times slower per element)."""
    import importlib
    try:
        importlib.import_module("pas._plane_kernels")
    except ImportError:         # no Numba: pas runs on numpy, and so does the calibration
        pass


def _cpu_jiffies() -> tuple[int, int] | None:
    """(all, idle) CPU time of the machine so far (Linux ``/proc/stat``), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            vals = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(vals), vals[3] + vals[4]) if len(vals) >= 5 else None


class Quiet:
    """Waits, before a timing, until the machine is quiet: other processes
    busy on at most ``threshold`` of the CPUs over a ``window`` (this process
    sleeps meanwhile, so what is busy is someone else). Timings are of this
    machine unloaded, the same for the cost model and for the measurements it
    is held against, whatever else runs on a shared machine. Checks at most
    every ``every`` seconds; waits at most ``max_wait`` seconds in all (then
    times anyway); a no-op where ``/proc/stat`` is missing."""

    def __init__(self, max_wait: float = 20.0, threshold: float = 0.25, window: float = 0.03,
                 every: float = 0.25):
        self.budget, self.threshold, self.window, self.every = max_wait, threshold, window, every
        self.last = -math.inf
        self.waited = 0.0
        self.ok = _cpu_jiffies() is not None

    def busy(self) -> float:
        a = _cpu_jiffies()
        time.sleep(self.window)
        b = _cpu_jiffies()
        if a is None or b is None or b[0] <= a[0]:
            return 0.0
        return 1.0 - (b[1] - a[1]) / (b[0] - a[0])

    def gate(self) -> None:
        now = time.perf_counter()
        if not self.ok or now - self.last < self.every:
            return
        while self.busy() > self.threshold and self.waited < self.budget:
            self.waited += self.window
        self.waited += self.window
        self.last = time.perf_counter()


def _median_times(jobs, repeats: int, quiet: Quiet | None = None) -> list[float]:
    """Each job timed ``repeats`` times round robin (a slow spell of a shared
    machine then falls on every job alike, and no job runs twice in a row on
    hot caches, which a retrieval never does); the median of each. ``quiet``
    gates the timings (`Quiet`)."""
    runs: list[list[float]] = [[] for _ in jobs]
    for _ in range(max(1, repeats)):
        for i, job in enumerate(jobs):
            if quiet is not None:
                quiet.gate()
            t0 = time.perf_counter()
            job()
            runs[i].append(time.perf_counter() - t0)
    return [float(np.median(r)) for r in runs]


def _relative_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-negative least squares on relative errors (rows divided by their
    time, so small retrievals count as much as big ones); columns scaled so
    the solver sees numbers of one magnitude. The coefficients and the root
    mean square relative error."""
    w = 1.0 / np.maximum(y, 1e-9)
    xs = x * w[:, None]
    scale = np.maximum(xs.max(axis=0), 1e-12)
    coef = _nnls(xs / scale, y * w) / scale
    return coef, float(np.sqrt(np.mean(((x @ coef - y) * w) ** 2)))


def _direct_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Retrieval times fitted on their own features (``drows`` of `calibrate`):
    per version, per entry, per delta level, per stored byte, per element of
    a whole level and per element of a delta level. None when the retrievals
    cannot tell these apart: no delta level among them, or a fit in which
    whole tensors or delta levels would cost nothing."""
    if not (x[:, 5] > 0).any() or not (x[:, 4] > 0).any():
        return None
    coef, resid = _relative_fit(x, y)
    _, _, delta_a, b, c, delta_c = coef
    if not (c > 0 or b > 0) or not (delta_a > 0 or delta_c > 0 or b > 0):
        return None
    return coef, resid


def calibrate(repo, max_tensors: int = 16, repeats: int = 5, max_bytes: int = 128 << 20,
              max_candidates: int = 400, max_versions: int = 48, max_version_bytes: int = 512 << 20,
              max_total_bytes: int = 1 << 30,
              quiet_seconds: float | None = None) -> CostModel:
    """Fit the cost model by timing real decodes and real retrievals of the repository's data.

    1. **Decoding a chain level**: about ``max_tensors`` tensors, picked so the
       terms can be told apart (the two smallest, sizes spread on a log scale,
       the fewest and most stored bytes per element, the deepest chains), each
       decoded from cold reader state (`TensorReader.words`, one thread)
       ``repeats`` times round robin, the median kept. A chain of L levels is
       L times ``a`` plus ``b`` per stored byte, plus ``c`` per element of its
       whole level and ``c_delta`` per element of each delta level.
    2. **Retrieving a version** (what budgets and `pas plan` speak of): up to
       ``max_versions`` versions (and ``max_total_bytes`` of them), spread
       over their decoding cost, each retrieved with `Repository.retrieve`
       whole and as subsets of its tensors (its cheapest half; its few
       dearest; those stored whole; those stored as deltas), so that the
       terms can be told apart; ``repeats`` times round robin, the median
       kept. Fitted on these retrievals' own features (`_direct_fit`):
       ``version + tensor * entries``, and per level ``b`` per stored byte
       plus ``c`` per element of a whole level, ``delta_a + delta_c *
       elements`` more for a delta level (``a`` is then 0: a tensor's fixed
       cost is in ``tensor``). Measured (SD-shaped repository calibrated in
       the writer's layout, its SPT and PAS layouts timed right after): a
       version's time predicted within 5-6% rms, and the ratio of the PAS
       layout's time to the SPT's within 3-5% (three calibrations); session
       10's fit, step 1's decode costs scaled by one factor, fitted its own
       retrievals within 17% rms only. That fit stays the fallback: when the
       retrievals have no delta level, or cannot tell whole tensors' costs or
       delta levels' from the fixed terms, ``version + tensor * entries +
       scale * decoding`` (decoding by step 1's model) is fitted instead. A
       retrieval reads at most ``max_version_bytes`` (bigger versions are
       timed by subsets).

    Both fits are non-negative least squares on relative errors. The Numba
    kernels are loaded first (`_warm_kernels`). Timings wait for a quiet
    machine (`Quiet`, at most ``quiet_seconds`` in all, default
    `QUIET_SECONDS`): the model is of this machine unloaded.
    """
    _warm_kernels()
    reader = repo.reader
    versions = repo.versions()
    addrs: dict[bytes, None] = {}
    for v in versions:
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
    feats: dict[bytes, list[float]] = {}

    def chain_features(a: bytes) -> list[float]:
        """[levels, stored bytes, elements of the whole level, elements of the delta levels]."""
        if a in feats:
            return feats[a]
        chain = reader.chain(a)
        n = chain[0][1].n
        f = [0.0, 0.0, 0.0, 0.0]
        for level_addr, lay in chain:
            if level_addr not in sizes:
                sizes[level_addr] = stored_bytes(repo, level_addr)
            f[0] += 1
            f[1] += sizes[level_addr]
            f[3 if lay.base is not None else 2] += min(lay.n, n)
        feats[a] = f
        return f

    for _, a in pool:
        chain_features(a)
    k = max(1, (max_tensors - len(small)) // 4)
    # Sizes spread on a log scale (most tensors of a model are small).
    lo, hi = math.log(max(1, pool[0][0])), math.log(max(1, pool[-1][0]))
    targets = [math.exp(lo + (hi - lo) * i / max(1, k - 1)) for i in range(k)]
    spread = [min(pool, key=lambda sa: abs(math.log(max(1, sa[0])) - math.log(t)))[1] for t in targets]
    # Bytes per element only mean something where the record overhead does not dominate.
    big = [a for s, a in pool if s >= (256 << 10)] or [a for _, a in pool]
    by_ratio = sorted(big, key=lambda a: feats[a][1] / max(1.0, feats[a][2] + feats[a][3]))
    deep = sorted((a for _, a in pool if feats[a][0] > 1), key=lambda a: (-feats[a][0], -feats[a][3]))
    picks = list(dict.fromkeys(small + spread + by_ratio[:k] + by_ratio[-k:] + deep[:k]))
    for a in small:
        chain_features(a)

    def decode(a: bytes):
        def job():
            reader.clear_cache()
            reader.words(a, parallel=False)
        return job

    quiet = Quiet(max_wait=QUIET_SECONDS if quiet_seconds is None else quiet_seconds)
    decode(picks[0])()                                # warm-up: first-call costs are not a tensor's
    times = _median_times([decode(a) for a in picks], repeats, quiet)
    reader.clear_cache()
    rows = [feats[a] for a in picks]
    calibrate.last = (rows, times)   # for inspection (tests, tuning)
    x1 = np.array(rows)
    if x1[:, 3].any():
        (a1, b1, c1, cd1), decode_resid = _relative_fit(x1, np.array(times))
        if cd1 <= 0:       # could not be told apart: one cost per element for every level
            cd1 = c1
    else:                  # no delta among the picks: delta levels cost what whole ones do
        (a1, b1, c1), decode_resid = _relative_fit(x1[:, :3], np.array(times))
        cd1 = c1

    # 2. whole retrievals, and subsets of them
    def split_cost(addr: bytes) -> tuple[float, float]:
        f = chain_features(addr)
        delta_levels = f[0] - 1
        whole = a1 + b1 * f[1] / f[0] + c1 * f[2]            # stored bytes shared out by level
        return whole, delta_levels * a1 + b1 * f[1] * delta_levels / f[0] + cd1 * f[3]

    def cost(addr: bytes) -> float:
        return sum(split_cost(addr))

    def nbytes(e) -> int:
        lay = reader.parse(e.object)
        return lay.n * lay.dtype.itemsize

    whole = {v.id: math.fsum(cost(e.object) for e in v.tensors + v.files) for v in versions}
    order = sorted(versions, key=lambda v: whole[v.id])
    total_bytes = sum(nbytes(e) for v in order for e in v.tensors + v.files)
    # As many versions as max_versions and max_total_bytes allow, spread over their cost.
    keep = min(max_versions, len(order),
               max(2, int(len(order) * max_total_bytes / max(1, total_bytes))))
    if len(order) > keep:
        order = [order[round(i * (len(order) - 1) / (keep - 1))] for i in range(keep)]
    vrows: list[list[float]] = []   # [1, entries, step 1's whole-level cost, its delta-level cost]
    drows: list[list[float]] = []   # [1, entries, delta levels, stored bytes, whole-level elements, delta elements]
    jobs = []

    def retrieval(vid: bytes, names):
        return lambda: repo.retrieve(vid, names=names)

    def levels(addr: bytes) -> list[float]:
        """[delta levels, stored bytes, elements of the whole level, of the delta levels]."""
        f = chain_features(addr)
        return [f[0] - 1, f[1], f[2], f[3]]

    def capped(ents) -> list:
        """Entries in order while they fit in max_version_bytes together."""
        out, total = [], 0
        for e in ents:
            if total + nbytes(e) <= max_version_bytes:
                out.append(e)
                total += nbytes(e)
        return out

    for v in order:
        ents = sorted(v.tensors, key=lambda e: cost(e.object))
        subsets = []
        if sum(nbytes(e) for e in v.tensors + v.files) <= max_version_bytes:
            subsets.append((None, v.tensors + v.files))
        cheap = capped(ents[:max(1, len(ents) // 2)])
        dear = capped(reversed(ents[-max(1, min(3, len(ents) // 8)):]))
        # Its tensors stored whole, and those stored as deltas, apart: what
        # tells a delta level's cost from a whole one's inside a retrieval.
        whole_only = capped(e for e in ents if chain_features(e.object)[0] == 1)
        delta_only = capped(e for e in ents if chain_features(e.object)[0] > 1)
        for sub in (cheap, dear, whole_only, delta_only):
            if sub and len(sub) < len(v.tensors):
                subsets.append(([e.name for e in sub], sub))
        seen = set()
        for names, sub in subsets:
            key = None if names is None else tuple(sorted(names))
            if key in seen:
                continue
            seen.add(key)
            parts = [split_cost(e.object) for e in sub]
            vrows.append([1.0, float(len(sub)), math.fsum(p[0] for p in parts), math.fsum(p[1] for p in parts)])
            drows.append([1.0, float(len(sub))] + [math.fsum(col) for col in zip(*(levels(e.object) for e in sub))])
            jobs.append(retrieval(v.id, names))
    reader.clear_cache()
    scale = 1.0
    per_version = per_tensor = 0.0
    resid = decode_resid
    direct = None
    if jobs:
        jobs[0]()                                      # warm-up
        vtimes = _median_times(jobs, repeats, quiet)
        calibrate.last_versions = (drows, vtimes)
        y = np.array(vtimes)
        direct = _direct_fit(np.array(drows), y)
        if direct is None:
            x = np.array(vrows)
            # One scale for every level, step 1 telling whole levels from deltas.
            c3, resid = _relative_fit(np.c_[x[:, :2], x[:, 2] + x[:, 3]], y)
            coef = c3 if c3[2] > 0 else None
            if coef is None:
                # The retrievals could not tell decoding from the fixed terms (too
                # alike): keep step 1's decoding costs, fit the rest on what they leave.
                w = 1.0 / np.maximum(y, 1e-9)
                xs = x[:, :2] * w[:, None]
                col = np.maximum(xs.max(axis=0), 1e-12)
                fixed = _nnls(xs / col, (y - x[:, 2] - x[:, 3]) * w) / col
                coef = np.array([fixed[0], fixed[1], 1.0])
                resid = float(np.sqrt(np.mean(((np.c_[x[:, :2], x[:, 2] + x[:, 3]] @ coef - y) * w) ** 2)))
            per_version, per_tensor, scale = map(float, coef)
    common = dict(host=host_id(), measured=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  samples=len(picks), version_samples=len(jobs), decode_residual=decode_resid)
    if direct is not None:
        (per_version, per_tensor, delta_a, b, c, delta_c), resid = map(float, direct[0]), direct[1]
        return CostModel(0.0, b, c, residual=resid, version=per_version, tensor=per_tensor,
                         delta_a=delta_a, delta_b=b, delta_c=delta_c, scale=0.0, **common)
    return CostModel(float(scale * a1), float(scale * b1), float(scale * c1), residual=resid,
                     version=per_version, tensor=per_tensor, delta_a=float(scale * a1), delta_b=float(scale * b1),
                     delta_c=float(scale * cd1), scale=scale, **common)


def costs_path(repo):
    return None if repo.root is None else repo.root / COSTS_FILE


def load_costs(repo) -> CostModel | None:
    """The stored calibration, if there is one for this machine (None otherwise)."""
    path = costs_path(repo)
    if path is None or not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(obj, dict) and obj.get("format", 1) != COSTS_FORMAT:
            return None          # an older pas's model (no per-version terms): measured again
        model = CostModel.from_json(obj)
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


def version_factors(repo, rg: "RepoGraph", repeats: int = 3,
                    quiet_seconds: float | None = None) -> dict[str, float]:
    """Each version's measured retrieval time over the cost model's, in the
    repository's current layout: {snapshot label: factor}.

    The model's error is about +-20% per version and mostly the version's own:
    a version slower than its features say is slower under every layout (the
    errors of three plans correlate at 0.6-0.8,
    bench/reports/2026-11-27-session5-planning), so a planner that fills each
    version's budget lands the versions the model underestimates over it.
    Planning against `planning_budgets` takes most of that error out, at a cost
    in storage (SD-shaped repository, alpha 1.6, one run: measured within
    budget +10% for 79 of 88 versions against 44 on the model alone; 1.17 x
    the MST's storage against 1.06 x; bench/reports/2026-11-28-session8-planning). Every version is
    retrieved whole ``repeats`` times round robin on a quiet machine (`Quiet`),
    the median kept: this costs ``repeats`` retrievals of the whole
    repository, hence opt-in (``pas plan/repack --measure-versions``)."""
    from .algorithms import evaluate
    modelled = evaluate(rg.graph, rg.current, {}, rg.model).recreation
    labels = [s for s in rg.graph.snapshots if modelled.get(s, 0) > 0]
    if not labels:
        return {}
    jobs = [(lambda vid=rg.snapshots[s]["id"]: repo.retrieve(vid)) for s in labels]
    jobs[0]()                                          # warm-up: first-call costs are not a version's
    quiet = Quiet(max_wait=QUIET_SECONDS if quiet_seconds is None else quiet_seconds, every=0.0)
    times = _median_times(jobs, repeats, quiet)
    return {s: t / modelled[s] for s, t in zip(labels, times)}


def check_margin(margin: float) -> None:
    if not (isinstance(margin, (int, float)) and margin >= 0 and math.isfinite(margin)):
        raise BadInput(f"the planning margin must be a finite fraction >= 0, got {margin!r}")


def planning_budgets(budgets: dict[str, float], factors: dict[str, float], margin: float = 0.0) -> dict[str, float]:
    """The budgets a planner works to: each version's budget divided by ``1 +
    margin`` (room for the cost model's error and for timing noise), and by its
    measured factor (`version_factors`) over the median factor, where the
    model underestimates it more than it does the median version; otherwise
    the budget stands (a plan that changes the version's layout may lose that
    slack). Over the median: budgets are alpha x each version's modelled SPT
    time, so a machine slower (or faster) than at calibration, which moves
    every factor alike, moves the budgets alike and takes no storage (measured,
    SD-shaped repository, alpha 1.6: every factor 1.1-1.5 on a slow spell,
    and budgets over the raw factors cost 1.17 x the MST's storage)."""
    check_margin(margin)
    finite = [f for f in factors.values() if f > 0 and math.isfinite(f)]
    typical = statistics.median(finite) if finite else 1.0
    return {s: b / max(1.0, factors.get(s, typical) / typical) / (1.0 + margin) if math.isfinite(b) else b
            for s, b in budgets.items()}


def plan_repository(repo, rg: "RepoGraph", algorithm: str, budgets: dict[str, float], max_depth: int | None = None,
                    measure_versions: bool = False, margin: float = 0.0) -> tuple[Plan, dict[str, float] | None]:
    """The plan of the repository's graph for ``budgets``: what `pas plan` shows
    and `pas repack` applies (``max_depth`` at most, default the repository's
    delta.max_depth). ``measure_versions``: each version planned against
    `planning_budgets` of its measured factor (`version_factors`); ``margin``:
    every version planned that fraction under its budget. Returns the
    plan and the factors (None when not measured)."""
    from .algorithms import plan as make_plan
    check_margin(margin)     # before the versions are measured
    factors = version_factors(repo, rg) if measure_versions else None
    p = make_plan(rg.graph, algorithm, planning_budgets(budgets, factors or {}, margin), rg.model,
                  max_depth=rg.max_depth if max_depth is None else max_depth)
    return p, factors


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
        edges.append(Edge(vertex_of[x], vertex_of[y], est, costs.seconds(est, lt.n, delta=True), len(useful) == 1))
        edge_ops[len(edges) - 1] = op

    snapshots = {}
    snap_members: dict[str, list[str]] = {}
    overheads: dict[str, float] = {}
    for v in versions:
        label = labels[v.id]
        members = list(dict.fromkeys(vertex_of[e.object] for e in v.tensors))
        if members:
            snap_members[label] = members
            # What no plan changes: the version's fixed cost per entry, and its
            # side files (stored whole, deduplicated, never planned).
            overheads[label] = costs.overhead(len(v.tensors) + len(v.files)) + math.fsum(
                costs.seconds(stored_bytes(repo, f.object), reader.parse(f.object).n) for f in v.files)
        snapshots[label] = {"id": v.hex, "name": v.name, "message": v.message,
                            "parent": v.manifest.get("parent"), "tensors": len(v.tensors),
                            "overhead": overheads.get(label, 0.0)}
    g = StorageGraph("v0", edges, snap_members, overheads=overheads)

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
