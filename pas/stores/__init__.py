"""Stores: the byte-keyed object stores pas runs on (see base.Store)."""
from .base import ATOMIC_BATCH, DURABLE_SYNC, PERSISTENT, Store
from .memory import MemoryStore

__all__ = ["Store", "MemoryStore", "ATOMIC_BATCH", "DURABLE_SYNC", "PERSISTENT"]
