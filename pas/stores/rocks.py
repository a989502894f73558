"""The embedded default store: RocksDB through rocksdict.

RocksDB gives an atomic WriteBatch across kill -9 and a process-level LOCK
file; pas adds what RocksDB does not: its own hashes on every value (checked
by the repository), and a typed `RepositoryLocked` for a second writer.
Values are already compressed by pas, so RocksDB's own compression is off.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from ..errors import RepositoryLocked, StoreError
from ..faults import crash_point
from .base import ATOMIC_BATCH, DURABLE_SYNC, PERSISTENT, Store


def _classify(exc: Exception, path: Path) -> Exception:
    # rocksdict raises plain Exception; the message is all we have.
    msg = str(exc)
    if "lock" in msg.lower() and ("LOCK" in msg or "lock hold" in msg):
        return RepositoryLocked(
            f"repository is locked by another process ({path}); try again when it has finished")
    return StoreError(f"RocksDB error at {path}: {msg}")


# RocksDB rewrites its OPTIONS file at every read-write open and loads it on a
# read-only one; a damaged file can crash that load (measured: one flipped bit in
# a section name, a segmentation fault in rocksdict's read-only open). pas sets
# every option itself, so it records the file's digest when RocksDB writes it
# and refuses, typed, to hand RocksDB a file that no longer matches.
OPTIONS_CHECK = "pas-options.check"
#: Values at least this big are stored in blob files (see RocksStore.__init__).
BLOB_MIN_BYTES = 4096


def _latest_options_file(path: Path) -> Path | None:
    files = sorted(path.glob("OPTIONS-*"), key=lambda p: (len(p.name), p.name))
    return files[-1] if files else None


def _record_options_file(path: Path) -> None:
    import xxhash
    latest = _latest_options_file(path)
    if latest is None:
        return
    tmp = path / (OPTIONS_CHECK + ".tmp")
    tmp.write_text(f"{latest.name} {xxhash.xxh3_64_hexdigest(latest.read_bytes())}\n")
    os.replace(tmp, path / OPTIONS_CHECK)


def _check_options_file(path: Path) -> None:
    import xxhash
    try:
        name, digest = (path / OPTIONS_CHECK).read_text().split()
    except (OSError, ValueError):
        return   # not recorded yet (a repository written before the check, or a crash right after open)
    latest = _latest_options_file(path)
    if latest is None or latest.name != name:
        return
    if xxhash.xxh3_64_hexdigest(latest.read_bytes()) != digest:
        raise StoreError(f"RocksDB's options file {latest} is damaged: it no longer matches the digest pas "
                         f"recorded in {OPTIONS_CHECK} when it was written (or that record is damaged). pas "
                         f"sets every option itself and needs neither: move both out of {path} and open the "
                         f"repository again")


class RocksStore(Store):
    capabilities = frozenset({ATOMIC_BATCH, DURABLE_SYNC, PERSISTENT})

    def __init__(self, path: str | os.PathLike, read_only: bool = False, create: bool = False):
        from rocksdict import (AccessType, DBCompressionType, Options, Rdict,
                               ReadOptions, WriteOptions)
        self.path = Path(path)
        self.read_only = read_only
        opts = Options(raw_mode=True)
        opts.create_if_missing(create)
        opts.set_compression_type(DBCompressionType.none())
        opts.set_paranoid_checks(True)
        # Values are large and read once per retrieve: map SST files instead of
        # copying blocks through the block cache (measured 2.2 -> 5.3 GB/s).
        opts.set_allow_mmap_reads(True)
        # RocksDB advises the kernel that SST reads are random, which turns off
        # readahead: a cold read of a 1 MiB chunk then faults in 4 KiB at a time
        # (measured: a 90 MB version 1.2 s cold; 0.2 s with readahead).
        opts.set_advise_random_on_open(False)
        # Key-value separation: values of BLOB_MIN_BYTES and more (chunks, most
        # records) go to blob files at flush, and table files keep keys and
        # references. Chunk keys are hashes, so every table file overlaps every
        # other, and level compaction would otherwise rewrite all chunk bytes
        # again and again as versions are added (a store is write-once: its
        # bytes should be written once). Blobs are readable with or without
        # this option, so repositories written either way open either way.
        opts.set_enable_blob_files(True)
        opts.set_min_blob_size(BLOB_MIN_BYTES)
        # Blob garbage collection stays off: with it on, every compaction
        # rewrites the live blobs of the oldest quarter of blob files, garbage
        # or not (measured: archiving the corpus wrote 645 MB instead of 523 MB
        # for the same 385 MB). Blobs only become garbage when pas gc deletes
        # objects, and `compact` turns collection on for that one compaction.
        opts.set_enable_blob_gc(False)
        access = AccessType.read_only() if read_only else AccessType.read_write()
        _check_options_file(self.path)
        try:
            self._db = Rdict(str(self.path), options=opts, access_type=access)
        except Exception as exc:  # noqa: BLE001 - rocksdict only raises Exception
            raise _classify(exc, self.path) from exc
        if not read_only:
            _record_options_file(self.path)
        ropts = ReadOptions()
        # Every value carries pas's own check, verified by the reader; RocksDB's
        # block checksums would hash every byte a second time (~8% of a retrieve).
        # Damage to keys or index blocks surfaces as a missing or mismatched value.
        ropts.set_verify_checksums(False)
        ropts.fill_cache(False)
        self._db.set_read_options(ropts)
        self._WriteOptions = WriteOptions

    def _batch(self):
        from rocksdict import WriteBatch
        return WriteBatch(raw_mode=True)

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        try:
            return list(self._db.get([bytes(k) for k in keys]))
        except Exception as exc:  # noqa: BLE001
            raise _classify(exc, self.path) from exc

    def put_if_absent(self, key: bytes, value: bytes) -> bool:
        # Single writer per repository (the RocksDB LOCK), so check-then-put is safe.
        if self.exists(key):
            return False
        self.write([(key, value)])
        return True

    def exists(self, key: bytes) -> bool:
        return self.get_many([key])[0] is not None

    def write(self, puts: Iterable[tuple[bytes, bytes]] = (), deletes: Iterable[bytes] = (),
              sync: bool = False) -> None:
        self._write(puts, deletes, sync=sync)

    def put_many(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        # Chunks skip the WAL: written once (to the SST at flush) instead of
        # twice, ~1.6x faster ingest. `flush` persists them before any record
        # names them, so a crash loses only chunks nothing refers to yet.
        # Put one by one, not in a WriteBatch: they need no atomicity (nothing
        # names them yet), and a batch copies every value once more (measured
        # 30 MB of 1 MiB chunks: 100-180 ms in a batch, 35-90 ms put singly).
        wopts = self._WriteOptions()
        wopts.disable_wal = True
        put = self._db.put
        try:
            crash_point("store.put_many")
            for k, v in items:
                put(k if type(k) is bytes else bytes(k), v if type(v) is bytes else bytes(v), wopts)
        except Exception as exc:  # noqa: BLE001
            raise _classify(exc, self.path) from exc
        crash_point("store.put_many.done")

    def _write(self, puts, deletes, sync: bool = False, disable_wal: bool = False) -> None:
        batch = self._batch()
        for k, v in puts:
            batch.put(bytes(k), bytes(v))
        for k in deletes:
            batch.delete(bytes(k))
        wopts = self._WriteOptions()
        wopts.sync = sync
        wopts.disable_wal = disable_wal
        step = "store.put_many" if disable_wal else "store.write"
        try:
            crash_point(step)
            self._db.write(batch, wopts)
        except Exception as exc:  # noqa: BLE001
            raise _classify(exc, self.path) from exc
        crash_point(step + ".done")

    def flush(self) -> None:
        try:
            crash_point("store.flush")
            self._db.flush(True)
            crash_point("store.flush.memtable")
            self._db.flush_wal(True)
        except Exception as exc:  # noqa: BLE001
            raise _classify(exc, self.path) from exc
        crash_point("store.flush.done")

    def compact(self) -> None:
        # Deleted chunks live on in blob files until a compaction relocates the
        # live blobs of those files (blob garbage collection, off otherwise: see
        # __init__). For this one compaction every blob file holding
        # garbage is rewritten (measured: 100 MiB of chunks, 90 deleted: 101 MB
        # on disk; plain compaction 21 MB; this 11 MB, 0.2 s). The options go
        # back after it; a crash in between leaves only an unused OPTIONS file
        # (pas sets every option itself on open).
        from rocksdict import BottommostLevelCompaction, CompactOptions
        if self.read_only:
            return
        co = CompactOptions()
        co.set_bottommost_level_compaction(BottommostLevelCompaction.force())
        try:
            crash_point("store.compact")
            self._db.set_options({"enable_blob_garbage_collection": "true",
                                  "blob_garbage_collection_age_cutoff": "1.0",
                                  "blob_garbage_collection_force_threshold": "0.0"})
            try:
                self._db.compact_range(None, None, co)
            finally:
                self._db.set_options({"enable_blob_garbage_collection": "false",
                                      "blob_garbage_collection_age_cutoff": "0.25",
                                      "blob_garbage_collection_force_threshold": "1.0"})
                _record_options_file(self.path)
        except Exception as exc:  # noqa: BLE001
            raise _classify(exc, self.path) from exc
        crash_point("store.compact.done")

    def list_prefix(self, prefix: bytes) -> Iterator[bytes]:
        try:
            for key in self._db.keys(from_key=prefix):
                if not key.startswith(prefix):
                    break
                yield key
        except Exception as exc:  # noqa: BLE001 - e.g. a damaged table or blob file, typed
            raise _classify(exc, self.path) from exc

    def items_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        try:
            for key, value in self._db.items(from_key=prefix):
                if not key.startswith(prefix):
                    break
                yield key, value
        except Exception as exc:  # noqa: BLE001
            raise _classify(exc, self.path) from exc

    def size_on_disk(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    def close(self) -> None:
        db, self._db = getattr(self, "_db", None), None
        if db is not None:
            try:
                if not self.read_only:
                    db.flush_wal(True)
            finally:
                db.close()
