"""Layer-name patterns of DQL selectors, and SQL ``like`` patterns.

A selector pattern (``m["conv[1,3,5]"]``, ``m["conv*($1)"]``) is matched
against whole layer names:

- ``*`` any run of characters (possibly none), ``?`` exactly one;
- ``[a,b,c]`` one of the comma-separated alternatives; an alternative
  ``lo-hi`` of two integers is every integer between them (``[1-3]`` is
  ``1``, ``2``, ``3``); anything else in brackets is literal text;
- ``($n)`` right after one of those (n = 1-9) captures what it matched as
  ``$n``, for templates and later selectors of the same statement
  (``RELU("relu$1")``);
- ``$n`` elsewhere stands for capture n (`substitute` fills it in first);
- every other character is itself.

The paper calls these "regex node selectors"; a glob-like form keeps layer
names with dots (``encoder.layer.0``) literal without escaping.
"""
from __future__ import annotations

import re
from functools import lru_cache

from .errors import DQLSemanticError

_CAPTURE = re.compile(r"\(\$([1-9])\)")
_REFERENCE = re.compile(r"\$([1-9])")
#: A range [lo-hi] expands to at most this many alternatives (a typo like [1-1000000] is refused).
MAX_RANGE = 10_000


@lru_cache(maxsize=1024)
def compile_selector(pattern: str) -> tuple[re.Pattern, tuple[str, ...]]:
    """The anchored regex of a selector pattern and the captures it defines, in order."""
    out, captures, i, n = [], [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            piece = ".*?"
            i += 1
        elif c == "?":
            piece = "."
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise DQLSemanticError(f"layer pattern {pattern!r}: '[' at position {i + 1} is never closed")
            piece = "(?:" + "|".join(re.escape(a) for a in _alternatives(pattern, pattern[i + 1:end])) + ")"
            i = end + 1
        elif c == "$" and _REFERENCE.match(pattern, i):
            raise DQLSemanticError(f"layer pattern {pattern!r}: ${pattern[i + 1]} is not bound here "
                                   "(a capture is used after the selector that defines it)")
        elif c == "(" and _CAPTURE.match(pattern, i):
            raise DQLSemanticError(f"layer pattern {pattern!r}: a capture ($n) must follow *, ? or [...]")
        else:
            piece = re.escape(c)
            i += 1
        m = _CAPTURE.match(pattern, i)
        if m and c in "*?[":
            name = f"c{m.group(1)}"
            if name in captures:
                raise DQLSemanticError(f"layer pattern {pattern!r}: ${m.group(1)} is captured twice")
            captures.append(name)
            piece = f"(?P<{name}>{piece})"
            i = m.end()
        out.append(piece)
    return re.compile("".join(out) + r"\Z", re.S), tuple(captures)


def _alternatives(pattern: str, body: str) -> list[str]:
    if not body:
        raise DQLSemanticError(f"layer pattern {pattern!r}: empty brackets []")
    alts: list[str] = []
    for part in body.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        if sep and lo.isdigit() and hi.isdigit():
            a, b = int(lo), int(hi)
            if b < a or b - a >= MAX_RANGE:
                raise DQLSemanticError(f"layer pattern {pattern!r}: bad range [{part}]")
            alts += [str(x) for x in range(a, b + 1)]
        elif part:
            alts.append(part)
    if not alts:
        raise DQLSemanticError(f"layer pattern {pattern!r}: no alternatives in [{body}]")
    # Longest first: "conv1" must not stop at "conv" + "1" of "conv10" when both are listed.
    return sorted(set(alts), key=lambda a: (-len(a), a))


def match(pattern: str, names, captures: dict[str, str] | None = None) -> list[tuple[str, dict[str, str]]]:
    """(name, its captures) for every name the pattern matches, in the given
    order. ``captures`` (from an earlier selector) are substituted first."""
    regex, _ = compile_selector(substitute(pattern, captures or {}))
    out = []
    for name in names:
        m = regex.match(name)
        if m:
            out.append((name, {"$" + k[1:]: v for k, v in m.groupdict().items()}))
    return out


def substitute(text: str, captures: dict[str, str]) -> str:
    """``text`` with each ``$n`` replaced by capture n (a ``($n)`` definition is kept)."""
    def repl(m: re.Match) -> str:
        start = m.start()
        if start > 0 and text[start - 1] == "(" and text[m.end():m.end() + 1] == ")":
            return m.group(0)       # "($1)": a definition, not a use
        key = "$" + m.group(1)
        if key not in captures:
            raise DQLSemanticError(f"{text!r}: {key} is not captured by any selector before it")
        return captures[key]
    return _REFERENCE.sub(repl, text)


def definitions(text: str) -> set[str]:
    """The captures ``text`` defines (``($n)``)."""
    return {"$" + m.group(1) for m in _CAPTURE.finditer(text)}


def references(text: str) -> set[str]:
    """The captures ``text`` uses (``$n`` not in a ``($n)`` definition)."""
    return {"$" + m.group(1) for m in _REFERENCE.finditer(text)} - definitions(text)


@lru_cache(maxsize=1024)
def like_regex(pattern: str) -> re.Pattern:
    """SQL ``like``: ``%`` any run, ``_`` one character, ``\\`` escapes the next; whole value, case-sensitive."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.S)


def like(value, pattern: str) -> bool:
    return value is not None and like_regex(pattern).match(str(value)) is not None
