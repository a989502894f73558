"""Saved queries (``from "query3"``): name -> statement text, in the repository
folder as ``dql-queries.json`` (written whole to a temporary file, then
renamed: a crash leaves the old file or the new one)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from pas.names import check_ref_name

from .errors import DQLError

FILE = "dql-queries.json"


def load(root: Path | None) -> dict[str, str]:
    if root is None:
        return {}
    p = Path(root) / FILE
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DQLError(f"{p}: saved queries unreadable ({exc}); move it away to start afresh") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise DQLError(f"{p}: saved queries must be a JSON object of name -> statement")
    return data


def save(root: Path | None, name: str, text: str) -> None:
    """Save ``text`` (already parsed and checked by the caller) under ``name``."""
    if root is None:
        raise DQLError("this repository has no folder to keep saved queries in")
    check_ref_name(name)
    queries = load(root)
    queries[name] = text
    p = Path(root) / FILE
    tmp = p.with_name(p.name + f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(queries, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
