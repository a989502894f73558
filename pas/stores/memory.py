"""In-memory store: for tests and as the reference behaviour of the contract."""
from __future__ import annotations

import threading
from typing import Iterable, Iterator, Sequence

from .base import ATOMIC_BATCH, Store


class MemoryStore(Store):
    capabilities = frozenset({ATOMIC_BATCH})

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return [self._data.get(bytes(k)) for k in keys]

    def put_if_absent(self, key: bytes, value: bytes) -> bool:
        with self._lock:
            if key in self._data:
                return False
            self._data[bytes(key)] = bytes(value)
            return True

    def exists(self, key: bytes) -> bool:
        return bytes(key) in self._data

    def write(self, puts: Iterable[tuple[bytes, bytes]] = (), deletes: Iterable[bytes] = (),
              sync: bool = False) -> None:
        puts = [(bytes(k), bytes(v)) for k, v in puts]
        deletes = [bytes(k) for k in deletes]
        with self._lock:
            for k, v in puts:
                self._data[k] = v
            for k in deletes:
                self._data.pop(k, None)

    def list_prefix(self, prefix: bytes) -> Iterator[bytes]:
        with self._lock:
            keys = sorted(k for k in self._data if k.startswith(prefix))
        return iter(keys)

    def size_on_disk(self) -> int:
        return sum(len(k) + len(v) for k, v in self._data.items())
