"""The quick-start job: archive a small sample lineage, retrieve it, print footprint and latency.

    python -m pas.demo [--dir demo-repo] [--versions 4]

The lineage is generated here (no downloads): a base model of transformer-like
float32 tensors, then fine-tunes that move most weights a little, freeze some
layers (identical tensors) and add a classifier head. Each version is written
as a safetensors file, archived into an embedded RocksDB repository, read back
and compared byte for byte.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

import numpy as np


def make_lineage(workdir: Path, versions: int, seed: int = 0) -> list[Path]:
    from .formats import write
    from .snapshot import Snapshot, Tensor
    rng = np.random.default_rng(seed)
    d, ff, vocab, layers = 256, 1024, 8000, 4
    base: dict[str, np.ndarray] = {"embeddings.word": rng.normal(0, 0.02, (vocab, d))}
    for i in range(layers):
        p = f"encoder.{i}."
        for w, shape in (("attn.qkv.weight", (3 * d, d)), ("attn.out.weight", (d, d)),
                         ("ffn.up.weight", (ff, d)), ("ffn.down.weight", (d, ff))):
            base[p + w] = rng.normal(0, 0.05, shape)
        base[p + "ffn.up.bias"] = rng.normal(0, 0.01, ff)
        base[p + "norm.weight"] = 1 + rng.normal(0, 0.05, d)
        base[p + "norm.bias"] = rng.normal(0, 0.01, d)
    weights = {k: v.astype(np.float32) for k, v in base.items()}
    paths = []
    for v in range(versions):
        if v > 0:  # a fine-tune step: small updates, the first layers frozen
            for k, w in weights.items():
                if not k.startswith(("encoder.0.", "embeddings.")):
                    weights[k] = (w + rng.normal(0, 1e-4, w.shape).astype(np.float32)).astype(np.float32)
            weights["classifier.weight"] = rng.normal(0, 0.05, (8, d)).astype(np.float32)
            weights["classifier.bias"] = np.zeros(8, np.float32)
        snap = Snapshot(metadata={"demo_version": str(v)})
        for k, w in weights.items():
            snap.add(Tensor.from_array(k, w))
        path = workdir / f"v{v}.safetensors"
        write(snap, path, "safetensors")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path("demo-repo"))
    ap.add_argument("--versions", type=int, default=4)
    args = ap.parse_args(argv)

    from . import formats
    from .repo import Repository
    if args.dir.exists():
        shutil.rmtree(args.dir)
    src = args.dir / "files"
    src.mkdir(parents=True)
    paths = make_lineage(src, args.versions)
    raw_total = sum(p.stat().st_size for p in paths)
    print(f"sample lineage: {len(paths)} versions, {raw_total / 1e6:.1f} MB of safetensors in {src}")

    repo = Repository.init(args.dir)
    print(f"\n{'version':<10}{'file MB':>10}{'added MB':>10}{'ratio':>8}{'MB/s':>8}")
    for p in paths:
        res = repo.archive(p, name="demo", message=f"archive {p.name}")
        print(f"{p.stem:<10}{p.stat().st_size / 1e6:>10.2f}{res.physical_added / 1e6:>10.2f}"
              f"{res.ratio:>7.2f}x{res.logical_bytes / 1e6 / res.seconds:>8.0f}")
    repo.close()

    with Repository.open(args.dir) as repo:
        stats = repo.stats()
        versions = repo.log("demo")[::-1]
        full, one = [], []
        originals = {v.id: formats.read(p) for v, p in zip(versions, paths)}

        def check(v, snap):
            for name, t in originals[v.id].tensors.items():
                r = snap.tensors[name]
                assert (r.dtype, r.shape, r.data.tobytes()) == (t.dtype, t.shape, t.data.tobytes()), name

        for v in versions:
            t0 = time.perf_counter()
            snap = repo.retrieve(v.id)
            full.append(time.perf_counter() - t0)
            check(v, snap)
            name = "encoder.1.ffn.up.weight"
            t0 = time.perf_counter()
            repo.retrieve(v.id, names=[name])
            one.append(time.perf_counter() - t0)
        # every version in one call: each stored delta decoded once
        t0 = time.perf_counter()
        together = list(repo.retrieve_many([v.id for v in versions]))
        lineage = time.perf_counter() - t0
        for v, snap in together:
            check(v, snap)
        report = repo.verify()
    mb = stats["logical_bytes"] / len(versions) / 1e6
    print(f"\nfootprint: {stats['physical_bytes'] / 1e6:.2f} MB stored for {raw_total / 1e6:.2f} MB of files "
          f"({raw_total / stats['physical_bytes']:.2f}x), {stats['disk_bytes'] / 1e6:.2f} MB on disk")
    print(f"retrieve a whole version ({mb:.1f} MB): median {statistics.median(full) * 1e3:.1f} ms "
          f"({mb / statistics.median(full):.0f} MB/s); one 1 MB tensor: median {statistics.median(one) * 1e3:.1f} ms")
    print(f"retrieve all {len(versions)} versions in one call: {lineage * 1e3:.1f} ms "
          f"(one by one: {sum(full) * 1e3:.1f} ms)")
    print(f"all {len(versions)} versions bit-exact; pas verify: {'ok' if report.ok else report.errors}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
