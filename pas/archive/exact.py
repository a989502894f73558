"""The optimal plan (Problem 1 is NP-hard, so only for small graphs).

Tiny graphs are searched exhaustively (every choice of parent arc per
matrix, pruned by storage); larger ones go to a mixed-integer program solved
by scipy's HiGHS (`scipy.optimize.milp`), a multi-commodity flow
formulation (one unit of flow from the root to each matrix, along tree arcs
only), much tighter than big-M path constraints:

    minimise   sum_a c_s(a) x_a                       x_a in {0, 1}: arc a in the tree
    subject to sum_{a into v} x_a = 1                 one parent per matrix
               flow conservation of f^m               f^m_a in [0, 1]: arc a on m's path
               f^m_a <= x_a
               sum_{m in s} sum_a c_r(a) f^m_a <= budget_s     independent model
               sum_a c_r(a) f^m_a <= budget_s for m in s       parallel model

With x a tree, each f^m is forced onto m's unique tree path, so
sum_a c_r(a) f^m_a is exactly m's recreation cost.
"""
from __future__ import annotations

import math

from .graph import Arc, GraphError, StorageGraph
from .plan import Plan, PlanError, check_model, recreation_costs, snapshot_costs, within

EXHAUSTIVE_LIMIT = 2_000      # parent combinations searched by brute force (the MILP is faster beyond)
MILP_MAX_MATRICES = 120       # the program has matrices x arcs flow variables: beyond this, hopeless
MILP_TIME_LIMIT = 60.0        # seconds


class ExactTooLarge(GraphError):
    """The graph is beyond the exact solver's reach."""


def exact(graph: StorageGraph, budgets, model: str = "independent", method: str = "auto",
          time_limit: float = MILP_TIME_LIMIT) -> Plan:
    """The least-storage spanning tree meeting every budget.

    If no tree meets them (the SPT, fastest for every matrix, does not),
    the SPT is returned: no plan can do better on recreation."""
    check_model(model)
    from .algorithms import _decode_budgets, spt
    graph, budgets = _decode_budgets(graph, budgets)     # snapshot overheads: fixed, taken off the budgets
    fastest = spt(graph)
    r = recreation_costs(graph, fastest.parents)
    if not all(within(c, budgets.get(s, math.inf)) for s, c in snapshot_costs(graph, r, model).items()):
        return Plan("exact (infeasible: spt)", fastest.parents)
    combos = math.prod(len(graph.in_arcs[m]) for m in graph.matrices)
    if method == "auto":
        method = "exhaustive" if combos <= EXHAUSTIVE_LIMIT else "milp"
    if method == "exhaustive":
        if combos > EXHAUSTIVE_LIMIT * 20:
            raise ExactTooLarge(f"{combos:.3g} parent combinations: too many for an exhaustive search")
        return Plan("exact", _exhaustive(graph, budgets, model))
    if method == "milp":
        return Plan("exact", _milp(graph, budgets, model, time_limit))
    raise GraphError(f"unknown exact method {method!r} (auto, exhaustive, milp)")


def _exhaustive(graph: StorageGraph, budgets, model: str) -> dict[str, Arc]:
    # Cheapest choices first, so good trees are found early and prune the rest.
    order = sorted(graph.matrices, key=lambda m: len(graph.in_arcs[m]))
    options = [sorted(graph.in_arcs[m], key=lambda a: (a.storage, a.recreation)) for m in order]
    floor = [0.0] * (len(order) + 1)          # least storage the remaining matrices can add
    for i in range(len(order) - 1, -1, -1):
        floor[i] = floor[i + 1] + options[i][0].storage
    best: list = [math.inf, None]
    chosen: dict[str, Arc] = {}

    def walk(i: int, storage: float) -> None:
        if storage + floor[i] >= best[0] - 1e-12:
            return
        if i == len(order):
            try:
                r = recreation_costs(graph, chosen)
            except PlanError:                 # a cycle: not a tree
                return
            costs = snapshot_costs(graph, r, model)
            if all(within(c, budgets.get(s, math.inf)) for s, c in costs.items()):
                best[0], best[1] = storage, dict(chosen)
            return
        for a in options[i]:
            chosen[order[i]] = a
            walk(i + 1, storage + a.storage)
        del chosen[order[i]]

    walk(0, 0.0)
    assert best[1] is not None, "the SPT is feasible, so some tree is"
    return best[1]


def _milp(graph: StorageGraph, budgets, model: str, time_limit: float) -> dict[str, Arc]:
    n = len(graph.matrices)
    if n > MILP_MAX_MATRICES:
        raise ExactTooLarge(f"{n} matrices: the exact solver handles at most {MILP_MAX_MATRICES}; "
                            f"use best, pas-mt or pas-pt")
    import numpy as np
    try:
        from scipy.optimize import Bounds, LinearConstraint, milp
        from scipy.sparse import coo_matrix
    except ImportError:
        raise ExactTooLarge(f"{n} matrices are beyond exhaustive search, and the integer program "
                            "needs scipy: pip install 'pas[plan]' (or use best, pas-mt or pas-pt)") from None

    arcs = graph.arcs
    na = len(arcs)
    mat = {m: i for i, m in enumerate(graph.matrices)}
    F = lambda k, i: na * (1 + k) + i
    nvar = na * (1 + n)
    rows, cols, vals, lo, hi = [], [], [], [], []

    def row(coefs, lower, upper):
        k = len(lo)
        for j, v in coefs:
            rows.append(k)
            cols.append(j)
            vals.append(v)
        lo.append(lower)
        hi.append(upper)

    into = {m: [i for i, a in enumerate(arcs) if a.dst == m] for m in graph.matrices}
    out = {m: [i for i, a in enumerate(arcs) if a.src == m] for m in graph.matrices}
    for m in graph.matrices:
        row([(i, 1.0) for i in into[m]], 1.0, 1.0)
    for k, m in enumerate(graph.matrices):
        for v in graph.matrices:
            rhs = 1.0 if v == m else 0.0
            row([(F(k, i), 1.0) for i in into[v]] + [(F(k, i), -1.0) for i in out[v] if v != m], rhs, rhs)
        for i in range(na):
            row([(F(k, i), 1.0), (i, -1.0)], -math.inf, 0.0)
    upper = np.ones(nvar)
    for k, m in enumerate(graph.matrices):
        for i in out[m]:
            upper[F(k, i)] = 0.0            # commodity m ends at m

    def cost_of(m):
        k = mat[m]
        return [(F(k, i), a.recreation) for i, a in enumerate(arcs) if a.recreation]

    for s, ms in graph.snapshots.items():
        b = budgets.get(s, math.inf)
        if math.isinf(b):
            continue
        if model == "independent":
            row([c for m in ms for c in cost_of(m)], -math.inf, b)
        else:
            for m in ms:
                row(cost_of(m), -math.inf, b)
    A = coo_matrix((vals, (rows, cols)), shape=(len(lo), nvar)).tocsr()
    integrality = np.zeros(nvar)
    integrality[:na] = 1
    c = np.zeros(nvar)
    c[:na] = [a.storage for a in arcs]
    res = milp(c, constraints=LinearConstraint(A, lo, hi), integrality=integrality,
               bounds=Bounds(np.zeros(nvar), upper), options={"time_limit": time_limit, "mip_rel_gap": 0.0})
    if res.status != 0 or res.x is None:
        raise ExactTooLarge(f"the integer program was not solved to optimality ({res.message.strip()}); "
                            f"use best, pas-mt or pas-pt")
    x = res.x[:na]
    return {m: arcs[max(into[m], key=lambda i: x[i])] for m in graph.matrices}
