"""Storage planning (pas/archive, docs/planning.md): the paper's toy example
(Fig. 5), seeded random graphs against the exact solver, the graph JSON
format and its errors, and `pas plan`.

Several trees reach each optimum of the toy example, so costs and budgets are
checked, never edge lists."""
from __future__ import annotations

import itertools
import json
import math
import random
import subprocess
import sys

import pytest
from test_cli import _env, parallel, pas, pas_json

from pas.archive import (
    ALGORITHMS,
    MODELS,
    GraphError,
    PlanError,
    StorageGraph,
    budgets_for,
    evaluate,
    graph,
    plan,
    recreation_costs,
)
from pas.archive.algorithms import best, pas_mt, pas_pt
from pas.archive.exact import MILP_MAX_MATRICES, ExactTooLarge, exact
from pas.archive.plan import Plan, within
from pas.archive.synthetic import random_graph
from pas.errors import BadInput

TOY_EDGES = [("v0", "m1", 2, 1), ("v0", "m2", 8, 2), ("v0", "m3", 2, 1), ("v0", "m4", 8, 2), ("v0", "m5", 8, 2),
             ("m1", "m3", 1, 0.5), ("m2", "m4", 4, 1), ("m2", "m5", 4, 1), ("m4", "m5", 4, 1)]
TOY_SNAPSHOTS = {"s1": ["m1", "m2"], "s2": ["m3", "m4", "m5"]}
TOY_BUDGETS = {"s1": 3, "s2": 6}
NONE = {"s1": math.inf, "s2": math.inf}


def toy(budgets=None) -> StorageGraph:
    return graph("v0", TOY_EDGES, TOY_SNAPSHOTS, budgets)


def all_trees(g: StorageGraph):
    """Every spanning arborescence, by brute force (independent of the planners)."""
    for choice in itertools.product(*(g.in_arcs[m] for m in g.matrices)):
        parents = dict(zip(g.matrices, choice))
        try:
            recreation_costs(g, parents)
        except PlanError:
            continue
        yield parents


def assert_tree(g: StorageGraph, p: Plan):
    assert sorted(p.parents) == sorted(g.matrices)
    r = recreation_costs(g, p.parents)          # raises on a cycle or a foreign arc
    assert all(v >= 0 for v in r.values())


# ---------------------------------------------------------------- toy example (Fig. 5)
def test_toy_brute_force_matches_the_paper():
    g = toy()
    rows = []
    for parents in all_trees(g):
        ev = evaluate(g, Plan("tree", parents), TOY_BUDGETS, "independent")
        rows.append((ev.storage, ev.feasible, ev.recreation))
    assert min(s for s, _, _ in rows) == 19
    assert sum(s == 19 for s, _, _ in rows) == 18
    assert min(s for s, ok, _ in rows if ok) == 24
    assert sum(s == 24 and ok for s, ok, _ in rows) == 4


@pytest.mark.parametrize("model", MODELS)
def test_toy_unconstrained(model):
    g = toy()
    for name in ALGORITHMS:
        p = plan(g, name, NONE, model)
        assert_tree(g, p)
        ev = evaluate(g, p, NONE, model)
        assert ev.feasible
        if name != "spt":
            assert ev.storage == 19, name       # without budgets every planner reaches the MST's storage
    ev = evaluate(g, plan(g, "mst"), NONE, "independent")
    assert 3 <= ev.recreation["s1"] <= 5.5 and 6 <= ev.recreation["s2"] <= 8.5
    assert evaluate(g, plan(g, "spt"), NONE, model).storage == 28


def test_toy_budgets_3_6_independent():
    g = toy(TOY_BUDGETS)
    b = budgets_for(g, "independent")
    assert b == {"s1": 3, "s2": 6}
    results = {name: evaluate(g, plan(g, name, b, "independent"), b, "independent") for name in ALGORITHMS}
    assert not results["mst"].feasible and results["mst"].storage == 19
    for name in ("spt", "last", "pas-mt", "pas-pt", "best", "exact"):
        ev = results[name]
        assert ev.feasible, name
        assert ev.recreation["s1"] <= 3 and ev.recreation["s2"] <= 6, name
        assert ev.storage >= 24, name
    assert results["exact"].storage == 24
    assert results["pas-mt"].storage == 24 and results["best"].storage == 24
    for method in ("exhaustive", "milp"):
        assert evaluate(g, exact(g, b, "independent", method=method), b, "independent").storage == 24
    # plan() defaults to the graph's own budgets
    assert evaluate(g, plan(g, "exact"), b, "independent").storage == 24


def test_toy_budgets_parallel_are_loose():
    g = toy(TOY_BUDGETS)
    for name in ("pas-mt", "pas-pt", "best", "exact", "last"):
        ev = evaluate(g, plan(g, name, TOY_BUDGETS, "parallel"), TOY_BUDGETS, "parallel")
        assert ev.feasible and ev.storage == 19, name
    # A tight parallel budget: every member of s2 within 2 (so m3, m4, m5 close to the root).
    tight = {"s1": 2, "s2": 2}
    want = min(evaluate(g, Plan("t", t), tight, "parallel").storage for t in all_trees(g)
               if evaluate(g, Plan("t", t), tight, "parallel").feasible)
    assert evaluate(g, plan(g, "exact", tight, "parallel"), tight, "parallel").storage == want
    for name in ("pas-mt", "pas-pt", "best"):
        ev = evaluate(g, plan(g, name, tight, "parallel"), tight, "parallel")
        assert ev.feasible and ev.storage >= want, name


def test_alpha_budgets_and_infeasible():
    g = toy()
    spt_costs = evaluate(g, plan(g, "spt"), NONE, "independent").recreation
    b = budgets_for(g, "independent", alpha=1.5)
    assert b == pytest.approx({s: 1.5 * c for s, c in spt_costs.items()})
    # alpha < 1: nothing meets the budgets; the planners say so instead of failing.
    low = budgets_for(g, "independent", alpha=0.5)
    for name in ("best", "exact", "pas-mt", "pas-pt", "last"):
        p = plan(g, name, low, "independent")
        assert_tree(g, p)
        assert not evaluate(g, p, low, "independent").feasible
    for bad in (0, -1, math.nan, math.inf):
        with pytest.raises(GraphError):
            budgets_for(g, "independent", alpha=bad)


# ---------------------------------------------------------------- random graphs
def _cases(count=16, seed0=1000):
    for seed in range(seed0, seed0 + count):
        rng = random.Random(seed)
        yield seed, random_graph(seed, rng.randint(5, 9), rng.randint(2, 4), directed=seed % 3 == 0,
                                 whole=1.0 if seed % 4 else 0.7), rng.uniform(1.1, 2.0)


@pytest.mark.parametrize("model", MODELS)
def test_random_graphs_against_exact(model):
    for seed, g, alpha in _cases():
        b = budgets_for(g, model, alpha)
        opt = evaluate(g, exact(g, b, model), b, model)
        assert opt.feasible, seed
        floor = evaluate(g, exact(g, {s: math.inf for s in b}, model), b, model).storage
        evs = {}
        for name in ALGORITHMS:
            p = plan(g, name, b, model)
            assert_tree(g, p)
            evs[name] = evaluate(g, p, b, model)
        for name in ("pas-mt", "pas-pt", "best", "last", "spt"):     # the SPT is feasible (alpha >= 1)
            assert evs[name].feasible, (seed, name)
        for name, ev in evs.items():
            if ev.feasible:
                assert opt.storage <= ev.storage + 1e-9, (seed, name)
        assert evs["mst"].storage == pytest.approx(floor), seed         # least storage, no budgets
        assert all(ev.storage >= floor - 1e-9 for ev in evs.values()), seed
        assert evs["best"].storage == min(evs["pas-mt"].storage, evs["pas-pt"].storage), seed
        # The paper's steps alone (no refinement) are feasible too, never better than exact.
        for fn in (pas_mt, pas_pt, best):
            ev = evaluate(g, fn(g, b, model, refine=False), b, model)
            assert ev.feasible and ev.storage >= opt.storage - 1e-9, (seed, fn.__name__)


def test_exact_methods_agree():
    for seed, g, alpha in _cases(10, 2000):
        for model in MODELS:
            b = budgets_for(g, model, alpha)
            costs = [evaluate(g, exact(g, b, model, method=m), b, model).storage for m in ("exhaustive", "milp")]
            assert costs[0] == pytest.approx(costs[1]), (seed, model)


def test_directed_mst_is_the_minimum_arborescence():
    for seed in range(30, 42):
        g = random_graph(seed, 6, 2, directed=True, whole=0.6)
        brute = min(sum(a.storage for a in t.values()) for t in all_trees(g))
        assert plan(g, "mst").storage == pytest.approx(brute), seed


def test_parallel_edges_pick_the_tier():
    # m1 whole on a slow cheap tier or a fast dear one; the budget decides.
    g = graph("v0", [("v0", "m1", 1, 10), ("v0", "m1", 5, 1), ("m1", "m2", 1, 1)], {"s": ["m1", "m2"]})
    for budget, storage in ((math.inf, 2), (5, 6)):
        b = {"s": budget}
        for name in ("exact", "best"):
            ev = evaluate(g, plan(g, name, b, "independent"), b, "independent")
            assert ev.feasible and ev.storage == storage, (budget, name)


def test_repair_when_no_single_swap_helps():
    # v's fast path is v0 -> u -> x -> v, but u sits slow under q, so moving x
    # under u alone would not help, and u serves no snapshot: the paper's swap
    # rule stops here; the repair must graft v's shortest path.
    g = graph("v0", [("v0", "q", 1, 1), ("q", "u", 1, 199), ("v0", "u", 1000, 1), ("v0", "x", 1, 100),
                     ("u", "x", 5, 1), ("x", "v", 1, 1)], {"s": ["v"]}, {"s": 3}, directed=True)
    assert evaluate(g, plan(g, "mst"), g.budgets, "independent").recreation["s"] == 101
    for model in MODELS:
        for fn in (pas_mt, pas_pt):
            for refine in (False, True):
                ev = evaluate(g, fn(g, g.budgets, model, refine=refine), g.budgets, model)
                assert ev.feasible and ev.storage == 1007, (model, fn.__name__, refine)


def test_zero_costs_make_no_cycles():
    g = graph("v0", [("v0", "a", 1, 0), ("a", "b", 0, 0), ("b", "c", 0, 0), ("v0", "c", 5, 0)],
              {"s": ["a", "b", "c"]}, {"s": 0})
    for name in ALGORITHMS:
        p = plan(g, name)
        assert_tree(g, p)
        assert evaluate(g, p, g.budgets, "independent").storage == 1, name


def test_exact_too_large():
    n = MILP_MAX_MATRICES + 1
    edges = [("v0", f"m{i}", 10, 1) for i in range(n)] + [(f"m{i}", f"m{i + 1}", 1, 1) for i in range(n - 1)]
    g = graph("v0", edges, {"s": [f"m{i}" for i in range(n)]})
    with pytest.raises(ExactTooLarge) as err:
        plan(g, "exact")
    assert isinstance(err.value, BadInput) and "at most" in str(err.value)
    ev = evaluate(g, plan(g, "best"), {"s": math.inf}, "independent")   # the heuristics still answer
    assert ev.storage == 10 + (n - 1)


def test_plan_errors():
    g = toy()
    with pytest.raises(GraphError):
        plan(g, "nope")
    with pytest.raises(GraphError):
        plan(g, "best", None, "serial")
    bad = dict(plan(g, "mst").parents)
    bad["m1"] = next(a for a in g.arcs if a.dst == "m1" and a.src == "m3")
    bad["m3"] = next(a for a in g.arcs if a.dst == "m3" and a.src == "m1")
    with pytest.raises(PlanError):
        recreation_costs(g, bad)
    del bad["m1"]
    with pytest.raises(PlanError):
        recreation_costs(g, bad)


def test_within_tolerates_rounding_only():
    assert within(0.1 + 0.2, 0.3) and within(6, 6) and not within(6.001, 6) and within(1, math.inf)


# ---------------------------------------------------------------- JSON format
def test_json_round_trip(tmp_path):
    g = toy(TOY_BUDGETS)
    again = StorageGraph.loads(g.dumps())
    assert again.edges == g.edges and again.snapshots == g.snapshots and again.budgets == g.budgets
    assert again.root == "v0" and again.matrices == ("m1", "m2", "m3", "m4", "m5")
    path = tmp_path / "g.json"
    g.save(path)
    assert StorageGraph.load(path).to_json() == g.to_json()
    d = graph("v0", [("v0", "a", 1, 1), ("a", "b", 1, 1)], {"s": ["b"]}, directed=True)
    back = StorageGraph.loads(d.dumps())
    assert back.directed and all(e.directed for e in back.edges) and len(back.arcs) == 2
    # Two-way edges give both arcs; none into the root.
    assert len(g.arcs) == 5 + 2 * 4
    # A top-level "directed" is every edge's default; an edge may override it.
    mixed = StorageGraph.from_json({"root": "r", "directed": True, "edges": [
        {"from": "r", "to": "a", "storage": 1, "recreation": 1},
        {"from": "b", "to": "a", "storage": 1, "recreation": 1, "directed": False}], "snapshots": {}})
    assert [e.directed for e in mixed.edges] == [True, False] and mixed.matrices == ("a", "b")


ERROR_CASES = {
    "not json": "{",
    "not an object": "[1, 2]",
    "no edges": '{"root": "v0", "edges": []}',
    "edges not a list": '{"root": "v0", "edges": {}}',
    "edge lacks cost": '{"edges": [{"from": "v0", "to": "a", "storage": 1}]}',
    "negative storage": '{"edges": [{"from": "v0", "to": "a", "storage": -1, "recreation": 1}]}',
    "negative recreation": '{"edges": [{"from": "v0", "to": "a", "storage": 1, "recreation": -0.5}]}',
    "cost not a number": '{"edges": [{"from": "v0", "to": "a", "storage": "1", "recreation": 1}]}',
    "infinite cost": '{"edges": [{"from": "v0", "to": "a", "storage": 1e999, "recreation": 1}]}',
    "self loop": '{"edges": [{"from": "a", "to": "a", "storage": 1, "recreation": 1}]}',
    "unknown key": '{"edges": [{"from": "v0", "to": "a", "storage": 1, "recreation": 1}], "budget": {}}',
    "unknown vertex in snapshot": '{"edges": [{"from": "v0", "to": "a", "storage": 1, "recreation": 1}], '
                                  '"snapshots": {"s": ["a", "zz"]}}',
    "root in snapshot": '{"edges": [{"from": "v0", "to": "a", "storage": 1, "recreation": 1}], '
                        '"snapshots": {"s": ["v0"]}}',
    "snapshot is a string": '{"edges": [{"from": "v0", "to": "a", "storage": 1, "recreation": 1}], '
                            '"snapshots": {"s": "a"}}',
    "budget of unknown snapshot": '{"edges": [{"from": "v0", "to": "a", "storage": 1, "recreation": 1}], '
                                  '"snapshots": {"s": ["a"]}, "budgets": {"t": 1}}',
    "negative budget": '{"edges": [{"from": "v0", "to": "a", "storage": 1, "recreation": 1}], '
                       '"snapshots": {"s": ["a"]}, "budgets": {"s": -1}}',
    "unreachable (no edge from the root side)": '{"edges": [{"from": "v0", "to": "a", "storage": 1, "recreation": 1},'
                                                '{"from": "b", "to": "c", "storage": 1, "recreation": 1}]}',
    "unreachable (directed the wrong way)": '{"directed": true, "edges": [{"from": "a", "to": "v0", "storage": 1, '
                                            '"recreation": 1}]}',
    "directed not a flag": '{"directed": 1, "edges": [{"from": "v0", "to": "a", "storage": 1, "recreation": 1}]}',
    "overhead of unknown snapshot": '{"edges": [{"from": "v0", "to": "a", "storage": 1, "recreation": 1}], '
                                    '"snapshots": {"s": ["a"]}, "overheads": {"t": 1}}',
    "negative overhead": '{"edges": [{"from": "v0", "to": "a", "storage": 1, "recreation": 1}], '
                         '"snapshots": {"s": ["a"]}, "overheads": {"s": -0.5}}',
    "overhead not a number": '{"edges": [{"from": "v0", "to": "a", "storage": 1, "recreation": 1}], '
                             '"snapshots": {"s": ["a"]}, "overheads": {"s": "1"}}',
    "overheads not an object": '{"edges": [{"from": "v0", "to": "a", "storage": 1, "recreation": 1}], '
                               '"snapshots": {"s": ["a"]}, "overheads": [1]}',
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_bad_graphs_raise_typed_errors(case):
    with pytest.raises(GraphError) as err:
        StorageGraph.loads(ERROR_CASES[case])
    assert isinstance(err.value, BadInput) and err.value.exit_code == 4


# ---------------------------------------------------------------- the CLI
def test_cli_plan(tmp_path):
    path = tmp_path / "toy.json"
    toy(TOY_BUDGETS).save(path)
    human, info, par, exact_alpha = parallel(
        lambda: pas("plan", "--graph", path).stdout,
        lambda: pas_json("plan", "--graph", path, "--algorithm", "exact"),
        lambda: pas_json("plan", "-g", path, "--recreation", "parallel", "--algorithm", "pas-pt"),
        lambda: pas_json("plan", "-g", path, "-a", "exact", "--budget", "1"))
    assert "total storage 24" in human and "feasible: yes" in human and human.count(": whole") >= 1
    assert info["storage"] == 24 and info["feasible"] is True
    assert info["recreation"] == {"s1": 3, "s2": 6} and info["budgets"] == {"s1": 3, "s2": 6}
    assert sorted(e["to"] for e in info["plan"]) == ["m1", "m2", "m3", "m4", "m5"]
    assert {(e["from"], e["to"]) for e in info["plan"]} <= {(a, b) for a, b, _, _ in TOY_EDGES} | \
        {(b, a) for a, b, _, _ in TOY_EDGES}
    assert par["storage"] == 19 and par["feasible"] is True and par["recreation_model"] == "parallel"
    assert exact_alpha["storage"] == 28 and exact_alpha["recreation"] == {"s1": 3, "s2": 5}   # alpha 1: the SPT


def test_cli_plan_errors(tmp_path):
    good, bad = tmp_path / "g.json", tmp_path / "bad.json"
    toy().save(good)
    bad.write_text('{"edges": [{"from": "v0", "to": "a", "storage": -1, "recreation": 1}]}')
    results = parallel(
        lambda: pas("plan", cwd=tmp_path, expect=10).stderr,    # no --graph: plans the repository, and there is none
        lambda: pas("plan", "-g", bad, expect=4).stderr,
        lambda: pas("plan", "-g", tmp_path / "missing.json", expect=3).stderr,
        lambda: pas("plan", "-g", good, "-a", "fastest", expect=4).stderr,
        lambda: pas("plan", "-g", good, "-r", "serial", expect=4).stderr,
        lambda: pas("plan", "-g", good, "--budget", "-2", expect=4).stderr)
    assert "not in a pas repository" in results[0]
    assert "storage cost must be" in results[1]
    assert "fastest" in results[3] and "serial" in results[4]
    # Infeasible budgets are an answer, not an error.
    info = pas_json("plan", "-g", good, "--budget", "0.5")
    assert info["feasible"] is False


def test_cli_start_does_not_import_the_planner():
    code = "import sys, pas.cli; bad = [m for m in ('scipy', 'pas.archive') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=True)
    assert out.stdout.strip() == "[]"


def test_cli_json_is_plain_json(tmp_path):
    path = tmp_path / "g.json"
    toy().save(path)
    info = pas_json("plan", "-g", path)          # no budgets: reported as null, not Infinity
    assert info["budgets"] == {"s1": None, "s2": None}
    json.dumps(info, allow_nan=False)


# ---------------------------------------------------------------- depth bound (repack)
def _chain_graph(n: int = 8) -> StorageGraph:
    """m1 - m2 - ... - mn: deltas far cheaper than whole, so the MST is one chain n - 1 deltas deep."""
    edges = [("v0", f"m{i}", 10, 1) for i in range(1, n + 1)]
    edges += [(f"m{i}", f"m{i + 1}", 1 + 0.01 * i, 1.5) for i in range(1, n)]
    return graph("v0", edges, {f"s{i}": [f"m{i}"] for i in range(1, n + 1)})


def test_depth_bound_holds_for_every_planner():
    from pas.archive.algorithms import depths
    for seed in range(25):
        g = random_graph(seed, matrices=9, snapshots=3, density=0.5)
        for model in MODELS:
            budgets = budgets_for(g, model, 1.5)
            for name in ("mst", "spt", "last", "pas-mt", "pas-pt", "best"):
                for bound in (0, 1, 2):
                    p = plan(g, name, budgets, model, max_depth=bound)
                    assert_tree(g, p)
                    assert max(depths(g, p.parents).values()) <= bound, (seed, model, name, bound)
                # a bound of 0: every matrix whole (each has a root edge here)
            assert all(a.src == "v0" for a in plan(g, "best", budgets, model, max_depth=0).parents.values())


def test_depth_bound_bites_and_stays_feasible():
    from pas.archive.algorithms import depths
    g = _chain_graph(8)
    free = plan(g, "mst", NONE)
    assert max(depths(g, free.parents).values()) == 7           # the bound below is not vacuous
    for model in MODELS:
        budgets = budgets_for(g, model, 3.0)
        for name in ("pas-mt", "pas-pt", "best"):
            for bound in (1, 2, 3):
                p = plan(g, name, budgets, model, max_depth=bound)
                assert max(depths(g, p.parents).values()) <= bound
                assert evaluate(g, p, budgets, model).feasible, (model, name, bound)
        # unbounded budgets: least storage under the bound = the chain cut every bound + 1 levels
        p = plan(g, "best", NONE, model, max_depth=2)
        wholes = sum(a.src == "v0" for a in p.parents.values())
        assert wholes == 3 and max(depths(g, p.parents).values()) == 2


def test_cut_depth_is_the_cheapest_cut():
    """cut_depth against brute force: every set of matrices to store whole, the cheapest valid one."""
    from pas.archive.algorithms import cut_depth, depths
    for seed in range(30):
        g = random_graph(seed, matrices=7, snapshots=2, density=0.6)
        tree = plan(g, "mst", NONE).parents
        for bound in (0, 1, 2):
            cut = cut_depth(g, tree, bound)
            assert max(depths(g, cut).values()) <= bound
            best_cost = math.inf
            movable = [m for m, a in tree.items() if a.src != "v0"]
            for k in range(len(movable) + 1):
                for subset in itertools.combinations(movable, k):
                    cand = dict(tree)
                    for m in subset:
                        cand[m] = min((a for a in g.in_arcs[m] if a.src == "v0"),
                                      key=lambda a: (a.storage, a.recreation))
                    if max(depths(g, cand).values()) <= bound:
                        best_cost = min(best_cost, math.fsum(a.storage for a in cand.values()))
            assert math.isclose(math.fsum(a.storage for a in cut.values()), best_cost, rel_tol=1e-12), (seed, bound)


def test_depth_bound_errors():
    g = graph("v0", [("v0", "a", 5, 1), ("a", "b", 1, 1), ("b", "c", 1, 1)], {"s": ["c"]})
    with pytest.raises(GraphError, match="within 1 deltas"):
        plan(g, "mst", {"s": math.inf}, max_depth=1)    # b and c cannot be stored whole
    assert plan(g, "mst", {"s": math.inf}, max_depth=2).parents["c"].src == "b"
    for bad in (-1, 1.5, True):
        with pytest.raises(GraphError):
            plan(toy(), "best", NONE, max_depth=bad)


def test_cli_plan_max_depth(tmp_path):
    f = tmp_path / "chain.json"
    _chain_graph(6).save(f)
    out = pas_json("plan", "--graph", str(f), "--max-depth", "1")
    parent = {e["to"]: e["from"] for e in out["plan"]}
    for src in parent.values():
        assert src == "v0" or parent[src] == "v0"
    pas("plan", "--graph", str(f), "--max-depth", "-1", expect=4)


def test_edmonds_contracts_without_recursion():
    """600 two-cycles contract one after another: a recursive Chu-Liu/Edmonds
    needs 600 nested calls; the iterative one none (graphs of thousands of
    matrices overflowed Python's recursion limit)."""
    import sys

    from pas.archive.algorithms import _edmonds
    pairs = 600
    n = 1 + 2 * pairs
    arcs = []
    for p in range(pairs):
        a, b = 1 + 2 * p, 2 + 2 * p
        arcs += [(a, b, (1.0, 1.0)), (b, a, (1.0, 1.0)), (0, a, (10.0, 1.0)), (0, b, (11.0, 1.0))]
        if p:
            arcs.append((a - 2, a, (5.0, 1.0)))   # chains the pairs: each contraction leaves the next
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        chosen = _edmonds(n, 0, arcs)
    finally:
        sys.setrecursionlimit(old)
    heads = sorted(arcs[i][1] for i in chosen)
    assert heads == list(range(1, n))   # one arc into every vertex but the root
    parent = {arcs[i][1]: arcs[i][0] for i in chosen}
    for v in range(1, n):               # and every vertex reaches the root
        seen = set()
        while v != 0:
            assert v not in seen
            seen.add(v)
            v = parent[v]
    # optimum: root -> 1 (10), then 1 -> 2 inside each pair (1) and 2p-1 -> 2p+1 across (5)
    assert sum(arcs[i][2][0] for i in chosen) == 10 + pairs * 1 + (pairs - 1) * 5


# ---------------------------------------------------------------- snapshot overheads
def _with_overheads(g: StorageGraph, seed: int) -> StorageGraph:
    rng = random.Random(seed)
    return StorageGraph(g.root, g.edges, g.snapshots, g.budgets,
                        {s: rng.uniform(0, 3) for s in list(g.snapshots)[::2] or g.snapshots})


def test_overheads_json_costs_and_budgets():
    g = toy()
    go = StorageGraph.loads(json.dumps(dict(g.to_json(), overheads={"s1": 1.5})))
    assert go.overheads == {"s1": 1.5} and StorageGraph.loads(go.dumps()).overheads == {"s1": 1.5}
    assert go.with_budgets({"s1": 9}).overheads == {"s1": 1.5}
    assert go.without_overheads().overheads == {} and go.without_overheads().arcs == go.arcs
    assert "overheads" not in g.to_json()
    for model in MODELS:
        p = plan(g, "mst", None, model)
        a, b = evaluate(g, p, {}, model), evaluate(go, p, {}, model)
        assert b.recreation["s1"] == pytest.approx(a.recreation["s1"] + 1.5)
        assert b.recreation["s2"] == a.recreation["s2"]
        # A budget factor covers the overhead too: alpha x (overhead + the SPT's cost).
        assert budgets_for(go, model, 2.0)["s1"] == pytest.approx(2 * (1.5 + budgets_for(g, model, 1.0)["s1"]))
    with pytest.raises(GraphError, match="unknown snapshot"):
        graph("v0", TOY_EDGES, TOY_SNAPSHOTS, overheads={"s9": 1})
    with pytest.raises(GraphError, match="finite"):
        graph("v0", TOY_EDGES, TOY_SNAPSHOTS, overheads={"s1": math.inf})


@pytest.mark.parametrize("model", MODELS)
def test_planners_take_overheads_off_the_budgets(model):
    """A snapshot's overhead is fixed: every planner plans the same as on the graph
    without overheads with each budget less its overhead, and the plan is feasible
    on the graph with them (evaluate adds the overheads back)."""
    for seed, g0, alpha in _cases(8, 3000):
        g = _with_overheads(g0, seed)
        b = budgets_for(g, model, alpha)
        less = {s: max(0.0, x - g.overheads.get(s, 0.0)) for s, x in b.items()}
        for name in ALGORITHMS:
            p, q = plan(g, name, b, model, max_depth=3), plan(g0, name, less, model, max_depth=3)
            assert_tree(g, p)
            assert p.storage == pytest.approx(q.storage), (seed, name)
            if name not in ("mst",):
                assert evaluate(g, p, b, model).feasible, (seed, name)
        # Overheads loosen the decoding budgets (alpha x overhead > overhead): the optimum never
        # needs more storage (heuristics are not monotone in the budgets; the exact solver is).
        plain = evaluate(g0, exact(g0, budgets_for(g0, model, alpha), model), {}, model).storage
        assert evaluate(g, exact(g, b, model), {}, model).storage <= plain + 1e-9, seed
    # A budget below the overhead cannot be met; the planners still return a tree.
    g = graph("v0", TOY_EDGES, TOY_SNAPSHOTS, overheads={"s1": 5.0})
    ev = evaluate(g, plan(g, "best", {"s1": 4.0, "s2": 6.0}, model), {"s1": 4.0, "s2": 6.0}, model)
    assert not ev.feasible and ev.recreation["s1"] >= 5.0
