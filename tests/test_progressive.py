"""Progressive retrieval: tensors from their top K planes, with exact intervals."""
import json

import numpy as np
import pytest
from conftest import RecordingStore

from pas import dtypes, planes
from pas.chunking import get_chunker
from pas.errors import IntegrityError
from pas.reader import float_values
from pas.records import CHUNK
from pas.repo import DEFAULT_CONFIG, Repository
from pas.snapshot import Snapshot, Tensor

SPECIAL32 = np.array([0x7FC12345, 0x7F800001, 0x80000000, 0x00000000, 0x7F800000,
                      0xFF800000, 0x00000001, 0x807FFFFF, 0x7F7FFFFF], np.uint32)


def _snapshot(rng, scale=1.0):
    snap = Snapshot()
    w = (rng.normal(0, 0.05, 400_000) * scale).astype(np.float32).view(np.uint32)
    w[:SPECIAL32.size] = SPECIAL32
    snap.add(Tensor.from_array("f32", w.view(np.float32).reshape(400, 1000)))
    snap.add(Tensor.from_array("f32s", (rng.normal(0, 1, 5000) * scale).astype(np.float32)))
    snap.add(Tensor.from_array("f16", (rng.normal(0, 0.05, 300_000) * scale).astype(np.float16)))
    snap.add(Tensor.from_array("f64", rng.normal(0, 0.05, 70_000) * scale))
    bf = ((rng.normal(0, 0.05, 300_000) * scale).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    snap.add(Tensor.from_array("bf16", bf, "BF16"))
    snap.add(Tensor.from_array("i32", rng.integers(-2**31, 2**31, 1000, dtype=np.int32)))
    return snap


@pytest.fixture(scope="module")
def repo():
    rng = np.random.default_rng(3)
    r = Repository.in_memory()
    base = _snapshot(rng)
    r.archive_snapshot(base, "m")
    child = Snapshot()
    for name, t in base.tensors.items():   # a fine-tune: small updates, so deltas are chosen
        data = t.data
        if t.dtype in ("F32", "F16", "F64"):
            noise = rng.normal(0, 1e-4, data.shape).astype(data.dtype)
            with np.errstate(invalid="ignore", over="ignore"):
                data = (data + noise).astype(data.dtype)
            data.reshape(-1).view(dtypes.get(t.dtype).bits_dtype)[:3] = \
                t.data.reshape(-1).view(dtypes.get(t.dtype).bits_dtype)[:3]
        child.add(Tensor.from_array(name, data, t.dtype))
    r.archive_snapshot(child, "m")
    return r, base, child


@pytest.mark.parametrize("version", ["m~1", "m"])
def test_interval_contains_every_value_and_midpoint(repo, version):
    r, base, child = repo
    snap = base if version == "m~1" else child
    vid = r.log("m")[1].id if version == "m~1" else r.resolve("m")
    for e in r.version(vid).tensors:
        dt = dtypes.get(e.dtype)
        if dt.name not in ("F16", "F32", "F64", "BF16"):
            continue
        true = float_values(snap.tensors[e.name].data.reshape(-1).view(dt.bits_dtype), dt).reshape(e.shape)
        for k in range(1, dt.itemsize):
            lo, hi = r.read_interval(e, k)
            approx = float_values(r.read_approx(e, k).reshape(-1).view(dt.bits_dtype), dt).reshape(e.shape)
            known = ~np.isnan(true)
            assert np.all((lo <= true) | ~known), (e.name, k)
            assert np.all((true <= hi) | ~known), (e.name, k)
            finite = np.isfinite(lo) & np.isfinite(hi)
            assert np.all(((lo <= approx) & (approx <= hi)) | ~finite), (e.name, k)
        # all planes: exact
        assert r.read_approx(e, dt.itemsize).tobytes() == snap.tensors[e.name].data.tobytes()


def test_top_planes_equal_full_split(repo):
    from pas import planes
    r, _, child = repo
    for e in r.version("m").tensors:
        dt = dtypes.get(e.dtype)
        rec = r.reader.record(e.object)
        full = planes.split(child.tensors[e.name].data, dt, rec["layout"])
        for k in range(1, dt.itemsize + 1):
            top, layout = r.read_planes(e, k)
            assert layout == rec["layout"]
            assert top.tobytes() == full[:k].tobytes(), (e.name, k, rec.get("delta"))


def test_read_planes_many_is_read_planes_of_each(repo):
    """The version-wide read (records in one batch, big tensors on the pool, the
    inline fast path for small whole tensors) gives what one-by-one reads give."""
    r, _, _ = repo
    entries = r.version("m").tensors
    assert any(r.reader.parse(e.object).inline is not None for e in entries)   # the fast path is covered
    for k in (1, 2):
        many = r.read_planes_many(entries, k)
        assert len(many) == len(entries)
        for e, (top, layout) in zip(entries, many):
            one, one_layout = r.read_planes(e, k)
            assert layout == one_layout and top.shape == one.shape and top.tobytes() == one.tobytes(), e.name


def test_one_plane_reads_fewer_chunks():
    store = RecordingStore()
    import json

    from pas.repo import DEFAULT_CONFIG
    r = Repository(store, json.loads(json.dumps(DEFAULT_CONFIG)))
    rng = np.random.default_rng(9)
    snap = Snapshot()
    snap.add(Tensor.from_array("w", rng.normal(0, 0.05, 2_000_000).astype(np.float32)))
    r.archive_snapshot(snap, "m")
    e = r.version("m").tensors[0]
    r.reader.clear_cache()
    store.read.clear()
    r.read_planes(e, 1)
    one = len(store.read)
    r.reader.clear_cache()
    store.read.clear()
    r.read_entry(e)
    full = len(store.read)
    assert one - 1 == (full - 1) // 4, (one, full)   # the record, then 1 of 4 planes' chunks


def test_retrieve_top_bytes_marks_snapshot(repo):
    r, _, child = repo
    snap = r.retrieve("m", top_bytes=2)
    assert snap.metadata["pas.approx_bytes"] == "2"
    assert snap.tensors["bf16"].data.tobytes() == child.tensors["bf16"].data.tobytes()  # 2-byte dtype: exact
    assert snap.tensors["f32"].data.tobytes() != child.tensors["f32"].data.tobytes()


def test_sign_first_repository_keeps_the_sign_in_plane_zero(tmp_path):
    """`pas init --sign-first`: no planes-exp, so one plane bounds every value with its sign."""
    rng = np.random.default_rng(4)
    snap = Snapshot()
    w = rng.normal(0, 0.05, 300_000).astype(np.float32)
    snap.add(Tensor.from_array("w", w))
    with Repository.init(tmp_path, layouts=["planes"]) as r:
        r.archive_snapshot(snap, "m")
        e = r.version("m").tensors[0]
        assert r.reader.record(e.object)["layout"] == "planes"
        lo, hi = r.read_interval(e, 1)
        assert np.all(np.sign(lo) == np.sign(hi))          # the sign is known from one plane
        assert np.all((lo <= w) & (w <= hi))
    with pytest.raises(Exception):
        Repository.init(tmp_path / "x", layouts=["planes-exp"])   # the plain layout is required


# ------------------------------------------------ fast top-plane reads (rows)


def _expected_approx(words: np.ndarray, dt, layout: str, k: int) -> bytes:
    """The midpoint rule, written out from a full split (the oracle)."""
    k = min(k, dt.itemsize)
    full = planes.split(words, dt, layout)
    if k == dt.itemsize:
        return words.tobytes()
    if layout == "planes-exp" and k == 1:
        return bytes(words.nbytes)
    full[k] = 0x80
    full[k + 1:] = 0
    return planes.merge(full, dt, layout).tobytes()


def _lineage_repo(ops, layouts=("planes", "planes-exp"), rechunk=False, later_ops=None, big_rows=1200):
    """Four versions of a fine-tune with small updates (so deltas are chosen),
    64 KiB chunks (many rows), a tensor that grows and then shrinks along its
    first axis (bases padded and cut), one big enough to be read on the pool,
    and small inline ones. With ``rechunk`` every version is cut at another
    size; with ``later_ops`` the versions from the third on use those operators."""
    cfg = json.loads(json.dumps(DEFAULT_CONFIG))
    cfg["chunker"] = {"id": "fixed", "size": 1 << 16}
    cfg["delta"]["ops"] = list(ops)
    cfg["layouts"] = list(layouts)
    r = Repository.in_memory(**{k: cfg[k] for k in ("chunker", "delta", "layouts")})
    rng = np.random.default_rng(11)
    w = {"big": rng.normal(0, 0.05, (big_rows, 1024)).astype(np.float32),   # 4.9 MB: rows on the pool
         "grow": rng.normal(0, 0.05, (300, 1000)).astype(np.float32),
         "f16": rng.normal(0, 0.05, (700, 1000)).astype(np.float16),
         "f64": rng.normal(0, 0.05, (200, 1000)),
         "bias": rng.normal(0, 0.05, 3000).astype(np.float32)}
    w["big"].reshape(-1).view(np.uint32)[:SPECIAL32.size] = SPECIAL32
    versions = {}
    for v in range(4):
        if v:
            for name, a in list(w.items()):
                noise = rng.normal(0, 1e-4, a.shape).astype(a.dtype)
                with np.errstate(invalid="ignore", over="ignore"):
                    w[name] = (a + noise).astype(a.dtype)
            w["big"].reshape(-1).view(np.uint32)[:SPECIAL32.size] = SPECIAL32
            g = w["grow"]   # 300 -> 380 -> 250 -> 400 rows: padded, cut, then past a cut base
            w["grow"] = (g[:250].copy() if v == 2 else
                         np.concatenate([g, rng.normal(0, 0.05, (80 if v == 1 else 150, 1000)).astype(np.float32)]))
        if later_ops and v == 2:
            r.config["delta"]["ops"] = list(later_ops)
        if rechunk:
            r.chunker = get_chunker({"id": "fixed", "size": (1 << 16) - 4096 * v})
        snap = Snapshot()
        for name, a in w.items():
            snap.add(Tensor.from_array(name, a))
        bf = (w["big"][:300].view(np.uint32) >> 16).astype(np.uint16)
        snap.add(Tensor.from_array("bf16", bf, "BF16"))
        r.archive_snapshot(snap, "m")
        versions[r.resolve("m")] = snap
    return r, versions


def _chain(r, addr):
    out = []
    while addr is not None:
        out.append(r.reader.record(addr))
        d = out[-1].get("delta")
        addr = bytes.fromhex(d["base"]) if d else None
    return out


@pytest.fixture(scope="module", params=["xor", "sub", "xor-over-sub"])
def lineage(request):
    if request.param == "xor-over-sub":   # XOR levels read by planes, down to a difference level decoded whole
        r, versions = _lineage_repo(("sub",), later_ops=("xor",))
        e = {t.name: t for t in r.version(list(versions)[-1]).tensors}["big"]
        assert [c.get("delta", {}).get("op") for c in _chain(r, e.object)] == ["xor", "xor", "sub", None]
        return r, versions
    return _lineage_repo((request.param,))


def test_approx_and_planes_match_the_midpoint_rule_down_every_chain(lineage):
    """retrieve(top_bytes=K), read_approx (on the pool and not) and read_planes
    give exactly the oracle's bytes for every version, tensor and K, through
    XOR and difference chains, resized bases and inline levels."""
    r, versions = lineage
    depths = set()
    for vid, snap in versions.items():
        for k in (1, 2, 3):
            got = r.retrieve(vid.hex(), top_bytes=k)
            for e in r.version(vid).tensors:
                dt = dtypes.get(e.dtype)
                words = snap.tensors[e.name].data.reshape(-1).view(dt.bits_dtype)
                layout = r.reader.record(e.object)["layout"]
                want = _expected_approx(words, dt, layout, k) if dt.itemsize > k else words.tobytes()
                assert got.tensors[e.name].data.tobytes() == want, (vid.hex()[:8], e.name, k)
                if dt.itemsize <= k:
                    continue
                for parallel in (True, False):
                    r.reader.clear_cache()
                    assert r.read_approx(e, k, parallel=parallel).tobytes() == want, (e.name, k, parallel)
                top, lay = r.read_planes(e, k, parallel=parallel)
                assert top.tobytes() == planes.split(words, dt, lay)[:k].tobytes(), (e.name, k)
                depths.add((_chain(r, e.object)[0].get("delta", {}).get("op"), len(_chain(r, e.object))))
    assert max(d for _, d in depths) >= 3, depths   # the fixture really built chains


def test_rows_cut_differently_per_level_give_the_same_planes():
    r, versions = _lineage_repo(("xor",), rechunk=True, big_rows=300)
    vid = list(versions)[-1]
    e = {t.name: t for t in r.version(vid).tensors}["big"]
    sizes = {len(c["chunks"][0]) for c in _chain(r, e.object)}
    assert len(sizes) > 1, sizes
    dt = dtypes.get("F32")
    words = versions[vid].tensors["big"].data.reshape(-1).view(np.uint32)
    for k in (1, 2, 3):
        assert r.read_planes(e, k)[0].tobytes() == planes.split(words, dt, "planes-exp")[:k].tobytes()
        assert r.read_approx(e, k).tobytes() == _expected_approx(words, dt, r.reader.record(e.object)["layout"], k)


def _damage(store, key):
    value = bytearray(store.get(key))
    value[len(value) // 2] ^= 0x10
    store.write([(key, bytes(value))])


def _plane_chunk(r, addr, p, j=0):
    return CHUNK + bytes.fromhex(r.reader.record(addr)["chunks"][p][j])


@pytest.mark.parametrize("ops", [("xor",), ("sub",)], ids="+".join)
@pytest.mark.parametrize("level", ["top", "bottom"])
def test_a_damaged_chunk_fails_every_top_plane_read(ops, level):
    """A flipped stored byte in a plane-0 chunk of the tensor or of its deepest
    base: every K raises IntegrityError (K=1 of planes-exp does not decode the
    plane - its answer is 0 - but still reads and checks it); a damaged chunk of
    a low plane of an XOR chain is not read by K=1."""
    r, versions = _lineage_repo(ops, big_rows=300)
    vid = list(versions)[-1]
    e = {t.name: t for t in r.version(vid).tensors}["big"]
    chain = _chain(r, e.object)
    assert len(chain) >= 3 and chain[0]["delta"]["op"] == ops[0]
    rec = chain[0] if level == "top" else chain[-1]
    key = CHUNK + bytes.fromhex(rec["chunks"][0][len(rec["chunks"][0]) // 2])
    _damage(r.store, key)
    for k in (1, 2, 3):
        r.reader.clear_cache()
        with pytest.raises(IntegrityError):
            r.retrieve(vid.hex(), top_bytes=k)
        with pytest.raises(IntegrityError):
            r.read_approx(e, k, parallel=False)
        with pytest.raises(IntegrityError):
            r.read_planes(e, k)
    if ops == ("xor",):   # a low plane's chunk: not read by K=1 and K=2
        r2, versions2 = _lineage_repo(ops, big_rows=300)
        vid = list(versions2)[-1]
        e2 = {t.name: t for t in r2.version(vid).tensors}["big"]
        _damage(r2.store, CHUNK + bytes.fromhex(_chain(r2, e2.object)[-1]["chunks"][3][0]))
        words = versions2[vid].tensors["big"].data.reshape(-1).view(np.uint32)
        got = r2.retrieve(vid.hex(), top_bytes=2).tensors["big"].data
        assert got.tobytes() == _expected_approx(words, dtypes.get("F32"), "planes-exp", 2)
        with pytest.raises(IntegrityError):
            r2.retrieve(vid.hex())


@pytest.mark.parametrize("how", ["missing", "misplaced", "short"])
@pytest.mark.parametrize("ops,level,plane", [("xor", 0, 0), ("xor", -1, 0), ("sub", -1, 3)])
def test_a_missing_or_misplaced_top_chunk_fails(how, ops, level, plane):
    """A chunk that is gone, or another chunk's intact frame under its key: the
    read fails. Decoded reads check each chunk's address; the K=1 planes-exp
    read, which does not decode, still refuses a frame of the wrong length
    (zstd-coded exponent planes and raw low planes of a difference chain)."""
    r, versions = _lineage_repo((ops,), big_rows=300)
    vid = list(versions)[-1]
    e = {t.name: t for t in r.version(vid).tensors}["big"]
    rec = _chain(r, e.object)[level]
    chunks = rec["chunks"][plane]
    key = CHUNK + bytes.fromhex(chunks[0])
    if how == "missing":
        r.store.write(deletes=[key])
    elif how == "misplaced":   # same length, valid frame, other bytes
        other = [h for h in chunks[1:-1] if h != chunks[0]]
        r.store.write([(key, r.store.get(CHUNK + bytes.fromhex(other[0])))])
    else:                      # the plane's shorter last chunk
        r.store.write([(key, r.store.get(CHUNK + bytes.fromhex(chunks[-1])))])
    # K=1 of planes-exp does not decode: another chunk of the same length is
    # only caught by the decoded reads (its answer, 0, does not depend on it)
    ks = (2, 3) if how == "misplaced" else (1, 2, 3)
    for k in ks:
        r.reader.clear_cache()
        with pytest.raises(IntegrityError):
            r.retrieve(vid.hex(), top_bytes=k)
        with pytest.raises(IntegrityError):
            r.read_planes(e, k)


def test_sign_first_one_plane_is_decoded_and_checked():
    """Without planes-exp, one plane carries sign and exponent: K=1 decodes it,
    and another chunk's intact frame under its key is refused (address check)."""
    r, versions = _lineage_repo(("xor",), layouts=("planes",), big_rows=300)
    vid = list(versions)[-1]
    e = {t.name: t for t in r.version(vid).tensors}["big"]
    words = versions[vid].tensors["big"].data.reshape(-1).view(np.uint32)
    assert r.reader.record(e.object)["layout"] == "planes"
    got = r.retrieve(vid.hex(), top_bytes=1).tensors["big"].data
    assert got.tobytes() == _expected_approx(words, dtypes.get("F32"), "planes", 1)
    rec = _chain(r, e.object)[1]
    r.store.write([(CHUNK + bytes.fromhex(rec["chunks"][0][0]), r.store.get(CHUNK + bytes.fromhex(rec["chunks"][0][1])))])
    r.reader.clear_cache()
    with pytest.raises(IntegrityError):
        r.retrieve(vid.hex(), top_bytes=1)


@pytest.mark.parametrize("name", ["F16", "BF16", "F32", "F64", "I32", "U16"])
@pytest.mark.parametrize("layout", ["planes", "planes-exp"])
def test_midpoint_kernels_match_numpy(monkeypatch, name, layout):
    """planes.midpoint / midpoint_words: the Numba kernels, the numpy path and
    the written-out rule agree bit for bit, special values included."""
    dt = dtypes.get(name)
    if layout == "planes-exp" and not dt.is_float:
        pytest.skip("planes-exp is for floats")
    rng = np.random.default_rng(5)
    words = rng.integers(0, 256, 70_000 * dt.itemsize, dtype=np.uint8).view(dt.bits_dtype).copy()
    if name == "F32":
        words[:SPECIAL32.size] = SPECIAL32
    full = planes.split(words, dt, layout)
    for k in range(1, dt.itemsize):
        want = full.copy()
        want[k] = 0x80
        want[k + 1:] = 0
        want = planes.merge(want, dt, layout).tobytes()
        fast = planes.midpoint(full[:k], dt, layout)
        fast_words = planes.midpoint_words(words, dt, layout, k)
        with monkeypatch.context() as m:
            m.setattr(planes, "_use_numba", lambda n: False)
            slow = planes.midpoint(full[:k], dt, layout)
            slow_words = planes.midpoint_words(words, dt, layout, k)
        for got in (fast, fast_words, slow, slow_words):
            assert got.dtype == dt.bits_dtype and got.tobytes() == want, (name, layout, k)
        inplace = words.copy()
        planes.midpoint_words(inplace, dt, layout, k, out=inplace)
        assert inplace.tobytes() == want
