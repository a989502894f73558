"""Peak memory of a phase, and cold page caches: the two measurements the
operating system has to help with.

The schemes' memory is measured in a process apart from the timed run
(``probe``, which runs ``python -m bench.memory JOB.json``), one scheme after
the other: each archives every version into a fresh store, then retrieves the
newest and the largest version of each dataset, after a warm-up that loads what a first call loads (imports,
compiled kernels). Before each phase the allocator's free memory goes back to
the OS (``release_free_memory``), so that heap freed by one scheme and reused by
the next does not hide part of what each needs.

Peak memory is sampled from the process's resident set size (RSS, Linux
``/proc/self/statm``) by a background thread every few milliseconds, so it
sees allocations that Python's tracemalloc does not (RocksDB, zstd, blosc2
buffers). It is reported as the peak above the RSS at the start of the phase:
what the phase needed on top of what was already there.
"""
from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_STATM = Path("/proc/self/statm")


def rss_bytes() -> int | None:
    """Resident set size of this process, or None where /proc is not available."""
    try:
        return int(_STATM.read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def release_free_memory() -> None:
    """Collect garbage and hand the allocator's free memory back to the OS
    (glibc ``malloc_trim``), so that a phase's peak above its start counts what
    it allocates, not whether freed heap happened to be there to reuse."""
    gc.collect()
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes
            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


class PeakRSS:
    """``with PeakRSS() as m: ...`` then ``m.peak_above_start`` (bytes, or None)."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.start = self.peak = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            r = rss_bytes()
            if r is not None and (self.peak is None or r > self.peak):
                self.peak = r
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = rss_bytes()
        if self.start is not None:
            self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        r = rss_bytes()
        if r is not None and self.peak is not None:
            self.peak = max(self.peak, r)

    @property
    def peak_above_start(self) -> int | None:
        if self.start is None or self.peak is None:
            return None
        return max(0, self.peak - self.start)


def drop_page_cache() -> str | None:
    """Write dirty pages back and drop the page cache, so the next reads come
    from disk. Returns None on success, else why it could not (not root, not
    Linux, a container without /proc/sys write access)."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return None
    except OSError as exc:
        return f"cannot drop the page cache ({exc.strerror or exc}); cold timings not measured"



def probe(schemes: list[str], versions: list[tuple[str, str, str | None]], work: Path) -> dict:
    """Peak memory of each scheme (``bench.schemes.SCHEMES`` names), measured in
    one fresh process. ``versions``: (key, file path, parent key or None),
    parents first. Returns per scheme ``{"archive_peak_bytes": int,
    "retrieve_peak_bytes": {key: int}, "errors": {key: message}}`` or
    ``{"error": message}``."""
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work, prefix="memory-") as tmp:
        job, out = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job.write_text(json.dumps({"schemes": schemes, "root": str(Path(tmp) / "stores"),
                                   "versions": versions, "out": str(out)}))
        top = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [top, os.environ.get("PYTHONPATH")])))
        r = subprocess.run([sys.executable, "-m", "bench.memory", str(job)], cwd=top, env=env,
                           capture_output=True, text=True)
        if r.returncode != 0 or not out.exists():
            tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
            return {s: {"error": f"memory probe exited {r.returncode}: {' | '.join(tail)}"} for s in schemes}
        return json.loads(out.read_text())


def _probe_all(job: dict) -> dict:
    out = {}
    for name in job["schemes"]:
        try:
            out[name] = _probe_one(name, Path(job["root"]) / name, job["versions"])
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        shutil.rmtree(Path(job["root"]) / name, ignore_errors=True)
    return out


def _retrieve_sample(versions: list) -> list[str]:
    """The versions whose retrieval memory is measured: per dataset (key prefix)
    the newest (the longest chain) and the largest file (the largest output)."""
    by_ds: dict[str, list] = {}
    for key, path, _ in versions:
        by_ds.setdefault(key.rsplit("/", 1)[0], []).append((key, path))
    keep = []
    for vs in by_ds.values():
        largest = max(reversed(vs), key=lambda kp: Path(kp[1]).stat().st_size)[0]   # ties: the newest
        keep.extend(dict.fromkeys([largest, vs[-1][0]]))
    return keep


def _probe_one(name: str, root: Path, versions: list) -> dict:
    from .schemes import SCHEMES
    cls = SCHEMES[name]
    # warm-up, one version per file type: what a first call loads (imports,
    # compiled kernels, torch for PyTorch files) is not what a phase needs
    firsts = {Path(path).suffix: path for _, path, _ in reversed(versions)}
    for i, path in enumerate(firsts.values()):
        warm = cls(root / f"warm-up-{i}")
        sid = warm.archive(Path(path), None, name="warm-up")
        warm.close()
        warm.reopen()
        warm.retrieve(sid)
        warm.close()
        shutil.rmtree(root / f"warm-up-{i}", ignore_errors=True)
    gc.collect()
    gc.freeze()   # what the warm-up loaded is never scanned again: a full collection costs ~0.25 s with torch
    scheme = cls(root / "store")
    ids, errors = {}, {}
    release_free_memory()
    with PeakRSS() as mem:
        for key, path, parent in versions:
            if parent is not None and parent not in ids:
                errors[key] = f"not archived: parent {parent} failed"
                continue
            try:
                ids[key] = scheme.archive(Path(path), ids.get(parent), name=key)
            except Exception as exc:
                errors[key] = f"{type(exc).__name__}: {exc}"
        scheme.close()
    result = {"archive_peak_bytes": mem.peak_above_start, "retrieve_peak_bytes": {}, "errors": errors}
    scheme.reopen()
    for key in _retrieve_sample(versions):
        sid = ids.get(key)
        if sid is None:
            continue
        got = None
        release_free_memory()
        with PeakRSS() as mem:
            got = scheme.retrieve(sid)
        got = None  # noqa: F841 - freed before the next version
        result["retrieve_peak_bytes"][key] = mem.peak_above_start
    scheme.close()
    return result


def settle_memory() -> str | None:
    """Start a run from the same memory state: dirty pages written back, the page
    cache dropped and free memory compacted (so large allocations can get huge
    pages as in any other run). Returns None on success, else why not (not root,
    not Linux). A per-run memory state lands on one scheme for a whole run, which
    interleaving cannot cancel (bench/reports/2026-11-27-session3)."""
    why = drop_page_cache()
    if why:
        return why
    try:
        with open("/proc/sys/vm/compact_memory", "w") as f:
            f.write("1\n")
        return None
    except OSError as exc:
        return f"cannot compact memory ({exc.strerror or exc})"


#: glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Buffers below this come from the heap; none above the size of any one
#: buffer the benchmark allocates (the largest tensors are ~50 MB).
STEADY_MMAP_THRESHOLD = 1 << 30
#: glibc's own ceiling for its dynamic mmap threshold (DEFAULT_MMAP_THRESHOLD_MAX
#: on 64-bit): the fallback where glibc refuses the steady threshold.
PINNED_MMAP_THRESHOLD = 32 << 20


def pin_allocator() -> str | None:
    """Put glibc's allocator in the steady state of a long-running process that
    reuses its memory: freed buffers stay in the heap (trimming off, and no
    buffer mapped apart), so after a warm-up repeat no scheme's buffers cost
    fresh pages.

    Fresh pages are a per-run cost. Each one is a page fault, and on this VM
    what a fault costs moves between runs: blosc2's retrieval of
    lineage-finetune took 0.42-0.46 s a repeat in one process and 0.28-0.40 s in
    another started minutes later, the same 57,000 faults a repeat in both. Its
    ratio to pas moved by 28-32% between two full runs, twice
    (bench/reports/2026-11-28-session8, -session9). With the heap kept, the
    same loop took 0.26-0.33 s with no fault after the first repeat. Left to
    itself, glibc also moves its mmap threshold as blocks are freed (a per-run
    state too, session 3). First-touch costs stay in the report's cold
    measurements. Returns None on success, else why not."""
    try:
        import ctypes
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return "not glibc"
    if not mallopt(_M_TRIM_THRESHOLD, -1):
        return "mallopt refused to turn trimming off"
    if mallopt(_M_MMAP_THRESHOLD, STEADY_MMAP_THRESHOLD):
        return None
    if mallopt(_M_MMAP_THRESHOLD, PINNED_MMAP_THRESHOLD):
        return f"glibc refused an mmap threshold of {STEADY_MMAP_THRESHOLD} bytes; pinned at {PINNED_MMAP_THRESHOLD}"
    return "mallopt refused"


def no_huge_pages() -> str | None:
    """Stop numpy from asking for transparent huge pages (its madvise on every
    big array). Whether the kernel then hands out 2 MiB pages depends on how
    fragmented the machine's memory is: a per-run state. Between two full runs
    of the same code, blosc2's and ZipNN's retrieval of lineage-finetune took
    0.5-0.6 s in one and 1.0 s in the other, every repeat, moving their ratios
    by 65% (bench/reports/2026-11-28-session8); filling a fresh 48 MB array takes
    12 ms on huge pages and 57 ms on 4 KiB ones. Off, every scheme's fresh
    buffers cost the same page faults in every run. Returns None on success,
    else why not."""
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:
        try:
            from numpy.core.multiarray import _set_madvise_hugepage
        except ImportError:
            return "numpy has no huge-page switch"
    _set_madvise_hugepage(False)
    return None


def huge_page_mode() -> str:
    """The kernel's transparent huge page setting (the bracketed word), if it says."""
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "unknown"
    return text[text.find("[") + 1:text.find("]")] if "[" in text else text.strip()


def steady_process() -> dict[str, str]:
    """Fix the per-run states of this process that move timings (`pin_allocator`,
    `no_huge_pages`): what the timed run and the memory probes start with. For
    the report's machine description, how each went."""
    return {"allocator_pinned": pin_allocator() or f"yes: heap kept (no trimming), mmap threshold "
                                                   f"{STEADY_MMAP_THRESHOLD} bytes",
            "numpy_huge_pages": (no_huge_pages() or "off (numpy's madvise)")
            + f"; kernel transparent huge pages: {huge_page_mode()}"}


if __name__ == "__main__":
    steady_process()   # as in the timed run (bench.core)
    job = json.loads(Path(sys.argv[1]).read_text())
    Path(job["out"]).write_text(json.dumps(_probe_all(job)))
