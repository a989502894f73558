"""The matrix storage graph (paper Def. 1) and its JSON form.

Vertices are the matrices plus a root (the empty matrix v0): an arc from the
root stores a matrix whole, an arc from another matrix stores it as a delta
against that one. Each edge has a storage cost and a recreation cost; edges
are usable both ways unless directed, and parallel edges are allowed (the
plan then also picks the tier). Snapshot groups are the sets of matrices
retrieved together; budgets bound their recreation cost.

JSON::

    {"root": "v0",
     "directed": false,                      # optional default for every edge
     "edges": [{"from": "v0", "to": "m1", "storage": 2, "recreation": 1,
                "directed": false}, ...],    # per-edge "directed" optional
     "snapshots": {"s1": ["m1", "m2"], ...},
     "budgets": {"s1": 3, ...},              # optional, per snapshot
     "overheads": {"s1": 0.5, ...}}          # optional, per snapshot

A snapshot's overhead is a fixed recreation cost whatever the plan (for a
repository: reading the version's manifest, per-tensor bookkeeping, side
files); its recreation cost is the overhead plus its matrices' costs.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInput


class GraphError(BadInput):
    """A storage graph (file or object) that is malformed or cannot be planned."""


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    storage: float
    recreation: float
    directed: bool = False


@dataclass(frozen=True)
class Arc:
    """One usable direction of an edge: `dst` is stored against `src`."""

    src: str
    dst: str
    storage: float
    recreation: float
    edge: int           # index of the edge in StorageGraph.edges (parallel edges differ here)


@dataclass
class StorageGraph:
    root: str
    edges: list[Edge]
    snapshots: dict[str, tuple[str, ...]] = field(default_factory=dict)
    budgets: dict[str, float] = field(default_factory=dict)
    overheads: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        self.edges = list(self.edges)
        if any(isinstance(v, str) for v in self.snapshots.values()):
            raise GraphError("each snapshot must be a list of matrix names, not one string")
        self.snapshots = {str(k): tuple(v) for k, v in self.snapshots.items()}
        self.budgets = {str(k): float(v) for k, v in self.budgets.items()}
        self.overheads = {str(k): float(v) for k, v in self.overheads.items()}
        self._validate()
        arcs: list[Arc] = []
        for i, e in enumerate(self.edges):
            ends = [(e.src, e.dst)] if e.directed else [(e.src, e.dst), (e.dst, e.src)]
            # Nothing is ever stored "against" the root's other end: arcs into v0 are useless.
            arcs += [Arc(a, b, e.storage, e.recreation, i) for a, b in ends if b != self.root]
        self.arcs: tuple[Arc, ...] = tuple(arcs)
        seen = {self.root}
        for e in self.edges:
            seen.update((e.src, e.dst))
        seen.discard(self.root)
        self.matrices: tuple[str, ...] = tuple(sorted(seen))
        self.in_arcs: dict[str, list[Arc]] = {m: [] for m in self.matrices}
        self.out_arcs: dict[str, list[Arc]] = {v: [] for v in (self.root, *self.matrices)}
        for a in self.arcs:
            self.in_arcs[a.dst].append(a)
            self.out_arcs[a.src].append(a)
        self._check_reachable()

    # ------------------------------------------------------------ checks
    def _validate(self) -> None:
        if not isinstance(self.root, str) or not self.root:
            raise GraphError("the root must be a non-empty vertex name")
        if not self.edges:
            raise GraphError("the graph has no edges")
        for i, e in enumerate(self.edges):
            for name in (e.src, e.dst):
                if not isinstance(name, str) or not name:
                    raise GraphError(f"edge {i}: vertex names must be non-empty strings, got {name!r}")
            if e.src == e.dst:
                raise GraphError(f"edge {i}: a self-loop on {e.src!r}")
            for what in ("storage", "recreation"):
                c = getattr(e, what)
                if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c < 0:
                    raise GraphError(f"edge {i} ({e.src} -> {e.dst}): {what} cost must be a finite number >= 0, got {c!r}")
        known = {self.root} | {e.src for e in self.edges} | {e.dst for e in self.edges}
        for s, members in self.snapshots.items():
            if not members:
                raise GraphError(f"snapshot {s!r} is empty")
            for m in members:
                if m == self.root:
                    raise GraphError(f"snapshot {s!r} lists the root {m!r}")
                if m not in known:
                    raise GraphError(f"snapshot {s!r} lists {m!r}, which no edge mentions")
            if len(set(members)) != len(members):
                raise GraphError(f"snapshot {s!r} lists a matrix twice")
        for s, b in self.budgets.items():
            if s not in self.snapshots:
                raise GraphError(f"budget for unknown snapshot {s!r}")
            if not b >= 0:  # also rejects NaN
                raise GraphError(f"budget of {s!r} must be >= 0, got {b!r}")
        for s, c in self.overheads.items():
            if s not in self.snapshots:
                raise GraphError(f"overhead for unknown snapshot {s!r}")
            if not (c >= 0 and math.isfinite(c)):
                raise GraphError(f"overhead of {s!r} must be a finite number >= 0, got {c!r}")

    def _check_reachable(self) -> None:
        seen, todo = {self.root}, [self.root]
        while todo:
            for a in self.out_arcs[todo.pop()]:
                if a.dst not in seen:
                    seen.add(a.dst)
                    todo.append(a.dst)
        lost = [m for m in self.matrices if m not in seen]
        if lost:
            more = f" (+{len(lost) - 5} more)" if len(lost) > 5 else ""
            raise GraphError(f"unreachable from the root {self.root!r}: {', '.join(lost[:5])}{more}")

    # ------------------------------------------------------------ helpers
    @property
    def directed(self) -> bool:
        """True when some edge is one-way (then the MST needs Edmonds' algorithm)."""
        return any(e.directed for e in self.edges)

    def with_budgets(self, budgets: Mapping[str, float]) -> StorageGraph:
        return StorageGraph(self.root, self.edges, self.snapshots, dict(budgets), self.overheads)

    def without_overheads(self) -> StorageGraph:
        """The same graph with no snapshot overheads (its arcs equal this graph's)."""
        return StorageGraph(self.root, self.edges, self.snapshots, self.budgets)

    # ------------------------------------------------------------ JSON
    def to_json(self) -> dict:
        out: dict = {"root": self.root,
                     "edges": [{"from": e.src, "to": e.dst, "storage": e.storage, "recreation": e.recreation,
                                **({"directed": True} if e.directed else {})} for e in self.edges],
                     "snapshots": {s: list(ms) for s, ms in self.snapshots.items()}}
        if self.budgets:
            out["budgets"] = dict(self.budgets)
        if self.overheads:
            out["overheads"] = dict(self.overheads)
        return out

    @classmethod
    def from_json(cls, obj) -> StorageGraph:
        if not isinstance(obj, dict):
            raise GraphError("a storage graph must be a JSON object")
        unknown = set(obj) - {"root", "directed", "edges", "snapshots", "budgets", "overheads"}
        if unknown:
            raise GraphError(f"unknown keys in the graph: {', '.join(sorted(unknown))}")
        root = obj.get("root", "v0")
        default_directed = _flag(obj.get("directed", False), "directed")
        raw_edges = obj.get("edges")
        if not isinstance(raw_edges, list):
            raise GraphError('"edges" must be a list')
        edges = []
        for i, r in enumerate(raw_edges):
            if not isinstance(r, dict):
                raise GraphError(f"edge {i} must be an object")
            missing = {"from", "to", "storage", "recreation"} - set(r)
            if missing:
                raise GraphError(f"edge {i} lacks {', '.join(sorted(missing))}")
            extra = set(r) - {"from", "to", "storage", "recreation", "directed"}
            if extra:
                raise GraphError(f"edge {i}: unknown keys {', '.join(sorted(extra))}")
            edges.append(Edge(r["from"], r["to"], r["storage"], r["recreation"],
                              _flag(r.get("directed", default_directed), f"edge {i} directed")))
        snaps = obj.get("snapshots", {})
        if not isinstance(snaps, dict) or not all(isinstance(v, list) and all(isinstance(m, str) for m in v)
                                                  for v in snaps.values()):
            raise GraphError('"snapshots" must map each snapshot name to a list of matrix names')
        budgets = obj.get("budgets", {})
        if not isinstance(budgets, dict) or not all(_number(b) for b in budgets.values()):
            raise GraphError('"budgets" must map snapshot names to numbers')
        overheads = obj.get("overheads", {})
        if not isinstance(overheads, dict) or not all(_number(c) for c in overheads.values()):
            raise GraphError('"overheads" must map snapshot names to numbers')
        return cls(root, edges, snaps, budgets, overheads)

    @classmethod
    def loads(cls, text: str) -> StorageGraph:
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise GraphError(f"not valid JSON: {exc}") from None
        return cls.from_json(obj)

    @classmethod
    def load(cls, path) -> StorageGraph:
        return cls.loads(Path(path).read_text(encoding="utf-8"))

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)

    def save(self, path) -> None:
        Path(path).write_text(self.dumps() + "\n", encoding="utf-8")


def _flag(v, what: str) -> bool:
    if not isinstance(v, bool):
        raise GraphError(f"{what} must be true or false, got {v!r}")
    return v


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def graph(root: str, edges: Iterable[tuple], snapshots: Mapping[str, Iterable[str]] | None = None,
          budgets: Mapping[str, float] | None = None, directed: bool = False,
          overheads: Mapping[str, float] | None = None) -> StorageGraph:
    """Build a graph from (src, dst, storage, recreation) tuples (tests, benchmarks)."""
    return StorageGraph(root, [Edge(s, d, c, r, directed) for s, d, c, r in edges],
                        {k: tuple(v) for k, v in (snapshots or {}).items()}, dict(budgets or {}),
                        dict(overheads or {}))
