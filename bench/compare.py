"""Do two benchmark runs agree? ``python -m bench.compare A/core.json B/core.json``

Prints, per dataset (and for everything in one store), pas's ratios against
each alternative in both runs (size, retrieve, archive: as in the report's
Answers table) and how far apart they are, and exits 1 when a footprint differs
or a speed ratio moved beyond the noise. Speed ratios, not absolute MB/s, are
compared: the schemes of one run are measured side by side (bench.measure), so
a machine that is slower in one run moves every scheme, not the ratios.

The noise is what each run measured of itself: every repeat of a retrieve (and
every archive pass of the one-store totals) is taken by all schemes side by
side, so each repeat gives a ratio, and the lowest to highest of them is the
run's noise band (the bracket in the report). A speed ratio reproduces when it
moved by at most ``--tolerance`` (default 15%) or when the two runs' bands
overlap; otherwise it is marked and the exit status is 1.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .report import paired_range, speed_ratio


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
                "archive": speed_ratio(p, x, "archive_pass_s"),
                "lineage": speed_ratio(p, x, "lineage_s_per_repeat"),
                "retrieve_band": paired_range(p, x, "retrieve_s_per_repeat"),
                "archive_band": paired_range(p, x, "archive_pass_s"),
                "lineage_band": paired_range(p, x, "lineage_s_per_repeat"),
            }
    return out


def reproduces(a: float, b: float, band_a, band_b, tolerance: float) -> bool:
    """Within tolerance, or within the noise both runs measured (their bands overlap)."""
    if abs(b / a - 1) <= tolerance:
        return True
    return bool(band_a and band_b and band_a[0] <= band_b[1] and band_b[0] <= band_a[1])


def _cell(v: float, bnd) -> str:
    return f"{v:.2f}x" + (f" ({bnd[0]:.2f}–{bnd[1]:.2f})" if bnd else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--tolerance", type=float, default=0.15,
                    help="a speed ratio that moved less than this reproduces even when the noise bands do not overlap")
    ap.add_argument("--pas", default="pas", help="the scheme the ratios are taken against (default pas)")
    args = ap.parse_args(argv)
    ra = ratios(json.loads(args.a.read_text()), args.pas)
    rb = ratios(json.loads(args.b.read_text()), args.pas)
    bad = beyond_tolerance = sizes_bad = 0
    print("Speed ratios: pas / alternative (above 1: pas faster), in brackets the run's noise band "
          "(lowest–highest over its repeats). ✗ = moved beyond the tolerance and outside the noise.\n")
    print("| dataset | vs | size A | size B | retrieve A | retrieve B | change | lineage A | lineage B | change "
          "| archive A | archive B | change |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key in sorted(set(ra) & set(rb), key=lambda k: (k[0] == "all", k)):
        a, b = ra[key], rb[key]
        cells = [key[0], key[1], f"{a['size']:.3f}", f"{b['size']:.3f}"]
        if abs(a["size"] - b["size"]) > 1e-3 * a["size"]:
            bad += 1
            sizes_bad += 1
            cells[-1] += " ✗"
        for what in ("retrieve", "lineage", "archive"):
            if a.get(what) is None or b.get(what) is None:
                cells += ["–", "–", "–"]
                continue
            change = b[what] / a[what] - 1
            beyond_tolerance += abs(change) > args.tolerance
            ok = reproduces(a[what], b[what], a[f"{what}_band"], b[f"{what}_band"], args.tolerance)
            bad += not ok
            cells += [_cell(a[what], a[f"{what}_band"]), _cell(b[what], b[f"{what}_band"]),
                      f"{change:+.0%}{'' if ok else ' ✗'}"]
        print("| " + " | ".join(cells) + " |")
    n = len(set(ra) & set(rb))
    print(f"\n{n} comparisons: sizes within 0.1%, speed ratios moved more than {args.tolerance:.0%}: "
          f"{beyond_tolerance}, of which outside both runs' noise: {bad - sizes_bad} (marked ✗); sizes differing: "
          f"{sizes_bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
