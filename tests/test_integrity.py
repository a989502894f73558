"""Corruption and collisions (reliability-plan.md §5 T5, T6, T7).

A small repository on RocksDB; every stored chunk, tensor record, manifest and
ref is damaged in turn directly in the store. `verify` must report it and name
the affected versions; `retrieve` must raise IntegrityError and never return
wrong bytes. A forced hash collision must not mix up contents.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_same_snapshot, snapshot_fingerprint
from pas import records
from pas.errors import IntegrityError, PasError, UnsupportedFormat
from pas.records import CHUNK, REF, TENSOR, VERSION
from pas.repo import Repository, read_config
from pas.snapshot import Snapshot, Tensor
from pas.stores.rocks import RocksStore


def _snapshots():
    rng = np.random.default_rng(42)
    s1 = Snapshot(metadata={"k": "v"})
    s1.add(Tensor.from_array("const", np.zeros(1000, "<f4")))                        # const chunks
    s1.add(Tensor.from_array("rand", rng.integers(0, 2**32, 700, dtype="<u4").view("<f4")))  # raw
    s1.add(Tensor.from_array("ramp", (np.arange(3000) % 50).astype("<i2")))          # zstd, 2 chunks/plane
    s1.add(Tensor.from_array("bf", rng.integers(0x3C00, 0x3F00, 500, dtype="<u2"), dtype="BF16"))
    s1.files["config.json"] = b'{"a": 1}' * 40
    s2 = Snapshot(metadata={"k": "w"})
    s2.add(s1.tensors["const"])
    s2.add(s1.tensors["ramp"])
    s2.add(Tensor.from_array("rand2", rng.integers(0, 2**32, 300, dtype="<u4").view("<f4")))
    return {"main": s1, "other": s2}


class Env:
    """The on-disk repository, its store opened directly, and what each object belongs to."""

    def __init__(self, tmp_path):
        self.path = tmp_path / "repo"
        self.snaps = _snapshots()
        with Repository.init(self.path, chunk_size=2048) as repo:
            self.ids = {name: repo.archive_snapshot(s, name).version_id for name, s in self.snaps.items()}
        self.root = self.path / ".pas"
        self.store = RocksStore(self.root / "db")
        self.repo = Repository(self.store, read_config(self.root), self.root)
        self.labels = {name: f"{name}@{vid[:12]}" for name, vid in self.ids.items()}
        # which versions need each key
        self.users: dict[bytes, set[str]] = {}
        for name, vid in self.ids.items():
            v = self.repo.version(vid)
            self.users.setdefault(VERSION + v.id, set()).add(name)
            self.users.setdefault(REF + name.encode(), set()).add(name)
            for e in v.tensors + v.files:
                self.users.setdefault(TENSOR + e.object, set()).add(name)
                rec = records.unpack_json(self.store.get(TENSOR + e.object), "rec")
                for plane in rec["chunks"]:
                    for h in plane:
                        self.users.setdefault(CHUNK + bytes.fromhex(h), set()).add(name)

    def keys(self, prefix: bytes) -> list[bytes]:
        return list(self.store.list_prefix(prefix))

    def check_clean(self):
        rep = self.repo.verify()
        assert rep.ok, rep.errors
        for name, snap in self.snaps.items():
            assert_same_snapshot(self.repo.retrieve(name), snap)

    def assert_detected(self, key: bytes, what: str, by_name: bool = True):
        """verify reports the damage naming every affected version; retrieve refuses them."""
        affected = self.users[key]
        try:
            rep = self.repo.verify()
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(f"{what}: verify raised {type(exc).__name__}: {exc} instead of reporting") from exc
        assert not rep.ok, f"{what}: verify says ok"
        for name in affected:
            if by_name:
                assert self.labels[name] in rep.damaged_versions, (what, rep.damaged_versions, rep.errors)
            else:
                assert any(self.ids[name][:12] in d for d in rep.damaged_versions), (what, rep.to_json())
        for name in affected:
            self.assert_refused(name, what)
        for name in set(self.snaps) - affected:        # the other version is untouched
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

    def close(self):
        self.repo.close()


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    yield e
    e.close()


def flip(store, key: bytes, offset: int, mask: int = 0xFF) -> bytes:
    original = store.get(key)
    damaged = bytearray(original)
    damaged[offset] ^= mask
    store.write([(key, bytes(damaged))])
    return original


def chunk_offsets(value: bytes) -> list[int]:
    n = value[1]
    cand = {0, 1, 2, 3, 2 + n - 1, 2 + n, 2 + n + 1, (2 + n + len(value)) // 2, len(value) - 1}
    return sorted(o for o in cand if 0 <= o < len(value))


def test_fixture_is_clean_and_has_every_chunk_kind(env):
    env.check_clean()
    kinds = {json.loads(v[2:2 + v[1]])["id"] for _, v in env.store.items_prefix(CHUNK)}
    assert {"const", "raw", "zstd"} <= kinds, kinds
    assert set(env.users) >= set(env.keys(CHUNK)) | set(env.keys(TENSOR)) | set(env.keys(VERSION))
    shared = [k for k, users in env.users.items() if k[:1] == CHUNK and len(users) == 2]
    assert shared, "some chunks should be shared by both versions"


def test_every_chunk_byte_flip_is_detected(env):
    chunks = env.keys(CHUNK)
    assert len(chunks) >= 10
    flips = 0
    for key in chunks:
        value = env.store.get(key)
        for off in chunk_offsets(value):
            original = flip(env.store, key, off)
            try:
                env.assert_detected(key, f"chunk {key[1:9].hex()} offset {off}/{len(value)}")
            finally:
                env.store.write([(key, original)])
            flips += 1
    assert flips >= 5 * len(chunks)
    env.check_clean()


def test_every_tensor_record_byte_flip_is_detected(env):
    for key in env.keys(TENSOR):
        value = env.store.get(key)
        for off in sorted({0, 1, len(value) // 2, len(value) - 9, len(value) - 8, len(value) - 1}):
            original = flip(env.store, key, off)
            try:
                env.assert_detected(key, f"tensor record {key[1:9].hex()} offset {off}")
            finally:
                env.store.write([(key, original)])
    env.check_clean()


def test_every_manifest_byte_flip_is_detected(env):
    for key in env.keys(VERSION):
        value = env.store.get(key)
        (name,) = env.users[key]
        for off in sorted({0, 1, len(value) // 3, len(value) // 2, len(value) - 9, len(value) - 1}):
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
    for key in env.keys(TENSOR):
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
        with pytest.raises(PasError):
            env.repo.retrieve("main")
    finally:
        env.store.write([(VERSION + vid, original)])
    env.check_clean()


def test_codec_id_damage_is_reported_not_raised(env):
    """A header that still parses but names an unknown codec ("zstd" -> "{std",
    "const" -> "bonst") is damage: verify reports it instead of crashing."""
    for key in env.keys(CHUNK):
        value = env.store.get(key)
        cfg_start = value.index(b'"id":"') + 6
        original = flip(env.store, key, cfg_start, 0x01)
        try:
            assert json.loads(env.store.get(key)[2:2 + value[1]])["id"] not in ("raw", "const", "zstd", "blosc2")
            try:
                rep = env.repo.verify()
            except Exception as exc:  # noqa: BLE001
                raise AssertionError(f"verify raised {type(exc).__name__}: {exc} instead of reporting") from exc
            assert not rep.ok
            for name in env.users[key]:
                assert env.labels[name] in rep.damaged_versions
                env.assert_refused(name, "unknown codec id", errors=(IntegrityError, UnsupportedFormat))
        finally:
            env.store.write([(key, original)])


def test_any_single_bit_flip_in_headers_never_returns_wrong_bytes(env):
    """Low-bit flips can turn a header into another *valid* one (zstd level 1 -> 0):
    whatever verify says, retrieve must return the right bytes or raise."""
    for key in env.keys(CHUNK)[:8]:
        value = env.store.get(key)
        for off in range(0, min(len(value), 2 + value[1] + 2)):
            for mask in (0x01, 0x80):
                original = flip(env.store, key, off, mask)
                try:
                    try:
                        rep = env.repo.verify()
                    except Exception as exc:  # noqa: BLE001
                        raise AssertionError(f"offset {off} mask {mask:#x}: verify raised "
                                             f"{type(exc).__name__}: {exc}") from exc
                    for name in env.users[key]:
                        try:
                            got = env.repo.retrieve(name)
                        except (IntegrityError, UnsupportedFormat):
                            assert not rep.ok, f"offset {off}: retrieve refused but verify said ok"
                            continue
                        assert_same_snapshot(got, env.snaps[name])
                finally:
                    env.store.write([(key, original)])


def test_damage_seen_through_a_fresh_read_only_open(env):
    """The on-disk path a user takes: damage with one handle, open the repository anew, verify."""
    key = next(k for k in env.keys(CHUNK) if "main" in env.users[k])
    value = env.store.get(key)
    flip(env.store, key, len(value) - 1)
    env.close()
    with Repository.open(env.path) as repo:
        rep = repo.verify()
        assert not rep.ok and env.labels["main"] in rep.damaged_versions
        with pytest.raises(IntegrityError):
            repo.retrieve("main")
    with RocksStore(env.root / "db") as store:
        store.write([(key, value)])
    with Repository.open(env.path) as repo:
        assert repo.verify().ok
        assert_same_snapshot(repo.retrieve("main"), env.snaps["main"])
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
    monkeypatch.setattr(pas.writer, "digest_parts", lambda *parts: CONST)
    monkeypatch.setattr(pas.records, "digest", digest)
    monkeypatch.setattr(pas.hashing, "digest", digest)
    monkeypatch.setattr(pas.hashing, "digest_parts", lambda *parts: CONST)


@pytest.fixture
def constant_hash(monkeypatch):
    """Every digest is the same 16 bytes: all dedup hits are collisions, and so are version ids."""
    _patch_digests(monkeypatch, lambda data: CONST)
    return CONST


@pytest.fixture
def colliding_contents(monkeypatch):
    """Every chunk and tensor digest collides; version manifests keep their real digest."""
    from pas.hashing import digest as real

    def digest(data):
        b = bytes(data)
        return real(b) if b.startswith(b'{"files":') else CONST    # a packed manifest
    _patch_digests(monkeypatch, digest)
    return CONST


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


@pytest.mark.parametrize("chunk_size", [64, 1 << 20])
def test_forced_hash_collision_returns_correct_bytes(colliding_contents, chunk_size):
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
    again = repo.archive_snapshot(_colliding_snapshot(), "main")
    assert again.tensors_reused == again.tensors and again.chunks_written == 0
    assert_same_snapshot(repo.retrieve(res.version_id), snap)


@pytest.mark.parametrize("level", ["tensor", "chunk"])
def test_too_many_collisions_are_reported_and_nothing_is_visible(constant_hash, level):
    """More distinct contents than variants (256) under one address: a typed error, no version."""
    s = Snapshot()
    if level == "tensor":          # 260 distinct 2-byte tensors: one tensor address
        repo = Repository.in_memory()
        for i in range(260):
            s.add(Tensor.from_array(f"t{i}", np.array([i * 7 + 1], "<u2")))
    else:                          # 2-byte chunks, 300 distinct contents: one chunk address
        repo = Repository.in_memory(chunker={"id": "fixed", "size": 2})
        s.add(Tensor.from_array("bytes", np.arange(300, dtype="<u2").view("u1")))
    with pytest.raises(IntegrityError):
        repo.archive_snapshot(s, "main")
    assert repo.refs() == {} and repo.versions() == []
    assert list(repo.store.list_prefix(TENSOR)) == [] and list(repo.store.list_prefix(VERSION)) == []


def test_forced_hash_collision_on_disk(colliding_contents, tmp_path):
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
