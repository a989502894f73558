"""bench.plan_bench (issue 6, Fig. 6(c) and Table V) on a tiny synthetic repository.

Scale 0.05 (3 versions x 2 snapshots), no corpus, one retrieval per version:
the JSON holds every algorithm x alpha point, storage is ordered SPT >= best >=
the MST floor (no depth bound) wherever best is feasible, the `best` points are
what `algorithms.best` itself returns, the Table V rows (spt, mst, best) exist
with measured times, and the Markdown and PNG are written.
"""
from __future__ import annotations

import json
import time

import pytest

from bench import plan_bench

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan-bench")
    t = time.perf_counter()
    res = plan_bench.run(root / "out", root / "work", scale=0.05, corpus=[], repeat=1, quick=True)
    res["_seconds"] = time.perf_counter() - t
    return root / "out", res


def test_every_point_and_the_storage_order(result):
    out, _ = result
    res = json.loads((out / "plan.json").read_text())
    (name, rep), = res["repositories"].items()
    assert name.startswith("synthetic-sd-x0.05")
    pts = rep["curves"]["points"]
    got = {(p["alpha"], p["algorithm"]) for p in pts}
    assert got == {(a, alg) for a in plan_bench.ALPHAS for alg in plan_bench.ALGORITHMS}
    assert len(pts) == len(got)
    floor = rep["curves"]["references"]["mst_unbounded"]["storage"]
    by = {(p["alpha"], p["algorithm"]): p for p in pts}
    for a in plan_bench.ALPHAS:
        assert by[(a, "spt")]["feasible"], "alpha >= 1: the SPT meets every budget"
        best = by[(a, "best")]
        assert best["feasible"]
        tol = 1e-9 * by[(a, "spt")]["storage"]
        assert by[(a, "spt")]["storage"] + tol >= best["storage"] >= floor - tol
        if by[(a, "mst")]["feasible"]:
            assert best["storage"] <= by[(a, "mst")]["storage"] + tol
    assert (out / "plan.md").read_text().count("### Fig. 6(c)") == 1
    assert (out / f"plan-{name}.png").stat().st_size > 1000


def test_best_is_what_the_planner_returns(tmp_path, result):
    """The benchmark derives `best` from its pas-mt and pas-pt plans; it must agree
    with `algorithms.best` (checked on a fresh small repository)."""
    from bench import synthetic
    from pas.archive import budgets_for, evaluate, repo_graph
    from pas.archive.algorithms import plan
    from pas.repo import Repository
    ds = synthetic.generate(tmp_path / "data", 0.05)[0]
    plan_bench.archive_dataset(ds, tmp_path / "repo")
    c = plan_bench.curves(tmp_path / "repo", (1.2, 2.0))
    with Repository.open(tmp_path / "repo") as repo:
        rg = repo_graph.build(repo)
    for a in (1.2, 2.0):
        b = budgets_for(rg.graph, "independent", a)
        ev = evaluate(rg.graph, plan(rg.graph, "best", b, "independent", max_depth=rg.max_depth), b, "independent")
        mine = next(p for p in c["points"] if p["alpha"] == a and p["algorithm"] == "best")
        assert mine["storage"] == pytest.approx(ev.storage) and mine["feasible"] == ev.feasible


def test_table_v_rows(result):
    out, res = result
    rep = next(iter(res["repositories"].values()))
    rows = {r["plan"]: r for r in rep["table5"]["rows"]}
    assert set(rows) == {"spt", "mst", "best"}
    n = len(rows["spt"]["versions"])
    assert n == 6
    for r in rows.values():
        assert r["physical_bytes"] > 0 and r["alpha"] == 1.6
        assert len(r["versions"]) == n
        for v in r["versions"].values():
            assert v["modelled"] > 0 and v["budget"] > 0
            for p, _ in plan_bench.PRECISIONS:
                assert v[f"measured_{p}"] > 0
    assert rows["spt"]["physical_bytes"] >= rows["mst"]["physical_bytes"]
    assert rows["best"]["feasible_modelled"] and rows["spt"]["feasible_modelled"]
    assert {"physical_over_mst", "within_budget_measured", "met"} <= set(rep["done_when"])
    assert "Table V" in (out / "plan.md").read_text()
    assert res["_seconds"] < 60
