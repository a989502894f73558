"""Storage planners: each takes a graph, per-snapshot budgets and a recreation
model and returns a Plan (paper §IV-C; docs/planning.md).

- mst: least total storage (Kruskal when every edge is two-way, Edmonds /
  Chu-Liu otherwise); ties go to the lower recreation cost.
- spt: shortest-path tree on recreation cost (every matrix as fast as it can
  be; ties go to the cheaper arc).
- last: Khuller-Raghavachari-Young's light approximate shortest-path tree.
- pas-mt: refine the MST by swapping parents of matrices of over-budget
  snapshots, best gain per extra storage first.
- pas-pt: grow the tree from the root by cheapest storage, refusing arcs that
  would break a budget.
- best: pas-mt and pas-pt, the cheaper feasible plan.
"""
from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Mapping

from .graph import Arc, StorageGraph
from .plan import (
    Plan,
    check_model,
    evaluate,
    recreation_costs,
    snapshot_cost,
    snapshot_costs,
    within,
)

Budgets = Mapping[str, float]


# ------------------------------------------------------------------ trees
def _shortest(root: str, out_arcs: Mapping[str, list[Arc]]) -> dict[str, Arc]:
    """Dijkstra on recreation cost; among equally fast arcs the least storage.

    Parents are set from already settled vertices only, so zero-cost arcs
    cannot make a cycle."""
    best: dict[str, tuple[float, float]] = {root: (0.0, 0.0)}
    parent: dict[str, Arc] = {}
    done: set[str] = set()
    tick = itertools.count()
    heap: list = [(0.0, 0.0, next(tick), root, None)]
    while heap:
        d, _, _, v, arc = heapq.heappop(heap)
        if v in done:
            continue
        done.add(v)
        if arc is not None:
            parent[v] = arc
        for a in out_arcs.get(v, ()):
            if a.dst in done:
                continue
            key = (d + a.recreation, a.storage)
            if a.dst not in best or key < best[a.dst]:
                best[a.dst] = key
                heapq.heappush(heap, (*key, next(tick), a.dst, a))
    return parent


def spt(graph: StorageGraph, budgets: Budgets | None = None, model: str = "independent") -> Plan:
    return Plan("spt", _shortest(graph.root, graph.out_arcs))


def shortest_distances(graph: StorageGraph) -> dict[str, float]:
    """Each matrix's least possible recreation cost (its cost in the SPT)."""
    return recreation_costs(graph, spt(graph).parents)


def mst(graph: StorageGraph, budgets: Budgets | None = None, model: str = "independent") -> Plan:
    if graph.directed:
        return Plan("mst", _edmonds_tree(graph))
    return Plan("mst", _kruskal_tree(graph))


def _kruskal_tree(graph: StorageGraph) -> dict[str, Arc]:
    up = {v: v for v in (graph.root, *graph.matrices)}

    def find(v):
        while up[v] != v:
            up[v] = up[up[v]]
            v = up[v]
        return v
    chosen: dict[str, list[tuple[str, int]]] = {v: [] for v in up}
    for i in sorted(range(len(graph.edges)), key=lambda i: (graph.edges[i].storage, graph.edges[i].recreation, i)):
        e = graph.edges[i]
        a, b = find(e.src), find(e.dst)
        if a != b:
            up[a] = b
            chosen[e.src].append((e.dst, i))
            chosen[e.dst].append((e.src, i))
    # Orient the tree away from the root.
    by_key = {(a.src, a.dst, a.edge): a for a in graph.arcs}
    parent: dict[str, Arc] = {}
    todo, seen = [graph.root], {graph.root}
    while todo:
        u = todo.pop()
        for v, i in chosen[u]:
            if v not in seen:
                seen.add(v)
                parent[v] = by_key[(u, v, i)]
                todo.append(v)
    return parent


def _edmonds_tree(graph: StorageGraph) -> dict[str, Arc]:
    names = [graph.root, *graph.matrices]
    index = {v: i for i, v in enumerate(names)}
    arcs = [(index[a.src], index[a.dst], (a.storage, a.recreation)) for a in graph.arcs]
    chosen = _edmonds(len(names), 0, arcs)
    return {graph.arcs[i].dst: graph.arcs[i] for i in chosen}


def _edmonds(n: int, root: int, arcs: list[tuple[int, int, tuple[float, float]]]) -> list[int]:
    """Chu-Liu/Edmonds minimum arborescence; returns indices into `arcs`.

    Weights are (storage, recreation) pairs compared lexicographically, which
    stays a valid order under the reduced-cost subtraction of contraction."""
    best_in: list[int | None] = [None] * n
    for i, (u, v, w) in enumerate(arcs):
        if u != v and v != root and (best_in[v] is None or w < arcs[best_in[v]][2]):
            best_in[v] = i
    mark = [-1] * n
    cycle: list[int] = []
    for start in range(n):
        v = start
        while v != root and mark[v] == -1:
            mark[v] = start
            v = arcs[best_in[v]][0]
        if v != root and mark[v] == start:        # walked into this walk's own trail: a cycle
            cycle = [v]
            u = arcs[best_in[v]][0]
            while u != v:
                cycle.append(u)
                u = arcs[best_in[u]][0]
            break
    if not cycle:
        return [best_in[v] for v in range(n) if v != root]
    on_cycle = set(cycle)
    new_id, k = {}, 0
    for v in range(n):
        if v not in on_cycle:
            new_id[v] = k
            k += 1
    for v in cycle:
        new_id[v] = k
    new_arcs, origin = [], []
    for i, (u, v, w) in enumerate(arcs):
        nu, nv = new_id[u], new_id[v]
        if nu == nv:
            continue
        if v in on_cycle:
            bw = arcs[best_in[v]][2]
            w = (w[0] - bw[0], w[1] - bw[1])
        new_arcs.append((nu, nv, w))
        origin.append(i)
    result = [origin[j] for j in _edmonds(k + 1, new_id[root], new_arcs)]
    entered = next(arcs[i][1] for i in result if arcs[i][1] in on_cycle)
    result += [best_in[v] for v in cycle if v != entered]
    return result


# ------------------------------------------------------------------ LAST
def last(graph: StorageGraph, budgets: Budgets, model: str = "independent") -> Plan:
    """LAST (Khuller, Raghavachari, Young 1995): walk the MST depth first,
    carrying the best known path cost d(v); where d(v) > alpha * dist(v),
    add v's shortest path. The result is the shortest-path tree of the MST
    plus the added paths, so every matrix costs at most alpha * dist(v).

    alpha is per matrix: the tightest budget / SPT-cost ratio over the
    snapshots holding it (snapshot budgets then hold in both models)."""
    check_model(model)
    dist = shortest_distances(graph)
    spt_parent = spt(graph).parents
    spt_cost = snapshot_costs(graph, dist, model)
    alpha = {m: math.inf for m in graph.matrices}
    for s, ms in graph.snapshots.items():
        b = budgets.get(s, math.inf)
        if math.isinf(b):
            continue
        ratio = b / spt_cost[s] if spt_cost[s] > 0 else math.inf
        for m in ms:
            alpha[m] = min(alpha[m], max(ratio, 1.0))
    tree = mst(graph).parents
    children: dict[str, list[Arc]] = {v: [] for v in (graph.root, *graph.matrices)}
    for a in tree.values():
        children[a.src].append(a)
    two_way = {i for i, e in enumerate(graph.edges) if not e.directed}
    reverse = {(a.src, a.dst, a.edge): a for a in graph.arcs}
    h: set[Arc] = set(tree.values())
    d = {graph.root: 0.0, **{m: math.inf for m in graph.matrices}}

    def add_shortest_path(v):
        while v != graph.root and d[v] > dist[v]:
            a = spt_parent[v]
            h.add(a)
            d[v] = dist[v]
            v = a.src

    # Iterative DFS (deep trees would overflow Python's recursion).
    stack: list[tuple[Arc, bool]] = [(a, True) for a in reversed(children[graph.root])]
    while stack:
        a, down = stack.pop()
        if down:
            v = a.dst
            d[v] = min(d[v], d[a.src] + a.recreation)
            if d[v] > alpha[v] * dist[v] + 1e-12 * max(1.0, dist[v]):
                add_shortest_path(v)
            stack.append((a, False))
            stack += [(c, True) for c in reversed(children[v])]
        elif a.edge in two_way and a.src != graph.root:   # back up the same edge
            d[a.src] = min(d[a.src], d[a.dst] + a.recreation)
    # The answer: the shortest-path tree within H (both directions of its two-way edges).
    out: dict[str, list[Arc]] = {}
    for a in h:
        out.setdefault(a.src, []).append(a)
        back = reverse.get((a.dst, a.src, a.edge))
        if back is not None:
            out.setdefault(back.src, []).append(back)
    return Plan("last", _shortest(graph.root, out))


# ------------------------------------------------------------------ PAS-MT / PAS-PT
class _Tree:
    """A mutable tree (matrix -> parent arc) with the quantities the swaps need."""

    def __init__(self, graph: StorageGraph, parents: Mapping[str, Arc]):
        self.g = graph
        self.parent = dict(parents)

    def refresh(self) -> None:
        """Path costs r, Euler-tour times (descendant tests) and preorder."""
        g = self.g
        children: dict[str, list[str]] = {v: [] for v in (g.root, *g.matrices)}
        for m, a in self.parent.items():
            children[a.src].append(m)
        self.r = {g.root: 0.0}
        self.tin, self.tout, self.order = {}, {}, []
        clock = 0
        stack = [(g.root, False)]
        while stack:
            v, leaving = stack.pop()
            if leaving:
                self.tout[v] = clock
                continue
            self.tin[v] = clock
            clock += 1
            self.order.append(v)
            if v != g.root:
                a = self.parent[v]
                self.r[v] = self.r[a.src] + a.recreation
            stack.append((v, True))
            stack += [(c, False) for c in children[v]]
        self.children = children

    def is_descendant(self, x: str, v: str) -> bool:
        """x in D_v (v's subtree, v included)."""
        return self.tin[v] <= self.tin[x] < self.tout[v]


def _violated(graph: StorageGraph, r, budgets: Budgets, model: str) -> dict[str, float]:
    """Over-budget snapshots -> their cost."""
    out = {}
    for s, ms in graph.snapshots.items():
        c = snapshot_cost(ms, r, model)
        if not within(c, budgets.get(s, math.inf)):
            out[s] = c
    return out


def _best_swap(t: _Tree, over: Mapping[str, float], budgets: Budgets, model: str,
               refine: bool) -> Arc | None:
    """The re-parenting (p_i, v_i) -> (v_s, v_i) of largest gain (Lemma 3, Eq. 1/2).

    Moving v_i under v_s cuts the recreation of all of D_i by
    delta = r(v_i) - r(v_s) - c_r(v_s, v_i). Gain numerator as in the paper:
    independent, delta times the over-budget snapshots' members in D_i
    (Eq. 1); parallel, delta per over-budget snapshot meeting D_i (Eq. 2).
    With `refine` [inference], only the part of the cut that reduces an
    excess counts: per snapshot at most its excess over budget (independent),
    the members' excesses over budget (parallel: a cut below the budget, or
    of a member already within it, buys nothing). Divided by the storage
    increase; a swap that adds no storage comes first (the paper leaves the
    non-positive denominator open)."""
    g = t.g
    weight: dict[str, float] = {}
    if model == "independent":
        own = {v: 0 for v in t.order}
        for s in over:
            for m in g.snapshots[s]:
                own[m] += 1
        for v in reversed(t.order):       # children before parents: subtree sums
            weight[v] = own[v] + sum(weight[c] for c in t.children[v])
    else:
        touched: dict[str, set] = {}
        own_s: dict[str, set] = {v: set() for v in t.order}
        for s in over:
            for m in g.snapshots[s]:
                own_s[m].add(s)
        for v in reversed(t.order):
            acc = set(own_s[v])
            for c in t.children[v]:
                acc |= touched[c]
            touched[v] = acc
            weight[v] = len(acc)
    if refine:
        share = _excess_shares(t, over, budgets, model)
    best, best_key = None, None
    for a in g.arcs:
        v = a.dst
        if not weight[v] or t.parent[v] == a:
            continue
        if a.src != g.root and t.is_descendant(a.src, v):
            continue
        delta = t.r[v] - (t.r[a.src] + a.recreation)
        if delta <= 1e-12 * max(1.0, t.r[v]):
            continue
        if not refine:
            num = delta * weight[v]
        elif model == "independent":    # share[v]: (excess, members in D_v) per over-budget snapshot
            num = sum(min(excess, delta * n) for excess, n in share.get(v, ()))
        else:                           # share[v]: the excesses of members in D_v
            num = sum(min(excess, delta) for excess in share.get(v, ()))
        if num <= 0:
            continue
        den = a.storage - t.parent[v].storage
        key = (1, num, -den) if den <= 0 else (0, num / den, 0.0)
        if best_key is None or key > best_key:
            best, best_key = a, key
    return best


def _excess_shares(t: _Tree, over: Mapping[str, float], budgets: Budgets, model: str) -> dict:
    """Per vertex v, what a cut of v's subtree can buy back (see _best_swap).

    Independent: (snapshot excess, its members in D_v) per over-budget
    snapshot meeting D_v. Parallel: the excess over budget of each member in
    D_v that is over. Built once per swap round: subtree counts, and each
    over-budget member walked up to the root."""
    g = t.g
    out: dict[str, list] = {}
    if model == "independent":
        own: dict[str, list[str]] = {}
        for s in over:
            for m in g.snapshots[s]:
                own.setdefault(m, []).append(s)
        counts: dict[str, dict[str, int]] = {}
        for v in reversed(t.order):              # children first: subtree sums
            c: dict[str, int] = {}
            for s in own.get(v, ()):
                c[s] = c.get(s, 0) + 1
            for ch in t.children[v]:
                for s, n in counts[ch].items():
                    c[s] = c.get(s, 0) + n
            counts[v] = c
        for v, c in counts.items():
            if c:
                out[v] = [(over[s] - budgets[s], n) for s, n in c.items()]
    else:
        for s in over:
            b = budgets[s]
            for m in g.snapshots[s]:
                excess = t.r[m] - b
                if excess <= 0:
                    continue
                x = m
                while x != g.root:
                    out.setdefault(x, []).append(excess)
                    x = t.parent[x].src
    return out


def _graft(t: _Tree, over: Mapping[str, float], dist, spt_parent) -> bool:
    """No single swap helps: give the worst over-budget matrix its shortest path.

    [inference] The paper leaves this case open; without it PAS-MT can stop
    infeasible where the SPT is feasible (a matrix whose fast parent is itself
    slow but serves no over-budget snapshot)."""
    g = t.g
    cands = [m for s in over for m in g.snapshots[s] if t.r[m] > dist[m] + 1e-12 * max(1.0, dist[m])]
    if not cands:
        return False
    m = max(cands, key=lambda x: (t.r[x] - dist[x], x))
    path = []
    while m != g.root:
        path.append(m)
        m = spt_parent[m].src
    for w in reversed(path):              # root side first: each new parent already has r = dist
        if t.r[w] > dist[w]:
            t.parent[w] = spt_parent[w]
            t.refresh()
    return True


def _repair(t: _Tree, budgets: Budgets, model: str, refine: bool) -> None:
    """Swap parents until every snapshot is within budget or nothing helps."""
    dist = spt_parent = None
    t.refresh()
    while True:
        over = _violated(t.g, t.r, budgets, model)
        if not over:
            return
        a = _best_swap(t, over, budgets, model, refine)
        if a is not None:
            t.parent[a.dst] = a
            t.refresh()
            continue
        if dist is None:
            spt_parent = spt(t.g).parents
            dist = recreation_costs(t.g, spt_parent)
        if not _graft(t, over, dist, spt_parent):
            return


def _tighten(t: _Tree, budgets: Budgets, model: str) -> None:
    """[inference] Clean-up after the repair: greedy swaps that save storage and
    keep every budget, largest saving first. The repair's early swaps can be
    made redundant by later ones; this takes the slack back."""
    g = t.g
    snaps_of: dict[str, list[str]] = {m: [] for m in g.matrices}
    for s, ms in g.snapshots.items():
        for m in ms:
            snaps_of[m].append(s)
    limited = {s for s in g.snapshots if not math.isinf(budgets.get(s, math.inf))}
    t.refresh()
    while True:
        best, best_saving = None, 1e-12
        for a in g.arcs:
            v = a.dst
            saving = t.parent[v].storage - a.storage
            if saving <= best_saving or (a.src != g.root and t.is_descendant(a.src, v)):
                continue
            shift = (t.r[a.src] + a.recreation) - t.r[v]     # change of every D_v path cost
            if shift > 0 and not _still_fits(t, v, shift, budgets, model, limited, snaps_of):
                continue
            best, best_saving = a, saving
        if best is None:
            return
        t.parent[best.dst] = best
        t.refresh()


def _still_fits(t: _Tree, v: str, shift: float, budgets, model, limited, snaps_of) -> bool:
    touched = {s for x in t.order[t.tin[v]:t.tout[v]] for s in snaps_of.get(x, ()) if s in limited}
    for s in touched:
        new = [t.r[m] + (shift if t.is_descendant(m, v) else 0.0) for m in t.g.snapshots[s]]
        cost = math.fsum(new) if model == "independent" else max(new)
        if not within(cost, budgets[s]):
            return False
    return True


def pas_mt(graph: StorageGraph, budgets: Budgets, model: str = "independent", refine: bool = True) -> Plan:
    """PAS-MT: start from the MST, repair over-budget snapshots by parent swaps.

    refine=False runs the paper's steps only; True (default) caps the gains
    at the excess and ends with the storage clean-up (_tighten)."""
    check_model(model)
    t = _Tree(graph, mst(graph).parents)
    _repair(t, budgets, model, refine)
    if refine:
        _tighten(t, budgets, model)
    return Plan("pas-mt", t.parent)


def pas_pt(graph: StorageGraph, budgets: Budgets, model: str = "independent", refine: bool = True) -> Plan:
    """PAS-PT: Prim-like growth by storage cost, checking budgets on the way.

    An arc is taken only if every snapshot holding its head stays within
    budget, counting tree members at their current cost and the others at
    their shortest-path cost (a lower bound). Each new vertex may adopt tree
    vertices it stores more cheaply without slowing them down. refine: as
    for pas_mt (the repair of leftovers, then the clean-up)."""
    check_model(model)
    g = graph
    lb = shortest_distances(g)
    snaps_of: dict[str, list[str]] = {m: [] for m in g.matrices}
    for s, ms in g.snapshots.items():
        for m in ms:
            snaps_of[m].append(s)
    parent: dict[str, Arc] = {}
    children: dict[str, list[str]] = {}
    r = {g.root: 0.0}
    tick = itertools.count()
    heap = [(a.storage, a.recreation, next(tick), a) for a in g.out_arcs[g.root]]
    heapq.heapify(heap)

    def fits(v: str, rv: float) -> bool:
        for s in snaps_of[v]:
            est = [rv if m == v else r.get(m, lb[m]) for m in g.snapshots[s]]
            cost = math.fsum(est) if model == "independent" else max(est)
            if not within(cost, budgets.get(s, math.inf)):
                return False
        return True

    def subtree(v: str) -> list[str]:
        out, todo = [], [v]
        while todo:
            x = todo.pop()
            out.append(x)
            todo += children.get(x, ())
        return out

    def is_ancestor(k: str, v: str) -> bool:
        while v != g.root:
            if v == k:
                return True
            v = parent[v].src
        return False

    while heap and len(parent) < len(g.matrices):
        _, _, _, a = heapq.heappop(heap)
        v = a.dst
        if v in r:
            continue
        rv = r[a.src] + a.recreation
        if not fits(v, rv):
            continue                      # dropped: this arc would break a budget
        parent[v], r[v] = a, rv
        children.setdefault(a.src, []).append(v)
        for b in g.out_arcs[v]:
            k = b.dst
            if k not in r:
                heapq.heappush(heap, (b.storage, b.recreation, next(tick), b))
            elif (parent[k].storage > b.storage and r[k] >= rv + b.recreation
                  and not is_ancestor(k, v)):
                shift = r[k] - (rv + b.recreation)
                children[parent[k].src].remove(k)
                children.setdefault(v, []).append(k)
                parent[k] = b
                for x in subtree(k):
                    r[x] -= shift
    if len(parent) < len(g.matrices):
        # Leftovers (every arc to them broke a budget): attach each by its
        # fastest arc from the tree ("to v0" in the paper, which assumes every
        # matrix can be stored whole), then repair as PAS-MT does.
        heap = [(r[a.src] + a.recreation, a.storage, next(tick), a)
                for u in r for a in g.out_arcs[u] if a.dst not in r]
        heapq.heapify(heap)
        while heap:
            rv, _, _, a = heapq.heappop(heap)
            if a.dst in r:
                continue
            parent[a.dst], r[a.dst] = a, rv
            for b in g.out_arcs[a.dst]:
                if b.dst not in r:
                    heapq.heappush(heap, (rv + b.recreation, b.storage, next(tick), b))
    t = _Tree(g, parent)
    _repair(t, budgets, model, refine)
    if refine:
        _tighten(t, budgets, model)
    return Plan("pas-pt", t.parent)


def best(graph: StorageGraph, budgets: Budgets, model: str = "independent", refine: bool = True) -> Plan:
    """Run PAS-MT and PAS-PT, keep the cheaper feasible plan (the least over
    budget if neither is feasible)."""
    plans = [pas_mt(graph, budgets, model, refine), pas_pt(graph, budgets, model, refine)]
    evals = [evaluate(graph, p, budgets, model) for p in plans]
    i = min(range(2), key=lambda i: (not evals[i].feasible, evals[i].excess, evals[i].storage))
    return Plan(f"best ({plans[i].algorithm})", plans[i].parents)


def exact(graph: StorageGraph, budgets: Budgets, model: str = "independent") -> Plan:
    from .exact import exact as solve  # scipy is imported only when asked for
    return solve(graph, budgets, model)


ALGORITHMS: dict[str, Callable[[StorageGraph, Budgets, str], Plan]] = {
    "mst": mst, "spt": spt, "last": last, "pas-mt": pas_mt, "pas-pt": pas_pt, "best": best, "exact": exact}


def budgets_for(graph: StorageGraph, model: str = "independent", alpha: float | None = None) -> dict[str, float]:
    """Per-snapshot budgets: alpha times the snapshot's SPT recreation cost,
    else the graph's own budgets; math.inf where there is none."""
    check_model(model)
    if alpha is None:
        return {s: graph.budgets.get(s, math.inf) for s in graph.snapshots}
    if not (alpha > 0 and math.isfinite(alpha)):
        from .graph import GraphError
        raise GraphError(f"the budget factor must be a positive number, got {alpha!r}")
    base = snapshot_costs(graph, shortest_distances(graph), model)
    return {s: alpha * c for s, c in base.items()}


def plan(graph: StorageGraph, algorithm: str = "best", budgets: Budgets | None = None,
         model: str = "independent") -> Plan:
    """Plan `graph` with the named algorithm (budgets default to the graph's own)."""
    check_model(model)
    if algorithm not in ALGORITHMS:
        from .graph import GraphError
        raise GraphError(f"unknown algorithm {algorithm!r} (choose from {', '.join(ALGORITHMS)})")
    if budgets is None:
        budgets = budgets_for(graph, model)
    return ALGORITHMS[algorithm](graph, budgets, model)
