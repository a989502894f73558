"""The parsed form of a DQL statement (built by `dql.parser.parse`).

Plain frozen dataclasses: the executor walks them, `--explain` prints them,
tests compare them. Every node that a semantic error can point at keeps its
source position (``pos``: line, column; 1-based).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

Pos = tuple[int, int]


# ------------------------------------------------------------------ values
@dataclass(frozen=True)
class Field:
    """``.name`` after a path: an attribute, or a hop (``next``/``prev``), or
    an edit target (``insert``/``delete``) after a layer selector."""
    name: str


@dataclass(frozen=True)
class Key:
    """``["text"]`` or ``[3]`` after a path: a key (metadata, metric, iteration)."""
    key: str | int | float


@dataclass(frozen=True)
class Path:
    """``var.step.step[...]``: an attribute of a model version (``m.name``,
    ``m.hparams.lr``, ``m.metrics["acc"][100]``) or of the evaluate config."""
    var: str
    steps: tuple[Field | Key, ...]
    pos: Pos = (0, 0)

    def text(self) -> str:
        out = self.var
        for s in self.steps:
            out += f".{s.name}" if isinstance(s, Field) else f"[{s.key!r}]"
        return out


@dataclass(frozen=True)
class Selector:
    """``var["pattern"]`` followed by hops: layers of version ``var`` whose names
    match the pattern (`dql.patterns`), moved along edges by ``hops``."""
    var: str
    pattern: str
    hops: tuple[str, ...] = ()          # "next" / "prev", in order
    pos: Pos = (0, 0)


@dataclass(frozen=True)
class Template:
    """A layer template, ``POOL("MAX")``, ``RELU("relu$1")``, ``CONV("c", kernel=3)``."""
    kind: str                            # upper-case layer type as written
    args: tuple = ()
    kwargs: tuple[tuple[str, object], ...] = ()
    pos: Pos = (0, 0)


Operand = Union[Path, Selector, str, int, float, bool, None, tuple]


# -------------------------------------------------------------- conditions
@dataclass(frozen=True)
class Compare:
    left: Operand
    op: str                              # "=", "!=", "<", "<=", ">", ">="
    right: Operand
    pos: Pos = (0, 0)


@dataclass(frozen=True)
class Like:
    left: Operand
    pattern: str                         # SQL LIKE: % any run, _ one character
    negated: bool = False
    pos: Pos = (0, 0)


@dataclass(frozen=True)
class Has:
    selector: Selector
    template: Template
    pos: Pos = (0, 0)


@dataclass(frozen=True)
class And:
    items: tuple


@dataclass(frozen=True)
class Or:
    items: tuple


@dataclass(frozen=True)
class Not:
    item: object


Cond = Union[Compare, Like, Has, And, Or, Not]


# ----------------------------------------------------------------- sources
@dataclass(frozen=True)
class AllVersions:
    """``from m1``: ``m1`` ranges over every version of the repository."""
    var: str


@dataclass(frozen=True)
class Named:
    """``from "query3"``: the versions a saved query returns."""
    name: str
    pos: Pos = (0, 0)


@dataclass(frozen=True)
class Nested:
    """``from (select ...)``."""
    query: "Query"


Source = Union[AllVersions, Named, Nested]


# -------------------------------------------------------------- statements
@dataclass(frozen=True)
class Select:
    var: str
    source: Source
    where: Cond | None = None


@dataclass(frozen=True)
class Slice:
    """A new model ``var``: the layers of the source between ``input`` and ``output``."""
    var: str
    source: Source
    where: Cond | None
    input: Selector
    output: Selector


@dataclass(frozen=True)
class Edit:
    """``sel.insert = TEMPLATE`` (a new layer after each selected one, on its
    outgoing edge) or ``sel.delete`` (remove each selected layer)."""
    selector: Selector
    action: str                          # "insert" / "delete"
    template: Template | None = None
    pos: Pos = (0, 0)


@dataclass(frozen=True)
class Construct:
    var: str
    source: Source
    where: Cond | None
    edits: tuple[Edit, ...]


@dataclass(frozen=True)
class Vary:
    """``config.path in [values]`` (a grid axis) or ``config.path auto`` (searched)."""
    path: Path
    values: tuple | None                 # None: auto


@dataclass(frozen=True)
class Keep:
    """``top(k, metric, iterations)`` or ``threshold(metric OP value, iterations)``."""
    rule: str                            # "top" / "threshold"
    metric: str
    iterations: int
    k: int | None = None
    op: str | None = None
    value: float | None = None
    order: str | None = None             # "min" / "max"; None: from the metric's name
    pos: Pos = (0, 0)


@dataclass(frozen=True)
class Evaluate:
    var: str
    source: Source
    config: str | None = None
    varies: tuple[Vary, ...] = ()
    keep: Keep | None = None


Query = Union[Select, Slice, Construct, Evaluate]


@dataclass
class Statement:
    """A parsed statement with its source text (for messages and --explain)."""
    query: Query
    text: str = field(repr=False, default="")
