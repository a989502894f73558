"""Copy versions between repositories: only the objects the destination lacks.

Used by `dlv publish` / `dlv pull` (and meant for remote stores: it speaks
only the `Store` interface of both sides). What a version needs is its
closure: its manifest and its ancestors' (a parent must exist, format.md
§6.3), every tensor record its entries name, down each delta chain, and
every chunk those records name. An object already at the destination is
not copied, and neither is what lies below it: by the same invariant, a
manifest or record present there has its whole closure there.

Destination write order mirrors an archive's (format.md §6):
  1. missing chunks, in bulk, then a flush (durable before anything names them);
  2. missing tensor records, delta bases before deltas, in bulk, then a flush;
  3. manifests, in one synced batch (the versions appear, complete);
  4. refs, in a last synced batch (a ref never names a version not yet there);
  5. one journal line per copied version.
A crash leaves at worst unnamed chunks and records (gc removes them) or
versions without their refs; never a ref to an incomplete version, never a
record whose chunks or base are missing.

What is copied is checked on the way: manifests against their id, records
against their checksum and address length, chunks against their frame check.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from . import codecs, records
from .errors import BadInput, IntegrityError, NotFound
from .hashing import digest
from .reader import parse_record
from .records import CHUNK, REF, TENSOR, VERSION, Version

BATCH = 256   # objects per get_many / put_many


@dataclass
class TransferReport:
    versions: list[str] = field(default_factory=list)     # ids copied
    versions_present: int = 0                               # wanted versions the destination had already
    records: int = 0
    records_present: int = 0
    chunks: int = 0
    chunks_present: int = 0
    bytes: int = 0                                          # stored bytes copied (keys + values)
    refs: dict = field(default_factory=dict)                # ref -> version id set at the destination

    def to_json(self) -> dict:
        return dict(self.__dict__)


def ancestors(store, vid: bytes) -> set[bytes]:
    """``vid`` and every version above it, by the manifests in ``store`` (stops where one is missing)."""
    seen: set[bytes] = set()
    while vid is not None and vid not in seen:
        value = store.get(VERSION + vid)
        if value is None:
            break
        seen.add(vid)
        parent = records.unpack_json(value, f"manifest {vid.hex()[:12]}").get("parent")
        vid = bytes.fromhex(parent) if parent else None
    return seen


def copy_versions(src, dst, versions: list[bytes], refs: dict[str, bytes] | None = None,
                  force: bool = False) -> TransferReport:
    """Copy ``versions`` (ids in ``src``) with their closures into ``dst``, then point ``refs`` there.

    ``src`` and ``dst`` are open `Repository` objects (``dst`` writable). A ref
    that exists at the destination moves only forward (to a descendant of
    where it points) unless ``force``; that is checked before anything is written."""
    from .names import check_ref_name
    if dst.store.read_only:
        raise BadInput("the destination repository was opened read-only")
    if src.config.get("repo_id") is not None and src.config.get("repo_id") == dst.config.get("repo_id"):
        raise BadInput("source and destination are the same repository")
    refs = dict(refs or {})
    for name, vid in refs.items():
        check_ref_name(name)
        if vid not in versions:
            versions = [*versions, vid]
    rep = TransferReport()
    # 1. Manifests: walk up from each wanted version until the destination has one.
    manifests: dict[bytes, bytes] = {}
    parsed: dict[bytes, Version] = {}
    todo = list(versions)
    while todo:
        vid = todo.pop()
        if vid in manifests:
            continue
        if dst.store.exists(VERSION + vid):
            if vid in versions:
                rep.versions_present += 1
            continue
        value = src.store.get(VERSION + vid)
        if value is None:
            raise NotFound(f"version {vid.hex()[:12]} is not in the source repository")
        if digest(value) != vid:
            raise IntegrityError(f"manifest {vid.hex()[:12]} does not match its id in the source")
        v = Version(vid, records.unpack_json(value, f"manifest {vid.hex()[:12]}"))
        manifests[vid] = value
        parsed[vid] = v
        if v.parent is not None:
            todo.append(v.parent)
    # Refs only move forward: checked before anything is written.
    src_ancestry = {vid: ancestors(src.store, vid) for vid in set(refs.values())}
    for name, vid in refs.items():
        cur = dst.store.get(REF + name.encode())
        if cur is None or force:
            continue
        cur_id = records.unpack_ref(cur, name)
        if cur_id != vid and cur_id not in src_ancestry[vid]:
            raise BadInput(f"ref {name!r} at the destination points to {cur_id.hex()[:12]}, which is not an "
                           f"ancestor of {vid.hex()[:12]}: pull it first, or force the update")
    # 2. Tensor records the destination lacks, down their delta chains: their
    #    depths and the chunks they name (values are re-read when written, so
    #    memory holds addresses, not data).
    depth_of: dict[bytes, int] = {}
    chunk_addrs: list[bytes] = []
    seen_chunks: set[bytes] = set()
    pending = [e.object for v in parsed.values() for e in v.tensors + v.files]
    checked: set[bytes] = set()
    while pending:
        batch = []
        for addr in pending:
            if addr not in checked:
                checked.add(addr)
                batch.append(addr)
        pending = []
        for i in range(0, len(batch), BATCH):
            part = batch[i:i + BATCH]
            want = [a for a in part if not dst.store.exists(TENSOR + a)]
            rep.records_present += len(part) - len(want)
            for addr, value in zip(want, src.store.get_many([TENSOR + a for a in want])):
                lay = _record(addr, value)
                depth_of[addr] = lay.depth
                for plane in lay.addrs:
                    for c in plane:
                        if c not in seen_chunks:
                            seen_chunks.add(c)
                            chunk_addrs.append(c)
                if lay.base is not None:
                    pending.append(lay.base)
    # 3. Chunks first (a record never names a chunk that is not there), in bulk.
    for i in range(0, len(chunk_addrs), BATCH):
        part = chunk_addrs[i:i + BATCH]
        want = [a for a in part if not dst.store.exists(CHUNK + a)]
        rep.chunks_present += len(part) - len(want)
        puts = []
        for addr, value in zip(want, src.store.get_many([CHUNK + a for a in want])):
            if value is None:
                raise IntegrityError(f"chunk {addr.hex()[:16]} is missing from the source")
            try:
                codecs.unframe(value, True)   # the trailing check: a damaged chunk is not spread
            except IntegrityError as exc:
                raise IntegrityError(f"chunk {addr.hex()[:16]} in the source: {exc}") from None
            puts.append((CHUNK + addr, value))
            rep.bytes += len(addr) + 1 + len(value)
        if puts:
            dst.store.put_many(puts)
            rep.chunks += len(puts)
    dst.store.flush()
    # 4. Records, delta bases before the deltas on them (after a crash every
    #    record there is whole: unnamed ones are for gc, none is broken).
    order = sorted(depth_of, key=lambda a: depth_of[a])
    for i in range(0, len(order), BATCH):
        part = order[i:i + BATCH]
        puts = [(TENSOR + a, _record_value(a, v)) for a, v in zip(part, src.store.get_many([TENSOR + a for a in part]))]
        dst.store.put_many(puts)
        rep.bytes += sum(len(k) + len(v) for k, v in puts)
    dst.store.flush()
    rep.records = len(order)
    # 5. Manifests in one synced batch: the versions appear, whole; 6. refs after them.
    if manifests:
        dst.store.write([(VERSION + k, v) for k, v in manifests.items()], sync=True)
        rep.bytes += sum(1 + len(k) + len(v) for k, v in manifests.items())
    rep.versions = [vid.hex() for vid in manifests]
    if refs:
        dst.store.write([(REF + n.encode(), records.pack_ref(vid)) for n, vid in refs.items()], sync=True)
        rep.refs = {n: vid.hex() for n, vid in refs.items()}
    _journal(dst, parsed)
    return rep


def open_remote(location, write: bool = False, create: bool = False, storage_options: dict | None = None):
    """The repository at ``location`` (a folder, an ``s3://`` URL, or a hub's
    ``http(s)://`` URL with the token in $PAS_HUB_TOKEN) for push, pull,
    publish; ``create``: initialise it when there is none yet (not on a hub)."""
    import os

    from .errors import NotARepository
    from .repo import Repository, is_url
    if str(location).startswith(("http://", "https://")):
        from .hub.remote import open_remote as open_hub
        return open_hub(str(location), token=os.environ.get("PAS_HUB_TOKEN") or None, write=write)
    where = str(location) if is_url(str(location)) else location
    opts = {"storage_options": storage_options} if storage_options else {}
    try:
        return Repository.open(where, write=write, **opts)
    except NotARepository:
        if not create:
            raise NotARepository(f"no pas repository at {location} (create it with `pas init {location}`, "
                                 f"or pass --create)") from None
        return Repository.init(where, **opts)


def wanted(repo, names: list[str]) -> tuple[dict[str, bytes], list[bytes]]:
    """For names (refs or version ids) of ``repo``: the refs among them (moved at
    the destination) and the version ids to copy."""
    refs_now = repo.refs()
    refs, versions = {}, []
    for n in names:
        vid = repo.resolve(n)
        versions.append(vid)
        if n in refs_now:
            refs[n] = vid
    return refs, versions


def _record(addr: bytes, value: bytes | None):
    """A source tensor record, parsed and checked (checksum, structure, length)."""
    if value is None:
        raise IntegrityError(f"tensor record {addr.hex()[:16]} is missing from the source")
    return parse_record(addr, value)


def _record_value(addr: bytes, value: bytes | None) -> bytes:
    _record(addr, value)   # read again: checked again
    return value


def _journal(dst, versions: dict[bytes, Version]) -> None:
    if dst.root is None or not versions:
        return
    from .journal import FILE_NAME, Journal, JournalWarning
    journal = Journal(dst.root / FILE_NAME)
    try:
        for vid, v in versions.items():
            journal.append(vid, v.name)
    except OSError as exc:
        warnings.warn(f"versions copied, but the journal could not record them ({exc})", JournalWarning,
                      stacklevel=3)
