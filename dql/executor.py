"""Running DQL statements against a repository (through pas.dlv's model view).

    from dql import run
    rows = run(repo, 'select m where m.name like "cnn%" and m["conv*"].next has POOL("MAX")')

`select` reads only manifests and each version's dlv records (network,
hyper-parameters, training log: side files of a few KiB), never weights.

Conditions are evaluated as a search over capture bindings: a ``has`` binds
the captures of its selector (``m["conv*($1)"]``) for every layer that
satisfies it, and the conditions after it in an ``and`` see those bindings;
a version satisfies the statement when some binding survives.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

from . import ast as A
from . import patterns
from .errors import DQLError, DQLSemanticError
from .layers import Network

#: Bindings kept per version while a condition is searched (a selector over a
#: 100,000-layer network must not multiply without bound).
MAX_BINDINGS = 10_000

#: Attributes of a version: name -> what it is (for messages and docs/dql.md).
ATTRIBUTES = {
    "name": "the model's name", "id": "the version id (hex)", "short": "the short id",
    "message": "the commit message", "parent": "the parent version's id", "creation_time": "when it was committed",
    "time": "when it was committed", "hparams": "hyper-parameters (a mapping)",
    "metrics": 'training-log metrics: metrics["loss"] (last), metrics["loss"][100] (at iteration 100)',
    "metadata": "the checkpoint's metadata (a mapping)", "tensors": "number of tensors",
    "parameters": "number of weight elements", "bytes": "bytes of weights (logical)",
    "layers": "number of layers in the network definition", "lossy": "whether some tensors are stored lossy",
    "head": "whether the version is its model's current one (the ref of its name points at it)",
}
_ALIASES = {"hyperparams": "hparams", "config": "hparams", "meta": "metadata"}


def run(repo, text: str, named: dict[str, str] | None = None, base: Path | None = None) -> list[dict]:
    """Rows of the statement's result: per version ``name``, ``id``, ``time``, ``message``."""
    return execute(repo, text, named, base)["rows"]


def execute(repo, text: str, named: dict[str, str] | None = None, base: Path | None = None) -> dict:
    """``{"rows": [...], "stats": {...}}``: the result rows, and for evaluate what
    training cost (candidates, iterations trained against the full grid's).
    ``base``: where relative paths in the statement (config, data) start (default: cwd)."""
    from . import parse
    stmt = parse(text)
    ex = Executor(repo, named or {}, base=base or Path.cwd())
    rows = [_row(mv) for mv in ex.versions(stmt.query)]
    return {"rows": rows, "stats": ex.stats}


def explain(repo, text: str, named: dict[str, str] | None = None, base: Path | None = None) -> dict:
    """What running the statement would read, commit and train, without doing it
    (the conditions are evaluated: they read only manifests and dlv records)."""
    from . import parse
    stmt = parse(text)
    return Executor(repo, named or {}, base=base or Path.cwd(), dry=True).explain(stmt.query)


def _row(mv) -> dict:
    return {"name": mv.name, "id": mv.id, "time": mv.time, "message": mv.message}


class Executor:
    def __init__(self, repo, named: dict[str, str], depth: int = 0, base: Path | None = None, dry: bool = False):
        self.repo = repo
        self.dry = dry      # explain: plan derived versions, commit and train nothing
        self.named = named
        self.depth = depth
        self.base = base or Path.cwd()
        self.stats: dict = {}
        self._refs: dict[str, str] | None = None
        self._networks: dict[str, Network | None] = {}

    # ------------------------------------------------------------- sources
    def source(self, src: A.Source) -> list:
        from pas.dlv.model import ModelVersion
        if isinstance(src, A.AllVersions):
            return [ModelVersion(self.repo, v) for v in self.repo.versions()]
        if isinstance(src, A.Nested):
            return self.versions(src.query)
        text = self.named.get(src.name)
        if text is None:
            known = ", ".join(sorted(self.named)) or "none saved"
            raise DQLSemanticError(f"no saved query named {src.name!r} (saved: {known})", *src.pos)
        if self.depth > 32:
            raise DQLSemanticError(f"saved query {src.name!r} refers to itself", *src.pos)
        from . import parse
        return Executor(self.repo, self.named, self.depth + 1, self.base, self.dry).versions(parse(text).query)

    def versions(self, q: A.Query) -> list:
        """The versions a statement yields: selected ones, or the new versions it commits."""
        var = q.source.var if isinstance(q.source, A.AllVersions) else q.var
        matched = []
        for mv in self.source(q.source):
            found = [{}] if getattr(q, "where", None) is None else self.bindings(q.where, {var: mv}, {})
            if found:
                matched.append((mv, found))
        if isinstance(q, A.Select):
            return [mv for mv, _ in matched]
        if isinstance(q, (A.Slice, A.Construct)):
            # Every new network first, then the commits: a statement that fails
            # on one version commits nothing.
            planned = [(mv, *self.derive(q, mv, found)) for mv, found in matched]
            if self.dry:   # as many versions as it would commit; their sources stand in for them
                return [mv for mv, _, _ in planned]
            return [self.commit_derived(mv, q.var, net, how) for mv, net, how in planned]
        from . import train
        if self.dry:
            raise DQLError("explain cannot say what an evaluate statement's results would be: explain the "
                           "evaluate itself, not a statement reading from it")
        survivors, self.stats = train.evaluate(self.repo, q, [mv for mv, _ in matched], self.base)
        out, counts = [], {}
        for cand in survivors:
            src = cand.source
            counts[src.id] = counts.get(src.id, 0) + 1
            out.append(train.commit(self.repo, cand, f"{src.name}-{q.var}-{counts[src.id]}", counts[src.id],
                                    self.stats))
        return out

    def explain(self, q: A.Query) -> dict:
        kind = type(q).__name__.lower()
        if isinstance(q.source, A.Nested):
            source = {"nested": self.explain(q.source.query)}
        elif isinstance(q.source, A.Named):
            source = {"saved": q.source.name}
        else:
            source = {"all_versions": len(self.repo.versions())}
        var = q.source.var if isinstance(q.source, A.AllVersions) else q.var
        where = getattr(q, "where", None)
        matched = [mv for mv in self.source(q.source) if where is None or self.bindings(where, {var: mv}, {})]
        out = {"statement": kind, "source": source, "matches": len(matched),
               "reads": "manifests and dlv records (network, hyper-parameters, training log); no weights"}
        if isinstance(q, (A.Slice, A.Construct)):
            out["reads"] += "; then the weights the new networks keep, from each matching version"
            out["commits"] = [f"{mv.name}-{q.var}" for mv in matched]
        if isinstance(q, A.Evaluate):
            from . import train
            cfg = train.load_config(q.config, self.base)
            configs = train.grid(cfg, q.varies)
            total = cfg["iterations"] if cfg["iterations"] is not None else (q.keep.iterations if q.keep else None)
            n = len(configs) * len(matched)
            out["reads"] += "; then every matching version's weights, and the training data"
            out["trains"] = {"candidates": n, "iterations_each": total,
                             "full_grid_iterations": n * total if isinstance(total, int) else None,
                             "keep": None if q.keep is None else {"rule": q.keep.rule, "at": q.keep.iterations,
                                                                  "metric": q.keep.metric}}
            if q.keep is not None and q.keep.rule == "top" and isinstance(total, int):
                kept = min(n, q.keep.k)
                out["trains"]["at_most_iterations"] = n * min(q.keep.iterations, total) + kept * max(
                    0, total - q.keep.iterations)
            out["commits"] = "the candidates the keep rule leaves"
        return out

    def derive(self, q, mv, found: list[dict[str, str]]) -> tuple[dict, dict]:
        """The network ``q`` makes of version ``mv``, and what was done (for the record)."""
        from . import derive
        net = mv.network
        if net is None:
            raise DQLSemanticError(f"{mv.name}@{mv.short} has no network definition to {type(q).__name__.lower()}")
        layers = self.network(mv)
        if isinstance(q, A.Slice):
            first = self.one_layer(layers, q.input, found, mv)
            last = self.one_layer(layers, q.output, found, mv)
            new_net = derive.slice_network(net, first, last)
            how = {"kind": "slice", "input": first, "output": last}
        else:
            new_net, edits = net, []
            for e in q.edits:
                hits = _unique_layers(h for caps in found for h in layers.select(e.selector, caps))
                if not hits:
                    raise DQLSemanticError(f'{e.selector.var}["{e.selector.pattern}"] selects no layer of '
                                           f"{mv.name}@{mv.short}", *e.pos)
                for layer, caps in hits:
                    if e.action == "insert":
                        new_net = derive.insert_after(new_net, layer, _substituted(e.template, caps))
                    else:
                        new_net = derive.delete_layer(new_net, layer)
                    edits.append({"action": e.action, "layer": layer})
            how = {"kind": "construct", "edits": edits}
        return new_net, how

    def one_layer(self, layers: Network, sel: A.Selector, found, mv) -> str:
        hits = _unique_layers(h for caps in found for h in layers.select(sel, caps))
        ids = sorted({layer for layer, _ in hits})
        if len(ids) != 1:
            what = "no layer" if not ids else f"{len(ids)} layers ({', '.join(ids[:5])})"
            raise DQLSemanticError(f'{sel.var}["{sel.pattern}"] selects {what} of {mv.name}@{mv.short}; '
                                   "a slice end must be one layer", *sel.pos)
        return ids[0]

    def commit_derived(self, mv, var: str, net: dict, how: dict):
        from pas.dlv import metadata as md
        from pas.dlv import netdef
        from pas.dlv.model import FORMAT, HYPERPARAMS, INFO, NETWORK, ModelVersion
        from pas.snapshot import Snapshot, Tensor
        from . import derive
        entries = {e.name: e for e in mv.tensors}
        keep = derive.tensor_names(net, list(entries))
        snap = Snapshot(format="safetensors")
        for name in keep:
            e = entries[name]
            snap.add(Tensor(name, e.out_dtype, tuple(e.shape), self.repo.read_tensor(e)))
        snap.files[NETWORK] = netdef.encode(net)
        if mv.hyperparams:
            snap.files[HYPERPARAMS] = md.canonical_json(mv.hyperparams)
        snap.files[INFO] = md.canonical_json({"format": FORMAT, "kind": how["kind"], "from": mv.id,
                                              "dql": how, "sources": {"weights": f"{mv.name}@{mv.short}"}})
        name = f"{mv.name}-{var}"
        res = self.repo.archive_snapshot(snap, name, parent=mv.id,
                                         message=f"dql {how['kind']} of {mv.name}@{mv.short}")
        return ModelVersion(self.repo, self.repo.version(res.version_id))

    # ---------------------------------------------------------- conditions
    def bindings(self, cond: A.Cond, env: dict, caps: dict[str, str]) -> list[dict[str, str]]:
        """The capture bindings (extending ``caps``) under which ``cond`` holds; [] if none."""
        if isinstance(cond, A.And):
            out = [caps]
            for item in cond.items:
                out = _unique(c2 for c in out for c2 in self.bindings(item, env, c))
                if not out:
                    break
            return out
        if isinstance(cond, A.Or):
            return _unique(c2 for item in cond.items for c2 in self.bindings(item, env, caps))
        if isinstance(cond, A.Not):
            return [] if self.bindings(cond.item, env, caps) else [caps]
        if isinstance(cond, A.Has):
            net = self.network(env[cond.selector.var])
            if net is None:
                return []
            out = []
            for layer, c2 in net.select(cond.selector, caps):
                t = _substituted(cond.template, c2)
                if net.matches(layer, t):
                    out.append(c2)
            return _unique(out)
        if isinstance(cond, A.Like):
            return [caps] if patterns.like(self.operand(cond.left, env), cond.pattern) != cond.negated else []
        if isinstance(cond, A.Compare):
            return [caps] if _compare(self.operand(cond.left, env), cond.op, self.operand(cond.right, env),
                                      cond) else []
        raise DQLSemanticError(f"cannot evaluate {type(cond).__name__}")   # pragma: no cover - parser

    def network(self, mv) -> Network | None:
        if mv.id not in self._networks:
            net = mv.network
            self._networks[mv.id] = None if net is None else Network(net)
        return self._networks[mv.id]

    # ---------------------------------------------------------- attributes
    def operand(self, x, env: dict):
        if isinstance(x, A.Selector):
            raise DQLSemanticError(f'a layer selector {x.var}["{x.pattern}"] is not a value; use it with has',
                                   *x.pos)
        if not isinstance(x, A.Path):
            return x
        mv = env.get(x.var)
        if mv is None:
            raise DQLSemanticError(f"unknown variable {x.var!r}", *x.pos)
        if not x.steps or not isinstance(x.steps[0], A.Field):
            raise DQLSemanticError(f"{x.text()}: name an attribute ({', '.join(sorted(ATTRIBUTES))})", *x.pos)
        head = _ALIASES.get(x.steps[0].name, x.steps[0].name)
        rest = x.steps[1:]
        if head == "metrics":
            return self.metric(mv, x, rest)
        value = self.attribute(mv, head, x)
        for s in rest:
            key = s.name if isinstance(s, A.Field) else s.key
            if not isinstance(value, dict):
                return None
            value = value.get(key if isinstance(key, str) else str(key))
        return value

    def attribute(self, mv, head: str, x: A.Path):
        v = mv.version
        if head == "name":
            return mv.name
        if head == "id":
            return mv.id
        if head == "short":
            return mv.short
        if head == "message":
            return mv.message
        if head == "parent":
            return mv.parent
        if head in ("creation_time", "time"):
            return _when(mv.time)
        if head == "hparams":
            return mv.hyperparams
        if head == "metadata":
            return dict(v.manifest.get("source", {}).get("metadata", {}))
        if head == "tensors":
            return len(v.tensors)
        if head == "parameters":
            return sum(math.prod(e.shape) for e in v.tensors)
        if head == "bytes":
            return sum(e.nbytes for e in v.tensors)
        if head == "layers":
            net = self.network(mv)
            return None if net is None else len(net.layer_ids)
        if head == "lossy":
            return v.lossy is not None
        if head == "head":
            if self._refs is None:
                self._refs = self.repo.refs()
            return self._refs.get(mv.name) == mv.id
        raise DQLSemanticError(f"unknown attribute {x.var}.{head}; known: {', '.join(sorted(ATTRIBUTES))}", *x.pos)

    def metric(self, mv, x: A.Path, rest: tuple) -> float | None:
        from pas.errors import NotFound
        if not rest or not isinstance(rest[0], A.Key) or not isinstance(rest[0].key, str):
            raise DQLSemanticError(f'{x.text()}: write {x.var}.metrics["name"] or {x.var}.metrics["name"][iteration]',
                                   *x.pos)
        iteration = None
        if len(rest) > 1:
            it = rest[1].key if isinstance(rest[1], A.Key) else None
            if len(rest) > 2 or isinstance(it, bool) or not isinstance(it, int):
                raise DQLSemanticError(f"{x.text()}: an iteration is an integer in brackets", *x.pos)
            iteration = it
        try:
            return mv.metric(rest[0].key, iteration)
        except NotFound:
            return None          # not logged (at that iteration): unknown, like SQL's NULL


def _unique(bindings) -> list[dict[str, str]]:
    out, seen = [], set()
    for b in bindings:
        key = tuple(sorted(b.items()))
        if key not in seen:
            seen.add(key)
            out.append(b)
            if len(out) > MAX_BINDINGS:
                raise DQLError(f"a condition binds more than {MAX_BINDINGS} layer combinations; narrow the selectors")
    return out


def _unique_layers(hits) -> list[tuple[str, dict[str, str]]]:
    """(layer, captures) pairs, each layer once (its first captures), in order."""
    out: dict[str, dict[str, str]] = {}
    for layer, caps in hits:
        out.setdefault(layer, caps)
    return list(out.items())


def _substituted(t: A.Template, caps: dict[str, str]) -> A.Template:
    def sub(v):
        return patterns.substitute(v, caps) if isinstance(v, str) else v
    return A.Template(t.kind, tuple(sub(a) for a in t.args), tuple((k, sub(v)) for k, v in t.kwargs), t.pos)


def _when(text):
    """A commit time as an aware datetime (compared with date strings by `_compare`)."""
    try:
        return datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None


def _as_time(v):
    if isinstance(v, str):
        try:
            t = datetime.fromisoformat(v)
        except ValueError:
            return None
        return t if t.tzinfo else t.replace(tzinfo=timezone.utc)
    return v


_OPS = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def _compare(a, op: str, b, node: A.Compare) -> bool:
    """SQL-like: null (a missing value) equals only null and orders with nothing;
    numbers with numbers, text with text, times with times or date strings."""
    if a is None or b is None:
        if op == "=":
            return a is None and b is None
        return (a is None) != (b is None) if op == "!=" else False
    if isinstance(a, datetime) or isinstance(b, datetime):
        a, b = _as_time(a), _as_time(b)
        if not (isinstance(a, datetime) and isinstance(b, datetime)):
            raise DQLSemanticError("a time compares with a date or time string like \"2026-11-27\"", *node.pos)
    num = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        if op not in ("=", "!="):
            raise DQLSemanticError("true/false compare with = and != only", *node.pos)
    elif isinstance(a, num) != isinstance(b, num) or isinstance(a, str) != isinstance(b, str):
        if op in ("=", "!="):
            return op == "!="
        raise DQLSemanticError(f"cannot order {type(a).__name__} against {type(b).__name__} "
                               f"({_show(a)} {op} {_show(b)})", *node.pos)
    elif not isinstance(a, (*num, str, datetime)):
        if op in ("=", "!="):
            return _OPS[op](a, b)
        raise DQLSemanticError(f"cannot order a {type(a).__name__} ({_show(a)})", *node.pos)
    return bool(_OPS[op](a, b))


def _show(v) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."
