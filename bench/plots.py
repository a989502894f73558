"""Plots (PNG) of a ``bench.core`` report: footprint against retrieval latency,
ingest throughput and the per-plane entropy floor.

    from bench.plots import make_plots
    paths = make_plots(json.loads(Path("bench/results/core.json").read_text()), Path("bench/results"))

or ``python -m bench.plots OUT/core.json [--out DIR]``.

Files written into ``out_dir`` (only those with something to show):

* ``pareto-<dataset>.png`` per dataset and ``pareto-totals.png`` (all datasets
  in one store per scheme): x = whole-version retrieval latency (seconds per
  version: ``retrieve_s`` / number of versions, each a median over repeats,
  log scale), y = footprint (physical / logical bytes, physical MB on the right
  axis); one labelled point per scheme, the Pareto front (lower is better on
  both axes) as a step line, the pas configurations (every scheme whose name
  starts with "pas") as stars in one red colour family, the alternatives with
  distinct markers; the pas entropy floor (when reported) as a dotted line.
* ``throughput.png``: archive (ingest) MB/s, and whole-version retrieval MB/s,
  per scheme, grouped by dataset (log scale).
* ``planes.png``: per dtype and byte plane (0 = most significant), the bytes pas stored and
  its entropy floor, both per logical byte of the plane, one panel per dataset
  and one for the totals; written only when the report has ``planes`` entries.

matplotlib is imported lazily (Agg canvas, no pyplot state); without it
``make_plots`` raises ImportError.
"""
from __future__ import annotations

import argparse
import json
import math
import numbers
import re
import sys
from itertools import pairwise
from pathlib import Path

__all__ = ["is_pas", "make_plots", "pareto_front"]

DPI = 110
MB_DEFAULT = 1e6
_ALT_COLOURS = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#7f7f7f", "#bcbd22", "#e377c2",
                "#393b79", "#637939"]
_ALT_MARKERS = ["o", "s", "D", "^", "v", "P", "X", "h", "<", ">"]
_PAS_COLOURS = ["#d62728", "#ff7f0e", "#a50f15", "#fb6a4a", "#e6550d", "#67000d"]


# ----------------------------------------------------------------------------
# helpers (no matplotlib)
# ----------------------------------------------------------------------------
def is_pas(scheme: str) -> bool:
    """A pas configuration (drawn highlighted) rather than an alternative."""
    return scheme.startswith("pas")


def _finite(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices (ascending) of the non-dominated points, lower is better on both axes.

    A point is dominated when another is <= on both coordinates and < on at
    least one; equal points do not dominate each other, so ties are all kept.
    Points with a missing or non-finite coordinate are never on the front."""
    ok = [i for i, p in enumerate(points) if p is not None and len(p) == 2 and all(_finite(c) for c in p)]
    front = []
    for i in ok:
        xi, yi = points[i]
        if not any(points[j][0] <= xi and points[j][1] <= yi and (points[j][0] < xi or points[j][1] < yi)
                   for j in ok if j != i):
            front.append(i)
    return front


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "dataset"


def _scheme_order(report: dict) -> list[str]:
    seen: dict[str, None] = {}
    for s in (report.get("config") or {}).get("schemes") or []:
        seen[s] = None
    for s in report.get("totals") or {}:
        seen[s] = None
    for d in report.get("datasets") or []:
        for s in d.get("schemes") or {}:
            seen[s] = None
    return [s for s in seen if not is_pas(s)] + [s for s in seen if is_pas(s)]  # the pas family last


def _styles(schemes: list[str]) -> dict[str, dict]:
    """One colour and marker per scheme, the same in every figure."""
    st, a, p = {}, 0, 0
    for s in schemes:
        if is_pas(s):
            st[s] = {"color": _PAS_COLOURS[p % len(_PAS_COLOURS)], "marker": "*", "size": 260, "z": 5}
            p += 1
        else:
            st[s] = {"color": _ALT_COLOURS[a % len(_ALT_COLOURS)], "marker": _ALT_MARKERS[a % len(_ALT_MARKERS)],
                     "size": 80, "z": 4}
            a += 1
    return st


def _measured(x) -> bool:
    return isinstance(x, dict) and _finite(x.get("ratio")) and _finite(x.get("retrieve_s"))


def _panels(report: dict) -> list[dict]:
    """One entry per dataset plus the totals: name, title, n versions, logical bytes, schemes."""
    out = []
    dss = report.get("datasets") or []
    for d in dss:
        n = len(d.get("versions") or []) or 1
        out.append({"name": d.get("name", "?"), "slug": _slug(d.get("name", "?")), "kind": d.get("kind"),
                    "n": n, "logical": d.get("logical_bytes"), "schemes": d.get("schemes") or {}})
    if report.get("totals"):
        n = sum(len(d.get("versions") or []) for d in dss) or 1
        lbs = [x.get("logical_bytes") for x in report["totals"].values() if isinstance(x, dict)]
        lb = next((v for v in lbs if _finite(v)), sum(d.get("logical_bytes") or 0 for d in dss))
        out.append({"name": "all datasets (one store per scheme)", "slug": "totals", "kind": "totals",
                    "n": n, "logical": lb, "schemes": report["totals"]})
    return out


def _labels(report: dict) -> dict[str, str]:
    return {s: x["label"] for s, x in (report.get("totals") or {}).items()
            if isinstance(x, dict) and x.get("label") and x["label"] != s}


# ----------------------------------------------------------------------------
# matplotlib
# ----------------------------------------------------------------------------
def _mpl():
    try:
        import matplotlib
        from matplotlib import ticker
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("bench.plots needs matplotlib (pip install matplotlib, or the pas[bench] extra); "
                          f"plots not written: {e}") from e
    return matplotlib, Figure, FigureCanvasAgg, ticker


def _new_figure(w: float, h: float):
    _, Figure, FigureCanvasAgg, _ = _mpl()
    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, format="png")
    return path


def _seconds(v: float) -> str:
    if v >= 1:
        return f"{v:g} s"
    if v >= 1e-3:
        return f"{v * 1e3:g} ms"
    return f"{v * 1e6:g} µs"


def _place_labels(fig, ax, pts: list[tuple[float, float, str, dict]],
                  lines: list[list[tuple[float, float]]] = ()) -> None:
    """Annotate each point with its name, choosing among a few offsets the first
    whose text box overlaps neither an earlier label, another point's marker nor
    one of ``lines`` (polylines in data coordinates) and stays inside the axes
    (else the least bad one)."""
    renderer = fig.canvas.get_renderer()
    trans = ax.transData
    ax_box = ax.get_window_extent(renderer)
    scale = fig.dpi / 72.0
    marks = []
    for x, y, _, st in pts:
        px, py = trans.transform((x, y))
        r = (9 if st["marker"] == "*" else 6) * scale
        marks.append((px - r, py - r, px + r, py + r))
    segs = []
    for line in lines:
        dp = [trans.transform(p) for p in line]
        for (x0, y0), (x1, y1) in pairwise(dp):
            segs.append((min(x0, x1) - 1.5, min(y0, y1) - 1.5, max(x0, x1) + 1.5, max(y0, y1) + 1.5))
    offsets = [(8, 6, "left", "bottom"), (8, -6, "left", "top"), (-8, 6, "right", "bottom"),
               (-8, -6, "right", "top"), (0, 11, "center", "bottom"), (0, -11, "center", "top"),
               (12, 0, "left", "center"), (-12, 0, "right", "center"), (14, 16, "left", "bottom"),
               (-14, -16, "right", "top"), (14, -18, "left", "top"), (-14, 16, "right", "bottom")]
    placed = []

    def overlap(a, b):
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        return w * h if w > 0 and h > 0 else 0.0

    for k, (x, y, text, st) in enumerate(pts):
        best = None
        for dx, dy, ha, va in offsets:
            t = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                            fontsize=9, color=st["color"], fontweight="bold" if is_pas(text.split()[0]) else None,
                            zorder=6, bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.75})
            bb = t.get_window_extent(renderer)
            box = (bb.x0, bb.y0, bb.x1, bb.y1)
            bad = sum(overlap(box, p) for p in placed)
            bad += sum(overlap(box, m) for j, m in enumerate(marks) if j != k)
            bad += 20 * sum(overlap(box, g) for g in segs)
            pad = 5 * scale  # the label's white box and a little air inside the spines
            out = (max(0, ax_box.x0 + pad - box[0]) + max(0, box[2] - ax_box.x1 + pad)
                   + max(0, ax_box.y0 + pad - box[1]) + max(0, box[3] - ax_box.y1 + pad))
            bad += out * 50
            if best is None or bad < best[0]:
                if best is not None:
                    best[1].remove()
                best = (bad, t, box)
            else:
                t.remove()
            if bad == 0:
                break
        placed.append(best[2])


def _pareto_figure(panel: dict, order: list[str], styles: dict, labels: dict, mb: float, path: Path) -> Path | None:
    _, _, _, ticker = _mpl()
    schemes = panel["schemes"]
    names = [s for s in order if _measured(schemes.get(s))]
    failed = [s for s in order if s in schemes and not _measured(schemes.get(s))]
    if not names:
        return None
    n, lb = panel["n"], panel["logical"]
    fig = _new_figure(9, 6)
    ax = fig.add_axes((0.09, 0.22, 0.78, 0.67))
    xs = [schemes[s]["retrieve_s"] / n for s in names]
    ys = [schemes[s]["ratio"] for s in names]
    front = pareto_front(list(zip(xs, ys)))
    fr = sorted(front, key=lambda i: (xs[i], ys[i]))
    pos = [x for x in xs if x > 0]
    logx = bool(pos) and len(pos) == len(xs) and max(pos) / min(pos) > 8
    if logx:
        ax.set_xscale("log")
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)
    if len(fr) > 1:
        ax.step([xs[i] for i in fr], [ys[i] for i in fr], where="post", color="black", lw=1.3, ls="--",
                alpha=0.7, zorder=2, label="Pareto front (lower-left is better)")
    elif fr:
        ax.plot([], [], color="black", lw=1.3, ls="--", label="Pareto front (lower-left is better)")
    for i, s in enumerate(names):
        st = styles[s]
        on = i in front
        ax.scatter([xs[i]], [ys[i]], s=st["size"], marker=st["marker"], color=st["color"], zorder=st["z"],
                   edgecolors="black" if on else "none", linewidths=1.0,
                   label=f"{s}: {labels[s]}" if s in labels else s)
    floors: dict[float, list[str]] = {}  # floor ratio -> pas configurations (equal floors drawn once)
    for s in names:
        fl = schemes[s].get("entropy_floor")
        if is_pas(s) and _finite(fl) and lb:
            floors.setdefault(round(fl / lb, 4), []).append(s)
    floors = dict(list(floors.items())[:3])
    for fl, who in floors.items():
        ax.axhline(fl, color=styles[who[0]]["color"], ls=":", lw=1.4, zorder=1,
                   label=f"{', '.join(who)} entropy floor ({fl:.3f})")
    ax.margins(x=0.15, y=0.12)
    ymin, ymax = ax.get_ylim()
    ax.set_ylim(max(0.0, ymin), ymax)
    if logx:
        lo, hi = ax.get_xlim()
        subs = (1.0, 2.0, 3.0, 5.0) if hi / lo < 1e2 else (1.0, 2.0, 5.0) if hi / lo < 1e4 else (1.0,)
        ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
        ax.xaxis.set_minor_locator(ticker.LogLocator(base=10, subs=tuple(range(1, 10))))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: _seconds(v) if v > 0 else "0"))
    ax.set_xlabel("retrieval latency: seconds per whole version (retrieve_s / versions, median of repeats"
                  + (", log scale)" if logx else ")"))
    ax.set_ylabel("footprint: physical / logical bytes (lower is better)")
    if lb:
        sec = ax.secondary_yaxis("right", functions=(lambda r: r * lb / mb, lambda m: m * mb / lb))
        sec.set_ylabel("physical MB")
    kind = f"{panel['kind']}, " if panel.get("kind") and panel["kind"] != "totals" else ""
    lb_txt = f", {lb / mb:,.1f} MB logical" if lb else ""
    ax.set_title(f"{panel['name']} — footprint vs retrieval latency\n"
                 f"({kind}{n} version{'s' if n != 1 else ''}{lb_txt}; black edge = on the Pareto front)",
                 fontsize=11)
    x0, x1 = ax.get_xlim()  # settles the autoscaled limits before placing the labels
    lines = []
    for a, b in pairwise(fr):
        lines.append([(xs[a], ys[a]), (xs[b], ys[a]), (xs[b], ys[b])])
    lines += [[(x0, fl), (x1, fl)] for fl in floors]
    _place_labels(fig, ax, [(xs[i], ys[i], f"{s} {ys[i]:.3f}", styles[s]) for i, s in enumerate(names)], lines)
    h, l_ = ax.get_legend_handles_labels()
    fig.legend(h, l_, loc="lower center", ncol=len(l_) if len(l_) <= 4 else 2 if len(l_) <= 8 else 3,
               fontsize=8.5 if len(l_) <= 8 else 7.5, frameon=False,
               bbox_to_anchor=(0.5, 0.0), markerscale=0.7)
    if failed:
        fig.text(0.99, 0.995, "not plotted (failed or no timing): " + ", ".join(failed), ha="right", va="top",
                 fontsize=8, color="#a00")
    return _save(fig, path)


def _throughput_figure(panels: list[dict], order: list[str], styles: dict, path: Path) -> Path | None:
    _, _, _, ticker = _mpl()
    names = [s for s in order if any(_finite((p["schemes"].get(s) or {}).get("archive_mb_s")) for p in panels)]
    if not names:
        return None
    groups = [p for p in panels if any(_finite((p["schemes"].get(s) or {}).get("archive_mb_s")) for s in names)]
    width_in = max(9.0, min(18.0, 1.0 + 0.32 * len(names) * len(groups)))
    fig = _new_figure(width_in, 8)
    left = 0.9 / width_in
    axes = [fig.add_axes((left, 0.53, 0.98 - left, 0.33)), fig.add_axes((left, 0.12, 0.98 - left, 0.33))]
    bw = 0.8 / len(names)
    for ax, key, title in ((axes[0], "archive_mb_s", "ingest (archive) throughput"),
                           (axes[1], "retrieve_mb_s", "whole-version retrieval throughput")):
        vals_all = []
        for j, s in enumerate(names):
            xs, vs = [], []
            for g, p in enumerate(groups):
                v = (p["schemes"].get(s) or {}).get(key)
                if _finite(v) and v > 0:
                    xs.append(g - 0.4 + bw * (j + 0.5))
                    vs.append(v)
            vals_all += vs
            gaps = [g - 0.4 + bw * (j + 0.5) for g, p in enumerate(groups)
                    if s in p["schemes"] and not _finite((p["schemes"].get(s) or {}).get(key))]
            for gx in gaps:  # a scheme that ran but has no figure here (failed): say so at the foot
                ax.annotate("failed", (gx, 0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                            textcoords="offset points", rotation=90, ha="center", va="bottom", fontsize=7,
                            color="#a00")
            st = styles[s]
            bars = ax.bar(xs, vs, width=bw * 0.92, color=st["color"], label=s,
                          edgecolor="black" if is_pas(s) else "none", linewidth=0.8 if is_pas(s) else 0)
            if len(groups) * len(names) <= 48:
                for b, v in zip(bars, vs):
                    ax.annotate(f"{v:.0f}", (b.get_x() + b.get_width() / 2, v), xytext=(0, 2),
                                textcoords="offset points", ha="center", va="bottom", fontsize=6.5,
                                rotation=90 if len(names) > 3 else 0)
        if vals_all and max(vals_all) / min(vals_all) > 20:
            ax.set_yscale("log")
            ax.set_ylim(min(vals_all) / 2, max(vals_all) * 4)
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        else:
            ax.set_ylim(0, (max(vals_all) if vals_all else 1) * 1.2)
        ax.set_ylabel("logical MB/s")
        ax.set_title(title + (", log scale" if ax.get_yscale() == "log" else ""), fontsize=10.5)
        ax.set_xticks(range(len(groups)))
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    axes[0].set_xticklabels([])
    tick = ["all (totals)" if p["slug"] == "totals" else p["name"] for p in groups]
    axes[1].set_xticklabels(tick, rotation=20 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center",
                            fontsize=9)
    fig.suptitle("Throughput per scheme and dataset, logical MB/s (1 MB = 1e6 bytes; higher is better)\n"
                 "totals: archive = median pass over all datasets into one store, retrieval = all versions",
                 fontsize=10, y=0.99)
    h, l_ = axes[0].get_legend_handles_labels()
    fig.legend(h, l_, loc="upper center", ncol=len(l_), fontsize=9, frameon=False, bbox_to_anchor=(0.5, 0.935))
    return _save(fig, path)


def _planes_of(x) -> list[dict] | None:
    pl = x.get("planes") if isinstance(x, dict) else None
    if not isinstance(pl, list):
        return None
    rows = [r for r in pl if isinstance(r, dict) and isinstance(r.get("plane"), int)
            and _finite(r.get("logical_bytes")) and r["logical_bytes"] > 0]
    return sorted(rows, key=_plane_key) or None


def _plane_key(r: dict) -> tuple[str, int]:
    """Planes are keyed by dtype and index: plane 1 of an F32 and of a BF16 are different fields."""
    return (str(r.get("dtype") or ""), r["plane"])


def _planes_figure(panels: list[dict], order: list[str], styles: dict, mb: float, path: Path) -> Path | None:
    items = []
    for p in panels:
        cfgs = [(s, _planes_of(p["schemes"].get(s))) for s in order if is_pas(s)]
        cfgs = [(s, rows) for s, rows in cfgs if rows]
        if cfgs:
            items.append((p, cfgs))
    if not items:
        return None
    ncol = 1 if len(items) == 1 else 2
    nrow = math.ceil(len(items) / ncol)
    height = 1.5 + 3.4 * nrow
    fig = _new_figure(9 if ncol == 1 else 13, height)
    gs = fig.add_gridspec(nrow, ncol, left=0.07 if ncol == 2 else 0.1, right=0.98, top=1 - 0.8 / height,
                          bottom=1.0 / height, hspace=0.5 if nrow > 1 else 0.2, wspace=0.15)
    handles = {}
    for k, (p, cfgs) in enumerate(items):
        keys = sorted({_plane_key(r) for _, rows in cfgs for r in rows})
        pos = {key: i for i, key in enumerate(keys)}
        ax = fig.add_subplot(gs[k // ncol, k % ncol])
        nb = 2 * len(cfgs)
        bw = 0.8 / nb
        ymax = 1.0
        sums = []
        for j, (s, rows) in enumerate(cfgs):
            c = styles[s]["color"]
            px = [pos[_plane_key(r)] for r in rows]
            st = [(r.get("stored_bytes") or 0) / r["logical_bytes"] for r in rows]
            fl = [(r.get("floor_bytes") or 0) / r["logical_bytes"] for r in rows]
            ymax = max(ymax, *st, *fl)
            b1 = ax.bar([x - 0.4 + bw * (2 * j + 0.5) for x in px], st, width=bw * 0.95, color=c)
            b2 = ax.bar([x - 0.4 + bw * (2 * j + 1.5) for x in px], fl, width=bw * 0.95, color="white",
                        edgecolor=c, hatch="////", linewidth=0.6)
            handles.setdefault(f"{s}: stored", b1)
            handles.setdefault(f"{s}: entropy floor", b2)
            tot_s = sum(r.get("stored_bytes") or 0 for r in rows)
            tot_f = sum(r.get("floor_bytes") or 0 for r in rows)
            sums.append(f"{s}: stored {tot_s / mb:,.1f} MB, floor {tot_f / mb:,.1f} MB")
        ax.axhline(1.0, color="gray", lw=0.8, ls="--")
        ax.set_ylim(0, min(ymax * 1.08, 1.5))
        step = 1 if len(keys) <= 16 else 2
        ax.set_xticks(range(0, len(keys), step))
        ax.set_xticklabels([f"{d} {pl}" if d else str(pl) for d, pl in keys[::step]])
        ax.set_xlim(-0.6, len(keys) - 0.4)
        ax.tick_params(labelsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.set_title(("all datasets" if p["slug"] == "totals" else p["name"]) + "\n" + "; ".join(sums),
                     fontsize=9.5)
        ax.set_xlabel("dtype and byte plane (0 = most significant byte)", fontsize=8.5)
        ax.set_ylabel("bytes per logical byte\nof the plane", fontsize=8.5)
    fig.suptitle("pas per-plane storage vs entropy floor (dashed line = 1.0, uncompressed)", fontsize=11)
    fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncol=min(4, len(handles)),
               fontsize=9, frameon=False, bbox_to_anchor=(0.5, 0.1 / height))
    return _save(fig, path)


def make_plots(report: dict, out_dir: Path) -> list[Path]:
    """Write the PNG plots of a ``bench.core`` report into ``out_dir``; returns their paths.

    Raises ImportError (with an explanation) when matplotlib is not installed."""
    _mpl()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mb = (report.get("config") or {}).get("mb") or MB_DEFAULT
    order = _scheme_order(report)
    styles = _styles(order)
    labels = _labels(report)
    panels = _panels(report)
    paths: list[Path] = []
    used: set[str] = set()
    for p in panels:
        slug = p["slug"]
        while slug in used:
            slug += "_"
        used.add(slug)
        r = _pareto_figure(p, order, styles, labels, mb, out_dir / f"pareto-{slug}.png")
        if r:
            paths.append(r)
    for fn in (lambda: _throughput_figure(panels, order, styles, out_dir / "throughput.png"),
               lambda: _planes_figure(panels, order, styles, mb, out_dir / "planes.png")):
        r = fn()
        if r:
            paths.append(r)
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.plots", description="PNG plots of a bench.core report")
    ap.add_argument("report", type=Path, help="core.json written by python -m bench.core")
    ap.add_argument("--out", type=Path, help="folder for the PNGs (default: the report's folder)")
    args = ap.parse_args(argv)
    report = json.loads(args.report.read_text())
    for p in make_plots(report, args.out or args.report.parent):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
