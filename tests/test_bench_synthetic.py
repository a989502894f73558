"""bench.synthetic: the SD-shaped synthetic versioned-weights generator (tiny scales)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench import synthetic as S
from bench import tensorio
from bench.datasets import dir_datasets

SCALE = 0.1          # 5 versions x 2 snapshots, ~16 MB


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    (ds,) = S.generate(root, scale=SCALE, seed=3)
    manifest = json.loads((root / "manifest.json").read_text())
    return root, ds, manifest


def _info(manifest):
    return {v["version"]: v for v in manifest["version_info"]}


def _load(ds):
    return {v.id: tensorio.load(v.path) for v in ds.versions}


def _rel(a, b):
    return float(np.linalg.norm(b.astype(np.float64) - a) / np.linalg.norm(a.astype(np.float64)))


def test_shape_formula():
    assert S.shape_for(0.05) == (3, 2)
    assert S.shape_for(0.1) == (5, 2)
    assert S.shape_for(0.25) == (14, 3)
    assert S.shape_for(1.0) == (54, 10)          # the paper's SD shape
    assert S.shape_for(2.0) == (108, 20)
    assert S.shape_for(0.001) == (1, 2)
    with pytest.raises(ValueError):
        S.shape_for(0)
    assert len(S.base_layers()) == 16


def test_counts_ids_and_topology(gen):
    root, ds, manifest = gen
    V, n_s = S.shape_for(SCALE)
    assert ds.kind == "synthetic" and ds.name == S.dataset_name(SCALE)
    assert len(ds.versions) == V * n_s
    ids = [v.id for v in ds.versions]
    assert len(set(ids)) == len(ids)
    assert ids[0] == "v00-s00" and ds.versions[0].parent is None
    seen = set()
    for v in ds.versions:                        # parents first, in the given order
        assert v.parent is None or v.parent in seen, v.id
        seen.add(v.id)
        ver, snap = v.id.split("-")
        if snap != "s00":
            assert v.parent == f"{ver}-s{int(snap[1:]) - 1:02d}"
        elif v.parent is not None:
            pv = _info(manifest)[ver]["parent"]
            assert v.parent == f"{pv}-s{n_s - 1:02d}"
    assert sum(v.parent is None for v in ds.versions) == 1
    # the corpus reader understands the manifest too
    (other,) = dir_datasets(root)
    assert [(v.id, v.parent) for v in other.versions] == [(v.id, v.parent) for v in ds.versions]


def test_files_load_with_layers(gen):
    _, ds, manifest = gen
    info = _info(manifest)
    base = {f"{L.name}.{k}" for L in S.base_layers() for k in ("weight", "bias")}
    for v in ds.versions:
        t = tensorio.load(v.path)
        assert all(a.dtype == np.float32 and np.isfinite(a).all() for a in t.values())
        layers = {n.rsplit(".", 1)[0] for n in t}
        assert len(layers) == info[v.id.split("-")[0]]["layers"] >= 16
        if len(layers) == 16:
            assert set(t) == base
    t0 = tensorio.load(ds.versions[0].path)
    w = t0["features.7.weight"]                     # 16 -> 16 channels, 3x3: fan_in 144
    assert 0.5 / 12 < w.std() < 2 / 12


def test_frozen_layers_bit_identical(gen):
    _, ds, manifest = gen
    info = _info(manifest)
    got = _load(ds)
    n_s = S.shape_for(SCALE)[1]
    frozen_versions = [k for k, v in info.items() if v["frozen"]]
    assert "v01" in frozen_versions
    for ver in frozen_versions:
        parent_last = got[f"{info[ver]['parent']}-s{n_s - 1:02d}"]
        for s in range(n_s):
            cur = got[f"{ver}-s{s:02d}"]
            for name in info[ver]["frozen"]:
                assert tensorio.same_bytes(parent_last[name], cur[name]) is None, (ver, s, name)
            trained = [n for n in cur if n not in info[ver]["frozen"]]
            assert trained and all(not np.array_equal(cur[n], parent_last.get(n)) for n in trained)


def test_small_relative_updates(gen):
    _, ds, manifest = gen
    info = _info(manifest)
    got = _load(ds)
    for v in ds.versions:
        if v.parent is None:
            continue
        a, b = got[v.parent], got[v.id]
        frozen = set(info[v.id.split("-")[0]]["frozen"])
        same_shape = [n for n in b if n in a and a[n].shape == b[n].shape]
        assert len(same_shape) >= len(b) - 3          # at most one architecture change
        rels = {n: _rel(a[n], b[n]) for n in same_shape}
        assert max(rels.values()) < 0.05, (v.id, max(rels.values()))
        assert np.median(list(rels.values())) < 0.01
        assert all((rels[n] == 0) == (n in frozen) for n in same_shape), v.id   # trained tensors move


def test_architecture_change(gen):
    _, ds, manifest = gen
    info = _info(manifest)
    assert info["v02"]["arch"]                        # always an architecture change at v02
    got = _load(ds)
    n_s = S.shape_for(SCALE)[1]
    parent_last = got[f"{info['v02']['parent']}-s{n_s - 1:02d}"]
    child = got["v02-s00"]
    changed = [n for n in child if n not in parent_last or parent_last[n].shape != child[n].shape]
    assert 1 <= len(changed) <= 4


def test_reuse_then_regenerate(tmp_path):
    (ds,) = S.generate(tmp_path, scale=0.05, seed=1)
    stamp = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    (again,) = S.generate(tmp_path, scale=0.05, seed=1)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamp
    assert [(v.id, v.parent, v.path) for v in again.versions] == [(v.id, v.parent, v.path) for v in ds.versions]
    before = ds.versions[-1].path.read_bytes()
    (other,) = S.generate(tmp_path, scale=0.05, seed=2)       # other parameters: regenerated
    assert other.versions[-1].path.read_bytes() != before
    assert json.loads((tmp_path / "manifest.json").read_text())["params"]["seed"] == 2
    p = other.versions[0].path                                  # a damaged file: regenerated
    p.write_bytes(p.read_bytes()[:100])
    (fixed,) = S.generate(tmp_path, scale=0.05, seed=2)
    assert fixed.versions[0].path.stat().st_size > 100


def test_deterministic(tmp_path):
    (a,) = S.generate(tmp_path / "a", scale=0.05, seed=7)
    (b,) = S.generate(tmp_path / "b", scale=0.05, seed=7)
    assert [v.id for v in a.versions] == [v.id for v in b.versions]
    for va, vb in zip(a.versions, b.versions):
        assert va.path.read_bytes() == vb.path.read_bytes(), va.id


def test_bfloat16_is_the_rounded_float32(tmp_path):
    (f,) = S.generate(tmp_path / "f", scale=0.05, seed=5)
    (h,) = S.generate(tmp_path / "h", scale=0.05, seed=5, dtype="bf16")
    assert h.name.endswith("-bf16")
    header, _ = tensorio.st_read_header_file(h.versions[-1].path)
    assert {x["dtype"] for x in header.values()} == {"BF16"}
    a, b = tensorio.load(f.versions[-1].path), tensorio.load(h.versions[-1].path)
    assert set(a) == set(b)
    for n in a:
        assert b[n].dtype == np.dtype("<u2")
        up = (b[n].astype(np.uint32) << 16).view(np.float32)
        # nearest bfloat16: within half a bfloat16 ulp (2^-8 relative)
        assert np.all(np.abs(up - a[n]) <= np.abs(a[n]) * 2.0 ** -8)
    with pytest.raises(ValueError):
        S.generate(tmp_path / "x", scale=0.05, dtype="int8")
