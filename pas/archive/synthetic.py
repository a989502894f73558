"""Seeded random storage graphs for tests and bench/plan_gap.py.

Shaped like the paper's: every matrix can be stored whole (storage ~ its
size, quick to read) and as a delta against some others (much smaller, but
each delta applied adds to the recreation cost, so long chains are slow).
"""
from __future__ import annotations

import random

from .graph import Edge, StorageGraph


def random_graph(seed: int, matrices: int = 8, snapshots: int = 3, density: float = 0.35,
                 directed: bool = False, whole: float = 1.0) -> StorageGraph:
    """`whole`: the chance a matrix has a root edge (the rest need deltas to be reached)."""
    rng = random.Random(seed)
    names = [f"m{i}" for i in range(1, matrices + 1)]
    size = {m: rng.uniform(4.0, 10.0) for m in names}
    edges: list[Edge] = []
    for m in names:
        if rng.random() < whole or m == names[0]:
            edges.append(Edge("v0", m, round(size[m], 3), round(size[m] * rng.uniform(0.2, 0.4), 3)))
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if rng.random() < density:
                src, dst = (a, b) if not directed or rng.random() < 0.5 else (b, a)
                c_s = min(size[a], size[b]) * rng.uniform(0.05, 0.6)
                c_r = c_s * rng.uniform(0.3, 0.8) + rng.uniform(0.2, 0.8)
                edges.append(Edge(src, dst, round(c_s, 3), round(c_r, 3), directed))
    # Whatever cannot be reached gets a root edge.
    reach, todo = {"v0"}, ["v0"]
    while todo:
        u = todo.pop()
        for e in edges:
            for x, y in ((e.src, e.dst),) if e.directed else ((e.src, e.dst), (e.dst, e.src)):
                if x == u and y not in reach:
                    reach.add(y)
                    todo.append(y)
    for m in names:
        if m not in reach:
            edges.append(Edge("v0", m, round(size[m], 3), round(size[m] * 0.3, 3)))
    groups: dict[str, list[str]] = {}
    for k in range(1, snapshots + 1):
        groups[f"s{k}"] = sorted(rng.sample(names, rng.randint(2, max(2, matrices // 2))))
    covered = {m for ms in groups.values() for m in ms}
    for m in names:
        if m not in covered:
            s = rng.choice(sorted(groups))
            groups[s] = sorted(groups[s] + [m])
    return StorageGraph("v0", edges, groups)
