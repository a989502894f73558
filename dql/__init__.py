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


def run(repo, text: str, named: dict[str, str] | None = None) -> list[dict]:
    """Run one statement on ``repo`` (a `pas.repo.Repository`); ``named``: saved
    queries by name, for ``from "name"``. Rows: ``name``, ``id``, ``time``, ``message``."""
    from .executor import run as _run
    return _run(repo, text, named)


def execute(repo, text: str, named: dict[str, str] | None = None, base=None) -> dict:
    """``{"rows": [...], "stats": {...}}`` (stats: what evaluate trained); see `run`."""
    from .executor import execute as _execute
    return _execute(repo, text, named, base)


def explain(repo, text: str, named: dict[str, str] | None = None, base=None) -> dict:
    """What the statement would read, commit and train, without running it."""
    from .executor import explain as _explain
    return _explain(repo, text, named, base)


__all__ = ["parse", "run", "execute", "explain", "DQLError", "DQLSyntaxError", "DQLSemanticError"]
