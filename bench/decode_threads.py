"""Where decoding on the pool pays: retrieval time against tensor size.

    python -m bench.decode_threads [--rounds 15] [--corpus]

A retrieve decodes tensors of at least `pas.repo.DECODE_PARALLEL_MIN_BYTES`
on the pool, smaller ones on the calling thread. This times whole-version
retrievals of synthetic versions (N tensors of S bytes, float32 N(0, 0.02))
with the threshold at several values, interleaved round by round in one
process (a slow spell of the machine falls on every setting alike), and
prints min / median milliseconds and each setting's median over the shipped
one's. ``--corpus``: also the corpus CNN (e19, and e20 as a delta) and
lineage-finetune v0 / v1 (delta).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

#: (label, threshold in bytes): everything on the pool above 256 KiB (the
#: writer's threshold), the shipped value, and nothing on the pool.
SETTINGS = (("256K", 256 << 10), ("shipped", None), ("serial", 1 << 62))
#: (MiB in all, tensors): tensors of 256 KiB to 2 MiB.
SHAPES = ((4, 16), (6, 16), (8, 16), (8, 8), (16, 16), (16, 8))


def _synthetic(repo, rng) -> list[tuple[str, str]]:
    from pas.snapshot import Snapshot, Tensor
    out = []
    for mib, count in SHAPES:
        snap = Snapshot(metadata={}, format="safetensors", layout={})
        n = (mib << 20) // 4 // count
        for i in range(count):
            snap.add(Tensor(f"t{i}", "F32", (n,), (rng.standard_normal(n) * 0.02).astype(np.float32)))
        out.append((f"{count} x {(mib << 10) // count} KiB", repo.archive_snapshot(snap, f"s{mib}-{count}").version_id))
    return out


def _corpus(repo) -> list[tuple[str, str]]:
    from bench.datasets import corpus_dir
    root = corpus_dir()
    out = []
    for lineage, a, b, label in (("snapshots-cnn", "e19", "e20", "cnn"), ("lineage-finetune", "v0", "v1", "minilm")):
        r0 = repo.archive(str(root / lineage / f"{a}.safetensors"), label)
        r1 = repo.archive(str(root / lineage / f"{b}.safetensors"), label, parent=r0.version_id)
        out += [(f"{label} {a}", r0.version_id), (f"{label} {b} (delta)", r1.version_id)]
    return out


def run(rounds: int, corpus: bool) -> list[dict]:
    import pas.repo as repo_mod
    shipped = repo_mod.DECODE_PARALLEL_MIN_BYTES
    rows = []
    with tempfile.TemporaryDirectory(prefix="pas-threads-") as tmp:
        with repo_mod.Repository.init(Path(tmp) / "repo") as repo:
            cases = _synthetic(repo, np.random.default_rng(0)) + (_corpus(repo) if corpus else [])
            try:
                for label, vid in cases:
                    repo.retrieve(vid)                       # warm-up
                    times: dict[str, list[float]] = {name: [] for name, _ in SETTINGS}
                    for _ in range(rounds):
                        for name, value in SETTINGS:
                            repo_mod.DECODE_PARALLEL_MIN_BYTES = shipped if value is None else value
                            t = time.perf_counter()
                            snap = repo.retrieve(vid)
                            times[name].append(time.perf_counter() - t)
                            del snap
                    ref = statistics.median(times["shipped"])
                    rows.append({"version": label, **{name: {"min": min(v), "median": statistics.median(v),
                                                             "over_shipped": statistics.median(v) / ref}
                                                      for name, v in times.items()}})
            finally:
                repo_mod.DECODE_PARALLEL_MIN_BYTES = shipped
    return rows


def markdown(rows: list[dict], shipped: int) -> str:
    head = " | ".join(f"{n} (ms, min / median)" for n, _ in SETTINGS)
    lines = [f"Shipped threshold: {shipped >> 10} KiB.", "", f"| version | {head} | 256K / shipped | serial / shipped |",
             "|---|" + "---|" * (len(SETTINGS) + 2)]
    for r in rows:
        cells = " | ".join(f"{1e3 * r[n]['min']:.2f} / {1e3 * r[n]['median']:.2f}" for n, _ in SETTINGS)
        lines.append(f"| {r['version']} | {cells} | {r['256K']['over_shipped']:.2f} | {r['serial']['over_shipped']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--corpus", action="store_true", help="also versions of the shared corpus")
    a = ap.parse_args(argv)
    if a.rounds < 1:
        ap.error("--rounds must be at least 1")
    from pas.repo import DECODE_PARALLEL_MIN_BYTES
    print(markdown(run(a.rounds, a.corpus), DECODE_PARALLEL_MIN_BYTES))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
