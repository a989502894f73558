"""DQL, ModelHub's query language over model versions (docs/dql.md).

    from dql import parse
    statement = parse('select m where m.name like "cnn%"')

`parse` checks a statement without a repository; running one needs the
versioning layer (pas.dlv).
"""
from .errors import DQLError, DQLSemanticError, DQLSyntaxError


def parse(text: str):
    """Parse and check one DQL statement (`dql.ast.Statement`)."""
    from .parser import parse as _parse
    return _parse(text)


__all__ = ["parse", "DQLError", "DQLSyntaxError", "DQLSemanticError"]
