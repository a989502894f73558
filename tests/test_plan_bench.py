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
from pas.archive import repo_graph

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module", autouse=True)
def _calibrate_at_once():
    """Calibrations here time at once, without waiting for a quiet machine (tests stay fast)."""
    before, repo_graph.QUIET_SECONDS = repo_graph.QUIET_SECONDS, 0.0
    yield
    repo_graph.QUIET_SECONDS = before


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan-bench")
    t = time.perf_counter()
    res = plan_bench.run(root / "out", root / "work", scale=0.05, corpus=[], repeat=1, quick=True, quiet_seconds=0)
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
    plan_bench.archive_dataset(ds, tmp_path / "repo", quiet_seconds=0)
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
    assert set(rows) == {"spt", "mst", "best", "best-margin", "best-refined"}
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
    # PAS refined: every version timed in the first pass's layout, its factor recorded
    assert all(v["version_factor"] > 0 for v in rows["best-refined"]["versions"].values())
    assert rep["done_when"]["model_only"]["within_budget_tolerance"] == rows["best"]["versions_within_budget_tolerance"]
    # PAS planned 10% under every budget: by the model, each version's time within budget / 1.1
    assert all(v["modelled"] <= v["budget"] / 1.1 * (1 + 1e-9) for v in rows["best-margin"]["versions"].values())
    assert {"physical_over_mst", "within_budget_measured", "met"} <= set(rep["done_when"])
    assert "Table V" in (out / "plan.md").read_text()
    assert res["_seconds"] < 60


def test_measured_against_budgets_with_a_stated_tolerance(result):
    out, res = result
    rep = next(iter(res["repositories"].values()))
    t5, dw = rep["table5"], rep["done_when"]
    assert t5["tolerance"] == dw["tolerance"] == plan_bench.MEASURED_TOLERANCE
    for r in t5["rows"]:
        vs = r["versions"].values()
        assert r["versions_within_budget"] == sum(v["within_budget"] for v in vs)
        assert r["versions_within_budget_tolerance"] == sum(
            v["measured_full"] <= v["budget"] * (1 + plan_bench.MEASURED_TOLERANCE) for v in vs)
        assert r["versions_within_budget"] <= r["versions_within_budget_tolerance"] <= len(r["versions"])
        assert r["median_measured_over_modelled"] > 0
        # a version's measured time is the least of its repeats; the median is reported beside it
        assert all(0 < v["measured_full"] <= v["measured_full_median"] for v in vs)
        assert r["versions_within_run_budget_median"] <= r["versions_within_run_budget"]
    # Judged on run budgets: alpha x each version's modelled SPT time x the SPT copy's median
    # measured / modelled time in the run.
    spt = next(r for r in t5["rows"] if r["plan"] == "spt")["versions"]
    speed = sorted(v["measured_full"] / v["modelled"] for v in spt.values())
    assert min(speed) <= t5["run_speed"] <= max(speed)
    for r in t5["rows"]:
        for lab, v in r["versions"].items():
            assert v["run_budget"] == pytest.approx(t5["alpha"] * spt[lab]["modelled"] * t5["run_speed"])
        assert r["versions_within_run_budget"] == sum(v["measured_full"] <= v["run_budget"] for v in r["versions"].values())
    # Judged on measured budgets: alpha x the same version's measured SPT time, same run.
    spt_m = next(r for r in t5["rows"] if r["plan"] == "spt")["versions"]
    for r in t5["rows"]:
        for lab, v in r["versions"].items():
            assert v["measured_budget"] == pytest.approx(t5["alpha"] * spt_m[lab]["measured_full"])
    assert dw["within_measured_budget"] == sum(
        v["within_measured_budget"] for v in next(r for r in t5["rows"] if r["plan"] == plan_bench.PAS_ROW)["versions"].values())
    assert dw["met"] == (dw["storage_ok"] and dw["feasible_modelled"] and dw["within_measured_budget"] == dw["versions"])
    # The model calibrated again after the measurements: each copy's modelled time in their window.
    assert t5["cost_model_now"]["format"] == 2 and 0 <= dw["within_budget_now"] <= dw["versions"]
    assert all(v["modelled_now"] > 0 and v["budget_now"] > 0 for r in t5["rows"] for v in r["versions"].values())
    # The budgets are of whole retrievals: alpha x the SPT's modelled cost, overhead included.
    spt = next(r for r in t5["rows"] if r["plan"] == "spt")
    for v in spt["versions"].values():
        assert v["budget"] == pytest.approx(1.6 * v["modelled"], rel=1e-6)
    assert "within its run budget" in (out / "plan.md").read_text() and "within it +10%" in (out / "plan.md").read_text()


def test_corpus_repack_on_a_small_corpus(tmp_path):
    """--corpus-repack on two small lineages: one repository, `pas repack` by the CLI
    under /usr/bin/time, every version bit-exact against its source, verify clean."""
    from bench import synthetic
    a = synthetic.generate(tmp_path / "data-a", 0.05)[0]
    b = synthetic.generate(tmp_path / "data-b", 0.05, seed=1)[0]
    b.name = "other"
    t = time.perf_counter()
    res = plan_bench.corpus_repack([a, b], tmp_path / "work", tmp_path / "out", repeat=1, quiet_seconds=0)
    assert res["ok"], res
    n = len(a.versions) + len(b.versions)
    assert res["bit_exact"] == {"versions": n, "tensors": res["bit_exact"]["tensors"], "bit_exact": True,
                                "mismatches": []}
    assert res["repack"]["exit_code"] == 0 and res["verify"]["exit_code"] == 0
    assert res["repack"]["result"]["feasible"]["after"]
    if "peak_rss_bytes" in res["repack"]:
        assert res["repack"]["peak_rss_bytes"] > 10 << 20
    assert len(res["retrieve_before"]) == len(res["retrieve_after"]) == n
    assert res["physical_before"] > 0 and res["physical_after"] > 0
    md = (tmp_path / "out" / "corpus-repack.md").read_text()
    assert "**OK.**" in md and "other/" in md
    assert not (tmp_path / "work" / "corpus-all").exists()
    assert time.perf_counter() - t < 60


def test_bit_exact_check_sees_a_difference(tmp_path):
    from bench import synthetic
    from pas.repo import Repository
    ds = synthetic.generate(tmp_path / "data", 0.05)[0]
    v0, v1 = ds.versions[0], ds.versions[1]
    with Repository.init(tmp_path / "repo") as repo:
        vid = repo.archive(str(v0.path), name="a").version_id
        assert plan_bench.check_bit_exact(repo, {"a": vid}, {"a": v0.path})["bit_exact"]
        res = plan_bench.check_bit_exact(repo, {"a": vid}, {"a": v1.path})   # another version's file
    assert not res["bit_exact"] and res["mismatches"]
