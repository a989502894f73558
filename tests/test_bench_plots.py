"""bench.plots: PNG plots of a bench.core report (synthetic report, no benchmark run)."""
from __future__ import annotations

import pytest

from bench.plots import is_pas, pareto_front

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MB = 1e6


def _entry(ratio, retrieve_s, archive_mb_s, lb, label=None, floor=None, planes=None):
    x = {"ok": True, "logical_bytes": lb, "physical_bytes": int(ratio * lb), "ratio": ratio,
         "factor": round(1 / ratio, 3), "archive_s": lb / MB / archive_mb_s, "archive_mb_s": archive_mb_s,
         "retrieve_s": retrieve_s, "retrieve_mb_s": lb / MB / retrieve_s, "entropy_floor": floor,
         "timings": {"newest": {"seconds": retrieve_s / 3}, "mid": {"seconds": retrieve_s / 3},
                     "all": {"n": 3, "seconds": retrieve_s}}}
    if label:
        x["label"] = label
    if planes is not None:
        x["planes"] = planes
    return x


def _planes(n_planes, lb, scale):
    per = lb // n_planes
    out = []
    for p in range(n_planes):
        frac = min(1.0, 0.05 + p / n_planes) * scale  # MSB planes compress well, low mantissa planes do not
        out.append({"dtype": {4: "F32", 2: "BF16"}.get(n_planes, "F64"), "plane": p, "stored_bytes": int(per * min(1.0, frac * 1.05)),
                    "floor_bytes": int(per * frac), "logical_bytes": per})
    return out


def _report():
    specs = [("lineage-a", 30_000_000, 32, {"raw": (1.0, 0.09), "zstd3": (0.92, 0.35), "xor3": (0.46, 0.6),
                                            "pas": (0.45, 0.3)}),
             ("lineage-bf16", 12_000_000, 16, {"raw": (1.0, 0.03), "zstd3": (0.78, 0.1), "xor3": (0.27, 0.2),
                                               "pas": (0.28, 0.25)})]
    labels = {"raw": "raw files", "zstd3": "zstd-3 per file", "xor3": "XOR vs parent + planes + zstd-3",
              "pas": "pas"}
    datasets = []
    for name, lb, nplanes, sch in specs:
        d = {"name": name, "kind": "corpus", "logical_bytes": lb, "versions": [{"id": f"v{i}"} for i in range(3)],
             "schemes": {}}
        for s, (ratio, rs) in sch.items():
            pas = is_pas(s)
            d["schemes"][s] = _entry(ratio, rs, 80.0 if pas else 500.0, lb,
                                     floor=int(ratio * lb * 0.9) if pas else None,
                                     planes=_planes(nplanes, lb, ratio) if pas else None)
        d["schemes"]["paper"] = {"ok": False, "error": "boom", "errors": []}  # a failed scheme is skipped
        datasets.append(d)
    lb = sum(d["logical_bytes"] for d in datasets)
    totals = {}
    for s in ("raw", "zstd3", "xor3", "pas"):
        phys = sum(d["schemes"][s]["physical_bytes"] for d in datasets)
        totals[s] = _entry(phys / lb, sum(d["schemes"][s]["retrieve_s"] for d in datasets),
                           90.0 if s == "pas" else 450.0, lb, label=labels[s],
                           floor=int(phys * 0.9) if s == "pas" else None)
    totals["pas"]["planes"] = [dict(dtype=p["dtype"], plane=p["plane"], **{k: p[k] + q[k] for k in ("stored_bytes", "floor_bytes",
                                                                                    "logical_bytes")})
                               for p, q in zip(datasets[0]["schemes"]["pas"]["planes"],
                                               datasets[1]["schemes"]["pas"]["planes"] + [
                                                   {"stored_bytes": 0, "floor_bytes": 0, "logical_bytes": 0}] * 16)]
    totals["paper"] = {"ok": False, "error": "boom"}
    return {"config": {"schemes": ["raw", "zstd3", "xor3", "paper", "pas"], "mb": MB},
            "datasets": datasets, "totals": totals}


def _check_pngs(paths):
    for p in paths:
        assert p.exists(), p
        data = p.read_bytes()
        assert data[:8] == PNG_MAGIC, p
        assert len(data) > 10_000, (p, len(data))


def test_make_plots_writes_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    from bench.plots import make_plots

    paths = make_plots(_report(), tmp_path / "plots")
    names = sorted(p.name for p in paths)
    assert names == sorted(["pareto-lineage-a.png", "pareto-lineage-bf16.png", "pareto-totals.png",
                            "throughput.png", "planes.png"])
    _check_pngs(paths)
    assert all(p.parent == tmp_path / "plots" for p in paths)


def test_make_plots_without_planes(tmp_path):
    pytest.importorskip("matplotlib")
    from bench.plots import make_plots

    report = _report()
    report["datasets"] = report["datasets"][:1]  # one dataset: keep the test fast
    d = report["datasets"][0]
    d["schemes"]["pas"].pop("planes")
    d["schemes"]["pas"]["entropy_floor"] = None
    report["totals"] = {s: x for s, x in report["totals"].items() if s != "raw"}  # missing from the totals
    report["totals"]["pas"].pop("planes")
    paths = make_plots(report, tmp_path)
    assert sorted(p.name for p in paths) == ["pareto-lineage-a.png", "pareto-totals.png", "throughput.png"]
    _check_pngs(paths)


def test_make_plots_empty_report(tmp_path):
    pytest.importorskip("matplotlib")
    from bench.plots import make_plots

    assert make_plots({"datasets": [], "totals": {}}, tmp_path) == []


def test_pareto_front_cases():
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 1.0)]) == [0]
    # dominated points: (2, 2) by (1, 1); (3, 1) by (1, 1)? no: (1, 1) <= (3, 1) on both, < on x: dominated
    assert pareto_front([(1.0, 1.0), (2.0, 2.0), (3.0, 1.0)]) == [0]
    # a trade-off: all three on the front
    assert pareto_front([(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]) == [0, 1, 2]
    # ties: equal points do not dominate each other, both kept
    assert pareto_front([(1.0, 2.0), (1.0, 2.0), (2.0, 3.0)]) == [0, 1]
    # equal on one axis, better on the other: dominated
    assert pareto_front([(1.0, 2.0), (1.0, 1.0), (0.5, 3.0)]) == [1, 2]
    # order does not matter, indices are ascending
    assert pareto_front([(3.0, 1.0), (5.0, 5.0), (1.0, 3.0), (2.0, 2.0)]) == [0, 2, 3]
    # missing or non-finite coordinates are never on the front and do not dominate
    assert pareto_front([(float("nan"), 0.0), (1.0, 1.0), (None, 0.0), (2.0, 0.5)]) == [1, 3]


def test_make_plots_without_matplotlib(tmp_path, monkeypatch):
    import sys

    from bench.plots import make_plots

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    with pytest.raises(ImportError, match="needs matplotlib"):
        make_plots(_report(), tmp_path)
    assert not list(tmp_path.iterdir())
