"""Who a request is (a bearer token) and what it may do with a repository.

Tokens are compared by their SHA-256 (the configuration need not hold them),
in constant time. A private repository that the caller may not read answers
as if it did not exist (404), so its name does not leak."""
from __future__ import annotations

import hmac

from ..errors import NotFound
from .config import HubConfig, RepoConfig, token_digest
from .errors import Forbidden, Unauthorized


def user_of(cfg: HubConfig, authorization: str | None) -> str | None:
    """The user a request's ``Authorization: Bearer TOKEN`` header names; None without one."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    h = token_digest(token.strip())
    for known, user in cfg.tokens.items():
        if hmac.compare_digest(known, h):
            return user
    raise Unauthorized("unknown token")


def can_read(rc: RepoConfig, user: str | None) -> bool:
    return rc.public or (user is not None and (user in rc.readers or user in rc.owners))


def readable(cfg: HubConfig, name: str, user: str | None) -> RepoConfig:
    rc = cfg.repos.get(name)
    if rc is None or not can_read(rc, user):
        raise NotFound(f"no repository {name!r}" + ("" if user else " (or it is private: send a token)"))
    return rc


def writable(cfg: HubConfig, name: str, user: str | None) -> RepoConfig:
    rc = readable(cfg, name, user)
    if user is None:
        raise Unauthorized(f"publishing to {name!r} needs a token (Authorization: Bearer <token>)")
    if user not in rc.owners:
        raise Forbidden(f"user {user!r} may not write to {name!r} (owners: {', '.join(sorted(rc.owners)) or 'none'})")
    return rc
