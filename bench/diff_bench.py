"""`pas diff` against retrieving both versions (issue 8: diff reads what it needs).

    python -m bench.diff_bench [--dataset NAME ...] [--repeat 3] [--out DIR]

Every lineage of the shared corpus (or the named ones) is archived untimed
into a repository of its own (parents before children, as `pas archive`
would), then for every parent -> child pair and the first -> last pair:

- **in process**: `pas.dlv.diff.diff(repo, a, b)` against
  `Repository.retrieve(a)` + `Repository.retrieve(b)`, interleaved, median of
  ``--repeat``;
- **command line**: `pas diff A B --json` against `pas retrieve A -o F` +
  `pas retrieve B -o G` (what a user without `diff` would run before
  comparing the files), interleaved, median of ``--repeat``.

The diff's answer is checked against the retrieved snapshots: the tensors it
reports changed are exactly those whose bytes differ. Ratios (diff time /
time to retrieve both) are the headline; below 1, diff is cheaper.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from .datasets import cache_dir, corpus_dir, corpus_datasets, topo_order
from .plan_bench import _commit, _timed_cli


def _pas(repo: Path, *args: str) -> float:
    """Seconds of ``pas --repo REPO ARGS`` (`bench.plan_bench._timed_cli`), which must succeed."""
    r = _timed_cli(list(args), repo)
    if r["exit_code"] != 0:
        raise RuntimeError(f"{r['command']} exited {r['exit_code']}: {r['stderr_tail']}")
    return r["seconds"]


def _changed_by_bytes(sa, sb) -> set[str]:
    return {n for n in sa.tensors.keys() & sb.tensors.keys()
            if sa.tensors[n].data.tobytes() != sb.tensors[n].data.tobytes()
            or sa.tensors[n].dtype != sb.tensors[n].dtype}


def bench_dataset(ds, work: Path, repeat: int) -> dict:
    from pas.dlv.diff import diff
    from pas.repo import Repository
    path = work / ds.name
    ids: dict[str, str] = {}
    with Repository.init(path) as repo:
        for v in topo_order(ds.versions):
            ids[v.id] = repo.archive(str(v.path), name=f"{ds.name}/{v.id}",
                                     parent=ids.get(v.parent) if v.parent else None).version_id
    order = [v.id for v in topo_order(ds.versions)]
    pairs = [(v.parent, v.id) for v in topo_order(ds.versions) if v.parent]
    if (order[0], order[-1]) not in pairs:
        pairs.append((order[0], order[-1]))
    rows = []
    for a, b in pairs:
        ra, rb = ids[a], ids[b]
        api_diff, api_both, cli_diff, cli_both = [], [], [], []
        with Repository.open(path) as repo:
            for _ in range(repeat):
                t = time.perf_counter()
                d = diff(repo, ra, rb)
                api_diff.append(time.perf_counter() - t)
                t = time.perf_counter()
                sa = repo.retrieve(ra)
                sb = repo.retrieve(rb)
                api_both.append(time.perf_counter() - t)
            want = _changed_by_bytes(sa, sb)
            logical = sa.nbytes + sb.nbytes
            del sa, sb
        got = {c["name"] for c in d["changed"]}
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            for _ in range(repeat):
                cli_diff.append(_pas(path, "diff", ra, rb, "--json"))
                cli_both.append(_pas(path, "retrieve", ra, "-o", f"{tmp}/a.safetensors")
                                + _pas(path, "retrieve", rb, "-o", f"{tmp}/b.safetensors"))
        med = statistics.median
        rows.append({"a": a, "b": b, "tensors": len(d["changed"]) + d["unchanged"] + len(d["added"]),
                     "changed": len(d["changed"]), "tensors_read": d["tensors_read"],
                     "diff_correct": got == want, "logical_bytes_both": logical,
                     "api_diff_s": med(api_diff), "api_both_s": med(api_both),
                     "api_ratio": med(api_diff) / med(api_both),
                     "cli_diff_s": med(cli_diff), "cli_both_s": med(cli_both),
                     "cli_ratio": med(cli_diff) / med(cli_both)})
        print(f"  {ds.name} {a}->{b}: {rows[-1]['changed']}/{rows[-1]['tensors']} changed, "
              f"api {rows[-1]['api_ratio']:.2f}, cli {rows[-1]['cli_ratio']:.2f}, "
              f"correct={rows[-1]['diff_correct']}", flush=True)
    return {"dataset": ds.name, "pairs": rows}


def markdown(res: dict) -> str:
    lines = ["# `pas diff` against retrieving both versions", "",
             f"{res['when']} · git {res['git']} · repeat {res['repeat']} (medians) · load {res['load']}", "",
             "ratio = diff time / time to retrieve both (below 1: diff is cheaper). In process: "
             "`pas.dlv.diff.diff` vs two `Repository.retrieve`; command line: `pas diff --json` vs two "
             "`pas retrieve -o FILE`. read = tensors diff decoded (of both versions' tensors).", "",
             "| dataset | pair | changed | read | in process: diff / both (ms) | ratio | CLI: diff / both (ms) | ratio "
             "| exact |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for ds in res["datasets"]:
        for r in ds["pairs"]:
            lines.append(f"| {ds['dataset']} | {r['a']} → {r['b']} | {r['changed']} of {r['tensors']} | "
                         f"{r['tensors_read']} of {2 * r['tensors']} | {r['api_diff_s'] * 1e3:.0f} / "
                         f"{r['api_both_s'] * 1e3:.0f} | {r['api_ratio']:.2f} | {r['cli_diff_s'] * 1e3:.0f} / "
                         f"{r['cli_both_s'] * 1e3:.0f} | {r['cli_ratio']:.2f} | "
                         f"{'yes' if r['diff_correct'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", action="append", help="corpus lineage (repeatable; default: all)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="folder for diff.json and diff.md")
    args = ap.parse_args(argv)
    datasets = corpus_datasets(corpus_dir())
    if args.dataset:
        datasets = [d for d in datasets if d.name in args.dataset]
    res = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "git": _commit(), "repeat": args.repeat,
           "load": [round(x, 2) for x in os.getloadavg()], "datasets": []}
    with tempfile.TemporaryDirectory(dir=cache_dir()) as work:
        for ds in datasets:
            res["datasets"].append(bench_dataset(ds, Path(work), args.repeat))
    md = markdown(res)
    print(md)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "diff.json").write_text(json.dumps(res, indent=1))
        (args.out / "diff.md").write_text(md)
    return 0 if all(r["diff_correct"] for d in res["datasets"] for r in d["pairs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
