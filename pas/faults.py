"""Named crash points, for crash-safety and fault tests (tests/test_crash.py,
tests/test_faults.py).

Every write step of the persistent store (and of the version journal) calls
``crash_point(name)``. In normal use it returns at once (one global read).
With the environment of a test:

    PAS_CRASH_AT=N          SIGKILL this process at the N-th crash point it reaches (1-based)
    PAS_CRASH_AT=NAME       ... at the first point called NAME
    PAS_CRASH_AT=NAME:N     ... at the N-th time NAME is reached
    PAS_FAIL_AT=...         (same forms) raise OSError(ENOSPC) there instead: the
                            write or sync at that step fails as on a full disk
                            (points named *.done, after a step, never fail)
    PAS_CRASH_LOG=PATH      append the name of every point reached to PATH, one per line
                            (how a test enumerates the points of an operation)

SIGKILL, not an exception: nothing runs after it (no finally, no atexit, no
buffered write), exactly as for ``kill -9`` from outside.
"""
from __future__ import annotations

import errno
import os
import signal
import threading

_SPEC = os.environ.get("PAS_CRASH_AT") or None
_FAIL_SPEC = os.environ.get("PAS_FAIL_AT") or None
_LOG = os.environ.get("PAS_CRASH_LOG") or None
ACTIVE = bool(_SPEC or _FAIL_SPEC or _LOG)

_lock = threading.Lock()
_reached = 0
_by_name: dict[str, int] = {}


def _parse(spec: str | None) -> tuple[str | None, int]:
    if spec is None:
        return None, 0
    name, _, count = spec.rpartition(":") if ":" in spec else ("", "", spec)
    if name == "" and not count.isdigit():
        return count, 1                      # a bare name: its first occurrence
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"crash point {spec!r} (PAS_CRASH_AT / PAS_FAIL_AT): expected N, NAME or NAME:N (N >= 1)")
    return (name or None), int(count)


_KILL_AT = _parse(_SPEC)
_FAIL_AT = _parse(_FAIL_SPEC)


def crash_point(name: str) -> None:
    """A write step called ``name``: the process may be killed here (see module doc)."""
    if ACTIVE:
        _reach(name)


def _reach(name: str) -> None:
    global _reached
    with _lock:
        _reached += 1
        n = _by_name[name] = _by_name.get(name, 0) + 1
        if _LOG:
            with open(_LOG, "a") as f:   # closed each time: in the page cache before any kill
                f.write(name + "\n")
        if _matches(_KILL_AT, name, n):
            os.kill(os.getpid(), signal.SIGKILL)
        if _matches(_FAIL_AT, name, n) and not name.endswith(".done"):   # a finished step cannot fail
            raise OSError(errno.ENOSPC, f"No space left on device (injected at {name!r}, point {_reached})")


def _matches(target: tuple[str | None, int], name: str, n: int) -> bool:
    want_name, count = target
    return bool(count) and ((want_name is None and _reached == count) or (want_name == name and n == count))
