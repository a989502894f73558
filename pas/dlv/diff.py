"""diff of model versions: weights, network, hyper-parameters, metrics, files.

Reads only what it needs: a tensor whose entry names the same content
address (and the same lossy decoding) in both versions is unchanged without
reading a byte. A changed tensor archived against the other version's
same-named tensor (a version and its parent) carries its change statistics
in its record (`pas.delta.change`): two records are read, no tensor. Only
the other changed tensors are read (`Repository.read_tensor`, every byte
checked) and measured. The statistics are those of `pas.delta.change`.
"""
from __future__ import annotations

from .. import dtypes, planes
from ..delta.change import Change, tensor_stats
from ..errors import BadInput
from ..writer import PARALLEL_MIN_BYTES
from . import metadata as md
from . import netdef
from .model import ModelVersion


def _recorded(repo, x, y) -> dict | None:
    """The statistics of the change from entry x to entry y, if the writer kept
    them in either tensor's record (it measures a tensor against its parent's
    same-named one as it archives it)."""
    if x.lossy is not None or y.lossy is not None:
        return None    # measured on the stored words, not on the values a lossy entry decodes to
    for before, after, flip in ((x, y, False), (y, x, True)):
        lay = repo.reader.parse(after.object)
        got = Change.from_record(lay.rec["change"], lay.n) if "change" in lay.rec else None
        if got is not None and got[0] == before.object:
            return (got[1].reversed() if flip else got[1]).stats()
    return None


def weights_diff(repo, va, vb) -> dict:
    """Tensors added, removed, changed (with statistics) and unchanged between two versions."""
    ea = {e.name: e for e in va.tensors}
    eb = {e.name: e for e in vb.tensors}
    changed, unchanged, todo = [], 0, []
    # The records of every tensor that differs, in one batch: they hold the
    # recorded changes, and a small tensor's planes too.
    repo.reader.prefetch([e.object for n in ea.keys() & eb.keys() if ea[n].object != eb[n].object
                          for e in (ea[n], eb[n])])
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
        stats = _recorded(repo, x, y)
        if stats is not None:
            changed.append({"name": name, "dtype": x.out_dtype, "shape": list(x.shape), **stats})
        else:
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
