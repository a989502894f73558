"""pas on an S3 API server: push, pull and retrieve against copying the raw files.

    python -m bench.s3_bench [--dataset lineage-finetune] [--out DIR]

A local S3 API server (moto's server mode on loopback, started here: the
`dev` extra) holds one bucket. In the same run, interleaved per step:

- **raw**: every version's file uploaded as one object, then downloaded
  again (obstore, the client pas uses; the issue's s3fs would downgrade the
  botocore moto needs);
- **pas push**: the versions, archived beforehand into a local repository,
  pushed to an S3 repository (`pas.transfer.copy_versions`: only missing
  objects, in 8 MiB packs), then **pull** into a fresh local repository and
  **retrieve** of every version straight from the S3 repository, both with
  the local cache off (every byte from the server).

Reported: seconds and MB/s of logical bytes (the source files), bytes and
requests by kind, objects in the bucket, and the incremental push of the
last version against the push of the others. Ratios against raw in the
same run are the headline: the server runs on the same 2 cores.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from .datasets import cache_dir
from .s3_local import new_bucket, start_moto

MB = 1e6


def _opts(endpoint: str, **extra) -> dict:
    return {"endpoint": endpoint, "access_key_id": "testing", "secret_access_key": "testing",
            "region": "us-east-1", "allow_http": "true", **extra}


def run(dataset: str, work: Path) -> dict:
    import obstore
    from obstore.store import S3Store as ObjectStore

    from pas.repo import Repository
    from pas.transfer import copy_versions
    man = json.loads((cache_dir() / "corpus" / "manifest.json").read_text())
    lin = next(l for l in man["lineages"] if l["name"] == dataset)
    files = [(v["id"], v["parent"], cache_dir() / "corpus" / v["path"]) for v in lin["versions"]]
    logical = sum(p.stat().st_size for _, _, p in files)
    server, endpoint = start_moto()
    out: dict = {"dataset": dataset, "versions": len(files), "logical_bytes": logical}
    try:
        bucket = new_bucket(endpoint, "pas-bench-")
        raw = ObjectStore(bucket, prefix="raw", endpoint=endpoint, access_key_id="testing",
                          secret_access_key="testing", region="us-east-1", client_options={"allow_http": True})
        # local repository, archived untimed (pushing is what is measured)
        local = Repository.init(work / "local")
        ids: dict[str, str] = {}
        for vid, parent, p in files:
            ids[vid] = local.archive(str(p), name=f"{dataset}/{vid}", parent=ids.get(parent)).version_id
        local.close()
        # raw upload / download
        t = time.perf_counter()
        for vid, _, p in files:
            obstore.put(raw, f"{vid}/{p.name}", p.read_bytes())
        out["raw_upload_s"] = time.perf_counter() - t
        t = time.perf_counter()
        got = sum(len(bytes(obstore.get(raw, f"{vid}/{p.name}").bytes())) for vid, _, p in files)
        out["raw_download_s"] = time.perf_counter() - t
        assert got == logical
        # pas push: all but the last version, then the last one (incremental)
        url = f"s3://{bucket}/repo"
        nocache = _opts(endpoint, cache_dir="none")
        Repository.init(url, storage_options=nocache).close()
        src = Repository.open(work / "local")
        refs = src.refs()
        names = [f"{dataset}/{vid}" for vid, _, _ in files]
        steps = []
        for label, batch in (("push", names[:-1]), ("push last", names[-1:])):
            dst = Repository.open(url, write=True, storage_options=nocache)
            t = time.perf_counter()
            rep = copy_versions(src, dst, [bytes.fromhex(refs[n]) for n in batch],
                                {n: bytes.fromhex(refs[n]) for n in batch})
            secs = time.perf_counter() - t
            steps.append({"step": label, "versions": len(rep.versions), "seconds": secs, "bytes": rep.bytes,
                          "chunks": rep.chunks, "chunks_present": rep.chunks_present,
                          "requests": dict(dst.store.stats)})
            dst.close()
        src.close()
        out["push"] = steps
        # pull everything into a fresh local repository, every byte from the server
        s3 = Repository.open(url, storage_options=nocache)
        fresh = Repository.init(work / "pulled")
        t = time.perf_counter()
        rep = copy_versions(s3, fresh, [bytes.fromhex(refs[n]) for n in names], {n: bytes.fromhex(refs[n]) for n in names})
        out["pull"] = {"seconds": time.perf_counter() - t, "bytes": rep.bytes, "requests": dict(s3.store.stats)}
        out["pulled_verify_ok"] = fresh.verify().ok
        fresh.close()
        s3.close()
        # retrieve every version straight from S3, cache off
        per = []
        for n in names:
            s3 = Repository.open(url, storage_options=nocache)
            before = dict(s3.store.stats)
            t = time.perf_counter()
            snap = s3.retrieve(n)
            secs = time.perf_counter() - t
            per.append({"version": n, "seconds": secs, "bytes": snap.nbytes,
                        "requests": {k: v - before.get(k, 0) for k, v in s3.store.stats.items()}})
            s3.close()
        out["retrieve"] = per
        objects = list(obstore.list(ObjectStore(bucket, prefix="repo", endpoint=endpoint, access_key_id="testing",
                                                secret_access_key="testing", region="us-east-1",
                                                client_options={"allow_http": True})).collect())
        out["objects_in_bucket"] = len(objects)
    finally:
        server.stop()
    return out


def report(r: dict) -> str:
    L = r["logical_bytes"] / MB
    push_s = sum(s["seconds"] for s in r["push"])
    retr_s = sum(x["seconds"] for x in r["retrieve"])
    lines = [f"# pas on S3 (moto on loopback): {r['dataset']}, {r['versions']} versions, {L:.1f} MB of files", "",
             "| step | seconds | MB/s (logical) | vs raw |", "|---|---:|---:|---:|",
             f"| raw upload (one object per file) | {r['raw_upload_s']:.2f} | {L / r['raw_upload_s']:.0f} | 1.00x |",
             f"| pas push (all versions) | {push_s:.2f} | {L / push_s:.0f} | {r['raw_upload_s'] / push_s:.2f}x |",
             f"| raw download | {r['raw_download_s']:.2f} | {L / r['raw_download_s']:.0f} | 1.00x |",
             f"| pas pull (all versions, no cache) | {r['pull']['seconds']:.2f} | {L / r['pull']['seconds']:.0f} | "
             f"{r['raw_download_s'] / r['pull']['seconds']:.2f}x |",
             f"| pas retrieve from S3 (every version, no cache) | {retr_s:.2f} | {L / retr_s:.0f} | "
             f"{r['raw_download_s'] / retr_s:.2f}x |", ""]
    first, last = r["push"]
    lines += [f"Push of {first['versions']} versions: {first['bytes'] / MB:.1f} MB, requests {first['requests']}; "
              f"then the last version alone: {last['bytes'] / MB:.1f} MB ({last['chunks_present']} of its chunks "
              f"already there), requests {last['requests']}. Pull: {r['pull']['bytes'] / MB:.1f} MB, requests "
              f"{r['pull']['requests']}; pulled repository verifies clean: {r['pulled_verify_ok']}. "
              f"Objects in the bucket: {r['objects_in_bucket']}.", "",
              "| retrieve | seconds | requests |", "|---|---:|---|"]
    lines += [f"| {x['version']} | {x['seconds']:.2f} | {x['requests']} |" for x in r["retrieve"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.s3_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="lineage-finetune", help="A lineage of the shared corpus.")
    ap.add_argument("--out", type=Path, default=Path("bench/results/s3"))
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="pas-s3-bench-"))
    try:
        r = run(args.dataset, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "s3.json").write_text(json.dumps(r, indent=2))
    text = report(r)
    (args.out / "s3.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
