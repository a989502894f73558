"""End-to-end smoke test of the benchmark harness (bench/core.py) on tiny synthetic files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import core, datasets, schemes, tensorio


def _tensors(seed: int, base: dict | None = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    rng = np.random.default_rng(seed)
    if base is None:
        t = {
            "emb.weight": rng.normal(0, 0.02, (64, 16)).astype("<f4"),
            "layer.0.weight": rng.normal(0, 0.02, (16, 16)).astype("<f4"),
            "layer.0.bias": np.zeros(16, "<f4"),
            "layer.1.weight": (rng.normal(0, 0.02, (16, 16)).astype("<f4").view("<u4") >> 16).astype("<u2"),
            "half": rng.normal(0, 1, (8, 4)).astype("<f2"),
            "steps": np.array(7, dtype="<i8"),
            "mask": rng.random(10) > 0.5,
        }
    else:  # a "fine-tune": small updates, one tensor unchanged, one added
        t = {k: v.copy() for k, v in base.items()}
        t["layer.0.weight"] = (t["layer.0.weight"] + rng.normal(0, 1e-4, (16, 16))).astype("<f4")
        t["emb.weight"] = (t["emb.weight"] + rng.normal(0, 1e-4, (64, 16))).astype("<f4")
        t["head.weight"] = rng.normal(0, 0.02, (3, 16)).astype("<f4")
    return t, {"layer.1.weight": "BF16"}


def _write(path: Path, tensors: dict[str, np.ndarray], dts: dict[str, str], with_pas: bool) -> None:
    """With pas.formats when asked and it exists, else bench's tiny writer; then
    check that the file holds exactly the intended tensors."""
    written = False
    if with_pas:
        try:
            from pas.formats import safetensors as pst
            from pas.snapshot import Snapshot, Tensor
        except ImportError:
            pass
        else:
            snap = Snapshot()
            for n, a in tensors.items():
                snap.add(Tensor.from_array(n, a, dts.get(n)))
            pst.write(snap, path)
            written = True
    if not written:
        tensorio.write_safetensors(path, tensors, dts)
    back = tensorio.load(path)
    assert set(back) == set(tensors)
    for n, a in tensors.items():
        assert tensorio.same_bytes(a, back[n]) is None, (path.name, n, tensorio.same_bytes(a, back[n]))


def _corpus(root: Path, with_pas: bool = False) -> Path:
    root.mkdir()
    t0, d = _tensors(0)
    t1, _ = _tensors(1, t0)
    t2, _ = _tensors(2, t1)
    lin = {"name": "tiny", "description": "synthetic", "versions": []}
    for vid, parent, t in (("v0", None, t0), ("v1", "v0", t1), ("v2", "v1", t2)):
        p = root / "tiny" / f"{vid}.safetensors"
        p.parent.mkdir(exist_ok=True)
        _write(p, t, d, with_pas)
        lin["versions"].append({"id": vid, "parent": parent, "path": f"tiny/{vid}.safetensors",
                                "file_bytes": p.stat().st_size})
    (root / "manifest.json").write_text(json.dumps({"format": 1, "lineages": [lin]}))
    return root


def _run(tmp_path: Path, data: Path, schemes_: str | None = None) -> dict:
    out = tmp_path / "out"
    argv = ["--data", str(data), "--out", str(out), "--work", str(tmp_path / "work"),
            "--no-real", "--quiet", "--repeat", "3"]
    if schemes_:
        argv += ["--schemes", schemes_]
    rc = core.main(argv)
    report = json.loads((out / "core.json").read_text())
    assert (out / "core.md").read_text().startswith("# pas core benchmark")
    assert rc == 0, {s: t.get("error") for s, t in report["totals"].items()}
    return report


BASELINES = "raw,zstd3,blosc2"


def test_harness_end_to_end(tmp_path):
    report = _run(tmp_path, _corpus(tmp_path / "corpus"), BASELINES)
    assert {"started", "elapsed_s", "machine", "config", "datasets", "totals", "skipped_schemes"} <= set(report)
    assert {"cpus_usable", "loadavg_start", "loadavg_end"} <= set(report["machine"])
    _check(report, {"raw", "zstd3", "blosc2"})
    raw = report["totals"]["raw"]
    assert raw["physical_bytes"] == raw["logical_bytes"]      # raw copies cost exactly the files


DELTAS = ["xor3", "paper"] + (["patch-from"] if schemes.ZstdPatchFrom.available() is None else [])


def test_delta_schemes(tmp_path):
    report = _run(tmp_path, _corpus(tmp_path / "corpus"), ",".join(DELTAS))
    _check(report, set(DELTAS))
    [ds] = report["datasets"]
    for s in DELTAS:
        t = ds["schemes"][s]["timings"]
        assert (t["newest"]["id"], t["newest"]["depth"], t["mid"]["id"], t["all"]["n"]) == ("v2", 3, "v1", 3)
        # children are deltas: much smaller than the root
        v = ds["schemes"][s]["versions"]
        assert v[1]["physical_added"] < v[0]["physical_added"], s


def test_plane_delta_roundtrip(tmp_path):
    t0, _ = _tensors(0)
    t1, _ = _tensors(1, t0)
    t1["mask"] = ~t1["mask"]
    t1["half"] = t1["half"][:4]                                  # shape change: stored whole
    for cls in (schemes.XorPlanesZstd, schemes.PaperSubPlanesZlib):
        sc = cls(tmp_path / cls.name)
        for i, t in enumerate((t0, t1)):
            tensorio.write_safetensors(tmp_path / f"{cls.name}{i}.safetensors", t)
        a = sc.archive(tmp_path / f"{cls.name}0.safetensors", None)
        b = sc.archive(tmp_path / f"{cls.name}1.safetensors", a)
        sc.reopen()
        got = sc.retrieve(b)
        assert set(got) == set(t1)
        for n, x in t1.items():
            assert tensorio.same_bytes(x, got[n]) is None, (cls.name, n)
            assert tensorio.same_bytes(x, sc.retrieve_one(b, n)) is None, (cls.name, n)
        # the lineage in one call: the child decoded from its parent's decoded tensors
        both = sc.retrieve_lineage([a, b])
        for want, have in zip((t0, t1), both):
            assert set(have) == set(want) and all(tensorio.same_bytes(x, have[n]) is None for n, x in want.items())


@pytest.mark.skipif(schemes.Pas.available() is not None, reason="pas.repo not available")
def test_pas_in_harness(tmp_path):
    report = _run(tmp_path, _corpus(tmp_path / "corpus", with_pas=True), "pas")
    _check(report, {"pas"})
    tb = report["datasets"][0]["schemes"]["pas"]["timings"]["top_bytes"]
    assert set(tb) == {"1", "2", "1p"}    # values from 1 and 2 planes; the top plane's bytes
    for k, x in tb.items():
        assert x.get("seconds") is not None and x["ratio_to_full"] > 0, (k, x)
        assert x["top_planes_exact"], (k, x)
    # the entropy floor of what pas stored: per version, summed per dataset and in total
    [ds] = report["datasets"]
    floors = [v["entropy_floor"] for v in ds["schemes"]["pas"]["versions"]]
    assert all(isinstance(f, int) and f > 0 for f in floors), floors
    assert ds["schemes"]["pas"]["entropy_floor"] == sum(floors) == report["totals"]["pas"]["entropy_floor"]
    assert "entropy floor MB" in (tmp_path / "out" / "core.md").read_text()


def _check(report: dict, expected: set[str]) -> None:
    assert set(report["totals"]) == expected
    [ds] = report["datasets"]
    assert ds["name"] == "tiny" and [v["id"] for v in ds["versions"]] == ["v0", "v1", "v2"]
    for s in expected:
        t = report["totals"][s]
        assert t["ok"] and t["verified"], (s, t.get("error"))
        for k in ("logical_bytes", "physical_bytes", "ratio", "factor", "archive_mb_s", "retrieve_mb_s",
                  "lineage_mb_s", "one_tensor_ratio_median"):
            assert t[k] is not None and t[k] > 0, (s, k)
        x = ds["schemes"][s]
        assert x["verified"] and len(x["versions"]) == 3
        # every version in one call, checked as bytes, timed in every repeat
        assert x["lineage_verified"] and len(x["lineage_s_per_repeat"]) >= 3, (s, x.get("lineage_error"))
        for v in x["versions"]:
            assert v["verified"] and not v["verify_errors"]
            assert {"ratio", "archive_mb_s", "retrieve_mb_s", "one_tensor"} <= set(v)
            assert {"name", "bytes", "share", "seconds", "ratio_to_full"} <= set(v["one_tensor"])


def test_torch_files_and_edge_tensors(tmp_path):
    torch = pytest.importorskip("torch")
    data = tmp_path / "data"
    (data / "ckpts").mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    sd = {"w": torch.randn(32, 8, generator=g), "b": torch.zeros(8), "e": torch.zeros(0, 4),
          "h": torch.randn(4, 4, generator=g).to(torch.bfloat16), "n": torch.tensor(3)}
    torch.save(sd, data / "ckpts" / "a.pt")
    sd["w"] = sd["w"] + 1e-3
    torch.save({"model": sd, "epoch": 2}, data / "ckpts" / "b.pt")
    tensorio.write_safetensors(data / "single.safetensors",
                               {"x": np.arange(6, dtype="<f4").reshape(2, 3), "z": np.zeros((0, 3), "<f4"),
                                "s": np.array(1.5, "<f8")})
    ds = datasets.dir_datasets(data)
    assert [(d.name, [(v.id, v.parent) for v in d.versions]) for d in ds] == [
        ("ckpts", [("a", None), ("b", "a")]), ("single", [("single", None)])]
    loaded = tensorio.load(data / "ckpts" / "b.pt")
    assert set(loaded) == {"model.w", "model.b", "model.e", "model.h", "model.n"}
    assert loaded["model.h"].dtype == np.dtype("<u2")
    report = _run(tmp_path, data, BASELINES)
    assert all(t["ok"] for t in report["totals"].values())


def test_same_bytes_is_bitwise():
    a = np.array([0.0, 1.0], "<f4")
    assert tensorio.same_bytes(a, a.copy()) is None
    assert tensorio.same_bytes(a, np.array([-0.0, 1.0], "<f4"))   # -0.0 == 0.0 as floats, not as bytes
    nan = np.array([np.nan], "<f4")
    assert tensorio.same_bytes(nan, nan.copy()) is None            # NaN != NaN as floats, equal as bytes
    assert tensorio.same_bytes(a, a.astype("<f8"))
    assert tensorio.same_bytes(a, a.reshape(2, 1))


def test_synthetic_dataset_and_pas_bench_command(tmp_path, monkeypatch):
    """`pas bench` forwards to the harness; --synthetic adds the SD-shaped lineage tree."""
    from typer.testing import CliRunner
    from pas.cli import app
    monkeypatch.setenv("PAS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["--quiet", "bench", "--out", str(out), "--synthetic", "0.05", "--no-corpus",
                                 "--no-real", "--schemes", "raw,blosc2", "--repeat", "1",
                                 "--work", str(tmp_path / "work")])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "core.json").read_text())
    [ds] = report["datasets"]
    assert ds["name"] == "synthetic-sd-x0.05" and ds["kind"] == "synthetic"
    assert all(ds["schemes"][s]["verified"] for s in ("raw", "blosc2"))
