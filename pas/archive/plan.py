"""Storage plans and their costs (paper Def. 2, Table III).

A plan is a spanning tree of the storage graph rooted at v0: per matrix, the
arc it is stored by (from the root = whole, from a matrix = delta against
it). Its storage cost is the sum of its arcs' storage costs; a matrix is
recreated along its path from the root, so its recreation cost is the sum of
the path's recreation costs. A snapshot's recreation cost is the sum of its
matrices' costs (independent model: each matrix rebuilt on its own, shared
path edges paid once per matrix) or their maximum (parallel model), plus the
snapshot's fixed overhead if the graph gives one (the same under every plan).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import PasError
from .graph import Arc, StorageGraph

MODELS = ("independent", "parallel")


class PlanError(PasError):
    """A plan that is not a spanning tree of its graph (a bug in a planner, or a hand-made plan)."""


def check_model(model: str) -> str:
    if model not in MODELS:
        from .graph import GraphError
        raise GraphError(f"unknown recreation model {model!r} (choose from {', '.join(MODELS)})")
    return model


def within(cost: float, budget: float) -> bool:
    """cost <= budget, forgiving float rounding (sums of the same costs in another order)."""
    return cost <= budget + 1e-9 * max(1.0, abs(budget))


@dataclass(frozen=True)
class Plan:
    algorithm: str
    parents: Mapping[str, Arc]          # matrix -> the arc it is stored by

    def parent(self, matrix: str) -> str:
        return self.parents[matrix].src

    @property
    def storage(self) -> float:
        return math.fsum(a.storage for a in self.parents.values())

    def arcs(self) -> list[Arc]:
        return [self.parents[m] for m in sorted(self.parents)]

    def to_json(self) -> list[dict]:
        return [{"from": a.src, "to": a.dst, "storage": a.storage, "recreation": a.recreation, "edge": a.edge}
                for a in self.arcs()]


def recreation_costs(graph: StorageGraph, parents: Mapping[str, Arc]) -> dict[str, float]:
    """Each matrix's path cost from the root; PlanError unless `parents` is a spanning tree."""
    missing = [m for m in graph.matrices if m not in parents]
    if missing:
        raise PlanError(f"the plan does not store {', '.join(missing[:5])}")
    extra = [m for m in parents if m not in graph.in_arcs]
    if extra:
        raise PlanError(f"the plan stores unknown matrices {', '.join(map(str, extra[:5]))}")
    arcs = set(graph.arcs)
    cost: dict[str, float] = {graph.root: 0.0}
    for m in graph.matrices:
        path = []
        v = m
        while v not in cost:
            a = parents[v]
            if a.dst != v or a not in arcs:
                raise PlanError(f"{v!r} is stored by an arc the graph does not have: {a}")
            path.append(a)
            v = a.src
            if len(path) > len(graph.matrices):
                raise PlanError(f"the plan has a cycle through {m!r}")
        for a in reversed(path):
            cost[a.dst] = cost[a.src] + a.recreation
    del cost[graph.root]
    return cost


def snapshot_cost(members, r: Mapping[str, float], model: str) -> float:
    vals = [r[m] for m in members]
    return math.fsum(vals) if model == "independent" else max(vals)


def snapshot_costs(graph: StorageGraph, r: Mapping[str, float], model: str) -> dict[str, float]:
    """Each snapshot's recreation cost: its overhead (0 unless the graph gives one) plus its matrices' costs."""
    over = graph.overheads
    return {s: over.get(s, 0.0) + snapshot_cost(ms, r, model) for s, ms in graph.snapshots.items()}


@dataclass
class Evaluation:
    algorithm: str
    model: str
    storage: float
    recreation: dict[str, float]
    budgets: dict[str, float]           # math.inf: no budget
    feasible: bool = field(init=False)

    def __post_init__(self):
        self.feasible = all(within(c, self.budgets[s]) for s, c in self.recreation.items())

    @property
    def excess(self) -> float:
        """How far over budget, summed over snapshots (0 when feasible)."""
        return math.fsum(max(0.0, c - self.budgets[s]) for s, c in self.recreation.items()
                         if not within(c, self.budgets[s]))


def evaluate(graph: StorageGraph, plan: Plan, budgets: Mapping[str, float], model: str) -> Evaluation:
    check_model(model)
    r = recreation_costs(graph, plan.parents)
    return Evaluation(plan.algorithm, model, plan.storage, snapshot_costs(graph, r, model),
                      {s: float(budgets.get(s, math.inf)) for s in graph.snapshots})
