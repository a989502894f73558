"""Progressive retrieval: tensors from their top K planes, with exact intervals."""
import numpy as np
import pytest

from conftest import RecordingStore
from pas import dtypes
from pas.reader import float_values
from pas.repo import Repository
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
