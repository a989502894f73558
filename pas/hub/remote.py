"""An ``http://`` repository served by `pas serve`, as a pas `Repository`.

`HttpStore` is the `Store` interface over the hub's object protocol
(pas/hub/api.py: keys, objects/get, objects/has, objects, refs), so
`pas.transfer.copy_versions` pulls from a hub and publishes to one
unchanged: it asks the same questions (exists, get_many, put_many, write)
and keeps the same order (chunks, records, manifests, refs last), and the
hub checks every object again on arrival (pas/hub/upload.py).

    from pas.hub.remote import pull, publish
    with Repository.open("local", write=True) as repo:
        pull("http://127.0.0.1:8000/models", ["digits"], repo)
        publish(repo, "http://127.0.0.1:8000/models", ["digits-ft"], token="...")

A remote repository is also readable like a local one:
``open_remote(url).retrieve("digits")`` reads chunks in batches over HTTP,
each checked against its address as always.
"""
from __future__ import annotations

import json
import time
from typing import Iterable, Iterator, Sequence
from urllib.parse import quote, urlsplit

from ..errors import BadInput, IntegrityError, NotARepository, NotFound, RepositoryLocked, StoreError
from ..records import CHUNK, REF, TENSOR, VERSION
from ..stores.base import Store
from . import wire
from .errors import Forbidden, TooLarge, Unauthorized

BATCH_KEYS = 1024
BATCH_BYTES = 16 << 20     # upload requests stay well under the hub's default 64 MiB cap
RETRIES_429 = 5


def split_url(url: str) -> tuple[str, str]:
    """(server base URL, repository name) of ``http://host:port/NAME`` (or ``.../r/NAME``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadInput(f"{url!r} is not an http(s) URL of a hub repository")
    path = parts.path.rstrip("/")
    base, _, name = path.rpartition("/")
    if not name:
        raise BadInput(f"{url!r} names no repository (http://host:port/NAME)")
    if base.endswith("/r"):
        base = base[:-2]
    return f"{parts.scheme}://{parts.netloc}{base}", name


_ERRORS = {401: Unauthorized, 403: Forbidden, 404: NotFound, 413: TooLarge, 423: RepositoryLocked}


def _raise_for(resp, what: str) -> None:
    if resp.status_code < 400:
        return
    try:
        err = resp.json()["error"]
        message, code = err["message"], err.get("code", "")
    except (ValueError, KeyError, TypeError):
        message, code = resp.text[:300] or resp.reason_phrase, ""
    message = f"{what}: {message}"
    if code == "not_a_repository":
        raise NotARepository(message)
    if resp.status_code in _ERRORS:
        raise _ERRORS[resp.status_code](message)
    if resp.status_code in (400, 422, 414):
        raise BadInput(message)
    if code == "integrity_error":
        raise IntegrityError(message)
    raise StoreError(f"{message} (HTTP {resp.status_code})")


class HttpStore(Store):
    """The `Store` interface over a hub repository's object protocol."""

    def __init__(self, url: str, token: str | None = None, read_only: bool = True, timeout: float = 60.0):
        import httpx
        self.base, self.name = split_url(url)
        self.url = url
        self.read_only = read_only
        self.force = False                  # publish: move refs that are not fast-forwards
        self._known: dict[bytes, bool] = {}  # key -> present at the hub (from has / our own uploads)
        self.batch_keys, self.batch_bytes = BATCH_KEYS, BATCH_BYTES
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=f"{self.base}/api/repos/{quote(self.name, safe='')}", headers=headers,
                                  timeout=timeout)

    # --------------------------------------------------------------- requests
    def _request(self, method: str, path: str, what: str, **kw):
        import httpx
        for attempt in range(RETRIES_429 + 1):
            try:
                resp = self._http.request(method, path, **kw)
            except httpx.HTTPError as exc:
                raise StoreError(f"{self.url}: {what}: {exc}") from None
            if resp.status_code == 429 and attempt < RETRIES_429:
                time.sleep(min(10.0, float(resp.headers.get("retry-after", "1") or 1)))
                continue
            _raise_for(resp, f"{self.url}: {what}")
            return resp
        raise StoreError(f"{self.url}: {what}: still rate limited")   # unreachable: the last 429 raised above

    def config(self) -> dict:
        return self._request("GET", "/config", "reading the configuration").json()

    def fit_limits(self) -> None:
        """Size batches by the hub's limits (half its body cap: headers, framing)."""
        lim = self._request("GET", f"{self.base}/api/limits", "reading the limits").json()
        self.batch_keys = max(1, min(BATCH_KEYS, int(lim["max_batch"])))
        self.batch_bytes = max(1, min(BATCH_BYTES, int(lim["max_upload_bytes"]) // 2))

    # ------------------------------------------------------------ read side
    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        out: list[bytes | None] = []
        keys = [bytes(k) for k in keys]
        for i in range(0, len(keys), self.batch_keys):
            part = keys[i:i + self.batch_keys]
            resp = self._request("POST", "/objects/get", "reading objects", json={"keys": [k.hex() for k in part]})
            items = wire.decode(resp.content, len(part))
            if [k for k, _ in items] != part:
                raise IntegrityError(f"{self.url}: the hub answered other objects than were asked for")
            for k, v in items:
                self._known[k] = v is not None
            out += [v for _, v in items]
        return out

    def exists(self, key: bytes) -> bool:
        key = bytes(key)
        if key not in self._known:
            self.prefetch([key])
        return self._known[key]

    def prefetch(self, keys: Iterable[bytes]) -> list[bytes]:
        """Ask which ``keys`` the hub holds (in batches); later `exists` calls answer
        from memory. Returns the missing ones."""
        want = [bytes(k) for k in dict.fromkeys(keys) if bytes(k) not in self._known]
        for i in range(0, len(want), self.batch_keys):
            part = want[i:i + self.batch_keys]
            present = self._request("POST", "/objects/has", "asking which objects exist",
                                    json={"keys": [k.hex() for k in part]}).json()["present"]
            if len(present) != len(part):
                raise StoreError(f"{self.url}: the hub answered {len(present)} of {len(part)} keys")
            self._known.update(zip(part, (bool(p) for p in present)))
        return [k for k in dict.fromkeys(bytes(k) for k in keys) if not self._known[k]]

    def list_prefix(self, prefix: bytes) -> Iterator[bytes]:
        after = None
        while True:
            params = {"prefix": bytes(prefix).hex(), "limit": 10000}
            if after:
                params["after"] = after
            page = self._request("GET", "/keys", "listing keys", params=params).json()
            for k in page["keys"]:
                yield bytes.fromhex(k)
            after = page["next"]
            if not after:
                return

    def items_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        keys = list(self.list_prefix(prefix))
        for i in range(0, len(keys), BATCH_KEYS):
            part = keys[i:i + BATCH_KEYS]
            for k, v in zip(part, self.get_many(part)):
                if v is not None:
                    yield k, v

    # ----------------------------------------------------------- write side
    def _check_writable(self) -> None:
        if self.read_only:
            raise BadInput(f"{self.url} was opened read-only")

    def put_if_absent(self, key: bytes, value: bytes) -> bool:
        if self.exists(key):
            return False
        self.put_many([(key, value)])
        return True

    def put_many(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        self._check_writable()
        batch, size = [], 0
        for k, v in items:
            k, v = bytes(k), bytes(v)
            if k[:1] == REF:
                raise BadInput("refs are written with write(), after the objects")
            if batch and (len(batch) >= self.batch_keys or size + len(v) > self.batch_bytes):
                self._upload(batch)
                batch, size = [], 0
            batch.append((k, v))
            size += len(k) + len(v) + 6
        if batch:
            self._upload(batch)

    def _upload(self, batch: list[tuple[bytes, bytes]]) -> None:
        self._request("POST", "/objects", f"uploading {len(batch)} objects", content=wire.encode(batch),
                      headers={"Content-Type": wire.MEDIA_TYPE})
        for k, _ in batch:
            self._known[k] = True

    def write(self, puts: Iterable[tuple[bytes, bytes]] = (), deletes: Iterable[bytes] = (),
              sync: bool = False) -> None:
        self._check_writable()
        if list(deletes):
            raise BadInput(f"{self.url}: a hub repository does not delete objects over the protocol")
        puts = [(bytes(k), bytes(v)) for k, v in puts]
        objects = [(k, v) for k, v in puts if k[:1] != REF]
        refs = [(k, v) for k, v in puts if k[:1] == REF]
        if objects:
            self.put_many(objects)
        if refs:
            from ..records import unpack_ref
            body = {"refs": {k[1:].decode(): unpack_ref(v, k[1:].decode()).hex() for k, v in refs},
                    "force": self.force}
            self._request("POST", "/refs", "moving refs", content=json.dumps(body),
                          headers={"Content-Type": "application/json"})
            for k, _ in refs:
                self._known.pop(k, None)

    def close(self) -> None:
        self._http.close()


def open_remote(url: str, token: str | None = None, write: bool = False):
    """A `Repository` over a hub repository (read-only unless ``write``: publishing needs a token)."""
    from ..repo import Repository, check_config
    store = HttpStore(url, token, read_only=not write)
    try:
        store.fit_limits()
        config = check_config(store.config())
    except (ValueError, TypeError) as exc:
        store.close()
        raise NotARepository(f"{url}: the hub sent a configuration pas cannot use ({exc})") from None
    except BaseException:
        store.close()
        raise
    return Repository(store, config, None)


def pull(url: str, names: list[str], dst, token: str | None = None, force: bool = False):
    """Copy models (refs or version ids, with their lineage) from a hub into ``dst`` (open for writing)."""
    from ..transfer import copy_versions, wanted
    with open_remote(url, token) as src:
        refs, versions = wanted(src, names)
        return copy_versions(src, dst, versions, refs, force=force)


def publish(src, url: str, names: list[str], token: str, force: bool = False):
    """Copy models from ``src`` to a hub: only the objects it lacks, refs last.

    What the hub holds is asked in batches first (manifests, then the records of
    the versions it lacks, then their chunks and delta bases), so the transfer
    that follows (`copy_versions`, unchanged) makes one request per batch, not per object."""
    from ..transfer import copy_versions, wanted
    with open_remote(url, token, write=True) as dst:
        dst.store.force = force
        refs, versions = wanted(src, names)
        _prefetch_closure(src, dst.store, versions + list(refs.values()))
        return copy_versions(src, dst, versions, refs, force=force)


def _prefetch_closure(src, remote: HttpStore, versions: list[bytes]) -> None:
    from ..reader import parse_record
    from ..transfer import ancestors
    ids: list[bytes] = []
    for vid in versions:
        ids += [a for a in ancestors(src.store, vid) if a not in ids]
    missing_versions = [k[1:] for k in remote.prefetch([VERSION + v for v in ids])]
    objects = {e.object for vid in missing_versions for v in [src.version(vid)] for e in v.tensors + v.files}
    todo = remote.prefetch([TENSOR + a for a in objects])
    while todo:
        chunks, bases = [], []
        for key, value in zip(todo, src.store.get_many(todo)):
            if value is None:
                continue            # copy_versions reports it, typed
            lay = parse_record(key[1:], value)
            chunks += [CHUNK + c for plane in lay.addrs for c in plane]
            if lay.base is not None:
                bases.append(TENSOR + lay.base)
        remote.prefetch(chunks)
        todo = remote.prefetch(bases)


__all__ = ["HttpStore", "open_remote", "pull", "publish", "split_url"]
