"""The JSON API (and the binary object protocol) under ``/api``.

Read endpoints are plain ``def`` (FastAPI runs them on its thread pool: the
repository calls block). Uploads are read asynchronously with a size cap
before any work, then checked and stored on the pool."""
from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ..errors import BadInput
from . import auth, views, wire
from .errors import TooLarge

router = APIRouter(prefix="/api")


class Ctx:
    """The hub and the caller of one request."""

    def __init__(self, request: Request):
        self.hub = request.app.state.hub
        self.cfg = self.hub.cfg
        self.user = auth.user_of(self.cfg, request.headers.get("authorization"))

    def read(self, repo: str):
        auth.readable(self.cfg, repo, self.user)
        return self.hub.repos.read(repo)

    def text(self, value: str, what: str) -> str:
        if len(value) > self.cfg.limits.max_query_chars:
            raise BadInput(f"{what} is {len(value)} characters long (at most {self.cfg.limits.max_query_chars})")
        if "\x00" in value:
            raise BadInput(f"{what} holds a NUL character")
        return value


# ------------------------------------------------------------------ models
class KeysIn(BaseModel):
    keys: list[str] = Field(description="store keys in hex (kind byte + address or version id)")


class RefsIn(BaseModel):
    refs: dict[str, str] = Field(description="ref name -> version id (hex)")
    force: bool = False


def _keys(ctx: Ctx, body: KeysIn) -> list[bytes]:
    from .upload import check_key
    if len(body.keys) > ctx.cfg.limits.max_batch:
        raise BadInput(f"at most {ctx.cfg.limits.max_batch} keys per request ({len(body.keys)} given)")
    out = []
    for k in body.keys:
        try:
            key = bytes.fromhex(k)
        except ValueError:
            raise BadInput(f"key {k[:80]!r} is not hex") from None
        check_key(key)
        out.append(key)
    return out


# ------------------------------------------------------------ exploration
@router.get("/repos", summary="Repositories the caller may read")
def list_repos(ctx: Ctx = Depends(Ctx)) -> list[dict]:
    out = []
    for name, rc in sorted(ctx.cfg.repos.items()):
        if auth.can_read(rc, ctx.user):
            with ctx.hub.repos.read(name) as repo:
                out.append({"name": name, "public": rc.public, "writable": ctx.user in rc.owners,
                            **views.summary(repo)})
    return out


@router.get("/repos/{repo}/models", summary="Models and the lineage forest")
def list_models(repo: str, ctx: Ctx = Depends(Ctx)) -> dict:
    with ctx.read(repo) as r:
        return views.models(r)


@router.get("/repos/{repo}/search", summary="Versions by name or metadata text, or a DQL select")
def search(repo: str, q: Optional[str] = Query(None, description="text in names, messages, hyper-parameters, "
                                               "networks, files, weight metadata (case-insensitive)"),
           dql: Optional[str] = Query(None, description="a DQL select statement"),
           ctx: Ctx = Depends(Ctx)) -> list[dict]:
    if (q is None) == (dql is None):
        raise BadInput("give exactly one of q (text) and dql (a select statement)")
    with ctx.read(repo) as r:
        if q is not None:
            return views.search(r, ctx.text(q, "the search text"))
        return views.dql_select(r, ctx.text(dql, "the DQL statement"))


@router.get("/repos/{repo}/versions/{ref}", summary="One version: network, tensors, metadata, metrics")
def version(repo: str, ref: str, ctx: Ctx = Depends(Ctx)) -> dict:
    with ctx.read(repo) as r:
        return views.version_detail(r, ctx.text(ref, "the version"))


@router.get("/repos/{repo}/versions/{ref}/lineage", summary="Ancestry of a version and the lineage forest")
def lineage(repo: str, ref: str, ctx: Ctx = Depends(Ctx)) -> dict:
    with ctx.read(repo) as r:
        return views.lineage(r, ctx.text(ref, "the version"))


@router.get("/repos/{repo}/diff", summary="Two versions side by side (pas.dlv.diff)")
def diff(repo: str, a: str, b: str, weights: bool = True, ctx: Ctx = Depends(Ctx)) -> dict:
    with ctx.read(repo) as r:
        return views.diff(r, ctx.text(a, "version a"), ctx.text(b, "version b"), weights)


@router.get("/repos/{repo}/versions/{ref}/safetensors", summary="Download a version as safetensors (streamed)",
            response_class=StreamingResponse, responses={200: {"content": {"application/octet-stream": {}}}})
def download(repo: str, ref: str, ctx: Ctx = Depends(Ctx)):
    from .download import stream
    name, size, body = stream(lambda: ctx.read(repo), ctx.text(ref, "the version"))
    return StreamingResponse(body, media_type="application/octet-stream",
                             headers={"Content-Length": str(size),
                                      "Content-Disposition": f'attachment; filename="{_header_safe(name)}"'})


def _header_safe(name: str) -> str:
    # Ref names may hold characters a header cannot (quotes, non-ASCII).
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_.@") else "_" for c in name)


# ---------------------------------------------------------- pull protocol
@router.get("/limits", summary="The hub's limits (a publisher sizes its upload batches by them)")
def limits(ctx: Ctx = Depends(Ctx)) -> dict:
    return dict(ctx.cfg.limits.__dict__)


@router.get("/repos/{repo}/config", summary="The repository's configuration (what a remote reader needs)")
def repo_config(repo: str, ctx: Ctx = Depends(Ctx)) -> dict:
    with ctx.read(repo) as r:
        return dict(r.config)


@router.get("/repos/{repo}/refs", summary="Refs: name -> version id")
def refs(repo: str, ctx: Ctx = Depends(Ctx)) -> dict[str, str]:
    with ctx.read(repo) as r:
        return r.refs()


@router.get("/repos/{repo}/keys", summary="Store keys under a prefix, in byte order, paged")
def keys(repo: str, prefix: str = Query(..., description="hex; starts with a kind byte: 63 c, 74 t, 76 v, 72 r"),
         after: Optional[str] = Query(None, description="hex key to continue after"),
         limit: int = Query(1000, ge=1, le=10000), ctx: Ctx = Depends(Ctx)) -> dict:
    try:
        p = bytes.fromhex(ctx.text(prefix, "prefix"))
        start = bytes.fromhex(ctx.text(after, "after")) if after else None
    except ValueError:
        raise BadInput("prefix and after must be hex") from None
    if not p or p[:1] not in (b"c", b"t", b"v", b"r"):
        raise BadInput("the prefix must start with a kind byte (c, t, v or r)")
    out, more = [], False
    with ctx.read(repo) as r:
        for k in r.store.list_prefix(p):
            if start is not None and k <= start:
                continue
            if len(out) == limit:
                more = True
                break
            out.append(k.hex())
    return {"keys": out, "next": out[-1] if more else None}


@router.post("/repos/{repo}/objects/get", summary="Objects by key, as a binary batch (pull)",
             response_class=Response, responses={200: {"content": {wire.MEDIA_TYPE: {}}}})
def get_objects(repo: str, body: KeysIn, ctx: Ctx = Depends(Ctx)):
    want = _keys(ctx, body)
    with ctx.read(repo) as r:
        values = r.store.get_many(want)
    return Response(wire.encode(zip(want, values)), media_type=wire.MEDIA_TYPE)


@router.post("/repos/{repo}/objects/has", summary="Which keys the repository holds (publish)")
def has_objects(repo: str, body: KeysIn, ctx: Ctx = Depends(Ctx)) -> dict:
    want = _keys(ctx, body)
    with ctx.read(repo) as r:
        return {"present": [r.store.exists(k) for k in want]}


# ---------------------------------------------------------------- publish
async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise TooLarge(f"the request body is {declared} bytes; at most {limit} are accepted")
    data = bytearray()
    async for part in request.stream():
        data += part
        if len(data) > limit:
            raise TooLarge(f"the request body is over the {limit}-byte limit")
    return bytes(data)


@router.post("/repos/{repo}/objects", summary="Upload objects (publish): chunks, records, manifests",
             openapi_extra={"requestBody": {"required": True, "content": {wire.MEDIA_TYPE: {
                 "schema": {"type": "string", "format": "binary"}}}}})
async def put_objects(repo: str, request: Request) -> dict:
    from .upload import store_objects
    ctx = Ctx(request)
    auth.writable(ctx.cfg, repo, ctx.user)
    items = wire.decode(await _body(request, ctx.cfg.limits.max_upload_bytes), ctx.cfg.limits.max_batch)

    def work():
        with ctx.hub.repos.write(repo) as r:
            return store_objects(r, items)
    return await run_in_threadpool(work)


@router.post("/repos/{repo}/refs", summary="Move refs to uploaded versions (publish, last step)")
def move_refs(repo: str, body: RefsIn, ctx: Ctx = Depends(Ctx)) -> dict:
    from .upload import move_refs as do_move
    auth.writable(ctx.cfg, repo, ctx.user)
    with ctx.hub.repos.write(repo) as r:
        return do_move(r, body.refs, body.force)
