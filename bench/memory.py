"""Peak memory of a phase, and cold page caches: the two measurements the
operating system has to help with.

Peak memory is sampled from the process's resident set size (RSS, Linux
``/proc/self/statm``) by a background thread every few milliseconds, so it
sees allocations that Python's tracemalloc does not (RocksDB, zstd, blosc2
buffers). It is reported as the peak above the RSS at the start of the phase:
what the phase needed on top of what was already there.
"""
from __future__ import annotations

import os
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

