"""Opening the served repositories.

Reads share one read-only `Repository` per repository, reopened when the
store changed on disk: its folder's file names, sizes and times are compared
at every request (a directory scan, ~0.1 ms, against ~6 ms for RocksDB's
read-only open, which otherwise dominated a small request), so a request sees
everything written before it, by the hub or by `pas` on the same machine. A
replaced handle is closed when its last request is done. The reader's
caches are thread-safe (the repository's own pool shares them). Repositories
at a URL (s3://) are opened per request: there is no folder to watch.

A publish opens the repository for writing, one request at a time per
repository (RocksDB allows one writer: a `pas archive` running at the same
time makes it a 423), and retires the shared reader."""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager

from ..repo import Repository, is_url
from .config import HubConfig


class _Handle:
    def __init__(self, repo, stamp):
        self.repo, self.stamp, self.users, self.retired = repo, stamp, 0, False


class Repos:
    def __init__(self, cfg: HubConfig):
        self.cfg = cfg
        self._write_locks = {name: threading.Lock() for name in cfg.repos}
        self._handles: dict[str, _Handle] = {}
        self._lock = threading.Lock()

    def _stamp(self, name: str):
        path = self.cfg.repos[name].path
        if is_url(path):
            return None
        db = os.path.join(Repository.find(path), "db")
        try:
            with os.scandir(db) as it:
                # RocksDB's info LOG and rocksdict's config file are rewritten by every
                # open, read-only ones too: they are not data.
                return frozenset((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in it
                                 if not e.name.startswith(("LOG", "rocksdict-config")))
        except OSError:
            return None

    @contextmanager
    def read(self, name: str):
        stamp = self._stamp(name)
        if stamp is None:               # a URL (or an unreadable folder: open reports it, typed)
            repo = Repository.open(self.cfg.repos[name].path)
            try:
                yield repo
            finally:
                repo.close()
            return
        with self._lock:
            h = self._handles.get(name)
            if h is None or h.stamp != stamp:
                if h is not None:
                    self._retire(name, h)
                h = _Handle(Repository.open(self.cfg.repos[name].path), stamp)
                self._handles[name] = h
            h.users += 1
        try:
            yield h.repo
        finally:
            with self._lock:
                h.users -= 1
                if h.retired and h.users == 0:
                    h.repo.close()

    def _retire(self, name: str, h: _Handle) -> None:
        # Called with self._lock held.
        h.retired = True
        if self._handles.get(name) is h:
            del self._handles[name]
        if h.users == 0:
            h.repo.close()

    @contextmanager
    def write(self, name: str):
        with self._write_locks[name]:
            repo = Repository.open(self.cfg.repos[name].path, write=True)
            try:
                yield repo
            finally:
                repo.close()
                with self._lock:
                    h = self._handles.get(name)
                    if h is not None:
                        self._retire(name, h)

    def close(self) -> None:
        with self._lock:
            for name, h in list(self._handles.items()):
                self._retire(name, h)

    def check(self) -> None:
        """Open each repository once at start: a wrong path fails now, not at the first request."""
        for name in self.cfg.repos:
            with self.read(name):
                pass
