"""Corruption and collisions (reliability-plan.md §5 T5, T6, T7).

A small repository on RocksDB whose versions use every kind of stored object
(docs/format.md): chunks (raw, const and zstd frames with their check) of
tensors stored as chunks, tensor records of every shape (chunked, with inline
plane frames, whole and delta, a delta of a delta), compressed manifests and
refs. Every object is damaged in turn directly in the store. `verify` must
report it and name every affected version (a version is hurt by damage to
any record or chunk down its delta chains); `retrieve` must raise
IntegrityError and never return wrong bytes. A forced hash collision must
not mix up contents.
"""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from conftest import assert_same_snapshot, needed_keys, snapshot_fingerprint, tensor_record
from pas import records
from pas.errors import IntegrityError, PasError, UnsupportedFormat
from pas.hashing import checksum64
from pas.records import CHUNK, REF, TENSOR, VERSION
from pas.repo import Repository, read_config
from pas.snapshot import Snapshot, Tensor
from pas.stores.rocks import RocksStore

#: Inline limit for the fixture: tensors above 1500 bytes get chunks (2 KiB each).
INLINE_MAX = 1500
TAGS = {"raw": 0, "const": 1, "zstd": 2, "blosc2": 3}


def _snapshots():
    """main: whole tensors; other: unrelated, shares some chunks and records with main;
    tuned (child of main): deltas against main, chunked and inline, xor and sub;
    tuned2 (child of tuned): a delta of a delta."""
    rng = np.random.default_rng(42)
    s1 = Snapshot(metadata={"k": "v"})
    s1.add(Tensor.from_array("const", np.zeros(1000, "<f4")))                        # const chunks
    rand = rng.integers(0, 2**32, 700, dtype="<u4")
    s1.add(Tensor.from_array("rand", rand.view("<f4")))                               # raw chunks
    ramp = (np.arange(3000) % 50).astype("<i2")
    s1.add(Tensor.from_array("ramp", ramp))                                           # zstd, 2 chunks/plane
    bf = rng.integers(0x3C00, 0x3F00, 500, dtype="<u2")
    s1.add(Tensor.from_array("bf", bf, dtype="BF16"))                                 # inline
    s1.files["config.json"] = b'{"a": 1}' * 40                                        # inline side file
    s2 = Snapshot(metadata={"k": "w"})
    s2.add(s1.tensors["const"])
    s2.add(s1.tensors["ramp"])
    s2.add(Tensor.from_array("rand2", rng.integers(0, 2**32, 300, dtype="<u4").view("<f4")))  # inline raw
    s3 = Snapshot(metadata={"k": "t"})
    s3.add(s1.tensors["const"])
    rand3 = rand ^ rng.integers(0, 256, 700, dtype="<u4")                             # low byte changed
    s3.add(Tensor.from_array("rand", rand3.view("<f4")))
    ramp3 = ramp.copy()
    ramp3[::97] += 3
    s3.add(Tensor.from_array("ramp", ramp3))
    bf3 = bf.copy()
    bf3[::7] += 1
    s3.add(Tensor.from_array("bf", bf3, dtype="BF16"))
    s3.files["config.json"] = s1.files["config.json"]
    s4 = Snapshot(metadata={"k": "t2"})
    s4.add(Tensor.from_array("rand", (rand3 ^ rng.integers(0, 256, 700, dtype="<u4")).view("<f4")))
    s4.add(s3.tensors["bf"])
    return {"main": s1, "other": s2, "tuned": s3, "tuned2": s4}


class Env:
    """The on-disk repository, its store opened directly, and what each object belongs to."""

    def __init__(self, tmp_path, monkeypatch):
        import pas.delta.select
        import pas.writer
        self.path = tmp_path / "repo"
        self.snaps = _snapshots()
        with monkeypatch.context() as m:
            m.setattr(pas.writer, "INLINE_MAX", INLINE_MAX)
            m.setattr(pas.delta.select, "MIN_SAVING", 0)   # the fixture's tensors are tiny
            with Repository.init(self.path, chunk_size=2048) as repo:
                self.results = {}
                for name, s in self.snaps.items():
                    parent = {"tuned": "main", "tuned2": "tuned"}.get(name)
                    self.results[name] = repo.archive_snapshot(s, name, parent=parent)
        self.ids = {name: r.version_id for name, r in self.results.items()}
        self.root = self.path / ".pas"
        self.store = RocksStore(self.root / "db")
        self.repo = Repository(self.store, read_config(self.root), self.root)
        self.labels = {name: f"{name}@{vid[:12]}" for name, vid in self.ids.items()}
        # which versions need each key (a delta needs its base's record and chunks, down the chain)
        self.users: dict[bytes, set[str]] = {}
        self.chain: dict[bytes, set[bytes]] = {}      # tensor address -> every key it needs
        for name, vid in self.ids.items():
            v = self.repo.version(vid)
            self.users.setdefault(VERSION + v.id, set()).add(name)
            self.users.setdefault(REF + name.encode(), set()).add(name)
            for e in v.tensors + v.files:
                self.chain[e.object] = needed_keys(self.store, e.object)
                for key in self.chain[e.object]:
                    self.users.setdefault(key, set()).add(name)

    def keys(self, prefix: bytes) -> list[bytes]:
        return list(self.store.list_prefix(prefix))

    def check_clean(self):
        rep = self.repo.verify()
        assert rep.ok, rep.errors
        for name, snap in self.snaps.items():
            assert_same_snapshot(self.repo.retrieve(name), snap)

    def verify(self, what: str):
        try:
            return self.repo.verify()
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(f"{what}: verify raised {type(exc).__name__}: {exc} instead of reporting") from exc

    def assert_detected(self, key: bytes, what: str, by_name: bool = True):
        """verify reports the damage naming every affected version; retrieve refuses them."""
        affected = self.users[key]
        rep = self.verify(what)
        assert not rep.ok, f"{what}: verify says ok"
        for name in affected:
            if by_name:
                assert self.labels[name] in rep.damaged_versions, (what, name, rep.damaged_versions, rep.errors)
            else:
                assert any(self.ids[name][:12] in d for d in rep.damaged_versions), (what, rep.to_json())
        for name in set(self.snaps) - affected:        # versions that do not need it are not blamed
            assert not any(self.ids[name][:12] in d for d in rep.damaged_versions), (what, name, rep.to_json())
        for name in affected:
            self.assert_refused(name, what)
        for name in set(self.snaps) - affected:        # ... and still come back intact
            assert_same_snapshot(self.repo.retrieve(self.ids[name]), self.snaps[name])
        return rep

    def assert_refused(self, name: str, what: str, errors=(IntegrityError,)):
        for ref in (name, self.ids[name]):
            try:
                got = self.repo.retrieve(ref)
            except errors:
                continue
            except IntegrityError:
                continue
            same = snapshot_fingerprint(got) == snapshot_fingerprint(self.snaps[name])
            raise AssertionError(f"{what}: retrieve({ref!r}) returned "
                                 f"{'the right' if same else 'WRONG'} bytes instead of raising")

    def assert_right_or_refused(self, key: bytes, what: str, rep) -> None:
        """Whatever verify said: retrieve returns the right bytes or raises (and then verify saw it)."""
        for name in self.users[key]:
            try:
                got = self.repo.retrieve(name)
            except (IntegrityError, UnsupportedFormat):
                assert not rep.ok, f"{what}: retrieve refused but verify said ok"
                continue
            assert_same_snapshot(got, self.snaps[name])

    def close(self):
        self.repo.close()


@pytest.fixture
def env(tmp_path, monkeypatch):
    e = Env(tmp_path, monkeypatch)
    yield e
    e.close()


def flip(store, key: bytes, offset: int, mask: int = 0xFF) -> bytes:
    original = store.get(key)
    damaged = bytearray(original)
    damaged[offset] ^= mask
    store.write([(key, bytes(damaged))])
    return original


def chunk_offsets(value: bytes) -> list[int]:
    """Tag, first payload bytes, middle, last payload byte, the check."""
    cand = {0, 1, 2, len(value) // 2, len(value) - 9, len(value) - 8, len(value) - 5, len(value) - 1}
    return sorted(o for o in cand if 0 <= o < len(value))


def record_parts(value: bytes) -> tuple[int, dict, list[int]]:
    """A stored tensor record's JSON length, its JSON, and the offset of each inline frame."""
    (n,) = struct.unpack("<I", value[:4])
    rec = json.loads(value[4:4 + n])
    starts, pos = [], 4 + n
    for size in rec.get("inline", []):
        starts.append(pos)
        pos += size
    assert pos == len(value) - 8
    return n, rec, starts


def record_offsets(value: bytes) -> list[int]:
    """Length field, JSON body (start, its fields, end), every inline frame's tag and
    payload, the check."""
    n, rec, starts = record_parts(value)
    body = value[4:4 + n]
    cand = {0, 1, 3, 4, 5, 4 + n // 2, 4 + n - 1, len(value) - 9, len(value) - 8, len(value) - 1}
    for field in (b'"dtype"', b'"shape"', b'"layout"', b'"delta"', b'"depth"', b'"inline"', b'"chunks"'):
        i = body.find(field)
        if i >= 0:
            cand |= {4 + i + len(field) + 1, 4 + i + len(field) + 3}     # inside the value
    for s in starts:
        cand |= {s, s + 1}
    return sorted(o for o in cand if 0 <= o < len(value))


def frame_tags(env) -> tuple[set[int], set[int]]:
    """Codec tags of the stored chunks, and of the inline frames in tensor records."""
    chunk_tags = {v[0] for _, v in env.store.items_prefix(CHUNK)}
    inline_tags = set()
    for _, v in env.store.items_prefix(TENSOR):
        inline_tags |= {v[s] for s in record_parts(v)[2]}
    return chunk_tags, inline_tags


def test_fixture_is_clean_and_has_every_kind_of_object(env):
    env.check_clean()
    chunk_tags, inline_tags = frame_tags(env)
    assert {TAGS["const"], TAGS["raw"], TAGS["zstd"]} <= chunk_tags, chunk_tags
    assert {TAGS["const"], TAGS["raw"], TAGS["zstd"]} <= inline_tags, inline_tags
    kinds = set()
    for key in env.keys(TENSOR):
        rec, _ = tensor_record(env.store, key[1:])
        kinds.add(("inline" if "inline" in rec else "chunked",
                   rec["delta"]["op"] if "delta" in rec else "whole", rec.get("depth", 0)))
    assert ("inline", "whole", 0) in kinds and ("chunked", "whole", 0) in kinds, kinds
    assert any(k[0] == "inline" and k[1] != "whole" for k in kinds), kinds       # inline delta
    assert any(k[0] == "chunked" and k[1] != "whole" for k in kinds), kinds      # chunked delta
    assert any(k[2] == 2 for k in kinds), kinds                                  # a delta of a delta
    assert {k[1] for k in kinds} == {"whole", "xor", "sub"}, kinds               # both operators
    assert env.results["tuned"].encodings.get("whole", 0) == 0, env.results["tuned"].encodings
    every = set(env.keys(CHUNK)) | set(env.keys(TENSOR)) | set(env.keys(VERSION)) | set(env.keys(REF))
    assert set(env.users) == every
    shared = [k for k, users in env.users.items() if k[:1] == CHUNK and "other" in users and len(users) > 1]
    assert shared, "some chunks should be shared by unrelated versions"
    # a base's chunk is needed by every version down its chain
    assert any(users == {"main", "tuned", "tuned2"} for k, users in env.users.items() if k[:1] == CHUNK)


def flip_each_detected(env, key: bytes, offsets_of, what: str) -> int:
    """Flip one byte of the object at each of ``offsets_of(value)``, in turn; each flip
    must be detected, and is undone before the next. Returns the number of flips."""
    value = env.store.get(key)
    offsets = list(offsets_of(value))
    for off in offsets:
        original = flip(env.store, key, off)
        try:
            env.assert_detected(key, f"{what} {key[1:9].hex()} offset {off}/{len(value)}")
        finally:
            env.store.write([(key, original)])
    return len(offsets)


def test_every_chunk_byte_flip_is_detected(env):
    chunks = env.keys(CHUNK)
    assert len(chunks) >= 12
    flips = sum(flip_each_detected(env, key, chunk_offsets, "chunk") for key in chunks)
    assert flips >= 5 * len(chunks)
    env.check_clean()


def test_every_tensor_record_byte_flip_is_detected(env):
    """Every part of a record: the length field, the JSON (dtype, shape, layout, delta base,
    depth, frame lengths, chunk addresses), the inline frames' tags and payloads, the check."""
    flips = sum(flip_each_detected(env, key, record_offsets, "tensor record") for key in env.keys(TENSOR))
    assert flips >= 10 * len(env.keys(TENSOR))
    env.check_clean()


def test_every_manifest_byte_flip_is_detected(env):
    for key in env.keys(VERSION):
        value = env.store.get(key)
        (name,) = env.users[key]
        for off in sorted({0, 1, 4, len(value) // 3, len(value) // 2, len(value) - 9, len(value) - 1}):
            original = flip(env.store, key, off)
            try:
                rep = env.assert_detected(key, f"manifest of {name} offset {off}", by_name=False)
                # the user should learn *which* named version is hurt: the name is in the
                # damaged manifest, but also in the ref pointing at it
                text = json.dumps(rep.to_json())
                assert name in rep.damaged_versions or any(name in d for d in rep.damaged_versions) \
                    or name in rep.damaged_refs, (name, rep.to_json())
                assert env.ids[name][:12] in text
            finally:
                env.store.write([(key, original)])
    env.check_clean()


def test_every_ref_byte_flip_is_detected(env):
    for name in env.snaps:
        key = REF + name.encode()
        value = env.store.get(key)
        assert len(value) == 24
        for off in (0, 7, 15, 16, 23):
            original = flip(env.store, key, off)
            try:
                rep = env.repo.verify()
                assert not rep.ok and rep.damaged_refs == [name], rep.to_json()
                with pytest.raises(IntegrityError):
                    env.repo.retrieve(name)
                # the version itself is intact and reachable by id
                assert_same_snapshot(env.repo.retrieve(env.ids[name]), env.snaps[name])
            finally:
                env.store.write([(key, original)])
    env.check_clean()


def test_truncated_and_swapped_chunks_are_detected(env):
    chunks = [k for k in env.keys(CHUNK) if len(env.store.get(k)) > 30]
    for key in chunks[:6]:
        original = env.store.get(key)
        for damaged in (original[: len(original) // 2], original[:-1], original + b"\x00", b""):
            env.store.write([(key, damaged)])
            try:
                env.assert_detected(key, f"chunk {key[1:9].hex()} resized to {len(damaged)}")
            finally:
                env.store.write([(key, original)])
    # swap: another chunk's (valid, framed) value under this key
    a, b = chunks[0], chunks[1]
    va, vb = env.store.get(a), env.store.get(b)
    env.store.write([(a, vb), (b, va)])
    try:
        rep = env.repo.verify()
        assert not rep.ok
        for name in env.users[a] | env.users[b]:
            assert env.labels[name] in rep.damaged_versions
            env.assert_refused(name, "swapped chunks")
    finally:
        env.store.write([(a, va), (b, vb)])
    env.check_clean()


def test_truncated_tensor_records_are_detected(env):
    for key in env.keys(TENSOR):
        original = env.store.get(key)
        n, _, starts = record_parts(original)
        cuts = {4, 4 + n, len(original) // 2, len(original) - 1} | {s + 1 for s in starts}
        for damaged in [original[:c] for c in sorted(cuts)] + [original + b"\x00", b""]:
            env.store.write([(key, damaged)])
            try:
                env.assert_detected(key, f"tensor record {key[1:9].hex()} resized to {len(damaged)}")
            finally:
                env.store.write([(key, original)])
    env.check_clean()


def test_swapped_tensor_records_are_detected(env):
    """Two valid records under each other's keys (a misdirected write): each record and
    its inline planes are intact, but neither is the tensor its address names."""
    def pick(inline):
        return sorted((k for k in env.keys(TENSOR)
                       if ("inline" in tensor_record(env.store, k[1:])[0]) == inline),
                      key=lambda k: records.address_length(k[1:]))
    inline, chunked = pick(True), pick(False)
    pairs = [(inline[0], inline[1]), (chunked[0], chunked[1]), (inline[-1], chunked[0])]
    same_size = [(a, b) for a in inline for b in inline
                 if a < b and records.address_length(a[1:]) == records.address_length(b[1:])
                 and tensor_record(env.store, a[1:])[0]["dtype"] == tensor_record(env.store, b[1:])[0]["dtype"]]
    pairs += same_size[:1]
    for a, b in pairs:
        va, vb = env.store.get(a), env.store.get(b)
        env.store.write([(a, vb), (b, va)])
        what = f"swapped records {a[1:9].hex()} / {b[1:9].hex()}"
        try:
            rep = env.verify(what)
            for name in env.users[a] | env.users[b]:
                env.assert_refused(name, what)
            assert not rep.ok, f"{what}: verify says ok"
            for name in env.users[a] | env.users[b]:
                assert env.labels[name] in rep.damaged_versions, (what, rep.to_json())
        finally:
            env.store.write([(a, va), (b, vb)])
    env.check_clean()


def test_deleted_chunk_names_the_version(env):
    for key in env.keys(CHUNK):
        original = env.store.get(key)
        env.store.delete(key)
        try:
            rep = env.assert_detected(key, f"deleted chunk {key[1:9].hex()}")
            assert rep.errors
        finally:
            env.store.write([(key, original)])
    env.check_clean()


def test_deleted_tensor_record_and_manifest(env):
    for key in env.keys(TENSOR):          # deleting a delta base hurts every version down the chain
        original = env.store.get(key)
        env.store.delete(key)
        try:
            env.assert_detected(key, f"deleted tensor record {key[1:9].hex()}")
        finally:
            env.store.write([(key, original)])
    vid = bytes.fromhex(env.ids["main"])
    original = env.store.get(VERSION + vid)
    env.store.delete(VERSION + vid)
    try:
        rep = env.repo.verify()
        assert not rep.ok and "main" in rep.damaged_refs           # dangling ref
        assert any(env.ids["tuned"][:12] in d for d in rep.damaged_versions)   # its parent is gone
        with pytest.raises(PasError):
            env.repo.retrieve("main")
    finally:
        env.store.write([(VERSION + vid, original)])
    env.check_clean()


@pytest.mark.parametrize("tag", [0, 1, 2, 3, 4, 0x7F, 0xFE, 0xFF])
def test_codec_tag_damage_is_reported_not_raised(env, tag):
    """A frame whose tag byte names another (or no) codec is damage: verify reports it
    instead of crashing and retrieve refuses. In chunks the check sees it; in inline
    frames, the record's check."""
    targets = []
    for key in env.keys(CHUNK):
        targets.append((key, 0))
    for key in env.keys(TENSOR):
        targets += [(key, s) for s in record_parts(env.store.get(key))[2]]
    for key, off in targets:
        value = env.store.get(key)
        if value[off] == tag:
            continue
        original = flip(env.store, key, off, value[off] ^ tag)
        try:
            env.assert_detected(key, f"{key[:1].decode()} {key[1:9].hex()}: tag {value[off]} -> {tag}")
        finally:
            env.store.write([(key, original)])


def _recheck(value: bytes) -> bytes:
    """``value`` with its trailing xxh3-64 recomputed: damage the check cannot see."""
    return value[:-8] + checksum64(value[:-8])


@pytest.mark.parametrize("tag", [0, 1, 2, 3, 4, 0xFF])
def test_wrong_codec_tag_under_a_valid_check_is_detected(env, tag):
    """A frame written with the wrong tag (a writer bug; or damage before the check was
    computed) passes every checksum: verify must still see that the object does not
    decode to its content, and retrieve must refuse it."""
    targets = [(key, 0) for key in env.keys(CHUNK)]
    for key in env.keys(TENSOR):
        targets += [(key, s) for s in record_parts(env.store.get(key))[2]]
    for key, off in targets:
        original = env.store.get(key)
        if original[off] == tag:
            continue
        damaged = bytearray(original)
        damaged[off] = tag
        env.store.write([(key, _recheck(bytes(damaged)))])
        try:
            env.assert_detected(key, f"{key[:1].decode()} {key[1:9].hex()}: tag {original[off]} -> {tag}, "
                                     "check recomputed")
        finally:
            env.store.write([(key, original)])


def test_inline_payload_damage_under_a_valid_check_is_detected(env):
    """Inline planes are a tensor's only copy of its bytes, as chunks are for big tensors:
    verify re-hashes every chunk against its address, and must likewise notice inline
    planes that no longer decode to the tensor (check recomputed, so only the content
    address can tell)."""
    for key in env.keys(TENSOR):
        original = env.store.get(key)
        _, rec, starts = record_parts(original)
        for p, s in enumerate(starts):
            if original[s] != TAGS["raw"]:
                continue
            damaged = bytearray(original)
            damaged[s + 1 + rec["inline"][p] // 2 - 1] ^= 0x04     # a payload byte of a raw frame
            env.store.write([(key, _recheck(bytes(damaged)))])
            try:
                env.assert_detected(key, f"record {key[1:9].hex()} plane {p}: payload changed, check recomputed")
            finally:
                env.store.write([(key, original)])


@pytest.mark.parametrize("field,old,new", [
    ("dtype", b'"dtype":"F32"', b'"dtype":"G32"'),
    ("dtype", b'"dtype":"BF16"', b'"dtype":"BF17"'),
    ("dtype", b'"dtype":"F32"', b'"dtype":"I32"'),
    ("layout", b'"layout":"planes"', b'"layout":"qlanes"'),
    ("op", b'"op":"xor"', b'"op":"yor"'),
    ("op", b'"op":"sub"', b'"op":"xor"'),
    ("shape", b'"shape":[700]', b'"shape":[701]'),
    ("inline", b'"inline":[', b'"inline":[[0],'),
], ids=["F32-G32", "BF16-BF17", "F32-I32", "layout", "op-yor", "op-sub-xor", "shape", "inline"])
def test_damaged_record_field_is_an_integrity_error_everywhere(env, field, old, new):
    """A record damaged in one field (its check no longer matches) is an IntegrityError
    (exit code 12) for every read - retrieve, rows, planes - never another error type;
    verify reports it."""
    hits = [k for k in env.keys(TENSOR) if old in env.store.get(k)]
    assert hits, f"no record has {old!r}"
    for key in hits:
        original = env.store.get(key)
        env.store.write([(key, original.replace(old, new, 1))])
        try:
            what = f"record {key[1:9].hex()} {field}: {old!r} -> {new!r}"
            env.assert_detected(key, what)
            for name in env.users[key]:
                for e in env.repo.version(name).tensors:
                    if key not in env.chain[e.object]:         # e does not read this record
                        continue
                    env.repo.reader.clear_cache()
                    with pytest.raises(IntegrityError):
                        env.repo.read_rows(e, 0, 2)
                    env.repo.reader.clear_cache()
                    with pytest.raises(IntegrityError):
                        env.repo.read_planes(e, 1)
        finally:
            env.store.write([(key, original)])
            env.repo.reader.clear_cache()


def test_any_single_bit_flip_in_headers_never_returns_wrong_bytes(env):
    """Every low and high bit of every header byte (chunk tags and first payload bytes;
    record length field, JSON and inline frame tags): verify reports it, and retrieve
    returns the right bytes or raises."""
    targets = []
    for key in env.keys(CHUNK)[:12]:
        targets += [(key, off) for off in range(min(4, len(env.store.get(key))))]
    for key in env.keys(TENSOR):
        value = env.store.get(key)
        n, _, starts = record_parts(value)
        targets += [(key, off) for off in [*range(4), *range(4, 4 + n, 7), *starts]]
    for key, off in targets:
        for mask in (0x01, 0x80):
            original = flip(env.store, key, off, mask)
            what = f"{key[:1].decode()} {key[1:9].hex()} offset {off} mask {mask:#x}"
            try:
                rep = env.verify(what)
                assert not rep.ok, f"{what}: verify says ok"
                env.assert_right_or_refused(key, what, rep)
            finally:
                env.store.write([(key, original)])


@pytest.mark.parametrize("kind", ["chunk", "record"])
def test_damage_seen_through_a_fresh_read_only_open(env, kind):
    """The on-disk path a user takes: damage with one handle, open the repository anew, verify."""
    prefix = CHUNK if kind == "chunk" else TENSOR
    key = next(k for k in env.keys(prefix) if env.users[k] == {"main", "tuned", "tuned2"})
    value = env.store.get(key)
    flip(env.store, key, len(value) // 2)
    env.close()
    with Repository.open(env.path) as repo:
        rep = repo.verify()
        assert not rep.ok
        for name in ("main", "tuned", "tuned2"):
            assert env.labels[name] in rep.damaged_versions
            with pytest.raises(IntegrityError):
                repo.retrieve(name)
        assert_same_snapshot(repo.retrieve("other"), env.snaps["other"])
    with RocksStore(env.root / "db") as store:
        store.write([(key, value)])
    with Repository.open(env.path) as repo:
        assert repo.verify().ok
        for name in ("main", "tuned", "tuned2"):
            assert_same_snapshot(repo.retrieve(name), env.snaps[name])
    env.store = RocksStore(env.root / "db")
    env.repo = Repository(env.store, read_config(env.root), env.root)


# -------------------------------------------------------------- collisions
CONST = b"\x5a" * 16


def _patch_digests(monkeypatch, digest):
    import pas.hashing
    import pas.records
    import pas.repo
    import pas.writer
    monkeypatch.setattr(pas.repo, "digest", digest)
    monkeypatch.setattr(pas.writer, "digest", digest)
    monkeypatch.setattr(pas.records, "digest_parts", lambda *parts: CONST)   # tensor digests
    monkeypatch.setattr(pas.records, "digest", digest)
    monkeypatch.setattr(pas.hashing, "digest", digest)
    monkeypatch.setattr(pas.hashing, "digest_parts", lambda *parts: CONST)


@pytest.fixture
def constant_hash(monkeypatch):
    """Every digest is the same 16 bytes: all dedup hits are collisions, and so are version ids."""
    _patch_digests(monkeypatch, lambda data: CONST)
    return CONST


def _is_manifest(b: bytes) -> bool:
    """A packed manifest: zstd-compressed JSON + check (docs/format.md §2)."""
    if not b.startswith(b"\x28\xb5\x2f\xfd"):
        return False
    try:
        return records.unpack_json(b, "manifest").get("format") == 1
    except Exception:  # noqa: BLE001
        return False


@pytest.fixture
def colliding_contents(monkeypatch):
    """Every chunk and tensor digest collides; version manifests keep their real digest."""
    from pas.hashing import digest as real

    def digest(data):
        b = bytes(data)
        return real(b) if _is_manifest(b) else CONST
    _patch_digests(monkeypatch, digest)
    return CONST


@pytest.fixture
def inline_max(monkeypatch):
    """Set the writer's inline limit (0: every non-empty tensor is stored as chunks)."""
    import pas.writer

    def set_(n):
        if n is not None:
            monkeypatch.setattr(pas.writer, "INLINE_MAX", n)
    return set_


def _colliding_snapshot(seed=0):
    rng = np.random.default_rng(seed)
    s = Snapshot()
    for i in range(4):      # same dtype, same shape, different content
        s.add(Tensor.from_array(f"same_shape_{i}", rng.normal(0, 1, 64).astype("<f4")))
    s.add(Tensor.from_array("zeros", np.zeros(64, "<f4")))
    s.add(Tensor.from_array("ones", np.ones(64, "<f4")))
    s.add(Tensor.from_array("as_int", rng.integers(0, 9, 64, dtype="<i4")))
    s.add(Tensor.from_array("bytes", rng.integers(0, 255, 256, dtype="u1")))
    s.add(Tensor.from_array("long", rng.normal(0, 1, 1000).astype("<f4")))
    s.add(Tensor.from_array("dup_of_0", s.tensors["same_shape_0"].data.copy()))
    s.files["a.txt"] = b"first file"
    s.files["b.txt"] = b"other file"
    return s


@pytest.mark.parametrize("chunk_size,limit", [(64, 0), (1 << 20, 0), (1 << 20, None)],
                         ids=["chunks-64", "chunks-1M", "inline"])
def test_forced_hash_collision_returns_correct_bytes(colliding_contents, inline_max, chunk_size, limit):
    inline_max(limit)
    repo = Repository.in_memory(chunker={"id": "fixed", "size": chunk_size})
    snap = _colliding_snapshot()
    res = repo.archive_snapshot(snap, "main")
    got = repo.retrieve("main")
    assert_same_snapshot(got, snap)
    for name in ("same_shape_1", "ones", "long"):
        part = repo.retrieve("main", names=[name])
        assert part.tensors[name].data.tobytes() == snap.tensors[name].data.tobytes()
    assert repo.verify().ok
    # variants keep the contents apart; the true duplicate is shared
    v = repo.version("main")
    objs = {e.name: e.object for e in v.tensors}
    assert objs["dup_of_0"] == objs["same_shape_0"]
    assert len(set(objs.values())) == len(objs) - 1
    # re-archiving the same contents confirms every hit by comparing bytes
    if limit == 0:
        assert res.chunks_written > 0
    again = repo.archive_snapshot(_colliding_snapshot(), "main")
    assert again.tensors_reused == again.tensors and again.chunks_written == 0
    assert_same_snapshot(repo.retrieve(res.version_id), snap)


@pytest.mark.parametrize("level", ["tensor", "chunk"])
def test_too_many_collisions_are_reported_and_nothing_is_visible(constant_hash, inline_max, level):
    """More distinct contents than variants (256) under one address: a typed error, no version."""
    s = Snapshot()
    if level == "tensor":          # 260 distinct 2-byte tensors: one tensor address
        repo = Repository.in_memory()
        for i in range(260):
            s.add(Tensor.from_array(f"t{i}", np.array([i * 7 + 1], "<u2")))
    else:                          # 2-byte chunks, 300 distinct contents: one chunk address
        inline_max(0)
        repo = Repository.in_memory(chunker={"id": "fixed", "size": 2})
        s.add(Tensor.from_array("bytes", np.arange(300, dtype="<u2").view("u1")))
    with pytest.raises(IntegrityError):
        repo.archive_snapshot(s, "main")
    assert repo.refs() == {} and repo.versions() == []
    assert list(repo.store.list_prefix(TENSOR)) == [] and list(repo.store.list_prefix(VERSION)) == []


@pytest.mark.parametrize("limit", [0, None], ids=["chunks", "inline"])
def test_forced_hash_collision_on_disk(colliding_contents, inline_max, tmp_path, limit):
    inline_max(limit)
    snap = _colliding_snapshot(1)
    with Repository.init(tmp_path / "r", chunk_size=128) as repo:
        repo.archive_snapshot(snap, "main")
    with Repository.open(tmp_path / "r") as repo:
        assert_same_snapshot(repo.retrieve("main"), snap)


def test_forced_hash_collision_across_versions(constant_hash):
    """Version ids are digests too: a colliding second version must be refused or kept apart,
    never silently replace the first one's manifest."""
    repo = Repository.in_memory()
    s1, s2 = _colliding_snapshot(1), _colliding_snapshot(2)
    repo.archive_snapshot(s1, "one")
    try:
        repo.archive_snapshot(s2, "two")
    except IntegrityError:
        assert_same_snapshot(repo.retrieve("one"), s1)
        return
    assert_same_snapshot(repo.retrieve("one"), s1)
    assert_same_snapshot(repo.retrieve("two"), s2)


def test_collision_with_the_last_archived_version_is_told_from_its_kept_copy(monkeypatch):
    """A dedup hit against the previous version archived through the same Repository
    is confirmed against the copy of its words kept for delta bases (no decode);
    a colliding, different content (same length; same or other dtype) is kept apart.
    Every tensor digest collides here (version ids do not: they must differ)."""
    import pas.records
    monkeypatch.setattr(pas.records, "digest_parts", lambda *parts: CONST)
    rng = np.random.default_rng(9)
    first, second = Snapshot(), Snapshot()
    first.add(Tensor.from_array("w", rng.normal(0, 1, 2048).astype("<f4")))
    first.add(Tensor.from_array("i", rng.integers(0, 9, 2048, dtype="<i4")))
    second.add(Tensor.from_array("w", rng.normal(0, 1, 2048).astype("<f4")))     # other values
    second.add(Tensor.from_array("i", first.tensors["i"].data.copy()))            # truly the same
    repo = Repository.in_memory()
    repo.archive_snapshot(first, "one")
    assert repo.recent_bases                        # kept: the path under test
    decoded = []
    real_words = repo.reader.words
    monkeypatch.setattr(repo.reader, "words", lambda addr, *a, **k: decoded.append(addr) or real_words(addr, *a, **k))
    repo.archive_snapshot(second, "two")
    assert decoded == []                            # no stored tensor was decoded to confirm a hit
    assert_same_snapshot(repo.retrieve("one"), first)
    assert_same_snapshot(repo.retrieve("two"), second)
    assert len({e.object for e in repo.version("two").tensors} | {e.object for e in repo.version("one").tensors}) == 3
