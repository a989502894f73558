"""The S3 store against a real S3 API server on loopback (moto's server mode,
started here): the Store conformance suite, packing and ranged reads, the
cache, compaction, faults (HTTP 500, timeouts) and two writers moving a ref."""
from __future__ import annotations

import os
import threading

import pytest
from s3_server import CREDENTIALS, FaultProxy, endpoint_fixture, new_bucket
from store_conformance import StoreConformance

from pas.errors import IntegrityError, RefConflict, RepositoryLocked, StoreError
from pas.stores.base import DURABLE_SYNC, PERSISTENT
from pas.stores.s3 import S3Store

moto_endpoint = endpoint_fixture("moto_endpoint", "session")


@pytest.fixture(scope="session")
def proxy(moto_endpoint):
    p = FaultProxy(moto_endpoint)
    yield p
    p.close()


@pytest.fixture
def bucket(moto_endpoint):
    return new_bucket(moto_endpoint)


def options(endpoint, tmp_path, **extra):
    opts = dict(CREDENTIALS, endpoint=endpoint, cache_dir=str(tmp_path / "cache"), backoff="0.01")
    opts.update(extra)
    return opts


class TestS3Store(StoreConformance):
    @pytest.fixture
    def make_store(self, moto_endpoint, bucket, tmp_path):
        counter = iter(range(1000))

        def make():
            # small packs, so the suite's few MiB span several packs
            n = next(counter)
            opts = options(moto_endpoint, tmp_path / str(n), pack_size=str(1 << 20))
            store = S3Store(f"s3://{bucket}/repo{n}", opts)
            store.test_options = dict(opts, cache_dir=str(tmp_path / f"{n}-reopened"))
            return store
        return make

    def reopen(self, store):
        store.close()
        # a fresh cache: what the reopened store reads comes from the server
        return S3Store(store.url, store.test_options)

    def test_declares_honest_capabilities(self, store):
        assert store.capabilities == {PERSISTENT, DURABLE_SYNC}


@pytest.fixture
def open_store(moto_endpoint, bucket, tmp_path):
    made = []

    def make(endpoint=None, prefix="r", read_only=False, **extra):
        s = S3Store(f"s3://{bucket}/{prefix}", options(endpoint or moto_endpoint, tmp_path, **extra),
                    read_only=read_only)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


# ------------------------------------------------------------ packs and ranges
def test_values_are_packed_and_read_by_ranges(open_store):
    s = open_store(pack_size=str(1 << 20))
    vals = {b"c%03d" % i: os.urandom(100_000) for i in range(40)}   # 4 MB: 4 packs of about 1 MiB
    s.put_many(vals.items())
    s.flush()
    names = [m["path"] for m in s._list("")]
    packs = [n for n in names if n.startswith("packs/")]
    # packs went up as they filled; the flush wrote one index object for them all
    assert 4 <= len(packs) <= 5 and len([n for n in names if n.startswith("index/")]) == 1
    r = open_store(pack_size=str(1 << 20), cache_dir="none")
    before = dict(r.stats)
    got = r.get_many([b"c005", b"c006", b"c030"])
    assert got == [vals[b"c005"], vals[b"c006"], vals[b"c030"]]
    # two GETs (c005+c006 adjacent: one merged range; c030 in another pack), not whole packs
    assert r.stats["GET"] - before.get("GET", 0) == 2
    assert r.stats["bytes_in"] - before.get("bytes_in", 0) == 300_000


def test_delete_of_a_value_still_uploading(open_store):
    """put_many sends full packs up in the background, indexed at the next
    write: a delete in that write must win over them."""
    s = open_store(pack_size=str(256 << 10))
    vals = {b"c%d" % i: os.urandom(100_000) for i in range(6)}
    s.put_many(vals.items())                  # packs go up behind the caller
    s.write([(b"v1", b"names c0 c1")], deletes=[b"c0", b"c5"])
    assert s.get_many([b"c0", b"c1", b"c5", b"v1"]) == [None, vals[b"c1"], None, b"names c0 c1"]
    r = open_store(read_only=True, cache_dir="none")
    assert r.get_many([b"c0", b"c1", b"c5", b"v1"]) == [None, vals[b"c1"], None, b"names c0 c1"]
    assert list(r.list_prefix(b"c")) == [b"c1", b"c2", b"c3", b"c4"]


def test_cache_serves_a_second_read(open_store, tmp_path):
    s = open_store()
    s.write([(b"t1", b"x" * 5000), (b"t2", b"y" * 7000)])
    r = open_store(cache_dir=str(tmp_path / "other-machine"))
    gets = r.stats["GET"]
    assert r.get_many([b"t1", b"t2"]) == [b"x" * 5000, b"y" * 7000]
    assert r.stats["GET"] == gets + 1                   # one merged range
    gets = r.stats["GET"]
    assert r.get_many([b"t2", b"t1"]) == [b"y" * 7000, b"x" * 5000]
    assert r.stats["GET"] == gets
    # the writer's machine kept what it wrote: read there, nothing is fetched
    same = open_store()
    gets = same.stats["GET"]
    assert same.get_many([b"t1", b"t2"]) == [b"x" * 5000, b"y" * 7000]
    assert same.stats["GET"] == gets
    # a damaged cache file is noticed (value check) and fetched again
    for f in r.cache.root.glob("val-*"):
        f.write_bytes(b"z" * f.stat().st_size)
    assert r.get_many([b"t1", b"t2"]) == [b"x" * 5000, b"y" * 7000]
    assert r.stats["GET"] > gets


def test_cache_is_bounded(open_store):
    s = open_store(cache_size=str(200_000))
    s.write([(b"k%d" % i, os.urandom(40_000)) for i in range(20)])
    r = open_store(cache_size=str(200_000))
    assert all(v is not None for v in r.get_many([b"k%d" % i for i in range(20)]))
    total = sum(f.stat().st_size for f in r.cache.root.iterdir())
    assert total <= 200_000


def test_wrong_range_is_never_returned(open_store):
    s = open_store(cache_dir="none")
    s.write([(b"a", b"A" * 1000), (b"b", b"B" * 1000)])
    r = open_store(cache_dir="none")
    # the index claims b is longer than the pack: the short answer is refused
    e = r._entries[b"b"]
    r._entries[b"b"] = type(e)(e.pack, e.offset + 100_000, e.length, e.check)
    with pytest.raises(IntegrityError):
        r.get(b"b")
    r._entries[b"b"] = type(e)(e.pack, e.offset - 1, e.length, e.check)   # a shifted range
    with pytest.raises(IntegrityError):
        r.get(b"b")


def test_gc_deletes_then_compact_reclaims(open_store):
    s = open_store(pack_size=str(256 << 10))
    vals = {b"c%02d" % i: os.urandom(50_000) for i in range(30)}
    s.put_many(vals.items())
    s.flush()
    dead = [b"c%02d" % i for i in range(0, 30, 2)] + [b"c%02d" % i for i in range(1, 20, 2)]
    s.write(deletes=dead, sync=True)
    other = open_store(pack_size=str(256 << 10), read_only=True)   # another process sees the deletions
    assert other.get_many(dead[:3]) == [None] * 3 and not other.exists(dead[0])
    before = s.size_on_disk()
    s.compact()
    after = s.size_on_disk()
    live = {k: v for k, v in vals.items() if k not in dead}
    assert after < before / 2
    assert len([m for m in s._list("index/")]) == 1
    assert dict(s.items_prefix(b"c")) == live
    assert dict(other.items_prefix(b"c")) == live        # a reader with the old index recovers
    fresh = open_store(pack_size=str(256 << 10), cache_dir="none", read_only=True)
    assert dict(fresh.items_prefix(b"c")) == live


# -------------------------------------------------------------------- faults
def test_transient_500_and_timeout_are_retried(proxy, open_store):
    proxy.reset()
    s = open_store(endpoint=proxy.endpoint, timeout="2", cache_dir="none")
    start = proxy.count
    proxy.faults = {start + 1: "500", start + 2: "500", start + 4: "hang"}
    s.write([(b"c1", b"one" * 1000)])                      # pack PUT fails twice, then index PUT ...
    s.write([(b"r/main", b"ref")])
    # pack PUT x3 (two 500s), index PUT x2 (one timeout), ref PUT; and the lock at open
    assert s.stats["PUT"] == 1 + 6 and proxy.count == start + 6
    assert s.get_many([b"c1", b"r/main"]) == [b"one" * 1000, b"ref"]
    r = open_store(endpoint=proxy.endpoint, timeout="2", cache_dir="none")
    proxy.faults = {proxy.count + 1: "hang"}                # the ranged GET times out once
    gets = r.stats["GET"]
    assert r.get(b"c1") == b"one" * 1000
    assert r.stats["GET"] == gets + 2


@pytest.mark.parametrize("n", range(1, 5))
def test_persistent_failure_is_typed_and_nothing_half_visible(proxy, open_store, n):
    """Request n of a version's final batch (pack, index, ref) fails for good."""
    proxy.reset()
    s = open_store(endpoint=proxy.endpoint, retries="2", timeout="10", cache_dir="none")
    s.write([(b"c-old", b"old")])
    s.write([(b"r/main", b"v-old")])
    s.get(b"r/main")
    first = proxy.count + n
    proxy.faults = {first + i: "500" for i in range(3)}     # 1 try + 2 retries, all failed
    batch = [(b"c-new", b"chunk"), (b"v-new", b"manifest"), (b"r/main", b"v-new")]
    try:
        s.write(batch, sync=True)
    except StoreError as exc:
        assert "failed after 3 attempts" in str(exc)
    else:
        assert n == 4, "only a failure after the batch's last request may go unnoticed"
    proxy.faults = {}
    s.write([(b"c-later", b"later")])                      # the writer goes on: no resurrection
    r = open_store(endpoint=proxy.endpoint, cache_dir="none")
    got = r.get_many([b"c-new", b"v-new", b"r/main", b"c-later"])
    # the content is there as a whole (failing ref) or not at all (failing pack
    # or index), and the ref moves only after it
    assert got[0:2] == ([None, None] if n <= 2 else [b"chunk", b"manifest"])
    assert got[2] == (b"v-new" if n == 4 else b"v-old")
    assert got[3] == b"later"
    assert s.get_many([b"c-new", b"v-new"]) == got[0:2]    # the writer's own view agrees


def test_two_writers_moving_a_ref(proxy, open_store):
    """Both read the ref, both try to move it: one wins, the other gets RefConflict."""
    proxy.reset()
    a = open_store(endpoint=proxy.endpoint)
    a.write([(b"r/main", b"v0")])
    writers = [open_store(endpoint=proxy.endpoint) for _ in range(2)]
    for w in writers:
        assert w.get(b"r/main") == b"v0"
    results: dict[int, object] = {}
    barrier = threading.Barrier(2)

    def run(i):
        barrier.wait()
        try:
            writers[i].write([(b"v%d" % i, b"manifest %d" % i), (b"r/main", b"v%d" % (i + 1))])
            results[i] = "ok"
        except RefConflict as exc:
            results[i] = exc
    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, r in results.items() if r == "ok"]
    assert len(winners) == 1, results
    loser = 1 - winners[0]
    assert "another writer" in str(results[loser])
    assert a.get(b"r/main") == b"v%d" % (winners[0] + 1)
    # no lost update: the loser sees the winner's value and can move on from it
    assert writers[loser].get(b"r/main") == b"v%d" % (winners[0] + 1)
    writers[loser].write([(b"r/main", b"v9")])
    assert a.get(b"r/main") == b"v9"
    # and a stale writer (who read before that) is refused too
    with pytest.raises(RefConflict):
        writers[winners[0]].write([(b"r/main", b"v-stale")])
    # creating a ref two writers both saw absent: the second create is refused
    b1, b2 = open_store(endpoint=proxy.endpoint), open_store(endpoint=proxy.endpoint)
    assert b1.get(b"r/new") is None and b2.get(b"r/new") is None
    b1.write([(b"r/new", b"x")])
    with pytest.raises(RefConflict):
        b2.write([(b"r/new", b"y")])


def test_gc_deletes_only_as_the_only_writer(open_store, monkeypatch):
    """Deleting content takes an exclusive lock: refused while another writer is
    open (it may be about to name what would be deleted), and it keeps new
    writers out until it is done; readers are never blocked."""
    a = open_store()
    a.write([(b"c1", b"x" * 10), (b"c2", b"y" * 10)])
    b = open_store()                                   # another writer: a shared lock
    with pytest.raises(RepositoryLocked, match="another writer"):
        a.write(deletes=[b"c1"])
    with pytest.raises(RepositoryLocked):
        a.compact()
    assert b.get_many([b"c1", b"c2"]) == [b"x" * 10, b"y" * 10]
    a.write([(b"c3", b"z")])                           # a still writes (its shared lock kept)
    b.close()
    a.write(deletes=[b"c1"])                           # alone now
    with pytest.raises(RepositoryLocked, match="collecting garbage"):
        open_store()                                   # no writer while the exclusive lock is held
    assert open_store(read_only=True).get_many([b"c1", b"c2", b"c3"]) == [None, b"y" * 10, b"z"]
    a.compact()
    a.close()
    c = open_store()                                   # released on close
    c.write(deletes=[b"c2"])
    # a lock left by a writer that died (c, never closed) goes stale after the lease
    monkeypatch.setenv("PAS_S3_LOCK_LEASE", "0")
    d = open_store()
    d.write(deletes=[b"c3"])
    assert d.get_many([b"c2", b"c3"]) == [None, None]


def test_two_archivers_moving_one_ref(moto_endpoint, bucket, tmp_path):
    """Through the repository: b archives while a is between reading its ref
    and moving it. a gets RefConflict; b's version is current; a's is stored."""
    import numpy as np

    from pas.repo import Repository
    from pas.snapshot import Snapshot, Tensor

    def snap(seed):
        s = Snapshot(metadata={}, format="safetensors")
        s.add(Tensor.from_array("w", np.random.default_rng(seed).normal(0, 1, (300, 200)).astype("<f4")))
        return s
    url = f"s3://{bucket}/repo"
    opts = options(moto_endpoint, tmp_path)
    Repository.init(url, storage_options=opts).close()
    a = Repository.open(url, write=True, storage_options=opts)
    b = Repository.open(url, write=True, storage_options=opts)
    real_write, done = a.store.write, []

    def write_after_b(puts=(), deletes=(), sync=False):
        puts = list(puts)
        if any(k.startswith(b"r") for k, _ in puts) and not done:
            done.append(b.archive_snapshot(snap(2), "m").version_id)
        return real_write(puts, deletes, sync)
    a.store.write = write_after_b
    with pytest.raises(RefConflict):
        a.archive_snapshot(snap(1), "m")
    a.close()
    b.close()
    with Repository.open(url, storage_options=opts) as c:
        assert c.resolve("m").hex() == done[0]
        ids = {v.hex for v in c.versions()}
        assert len(ids) == 2
        (mine,) = ids - {done[0]}
        got = c.retrieve(mine).tensors["w"].data
        assert got.tobytes() == snap(1).tensors["w"].data.tobytes()


def test_cache_shared_by_two_stores_at_once(open_store, tmp_path):
    """Two stores (as two processes would) fill and read one cache directory
    at once, under a bound that makes them evict each other's files."""
    vals = {b"k%03d" % i: os.urandom(20_000) for i in range(60)}
    w = open_store(cache_dir="none")
    w.write(vals.items())
    shared = {"cache_dir": str(tmp_path / "shared"), "cache_size": str(600_000)}
    readers = [open_store(**shared) for _ in range(2)]
    errors = []

    def run(r, order):
        try:
            for _ in range(3):
                keys = sorted(vals, reverse=order)
                assert r.get_many(keys) == [vals[k] for k in keys]
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=run, args=(r, i)) for i, r in enumerate(readers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert not list((tmp_path / "shared").glob("*.tmp"))
    # each evicts down to 3/4 of the bound when what it counts passes it: two
    # sharers overshoot by at most a quarter each
    assert sum(f.stat().st_size for f in (tmp_path / "shared").iterdir()) <= 1.25 * 600_000 + 20_000


def test_many_index_objects_are_merged_by_the_next_writer(open_store, monkeypatch):
    from pas.stores import s3
    monkeypatch.setattr(s3, "INDEX_MERGE_AT", 8)
    a = open_store()
    for i in range(10):                                   # one index object per write
        a.write([(b"c%d" % i, b"v%d" % i)])
    reader = open_store(read_only=True, cache_dir="none")
    assert len(a._list("index/")) == 10
    b = open_store()                                      # a writer opens: merged
    assert len(b._list("index/")) == 1
    keys = [b"c%d" % i for i in range(10)]
    assert b.get_many(keys) == [b"v%d" % i for i in range(10)]
    a.write([(b"c-after", b"x")])                         # a writer with the old view goes on
    fresh = open_store(read_only=True, cache_dir="none")
    assert fresh.get_many(keys + [b"c-after"]) == [b"v%d" % i for i in range(10)] + [b"x"]
    reader._refreshed = 0.0                               # a reader of the old index objects
    assert list(reader.list_prefix(b"c")) == sorted(keys + [b"c-after"])
