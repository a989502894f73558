"""Text to `dql.ast`: a lark LALR parser, then the checks the grammar leaves out.

    from dql import parse
    stmt = parse('select m where m.name like "cnn%"')

Syntax errors become `DQLSyntaxError` (line, column, the expected tokens and
the line with a caret); meaning errors (an unbound variable, ``.input`` where
only selectors may go, a pattern with an unclosed bracket) become
`DQLSemanticError`. Nothing else escapes: the parser is fed hostile text by
the fuzz tests.
"""
from __future__ import annotations

import ast as pyast
from functools import lru_cache
from pathlib import Path as FsPath

from . import ast as A
from . import patterns
from .errors import DQLError, DQLSemanticError, DQLSyntaxError

#: Statements longer than this are refused before parsing (a query is typed by a person).
MAX_QUERY_CHARS = 100_000
#: Nesting deeper than this is refused (each level is a Python frame in the transformer).
MAX_DEPTH = 64

#: Readable names of the grammar's terminals, for "expected ..." messages.
_TOKEN_NAMES = {
    "IDENT": "a name", "STRING": "a string", "NUMBER": "a number", "COMPOP": "a comparison",
    "EQ": "'='", "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "COMMA": "','",
    "DOT": "'.'", "$END": "the end of the query",
}


@lru_cache(maxsize=1)
def _lark():
    from lark import Lark
    grammar = (FsPath(__file__).parent / "grammar.lark").read_text()
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=False)


def parse(text: str) -> A.Statement:
    """Parse and check one DQL statement."""
    if not isinstance(text, str):
        raise DQLError(f"a query must be text, not {type(text).__name__}")
    if len(text) > MAX_QUERY_CHARS:
        raise DQLError(f"query of {len(text):,} characters is longer than {MAX_QUERY_CHARS:,}")
    if not text.strip():
        raise DQLError("empty query: expected select, slice, construct or evaluate")
    if text.count("(") + text.count("[") > 4 * MAX_DEPTH and _depth(text) > MAX_DEPTH:
        raise DQLError(f"query nested deeper than {MAX_DEPTH} levels")
    from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedToken
    try:
        tree = _lark().parse(text)
    except UnexpectedToken as e:
        line, column = e.line, e.column
        if e.token.type == "$END":   # lark places the end token at the start: point past the last character
            line, column = text.count("\n") + 1, len(text) - text.rfind("\n")
        raise _syntax_error(text, line, column, f"unexpected {_describe(e.token)}", e.expected) from None
    except UnexpectedCharacters as e:
        raise _syntax_error(text, e.line, e.column, f"unexpected character {text[e.pos_in_stream]!r}",
                            e.allowed) from None
    except UnexpectedEOF as e:
        line = text.count("\n") + 1
        raise _syntax_error(text, line, len(text) - text.rfind("\n"), "unexpected end of the query",
                            e.expected) from None
    except RecursionError:
        raise DQLError(f"query nested deeper than {MAX_DEPTH} levels") from None
    except LarkError as e:   # any other parser failure is still the input's fault
        raise DQLError(f"not a DQL statement: {e}") from None
    try:
        query = _Build(text).query(tree)
    except RecursionError:
        raise DQLError(f"query nested deeper than {MAX_DEPTH} levels") from None
    _check_query(query, set())   # variables bound, captures defined before use
    return A.Statement(query, text)


def _depth(text: str) -> int:
    depth = best = 0
    for c in text:
        if c in "([":
            depth += 1
            best = max(best, depth)
        elif c in ")]":
            depth -= 1
    return best


def _describe(token) -> str:
    if token.type == "$END":
        return "end of the query"
    if token.type in _TOKEN_NAMES:   # "name 'selec'", "string '\"x\"'"
        return f"{_TOKEN_NAMES[token.type].removeprefix('a ').removeprefix('an ')} {str(token)!r}"
    return f"{str(token)!r}"


def _syntax_error(text: str, line: int, column: int, what: str, expected) -> DQLSyntaxError:
    names = sorted({_TOKEN_NAMES.get(t, t.lower() if t.isupper() else repr(t)) for t in (expected or ())})
    lines = text.split("\n")
    src = lines[line - 1] if 0 < line <= len(lines) else ""
    context = f"  {src[:200]}\n  {' ' * min(max(column - 1, 0), 200)}^" if src else ""
    msg = what + (f"; expected {', '.join(names)}" if names else "")
    return DQLSyntaxError(msg, line, column, names, context)


# --------------------------------------------------------------- tree -> AST
def _pos(node) -> A.Pos:
    meta = getattr(node, "meta", None)
    if meta is not None and not getattr(meta, "empty", True):
        return (meta.line, meta.column)
    line, col = getattr(node, "line", None), getattr(node, "column", None)
    return (line, col) if line else (0, 0)


def _string(token) -> str:
    try:
        return pyast.literal_eval(str(token))
    except (ValueError, SyntaxError):
        raise DQLSemanticError(f"malformed string {str(token)[:60]}", *_pos(token)) from None


def _number(token):
    text = str(token)
    try:
        return int(text)
    except ValueError:
        return float(text)


class _Build:
    """Walks lark's tree (not a lark Transformer: positions and errors stay ours)."""

    def __init__(self, text: str):
        self.text = text

    def kids(self, tree):
        # Keywords arrive as tokens; the AST does not need them.
        from lark import Token
        return [c for c in tree.children if not (isinstance(c, Token) and c.type in _KEYWORDS)]

    # statements
    def query(self, tree) -> A.Query:
        kind = tree.data
        c = self.kids(tree)
        if kind == "select":
            var = str(c[0])
            source, where = A.AllVersions(var), None
            for x in c[1:]:
                if x.data.startswith("src_"):
                    source = self.source(x, var)
                else:
                    where = self.cond(x)
            return A.Select(var, source, where)
        if kind == "slice":
            var, source = str(c[0]), self.source(c[1], None)
            rest = c[2:]
            where = self.cond(rest.pop(0)) if rest and rest[0].data != "assign" else None
            ends = {}
            for a in rest:
                target, sel = a.children[0], a.children[2]
                t = self.path(target)
                if t.var != var or len(t.steps) != 1 or not isinstance(t.steps[0], A.Field) \
                        or t.steps[0].name not in ("input", "output"):
                    raise DQLSemanticError(f"slice mutates {var}.input and {var}.output, not {t.text()}", *t.pos)
                end = t.steps[0].name
                if end in ends:
                    raise DQLSemanticError(f"{var}.{end} is set twice", *t.pos)
                ends[end] = self.selector(sel, what=f"{var}.{end}")
            for end in ("input", "output"):
                if end not in ends:
                    raise DQLSemanticError(f"slice needs {var}.{end} = <layer selector>", *_pos(tree))
            return A.Slice(var, source, where, ends["input"], ends["output"])
        if kind == "construct":
            var, source = str(c[0]), self.source(c[1], None)
            rest = c[2:]
            where = self.cond(rest.pop(0)) if rest and not rest[0].data.startswith("edit_") else None
            return A.Construct(var, source, where, tuple(self.edit(e) for e in rest))
        if kind == "evaluate":
            var, source = str(c[0]), self.source(c[1], None)
            config, varies, keep = None, [], None
            rest = c[2:]
            i = 0
            while i < len(rest):
                x = rest[i]
                if getattr(x, "data", None) == "path":
                    p = self.path(x)
                    value = self.value(rest[i + 1])   # the '=' between is dropped by kids()
                    if p.var.lower() != "config" or p.steps:
                        raise DQLSemanticError(f"evaluate takes 'with config = \"file\"', not {p.text()}", *p.pos)
                    if not isinstance(value, str):
                        raise DQLSemanticError("config must be a file path (a string)", *p.pos)
                    config = value
                    i += 2
                    continue
                if x.data in ("vary_list", "vary_auto"):
                    varies.append(self.vary(x))
                elif x.data == "call":
                    keep = self.keep(x, var)
                i += 1
            return A.Evaluate(var, source, config, tuple(varies), keep)
        raise DQLSemanticError(f"unknown statement {kind}", *_pos(tree))   # pragma: no cover - grammar

    def source(self, tree, own_var: str | None) -> A.Source:
        if tree.data == "src_var":
            return A.AllVersions(str(tree.children[0]))
        if tree.data == "src_named":
            return A.Named(_string(tree.children[0]), _pos(tree))
        return A.Nested(self.query(tree.children[0]))

    # conditions
    def cond(self, tree) -> A.Cond:
        d = tree.data
        c = self.kids(tree)
        if d == "or_cond":
            return A.Or(tuple(self.cond(x) for x in c))
        if d == "and_cond":
            return A.And(tuple(self.cond(x) for x in c))
        if d == "negate":
            return A.Not(self.cond(c[0]))
        if d == "comparison":
            return self.comparison(tree)
        if d in ("like", "not_like"):
            return A.Like(self.operand(c[0]), _string(c[1]), d == "not_like", _pos(tree))
        if d == "has":
            return A.Has(self.selector(c[0], what="has"), self.template(c[1]), _pos(tree))
        raise DQLSemanticError(f"expected a condition, got {d}", *_pos(tree))

    def comparison(self, tree) -> A.Compare:
        left, op, right = tree.children
        op = {"==": "=", "<>": "!="}.get(str(op), str(op))
        return A.Compare(self.operand(left), op, self.operand(right), _pos(tree))

    def operand(self, tree):
        if getattr(tree, "data", None) == "path":
            p = self.path(tree)
            # m["conv1"] (a string key first) is a layer selector; m.name, m.metrics["acc"] are attributes
            return self._as_selector(p) if p.steps and isinstance(p.steps[0], A.Key) and \
                isinstance(p.steps[0].key, str) else p
        return self.value(tree)

    # paths and selectors
    def path(self, tree) -> A.Path:
        var = str(tree.children[0])
        steps = []
        for s in tree.children[1:]:
            if s.data == "field":
                steps.append(A.Field(str(s.children[0])))
            else:
                tok = s.children[0]
                steps.append(A.Key(_string(tok) if tok.type == "STRING" else _number(tok)))
        return A.Path(var, tuple(steps), _pos(tree))

    def _as_selector(self, p: A.Path, what: str = "") -> A.Selector:
        hops = []
        for s in p.steps[1:]:
            if not isinstance(s, A.Field) or s.name not in ("next", "prev"):
                label = f".{s.name}" if isinstance(s, A.Field) else f"[{s.key!r}]"
                raise DQLSemanticError(f"after a layer selector only .next and .prev may follow, not {label}"
                                       + (f" ({what})" if what else ""), *p.pos)
            hops.append(s.name)
        pattern = p.steps[0].key
        try:
            patterns.compile_selector(_definitions_only(pattern))
        except DQLSemanticError as e:
            raise DQLSemanticError(e.bare_message, *p.pos) from None
        return A.Selector(p.var, pattern, tuple(hops), p.pos)

    def selector(self, tree, what: str) -> A.Selector:
        p = self.path(tree)
        if not p.steps or not isinstance(p.steps[0], A.Key) or not isinstance(p.steps[0].key, str):
            raise DQLSemanticError(f"{what} needs a layer selector like {p.var}[\"conv1\"], not {p.text()}", *p.pos)
        return self._as_selector(p, what)

    def edit(self, tree) -> A.Edit:
        p = self.path(tree.children[0])
        last = p.steps[-1] if p.steps else None
        if not isinstance(last, A.Field) or last.name not in ("insert", "delete"):
            raise DQLSemanticError(f"construct edits a selected layer: <selector>.insert = TEMPLATE(...) "
                                   f"or <selector>.delete, not {p.text()}", *p.pos)
        sel = self.selector(_Tree("path", tree.children[0].children[:-1], tree.children[0].meta),
                            what=f".{last.name}")
        if last.name == "insert":
            if tree.data != "edit_set":
                raise DQLSemanticError("insert needs a layer: .insert = TEMPLATE(...)", *p.pos)
            return A.Edit(sel, "insert", self.template(tree.children[2]), p.pos)
        if tree.data == "edit_set":
            raise DQLSemanticError(".delete takes no value", *p.pos)
        return A.Edit(sel, "delete", None, p.pos)

    def template(self, tree) -> A.Template:
        name = str(tree.children[0])
        args, kwargs = [], []
        for a in tree.children[1:]:
            if getattr(a, "data", None) == "kwarg":
                kwargs.append((str(a.children[0]), self.value(a.children[2])))
            elif getattr(a, "data", None) in ("path", "comparison"):
                raise DQLSemanticError(f"layer template {name}(...) takes values, not expressions", *_pos(a))
            else:
                if kwargs:
                    raise DQLSemanticError(f"{name}(...): a positional value after a keyword one", *_pos(a))
                args.append(self.value(a))
        if not name.isupper():
            raise DQLSemanticError(f"layer templates are upper-case layer types (POOL, RELU, CONV ...), "
                                   f"not {name!r}", *_pos(tree))
        return A.Template(name, tuple(args), tuple(kwargs), _pos(tree))

    # evaluate
    def vary(self, tree) -> A.Vary:
        p = self.path(tree.children[0])
        if p.var.lower() != "config" or not p.steps:
            raise DQLSemanticError(f"vary sets hyper-parameters: config.<name>, not {p.text()}", *p.pos)
        if tree.data == "vary_auto":
            return A.Vary(p, None)
        values = self.value(tree.children[2])
        if not values:
            raise DQLSemanticError(f"vary {p.text()} in []: no values to try", *p.pos)
        return A.Vary(p, values)

    def keep(self, tree, var: str) -> A.Keep:
        rule = str(tree.children[0]).lower()
        args = tree.children[1:]
        pos = _pos(tree)
        kwargs = {str(a.children[0]): self.value(a.children[2]) for a in args
                  if getattr(a, "data", None) == "kwarg"}
        pos_args = [a for a in args if getattr(a, "data", None) != "kwarg"]
        order = kwargs.pop("order", None)
        if order not in (None, "min", "max"):
            raise DQLSemanticError('keep ...(order=...) is "min" or "max"', *pos)
        if kwargs:
            raise DQLSemanticError(f"keep {rule}(...) has no option {next(iter(kwargs))!r}", *pos)
        if rule == "top":
            if len(pos_args) != 3:
                raise DQLSemanticError(f"keep top(k, {var}[\"metric\"], iterations): 3 values, got {len(pos_args)}",
                                       *pos)
            k, metric, iters = self.value(pos_args[0]), self.metric(pos_args[1], var), self.value(pos_args[2])
            _positive_int(k, "top's k", pos)
            _positive_int(iters, "the iterations", pos)
            return A.Keep("top", metric, iters, k=k, order=order, pos=pos)
        if rule == "threshold":
            if len(pos_args) != 2 or getattr(pos_args[0], "data", None) != "comparison":
                raise DQLSemanticError(f"keep threshold({var}[\"metric\"] < value, iterations)", *pos)
            left, op, right = pos_args[0].children
            value = self.value(right)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise DQLSemanticError("keep threshold(...) compares the metric with a number", *pos)
            iters = self.value(pos_args[1])
            _positive_int(iters, "the iterations", pos)
            op = {"==": "=", "<>": "!="}.get(str(op), str(op))
            if op not in ("<", "<=", ">", ">="):
                raise DQLSemanticError("keep threshold(...) needs <, <=, > or >=", *pos)
            return A.Keep("threshold", self.metric(left, var), iters, op=op, value=float(value), order=order, pos=pos)
        raise DQLSemanticError(f"keep takes top(...) or threshold(...), not {rule}(...)", *pos)

    def metric(self, tree, var: str) -> str:
        if getattr(tree, "data", None) == "path":
            p = self.path(tree)
            if p.var == var and len(p.steps) == 1 and isinstance(p.steps[0], A.Key) \
                    and isinstance(p.steps[0].key, str):
                return p.steps[0].key
        raise DQLSemanticError(f"a metric is written {var}[\"name\"]", *_pos(tree))

    # values
    def value(self, tree):
        from lark import Token
        if isinstance(tree, Token):
            if tree.type == "STRING":
                return _string(tree)
            if tree.type == "NUMBER":
                return _number(tree)
            raise DQLSemanticError(f"expected a value, got {str(tree)!r}", *_pos(tree))
        d = tree.data
        if d == "string":
            return _string(tree.children[0])
        if d == "number":
            return _number(tree.children[0])
        if d == "true":
            return True
        if d == "false":
            return False
        if d == "null":
            return None
        if d == "list":
            return tuple(self.value(x) for x in tree.children)
        raise DQLSemanticError("expected a value (string, number, list, true, false, null)", *_pos(tree))


_KEYWORDS = {"SELECT", "SLICE", "CONSTRUCT", "EVALUATE", "FROM", "WHERE", "MUTATE", "WITH", "VARY", "KEEP",
             "IN", "AUTO", "AND", "OR", "NOT", "LIKE", "HAS", "EQ"}


class _Tree:
    """A minimal stand-in for a lark Tree (a path without its last step)."""

    def __init__(self, data, children, meta):
        self.data, self.children, self.meta = data, children, meta


def _definitions_only(pattern: str) -> str:
    """The pattern with capture uses ($n outside "($n)") replaced by a literal
    placeholder: they are bound at run time, by earlier selectors."""
    out = pattern
    for ref in patterns.references(pattern):
        out = out.replace(ref, "x").replace("(x)", "(" + ref + ")")
    return out


def _positive_int(v, what: str, pos) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise DQLSemanticError(f"{what} must be a positive integer, not {v!r}", *pos)


# ------------------------------------------------------------ static checks
def _bound_vars(query: A.Query) -> set[str]:
    out = {query.var}
    if isinstance(query.source, A.AllVersions):
        out.add(query.source.var)
    return out


def _check_query(query: A.Query, outer: set[str]) -> None:
    if isinstance(query.source, A.Nested):
        _check_query(query.source.query, outer)
    bound = _bound_vars(query) | outer
    where = getattr(query, "where", None)
    captures: set[str] = set()
    if where is not None:
        for node in _walk_cond(where):
            for v, pos in _vars_of(node):
                if v not in bound:
                    raise DQLSemanticError(f"unknown variable {v!r} (bound here: {', '.join(sorted(bound))})", *pos)
            captures |= _captures_defined(node)
            for ref, pos in _capture_uses(node):
                if ref not in captures:
                    raise DQLSemanticError(f"{ref} is used before a selector captures it", *pos)
    if isinstance(query, A.Slice):
        for sel in (query.input, query.output):
            if sel.var not in bound:
                raise DQLSemanticError(f"unknown variable {sel.var!r}", *sel.pos)
    if isinstance(query, A.Construct):
        for e in query.edits:
            if e.selector.var not in bound:
                raise DQLSemanticError(f"unknown variable {e.selector.var!r}", *e.pos)
            defined = captures | patterns.definitions(e.selector.pattern)
            used = patterns.references(e.selector.pattern)
            if e.template is not None:
                for a in list(e.template.args) + [v for _, v in e.template.kwargs]:
                    if isinstance(a, str):
                        used |= patterns.references(a)
            missing = sorted(used - defined)
            if missing:
                raise DQLSemanticError(f"{missing[0]} is used before a selector captures it", *e.pos)


def _walk_cond(c):
    if isinstance(c, (A.And, A.Or)):
        for x in c.items:
            yield from _walk_cond(x)
    elif isinstance(c, A.Not):
        yield from _walk_cond(c.item)
    else:
        yield c


def _vars_of(node):
    items = []
    if isinstance(node, A.Compare):
        items = [node.left, node.right]
    elif isinstance(node, A.Like):
        items = [node.left]
    elif isinstance(node, A.Has):
        items = [node.selector]
    for x in items:
        if isinstance(x, (A.Path, A.Selector)):
            yield x.var, x.pos


def _captures_defined(node) -> set[str]:
    sels = [x for x in ([node.left, node.right] if isinstance(node, A.Compare) else
                        [node.left] if isinstance(node, A.Like) else
                        [node.selector] if isinstance(node, A.Has) else []) if isinstance(x, A.Selector)]
    return {c for s in sels for c in patterns.definitions(s.pattern)}


def _capture_uses(node):
    if isinstance(node, A.Has):
        refs = patterns.references(node.selector.pattern)
        for a in list(node.template.args) + [v for _, v in node.template.kwargs]:
            if isinstance(a, str):
                refs |= patterns.references(a)
        defined_here = patterns.definitions(node.selector.pattern)
        for r in sorted(refs - defined_here):
            yield r, node.pos


__all__ = ["parse", "DQLError", "DQLSyntaxError", "DQLSemanticError"]
