"""DQL's typed errors: both are `pas.errors.BadInput` (CLI exit code 4)."""
from __future__ import annotations

from pas.errors import BadInput


class DQLError(BadInput):
    """A statement DQL cannot run. ``line``/``column`` (1-based) point into it when known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None, context: str = ""):
        where = f"line {line}, column {column}: " if line else ""
        super().__init__(where + message + (f"\n{context}" if context else ""))
        self.line, self.column, self.bare_message = line, column, message


class DQLSyntaxError(DQLError):
    """The text is not DQL: ``expected`` lists what could have come at that point."""

    def __init__(self, message: str, line: int, column: int, expected: list[str], context: str = ""):
        super().__init__(message, line, column, context)
        self.expected = expected


class DQLSemanticError(DQLError):
    """Well-formed but meaningless: an unbound variable, an unknown attribute or
    layer type, a selector that matches nothing, a malformed pattern."""
