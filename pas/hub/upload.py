"""What a publisher sends, checked before it is stored; refs moved last.

A publisher is trusted with nothing: every chunk is decoded and hashed
against its address, every tensor record parsed and checked, every manifest
hashed against its id, and nothing is stored that names an object the
repository does not hold (or that is not in the same batch). So the
repository's invariant (a stored object's closure is complete, format.md
§6.3) holds whatever arrives, and a ref only ever names a whole version.
Write order mirrors `pas.transfer`: chunks, flush, records, flush, manifests
in a synced batch; refs in their own synced batch (`move_refs`)."""
from __future__ import annotations

import warnings

from .. import codecs, records
from ..errors import BadInput, IntegrityError, NotFound
from ..hashing import digest
from ..names import check_ref_name
from ..reader import parse_record
from ..records import ADDRESS_SIZE, CHUNK, REF, TENSOR, VERSION, VERSION_ID_SIZE, Version
from ..transfer import ancestors


def check_key(key: bytes) -> bytes:
    """The kind of a store key the protocol may name (a BadInput for anything else)."""
    kind, body = key[:1], key[1:]
    if kind in (CHUNK, TENSOR) and len(body) == ADDRESS_SIZE:
        return kind
    if kind == VERSION and len(body) == VERSION_ID_SIZE:
        return kind
    if kind == REF and body:
        try:
            check_ref_name(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise BadInput("a ref key is not UTF-8") from None
        return kind
    raise BadInput(f"not an object key: {key[:40].hex()}")


def store_objects(repo, items: list[tuple[bytes, bytes | None]]) -> dict:
    """Check and store uploaded chunks, records and manifests; refs are refused here."""
    store = repo.store
    accepted: set[bytes] = set()
    # A batch is all-or-nothing (every object is checked before any is written) and
    # written kind by kind (chunks, records, manifests), so an object may name one
    # anywhere in the same batch: copy_versions sends a lineage's manifests child first.
    incoming = {k for k, _ in items}
    have = lambda k: k in incoming or store.exists(k)   # noqa: E731
    chunks, recs, manifests, present = [], [], [], 0
    parsed: dict[bytes, Version] = {}
    for key, value in items:
        kind = check_key(key)
        if kind == REF:
            raise BadInput("refs are moved through POST .../refs, after the objects they name")
        if value is None:
            raise BadInput(f"object {key.hex()[:34]} has no value")
        if key in accepted or store.exists(key):
            present += 1     # content-addressed: the stored one was checked when it came
            continue
        what = {CHUNK: "chunk", TENSOR: "tensor record", VERSION: "manifest"}[kind]
        addr = key[1:]
        try:
            if kind == CHUNK:
                data = codecs.decode_chunk(value, records.address_length(addr))
                records.check_address(data, addr, "chunk")
                chunks.append((key, value))
            elif kind == TENSOR:
                lay = parse_record(addr, value)
                for plane in lay.addrs:
                    for c in plane:
                        if not have(CHUNK + c):
                            raise BadInput(f"tensor record {addr.hex()[:16]} names chunk {c.hex()[:16]}, "
                                           f"which is neither stored nor in this batch")
                if lay.base is not None and not have(TENSOR + lay.base):
                    raise BadInput(f"tensor record {addr.hex()[:16]} is a delta on {lay.base.hex()[:16]}, "
                                   f"which is neither stored nor in this batch")
                recs.append((key, value))
            else:
                if digest(value) != addr:
                    raise BadInput(f"manifest {addr.hex()[:12]} does not match its id")
                v = Version(addr, records.unpack_json(value, f"manifest {addr.hex()[:12]}"))
                if v.parent is not None and not have(VERSION + v.parent):
                    raise BadInput(f"manifest {v.short} names parent {v.parent.hex()[:12]}, which is not here "
                                   f"(publish the lineage)")
                for e in v.tensors + v.files:
                    if not have(TENSOR + e.object):
                        raise BadInput(f"manifest {v.short}: {e.name[:200]!r} names record {e.object.hex()[:16]}, "
                                       f"which is neither stored nor in this batch")
                manifests.append((key, value))
                parsed[addr] = v
        except IntegrityError as exc:   # damaged on the publisher's side: the request is bad, not the store
            raise BadInput(f"uploaded {what} {addr.hex()[:16]}: {exc}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise BadInput(f"uploaded {what} {addr.hex()[:16]} is malformed: {exc}") from None
        accepted.add(key)
    if chunks:
        store.put_many(chunks)
        store.flush()
    if recs:
        store.put_many(recs)
        store.flush()
    if manifests:
        store.write(manifests, sync=True)
        _journal(repo, parsed)
    return {"stored": {"chunks": len(chunks), "records": len(recs), "manifests": len(manifests)},
            "present": present, "bytes": sum(len(k) + len(v) for k, v in chunks + recs + manifests)}


def move_refs(repo, refs: dict, force: bool = False) -> dict:
    """Point ``refs`` (name -> version id hex) at versions the repository holds; a ref
    moves only forward (to a descendant of where it points) unless ``force``."""
    if not isinstance(refs, dict) or not refs:
        raise BadInput("give refs as a non-empty object {name: version id}")
    puts = []
    for name, vid_hex in refs.items():
        check_ref_name(name)
        try:
            vid = records.hex_id(vid_hex, VERSION_ID_SIZE)
        except ValueError:
            raise BadInput(f"ref {name!r}: {str(vid_hex)[:80]!r} is not a version id") from None
        if not repo.store.exists(VERSION + vid):
            raise NotFound(f"ref {name!r}: version {vid.hex()[:12]} is not in the repository (upload it first)")
        cur = repo.store.get(REF + name.encode())
        if cur is not None and not force:
            cur_id = records.unpack_ref(cur, name)
            if cur_id != vid and cur_id not in ancestors(repo.store, vid):
                raise BadInput(f"ref {name!r} points to {cur_id.hex()[:12]}, which is not an ancestor of "
                               f"{vid.hex()[:12]}: pull it first, or force the update")
        puts.append((REF + name.encode(), records.pack_ref(vid)))
    repo.store.write(puts, sync=True)
    return {"refs": {n: v for n, v in refs.items()}}


def _journal(repo, versions: dict) -> None:
    if repo.root is None:
        return
    from ..journal import FILE_NAME, Journal, JournalWarning
    try:
        journal = Journal(repo.root / FILE_NAME)
        for vid, v in versions.items():
            journal.append(vid, v.name)
    except OSError as exc:
        warnings.warn(f"versions stored, but the journal could not record them ({exc})", JournalWarning, stacklevel=2)
