"""The hub's ASGI application: the API, the pages, limits and errors.

    from pas.hub import create_app, load_config
    app = create_app(load_config("hub.toml", ["models=/srv/models"]))

Every error is JSON ``{"error": {"status", "code", "message"}}`` with the
status of its type (pas/hub/errors.py) — pages render the same message as
HTML. Limits: a token bucket per client address (429 with Retry-After),
request bodies capped (413), query strings capped (414)."""
from __future__ import annotations

import logging
import threading
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import PasError
from .config import HubConfig
from .errors import RateLimited, body, status_of
from .repos import Repos

log = logging.getLogger("pas.hub")
MAX_QUERY_STRING = 8192


class Hub:
    def __init__(self, cfg: HubConfig):
        self.cfg = cfg
        self.repos = Repos(cfg)
        self.limiter = RateLimiter(cfg.limits.rate, cfg.limits.burst)


class RateLimiter:
    """A token bucket per client: ``rate`` requests a second, bursts of ``burst``."""

    def __init__(self, rate: float, burst: int, max_clients: int = 10000):
        self.rate, self.burst, self.max_clients = rate, burst, max_clients
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
                raise RateLimited(f"too many requests from {client}: at most {self.rate:g} a second "
                                  f"(bursts of {self.burst}); retry in {wait:.2f} s", wait)
            if len(self._buckets) >= self.max_clients and client not in self._buckets:
                # Bounded memory: forget clients idle long enough to have refilled (a full
                # bucket is what a new client gets anyway); if all are busy, start over.
                self._buckets = {c: (t, at) for c, (t, at) in self._buckets.items()
                                 if t + (now - at) * self.rate < self.burst}
                if len(self._buckets) >= self.max_clients:
                    self._buckets = {}
            self._buckets[client] = (tokens - 1.0, now)


class BodyLimit:
    """Caps every request body at ``limit`` bytes as it is read (JSON bodies too,
    which the framework would otherwise read whole): a TooLarge raised inside the
    route's read reaches the error handlers as a 413."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                from .errors import TooLarge
                exc = TooLarge(f"the request body is {value[:20].decode('latin-1')} bytes; at most {self.limit} "
                               f"are accepted")
                return await JSONResponse(body(413, exc.code, str(exc)), status_code=413)(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    from .errors import TooLarge
                    # The framework turns errors while it parses a body into a 400: the
                    # mark lets the handler answer what happened.
                    scope["pas.body_too_large"] = self.limit
                    raise TooLarge(f"the request body is over the {self.limit}-byte limit")
            return message
        await self.app(scope, limited, send)


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api") and "text/html" in request.headers.get("accept", "")


def error_response(request: Request, status: int, code: str, message: str, headers: dict | None = None):
    if _wants_html(request):
        from .pages import error_page
        return HTMLResponse(error_page(status, message), status_code=status, headers=headers)
    return JSONResponse(body(status, code, message), status_code=status, headers=headers)


def create_app(cfg: HubConfig) -> FastAPI:
    from contextlib import asynccontextmanager

    from . import api, pages
    hub = Hub(cfg)

    @asynccontextmanager
    async def lifespan(app):
        yield
        hub.repos.close()      # the shared read-only handles

    # No /docs or /redoc: they load their scripts from a CDN (the spec is /openapi.json).
    app = FastAPI(title="pas hub", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Publish, explore, compare and pull model versions stored by pas (docs/hub.md).")
    app.state.hub = hub
    app.include_router(api.router)
    app.include_router(pages.router)
    app.add_middleware(BodyLimit, limit=cfg.limits.max_upload_bytes)

    @app.middleware("http")
    async def limits(request: Request, call_next):
        if len(request.scope.get("query_string", b"")) > MAX_QUERY_STRING:
            return error_response(request, 414, "uri_too_long",
                                  f"the query string is over {MAX_QUERY_STRING} bytes")
        client = request.client.host if request.client else "unknown"
        try:
            app.state.hub.limiter.take(client)
        except RateLimited as exc:
            return error_response(request, 429, exc.code, str(exc), {"Retry-After": str(max(1, round(exc.retry_after)))})
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if response.headers.get("content-type", "").startswith("text/html"):
            # Server-rendered pages with one inline script of our own: nothing else runs.
            response.headers.setdefault("Content-Security-Policy",
                                        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                                        "script-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; "
                                        "frame-ancestors 'none'")
        return response

    @app.exception_handler(PasError)
    async def pas_error(request: Request, exc: PasError):
        status, code = status_of(exc)
        if status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return error_response(request, status, code, str(exc), headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors()[:5]:
            where = ".".join(str(x) for x in e.get("loc", ()))
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        return error_response(request, 422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if request.scope.get("pas.body_too_large"):
            return error_response(request, 413, "too_large",
                                  f"the request body is over the {request.scope['pas.body_too_large']}-byte limit")
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such page or endpoint: {request.url.path[:200]}"
        return error_response(request, exc.status_code, "http_error", message)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return error_response(request, 500, "internal_error", f"internal error ({type(exc).__name__})")

    return app


def serve(cfg: HubConfig, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    import uvicorn
    Hub(cfg).repos.check()
    uvicorn.run(create_app(cfg), host=host, port=port, log_level=log_level,
                limit_concurrency=256, timeout_keep_alive=10)
