"""A real S3 API server on loopback for the S3 tests: moto's server mode, and a
small HTTP proxy in front of it that counts requests and bytes and injects
faults (HTTP 500, or no answer until the client times out, on the Nth request).

The proxy also applies conditional writes (If-Match / If-None-Match) one at a
time: moto checks the condition and then stores, unlocked, so two racing
conditional PUTs could both pass there; S3 itself decides them atomically.
"""
from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench.s3_local import CREDENTIALS, new_bucket, s3_client, start_moto  # noqa: F401 - the tests' entry point


class FaultProxy:
    """HTTP proxy to ``upstream``. ``faults[n] = "500" | "hang"`` fails request n (1-based)."""

    def __init__(self, upstream: str, hang_seconds: float = 4.0):
        self.upstream = upstream.removeprefix("http://")
        self.faults: dict[int, str] = {}
        self.count = 0
        self.requests: Counter = Counter()       # by method
        self.bytes_out: Counter = Counter()      # response body bytes by method
        self.bytes_in: Counter = Counter()       # request body bytes (uploads) by method
        self.access_keys: set[str] = set()       # access key ids that signed requests
        self.hang_seconds = hang_seconds
        self._lock = threading.Lock()
        self._conditional = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                auth = self.headers.get("Authorization") or ""
                with proxy._lock:
                    if "Credential=" in auth:
                        proxy.access_keys.add(auth.split("Credential=", 1)[1].split("/", 1)[0])
                    proxy.count += 1
                    n = proxy.count
                    proxy.requests[self.command] += 1
                    proxy.bytes_in[self.command] += len(body)
                    fault = proxy.faults.get(n)
                if fault == "500":
                    msg = b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"
                    self.send_response(500)
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                if fault == "hang":
                    time.sleep(proxy.hang_seconds)      # the client gives up first
                    self.close_connection = True
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                conditional = "If-Match" in self.headers or "If-None-Match" in self.headers
                if conditional:
                    proxy._conditional.acquire()
                try:
                    conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                    conn.request(self.command, self.path, body=body if body else None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    conn.close()
                finally:
                    if conditional:
                        proxy._conditional.release()
                with proxy._lock:
                    proxy.bytes_out[self.command] += len(data)
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "connection", "transfer-encoding", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def reset(self) -> None:
        with self._lock:
            self.faults, self.count = {}, 0
            self.requests.clear()
            self.bytes_out.clear()
            self.bytes_in.clear()
            self.access_keys.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def endpoint_fixture(name: str = "s3_endpoint", scope: str = "module"):
    """A pytest fixture ``name``: the endpoint URL of a moto server started once per
    ``scope`` (``s3_endpoint = s3_server.endpoint_fixture()`` in a test module); a
    session that never asks for it starts none."""
    import pytest

    @pytest.fixture(scope=scope, name=name)
    def endpoint():
        server, url = start_moto()
        yield url
        server.stop()
    return endpoint


def proxy_fixture():
    """A module-scoped pytest fixture: a moto server behind a `FaultProxy`
    (``proxy = s3_server.proxy_fixture()`` in a test module)."""
    import pytest

    @pytest.fixture(scope="module")
    def proxy():
        server, endpoint = start_moto()
        p = FaultProxy(endpoint)
        yield p
        p.close()
        server.stop()
    return proxy
