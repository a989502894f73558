"""diff of model versions: weights, network, hyper-parameters, metrics, files.

Reads only what it needs: a tensor whose entry names the same content
address (and the same lossy decoding) in both versions is unchanged without
reading a byte; only tensors whose addresses differ are read
(`Repository.read_tensor`, every byte checked), and compared slab by slab.

Statistics of a changed tensor (same dtype and shape):
  * ``changed_fraction``: share of elements whose *bit patterns* differ
    (so -0.0 vs 0.0 is a change, and a NaN equal to itself bit for bit is not);
  * ``max_abs`` and ``rel_l2`` = ||b - a||2 / ||a||2 over the elements finite
    in both (float64 arithmetic; ``rel_l2`` is null when ||a|| = 0 and b != a);
  * ``nonfinite_changed``: changed elements where either side is NaN or inf.
"""
from __future__ import annotations

import math

import numpy as np

from .. import dtypes, planes
from ..errors import BadInput
from ..writer import PARALLEL_MIN_BYTES
from . import metadata as md
from . import netdef
from .model import ModelVersion

#: Elements per slab of the numpy statistics: its float64 temporaries (512 KiB
#: each) stay in cache across the slab's passes (12M float32: 52 ms against
#: 120 ms with slabs of 1M elements).
SLAB = 1 << 16


def _f8_table(exp_bits: int, man_bits: int, fn: bool) -> np.ndarray:
    """float64 value of each of the 256 bit patterns of a float8 format."""
    bias = (1 << (exp_bits - 1)) - 1
    out = np.empty(256, np.float64)
    for b in range(256):
        s = -1.0 if b >> 7 else 1.0
        e = (b >> man_bits) & ((1 << exp_bits) - 1)
        f = b & ((1 << man_bits) - 1)
        top = (1 << exp_bits) - 1
        if fn and e == top and f == (1 << man_bits) - 1:       # E4M3fn: only NaN, no inf
            out[b] = math.nan
        elif not fn and e == top:                              # E5M2: IEEE inf / NaN
            out[b] = s * math.inf if f == 0 else math.nan
        elif e == 0:
            out[b] = s * f / (1 << man_bits) * 2.0 ** (1 - bias)
        else:
            out[b] = s * (1 + f / (1 << man_bits)) * 2.0 ** (e - bias)
    return out


_F8 = {"F8_E4M3": lambda: _f8_table(4, 3, True), "F8_E5M2": lambda: _f8_table(5, 2, False)}


def _values(arr: np.ndarray, dtype: str) -> np.ndarray:
    """Element values in a dtype the kernel computes with (exactly: BF16/F16
    widened to float32, F8 through its table; integers and floats as they are)."""
    if dtype == "BF16":
        return (arr.view(np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)
    if dtype == "F16":
        return arr.astype(np.float32)
    if dtype in _F8:
        return _F8[dtype]()[arr.view(np.uint8)]
    return arr


def _kernel(n: int):
    """The Numba kernel (one pass over both tensors, no temporaries) once Numba is
    loaded or the diff is big enough to pay for loading it (~1-2 s a process, the
    rule of `pas.planes`); else the numpy version, slab by slab (five passes and
    as many float64 temporaries: ~4x slower per element, no start-up)."""
    import sys

    if "numba" in sys.modules or n >= planes.NUMBA_WORTH_ELEMENTS:
        from ._diff_kernel import stats
        return stats
    return _numpy_stats


def _numpy_stats(va, vb, ba, bb):
    """`pas.dlv._diff_kernel.stats` in numpy, SLAB elements at a time."""
    with np.errstate(invalid="ignore", over="ignore"):    # inf - inf and the like: masked out below
        return _numpy_slabs(va, vb, ba, bb)


def _sq(v: np.ndarray) -> float:
    """Sum of squares without BLAS: its threads fight the pool's, which runs
    these statistics two tensors at a time (8 tensors of 2.8M: 0.25 s through
    np.dot on two threads, 0.09 s this way)."""
    return float(np.einsum("i,i->", v, v))


def _numpy_slabs(va, vb, ba, bb):
    changed = nonfinite = 0
    max_abs = sq_a = sq_d = 0.0
    # One set of float64 buffers for every slab: a fresh temporary per slab is
    # a fresh mapping (glibc maps blocks this big), paid in page faults.
    bufs = np.empty((3, min(SLAB, va.shape[0])), np.float64)
    for i in range(0, va.shape[0], SLAB):
        m = min(SLAB, va.shape[0] - i)
        x, y, d = bufs[0, :m], bufs[1, :m], bufs[2, :m]
        np.copyto(x, va[i:i + m])
        np.copyto(y, vb[i:i + m])
        differ = ba[i:i + m] != bb[i:i + m]
        changed += int(np.count_nonzero(differ))
        np.subtract(y, x, out=d)   # exact for inputs of 32 bits or less; 0 where the bits are equal and finite
        sq_a_slab = _sq(x)
        sq_d_slab = _sq(d)
        if np.isfinite(sq_a_slab) and np.isfinite(sq_d_slab):   # all finite: the common case, no masks
            sq_a += sq_a_slab
            sq_d += sq_d_slab
            if d.size:
                max_abs = max(max_abs, float(d.max()), -float(d.min()))   # |d| without a temporary
            continue
        finite = np.isfinite(x) & np.isfinite(y)
        nonfinite += int(np.count_nonzero(differ & ~finite))
        xf = x[finite]
        sq_a += _sq(xf)
        df = d[finite & differ]
        if df.size:
            max_abs = max(max_abs, float(np.abs(df).max()))
            sq_d += _sq(df)
    return changed, nonfinite, max_abs, sq_a, sq_d


def tensor_stats(a: np.ndarray, b: np.ndarray, dtype: str) -> dict:
    """Change statistics of two arrays of the same dtype and shape (see the module doc)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        raise BadInput(f"cannot compare arrays of {a.dtype}{a.shape} and {b.dtype}{b.shape}")
    n = a.size
    bits = np.dtype(f"u{a.dtype.itemsize}")
    fa, fb = np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1)
    changed, nonfinite, max_abs, sq_a, sq_d = _kernel(n)(_values(fa, dtype), _values(fb, dtype),
                                                        fa.view(bits), fb.view(bits))
    if sq_d == 0.0:
        rel = 0.0
    elif sq_a == 0.0:
        rel = None
    else:
        rel = math.sqrt(sq_d) / math.sqrt(sq_a)
        rel = rel if math.isfinite(rel) else None
    return {"elements": n, "changed_elements": int(changed), "changed_fraction": int(changed) / n if n else 0.0,
            "max_abs": float(max_abs), "rel_l2": rel, "nonfinite_changed": int(nonfinite)}


def weights_diff(repo, va, vb) -> dict:
    """Tensors added, removed, changed (with statistics) and unchanged between two versions."""
    ea = {e.name: e for e in va.tensors}
    eb = {e.name: e for e in vb.tensors}
    changed, unchanged, todo = [], 0, []
    for name in sorted(ea.keys() & eb.keys()):
        x, y = ea[name], eb[name]
        if x.object == y.object and x.lossy == y.lossy:
            unchanged += 1           # same content address: equal without reading it
            continue
        if x.out_dtype != y.out_dtype or tuple(x.shape) != tuple(y.shape):
            changed.append({"name": name, "dtype": [x.out_dtype, y.out_dtype], "shape": [list(x.shape), list(y.shape)],
                            "changed_fraction": None, "max_abs": None, "rel_l2": None,
                            "note": "dtype or shape changed"})
            continue
        todo.append((x, y))

    def compare(x, y, parallel: bool) -> dict:
        a = repo.read_tensor(x, parallel=parallel)
        if x.lossy is None:
            # b is most often a delta against a: decoding it then applies one level, not the chain.
            repo.reader.remember(x.object, a.reshape(-1).view(dtypes.get(x.dtype).bits_dtype))
        b = repo.read_tensor(y, parallel=parallel)
        return tensor_stats(a, b, x.out_dtype)

    # Big tensors one per task on the repository's pool (numpy and the
    # decoders release the GIL), small ones here meanwhile: as retrieval does.
    try:
        with planes.workload(sum(2 * x.nbytes // dtypes.get(x.dtype).itemsize for x, _ in todo)):
            big = {i: repo.pool.submit(compare, x, y, False) for i, (x, y) in enumerate(todo)
                   if x.nbytes >= PARALLEL_MIN_BYTES}
            results = [big[i].result() if i in big else compare(x, y, True) for i, (x, y) in enumerate(todo)]
    finally:
        repo.reader.clear_cache()
    for (x, _), stats in zip(todo, results):
        if stats["changed_elements"] == 0:
            unchanged += 1           # other addresses, same bits (e.g. lossy vs exact of equal values)
            continue
        changed.append({"name": x.name, "dtype": x.out_dtype, "shape": list(x.shape), **stats})
    changed.sort(key=lambda c: c["name"])
    return {"added": sorted(eb.keys() - ea.keys()), "removed": sorted(ea.keys() - eb.keys()),
            "changed": changed, "unchanged": unchanged,
            "tensors_read": 2 * len(todo), "tensors_total": len(ea) + len(eb)}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def mapping_diff(a: dict, b: dict) -> dict:
    """Keys (nested keys dotted) added, removed and changed, with both values."""
    fa, fb = _flat(a), _flat(b)
    return {"added": {k: fb[k] for k in sorted(fb.keys() - fa.keys())},
            "removed": {k: fa[k] for k in sorted(fa.keys() - fb.keys())},
            "changed": {k: [fa[k], fb[k]] for k in sorted(fa.keys() & fb.keys()) if fa[k] != fb[k]}}


def metrics_diff(la: list[dict], lb: list[dict]) -> dict:
    """Per metric: the last logged value (and its iteration) in each version."""
    sa, sb = md.summary(la), md.summary(lb)
    return {m: {"a": sa[m]["last"] if m in sa else None, "b": sb[m]["last"] if m in sb else None}
            for m in sorted(sa.keys() | sb.keys())}


def files_diff(ma: ModelVersion, mb: ModelVersion) -> dict:
    fa = {f.name: f.object for f in ma.files}
    fb = {f.name: f.object for f in mb.files}
    return {"added": sorted(fb.keys() - fa.keys()), "removed": sorted(fa.keys() - fb.keys()),
            "changed": sorted(k for k in fa.keys() & fb.keys() if fa[k] != fb[k])}


def diff(repo, a: str, b: str, weights: bool = True) -> dict:
    """Two versions side by side; the top level is the weights diff
    (``added``, ``removed``, ``changed``, ``unchanged``)."""
    ma, mb = ModelVersion(repo, repo.version(a)), ModelVersion(repo, repo.version(b))
    out = {"a": _label(ma), "b": _label(mb)}
    if weights:
        out.update(weights_diff(repo, ma.version, mb.version))
    out["network"] = netdef.diff(ma.network, mb.network)
    out["hyperparams"] = mapping_diff(ma.hyperparams, mb.hyperparams)
    out["metrics"] = metrics_diff(ma.log, mb.log)
    out["files"] = files_diff(ma, mb)
    return md.json_safe(out)


def diff_many(repo, refs: list[str], weights: bool = True) -> dict:
    """Several versions: each one's summary, and the diff of every consecutive pair."""
    if len(refs) < 2:
        raise BadInput("diff needs at least two versions")
    if len(refs) == 2:
        return diff(repo, refs[0], refs[1], weights)
    mvs = [ModelVersion(repo, repo.version(r)) for r in refs]
    side = [dict(_label(m), hyperparams=m.hyperparams,
                 metrics={k: v["last"] for k, v in md.summary(m.log).items()},
                 tensors=len(m.version.tensors), network_nodes=len(m.network["nodes"]) if m.network else None)
            for m in mvs]
    pairs = [diff(repo, x.id, y.id, weights) for x, y in zip(mvs, mvs[1:])]
    return md.json_safe({"versions": side, "pairs": pairs})


def _label(m: ModelVersion) -> dict:
    return {"id": m.id, "name": m.name, "time": m.time, "message": m.message}


__all__ = ["diff", "diff_many", "tensor_stats", "weights_diff"]
