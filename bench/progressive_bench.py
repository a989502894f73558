"""Progressive evaluation on the corpus CNN: the ModelHub paper's Fig. 6(d).

    python -m bench.progressive_bench [--out DIR] [--repeat N] [--version e20]

The 20 epoch snapshots of the corpus CNN (snapshots-cnn, LeNetBN on sklearn
digits) are archived as one chain into a repository of each plane layout
(`pas init --sign-first`: every float keeps sign + 7 exponent bits in plane 0,
as in the paper; the default: the writer may pick planes-exp per tensor,
exponent in plane 0 and sign in plane 1). One version is evaluated on the
test split (gen_cnn's: RandomState(7) permutation, [1440:]) with top-1 and
top-5: the share of inputs still undecided after 1, 2, 3 planes, the stored
bytes read, and the end-to-end time of progressive evaluation against full
retrieval + full evaluation in the same run (medians of --repeat runs).
Writes progressive.json and README.md to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from .datasets import cache_dir, digits_test_split

PAPER = {"LeNet top-1": {"1": 12.3, "2": 0.5}, "AlexNet top-5": {"1": 4.3, "2": 0.5},
         "VGG-16 top-5": {"1": 5.8, "2": 0.5}}


def corpus_dir() -> Path:
    return cache_dir() / "corpus" / "snapshots-cnn"


def build(root: Path, layouts, files: list[Path]):
    from pas.repo import Repository
    repo = Repository.init(root, layouts=layouts)
    repo.archive_series([os.fspath(f) for f in files], "cnn")
    return repo


def run_layout(name: str, layouts, files, version: str, x, y, repeat: int, chain: bool = True) -> dict:
    from pas.progressive import LeNetBN, evaluate
    names = [f.stem for f in files]
    if version not in names:
        raise SystemExit(f"--version {version}: not one of {names[0]}..{names[-1]}")
    if not chain:
        files = [files[names.index(version)]]
        names = [version]
    with tempfile.TemporaryDirectory(prefix="pas-prog-") as tmp:
        repo = build(Path(tmp) / "repo", layouts, files)
        log = repo.log("cnn")                 # newest first: the chain in file order, reversed
        ref = log[len(files) - 1 - names.index(version)].id
        out = {"layout": name, "version": version, "topk": {}}
        for k in (1, 5):
            res = evaluate(repo, ref, LeNetBN(), x, y, top_k=k)
            full = evaluate(repo, ref, LeNetBN(), x, y, top_k=k, progressive=False)
            assert np.array_equal(res.predictions, full.predictions), "progressive != full"
            out["topk"][k] = {"result": {kk: v for kk, v in res.to_json().items() if kk != "predictions"},
                              "full_accuracy": full.accuracy, "equal_to_full": True}
        if "planes-exp" in out["topk"][1]["result"]["layouts"]:
            one = evaluate(repo, ref, LeNetBN(), x, y, top_k=1, first_planes=1)
            out["planes_exp_one_plane"] = {kk: v for kk, v in one.to_json().items() if kk != "predictions"}
        # timing: end to end, no byte accounting, caches cleared before each run
        prog_t, full_t = [], []
        for _ in range(repeat):
            repo.reader.clear_cache()
            t = time.perf_counter()
            evaluate(repo, ref, LeNetBN(), x, top_k=1, count_bytes=False)
            prog_t.append(time.perf_counter() - t)
            repo.reader.clear_cache()
            t = time.perf_counter()
            evaluate(repo, ref, LeNetBN(), x, top_k=1, progressive=False, count_bytes=False)
            full_t.append(time.perf_counter() - t)
        out["seconds"] = {"progressive": statistics.median(prog_t), "full": statistics.median(full_t),
                          "progressive_all": prog_t, "full_all": full_t}
        repo.close()
    return out


def _share_after(steps, planes):
    for s in steps:
        if s["planes"] == planes:
            return 100 * s["undecided_share"]
    before = [s for s in steps if s["planes"] < planes]
    if not before:
        return None          # not evaluated at that plane count (planes-exp starts at 2)
    return 100 * before[-1]["undecided_share"]


def report(results: list[dict], n: int, out: Path) -> str:
    lines = ["# Progressive evaluation on the corpus CNN (Fig. 6(d))", "",
             (f"`python -m bench.progressive_bench` on {platform.machine()}, {os.cpu_count()} CPUs, "
              f"{time.strftime('%Y-%m-%d')}. LeNetBN (corpus snapshots-cnn: the 20 epochs archived as one chain, "
              "or the evaluated version alone), "
              f"sklearn digits test split ({n} inputs). Undecided = inputs that need lower planes after k planes "
              "(the paper's figure); bytes = stored (compressed) bytes of the planes read, down the delta chain."), "",
             ("| layout | top-k | undecided after 1 plane | after 2 | after 3 | bytes read (share of full) "
              "| near-ties at full precision | accuracy |"),
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for k, t in r["topk"].items():
            res = t["result"]
            cells = []
            for p in (1, 2, 3):
                v = _share_after(res["steps"], p)
                cells.append("not run (sign unknown)" if v is None else f"{v:.1f}%")
            lines.append(f"| {r['layout']} | {k} | {' | '.join(cells)} | {res['bytes_read']:,} of "
                         f"{res['full_bytes']:,} ({100 * res['bytes_read'] / res['full_bytes']:.0f}%) | "
                         f"{res['near_ties']} | {100 * res['accuracy']:.2f}% |")
    lines += ["", ("Paper (Fig. 6(d)): LeNet top-1 ≈12.3% undecided after 1 byte, ≈0.5% after 2; "
                   "AlexNet top-5 ≈4.3%, VGG-16 top-5 ≈5.8% after 1 byte; all ≤ ≈0.5% after 2 bytes."), "",
              "## Per round (top-1)", "",
              "| layout | planes | inputs evaluated | decided | bytes read | seconds |", "|---|---|---|---|---|---|"]
    for r in results:
        for s in r["topk"][1]["result"]["steps"]:
            lines.append(f"| {r['layout']} | {s['planes']}{' (exact)' if s['exact'] else ''} | {s['evaluated']} | "
                         f"{s['decided']} | {s['bytes_read']:,} | {s['seconds']:.2f} |")
        one = r.get("planes_exp_one_plane")
        if one:
            s = one["steps"][0]
            lines.append(f"| {r['layout']} (forced 1st round at 1 plane) | 1 | {s['evaluated']} | {s['decided']} | "
                         f"{s['bytes_read']:,} | {s['seconds']:.2f} |")
    lines += ["", "## End to end (top-1, median of repeats, byte accounting off, caches cleared)", "",
              "| layout | progressive | full retrieval + full evaluation | ratio |", "|---|---|---|---|"]
    for r in results:
        s = r["seconds"]
        lines.append(f"| {r['layout']} | {s['progressive']:.2f} s | {s['full']:.3f} s | "
                     f"{s['progressive'] / s['full']:.0f}x slower |")
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "progressive.json").write_text(json.dumps({"n": n, "results": results, "paper": PAPER}, indent=2,
                                                     default=str))
    (out / "figures.md").write_text(text)
    return text


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results/progressive"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--version", default="e20", help="Snapshot to evaluate (e01..e20).")
    a = ap.parse_args(argv)
    files = sorted(corpus_dir().glob("e*.safetensors"))
    if not files:
        raise SystemExit(f"no snapshots in {corpus_dir()} (run `pas bench` once to generate the corpus)")
    x, y = digits_test_split()
    results = [run_layout("sign-first (planes), chain of 20", ["planes"], files, a.version, x, y, a.repeat),
               run_layout("default (planes + planes-exp), chain of 20", None, files, a.version, x, y, a.repeat),
               run_layout("sign-first (planes), version alone", ["planes"], files, a.version, x, y, a.repeat,
                          chain=False),
               run_layout("default, version alone", None, files, a.version, x, y, a.repeat, chain=False)]
    print(report(results, len(x), a.out))


if __name__ == "__main__":
    main()
