"""The Store contract for every store, plus RocksDB specifics (persistence, locking, atomicity)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import REPO_ROOT
from pas.errors import PasError, RepositoryLocked
from pas.stores import ATOMIC_BATCH, DURABLE_SYNC, PERSISTENT, MemoryStore
from pas.stores.rocks import RocksStore
from store_conformance import StoreConformance


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    def make_store(self):
        return MemoryStore

    def test_not_persistent(self, store):
        assert PERSISTENT not in store.capabilities
        assert ATOMIC_BATCH in store.capabilities


class TestRocksStore(StoreConformance):
    @pytest.fixture
    def make_store(self, tmp_path):
        counter = iter(range(1000))

        def make():
            return RocksStore(tmp_path / f"db{next(counter)}", create=True)
        return make

    def reopen(self, store):
        store.close()
        return RocksStore(store.path)

    def test_declares_all_capabilities(self, store):
        assert store.capabilities == {ATOMIC_BATCH, DURABLE_SYNC, PERSISTENT}


# ------------------------------------------------------------ RocksDB specifics
def _child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def test_persistence_across_reopen(tmp_path):
    path = tmp_path / "db"
    s = RocksStore(path, create=True)
    s.write([(b"c\x00" + bytes(range(20)), b"chunk"), (b"r/main", b"ref")], sync=False)
    s.put_if_absent(b"empty", b"")
    s.write(deletes=[b"r/main"])
    s.close()
    s = RocksStore(path)
    try:
        assert s.get_many([b"c\x00" + bytes(range(20)), b"r/main", b"empty"]) == [b"chunk", None, b""]
        assert s.size_on_disk() > 0
    finally:
        s.close()


def test_open_missing_without_create_fails_typed(tmp_path):
    with pytest.raises(PasError) as exc:
        RocksStore(tmp_path / "nothing-here")
    assert not isinstance(exc.value, RepositoryLocked)
    assert not (tmp_path / "nothing-here" / "CURRENT").exists()


def test_read_only_open_cannot_write(tmp_path):
    path = tmp_path / "db"
    with RocksStore(path, create=True) as s:
        s.write([(b"k", b"v")])
    ro = RocksStore(path, read_only=True)
    try:
        assert ro.read_only is True
        assert ro.get(b"k") == b"v"
        with pytest.raises(PasError):
            ro.write([(b"k2", b"v2")])
        with pytest.raises(PasError):
            ro.put_if_absent(b"k3", b"v3")
        with pytest.raises(PasError):
            ro.delete(b"k")
        assert ro.get_many([b"k", b"k2", b"k3"]) == [b"v", None, None]
    finally:
        ro.close()
    with RocksStore(path) as s:
        assert s.get_many([b"k", b"k2", b"k3"]) == [b"v", None, None]


def test_second_writer_in_process_is_locked(tmp_path):
    path = tmp_path / "db"
    first = RocksStore(path, create=True)
    try:
        t0 = time.monotonic()
        with pytest.raises(RepositoryLocked):
            RocksStore(path)
        assert time.monotonic() - t0 < 10, "a locked repository must fail at once, not wait"
        first.write([(b"k", b"v")])          # the holder is unaffected
        assert first.get(b"k") == b"v"
        # a reader does not need the lock, and sees what the writer wrote (from its WAL)
        with RocksStore(path, read_only=True) as ro:
            assert ro.get(b"k") == b"v"
    finally:
        first.close()
    with RocksStore(path) as again:          # released on close
        assert again.get(b"k") == b"v"


HOLDER = textwrap.dedent("""
    import sys
    from pas.stores.rocks import RocksStore
    s = RocksStore(sys.argv[1], create=True)
    s.write([(b"held", b"yes")], sync=True)
    print("ready", flush=True)
    sys.stdin.read()          # hold the lock until the parent closes our stdin
    s.close()
""")


def test_second_writer_other_process_is_locked(tmp_path):
    path = tmp_path / "db"
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env())
    try:
        line = child.stdout.readline()
        assert line.strip() == "ready", child.stderr.read()
        t0 = time.monotonic()
        with pytest.raises(RepositoryLocked) as exc:
            RocksStore(path)
        assert time.monotonic() - t0 < 10, "a locked repository must fail at once, not wait"
        assert "lock" in str(exc.value).lower()
        with RocksStore(path, read_only=True) as ro:   # readers are not blocked
            assert ro.get(b"held") == b"yes"
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    assert child.returncode == 0, child.stderr.read()
    with RocksStore(path) as s:                        # and the lock is free again
        assert s.get(b"held") == b"yes"


WRITER = textwrap.dedent("""
    import sys
    from pas.stores.rocks import RocksStore
    s = RocksStore(sys.argv[1], create=True)
    i = 0
    while True:
        s.write([(b"batch/%08d/%03d" % (i, j), b"x" * 2000) for j in range(100)]
                + [(b"last", b"%08d" % i)], deletes=[b"batch/%08d/000" % (i - 1)] if i else [])
        if i == 3:
            print("ready", flush=True)
        i += 1
""")


def test_batches_are_atomic_across_kill(tmp_path):
    """SIGKILL a writer in the middle of a stream of batches: each batch is all there or absent."""
    path = tmp_path / "db"
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=_child_env())
    try:
        assert child.stdout.readline().strip() == b"ready", child.stderr.read()
        time.sleep(0.3)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    with RocksStore(path) as s:
        last = int(s.get(b"last"))
        assert last >= 3
        batches: dict[int, set[int]] = {}
        for key in s.list_prefix(b"batch/"):
            _, i, j = key.split(b"/")
            batches.setdefault(int(i), set()).add(int(j))
        assert max(batches) == last, "the batch that set 'last' must be complete, and no later one visible"
        for i, js in batches.items():
            # batch i+1 deleted key 000 of batch i in the same atomic write
            expected = set(range(100)) if i == last else set(range(1, 100))
            assert js == expected, f"batch {i} is partial: {len(js)} keys"
