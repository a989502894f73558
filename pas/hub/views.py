"""What the API returns and the pages show, computed from an open repository.

Reads manifests and dlv records (a few KiB per version); weights only where
asked (a diff reads the tensors whose addresses differ; stored sizes read
the chunks' lengths)."""
from __future__ import annotations

import math

from ..errors import BadInput
from ..records import CHUNK, TENSOR

MAX_TABLE_TENSORS = 2000   # stored sizes of more tensors than this are not computed for one page


def models(repo) -> dict:
    """Models (name, head, versions) and the lineage forest (`pas.dlv.tree`)."""
    from ..dlv import tree
    return tree(repo)


def search(repo, text: str) -> list[dict]:
    from ..dlv import search as dlv_search
    return dlv_search(repo, text)


def dql_select(repo, text: str) -> list[dict]:
    """Rows of a DQL ``select`` (other statements commit versions: refused here)."""
    import dql
    from dql import ast
    stmt = dql.parse(text)
    q = stmt.query
    while True:
        if not isinstance(q, ast.Select):
            raise BadInput(f"only select queries run here (this is a {type(q).__name__.lower()})")
        if not isinstance(q.source, ast.Nested):
            break
        q = q.source.query
    if isinstance(q.source, ast.Named):
        raise BadInput("saved queries are not served: write the query out")
    rows = dql.run(repo, text)
    return [{k: r[k] for k in ("name", "id", "time", "message") if k in r} for r in rows]


def _stored(repo, entry) -> dict:
    """How one tensor is stored: encoding (whole or delta op and its base) and the
    bytes of its own planes (inline frames, or its chunks)."""
    from ..reader import parse_record
    value = repo.store.get(TENSOR + entry.object)
    lay = parse_record(entry.object, value)
    keys = [] if lay.inline is not None else [CHUNK + c for plane in lay.addrs for c in plane]
    # The record itself (inline planes live in it), plus the chunks it names.
    stored = len(value) + sum(len(v) for v in repo.store.get_many(keys) if v is not None)
    return {"encoding": lay.op or "whole", "base": lay.base.hex() if lay.base else None,
            "stored_bytes": stored, "chunks": len(keys)}


def version_detail(repo, ref: str, stored_sizes: bool = True) -> dict:
    """One version: `pas.dlv.describe` plus its tensor table (sizes, stored bytes,
    encoding) and each metric's series over iterations."""
    from ..dlv import describe
    from ..dlv import metadata as md
    from ..dlv.model import open_version
    d = describe(repo, ref)
    mv = open_version(repo, d["id"])
    entries = mv.tensors
    rows = []
    with_stored = stored_sizes and len(entries) <= MAX_TABLE_TENSORS
    for e in entries:
        row = {"name": e.name, "dtype": e.out_dtype, "shape": list(e.shape), "elements": math.prod(e.shape),
               "bytes": e.nbytes if e.lossy is None else math.prod(e.shape) * _itemsize(e.out_dtype),
               "lossy": e.lossy.get("scheme") if e.lossy else None}
        if with_stored:
            row.update(_stored(repo, e))
        rows.append(row)
    log = d.pop("log")
    names = sorted({k for r in log for k in r if k != "iteration"})
    d["tensors"] = rows
    d["stored_sizes"] = with_stored
    d["series"] = {n: md.series(log, n) for n in names}
    d["network_def"] = mv.network
    d["metadata"] = mv.version.manifest["source"].get("metadata", {})
    d["format"] = mv.version.manifest["source"]["format"]
    return md.json_safe(d)


def _itemsize(dtype: str) -> int:
    from .. import dtypes
    return dtypes.get(dtype).itemsize


def lineage(repo, ref: str) -> dict:
    """The version's ancestry (`pas.dlv.lineage`) and its model's lineage forest."""
    from ..dlv import lineage as dlv_lineage, tree
    v = repo.version(ref)
    return {"id": v.hex, "name": v.name, "ancestry": dlv_lineage(repo, v.hex), "tree": tree(repo)["tree"]}


def diff(repo, a: str, b: str, weights: bool = True) -> dict:
    from ..dlv.diff import diff as dlv_diff
    return dlv_diff(repo, a, b, weights=weights)


def summary(repo) -> dict:
    refs = repo.refs()
    return {"models": len(refs), "versions": sum(1 for _ in repo.store.list_prefix(b"v"))}
