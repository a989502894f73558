"""The hub (issue 11; docs/hub.md): `pas serve`, an HTTP API and web pages over repositories.

    pas serve --config hub.toml models=/srv/models other=/srv/other

Modules: `config` (hub.toml: repositories, users and tokens, permissions,
limits), `auth` (who a request is, what it may do), `repos` (opening the
served repositories per request), `wire` (the binary object batches of the
pull/publish protocol), `upload` (checking what a publisher sends before it
is stored), `api` (the JSON API), `pages` and `render_svg` (the web pages),
`app` (the ASGI application, limits, errors), `remote` (an ``http://``
repository as a pas `Repository`: pull and publish reuse `pas.transfer`).

FastAPI, uvicorn and Jinja2 are the ``hub`` extra; nothing here is imported
by `pas` unless `pas serve` runs.
"""
from __future__ import annotations

__all__ = ["create_app", "load_config", "open_remote", "pull", "publish"]


def __getattr__(name):
    if name == "create_app":
        from .app import create_app
        return create_app
    if name == "load_config":
        from .config import load_config
        return load_config
    if name in ("open_remote", "pull", "publish"):
        from . import remote
        return getattr(remote, name)
    raise AttributeError(name)
