"""Do two benchmark runs agree? ``python -m bench.compare A/core.json B/core.json``

Prints, per dataset (and for everything in one store), pas's ratios against
each alternative in both runs (size, retrieve, archive: as in the report's
Answers table) and how far apart they are, and exits 1 when a footprint differs
or a speed ratio moved by more than ``--tolerance`` (default 15%). Speed
ratios, not absolute MB/s, are compared: the schemes of one run are measured
side by side (bench.measure), so a machine that is slower in one run moves
every scheme, not the ratios.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def ratios(report: dict, pas: str = "pas") -> dict[tuple[str, str], dict[str, float]]:
    """(dataset, alternative) -> {"size", "retrieve", "archive"} ratios of pas against it."""
    rows = [(d["name"], d["schemes"]) for d in report["datasets"]] + [("all", report["totals"])]
    out = {}
    for name, schemes in rows:
        p = schemes.get(pas)
        if not p or not p.get("physical_bytes"):
            continue
        for alt, x in schemes.items():
            if alt == pas or not x.get("physical_bytes") or not x.get("retrieve_mb_s"):
                continue
            out[(name, alt)] = {
                "size": x["physical_bytes"] / p["physical_bytes"],
                "retrieve": p["retrieve_mb_s"] / x["retrieve_mb_s"],
                "archive": (p["archive_mb_s"] / x["archive_mb_s"]
                            if p.get("archive_mb_s") and x.get("archive_mb_s") else None),
            }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--tolerance", type=float, default=0.15, help="largest accepted relative change of a speed ratio")
    ap.add_argument("--pas", default="pas", help="the scheme the ratios are taken against (default pas)")
    args = ap.parse_args(argv)
    ra = ratios(json.loads(args.a.read_text()), args.pas)
    rb = ratios(json.loads(args.b.read_text()), args.pas)
    bad = 0
    print(f"| dataset | vs | size A | size B | retrieve A | retrieve B | change | archive A | archive B | change |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key in sorted(set(ra) & set(rb), key=lambda k: (k[0] == "all", k)):
        a, b = ra[key], rb[key]
        cells = [key[0], key[1], f"{a['size']:.3f}", f"{b['size']:.3f}"]
        if abs(a["size"] - b["size"]) > 1e-3 * a["size"]:
            bad += 1
            cells[-1] += " ✗"
        for what in ("retrieve", "archive"):
            if a[what] is None or b[what] is None:
                cells += ["–", "–", "–"]
                continue
            change = b[what] / a[what] - 1
            flag = " ✗" if abs(change) > args.tolerance else ""
            bad += bool(flag)
            cells += [f"{a[what]:.2f}x", f"{b[what]:.2f}x", f"{change:+.0%}{flag}"]
        print("| " + " | ".join(cells) + " |")
    n = len(set(ra) & set(rb))
    print(f"\n{n} comparisons, {bad} outside tolerance ({args.tolerance:.0%} on speed ratios, 0.1% on sizes)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
