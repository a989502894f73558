"""The timed part of a benchmark run: every scheme archives and retrieves every
version, the schemes interleaved so that their timings are taken side by side.

Why interleaved: this machine's speed drifts over minutes (other tenants, CPU
frequency, the page cache). With one scheme after the other, a slow minute
lands on one scheme only, and the ratios between schemes moved by up to 2x
between two runs of the same commit (bench/reports/2026-11-27-session2). Here
every version is archived by every scheme before the next version, and each
retrieve repeat of a version is taken by every scheme in turn; the order of the
schemes rotates at every step, so none always runs first (or right after the
same neighbour).

Each scheme keeps its own store for the whole run. Memory is not measured here:
a sampling thread inside the timed calls costs time, and heap freed by one
scheme and reused by the next would blur both. ``bench.memory.probe`` measures
in a process apart instead.

Output per scheme: the dict ``bench.report.summarize`` reads (per-version
archive and retrieve timings, bytes added, checks; whole-store bytes; K-plane
and cold timings).
"""
from __future__ import annotations

import gc
import math
import os
import shutil
import statistics
import time
import traceback
from pathlib import Path
from typing import Iterator

import numpy as np

from . import datasets as D
from . import tensorio
from .floor import version_floor
from .memory import drop_page_cache
from .schemes import Scheme, dir_bytes

ONE_TENSOR_SHARE = 0.05
#: A version retrieved in a few milliseconds is retrieved more than ``repeat``
#: times: until the fastest scheme has been timed for at least this long in
#: all (like timeit's autorange), at most ``MAX_REPEAT_FACTOR`` x ``repeat``
#: times. With three repeats, one slow call of a 5 ms retrieval moved a small
#: dataset's ratios by 15-25% between runs (bench/reports/2026-11-27-session4);
#: at 0.25 s, CRAFT (one 83 MB model, retrieved in ~0.08 s) still moved its
#: retrieve ratios by up to 53% (session7/compare-C-D.md), hence 0.5 s.
MIN_TIMED_SECONDS = 0.5
MAX_REPEAT_FACTOR = 5


def timed(fn, *args, **kwargs):
    """(fn(*args, **kwargs), seconds), with the cyclic garbage collector paused
    as timeit does: once torch is imported, one full collection costs ~0.25 s and
    would land inside a random timing. Objects are still freed by refcount."""
    gc.disable()
    try:
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        return out, time.perf_counter() - t0
    finally:
        gc.enable()


def median(xs):
    return statistics.median(xs) if xs else None


def _pas_repository():
    """pas's Repository class (schemes holding one get the entropy floor), or a type nothing is."""
    try:
        from pas.repo import Repository
        return Repository
    except Exception:   # a half-written core must not stop the baselines
        return type("NoRepository", (), {})


def plan_versions(datasets: list[D.Dataset]) -> dict:
    """Per version: logical bytes, tensor bytes and the one tensor to fetch."""
    meta = {}
    for ds in datasets:
        for v in ds.versions:
            sizes = tensorio.tensor_sizes(v.path)
            total = sum(sizes.values())
            target = ONE_TENSOR_SHARE * total
            one = min(sorted(sizes), key=lambda n: abs(sizes[n] - target)) if sizes else None
            meta[(ds.name, v.id)] = {
                "id": v.id, "parent": v.parent, "path": str(v.path),
                "logical_bytes": v.file_bytes, "tensor_bytes": total, "n_tensors": len(sizes),
                "one_tensor": {"name": one, "bytes": sizes.get(one, 0),
                               "share": round(sizes[one] / total, 4) if one and total else None},
            }
    return meta


def verify_all(src: dict, got: dict) -> list[str]:
    errs = []
    if set(src) != set(got):
        missing, extra = sorted(set(src) - set(got)), sorted(set(got) - set(src))
        errs.append(f"tensor names differ: missing {missing[:3]}, extra {extra[:3]}")
    for n in sorted(set(src) & set(got)):
        e = tensorio.same_bytes(src[n], got[n])
        if e:
            errs.append(f"{n}: {e}")
    return errs


def top_planes_errors(src: dict, got: dict, k: int) -> list[str]:
    """The top ``k`` bytes of every element (whole elements when itemsize <= k) must match the source."""
    errs = []
    if set(src) != set(got):
        errs.append("tensor names differ")
    for n in sorted(set(src) & set(got)):
        a, b = tensorio.c_order(src[n]), tensorio.c_order(np.asarray(got[n]))
        if a.dtype.itemsize != b.dtype.itemsize or a.shape != b.shape:
            errs.append(f"{n}: dtype/shape {a.dtype}{a.shape} vs {b.dtype}{b.shape}")
            continue
        w = a.dtype.itemsize
        x, y = a.reshape(-1).view(np.uint8).reshape(-1, w), b.reshape(-1).view(np.uint8).reshape(-1, w)
        if not np.array_equal(x[:, max(0, w - k):], y[:, max(0, w - k):]):
            errs.append(f"{n}: top {k} bytes differ")
    return errs


class Contender:
    """One scheme's state through an interleaved run: its store, the ids it gave
    the versions, its timings and its failures. A version whose archive or
    retrieve raises is recorded as failed (its children are then not archived)
    and the run goes on; a failure of the store itself (create, close, reopen)
    ends this scheme only."""

    def __init__(self, cls: type[Scheme], work: Path, rep):
        self.cls, self.root, self.rep = cls, work / cls.name, rep
        self.name = cls.name
        self.res = {"scheme": cls.name, "label": cls.label, "description": cls.description, "ok": True,
                    "error": None, "versions": {}}
        self.scheme: Scheme | None = None
        self.alive = True
        self.ids: dict[tuple[str, str], str] = {}
        self.archive_times: dict[tuple[str, str], list[float]] = {}
        self.errors: dict[tuple[str, str], str] = {}
        self.pass_total = 0.0
        self.pass_totals: list[float] = []
        self.close_times: list[float] = []
        self.floor_seen: set[bytes] = set()   # pas objects whose entropy floor is counted (bench.floor)

    def fail(self, key, what: str, exc: Exception) -> None:
        if key not in self.errors:
            self.errors[key] = f"{what}: {type(exc).__name__}: {exc}"
            self.res.setdefault("tracebacks", {})[f"{key[0]}/{key[1]}"] = traceback.format_exc(limit=-8)
            self.rep.log(f"{self.name} {key[0]}/{key[1]} FAILED: {self.errors[key][:300]}")

    def die(self, what: str, exc: Exception) -> None:
        self.alive = False
        self.res.update(ok=False, error=f"{what}: {type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        self.rep.log(f"{self.name} FAILED: {self.res['error']}")
        try:
            if self.scheme is not None:
                self.scheme.close()
        except Exception:
            pass

    def fresh_store(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)
        self.scheme = self.cls(self.root)
        self.ids, self.pass_total = {}, 0.0

    def archive(self, ds, v) -> None:
        key = (ds.name, v.id)
        parent = None
        if v.parent:
            parent = self.ids.get((ds.name, v.parent))
            if parent is None:
                self.errors.setdefault(key, f"not archived: parent {v.parent} failed")
                return
        # Write back what the schemes before this one left dirty, outside the
        # timing: each scheme syncs its own writes, and only those.
        os.sync()
        try:
            sid, dt = timed(self.scheme.archive, v.path, parent, name=f"{ds.name}/{v.id}")
        except Exception as e:
            self.fail(key, "archive", e)
            return
        self.archive_times.setdefault(key, []).append(dt)
        self.pass_total += dt
        self.ids[key] = sid

    def reopen(self) -> None:
        """Open the last pass's store for reading, and weigh it."""
        self.scheme.reopen()
        self.res["physical_bytes"] = int(self.scheme.physical_bytes())

    def finish_pass(self) -> None:
        dt = timed(self.scheme.close)[1]
        self.close_times.append(dt)
        self.pass_totals.append(self.pass_total + dt)


def rotated(contenders: list, step: int) -> list:
    """The live contenders (any items without an ``alive`` flag count as live),
    starting at a different one at every step."""
    live = [c for c in contenders if getattr(c, "alive", True)]
    if not live:
        return []
    k = step % len(live)
    return live[k:] + live[:k]


class Turns:
    """Timed rounds taken by every scheme in turn, the order rotated at every
    round, so a slow spell of the machine falls on every scheme alike; one
    object per phase keeps the rotation going across its datasets or versions."""

    def __init__(self):
        self.step = 0

    def __call__(self, live: list[Contender], first: int, n: int, skip) -> Iterator[tuple[int, Contender]]:
        """(round, contender) for rounds [first, n), leaving out the names in ``skip``."""
        for i in range(first, n):
            for c in rotated(live, self.step):
                if c.name not in skip:
                    yield i, c
            self.step += 1

    def timed(self, live: list[Contender], first: int, n: int, call, sink: dict[str, list[float]],
              failed: dict[str, str], what: str, rep) -> Iterator[tuple[int, Contender, object]]:
        """The rounds, each contender's ``call(c)`` timed into ``sink[c.name]``:
        (round, contender, result); a contender whose call raises is noted in
        ``failed`` (and logged) and left out of later rounds."""
        for i, c in self(live, first, n, failed):
            try:
                got, dt = timed(call, c)
            except Exception as e:
                failed[c.name] = f"{type(e).__name__}: {e}"
                rep.log(f"{c.name} {what} FAILED: {failed[c.name][:200]}")
                continue
            sink[c.name].append(dt)
            yield i, c, got


def _guard(c: Contender, what: str, fn, *args) -> None:
    """Run a store-level step of ``c``; its failure ends ``c`` only."""
    if not c.alive:
        return
    try:
        fn(*args)
    except Exception as e:
        c.die(what, e)


#: A scheme whose first archive pass took this many times the fastest scheme's
#: is timed in the first SLOW_ARCHIVE_PASSES passes only (its store kept):
#: repeats are there to measure ratios near 1 against the noise, and a ratio of
#: 10 or more is not in doubt. It saves a full run 1-2 minutes (the paper's
#: zlib-6 scheme archives ~40x slower than a copy). Two passes, not one: a
#: ratio timed once has no noise band, and `bench.compare` could not judge the
#: paper's archive ratios, which moved 15-24% between two runs of the same code
#: (bench/reports/2026-11-27-session7/compare-C-D.md).
SLOW_ARCHIVE_FACTOR = 10.0
SLOW_ARCHIVE_PASSES = 2


def archive_passes(cs: list[Contender], order, passes: int, rep) -> None:
    """``passes`` times: fresh stores, then every version by every scheme in turn
    (after SLOW_ARCHIVE_PASSES passes, only the schemes within SLOW_ARCHIVE_FACTOR
    of the fastest)."""
    step = 0
    timing = list(cs)
    for r in range(passes):
        if r == SLOW_ARCHIVE_PASSES:
            firsts = {c.name: c.pass_totals[0] for c in cs if c.alive and c.pass_totals}
            fastest = min(firsts.values(), default=0.0)
            timing = [c for c in cs if c.name not in firsts or firsts[c.name] <= SLOW_ARCHIVE_FACTOR * fastest]
            for c in cs:
                if c not in timing:
                    rep.log(f"{c.name}: {SLOW_ARCHIVE_PASSES} archive passes only (the first {firsts[c.name]:.1f} s, "
                            f"{firsts[c.name] / fastest:.0f}x the fastest scheme's)")
        for c in timing:
            _guard(c, "create store", c.fresh_store)
        with rep.task(f"archive pass {r + 1}/{passes}", len(order)) as adv:
            for ds, v in order:
                for c in rotated(timing, step):
                    c.archive(ds, v)
                step += 1
                adv()
        for c in timing:
            _guard(c, "close", c.finish_pass)


def archive_extra_passes(cs: list[Contender], datasets, passes: int, rep,
                         min_seconds: float = MIN_TIMED_SECONDS) -> None:
    """More archive passes of each small dataset, into scratch stores: until the
    fastest scheme's archive of the dataset has been timed ``min_seconds`` in
    all (`adaptive_rounds`, at most MAX_REPEAT_FACTOR x ``passes``). A dataset
    archived in tens of milliseconds (a single small model: a copy and an
    fsync) moved its archive ratios by up to 30% between two runs with three
    passes (bench/reports/2026-11-27-session5). Each extra pass archives the
    dataset alone, parents first, into a fresh store per scheme, the schemes
    interleaved and rotated as in the main passes; its per-version times join
    the main passes' (the whole-store pass totals stay those of the main passes)."""
    if min_seconds <= 0:
        return
    step = 0
    for ds in datasets:
        keys = [(ds.name, v.id) for v in ds.versions]
        # (a scheme timed in fewer main passes was left out of them: SLOW_ARCHIVE_FACTOR)
        live = [c for c in cs if c.alive and len(c.pass_totals) >= passes
                and all(k in c.archive_times for k in keys)]
        if not live:
            continue
        totals = {c.name: [sum(ts) for ts in zip(*(c.archive_times[k] for k in keys))] for c in live}
        want = adaptive_rounds(totals, passes, MAX_REPEAT_FACTOR * passes, min_seconds)
        if want <= passes:
            continue
        with rep.task(f"archive {ds.name} x{want - passes} more (small)", want - passes) as adv:
            for _ in range(want - passes):
                scratch = {}
                for c in live:
                    root = c.root.parent / f"{c.name}.extra"
                    shutil.rmtree(root, ignore_errors=True)
                    try:
                        scratch[c.name] = (c.cls(root), root, {})
                    except Exception as e:
                        rep.log(f"{c.name}: extra archive pass skipped: {type(e).__name__}: {e}")
                for v in ds.versions:
                    for c in rotated(live, step):
                        if c.name not in scratch:
                            continue
                        scheme, _, ids = scratch[c.name]
                        parent = ids.get(v.parent) if v.parent else None
                        if v.parent and parent is None:
                            continue
                        os.sync()   # as in Contender.archive: each scheme syncs its own writes only
                        try:
                            ids[v.id], dt = timed(scheme.archive, v.path, parent, name=f"{ds.name}/{v.id}")
                        except Exception as e:
                            rep.log(f"{c.name} {ds.name}/{v.id}: extra archive pass failed: {type(e).__name__}: {e}")
                            continue
                        c.archive_times[(ds.name, v.id)].append(dt)
                    step += 1
                for scheme, root, _ in scratch.values():
                    try:
                        scheme.close()
                    finally:
                        shutil.rmtree(root, ignore_errors=True)
                adv()


def adaptive_rounds(times: dict[str, list[float]], done: int, most: int,
                    min_seconds: float = MIN_TIMED_SECONDS) -> int:
    """How many rounds a version's timings need in all: enough that the fastest
    scheme's median times the rounds reaches ``min_seconds``, at least ``done``,
    at most ``most``."""
    meds = [statistics.median(ts) for ts in times.values() if ts]
    if not meds or min(meds) <= 0:
        return done
    return max(done, min(most, math.ceil(min_seconds / min(meds))))


def retrieve_versions(cs: list[Contender], order, meta: dict, repeat: int, one_repeat: int, rep,
                      min_seconds: float = MIN_TIMED_SECONDS) -> None:
    """Per version: ``repeat`` whole retrieves and ``one_repeat`` one-tensor
    retrieves, each repeat taken by every scheme in turn, then more rounds of
    both for a fast version (`adaptive_rounds`, up to MAX_REPEAT_FACTOR times;
    ``min_seconds`` 0 turns this off); every result checked as bytes against
    the source (outside the timings)."""
    for c in cs:
        _guard(c, "reopen", c.reopen)
    turns = Turns()
    with rep.task(f"retrieve x{repeat}, one tensor x{one_repeat}", len(order)) as adv:
        for ds, v in order:
            key = (ds.name, v.id)
            m = meta[key]
            live = [c for c in cs if c.alive and key in c.ids]
            full = {c.name: [] for c in live}
            ones = {c.name: [] for c in live}
            errs = {c.name: [] for c in live}
            for c in live:
                sid = c.ids[key]
                vr = c.res["versions"][key] = {
                    "store_id": sid, "physical_added": int(c.scheme.added.get(sid, 0)),
                    "archive_s": median(c.archive_times[key]),
                    "archive_s_all": [round(t, 4) for t in c.archive_times[key]],
                }
                if isinstance(getattr(c.scheme, "repo", None), _pas_repository()):
                    pf = version_floor(c.scheme.repo, sid, c.floor_seen)
                    vr["entropy_floor"], vr["planes"] = pf.total_floor, pf.to_json()
            src = tensorio.load(v.path) if live else None
            broken: set[str] = set()

            def run(method, extra, sink, check, n, first=0):
                for i, c in turns(live, first, n, broken):
                    try:
                        got, dt = timed(getattr(c.scheme, method), c.ids[key], *extra)
                    except Exception as e:
                        c.fail(key, "retrieve", e)
                        broken.add(c.name)
                        continue
                    sink[c.name].append(dt)
                    if i == 0:
                        errs[c.name] += check(got)
                    got = None  # noqa: F841 - freed before the next scheme's call

            run("retrieve", (), full, lambda got: verify_all(src, got), repeat)
            if min_seconds > 0:
                run("retrieve", (), full, None, adaptive_rounds(full, repeat, MAX_REPEAT_FACTOR * repeat,
                                                                 min_seconds), first=repeat)
            one_name = m["one_tensor"]["name"]
            if one_name is not None:
                check_one = (lambda got: [f"one tensor {one_name}: {e}"]
                             if (e := tensorio.same_bytes(src[one_name], got)) else [])
                run("retrieve_one", (one_name,), ones, check_one, one_repeat)
                if min_seconds > 0:
                    run("retrieve_one", (one_name,), ones, None,
                        adaptive_rounds(ones, one_repeat, MAX_REPEAT_FACTOR * one_repeat, min_seconds),
                        first=one_repeat)
            src = None
            for c in live:
                if c.name in broken:
                    continue
                e = errs[c.name]
                c.res["versions"][key].update({
                    "retrieve_s": median(full[c.name]), "retrieve_s_all": [round(t, 4) for t in full[c.name]],
                    "one_tensor_s": median(ones[c.name]), "one_tensor_s_all": [round(t, 5) for t in ones[c.name]],
                    "verified": not e, "verify_errors": e[:10], "n_verify_errors": len(e),
                })
                if e:
                    c.errors[key] = f"not bit-exact: {e[0]}"
                    rep.log(f"{c.name} {ds.name}/{v.id} NOT BIT-EXACT: {e[0]}")
            adv()


def retrieve_lineages(cs: list[Contender], datasets, repeat: int, rep,
                      min_seconds: float = MIN_TIMED_SECONDS) -> None:
    """Per dataset, every version retrieved in one call (`Scheme.retrieve_lineage`,
    parents first: what exporting a lineage or evaluating every checkpoint asks
    for), ``repeat`` times and more for a fast dataset (`adaptive_rounds`), each
    repeat taken by every scheme in turn; the first result checked as bytes."""
    turns = Turns()
    with rep.task(f"retrieve each lineage in one call x{repeat}", len(datasets)) as adv:
        for ds in datasets:
            keys = [(ds.name, v.id) for v in ds.versions]
            live = [c for c in cs if c.alive and all(k in c.ids and k not in c.errors for k in keys)]
            ts: dict[str, list[float]] = {c.name: [] for c in live}
            errs: dict[str, list[str]] = {c.name: [] for c in live}
            failed: dict[str, str] = {}

            def run(n, first=0):
                for i, c, got in turns.timed(live, first, n, lambda c: c.scheme.retrieve_lineage(
                        [c.ids[k] for k in keys]), ts, failed, f"{ds.name} retrieve_lineage", rep):
                    if i == 0:
                        for v, g in zip(ds.versions, got):
                            errs[c.name] += [f"{v.id}: {e}" for e in verify_all(tensorio.load(v.path), g)]
                        if len(got) != len(keys):
                            errs[c.name].append(f"{len(got)} versions returned for {len(keys)}")
                        if errs[c.name]:
                            rep.log(f"{c.name} {ds.name} retrieve_lineage NOT BIT-EXACT: {errs[c.name][0]}")
                    got = None  # noqa: F841 - freed before the next scheme's call

            run(repeat)
            if min_seconds > 0:
                run(adaptive_rounds(ts, repeat, MAX_REPEAT_FACTOR * repeat, min_seconds), first=repeat)
            for c in live:
                c.res.setdefault("lineage", {})[ds.name] = (
                    {"error": failed[c.name]} if c.name in failed else
                    {"seconds": median(ts[c.name]), "seconds_all": [round(t, 4) for t in ts[c.name]],
                     "verified": not errs[c.name], "errors": errs[c.name][:5]})
                if errs[c.name]:
                    c.res["ok"] = False
            adv()


#: The K-plane reads timed: (results key, scheme method, check method, K).
#: "K" rebuilds values from the top K planes (lossy); "Kp" reads the top K
#: planes' bytes themselves (what progressive evaluation starts from).
TOP_READS = (("1", "retrieve_top", "check_top", 1), ("2", "retrieve_top", "check_top", 2),
             ("1p", "retrieve_planes", "check_planes", 1))


def retrieve_top_planes(cs: list[Contender], datasets, repeat: int, rep, reads=TOP_READS) -> None:
    """Per dataset, the newest version rebuilt from its top K byte planes only
    (lossy), and its top planes read as they are, by the schemes that can,
    interleaved like the full retrieves."""
    able = [c for c in cs if c.alive and hasattr(c.scheme, "retrieve_top")]
    turns = Turns()
    for ds in datasets:
        v = ds.versions[-1]
        key = (ds.name, v.id)
        live = [c for c in able if c.alive and key in c.ids]
        if not live:
            continue
        src = tensorio.load(v.path)
        per = {c.name: {} for c in live}
        for label, method, check, k in reads:
            doing = [c for c in live if hasattr(c.scheme, method)]
            ts = {c.name: [] for c in doing}
            errs: dict[str, list[str]] = {c.name: [] for c in doing}
            failed: dict[str, str] = {}
            for i, c, got in turns.timed(doing, 0, repeat, lambda c: getattr(c.scheme, method)(c.ids[key], k),
                                         ts, failed, f"{ds.name}/{v.id} {method} k={k}", rep):
                if i == 0:
                    errs[c.name] = (getattr(c.scheme, check)(c.ids[key], k, src, got)
                                    if hasattr(c.scheme, check) else top_planes_errors(src, got, k))
                    if errs[c.name]:
                        rep.log(f"{c.name} {ds.name}/{v.id} {method} k={k}: top planes differ: "
                                f"{errs[c.name][0]}")
                got = None  # noqa: F841
            for c in doing:
                per[c.name][label] = ({"error": failed[c.name]} if c.name in failed else
                                      {"seconds": median(ts[c.name]),
                                       "seconds_all": [round(t, 4) for t in ts[c.name]],
                                       "top_planes_exact": not errs[c.name], "errors": errs[c.name][:5]})
        for c in live:
            c.res.setdefault("top_bytes", {})[ds.name] = {"version": v.id, "k": per[c.name]}


def retrieve_cold(cs: list[Contender], datasets, rep) -> None:
    """Per dataset, one retrieve of the newest version with the page cache
    dropped first (the store closed, caches dropped, the store reopened), the
    schemes in turn. Where the OS does not let us drop the cache, says why and
    measures nothing."""
    for c in cs:
        if c.alive:
            c.res["cold"] = {}
    for step, ds in enumerate(datasets):
        key = (ds.name, ds.versions[-1].id)
        for c in rotated(cs, step):
            if key not in c.ids:
                continue
            try:
                c.scheme.close()
                why = drop_page_cache()
                c.scheme.reopen()
            except Exception as e:
                c.die("reopen", e)
                continue
            if why:
                for x in cs:
                    x.res["cold"] = {"error": why}
                return
            try:
                got, dt = timed(c.scheme.retrieve, c.ids[key])
            except Exception as e:
                c.fail(key, "retrieve", e)
                continue
            got = None  # noqa: F841 - freed before the next drop
            c.res["cold"][ds.name] = {"version": ds.versions[-1].id, "seconds": round(dt, 4)}


def finish(c: Contender) -> dict:
    """Close and measure ``c``'s store, remove it, and return its results."""
    res = c.res
    if c.alive:
        try:
            c.scheme.close()
            res["disk_bytes"] = dir_bytes(c.root)
        except Exception as e:
            c.die("close", e)
    res["archive_pass_s"] = c.pass_totals
    res["close_s"] = median(c.close_times)
    if c.root.exists():
        shutil.rmtree(c.root, ignore_errors=True)
    for key, msg in c.errors.items():
        res["versions"].setdefault(key, {})["error"] = msg
    if c.errors:
        res["ok"] = False
        k0 = next(iter(c.errors))
        res["error"] = res["error"] or f"{len(c.errors)} versions failed; first {k0[0]}/{k0[1]}: {c.errors[k0]}"
    res["version_errors"] = {f"{k[0]}/{k[1]}": m for k, m in c.errors.items()}
    return res


def run_matrix(classes: list[type[Scheme]], datasets: list[D.Dataset], meta: dict, work: Path, repeat: int,
               archive_repeat: int, one_repeat: int, rep,
               min_seconds: float = MIN_TIMED_SECONDS) -> dict[str, dict]:
    """Every scheme x every version, interleaved; per scheme name its results
    (``min_seconds``: see `retrieve_versions`)."""
    order = [(ds, v) for ds in datasets for v in ds.versions]
    cs = [Contender(cls, work, rep) for cls in classes]
    try:
        archive_passes(cs, order, archive_repeat, rep)
        archive_extra_passes(cs, datasets, archive_repeat, rep, min_seconds)
        retrieve_versions(cs, order, meta, repeat, one_repeat, rep, min_seconds)
        retrieve_lineages(cs, datasets, repeat, rep, min_seconds)
        with rep.task(f"top K planes x{repeat}", 1):
            retrieve_top_planes(cs, datasets, repeat, rep)
        with rep.task("cold retrieve", 1):
            retrieve_cold(cs, datasets, rep)
    finally:
        results = {c.name: finish(c) for c in cs}
    return results
