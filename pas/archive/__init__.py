"""Archival storage planning (paper §IV-C, issue 6): choose, per matrix, to
store it whole or as a delta against another matrix, for the least storage
under per-snapshot recreation budgets. docs/planning.md describes the graph
format, the algorithms and the cost models.

    g = StorageGraph.load("graph.json")
    budgets = budgets_for(g, "independent", alpha=1.5)
    p = plan(g, "best", budgets, "independent")
    evaluate(g, p, budgets, "independent").storage
"""
from .algorithms import ALGORITHMS, budgets_for, plan, shortest_distances
from .graph import Arc, Edge, GraphError, StorageGraph, graph
from .plan import MODELS, Evaluation, Plan, PlanError, evaluate, recreation_costs

__all__ = ["ALGORITHMS", "MODELS", "Arc", "Edge", "Evaluation", "GraphError", "Plan", "PlanError",
           "StorageGraph", "budgets_for", "evaluate", "graph", "plan", "recreation_costs", "shortest_distances"]
