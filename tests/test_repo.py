"""The repository: archive/retrieve, dedup, refs, log, partial reads, names, gc, opening."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import (RecordingStore, assert_same_snapshot, make_snapshot, needed_keys, record_chunks,
                      tensor_record)
from pas import codecs, records
from pas.errors import (BadInput, BadName, IntegrityError, NotARepository, NotFound, PasError,
                        RepositoryLocked, UnsupportedFormat)
from pas.hashing import digest
from pas.records import CHUNK, REF, TENSOR, VERSION
from pas.writer import VersionWriter
from pas.repo import DEFAULT_CONFIG, Repository
from pas.snapshot import Snapshot, Tensor


def all_items(repo) -> dict[bytes, bytes]:
    return dict(repo.store.items_prefix(b""))


def referenced_keys(repo) -> set[bytes]:
    """Every key some version needs: its manifest, tensor records, chunks and delta bases."""
    keys = set()
    for v in repo.versions():
        keys.add(VERSION + v.id)
        for e in v.tensors + v.files:
            keys |= needed_keys(repo.store, e.object)
    return keys


def records_itemsize(dtype: str) -> int:
    from pas import dtypes
    return dtypes.get(dtype).itemsize


# ------------------------------------------------------------- round trips
def test_archive_retrieve_round_trip(any_repo):
    snap = make_snapshot(1, big=True)
    res = any_repo.archive_snapshot(snap, "main", message="first")
    assert res.name == "main" and res.parent is None
    assert res.tensors == len(snap.tensors) + len(snap.files)
    assert res.logical_bytes == snap.nbytes
    # only model.big has chunks (one per plane); every other tensor and file is inline
    assert res.tensors_reused == 0 and res.chunks_written == 4
    assert res.encodings == {"whole": res.tensors}
    assert 0 < res.physical_added < snap.nbytes + 20_000
    assert res.physical_added == any_repo.physical_bytes()
    json.dumps(res.to_json())
    got = any_repo.retrieve("main")
    assert_same_snapshot(got, snap)
    assert_same_snapshot(any_repo.retrieve(res.version_id), snap)
    assert_same_snapshot(any_repo.retrieve(bytes.fromhex(res.version_id)), snap)
    v = any_repo.version("main")
    assert v.message == "first" and v.name == "main" and v.logical_bytes == snap.nbytes
    assert [e.name for e in v.tensors] == list(snap.tensors)
    assert sorted(f.name for f in v.files) == sorted(snap.files)
    for e in v.tensors + v.files:
        rec, payload = tensor_record(any_repo.store, e.object)
        assert (rec["dtype"], tuple(rec["shape"])) == (e.dtype, e.shape)
        # Tensor planes: the configured zstd with the planes' small match table; side files: as configured.
        want = DEFAULT_CONFIG["codec"] if e in v.files else dict(DEFAULT_CONFIG["codec"], hash_log=codecs.PLANE_HASH_LOG)
        assert rec["codec"] == want and rec.get("depth", 0) == 0 and "delta" not in rec
        if e.name == "model.big":
            assert "inline" not in rec and len(rec["chunks"]) == 4 and payload == b""
        else:
            assert "chunks" not in rec and len(rec["inline"]) == records_itemsize(e.dtype)
            assert sum(rec["inline"]) == len(payload)
    assert any_repo.verify().ok


def test_archive_retrieve_round_trip_with_scalar(any_repo):
    snap = make_snapshot(11, scalar=True)
    any_repo.archive_snapshot(snap, "main")
    got = any_repo.retrieve("main")
    assert got.tensors["scalar"].shape == ()
    assert_same_snapshot(got, snap)


def test_retrieve_without_files(mem_repo):
    snap = make_snapshot(2)
    mem_repo.archive_snapshot(snap, "main")
    got = mem_repo.retrieve("main", files=False)
    assert got.files == {}
    assert_same_snapshot(got, snap, files=False)


@pytest.mark.parametrize("force", [None, "planes", "planes-exp"])
def test_large_tensors_multi_chunk_both_layouts(force, monkeypatch):
    """Big tensors: several chunks per plane, the Numba path, and each plane layout
    (forced, so both are covered whatever the layout heuristic prefers)."""
    from pas import dtypes, planes
    from pas.delta import select
    if force is not None:
        monkeypatch.setattr(select, "choose", lambda words, dt, candidates, ops=(), layouts=():
                            select.Choice(force if dt.is_float and dt.itemsize >= 2 else "planes"))
    repo = Repository.in_memory(chunker={"id": "fixed", "size": 100_000})
    rng = np.random.default_rng(5)
    n = 300_000
    weights = rng.normal(0, 0.02, n).astype("<f4")
    noise = rng.integers(0, 2**32, n, dtype="<u4")
    noise[:6] = [0x7FC12345, 0x7F800001, 0x80000000, 0x7F800000, 0xFF800000, 0x00000001]
    snap = Snapshot()
    snap.add(Tensor.from_array("weights", weights))
    snap.add(Tensor.from_array("noise", noise.view("<f4")))
    snap.add(Tensor.from_array("bf16", (weights.view("<u4") >> 16).astype("<u2").reshape(600, 500), dtype="BF16"))
    snap.add(Tensor.from_array("f64", rng.normal(0, 1, (n // 4, 4))))
    snap.add(Tensor.from_array("i16", rng.integers(-5, 5, n, dtype="<i2")))
    res = repo.archive_snapshot(snap, "big")
    assert res.chunks_written > 4 * 3
    assert_same_snapshot(repo.retrieve("big"), snap)
    for e in repo.version("big").tensors:
        top, layout = repo.read_planes(e, 1)
        if force is not None and e.dtype != "I16":
            assert layout == force
        dt = dtypes.get(e.dtype)
        expect = planes.split(snap.tensors[e.name].data, dt, layout)[0]
        assert top.shape == (1, int(np.prod(e.shape))) and top[0].tobytes() == expect.tobytes()
    repo.close()


def test_big_tensors_decode_into_buffers_of_the_calling_thread(mem_repo, monkeypatch):
    """Retrieval hands each big tensor a buffer allocated by the calling thread
    (a pool thread's glibc arena would unmap it when freed); the tensor is
    decoded in it, a buffer of the wrong size is not used, and a cached
    tensor (kept as a delta base) is copied into it."""
    snap = make_snapshot(big=True)
    mem_repo.archive_snapshot(snap, "m")
    entry = next(e for e in mem_repo.version("m").tensors if e.name == "model.big")
    want = snap.tensors["model.big"].data.tobytes()
    mem_repo.reader.clear_cache()
    buf = Repository._words_buffer(entry)
    got = mem_repo.read_entry(entry, out=buf)
    assert np.shares_memory(got, buf) and got.tobytes() == want
    wrong = np.empty(buf.shape[0] - 1, buf.dtype)
    got = mem_repo.read_entry(entry, out=wrong)
    assert not np.shares_memory(got, wrong) and got.tobytes() == want
    cached = np.frombuffer(want, buf.dtype).copy()
    mem_repo.reader.remember(entry.object, cached)
    buf = Repository._words_buffer(entry)
    got = mem_repo.read_entry(entry, out=buf)
    assert np.shares_memory(got, buf) and not np.shares_memory(got, cached) and got.tobytes() == want
    # and a whole retrieve passes such buffers for its big tensors
    passed = []
    read_entry = Repository.read_entry

    def spy(self, e, parallel=True, out=None):
        passed.append((e.name, out is not None))
        return read_entry(self, e, parallel=parallel, out=out)
    monkeypatch.setattr(Repository, "read_entry", spy)
    mem_repo.reader.clear_cache()
    assert_same_snapshot(mem_repo.retrieve("m"), snap)
    assert ("model.big", True) in passed and ("model.w", False) in passed


def test_inline_limit_is_the_one_in_the_format_doc(mem_repo):
    """docs/format.md §4: "Tensors of at most N KiB carry their planes inline": a tensor of
    exactly N KiB is one record with inline frames; 4 bytes more and it has chunks."""
    import re
    text = (Path(__file__).resolve().parents[1] / "docs" / "format.md").read_text()
    m = re.search(r"Tensors of at most (\d+) KiB carry their planes inline", text)
    assert m, "docs/format.md no longer states the inline limit"
    limit = int(m.group(1)) << 10
    rng = np.random.default_rng(12)
    snap = Snapshot()
    snap.add(Tensor.from_array("at", rng.integers(0, 2**32, limit // 4, dtype="<u4")))
    snap.add(Tensor.from_array("above", rng.integers(0, 2**32, limit // 4 + 1, dtype="<u4")))
    mem_repo.archive_snapshot(snap, "m")
    objs = {e.name: e.object for e in mem_repo.version("m").tensors}
    at, _ = tensor_record(mem_repo.store, objs["at"])
    above, _ = tensor_record(mem_repo.store, objs["above"])
    assert "inline" in at and "chunks" not in at, "a tensor of exactly the limit must be inline"
    assert "chunks" in above and "inline" not in above, (
        f"a tensor above {limit} bytes must be stored as chunks (pas.writer.INLINE_MAX is "
        f"{__import__('pas.writer').writer.INLINE_MAX})")
    assert_same_snapshot(mem_repo.retrieve("m"), snap)


def test_tied_tensors_stored_once(mem_repo):
    w = np.random.default_rng(0).normal(size=(100, 50)).astype("<f4")
    snap = Snapshot()
    snap.add(Tensor.from_array("embed", w))
    snap.add(Tensor.from_array("lm_head", w.copy()))
    snap.add(Tensor.from_array("other_shape", w.reshape(50, 100).copy()))
    mem_repo.archive_snapshot(snap, "tied")
    v = mem_repo.version("tied")
    objs = {e.name: e.object for e in v.tensors}
    assert objs["embed"] == objs["lm_head"]
    assert objs["other_shape"] != objs["embed"]      # shape is part of a tensor's identity
    assert_same_snapshot(mem_repo.retrieve("tied"), snap)


# ------------------------------------------------------------------- dedup
def test_identical_rearchive_adds_almost_nothing(any_repo):
    snap = make_snapshot(3, scale=8)
    first = any_repo.archive_snapshot(snap, "main")
    before = any_repo.physical_bytes()
    again = any_repo.archive_snapshot(make_snapshot(3, scale=8), "main")
    assert again.version_id != first.version_id       # a new version (new time, parent)
    assert again.parent == first.version_id
    assert again.tensors_reused == again.tensors == first.tensors
    assert again.chunks_written == 0
    manifest_and_ref = len(any_repo.store.get(VERSION + bytes.fromhex(again.version_id))) + 64
    assert again.physical_added <= manifest_and_ref + 64
    assert again.physical_added < 0.05 * first.physical_added
    grown = any_repo.physical_bytes() - before
    assert grown <= again.physical_added + 64
    assert_same_snapshot(any_repo.retrieve(first.version_id), snap)
    assert_same_snapshot(any_repo.retrieve(again.version_id), snap)


def test_one_changed_tensor_costs_about_that_tensor(mem_repo):
    snap = make_snapshot(4, scale=16)
    mem_repo.archive_snapshot(snap, "main")
    changed = make_snapshot(4, scale=16)
    w = changed.tensors["model.w"].data.copy()
    w[0, 0] = np.float32(1.5)
    changed.add(Tensor.from_array("model.w", w))
    res = mem_repo.archive_snapshot(changed, "main")
    assert res.tensors_reused == res.tensors - 1
    assert res.physical_added < w.nbytes + 10_000
    assert res.chunks_reused > 0 or res.chunks_written <= 4      # untouched planes may dedup
    assert_same_snapshot(mem_repo.retrieve("main"), changed)
    assert_same_snapshot(mem_repo.retrieve(res.parent), snap)


# -------------------------------------------------------------- refs & log
def test_parent_defaults_to_current_version_of_name(mem_repo):
    a = mem_repo.archive_snapshot(make_snapshot(1), "main")
    b = mem_repo.archive_snapshot(make_snapshot(2), "main")
    other = mem_repo.archive_snapshot(make_snapshot(3), "other")
    explicit = mem_repo.archive_snapshot(make_snapshot(4), "exp", parent="main")
    by_id = mem_repo.archive_snapshot(make_snapshot(5), "exp2", parent=a.version_id[:10])
    assert b.parent == a.version_id
    assert other.parent is None
    assert explicit.parent == b.version_id
    assert by_id.parent == a.version_id
    assert mem_repo.version("main").parent == bytes.fromhex(a.version_id)
    assert mem_repo.refs() == {"main": b.version_id, "other": other.version_id,
                               "exp": explicit.version_id, "exp2": by_id.version_id}


def test_unknown_parent_is_not_found_and_changes_nothing(mem_repo):
    mem_repo.archive_snapshot(make_snapshot(1), "main")
    before = all_items(mem_repo)
    with pytest.raises(NotFound):
        mem_repo.archive_snapshot(make_snapshot(2), "main", parent="no-such-ref")
    assert all_items(mem_repo) == before


def test_refs_tag_resolve(mem_repo):
    a = mem_repo.archive_snapshot(make_snapshot(1), "main")
    b = mem_repo.archive_snapshot(make_snapshot(2), "main")
    va, vb = bytes.fromhex(a.version_id), bytes.fromhex(b.version_id)
    mem_repo.set_ref("v1.0", va)
    mem_repo.set_ref("exp/lr-3e-4", vb)
    assert mem_repo.refs() == {"main": b.version_id, "v1.0": a.version_id, "exp/lr-3e-4": b.version_id}
    assert mem_repo.resolve("v1.0") == va
    assert mem_repo.resolve("exp/lr-3e-4") == vb
    assert mem_repo.resolve(a.version_id) == va
    for n in (4, 5, 8, 12, 31):
        assert mem_repo.resolve(a.version_id[:n]) == va, n
    assert mem_repo.resolve(a.version_id[:9].upper()) == va
    # REF~N: ancestors along parents, as in git
    assert mem_repo.resolve("main~1") == mem_repo.resolve("main~") == va
    assert mem_repo.resolve(b.version_id[:8] + "~1") == va and mem_repo.resolve("main~0") == vb
    with pytest.raises(NotFound, match="only 1 ancestor"):
        mem_repo.resolve("main~2")
    with pytest.raises(BadInput):
        mem_repo.resolve("main~x")
    # retag moves the ref; versions stay
    mem_repo.set_ref("v1.0", vb)
    assert mem_repo.resolve("v1.0") == vb
    mem_repo.delete_ref("v1.0")
    assert "v1.0" not in mem_repo.refs()
    with pytest.raises(NotFound):
        mem_repo.resolve("v1.0")
    with pytest.raises(NotFound):
        mem_repo.delete_ref("v1.0")
    assert_same_snapshot(mem_repo.retrieve(a.version_id), make_snapshot(1))


def test_resolve_not_found_and_short_prefix(mem_repo):
    a = mem_repo.archive_snapshot(make_snapshot(1), "main")
    for ref in ("nope", a.version_id[:3], "", "zzzz", "0000000000000000000000000000000000",
                a.version_id + "00"):
        with pytest.raises(NotFound):
            mem_repo.resolve(ref)
    with pytest.raises(NotFound):
        mem_repo.version("nope")
    with pytest.raises(NotFound):
        mem_repo.version(b"\x00" * 16)
    with pytest.raises(NotFound):
        mem_repo.retrieve("nope")
    with pytest.raises(NotFound):
        mem_repo.log("nope")


def test_resolve_ambiguous_prefix():
    repo = Repository.in_memory()
    a = repo.archive_snapshot(make_snapshot(1), "main")
    vid = bytes.fromhex(a.version_id)
    # a second version id sharing the first 3 bytes (key only: resolve looks at keys)
    repo.store.write([(VERSION + vid[:3] + bytes(13), b"x")])
    with pytest.raises(BadInput):
        repo.resolve(a.version_id[:6])
    assert repo.resolve(a.version_id) == vid


def test_set_ref_checks_name_and_version(mem_repo):
    a = mem_repo.archive_snapshot(make_snapshot(1), "main")
    with pytest.raises(NotFound):
        mem_repo.set_ref("x", b"\x01" * 16)
    for bad in ("../x", "a//b", "-x", ".x", "x.lock", "a b", "", "x/"):
        with pytest.raises(BadName):
            mem_repo.set_ref(bad, bytes.fromhex(a.version_id))
    assert mem_repo.refs() == {"main": a.version_id}


def test_log(mem_repo):
    ids = [mem_repo.archive_snapshot(make_snapshot(i), "main", message=f"m{i}").version_id for i in range(3)]
    side = mem_repo.archive_snapshot(make_snapshot(9), "side", parent=ids[1]).version_id
    assert [v.hex for v in mem_repo.log("main")] == ids[::-1]
    assert [v.message for v in mem_repo.log("main")] == ["m2", "m1", "m0"]
    assert [v.hex for v in mem_repo.log(ids[1][:8])] == [ids[1], ids[0]]
    assert [v.hex for v in mem_repo.log("side")] == [side, ids[1], ids[0]]
    assert sorted(v.hex for v in mem_repo.versions()) == sorted(ids + [side])
    s = mem_repo.version("main").summary()
    assert s["id"] == ids[2] and s["parent"] == ids[1] and s["name"] == "main"
    json.dumps(s)


# --------------------------------------------------------- partial reads
@pytest.mark.parametrize("inline_max", [None, 64], ids=["inline", "chunked"])
def test_partial_retrieve_reads_only_named_tensors(inline_max, monkeypatch):
    """Only the named tensors' records and chunks are read (with a small inline limit,
    every tensor of more than 64 bytes has chunks, so chunk reads are checked too)."""
    import pas.writer
    if inline_max is not None:
        monkeypatch.setattr(pas.writer, "INLINE_MAX", inline_max)
    store = RecordingStore()
    repo = Repository(store, json.loads(json.dumps(DEFAULT_CONFIG)))
    snap = make_snapshot(6, scale=4)
    repo.archive_snapshot(snap, "main")
    v = repo.version("main")
    wanted = ["model.f16", "nan1", "model.w"]
    allowed = {REF + b"main", VERSION + v.id}
    for e in v.tensors:
        if e.name in wanted:
            allowed |= needed_keys(store, e.object)
    n_chunks = len(list(store.list_prefix(CHUNK)))
    assert n_chunks == 0 if inline_max is None else n_chunks > 8
    store.read.clear()
    got = repo.retrieve("main", names=wanted)
    assert list(got.tensors) == wanted
    assert got.files == {}
    for name in wanted:
        assert got.tensors[name].data.tobytes() == snap.tensors[name].data.tobytes()
    assert store.read and set(store.read) <= allowed, set(store.read) - allowed
    if inline_max is not None:       # model.w's chunks were read
        assert any(k[:1] == CHUNK for k in store.read)
    repo.close()


@pytest.mark.parametrize("damage", ["deleted-chunk", "damaged-chunk", "damaged-inline-record",
                                    "deleted-record"])
def test_partial_retrieve_survives_damage_elsewhere(mem_repo, damage, monkeypatch):
    import pas.writer
    if "chunk" in damage:           # model.w (8.4 KB) gets chunks; model.i64 stays inline
        monkeypatch.setattr(pas.writer, "INLINE_MAX", 1024)
    snap = make_snapshot(7)
    mem_repo.archive_snapshot(snap, "main")
    v = mem_repo.version("main")
    victim = next(e for e in v.tensors if e.name == "model.w")
    rec, payload = tensor_record(mem_repo.store, victim.object)
    if "chunk" in damage:
        key = CHUNK + record_chunks(rec)[0]
    else:
        assert "inline" in rec and payload
        key = TENSOR + victim.object
    if damage.startswith("deleted"):
        mem_repo.store.write(deletes=[key])
    else:
        value = bytearray(mem_repo.store.get(key))
        value[len(value) // 2] ^= 0x10
        mem_repo.store.write([(key, bytes(value))])
    got = mem_repo.retrieve("main", names=["model.i64"])
    assert got.tensors["model.i64"].data.tobytes() == snap.tensors["model.i64"].data.tobytes()
    with pytest.raises(IntegrityError):
        mem_repo.retrieve("main")
    with pytest.raises(IntegrityError):
        mem_repo.retrieve("main", names=["model.w"])


def test_partial_retrieve_unknown_tensor(mem_repo):
    mem_repo.archive_snapshot(make_snapshot(1), "main")
    with pytest.raises(NotFound):
        mem_repo.retrieve("main", names=["model.w", "no.such.tensor"])
    with pytest.raises(NotFound):
        mem_repo.retrieve("main", names=["config.json"])   # files are not tensors


# -------------------------------------------------------------- bad names
def _tensor(name="w"):
    return Tensor.from_array(name, np.arange(10, dtype="<f4"))


BAD_REFS = ["../x", "..", "a/../b", "/abs", "a//b", "-x", ".x", "a/.x", "x.lock", "a b", "",
            "x/", "ref\x00", "é", "a" * 256]
BAD_TENSOR_NAMES = ["a\x00b", "", "x" * 1025, "\ud800"]
BAD_FILES = ["../x", "/etc/passwd", "a\\b", "a/./b", "a//b", "", "a/..", "C:evil", "x\x00"]


@pytest.mark.parametrize("bad", BAD_REFS)
def test_bad_ref_name_refused_and_nothing_written(any_repo, bad):
    any_repo.archive_snapshot(make_snapshot(1), "main")
    before, refs, phys = all_items(any_repo), any_repo.refs(), any_repo.physical_bytes()
    with pytest.raises(BadName):
        any_repo.archive_snapshot(make_snapshot(2), bad)
    assert any_repo.physical_bytes() == phys
    assert any_repo.refs() == refs
    assert all_items(any_repo) == before


@pytest.mark.parametrize("bad", BAD_TENSOR_NAMES)
def test_bad_tensor_name_refused_and_nothing_written(mem_repo, bad):
    mem_repo.archive_snapshot(make_snapshot(1), "main")
    before, refs, phys = all_items(mem_repo), mem_repo.refs(), mem_repo.physical_bytes()
    snap = make_snapshot(2)
    snap.add(_tensor(bad))
    with pytest.raises(BadName):
        mem_repo.archive_snapshot(snap, "main")
    assert mem_repo.physical_bytes() == phys and mem_repo.refs() == refs
    assert all_items(mem_repo) == before


@pytest.mark.parametrize("bad", BAD_FILES)
def test_bad_file_path_refused_and_nothing_written(mem_repo, bad):
    before = all_items(mem_repo)
    snap = make_snapshot(2)
    snap.files[bad] = b"payload"
    with pytest.raises(BadName):
        mem_repo.archive_snapshot(snap, "main")
    assert all_items(mem_repo) == before and mem_repo.refs() == {}


def test_tensor_name_checked_not_just_dict_key(mem_repo):
    """The manifest records Tensor.name: a hostile name under a harmless dict key must be refused."""
    snap = Snapshot()
    snap.tensors["harmless"] = _tensor("evil\x00name")
    with pytest.raises(BadName):
        mem_repo.archive_snapshot(snap, "main")
    assert all_items(mem_repo) == {}


def test_tensor_data_not_matching_shape_is_bad_input(mem_repo):
    snap = Snapshot()
    snap.add(Tensor("w", "F32", (3, 4), np.zeros(11, "<f4")))
    with pytest.raises(BadInput):
        mem_repo.archive_snapshot(snap, "main")
    snap = Snapshot()
    snap.add(Tensor("w", "F32", (4,), np.zeros(4, "<f8")))
    with pytest.raises(BadInput):
        mem_repo.archive_snapshot(snap, "main")
    assert mem_repo.refs() == {}


def test_unknown_dtype_is_typed(mem_repo):
    snap = Snapshot()
    snap.add(Tensor("w", "C64", (2,), np.zeros(2, "<u8")))
    with pytest.raises(BadInput):
        mem_repo.archive_snapshot(snap, "main")
    with pytest.raises(BadInput):
        Tensor.from_array("c", np.zeros(3, np.complex64))
    assert mem_repo.refs() == {}


# ---------------------------------------------------------------------- gc
def _orphan_chunk(repo, payload: bytes) -> bytes:
    data = np.frombuffer(payload, np.uint8)
    key = CHUNK + records.address(digest(payload), len(payload))
    assert repo.store.put_if_absent(key, codecs.encode_chunk(data, repo.compressor))
    return key


def test_gc_dry_run_and_force(any_repo):
    snap1, snap2 = make_snapshot(1, big=True), make_snapshot(2)
    any_repo.archive_snapshot(snap1, "main")
    any_repo.archive_snapshot(snap2, "other")
    live = all_items(any_repo)
    needed = referenced_keys(any_repo)
    assert needed <= set(live)
    assert set(live) == needed | {REF + b"main", REF + b"other"}

    # orphans: two chunks; a chunked tensor record naming one orphan chunk and one live
    # chunk; an inline record; and a delta record whose base is a live record (the base stays)
    o1 = _orphan_chunk(any_repo, b"orphan chunk one" * 100)
    o2 = _orphan_chunk(any_repo, bytes(range(256)) * 7)
    live_chunk = next(k for k in needed if k[:1] == CHUNK)
    live_record = next(k for k in sorted(needed) if k[:1] == TENSOR
                       and "inline" in tensor_record(any_repo.store, k[1:])[0])
    n = records.address_length(o1[1:]) + records.address_length(live_chunk[1:])
    rec = records.pack_tensor_record({"dtype": "U8", "shape": [n], "layout": "planes",
                                      "codec": DEFAULT_CONFIG["codec"],
                                      "chunks": [[o1[1:].hex(), live_chunk[1:].hex()]]})
    o3 = TENSOR + records.address(b"\x42" * 16, n)
    frame = codecs.encode_chunk(np.arange(40, dtype=np.uint8), any_repo.compressor, checked=False)
    o4 = TENSOR + records.address(b"\x43" * 16, 40)
    inline = records.pack_tensor_record({"dtype": "U8", "shape": [40], "layout": "planes",
                                         "codec": DEFAULT_CONFIG["codec"], "inline": [len(frame)]}, frame)
    base_rec, _ = tensor_record(any_repo.store, live_record[1:])
    o5 = TENSOR + records.address(b"\x44" * 16, records.address_length(live_record[1:]))
    k = records_itemsize(base_rec["dtype"])
    zero = codecs.encode_chunk(np.zeros(int(np.prod(base_rec["shape"])), np.uint8), any_repo.compressor,
                               checked=False)
    delta = records.pack_tensor_record(dict(base_rec, inline=[len(zero)] * k, depth=1,
                                            delta={"op": "xor", "base": live_record[1:].hex()}),
                                       zero * k)
    any_repo.store.write([(o3, rec), (o4, inline), (o5, delta)])
    for key in (o3, o4, o5):                     # well-formed records, only unreferenced
        any_repo.reader.parse(key[1:])
    assert any_repo.reader.words(o5[1:]).tobytes() == any_repo.reader.words(live_record[1:]).tobytes()
    any_repo.reader.clear_cache()
    orphans = {o1, o2, o3, o4, o5}
    orphan_bytes = sum(len(k) + len(any_repo.store.get(k)) for k in orphans)

    dry = any_repo.gc()
    assert dry.dry_run is True
    assert (dry.chunks, dry.tensors, dry.bytes) == (2, 3, orphan_bytes)
    assert set(all_items(any_repo)) == set(live) | orphans          # nothing removed
    json.dumps(dry.to_json())

    done = any_repo.gc(force=True)
    assert done.dry_run is False
    assert (done.chunks, done.tensors, done.bytes) == (2, 3, orphan_bytes)
    assert all_items(any_repo) == live                               # exactly the orphans went
    assert any_repo.verify().ok
    assert_same_snapshot(any_repo.retrieve("main"), snap1)
    assert_same_snapshot(any_repo.retrieve("other"), snap2)
    again = any_repo.gc(force=True)
    assert (again.chunks, again.tensors, again.bytes) == (0, 0, 0)


class _Crash(Exception):
    pass


def test_gc_after_interrupted_archive(any_repo, monkeypatch):
    snap = make_snapshot(1)
    any_repo.archive_snapshot(snap, "main")
    before = all_items(any_repo)
    unfinished = make_snapshot(8, scale=4, big=True)     # model.big's chunks are written first

    def crash(self, *args):
        self.flush()                       # chunks reach the store ...
        raise _Crash("killed before the final batch")   # ... the version never does

    monkeypatch.setattr(VersionWriter, "commit", crash)
    with pytest.raises(_Crash):
        any_repo.archive_snapshot(unfinished, "main")
    monkeypatch.undo()
    after_crash = all_items(any_repo)
    orphans = set(after_crash) - set(before)
    assert len(orphans) == 4 and all(k[:1] == CHUNK for k in orphans)
    assert any_repo.refs() == {"main": any_repo.refs()["main"]}
    assert len(any_repo.versions()) == 1                              # nothing half-visible
    assert any_repo.verify().ok                                       # orphans are not damage

    dry = any_repo.gc()
    assert dry.chunks == len(orphans) and dry.tensors == 0
    assert all_items(any_repo) == after_crash
    any_repo.gc(force=True)
    assert all_items(any_repo) == before
    assert_same_snapshot(any_repo.retrieve("main"), snap)


def test_gc_keeps_versions_without_refs(mem_repo):
    a = mem_repo.archive_snapshot(make_snapshot(1), "main")
    mem_repo.archive_snapshot(make_snapshot(2), "main")
    mem_repo.set_ref("keep", bytes.fromhex(a.version_id))
    mem_repo.delete_ref("keep")
    mem_repo.delete_ref("main")
    before = all_items(mem_repo)
    rep = mem_repo.gc(force=True)
    assert (rep.chunks, rep.tensors) == (0, 0)
    assert all_items(mem_repo) == before
    assert_same_snapshot(mem_repo.retrieve(a.version_id), make_snapshot(1))


# ------------------------------------------------------------------- stats
def test_stats(mem_repo):
    snap = make_snapshot(1, big=True)
    mem_repo.archive_snapshot(snap, "main")
    mem_repo.archive_snapshot(snap, "copy")
    s = mem_repo.stats()
    json.dumps(s)
    assert s["logical_bytes"] == 2 * snap.nbytes
    assert s["physical_bytes"] == mem_repo.physical_bytes()
    assert s["objects"]["versions"]["count"] == 2 and s["objects"]["refs"]["count"] == 2
    assert s["objects"]["chunks"]["count"] == 4                       # model.big, one per plane
    assert s["objects"]["tensors"]["count"] == len(snap.tensors) + len(snap.files)   # "copy" reuses all
    assert sum(o["bytes"] for o in s["objects"].values()) == s["physical_bytes"]


# ------------------------------------------------------------ on-disk repo
def test_init_open_reopen(tmp_path):
    path = tmp_path / "r"
    snap = make_snapshot(1)
    with Repository.init(path, chunk_size=4096, codec={"id": "zstd", "level": 5}) as repo:
        res = repo.archive_snapshot(snap, "main")
        assert repo.root == path / ".pas"
    cfg = json.loads((path / ".pas" / "config.json").read_text())
    assert cfg["chunker"]["size"] == 4096 and cfg["codec"] == {"id": "zstd", "level": 5}
    assert cfg["format_version"] == 1 and len(cfg["repo_id"]) == 32
    with Repository.open(path) as repo:
        assert repo.store.read_only
        assert repo.config == cfg
        assert_same_snapshot(repo.retrieve("main"), snap)
        assert repo.refs() == {"main": res.version_id}
        assert repo.verify().ok


def test_init_twice_refused(tmp_path):
    Repository.init(tmp_path).close()
    cfg = (tmp_path / ".pas" / "config.json").read_text()
    with pytest.raises(BadInput):
        Repository.init(tmp_path)
    assert (tmp_path / ".pas" / "config.json").read_text() == cfg


def test_init_with_unknown_codec_writes_nothing(tmp_path):
    with pytest.raises(UnsupportedFormat):
        Repository.init(tmp_path / "r", codec={"id": "nope"})
    assert not (tmp_path / "r" / ".pas" / "config.json").exists()


def test_read_only_repository_refuses_writes(tmp_path):
    path = tmp_path / "r"
    with Repository.init(path) as repo:
        a = repo.archive_snapshot(make_snapshot(1), "main")
    with Repository.open(path) as repo:
        with pytest.raises(BadInput):
            repo.archive_snapshot(make_snapshot(2), "main")
        with pytest.raises(PasError):
            repo.set_ref("x", bytes.fromhex(a.version_id))
        with pytest.raises(PasError):
            repo.delete_ref("main")
        assert repo.refs() == {"main": a.version_id}


def test_second_writer_is_locked(disk_repo):
    with pytest.raises(RepositoryLocked):
        Repository.open(disk_repo.root.parent, write=True)
    with Repository.open(disk_repo.root.parent) as reader:   # readers are not blocked
        assert reader.refs() == {}


@pytest.mark.parametrize("version", [2, 0, None, "1", 999])
def test_unknown_format_version_refused(tmp_path, version):
    Repository.init(tmp_path).close()
    cfg_path = tmp_path / ".pas" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if version is None:
        del cfg["format_version"]
    else:
        cfg["format_version"] = version
    cfg_path.write_text(json.dumps(cfg))
    for write in (False, True):
        with pytest.raises(UnsupportedFormat):
            Repository.open(tmp_path, write=write)


def test_open_non_repository(tmp_path, monkeypatch):
    monkeypatch.delenv("PAS_REPO", raising=False)
    (tmp_path / "empty").mkdir()
    for p in (tmp_path / "empty", tmp_path / "missing", tmp_path / "empty" / ".pas"):
        with pytest.raises(NotARepository):
            Repository.open(p)
    monkeypatch.chdir(tmp_path / "empty")
    with pytest.raises(NotARepository):
        Repository.open()


def test_folder_with_unrelated_config_json_is_not_a_repository(tmp_path, monkeypatch):
    """A Hugging Face model folder has a config.json; it is not a pas repository."""
    monkeypatch.delenv("PAS_REPO", raising=False)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 64, "model_type": "bert"}')
    with pytest.raises(NotARepository):
        Repository.open(model)


def test_pas_repo_env_and_cwd_discovery(tmp_path, monkeypatch):
    path = tmp_path / "r"
    with Repository.init(path) as repo:
        a = repo.archive_snapshot(make_snapshot(1), "main")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("PAS_REPO", str(path))
    with Repository.open() as repo:
        assert repo.refs() == {"main": a.version_id}
    monkeypatch.setenv("PAS_REPO", str(path / ".pas"))
    with Repository.open() as repo:
        assert repo.refs() == {"main": a.version_id}
    monkeypatch.setenv("PAS_REPO", str(tmp_path / "bogus"))
    with Repository.open(path) as repo:                    # an explicit path wins
        assert repo.refs() == {"main": a.version_id}
    with pytest.raises(NotARepository):
        Repository.open()
    monkeypatch.delenv("PAS_REPO")
    deep = path / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    with Repository.open() as repo:
        assert repo.root.resolve() == (path / ".pas").resolve()
        assert repo.refs() == {"main": a.version_id}
    monkeypatch.chdir(path)
    with Repository.open() as repo:
        assert repo.refs() == {"main": a.version_id}


def test_archive_refuses_a_damaged_delta_base():
    """A base whose chunks each pass their frame check but hold another chunk's bytes
    (swapped under the wrong keys) is caught by the base's whole-tensor digest
    before any delta is made against it; nothing of the new version is written."""
    from pas.records import CHUNK
    rng = np.random.default_rng(11)
    w = rng.normal(0, 0.02, 3 << 20).astype("<f4")     # 12 MiB: chunked, not inline
    repo = Repository.in_memory()
    s1 = Snapshot()
    s1.add(Tensor.from_array("w", w))
    v1 = repo.archive_snapshot(s1, "m")
    keys = sorted(k for k, _ in repo.store.items_prefix(CHUNK))
    same_length = {}
    for k in keys:
        same_length.setdefault(k[17:25], []).append(k)
    a, b = next(ks for ks in same_length.values() if len(ks) >= 2)[:2]
    va, vb = repo.store.get(a), repo.store.get(b)
    repo.store.put_many([(a, vb), (b, va)])
    w2 = w.copy()
    w2[::3] += np.float32(1e-4)
    s2 = Snapshot()
    s2.add(Tensor.from_array("w", w2))
    before = dict(repo.store.items_prefix(b""))
    repo.forget_bases()   # as in a new process: the base is read from the store, not from memory
    with pytest.raises(IntegrityError):
        repo.archive_snapshot(s2, "m")
    assert repo.refs()["m"] == v1.version_id
    assert [k for k in repo.store.list_prefix(b"v")] == [k for k in before if k[:1] == b"v"]


def test_gc_gives_the_disk_space_back(disk_repo, monkeypatch):
    """RocksDB keeps deleted values in blob files until a compaction rewrites them;
    `gc --force` compacts, so the bytes on disk shrink at once, and what is kept
    still reads back bit-exact."""
    def disk_bytes():
        return sum(p.stat().st_size for p in disk_repo.root.rglob("*") if p.is_file())

    rng = np.random.default_rng(5)
    keep = Snapshot()
    keep.add(Tensor.from_array("w", rng.normal(0, 0.02, 1 << 20).astype("<f4")))
    disk_repo.archive_snapshot(keep, "main")
    lost = Snapshot()
    lost.add(Tensor.from_array("w", rng.normal(0, 0.02, 6 << 20).astype("<f4")))   # 24 MiB, chunks only

    def crash(self, *args):
        self.flush()
        self.store.flush()
        raise _Crash("killed before the final batch")

    monkeypatch.setattr(VersionWriter, "commit", crash)
    with pytest.raises(_Crash):
        disk_repo.archive_snapshot(lost, "main")
    monkeypatch.undo()
    before = disk_bytes()
    rep = disk_repo.gc(force=True)
    after = disk_bytes()
    assert rep.bytes > 15e6
    assert before - after > 0.8 * rep.bytes, (before, after, rep.bytes)
    assert_same_snapshot(disk_repo.retrieve("main"), keep)
    assert disk_repo.verify().ok
    disk_repo.close()
    with Repository.open(disk_repo.root, write=True) as again:   # the options file check still passes
        assert_same_snapshot(again.retrieve("main"), keep)
