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

Every planner takes ``max_depth`` (None: unbounded): no matrix may then be
rebuilt through more than ``max_depth`` deltas (a repository's
``delta.max_depth``, which its reader and `pas verify` rely on). PAS-MT and
PAS-PT keep it as a constraint of every step (growth, swaps, grafts, the
clean-up); the other planners' trees are cut to it afterwards
(`cut_depth`: the cheapest set of matrices to store whole instead).
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
def depths(graph: StorageGraph, parents: Mapping[str, Arc]) -> dict[str, int]:
    """Each matrix's chain depth under a tree: the deltas applied to rebuild it
    (0 when stored whole, i.e. its arc comes from the root)."""
    out: dict[str, int] = {}
    for m in parents:
        path, v = [], m
        while v not in out and v != graph.root:
            path.append(v)
            v = parents[v].src
            if len(path) > len(parents):
                from .plan import PlanError
                raise PlanError(f"the plan has a cycle through {m!r}")
        d = -1 if v == graph.root else out[v]
        for w in reversed(path):
            d += 1
            out[w] = d
    return out


def _decode_budgets(graph: StorageGraph, budgets: Budgets) -> tuple[StorageGraph, Budgets]:
    """The planning problem without snapshot overheads: the same arcs, and each
    budget less its snapshot's overhead (a fixed cost no plan changes; a budget
    below it cannot be met, and becomes 0). Planners work on this; `evaluate`
    on the original graph adds the overheads back."""
    if not graph.overheads:
        return graph, budgets
    over = graph.overheads
    return graph.without_overheads(), {s: max(0.0, b - over.get(s, 0.0)) for s, b in budgets.items()}


def _check_depth(max_depth: int | None) -> int | None:
    if max_depth is None:
        return None
    if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 0:
        from .graph import GraphError
        raise GraphError(f"the depth bound must be an integer >= 0, got {max_depth!r}")
    return max_depth


def _root_arc(graph: StorageGraph, m: str, key=lambda a: (a.storage, a.recreation)) -> Arc | None:
    """The arc storing ``m`` whole that is least by ``key`` (None: it cannot be stored whole)."""
    arcs = [a for a in graph.in_arcs[m] if a.src == graph.root]
    return min(arcs, key=key) if arcs else None


def cut_depth(graph: StorageGraph, parents: Mapping[str, Arc], max_depth: int | None) -> dict[str, Arc]:
    """The tree ``parents`` with no chain deeper than ``max_depth`` deltas, at
    the least extra storage: some matrices are stored whole instead (their
    cheapest arc from the root), each cutting the chain below it.

    Exact for the question asked (which matrices to cut), by dynamic
    programming over the tree: f(v, d) = the least extra storage of v's
    subtree when v sits at depth d; each child either stays at d + 1 (if
    that is within the bound) or is cut to depth 0 at the cost of its root
    arc minus its arc. O(matrices x max_depth). A matrix that cannot be
    stored whole and would sit too deep makes it impossible: GraphError."""
    parents = dict(parents)
    max_depth = _check_depth(max_depth)
    if max_depth is None:
        return parents
    depth = depths(graph, parents)
    if not depth or max(depth.values()) <= max_depth:
        return parents
    children: dict[str, list[str]] = {v: [] for v in (graph.root, *parents)}
    for m, a in parents.items():
        children[a.src].append(m)
    order, todo = [], [graph.root]           # preorder
    while todo:
        v = todo.pop()
        order.append(v)
        todo += children[v]
    inf = math.inf
    cut_arc = {m: (_root_arc(graph, m) if parents[m].src != graph.root else None) for m in parents}
    cut_cost = {m: (cut_arc[m].storage - parents[m].storage if cut_arc[m] is not None else inf) for m in parents}
    D = max_depth
    f: dict[str, list[float]] = {}
    for v in reversed(order):                # children first
        if v == graph.root:
            continue
        row = []
        for d in range(D + 1):
            total = 0.0
            for c in children[v]:
                keep = f[c][d + 1] if d + 1 <= D else inf
                total += min(keep, cut_cost[c] + f[c][0])
            row.append(total)
        f[v] = row
    out = dict(parents)
    todo2 = [(c, 0) for c in children[graph.root]]
    while todo2:
        v, d = todo2.pop()
        if math.isinf(f[v][d]):
            from .graph import GraphError
            raise GraphError(f"no plan keeps every chain within {D} deltas: a matrix below {v!r} "
                             "cannot be stored whole")
        for c in children[v]:
            keep = f[c][d + 1] if d + 1 <= D else inf
            if cut_cost[c] + f[c][0] < keep:
                out[c] = cut_arc[c]
                todo2.append((c, 0))
            else:
                todo2.append((c, d + 1))
    return out


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


def spt(graph: StorageGraph, budgets: Budgets | None = None, model: str = "independent",
        max_depth: int | None = None) -> Plan:
    return Plan("spt", cut_depth(graph, _shortest(graph.root, graph.out_arcs), max_depth))


def shortest_distances(graph: StorageGraph) -> dict[str, float]:
    """Each matrix's least possible recreation cost (its cost in the SPT)."""
    return recreation_costs(graph, spt(graph).parents)


def mst(graph: StorageGraph, budgets: Budgets | None = None, model: str = "independent",
        max_depth: int | None = None) -> Plan:
    tree = _edmonds_tree(graph) if graph.directed else _kruskal_tree(graph)
    return Plan("mst", cut_depth(graph, tree, max_depth))


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
    stays a valid order under the reduced-cost subtraction of contraction.
    Iterative: each contraction is kept on a stack and undone in reverse (a
    graph of thousands of matrices contracts more times than Python recurses)."""
    levels = []   # (arcs, best_in, cycle, origin) of each contraction, outermost first
    while True:
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
            result = [best_in[v] for v in range(n) if v != root]
            break
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
        levels.append((arcs, best_in, cycle, origin))
        n, root, arcs = k + 1, new_id[root], new_arcs
    for arcs, best_in, cycle, origin in reversed(levels):
        result = [origin[j] for j in result]
        on_cycle = set(cycle)
        entered = next(arcs[i][1] for i in result if arcs[i][1] in on_cycle)
        result += [best_in[v] for v in cycle if v != entered]
    return result


# ------------------------------------------------------------------ LAST
def last(graph: StorageGraph, budgets: Budgets, model: str = "independent",
         max_depth: int | None = None) -> Plan:
    """LAST (Khuller, Raghavachari, Young 1995): walk the MST depth first,
    carrying the best known path cost d(v); where d(v) > alpha * dist(v),
    add v's shortest path. The result is the shortest-path tree of the MST
    plus the added paths, so every matrix costs at most alpha * dist(v).

    alpha is per matrix: the tightest budget / SPT-cost ratio over the
    snapshots holding it (snapshot budgets then hold in both models)."""
    check_model(model)
    graph, budgets = _decode_budgets(graph, budgets)
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
    return Plan("last", cut_depth(graph, _shortest(graph.root, out), max_depth))


# ------------------------------------------------------------------ PAS-MT / PAS-PT
class _Tree:
    """A mutable tree (matrix -> parent arc) with the quantities the swaps need."""

    def __init__(self, graph: StorageGraph, parents: Mapping[str, Arc], max_depth: int | None = None):
        self.g = graph
        self.parent = dict(parents)
        self.max_depth = max_depth

    def refresh(self) -> None:
        """Path costs r, Euler-tour times (descendant tests), preorder, and each
        vertex's depth (deltas to rebuild it; the root -1) and height (levels below it)."""
        g = self.g
        children: dict[str, list[str]] = {v: [] for v in (g.root, *g.matrices)}
        for m, a in self.parent.items():
            children[a.src].append(m)
        self.r = {g.root: 0.0}
        self.depth = {g.root: -1}
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
                self.depth[v] = self.depth[a.src] + 1
            stack.append((v, True))
            stack += [(c, False) for c in children[v]]
        self.children = children
        self.height = {}
        for v in reversed(self.order):
            self.height[v] = max((self.height[c] + 1 for c in children[v]), default=0)

    def fits_depth(self, a: Arc) -> bool:
        """Whether storing a.dst by arc a keeps every chain of its subtree within the bound."""
        return self.max_depth is None or self.depth[a.src] + 1 + self.height[a.dst] <= self.max_depth

    def deepest(self) -> int:
        return max((d for v, d in self.depth.items() if v != self.g.root), default=0)

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
        if not t.fits_depth(a):
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
    slow but serves no over-budget snapshot). Under a depth bound a shortest
    path that would chain too deep is not taken; the matrix is then stored
    by its fastest arc from the root if that is faster (else the next worst
    matrix is tried)."""
    g = t.g
    cands = [m for s in over for m in g.snapshots[s] if t.r[m] > dist[m] + 1e-12 * max(1.0, dist[m])]
    for m in sorted(set(cands), key=lambda x: (t.r[x] - dist[x], x), reverse=True):
        saved = dict(t.parent)
        path, x = [], m
        while x != g.root:
            path.append(x)
            x = spt_parent[x].src
        for w in reversed(path):              # root side first: each new parent already has r = dist
            if t.r[w] > dist[w]:
                t.parent[w] = spt_parent[w]
                t.refresh()
        if t.max_depth is None or t.deepest() <= t.max_depth:
            return True
        t.parent = saved
        t.refresh()
        whole = _root_arc(g, m, key=lambda a: (a.recreation, a.storage))
        if whole is not None and whole.recreation < t.r[m] - 1e-12 * max(1.0, t.r[m]):
            t.parent[m] = whole
            t.refresh()
            return True
    return False


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
            if saving <= best_saving or (a.src != g.root and t.is_descendant(a.src, v)) or not t.fits_depth(a):
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


def pas_mt(graph: StorageGraph, budgets: Budgets, model: str = "independent", refine: bool = True,
           max_depth: int | None = None) -> Plan:
    """PAS-MT: start from the MST, repair over-budget snapshots by parent swaps.

    refine=False runs the paper's steps only; True (default) caps the gains
    at the excess and ends with the storage clean-up (_tighten). With
    ``max_depth`` the MST is first cut to it (`cut_depth`) and no swap or
    graft may chain deeper."""
    check_model(model)
    max_depth = _check_depth(max_depth)
    graph, budgets = _decode_budgets(graph, budgets)
    t = _Tree(graph, mst(graph, max_depth=max_depth).parents, max_depth)
    return _finish(t, "pas-mt", budgets, model, refine)


def pas_pt(graph: StorageGraph, budgets: Budgets, model: str = "independent", refine: bool = True,
           max_depth: int | None = None) -> Plan:
    """PAS-PT: Prim-like growth by storage cost, checking budgets on the way.

    An arc is taken only if every snapshot holding its head stays within
    budget, counting tree members at their current cost and the others at
    their shortest-path cost (a lower bound). Each new vertex may adopt tree
    vertices it stores more cheaply without slowing them down. refine: as
    for pas_mt (the repair of leftovers, then the clean-up). With
    ``max_depth``, an arc that would chain deeper is refused like one that
    breaks a budget, and so is an adoption that would push a subtree too deep."""
    check_model(model)
    max_depth = _check_depth(max_depth)
    limit = math.inf if max_depth is None else max_depth
    g, budgets = _decode_budgets(graph, budgets)
    lb = shortest_distances(g)
    snaps_of: dict[str, list[str]] = {m: [] for m in g.matrices}
    for s, ms in g.snapshots.items():
        for m in ms:
            snaps_of[m].append(s)
    parent: dict[str, Arc] = {}
    children: dict[str, list[str]] = {}
    r = {g.root: 0.0}
    depth = {g.root: -1}
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
        if depth[a.src] + 1 > limit or not fits(v, rv):
            continue                      # dropped: this arc would break a budget (or the depth bound)
        parent[v], r[v], depth[v] = a, rv, depth[a.src] + 1
        children.setdefault(a.src, []).append(v)
        for b in g.out_arcs[v]:
            k = b.dst
            if k not in r:
                heapq.heappush(heap, (b.storage, b.recreation, next(tick), b))
            elif (parent[k].storage > b.storage and r[k] >= rv + b.recreation
                  and not is_ancestor(k, v)):
                below = subtree(k)
                dshift = depth[v] + 1 - depth[k]
                if max(depth[x] for x in below) + dshift > limit:
                    continue
                shift = r[k] - (rv + b.recreation)
                children[parent[k].src].remove(k)
                children.setdefault(v, []).append(k)
                parent[k] = b
                for x in below:
                    r[x] -= shift
                    depth[x] += dshift
    if len(parent) < len(g.matrices):
        # Leftovers (every arc to them broke a budget): attach each by its
        # fastest arc from the tree ("to v0" in the paper, which assumes every
        # matrix can be stored whole), then repair as PAS-MT does.
        heap = [(r[a.src] + a.recreation, a.storage, next(tick), a)
                for u in r for a in g.out_arcs[u] if a.dst not in r]
        heapq.heapify(heap)
        for bounded in (True, False):     # within the depth bound if any arc allows it; cut below
            while heap:
                rv, _, _, a = heapq.heappop(heap)
                if a.dst in r or (bounded and depth[a.src] + 1 > limit):
                    continue
                parent[a.dst], r[a.dst], depth[a.dst] = a, rv, depth[a.src] + 1
                for b in g.out_arcs[a.dst]:
                    if b.dst not in r:
                        heapq.heappush(heap, (rv + b.recreation, b.storage, next(tick), b))
            heap = [(r[a.src] + a.recreation, a.storage, next(tick), a)
                    for u in r for a in g.out_arcs[u] if a.dst not in r]
            heapq.heapify(heap)
    t = _Tree(g, cut_depth(g, parent, max_depth), max_depth)
    return _finish(t, "pas-pt", budgets, model, refine)


def _finish(t: "_Tree", name: str, budgets: Budgets, model: str, refine: bool) -> Plan:
    """The last steps both PAS algorithms share: repair what is over budget,
    then (refine) take back storage where budgets allow."""
    _repair(t, budgets, model, refine)
    if refine:
        _tighten(t, budgets, model)
    return Plan(name, t.parent)


def best(graph: StorageGraph, budgets: Budgets, model: str = "independent", refine: bool = True,
         max_depth: int | None = None) -> Plan:
    """Run PAS-MT and PAS-PT, keep the cheaper feasible plan (the least over
    budget if neither is feasible)."""
    plans = [pas_mt(graph, budgets, model, refine, max_depth=max_depth),
             pas_pt(graph, budgets, model, refine, max_depth=max_depth)]
    evals = [evaluate(graph, p, budgets, model) for p in plans]
    i = min(range(2), key=lambda i: (not evals[i].feasible, evals[i].excess, evals[i].storage))
    return Plan(f"best ({plans[i].algorithm})", plans[i].parents)


def exact(graph: StorageGraph, budgets: Budgets, model: str = "independent",
          max_depth: int | None = None) -> Plan:
    """The optimum without a depth bound; with one, that optimum cut to it
    (`cut_depth`: then no longer necessarily optimal)."""
    from .exact import exact as solve  # scipy is imported only when asked for
    p = solve(graph, budgets, model)
    return Plan(p.algorithm, cut_depth(graph, p.parents, max_depth))


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
         model: str = "independent", max_depth: int | None = None) -> Plan:
    """Plan `graph` with the named algorithm (budgets default to the graph's own);
    ``max_depth``: no matrix rebuilt through more deltas than that (None: unbounded)."""
    check_model(model)
    if algorithm not in ALGORITHMS:
        from .graph import GraphError
        raise GraphError(f"unknown algorithm {algorithm!r} (choose from {', '.join(ALGORITHMS)})")
    if budgets is None:
        budgets = budgets_for(graph, model)
    max_depth = _check_depth(max_depth)
    if max_depth is None:
        return ALGORITHMS[algorithm](graph, budgets, model)
    return ALGORITHMS[algorithm](graph, budgets, model, max_depth=max_depth)
