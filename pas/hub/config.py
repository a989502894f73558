"""hub.toml: the served repositories, users and their tokens, permissions, limits.

    [limits]                      # all optional; defaults below
    max_upload_bytes = 67108864   # one request body (an object batch)
    max_batch = 1024              # keys per objects/get or objects/has request
    rate = 20.0                   # requests per second per client (token bucket)
    burst = 200
    max_query_chars = 4096        # search text and DQL statements

    [users.alice]
    token_sha256 = "<hex sha-256 of the token>"   # or token = "..." (test setups)

    [repos.models]
    path = "/srv/models"          # or an s3:// URL
    read = "public"               # "public" (anyone) or "private" (readers and owners)
    readers = ["bob"]
    owners = ["alice"]            # may publish (upload objects, move refs)

Repositories named on the command line (``NAME=PATH`` or ``PATH``, named by
its folder) are added as public and read-only unless the file says more.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInput

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")   # safe in URLs and paths as is


@dataclass
class Limits:
    max_upload_bytes: int = 64 << 20
    max_batch: int = 1024
    rate: float = 20.0
    burst: int = 200
    max_query_chars: int = 4096


@dataclass
class RepoConfig:
    name: str
    path: str
    public: bool = True
    readers: frozenset = frozenset()
    owners: frozenset = frozenset()


@dataclass
class HubConfig:
    repos: dict = field(default_factory=dict)           # name -> RepoConfig
    tokens: dict = field(default_factory=dict)          # sha-256 hex of a token -> user name
    limits: Limits = field(default_factory=Limits)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BadInput(f"{what} {name!r}: use 1-64 letters, digits, '.', '_' or '-' (starting with a letter or digit)")
    return name


def _str_list(v: object, what: str) -> frozenset:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise BadInput(f"{what} must be a list of user names")
    return frozenset(v)


def parse_config(doc: dict, base: Path | None = None) -> HubConfig:
    """A HubConfig from a parsed hub.toml (paths relative to ``base``)."""
    if not isinstance(doc, dict):
        raise BadInput("the hub configuration is not a table")
    unknown = set(doc) - {"limits", "users", "repos"}
    if unknown:
        raise BadInput(f"hub configuration: unknown sections {sorted(unknown)}")
    cfg = HubConfig()
    limits = doc.get("limits", {})
    if not isinstance(limits, dict):
        raise BadInput("[limits] must be a table")
    for key, value in limits.items():
        default = getattr(Limits, key, None)
        if default is None:
            raise BadInput(f"[limits]: unknown limit {key!r}")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise BadInput(f"[limits] {key} must be a positive number")
        setattr(cfg.limits, key, type(default)(value))
    for user, u in doc.get("users", {}).items():
        _check_name(user, "user")
        if not isinstance(u, dict):
            raise BadInput(f"[users.{user}] must be a table")
        if "token_sha256" in u:
            h = u["token_sha256"]
            if not isinstance(h, str) or not re.fullmatch(r"[0-9a-f]{64}", h):
                raise BadInput(f"[users.{user}] token_sha256 must be 64 lower-case hex digits")
        elif isinstance(u.get("token"), str) and len(u["token"]) >= 16:
            h = token_digest(u["token"])
        else:
            raise BadInput(f"[users.{user}] needs token_sha256 (or a token of 16+ characters)")
        if h in cfg.tokens:
            raise BadInput(f"[users.{user}] shares its token with [users.{cfg.tokens[h]}]")
        cfg.tokens[h] = user
    for name, r in doc.get("repos", {}).items():
        _check_name(name, "repository")
        if not isinstance(r, dict) or not isinstance(r.get("path"), str):
            raise BadInput(f"[repos.{name}] needs a path")
        read = r.get("read", "public")
        if read not in ("public", "private"):
            raise BadInput(f"[repos.{name}] read must be \"public\" or \"private\"")
        path = r["path"]
        if "://" not in path and base is not None:
            path = str((base / path).resolve())
        cfg.repos[name] = RepoConfig(name, path, read == "public", _str_list(r.get("readers", []), f"[repos.{name}] readers"),
                                     _str_list(r.get("owners", []), f"[repos.{name}] owners"))
    users = set(cfg.tokens.values())
    for rc in cfg.repos.values():
        missing = (rc.readers | rc.owners) - users
        if missing:
            raise BadInput(f"[repos.{rc.name}] names unknown users {sorted(missing)}")
    return cfg


def load_config(path: str | Path | None = None, repos: list[str] = ()) -> HubConfig:
    """hub.toml (if given) plus repositories named on the command line (``NAME=PATH`` or ``PATH``)."""
    if path is not None:
        try:
            import tomllib
        except ImportError:   # Python 3.10
            import tomli as tomllib
        p = Path(path)
        try:
            doc = tomllib.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise BadInput(f"{p}: cannot read the hub configuration ({exc.strerror or exc})") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise BadInput(f"{p}: not valid TOML ({exc})") from None
        cfg = parse_config(doc, p.parent)
    else:
        cfg = HubConfig()
    for spec in repos:
        name, sep, where = spec.partition("=")
        if not sep or "://" in name:
            where = spec
            name = Path(spec.rstrip("/")).name if "://" not in spec else spec.rstrip("/").rpartition("/")[2]
        _check_name(name, "repository")
        where = where if "://" in where else str(Path(where).resolve())
        if name in cfg.repos and cfg.repos[name].path != where:
            raise BadInput(f"repository {name!r} is named twice with different paths")
        cfg.repos.setdefault(name, RepoConfig(name, where))
    if not cfg.repos:
        raise BadInput("no repository to serve: name one (pas serve PATH) or list them in the configuration")
    return cfg
