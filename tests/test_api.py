"""The safetensors-style Python API: pas.load and pas.open."""
import numpy as np
import pytest

import pas
from pas.repo import Repository
from pas.snapshot import Snapshot, Tensor


@pytest.fixture
def repo_path(tmp_path):
    snap = Snapshot(metadata={"source": "test"})
    rng = np.random.default_rng(1)
    snap.add(Tensor.from_array("w", rng.normal(0, 0.02, (64, 32)).astype(np.float32)))
    snap.add(Tensor.from_array("bf", rng.integers(0, 1 << 16, 40, dtype=np.uint16), "BF16"))
    snap.add(Tensor.from_array("f8", rng.integers(0, 256, 7, dtype=np.uint8), "F8_E4M3"))
    snap.add(Tensor.from_array("n", np.arange(5, dtype=np.int64)))
    with Repository.init(tmp_path) as repo:
        repo.archive_snapshot(snap, "m")
    return tmp_path, snap


def test_load_numpy_bytes_equal(repo_path):
    path, snap = repo_path
    out = pas.load(path, "m")
    assert list(out) == list(snap.tensors)
    for name, t in snap.tensors.items():
        assert out[name].tobytes() == t.data.tobytes()
        assert out[name].shape == t.shape


def test_load_names_subset(repo_path):
    path, _ = repo_path
    assert list(pas.load(path, "m", names=["n"])) == ["n"]
    with pytest.raises(pas.NotFound):
        pas.load(path, "m", names=["nope"])


def test_load_many_yields_each_version_once(repo_path):
    path, snap = repo_path
    tuned = Snapshot(metadata={"source": "tuned"})
    for name, t in snap.tensors.items():
        data = t.data.copy()
        if name == "w":
            data = data + np.float32(1e-4)
        tuned.add(Tensor.from_array(name, data, t.dtype))
    with Repository.open(path, write=True) as repo:
        first = repo.version("m").hex
        second = repo.archive_snapshot(tuned, "m").version_id
    got = dict(pas.load_many(path, ["m", first, "m"]))
    assert list(got) == [first, second]
    for vid, want in ((first, snap), (second, tuned)):
        assert {n: a.tobytes() for n, a in got[vid].items()} == {n: t.data.tobytes() for n, t in want.tensors.items()}
    with pytest.raises(pas.NotFound):
        list(pas.load_many(path, ["m", "nope"]))


def test_load_torch_real_dtypes(repo_path):
    torch = pytest.importorskip("torch")
    path, snap = repo_path
    out = pas.load(path, "m", framework="pt")
    assert out["bf"].dtype == torch.bfloat16
    assert out["f8"].dtype == torch.float8_e4m3fn
    assert out["w"].dtype == torch.float32
    assert out["bf"].view(torch.int16).numpy().view(np.uint16).tobytes() == snap.tensors["bf"].data.tobytes()
    assert out["f8"].view(torch.uint8).numpy().tobytes() == snap.tensors["f8"].data.tobytes()


def test_open_is_lazy_and_complete(repo_path):
    path, snap = repo_path
    with pas.open(path, "m") as f:
        assert f.keys() == list(snap.tensors)
        assert f.metadata() == {"source": "test"}
        assert "w" in f and "zz" not in f
        assert f.get_tensor("w").tobytes() == snap.tensors["w"].data.tobytes()
        assert f.shape("w") == (64, 32) and f.dtype("bf") == "BF16"
        with pytest.raises(pas.NotFound):
            f.get_tensor("zz")


def test_bad_framework(repo_path):
    path, _ = repo_path
    with pytest.raises(pas.BadInput):
        pas.load(path, "m", framework="jax")


def test_import_pas_is_light():
    import subprocess
    import sys
    code = "import sys, pas; print(any(m in sys.modules for m in ('torch', 'numba', 'rocksdict')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_rows_and_approx(repo_path):
    path, snap = repo_path
    with pas.open(path, "m") as f:
        assert f.get_rows("w", 10, 20).tobytes() == snap.tensors["w"].data[10:20].tobytes()
        approx = f.get_approx("w", 2)
        lo, hi = f.get_interval("w", 2)
        true = snap.tensors["w"].data
        assert approx.shape == true.shape
        assert np.all((lo <= true) & (true <= hi)) and np.all((lo <= approx) & (approx <= hi))
        assert f.get_approx("w", 4).tobytes() == true.tobytes()
