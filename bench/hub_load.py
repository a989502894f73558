"""Load test of the hub on loopback: concurrent downloads and searches (issue 11).

    python -m bench.hub_load                       # 8 clients for 20 s
    python -m bench.hub_load --clients 4 --seconds 5 --json out.json

Builds the sample repository (pas/hub/sample.py) plus one bigger model
(``big``: 8 MiB of float32 in 4 tensors, stored in chunks), starts
`pas serve` on a free 127.0.0.1 port in its own process, and runs
``--clients`` threads (one HTTP connection each) for ``--seconds``: each
request in turn is a download of ``big`` as safetensors (streamed, read to
the end), a download of ``digits-ft``, a text search, a DQL select, and a
version page's JSON (one untimed request of each first: warm-up). Reports throughput (requests/s, MB/s downloaded) and
latency percentiles per kind and overall. Bounded: it stops after
``--seconds`` or ``--max-requests``, whichever comes first, and stops the
server. Nothing leaves the machine."""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

KINDS = [("download-big", "/api/repos/bench/versions/big/safetensors"),
         ("download-small", "/api/repos/bench/versions/digits-ft/safetensors"),
         ("search", "/api/repos/bench/search?q=sgd"),
         ("dql", "/api/repos/bench/search?dql=select%20m%20where%20m.hparams.lr%20%3C%200.05"),
         ("version", "/api/repos/bench/versions/digits-ft")]


def _prepare(tmp: Path) -> Path:
    from pas.hub import sample
    from pas.repo import Repository
    from pas.snapshot import Snapshot, Tensor
    sample.build(tmp / "bench")
    rng = np.random.default_rng(0)
    s = Snapshot()
    for i in range(4):
        s.add(Tensor.from_array(f"layer{i}.weight", rng.standard_normal((512, 1024)).astype(np.float32)))
    with Repository.open(tmp / "bench", write=True) as r:
        r.archive_snapshot(s, "big", message="8 MiB of float32")
    cfg = tmp / "hub.toml"
    # The load comes from one address: the per-client rate limit is lifted for it.
    cfg.write_text(f'[limits]\nrate = 1000000.0\nburst = 1000000\n[repos.bench]\npath = "{tmp / "bench"}"\n')
    return cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def run(clients: int = 8, seconds: float = 20.0, max_requests: int = 1_000_000) -> dict:
    import httpx
    with tempfile.TemporaryDirectory(prefix="pas-hub-load-") as d:
        tmp = Path(d)
        cfg = _prepare(tmp)
        port = _free_port()
        server = subprocess.Popen([sys.executable, "-m", "pas.cli", "serve", "--config", str(cfg), "--host",
                                   "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/api/repos", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the hub did not start: {server.stderr.read().decode()[-2000:]}")
                time.sleep(0.1)
            # Warm up (the server's first decode compiles its kernels): not timed.
            for _, path in KINDS:
                httpx.get(url + path, timeout=120).raise_for_status()
            results: dict[str, list[float]] = {k: [] for k, _ in KINDS}
            errors: list[str] = []
            nbytes = [0]
            lock = threading.Lock()
            count = [0]
            stop_at = time.monotonic() + seconds

            def client(i: int) -> None:
                with httpx.Client(base_url=url, timeout=60) as h:
                    j = i
                    while time.monotonic() < stop_at:
                        with lock:
                            if count[0] >= max_requests:
                                return
                            count[0] += 1
                        kind, path = KINDS[j % len(KINDS)]
                        j += 1
                        t = time.perf_counter()
                        n = 0
                        try:
                            with h.stream("GET", path) as resp:
                                for part in resp.iter_bytes():
                                    n += len(part)
                                ok = resp.status_code == 200
                        except httpx.HTTPError as exc:
                            ok, n = False, 0
                            resp = exc
                        dt = time.perf_counter() - t
                        with lock:
                            if ok:
                                results[kind].append(dt)
                                nbytes[0] += n if kind.startswith("download") else 0
                            else:
                                errors.append(f"{kind}: {getattr(resp, 'status_code', resp)}")

            started = time.perf_counter()
            threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - started
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
    allx = [x for v in results.values() for x in v]
    ms = lambda x: round(1000 * x, 2)   # noqa: E731
    out = {"clients": clients, "seconds": round(wall, 2), "requests": len(allx), "errors": len(errors),
           "error_samples": errors[:5], "requests_per_s": round(len(allx) / wall, 1),
           "download_MB_per_s": round(nbytes[0] / wall / 1e6, 1),
           "latency_ms": {"p50": ms(_pct(allx, 50)), "p95": ms(_pct(allx, 95)), "p99": ms(_pct(allx, 99))},
           "by_kind": {k: {"requests": len(v), "per_s": round(len(v) / wall, 1), "p50_ms": ms(_pct(v, 50)),
                           "p95_ms": ms(_pct(v, 95)), "p99_ms": ms(_pct(v, 99))} for k, v in results.items()},
           "cpus": os.cpu_count()}
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--max-requests", type=int, default=1_000_000)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args(argv)
    if not (1 <= a.clients <= 64 and 0 < a.seconds <= 600):
        ap.error("--clients 1..64 and --seconds up to 600 (a bounded test)")
    res = run(a.clients, a.seconds, a.max_requests)
    print(f"{res['clients']} clients, {res['seconds']} s: {res['requests']} requests ({res['requests_per_s']}/s), "
          f"{res['errors']} errors, downloads {res['download_MB_per_s']} MB/s; latency p50 "
          f"{res['latency_ms']['p50']} ms, p95 {res['latency_ms']['p95']} ms, p99 {res['latency_ms']['p99']} ms")
    for k, v in res["by_kind"].items():
        print(f"  {k:15s} {v['requests']:6d} req {v['per_s']:8.1f}/s  p50 {v['p50_ms']:8.2f}  p95 {v['p95_ms']:8.2f}  "
              f"p99 {v['p99_ms']:8.2f} ms")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
