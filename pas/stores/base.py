"""The store contract: a small byte-keyed object store.

Everything pas persists goes through this interface, so an in-memory store,
the embedded RocksDB store and (later) an S3-compatible object store are
interchangeable. Keys and values are bytes. Content objects are written with
`put_if_absent`; the few mutable keys (refs) and a version's final records go
through `write`, which is atomic where the store says so.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterable, Iterator, Sequence

#: Capability flags a store may declare.
ATOMIC_BATCH = "atomic_batch"   # write() applies all puts/deletes or none, even across a crash
DURABLE_SYNC = "durable_sync"   # write(sync=True) is on stable storage when it returns
PERSISTENT = "persistent"       # data outlives the process


class Store(ABC):
    """Byte-keyed object store. Implementations must pass tests/store_conformance.py."""

    capabilities: frozenset[str] = frozenset()
    read_only: bool = False

    @abstractmethod
    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Values of ``keys`` in order; None where a key is absent."""

    def get(self, key: bytes) -> bytes | None:
        return self.get_many([key])[0]

    @abstractmethod
    def put_if_absent(self, key: bytes, value: bytes) -> bool:
        """Store ``value`` unless ``key`` exists; True if it was written."""

    @abstractmethod
    def exists(self, key: bytes) -> bool: ...

    @abstractmethod
    def write(self, puts: Iterable[tuple[bytes, bytes]] = (), deletes: Iterable[bytes] = (),
              sync: bool = False) -> None:
        """Apply puts (overwriting) and deletes as one batch."""

    def put_many(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        """Bulk-write immutable content objects. They may stay volatile until
        `flush`; callers flush before writing any record that names them."""
        self.write(items)

    def flush(self) -> None:
        """Make every earlier write durable."""

    def compact(self) -> None:
        """Give back now the space of deleted objects, for stores that reclaim
        it lazily (RocksDB's blob files); a no-op where deletes free it at once."""

    def delete(self, key: bytes) -> None:
        self.write(deletes=[key])

    @abstractmethod
    def list_prefix(self, prefix: bytes) -> Iterator[bytes]:
        """Keys starting with ``prefix``, in byte order."""

    def items_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key in self.list_prefix(prefix):
            value = self.get(key)
            if value is not None:
                yield key, value

    def size_on_disk(self) -> int:
        """Bytes the store occupies (best effort; 0 when unknown)."""
        return 0

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
