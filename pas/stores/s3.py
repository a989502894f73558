"""An S3-compatible object store backend (AWS S3, MinIO, R2, Ceph RGW, moto).

Layout under ``s3://BUCKET/PREFIX`` (docs/format.md §9):

    config.json            the repository config (written once, put-if-absent)
    packs/<32 hex>         immutable packs: values back to back, then a trailer
                           listing them (key, offset, length, xxh3-64), so a pack
                           describes itself and the index can be rebuilt from packs
    index/<16 hex>-<8 hex> immutable index objects: key -> (pack, offset, length,
                           xxh3-64), or a tombstone; applied in name order (the
                           first field is the writer's clock in ns), later wins
    keys/<hex of key>      mutable keys (refs, prefix ``r`` by default), one object
                           each, moved by conditional writes (compare-and-swap)
    locks/<id>-shared|-exclusive   writers' lock objects (below)

Everything else (chunks, tensor records, manifests) goes into packs: a store
of millions of MiB-sized chunks becomes thousands of objects of PACK_SIZE,
written with few requests, and a read of some chunks (a K-plane read) fetches
only their byte ranges, in parallel, adjacent ranges merged.

Concurrency: pack and index names are random, so writers never collide on
them. A mutable key is written with If-Match on the ETag this store last saw
for it (If-None-Match: * when it saw it absent); a writer that lost the race
gets `RefConflict` and its refs are not applied (its content stays, unreferenced
or harmlessly duplicated). Every writer holds a shared lock object; deleting
content (gc, compact) needs an exclusive one, so it never deletes what a
concurrent archive deduplicated against (restic's model).

Client: obstore (Rust object_store), measured against boto3 and s3fs on the
local moto server (docs/format.md §9): 2.8 ms per small GET against 4.1
(boto3) and 10.3 (s3fs), 64 ranged GETs on 8 threads 0.23 s against 0.42 and
0.42, import 15 ms against 180 and 360; it has conditional puts (create /
If-Match) built in. It is imported only when an S3 store is opened.
"""
from __future__ import annotations

import os
import random
import re
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import xxhash

from ..errors import BadInput, IntegrityError, RefConflict, RepositoryLocked, StoreError
from .base import DURABLE_SYNC, PERSISTENT, Store

#: Target pack size, 8 MiB. Measured on the local server (docs/format.md §9):
#: PUT throughput flattens from 4 MiB on (104 MiB/s at 1 MiB, 145-170 at 4-16),
#: whole GETs peak at 8 MiB, and 1 MiB ranged GETs hold ~180 MiB/s up to
#: 8 MiB objects but fall to 140 at 16 and 30-50 at 32-64. Small enough that a
#: failed upload costs little to redo.
PACK_SIZE = 8 << 20
#: Ranges in one pack closer than this are fetched as one GET (one request
#: instead of two, at the price of the gap's bytes).
MERGE_GAP = 64 << 10
#: A merged range is never longer than this (parallelism over big reads).
MAX_RANGE = 8 << 20
#: Keys starting with these are mutable single objects (refs); all else is packed.
MUTABLE_PREFIXES = (b"r",)
#: A writer's lock object older than this (seconds) belongs to a dead writer.
LOCK_LEASE = 30 * 60
#: A writer that opens a store of more index objects than this merges them
#: into one (every version adds one or two; a fresh machine reads them all).
INDEX_MERGE_AT = 64
#: Re-list the index objects on a miss at most this often (seconds): the
#: writer's dedup lookups miss by design, and a LIST per miss would dominate.
REFRESH_INTERVAL = 1.0

PACK_MAGIC = b"PASPACK1"
INDEX_MAGIC = b"PASIDX1\n"
_ENTRY = struct.Struct(">QQQ")          # offset, length, xxh3-64 of the value
_NO_PACK = bytes(16)                     # the "pack" of tombstones in an index


@dataclass(frozen=True)
class Entry:
    pack: str       # 32 hex
    offset: int
    length: int
    check: int      # xxh3-64 of the value


def parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix without slashes at the ends)."""
    if not url.startswith("s3://"):
        raise BadInput(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[5:].partition("/")
    if not bucket:
        raise BadInput(f"no bucket in {url!r} (write s3://BUCKET/PREFIX)")
    return bucket, prefix.strip("/")


def _hex(key: bytes) -> str:
    # hex keeps byte order and prefixes: names starting with hex(p) are the keys starting with p
    return key.hex()


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]


def _check_keys(keys: Iterable[bytes]) -> None:
    for k in keys:
        if len(k) > 0xFFFF:      # index entries store key lengths in 16 bits
            raise BadInput(f"key of {len(k)} bytes: the S3 store takes keys of at most 65535 bytes")


def _encode_entries(entries: list[tuple[bytes, int, int, int]]) -> bytes:
    out = [struct.pack(">I", len(entries))]
    for key, off, length, check in entries:
        out += [struct.pack(">H", len(key)), key, _ENTRY.pack(off, length, check)]
    return b"".join(out)


def _decode_entries(buf: memoryview, pos: int) -> tuple[list[tuple[bytes, int, int, int]], int]:
    (n,), pos = struct.unpack_from(">I", buf, pos), pos + 4
    out = []
    for _ in range(n):
        (klen,) = struct.unpack_from(">H", buf, pos)
        key = bytes(buf[pos + 2:pos + 2 + klen])
        pos += 2 + klen
        off, length, check = _ENTRY.unpack_from(buf, pos)
        pos += _ENTRY.size
        out.append((key, off, length, check))
    return out, pos


def encode_index(sections: list[tuple[bytes, list]]) -> bytes:
    """An index object: sections (16-byte pack id or _NO_PACK for tombstones, entries), checked."""
    body = INDEX_MAGIC + b"".join(pid + _encode_entries(es) for pid, es in sections)
    return body + xxhash.xxh3_64_digest(body)


def decode_index(data: bytes, name: str) -> list[tuple[str | None, list]]:
    if len(data) < len(INDEX_MAGIC) + 8 or not data.startswith(INDEX_MAGIC) \
            or xxhash.xxh3_64_digest(data[:-8]) != data[-8:]:
        raise IntegrityError(f"S3 index object {name} is damaged (bad magic or check)")
    buf, pos, end = memoryview(data), len(INDEX_MAGIC), len(data) - 8
    sections = []
    try:
        while pos < end:
            pid = bytes(buf[pos:pos + 16])
            entries, pos = _decode_entries(buf, pos + 16)
            sections.append((None if pid == _NO_PACK else pid.hex(), entries))
    except struct.error:
        raise IntegrityError(f"S3 index object {name} is damaged (truncated entry)") from None
    if pos != end:
        raise IntegrityError(f"S3 index object {name} is damaged (trailing bytes)")
    return sections


class DiskCache:
    """Fetched index objects and values on local disk, LRU by mtime, bounded in bytes.

    Files are written to a unique temporary name and renamed, so processes
    sharing the directory never see a partial file; one evicting what another
    reads is a miss, not an error. Values are checked against the index on
    every read (a damaged cache file is refetched)."""

    def __init__(self, root: Path, max_bytes: int):
        self.root, self.max_bytes = root, max_bytes
        root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._total = sum(f.stat().st_size for f in root.iterdir() if f.is_file())

    def get(self, name: str) -> bytes | None:
        path = self.root / name
        try:
            data = path.read_bytes()
            os.utime(path)            # most recently used
            return data
        except OSError:
            return None

    def put(self, name: str, data: bytes) -> None:
        if len(data) > self.max_bytes // 4:
            return                    # one object must not flush the whole cache
        tmp = self.root / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, self.root / name)
        except OSError:
            tmp.unlink(missing_ok=True)
            return                    # a cache that cannot write is just a smaller cache
        with self._lock:
            self._total += len(data)
            if self._total > self.max_bytes:
                self._evict()

    def _evict(self) -> None:
        files = []
        for f in self.root.iterdir():
            try:
                st = f.stat()
            except OSError:
                continue
            files.append((st.st_mtime, st.st_size, f))
        files.sort()
        total = sum(s for _, s, _ in files)
        for _, size, f in files:
            if total <= self.max_bytes * 3 // 4:
                break
            f.unlink(missing_ok=True)
            total -= size
        self._total = total


def _default_cache_dir(bucket: str, prefix: str) -> Path:
    base = Path(os.environ.get("PAS_S3_CACHE") or Path.home() / ".cache" / "pas" / "s3")
    return base / (bucket + "-" + xxhash.xxh3_64_hexdigest(prefix.encode()))


class S3Store(Store):
    """Store over an S3 bucket prefix (see the module docstring for the design).

    Options (``storage_options``, strings as given on the command line):
    endpoint, region, access_key_id, secret_access_key, session_token, profile,
    allow_http; cache_dir ("none" disables), cache_size (bytes), pack_size,
    retries (transient failures retried per request), backoff (first retry's
    delay, seconds), timeout (seconds per request). Endpoint and credentials
    default to the usual AWS_* variables.
    """

    capabilities = frozenset({PERSISTENT, DURABLE_SYNC})

    def __init__(self, url: str, storage_options: dict | None = None, read_only: bool = False):
        opts = dict(storage_options or {})
        self.url = url
        self.bucket, self.prefix = parse_url(url)
        self.read_only = read_only
        try:
            self.pack_size = max(1, int(opts.pop("pack_size", PACK_SIZE)))
            self.retries = max(0, int(opts.pop("retries", 4)))
            self.timeout = float(opts.pop("timeout", 30))
            self.backoff = float(opts.pop("backoff", 0.1))
            cache_size = int(opts.pop("cache_size", 1 << 30))
        except ValueError as exc:
            raise BadInput(f"S3 storage option: {exc} (pack_size, retries, cache_size: integers; "
                           f"timeout, backoff: seconds)") from None
        self.mutable_prefixes = MUTABLE_PREFIXES
        cache_dir = opts.pop("cache_dir", None)
        self.cache = None
        if cache_dir != "none" and cache_size > 0:
            try:
                self.cache = DiskCache(Path(cache_dir) if cache_dir else _default_cache_dir(self.bucket, self.prefix),
                                       cache_size)
            except OSError:
                pass          # no cache where none can be made (read-only home): correct, only slower
        self._client = _make_client(self.bucket, self.prefix, opts, self.timeout)
        self.stats: Counter = Counter()      # requests and bytes, by kind
        self._stats_lock = threading.Lock()
        self._lock = threading.Lock()
        self._entries: dict[bytes, Entry | None] = {}   # key -> location; None: deleted
        self._loaded: list[str] = []         # index objects applied, in order
        self._refreshed = 0.0
        self._refresh_lock = threading.Lock()
        self._pending: dict[bytes, bytes] = {}           # put_many, not yet in a pack
        self._pending_bytes = 0
        self._inflight: dict[bytes, bytes] = {}          # in a pack being uploaded, not yet indexed
        self._uploads: list = []                         # background uploads (futures), oldest first
        self._uploader: ThreadPoolExecutor | None = None
        self._upload_lock = threading.Lock()
        self._unindexed: list = []                       # sections of uploaded packs no index names yet
        self._etags: dict[bytes, str | None] = {}        # mutable key -> ETag last seen (None: absent)
        self._pool: ThreadPoolExecutor | None = None
        self.lease = float(os.environ.get("PAS_S3_LOCK_LEASE") or LOCK_LEASE)
        self._lock_id = uuid.uuid4().hex
        self._locked: str | None = None      # "shared" or "exclusive" once this store holds a lock
        self._lock_time = 0.0
        self._refresh(force=True)
        if not read_only:
            self._take_lock("shared")
            if len(self._loaded) > INDEX_MERGE_AT:
                self._merge_indexes()

    # ------------------------------------------------------------ requests
    def _call(self, what: str, fn, *args, **kw):
        """One request, retried with exponential backoff (and jitter) on
        transient failures: 5xx, 408, 429, timeouts, dropped connections. Every
        request here may be repeated: pack and index names are unique, and a
        conditional PUT whose repeat fails its precondition is checked by
        reading back (_cas). Absent objects and failed preconditions are
        answers, raised at once for the caller; other failures a StoreError."""
        import obstore.exceptions as oe
        attempt = 0
        while True:
            self._count(what.split()[0])
            try:
                return fn(self._client, *args, **kw)
            except (FileNotFoundError, oe.NotFoundError, oe.PreconditionError, oe.AlreadyExistsError):
                raise
            except (oe.PermissionDeniedError, oe.UnauthenticatedError) as exc:
                raise StoreError(f"S3 request {what} on {self.url} refused: access denied (check the "
                                 f"credentials and the bucket's policy): {_first_line(exc)}") from None
            except Exception as exc:  # noqa: BLE001 - obstore's GenericError, OSError, timeouts
                m = re.search(r"status code: (\d{3})", str(exc))
                status = int(m.group(1)) if m else None
                # no status: a timeout or a dropped connection
                transient = status is None or status >= 500 or status in (408, 429)
                if "169.254.169.254" in str(exc) or "/latest/api/token" in str(exc):
                    raise StoreError(f"no AWS credentials for {self.url} (the instance metadata service did not "
                                     f"answer): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or "
                                     f"--storage-option access_key_id=... secret_access_key=...") from None
                if status == 404 and what.startswith("LIST"):
                    raise StoreError(f"no bucket {self.bucket!r} at this endpoint (a listing of {self.url} "
                                     f"was answered 404): create the bucket first, or check the endpoint") from None
                if not transient or attempt >= self.retries:
                    err = StoreError(f"S3 request {what} on {self.url} failed"
                                     f"{f' after {attempt + 1} attempts' if attempt else ''}: {_first_line(exc)}")
                    err.status = status
                    raise err from None
                time.sleep(self.backoff * (2 ** attempt) * (0.5 + random.random()))
                attempt += 1

    def _count(self, what: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[what] += n

    def _get_object(self, name: str) -> tuple[bytes, str | None] | None:
        import obstore
        try:
            res = self._call(f"GET {name}", obstore.get, name)
            data = bytes(res.bytes())
        except FileNotFoundError:
            return None
        self._count("bytes_in", len(data))
        return data, res.meta.get("e_tag")

    def _get_range(self, name: str, start: int, length: int) -> bytes:
        import obstore
        data = bytes(self._call(f"GET {name} range", obstore.get_range, name, start=start, length=length))
        self._count("bytes_in", len(data))
        return data

    def _put_object(self, name: str, data: bytes, mode=None) -> str | None:
        import obstore
        self._count("bytes_out", len(data))
        res = self._call(f"PUT {name}", obstore.put, name, data, mode=mode, use_multipart=False)
        return res.get("e_tag")

    def _list(self, prefix: str) -> list[dict]:
        import obstore

        def run(client, prefix):
            return [meta for batch in obstore.list(client, prefix=prefix) for meta in batch]
        return self._call(f"LIST {prefix}", run, prefix)

    def _delete_object(self, name: str) -> None:
        import obstore
        self._call(f"DELETE {name}", obstore.delete, name)

    # Repository-level objects (config.json), outside the key space.
    def get_object(self, name: str) -> bytes | None:
        got = self._get_object(name)
        return None if got is None else got[0]

    def create_object(self, name: str, data: bytes) -> bool:
        """Put ``name`` unless it exists (conditional write); True if written."""
        import obstore.exceptions as oe
        try:
            self._put_object(name, data, mode="create")
            return True
        except (oe.AlreadyExistsError, oe.PreconditionError):
            return False

    # ---------------------------------------------------------------- locks
    def _take_lock(self, kind: str) -> None:
        """Write our lock object, then look for others (restic's order: of two
        writers that lock at once, at least one sees the other). A writer takes
        a shared lock; deleting content (gc's tombstones, compaction) needs an
        exclusive one: no other live lock at all. Locks older than the lease
        are stale: their writer died. Ages are by the server's clock: the
        Last-Modified of the lock just written is "now"."""
        import datetime as dt
        name = f"locks/{self._lock_id}-{kind}"
        self._put_object(name, f"{kind} {os.getpid()} {time.time():.0f}\n".encode())
        listed = self._list("locks/")
        now = next((m["last_modified"] for m in listed if m["path"] == name), dt.datetime.now(dt.timezone.utc))
        others = [m for m in listed
                  if not m["path"].rsplit("/", 1)[-1].startswith(self._lock_id)
                  and (now - m["last_modified"]).total_seconds() < self.lease]
        blocking = others if kind == "exclusive" else [m for m in others if m["path"].endswith("-exclusive")]
        if not blocking:
            previous, self._locked, self._lock_time = self._locked, kind, time.monotonic()
            if previous and previous != kind:
                self._delete_object(f"locks/{self._lock_id}-{previous}")
        else:
            self._delete_object(name)      # a shared lock held before stays held
            what = "deletes content (gc)" if kind == "exclusive" else "writes"
            raise RepositoryLocked(
                f"{self.url} is locked by another writer ({len(blocking)} live lock object(s) under locks/; "
                f"this {what} only when no other process is "
                f"{'writing' if kind == 'exclusive' else 'collecting garbage'}); try again when it has "
                f"finished (a lock of a process that died is stale after {self.lease / 60:.0f} minutes)")

    def _keep_lock(self) -> None:
        # a long archive renews its lock's date, so it never looks stale
        if self._locked and time.monotonic() - self._lock_time > self.lease / 4:
            self._put_object(f"locks/{self._lock_id}-{self._locked}", b"renewed\n")
            self._lock_time = time.monotonic()

    def _release_lock(self) -> None:
        if self._locked:
            kind, self._locked = self._locked, None
            self._delete_object(f"locks/{self._lock_id}-{kind}")

    # ------------------------------------------------------------- indexes
    def _refresh(self, force: bool = False) -> None:
        """Apply index objects written since the last look (by any writer)."""
        asked = time.monotonic()
        with self._refresh_lock:
            if self._refreshed > asked or (not force and asked - self._refreshed < REFRESH_INTERVAL):
                return        # another thread just did it, or it was done a moment ago
            self._refresh_locked()

    def _refresh_locked(self) -> None:
        names = sorted(m["path"].rsplit("/", 1)[-1] for m in self._list("index/"))
        self._refreshed = time.monotonic()
        with self._lock:
            loaded = self._loaded
        if names[:len(loaded)] == loaded:
            new, rebuild = names[len(loaded):], False
        else:   # compacted away, or a writer with a slower clock: apply all again in order
            new, rebuild = names, True
        parsed = self._map(lambda n: (n, self._read_index(n)), new)
        with self._lock:
            if rebuild:
                self._entries, self._loaded = {}, []
            for name, sections in parsed:
                self._apply(sections)
                self._loaded.append(name)
            # this store's uploaded packs that no index names yet stay readable here
            self._apply([(pid.hex(), es) for pid, es in self._unindexed])

    def _read_index(self, name: str) -> list:
        data = self.cache.get("idx-" + name) if self.cache else None
        if data is not None:
            try:
                return decode_index(data, name)
            except IntegrityError:
                data = None        # damaged cache file: fetch it again
        got = self._get_object("index/" + name)
        if got is None:            # compacted away while we listed: its entries live on elsewhere
            return []
        sections = decode_index(got[0], name)
        if self.cache:
            self.cache.put("idx-" + name, got[0])
        return sections

    def _apply(self, sections) -> None:
        for pack, entries in sections:
            for key, off, length, check in entries:
                self._entries[key] = None if pack is None else Entry(pack, off, length, check)

    def _map(self, fn, items: list) -> list:
        if len(items) <= 1:
            return [fn(x) for x in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(8, thread_name_prefix="pas-s3")
        return list(self._pool.map(fn, items))

    # ---------------------------------------------------------------- reads
    def _mutable(self, key: bytes) -> bool:
        if not key.startswith(self.mutable_prefixes):
            return False
        if len(self.prefix) + len("/keys/") + 2 * len(key) > 1024:   # S3's limit on object names
            raise BadInput(f"ref {key[1:].decode(errors='replace')[:40]!r}... is too long for an S3 repository "
                           f"(its object name would pass S3's 1024 bytes; at most "
                           f"{(1024 - len(self.prefix) - 6) // 2 - 1} bytes of UTF-8 here)")
        return True

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        keys = [bytes(k) for k in keys]
        out: list[bytes | None] = [None] * len(keys)
        todo: dict[int, Entry] = {}
        mutable: list[int] = []
        missing: list[int] = []
        with self._lock:
            for i, k in enumerate(keys):
                if self._mutable(k):
                    mutable.append(i)
                elif (v := self._pending.get(k, self._inflight.get(k))) is not None:
                    out[i] = v
                elif (e := self._entries.get(k)) is not None:
                    todo[i] = e
                elif k not in self._entries:
                    missing.append(i)
        if missing:   # perhaps written by another process since we last looked
            self._refresh()
            with self._lock:
                for i in missing:
                    if (e := self._entries.get(keys[i])) is not None:
                        todo[i] = e
        for i, value in zip(mutable, self._map(self._get_mutable, [keys[i] for i in mutable]), strict=True):
            out[i] = value
        if todo:
            try:
                got = self._read_entries(todo)
            except FileNotFoundError:
                # a pack compacted away since we read the index: read the index anew, once
                self._refresh(force=True)
                with self._lock:
                    todo = {i: e for i in todo if (e := self._entries.get(keys[i])) is not None}
                try:
                    got = self._read_entries(todo)
                except FileNotFoundError as exc:
                    raise StoreError(f"S3 pack missing under {self.url} although the index names it: {exc}") from None
            for i, value in got.items():
                out[i] = value
        return out

    def _get_mutable(self, key: bytes) -> bytes | None:
        got = self._get_object("keys/" + _hex(key))
        with self._lock:
            self._etags[key] = None if got is None else got[1]
        return None if got is None else got[0]

    def _read_entries(self, todo: dict[int, Entry]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        fetch: dict[Entry, list[int]] = {}
        for i, e in todo.items():
            if e.length == 0:
                out[i] = b""
                continue
            cached = self.cache.get(f"val-{e.pack}-{e.offset}-{e.length}") if self.cache else None
            if cached is not None and len(cached) == e.length and xxhash.xxh3_64_intdigest(cached) == e.check:
                out[i] = cached
            else:
                fetch.setdefault(e, []).append(i)
        if fetch:
            for e, value in self._fetch(list(fetch)).items():
                for i in fetch[e]:
                    out[i] = value
        return out

    def _fetch(self, entries: list[Entry]) -> dict[Entry, bytes]:
        """Values of ``entries`` by ranged GETs: per pack, by offset, near ranges
        merged, the GETs in parallel; every value checked against its entry."""
        ranges: list[tuple[str, int, int, list[Entry]]] = []
        by_pack: dict[str, list[Entry]] = {}
        for e in entries:
            by_pack.setdefault(e.pack, []).append(e)
        for pack, es in by_pack.items():
            es.sort(key=lambda e: e.offset)
            cur: list[Entry] = [es[0]]
            start, end = es[0].offset, es[0].offset + es[0].length
            for e in es[1:]:
                if e.offset - end <= MERGE_GAP and e.offset + e.length - start <= MAX_RANGE:
                    cur.append(e)
                    end = max(end, e.offset + e.length)
                else:
                    ranges.append((pack, start, end, cur))
                    cur, start, end = [e], e.offset, e.offset + e.length
            ranges.append((pack, start, end, cur))

        def get(r):
            pack, start, end, es = r
            for _ in range(2):
                try:
                    data = self._get_range("packs/" + pack, start, end - start)
                except StoreError as exc:
                    if getattr(exc, "status", None) != 416:
                        raise
                    data = b""        # the range lies past the pack's end: a wrong index entry
                vals = {}
                if len(data) == end - start:
                    for e in es:
                        v = data[e.offset - start:e.offset - start + e.length]
                        if xxhash.xxh3_64_intdigest(v) != e.check:
                            break
                        vals[e] = v
                    else:
                        return vals
            raise IntegrityError(f"S3 pack {pack} bytes {start}-{end} came back wrong twice "
                                 f"(got {len(data)} bytes, or a value failed its check): not returned")
        out: dict[Entry, bytes] = {}
        for vals in self._map(get, ranges):
            out.update(vals)
        if self.cache:
            for e, v in out.items():
                self.cache.put(f"val-{e.pack}-{e.offset}-{e.length}", v)
        return out

    def exists(self, key: bytes) -> bool:
        key = bytes(key)
        if self._mutable(key):
            return self.get(key) is not None
        with self._lock:
            if key in self._pending or key in self._inflight or self._entries.get(key) is not None:
                return True
            if key in self._entries:
                return False
        self._refresh()
        with self._lock:
            return self._entries.get(key) is not None

    def list_prefix(self, prefix: bytes) -> Iterator[bytes]:
        prefix = bytes(prefix)
        self._refresh()
        with self._lock:
            keys = {k for k, e in self._entries.items() if e is not None and k.startswith(prefix)}
            keys.update(k for k in (*self._pending, *self._inflight) if k.startswith(prefix))
        if any(prefix.startswith(p) or p.startswith(prefix) for p in self.mutable_prefixes):
            # object_store lists by whole path segments: list keys/ and filter here
            # (mutable keys are few: the refs)
            hp = _hex(prefix)
            keys.update(bytes.fromhex(name) for m in self._list("keys/")
                        if (name := m["path"].rsplit("/", 1)[-1]).startswith(hp))
            keys = {k for k in keys if k.startswith(prefix)}
        return iter(sorted(keys))

    def items_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        keys = list(self.list_prefix(prefix))
        for i in range(0, len(keys), 512):   # one batch of ranged GETs per 512 keys
            part = keys[i:i + 512]
            for k, v in zip(part, self.get_many(part), strict=True):
                if v is not None:
                    yield k, v

    # --------------------------------------------------------------- writes
    def _writable(self) -> None:
        if self.read_only:
            raise StoreError(f"S3 store {self.url} was opened read-only")

    def put_many(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        self._writable()
        mutable = []
        for k, v in items:
            k, v = bytes(k), bytes(v)
            _check_keys((k,))
            if self._mutable(k):
                mutable.append((k, v))
                continue
            with self._lock:
                self._pending_bytes += len(v) - len(self._pending.get(k, b""))
                self._pending[k] = v
            if self._pending_bytes >= self.pack_size:
                self._upload_behind()
        if mutable:
            self.write(mutable)

    def _upload_behind(self) -> None:
        """Full packs go up on a background thread while the caller encodes
        the next ones (at most two waiting, so memory stays bounded); the next
        flush or write indexes them all in one index object."""
        with self._upload_lock:
            items = self._take(full_only=True)
            if not items:
                return
            while len(self._uploads) >= 2:
                self._uploads.pop(0).result()
            if self._uploader is None:
                self._uploader = ThreadPoolExecutor(1, thread_name_prefix="pas-s3-upload")
            self._uploads.append(self._uploader.submit(self._send_packs, items))

    def _wait_uploads(self) -> None:
        with self._upload_lock:
            uploads, self._uploads = self._uploads, []
        errors = []
        for f in uploads:
            try:
                f.result()
            except Exception as exc:  # noqa: BLE001 - re-raised below, after every upload ended
                errors.append(exc)
        if errors:
            raise errors[0]

    def flush(self) -> None:
        # the packs put_many sent, the rest now, and one index object for them all
        self._wait_uploads()
        self._send(self._take(), [])

    def put_if_absent(self, key: bytes, value: bytes) -> bool:
        self._writable()
        key, value = bytes(key), bytes(value)
        if self._mutable(key):
            import obstore.exceptions as oe
            try:
                etag = self._put_object("keys/" + _hex(key), value, mode="create")
            except (oe.AlreadyExistsError, oe.PreconditionError):
                return False
            with self._lock:
                self._etags[key] = etag
            return True
        if self.exists(key):
            return False
        self.write([(key, value)])
        return True

    def write(self, puts: Iterable[tuple[bytes, bytes]] = (), deletes: Iterable[bytes] = (),
              sync: bool = False) -> None:
        # Every write is a completed PUT, durable when S3 acknowledges it: `sync` adds nothing.
        self._writable()
        puts = [(bytes(k), bytes(v)) for k, v in puts]     # bad values fail here, before any request
        deletes = [bytes(k) for k in deletes]
        _check_keys([k for k, _ in puts] + deletes)
        packed = [(k, v) for k, v in puts if not self._mutable(k)]
        tombs = [k for k in deletes if not self._mutable(k)]
        if packed or tombs:
            self._wait_uploads()              # (before the lock changes: uploads renew it)
            if tombs and self._locked != "exclusive":
                self._take_lock("exclusive")  # deleting content: no other writer may be at work
            with self._lock:
                for k, v in packed:
                    self._pending_bytes += len(v) - len(self._pending.get(k, b""))
                    self._pending[k] = v
                for k in tombs:
                    self._pending_bytes -= len(self._pending.pop(k, b""))
            # a tombstone for every key asked (an absent one costs a few bytes): a key
            # uploaded but not yet indexed is indexed by this same object, before it
            tombs = list(dict.fromkeys(tombs))
            # Content first: the batch's packs, then one index object naming them
            # all (the point where the batch's content becomes visible) ...
            self._send(self._take(), tombs)
        # ... refs last, each by compare-and-swap.
        for k, v in puts:
            if self._mutable(k):
                self._cas(k, v)
        for k in deletes:
            if self._mutable(k):
                self._cas(k, None)

    def _cas(self, key: bytes, value: bytes | None) -> None:
        """Put (or delete, value None) a mutable key conditionally on the state last seen."""
        import obstore.exceptions as oe
        name = "keys/" + _hex(key)
        with self._lock:
            known = key in self._etags
            etag = self._etags.get(key)
        try:
            if value is None:
                self._delete_object(name)    # plain: conditional DELETE is not on every S3 (nor needed by pas)
                new = None
            elif not known:
                new = self._put_object(name, value)          # never read: a plain overwrite (pas tag)
            elif etag is None:
                new = self._put_object(name, value, mode="create")
            else:
                new = self._put_object(name, value, mode={"e_tag": etag})
        except (oe.AlreadyExistsError, oe.PreconditionError):
            # A retried PUT whose first attempt landed also fails its precondition:
            # if the object now holds exactly our value, our write is what is there.
            current = self._get_object(name)
            with self._lock:
                self._etags.pop(key, None)
            if current is not None and current[0] == value:
                with self._lock:
                    self._etags[key] = current[1]
                return
            raise RefConflict(
                f"{key[1:].decode(errors='replace')!r} was changed by another writer since this one read it "
                f"({self.url}); this write did not move it (content written before it is kept). "
                f"Look at the new state and try again") from None
        with self._lock:
            self._etags[key] = new

    def _packs(self, items: list[tuple[bytes, bytes]]) -> tuple[list, list]:
        """``items`` cut into packs of about pack_size: (packs as (id, bytes), index sections)."""
        packs, sections, i = [], [], 0
        while i < len(items):
            pid = uuid.uuid4().bytes
            parts, entries, off = [], [], 0
            while i < len(items) and (off == 0 or off + len(items[i][1]) <= self.pack_size):
                k, v = items[i]
                parts.append(v)
                entries.append((k, off, len(v), xxhash.xxh3_64_intdigest(v)))
                off += len(v)
                i += 1
            trailer = _encode_entries(entries)   # the pack describes itself (index rebuildable)
            parts += [trailer, struct.pack(">I", len(trailer)), PACK_MAGIC]
            packs.append((pid, b"".join(parts)))
            sections.append((pid, entries))
        return packs, sections

    def _put_index(self, sections: list) -> str:
        name = f"{time.time_ns():016x}-{uuid.uuid4().hex[:8]}"
        body = encode_index(sections)
        self._put_object("index/" + name, body)
        if self.cache:
            self.cache.put("idx-" + name, body)
        return name

    def _take(self, full_only: bool = False) -> list[tuple[bytes, bytes]]:
        """Pending values, moved to in flight (still readable there); with
        ``full_only`` only whole packs, a partial last one stays pending."""
        with self._lock:
            items = list(self._pending.items())
            if full_only:
                cut, size = 0, 0
                for i, (_, v) in enumerate(items):
                    if size and size + len(v) > self.pack_size:
                        cut, size = i, 0          # a pack ends before item i (as _packs cuts)
                    size += len(v)
                items = items if size >= self.pack_size * 0.9 else items[:cut]
            for k, v in items:
                del self._pending[k]
                self._inflight[k] = v
            self._pending_bytes = sum(len(v) for v in self._pending.values())
        return items

    def _send_packs(self, items: list[tuple[bytes, bytes]]) -> None:
        """Upload ``items`` as packs; the next `_send` indexes them. Until then
        this store reads them from their packs (its own view; others cannot
        see them yet), so no value is held in memory once it is uploaded.
        On failure the items are dropped: they must not look stored, and a
        failed write must not reappear through a later one (the caller
        fails; a retry writes them again)."""
        try:
            packs, sections = self._packs(items)
            self._keep_lock()
            self._map(lambda p: self._put_object("packs/" + p[0].hex(), p[1]), packs)
        except BaseException:
            with self._lock:
                for k, v in items:
                    if self._inflight.get(k) is v:
                        del self._inflight[k]
            raise
        if self.cache:
            # what this machine wrote it will likely read: the next version of a
            # lineage deltas against it (measured: archiving a 90 MB fine-tune in a
            # new process fetched 74 MB of its parent back without this)
            values = dict(items)
            for pid, entries in sections:
                for k, off, length, _ in entries:
                    if length:
                        self.cache.put(f"val-{pid.hex()}-{off}-{length}", values[k])
        with self._refresh_lock, self._lock:
            self._unindexed.extend(sections)
            self._apply([(pid.hex(), es) for pid, es in sections])
            for k, v in items:
                if self._inflight.get(k) is v:
                    del self._inflight[k]

    def _send(self, items: list[tuple[bytes, bytes]], tombs: list[bytes]) -> None:
        """``items`` as packs, then one index object naming them, every pack
        uploaded before and not yet indexed, and ``tombs``. If that index PUT
        fails, those packs are forgotten (orphans, deleted by compact): a
        failed write never becomes visible later through another one."""
        if items:
            self._send_packs(items)
        with self._lock:
            sections = list(self._unindexed)
        n = len(sections)
        if tombs:
            sections.append((_NO_PACK, [(k, 0, 0, 0) for k in tombs]))
        if not sections:
            return
        try:
            name = self._put_index(sections)
        except BaseException:
            with self._refresh_lock, self._lock:
                self._unindexed.clear()
                self._entries, self._loaded, self._refreshed = {}, [], 0.0   # rebuilt from the index objects
            raise
        with self._refresh_lock, self._lock:   # not between a refresh's LIST and its apply
            self._apply([(None if pid == _NO_PACK else pid.hex(), es) for pid, es in sections])
            self._loaded.append(name)   # a later-named index of another writer triggers a rebuild in order
            del self._unindexed[:n]

    def _merge_indexes(self) -> None:
        """One index object for the live entries of all those loaded, then the
        old ones deleted. Safe beside other writers (under the shared lock they
        only add content; deletions need the exclusive lock): an index another
        writer adds meanwhile is not touched, and a deleted key is left out,
        not tombstoned, so a later re-add of it elsewhere stays live. An
        optimisation only: if it fails, the store works as it is."""
        with self._lock:
            merged = list(self._loaded)
            live = {k: e for k, e in self._entries.items() if e is not None}
        by_pack: dict[str, list] = {}
        for k, e in sorted(live.items()):
            by_pack.setdefault(e.pack, []).append((k, e.offset, e.length, e.check))
        try:
            name = self._put_index([(bytes.fromhex(p), es) for p, es in by_pack.items()])
        except StoreError:
            return
        with self._refresh_lock, self._lock:
            if self._loaded[:len(merged)] == merged:
                self._loaded = [name] + self._loaded[len(merged):]
        try:
            self._map(lambda n: self._delete_object("index/" + n), merged)
        except StoreError:
            pass      # left-over duplicates of entries the merged index holds: harmless

    # ------------------------------------------------------------ compaction
    def compact(self) -> None:
        """Rewrite packs that are mostly dead (deleted or overwritten values)
        into new packs of their live values, merge every index into one, then
        delete what was replaced: new objects first, so a reader always finds
        each live value somewhere. Takes the exclusive lock (no other writer)."""
        if self.read_only:
            return
        self.flush()
        if self._locked != "exclusive":
            self._take_lock("exclusive")
        self._refresh(force=True)
        sizes = {m["path"].rsplit("/", 1)[-1]: m["size"] for m in self._list("packs/")}
        with self._lock:
            live = {k: e for k, e in self._entries.items() if e is not None}
            old_indexes = list(self._loaded)
        live_bytes: Counter = Counter()
        for e in live.values():
            live_bytes[e.pack] += e.length
        # rewritten: packs whose live values are under 3/4 of their size (a pack
        # no index names any more, left by an interrupted compaction, has none)
        rewrite = {p for p, size in sizes.items() if live_bytes[p] < 0.75 * size}
        if not rewrite and len(old_indexes) <= 1:
            return                       # nothing to reclaim, nothing to merge
        move = sorted((e.pack, e.offset, k) for k, e in live.items() if e.pack in rewrite)
        sections: list = []
        group: list[bytes] = []
        size = 0
        for i, (_, _, k) in enumerate(move):      # in groups of ~8 packs: bounded memory
            group.append(k)
            size += live[k].length
            if size >= 8 * self.pack_size or i == len(move) - 1:
                values = self.get_many(group)
                if any(v is None for v in values):
                    raise StoreError(f"compaction of {self.url}: a live value could not be read; nothing deleted")
                packs, secs = self._packs(list(zip(group, values, strict=True)))
                self._map(lambda p: self._put_object("packs/" + p[0].hex(), p[1]), packs)
                sections += secs
                group, size = [], 0
        kept: dict[str, list] = {}
        for k, e in sorted(live.items()):
            if e.pack not in rewrite:
                kept.setdefault(e.pack, []).append((k, e.offset, e.length, e.check))
        sections += [(bytes.fromhex(p), es) for p, es in kept.items()]
        name = self._put_index(sections)
        with self._refresh_lock, self._lock:
            self._entries, self._loaded = {}, [name]
            self._apply([(pid.hex(), es) for pid, es in sections])
        self._map(lambda n: self._delete_object("index/" + n), old_indexes)
        self._map(lambda p: self._delete_object("packs/" + p), sorted(rewrite))

    # ----------------------------------------------------------------- misc
    def size_on_disk(self) -> int:
        return sum(m["size"] for m in self._list(""))

    def close(self) -> None:
        # put_many values not yet flushed are dropped: nothing names them yet.
        if self._uploader is not None:
            self._uploader.shutdown(wait=True)      # a PUT under way cannot be taken back
            self._uploader, self._uploads = None, []
        with self._lock:
            self._pending.clear()
            self._inflight.clear()
            self._unindexed.clear()       # packs no index names: compact() deletes them
            self._pending_bytes = 0
        try:
            self._release_lock()
        except (StoreError, OSError):
            pass          # the lock goes stale after its lease; nothing else depends on it
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def _make_client(bucket: str, prefix: str, opts: dict, timeout: float):
    try:
        from obstore.store import S3Store as ObS3Store
    except ImportError:
        raise BadInput("s3:// repositories need the obstore package: pip install 'pas[s3]'") from None
    config: dict = {}
    for ours, theirs in (("endpoint", "endpoint"), ("endpoint_url", "endpoint"), ("region", "region"),
                         ("access_key_id", "access_key_id"), ("key", "access_key_id"),
                         ("secret_access_key", "secret_access_key"), ("secret", "secret_access_key"),
                         ("session_token", "session_token"), ("token", "session_token")):
        if ours in opts:
            config[theirs] = opts.pop(ours)
    profile = opts.pop("profile", None) or (None if ("access_key_id" in config or os.environ.get("AWS_ACCESS_KEY_ID"))
                                            else os.environ.get("AWS_PROFILE"))
    allow_http = str(opts.pop("allow_http", "")).lower() in ("1", "true", "yes")
    if opts:
        raise BadInput(f"unknown S3 storage option(s): {', '.join(sorted(opts))} (known: endpoint, region, "
                       f"access_key_id, secret_access_key, session_token, profile, allow_http, cache_dir, "
                       f"cache_size, pack_size, retries, backoff, timeout)")
    endpoint = config.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") \
        or os.environ.get("AWS_ENDPOINT") or ""
    allow_http = allow_http or endpoint.startswith("http://")
    if not (config.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
        config["region"] = "us-east-1"
    kwargs = {}
    if profile:
        try:
            import boto3
            from obstore.auth.boto3 import Boto3CredentialProvider
        except ImportError:
            raise BadInput(f"AWS profile {profile!r} needs boto3 to read it: pip install boto3 "
                           f"(or give AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)") from None
        try:
            kwargs["credential_provider"] = Boto3CredentialProvider(boto3.Session(profile_name=profile))
        except Exception as exc:  # noqa: BLE001 - botocore's ProfileNotFound and kin
            raise BadInput(f"AWS profile {profile!r}: {_first_line(exc)}") from None
    from datetime import timedelta
    try:
        # Retries are ours (S3Store._call): one place counts requests and decides.
        return ObS3Store(bucket, prefix=prefix or None, config=config,
                         client_options={"allow_http": allow_http, "timeout": timedelta(seconds=timeout),
                                         "connect_timeout": timedelta(seconds=min(timeout, 10))},
                         retry_config={"max_retries": 0}, **kwargs)
    except Exception as exc:  # noqa: BLE001 - obstore's configuration errors
        raise BadInput(f"cannot configure S3 access for s3://{bucket}/{prefix}: {exc}") from None


def open_store(url: str, storage_options: dict | None = None, read_only: bool = False) -> S3Store:
    """The store at ``url``: ``s3://bucket/prefix``, with storage options in an
    optional query string (``?endpoint=http://host:9000&profile=dev``) that
    ``storage_options`` override."""
    from urllib.parse import parse_qsl, urlsplit
    parts = urlsplit(url)
    opts = dict(parse_qsl(parts.query, keep_blank_values=True))
    opts.update(storage_options or {})
    base = url.split("?", 1)[0]
    return S3Store(base, opts, read_only=read_only)
