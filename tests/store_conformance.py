"""The `pas.stores.base.Store` contract, as a reusable test class.

A store implementation gets the whole contract checked by subclassing::

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def make_store(self, tmp_path):
            def make():
                return MyStore(...)
            return make

``make_store`` is a fixture returning a zero-argument factory of *fresh, empty*
stores; each test closes what it opens. Persistent stores may also override
``reopen(store)`` (close ``store`` and open the same data again) so the
persistence part of the capability check runs.
"""
from __future__ import annotations

import os

import pytest

from pas.stores.base import ATOMIC_BATCH, DURABLE_SYNC, PERSISTENT, Store

KNOWN_CAPABILITIES = {ATOMIC_BATCH, DURABLE_SYNC, PERSISTENT}


class StoreConformance:
    """Subclass and provide the ``make_store`` fixture."""

    @pytest.fixture
    def make_store(self):  # pragma: no cover - must be overridden
        raise NotImplementedError("StoreConformance subclasses must define the make_store fixture")

    def reopen(self, store: Store) -> Store | None:
        """Close ``store`` and reopen its data; None if the store cannot be reopened."""
        return None

    @pytest.fixture
    def store(self, make_store):
        s = make_store()
        yield s
        s.close()

    # ------------------------------------------------------------ basic reads
    def test_new_store_is_empty_and_writable(self, store):
        assert isinstance(store, Store)
        assert store.read_only is False
        assert list(store.list_prefix(b"")) == []
        assert list(store.items_prefix(b"")) == []
        assert store.get(b"anything") is None
        assert store.exists(b"anything") is False

    def test_get_many_order_and_absent(self, store):
        store.write([(b"a", b"1"), (b"b", b"22"), (b"c", b"333")])
        keys = [b"c", b"zz", b"a", b"b", b"a", b"missing"]
        assert store.get_many(keys) == [b"333", None, b"1", b"22", b"1", None]
        assert store.get_many([]) == []
        got = store.get_many([b"b"])
        assert got == [b"22"] and isinstance(got[0], bytes)

    def test_get_returns_bytes(self, store):
        store.write([(b"k", bytearray(b"value"))])
        v = store.get(b"k")
        assert v == b"value" and type(v) is bytes

    # ----------------------------------------------------------- put_if_absent
    def test_put_if_absent(self, store):
        assert store.put_if_absent(b"k", b"first") is True
        assert store.put_if_absent(b"k", b"second") is False
        assert store.get(b"k") == b"first"
        assert store.put_if_absent(b"k2", b"") is True
        assert store.put_if_absent(b"k2", b"x") is False
        assert store.get(b"k2") == b""

    def test_put_if_absent_after_delete(self, store):
        assert store.put_if_absent(b"k", b"v1")
        store.delete(b"k")
        assert store.exists(b"k") is False
        assert store.put_if_absent(b"k", b"v2") is True
        assert store.get(b"k") == b"v2"

    # ------------------------------------------------------------------ exists
    def test_exists(self, store):
        store.write([(b"present", b"x"), (b"empty", b"")])
        assert store.exists(b"present") is True
        assert store.exists(b"empty") is True        # an empty value still exists
        assert store.exists(b"pres") is False        # a prefix of a key is not a key
        assert store.exists(b"present\x00") is False

    # ------------------------------------------------------------------- write
    def test_write_puts_and_deletes(self, store):
        store.write([(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
        store.write(puts=[(b"d", b"4"), (b"a", b"1b")], deletes=[b"b", b"never-existed"])
        assert store.get_many([b"a", b"b", b"c", b"d"]) == [b"1b", None, b"3", b"4"]
        store.write()  # an empty batch is a no-op
        store.write(puts=[], deletes=[], sync=True)
        assert sorted(store.list_prefix(b"")) == [b"a", b"c", b"d"]

    def test_write_accepts_iterators_and_sync(self, store):
        store.write(((bytes([i]), bytes([i]) * i) for i in range(1, 20)), sync=True)
        store.write(deletes=(bytes([i]) for i in range(1, 10)), sync=True)
        assert [store.get(bytes([i])) for i in (9, 10, 19)] == [None, b"\x0a" * 10, b"\x13" * 19]

    def test_overwrite(self, store):
        store.write([(b"k", b"old value that is long")])
        store.write([(b"k", b"new")])
        assert store.get(b"k") == b"new"
        store.write([(b"k", b"")])
        assert store.get(b"k") == b""
        assert list(store.list_prefix(b"k")) == [b"k"]

    def test_delete(self, store):
        store.write([(b"k", b"v"), (b"k2", b"v2")])
        store.delete(b"k")
        assert store.get(b"k") is None and store.exists(b"k") is False
        assert store.get(b"k2") == b"v2"
        store.delete(b"k")          # deleting an absent key is not an error
        store.delete(b"never")
        assert list(store.list_prefix(b"")) == [b"k2"]

    def test_failed_batch_applies_nothing(self, store):
        if ATOMIC_BATCH not in store.capabilities:
            pytest.skip("store does not declare atomic_batch")
        store.write([(b"keep", b"v")])
        with pytest.raises(Exception):
            store.write(puts=[(b"new1", b"x"), (b"new2", object())], deletes=[b"keep"])
        assert store.get(b"new1") is None
        assert store.get(b"keep") == b"v"

    # ------------------------------------------------------ put_many / flush
    def test_put_many_visible_at_once_and_after_flush(self, store):
        items = [(b"c" + bytes([i]) * 17, bytes([i]) * (i * 100)) for i in range(20)]
        store.put_many(iter(items))
        # visible to reads before any flush (the repository dedups against them)
        assert store.get_many([k for k, _ in items]) == [v for _, v in items]
        assert all(store.exists(k) for k, _ in items)
        assert list(store.list_prefix(b"c")) == sorted(k for k, _ in items)
        store.put_many([])
        store.flush()
        store.flush()
        assert store.get_many([k for k, _ in items]) == [v for _, v in items]
        store.write([(b"r/main", b"names the chunks")], sync=True)
        again = self.reopen(store)
        if again is not None:
            try:
                assert again.get_many([k for k, _ in items]) == [v for _, v in items]
                assert again.get(b"r/main") == b"names the chunks"
            finally:
                again.close()

    def test_put_many_binary_and_empty_values(self, store):
        store.put_many([(b"\xff\x00k", b""), (b"\x00", b"\x00\xff"), (b"big", bytes(1 << 20))])
        assert store.get_many([b"\xff\x00k", b"\x00", b"big", b"nope"]) == [b"", b"\x00\xff", bytes(1 << 20), None]

    # ------------------------------------------------------------- list_prefix
    KEYS = [b"b", b"b\xff", b"b\xff\xff", b"c", b"c\x00", b"c\x01x", b"c\x7f", b"c\x80",
            b"c\xfe", b"c\xff", b"c\xff\x00", b"c\xff\xff", b"c\xff\xff\xff", b"ca", b"cab",
            b"d", b"d\x00", b"da", b"\x00", b"\xff", b"\xff\xff"]

    def _fill(self, store):
        store.write([(k, b"v:" + k) for k in self.KEYS])

    def test_list_prefix_order_and_bounds(self, store):
        self._fill(store)
        got = list(store.list_prefix(b"c"))
        assert got == sorted(k for k in self.KEYS if k.startswith(b"c"))
        assert got[0] == b"c" and got[-1] == b"c\xff\xff\xff"
        assert not any(k.startswith(b"d") or k.startswith(b"b") for k in got)
        # unsigned byte order: 0x7f before 0x80, 0xff last
        assert got.index(b"c\x7f") < got.index(b"c\x80") < got.index(b"c\xfe") < got.index(b"c\xff")

    def test_list_prefix_with_0xff(self, store):
        self._fill(store)
        assert list(store.list_prefix(b"c\xff")) == [b"c\xff", b"c\xff\x00", b"c\xff\xff", b"c\xff\xff\xff"]
        assert list(store.list_prefix(b"c\xff\xff")) == [b"c\xff\xff", b"c\xff\xff\xff"]
        assert list(store.list_prefix(b"\xff")) == [b"\xff", b"\xff\xff"]
        assert list(store.list_prefix(b"b\xff")) == [b"b\xff", b"b\xff\xff"]

    def test_list_prefix_all_and_none(self, store):
        self._fill(store)
        assert list(store.list_prefix(b"")) == sorted(self.KEYS)
        assert list(store.list_prefix(b"e")) == []
        assert list(store.list_prefix(b"ca\x00")) == []
        assert list(store.list_prefix(b"cab")) == [b"cab"]
        assert list(store.list_prefix(b"cabx")) == []   # longer than every key it would follow

    def test_items_prefix(self, store):
        self._fill(store)
        store.write([(b"c\x02", b"")])
        items = list(store.items_prefix(b"c"))
        keys = sorted([k for k in self.KEYS if k.startswith(b"c")] + [b"c\x02"])
        assert [k for k, _ in items] == keys
        for k, v in items:
            assert v == (b"" if k == b"c\x02" else b"v:" + k)
            assert type(k) is bytes and type(v) is bytes
        assert list(store.items_prefix(b"c\xff\xff")) == [(b"c\xff\xff", b"v:c\xff\xff"),
                                                          (b"c\xff\xff\xff", b"v:c\xff\xff\xff")]

    def test_list_after_deletes(self, store):
        self._fill(store)
        store.write(deletes=[b"c\x00", b"cab", b"c\xff\xff"])
        assert list(store.list_prefix(b"c\xff")) == [b"c\xff", b"c\xff\x00", b"c\xff\xff\xff"]
        assert b"cab" not in list(store.list_prefix(b"c"))

    def test_compact_keeps_what_is_live(self, store):
        """`compact` (giving back deleted values' space) changes nothing visible."""
        vals = {b"k%d" % i: os.urandom(64 << 10) for i in range(8)}
        store.put_many(vals.items())
        store.flush()
        store.write(deletes=[b"k1", b"k3", b"k5"], sync=True)
        store.compact()
        live = {k: v for k, v in vals.items() if k not in (b"k1", b"k3", b"k5")}
        assert dict(store.items_prefix(b"k")) == live
        assert store.get_many(list(vals)) == [vals[k] if k in live else None for k in vals]
        store.write([(b"k9", b"after")])
        assert store.get(b"k9") == b"after"

    # ------------------------------------------------------------ keys/values
    def test_binary_keys_and_values(self, store):
        pairs = [(bytes([0]) * 3, bytes(range(256))), (b"\x00k\x00", b"\x00"),
                 (bytes(range(255, -1, -1)), b"\xff" * 1000),
                 (b"c" + os.urandom(16) + b"\x00" * 8 + b"\x00", os.urandom(777))]
        store.write(pairs)
        assert store.get_many([k for k, _ in pairs]) == [v for _, v in pairs]
        for k, v in pairs:
            assert store.exists(k)
        assert sorted(store.list_prefix(b"")) == sorted(k for k, _ in pairs)

    def test_empty_value(self, store):
        store.write([(b"e", b"")])
        assert store.get(b"e") == b""
        assert store.get_many([b"e", b"f"]) == [b"", None]
        assert list(store.items_prefix(b"e")) == [(b"e", b"")]

    def test_large_value(self, store):
        big = os.urandom(4 << 20)
        assert store.put_if_absent(b"big", big)
        store.write([(b"big2", big[::-1])])
        assert store.get(b"big") == big
        assert store.get_many([b"big2", b"big"]) == [big[::-1], big]
        assert dict(store.items_prefix(b"big"))[b"big"] == big

    # ------------------------------------------------------------ capabilities
    def test_capabilities(self, store):
        caps = store.capabilities
        assert isinstance(caps, frozenset)
        assert caps <= KNOWN_CAPABILITIES, caps - KNOWN_CAPABILITIES
        if DURABLE_SYNC in caps:
            assert PERSISTENT in caps, "durable_sync without persistent makes no sense"
        store.write([(b"p", b"persist me")], sync=True)
        again = self.reopen(store)
        if PERSISTENT in caps:
            assert again is not None, "persistent store: the conformance subclass must implement reopen()"
            try:
                assert again.get(b"p") == b"persist me"
            finally:
                again.close()
        else:
            assert again is None or again.get(b"p") is None
