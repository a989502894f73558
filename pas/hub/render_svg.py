"""Inline SVG drawn on the server: layered graphs (networks, lineage) and line plots.

Every text placed in an SVG is escaped (model names, layer ids and metric
names come from repositories anyone may publish to)."""
from __future__ import annotations

import math
from html import escape

MAX_NODES = 400   # a bigger graph is listed, not drawn


def layers_of(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Layer of each node: the longest path from a source (Kahn's order; nodes on a
    cycle, which a lineage or network should not have, go below what reaches them)."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    indeg = {n: 0 for n in nodes}
    for a, b in edges:
        if a in succ and b in succ and a != b:
            succ[a].append(b)
            indeg[b] += 1
    layer = {n: 0 for n in nodes}
    ready = [n for n in nodes if indeg[n] == 0]
    done: set[str] = set()
    while len(done) < len(nodes):
        if not ready:                      # a cycle: break it at the first node left
            ready = [next(n for n in nodes if n not in done)]
        n = ready.pop()
        if n in done:
            continue
        done.add(n)
        for m in succ[n]:
            layer[m] = max(layer[m], layer[n] + 1)
            indeg[m] -= 1
            if indeg[m] == 0:
                ready.append(m)
    return layer


def graph(nodes: list[dict], edges: list[tuple[str, str]], *, width: int = 180, height: int = 34,
          gap_x: int = 24, gap_y: int = 26, link=None, highlight: set | None = None) -> str:
    """A layered drawing, top to bottom. ``nodes``: {"id", "label", "sub"} (and "class");
    ``link(node)``: an href for a node, or None."""
    if not nodes:
        return '<p class="muted">no graph</p>'
    if len(nodes) > MAX_NODES:
        return f'<p class="muted">{len(nodes)} nodes: too many to draw (listed below)</p>'
    ids = [n["id"] for n in nodes]
    layer = layers_of(ids, edges)
    rows: dict[int, list[str]] = {}
    for n in ids:
        rows.setdefault(layer[n], []).append(n)
    # Order each row by the mean position of its parents (fewer crossings than input order).
    pos: dict[str, float] = {}
    preds: dict[str, list[str]] = {n: [] for n in ids}
    for a, b in edges:
        if a in preds and b in preds:
            preds[b].append(a)
    for r in sorted(rows):
        row = rows[r]
        row.sort(key=lambda n: (sum(pos.get(p, 0) for p in preds[n]) / len(preds[n])) if preds[n] else 0)
        for i, n in enumerate(row):
            pos[n] = i
    widest = max(len(r) for r in rows.values())
    W = widest * (width + gap_x) + gap_x
    H = len(rows) * (height + gap_y) + gap_y
    xy: dict[str, tuple[float, float]] = {}
    for r, row in rows.items():
        offset = (W - len(row) * (width + gap_x) - gap_x) / 2
        for i, n in enumerate(row):
            xy[n] = (offset + gap_x + i * (width + gap_x), gap_y + r * (height + gap_y))
    by_id = {n["id"]: n for n in nodes}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" width="{W}" height="{H}" '
           f'viewBox="0 0 {W} {H}" role="img">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#778"/></marker></defs>']
    for a, b in edges:
        if a in xy and b in xy and a != b:
            (x1, y1), (x2, y2) = xy[a], xy[b]
            out.append(f'<line x1="{x1 + width / 2:.1f}" y1="{y1 + height:.1f}" x2="{x2 + width / 2:.1f}" '
                       f'y2="{y2:.1f}" stroke="#99a" stroke-width="1.2" marker-end="url(#arrow)"/>')
    for n in ids:
        x, y = xy[n]
        node = by_id[n]
        cls = escape(node.get("class", "node"))
        if highlight and n in highlight:
            cls += " hl"
        label, sub = str(node.get("label", n)), str(node.get("sub", ""))
        box = (f'<g class="{cls}"><title>{escape(label)} {escape(sub)}</title>'
               f'<rect x="{x:.1f}" y="{y:.1f}" width="{width}" height="{height}" rx="5"/>'
               f'<text x="{x + width / 2:.1f}" y="{y + 14:.1f}" text-anchor="middle">{escape(_clip(label, 26))}</text>'
               f'<text class="sub" x="{x + width / 2:.1f}" y="{y + 27:.1f}" text-anchor="middle">'
               f'{escape(_clip(sub, 30))}</text></g>')
        href = link(node) if link else None
        out.append(f'<a href="{escape(href)}">{box}</a>' if href else box)
    out.append("</svg>")
    return "".join(out)


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[:n - 1] + "…"


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def plot(series: dict[str, list], *, width: int = 420, height: int = 220, title: str = "") -> str:
    """A line plot of one or more [(iteration, value), ...] series (non-finite points skipped)."""
    colors = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"]
    pts = {k: [(float(x), float(y)) for x, y in v if isinstance(y, (int, float)) and math.isfinite(y)]
           for k, v in series.items()}
    pts = {k: v for k, v in pts.items() if v}
    if not pts:
        return '<p class="muted">nothing to plot</p>'
    xs = [x for v in pts.values() for x, _ in v]
    ys = [y for v in pts.values() for _, y in v]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - (abs(y0) or 1) * 0.1, y1 + (abs(y1) or 1) * 0.1
    L, R, T, B = 52, 12, 24, 30
    sx = lambda x: L + (x - x0) / (x1 - x0) * (width - L - R)    # noqa: E731
    sy = lambda y: height - B - (y - y0) / (y1 - y0) * (height - T - B)   # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img"><title>{escape(title)}</title>',
           f'<text x="{L}" y="14" class="title">{escape(title)}</text>',
           f'<line x1="{L}" y1="{height - B}" x2="{width - R}" y2="{height - B}" stroke="#999"/>',
           f'<line x1="{L}" y1="{T}" x2="{L}" y2="{height - B}" stroke="#999"/>']
    for t in _ticks(y0, y1):
        out.append(f'<text x="{L - 4}" y="{sy(t) + 4:.1f}" text-anchor="end" class="tick">{_fmt(t)}</text>'
                   f'<line x1="{L}" y1="{sy(t):.1f}" x2="{width - R}" y2="{sy(t):.1f}" stroke="#eee"/>')
    for t in _ticks(x0, x1):
        out.append(f'<text x="{sx(t):.1f}" y="{height - B + 14}" text-anchor="middle" class="tick">{_fmt(t)}</text>')
    out.append(f'<text x="{width - R}" y="{height - 3}" text-anchor="end" class="tick">iteration</text>')
    for i, (name, v) in enumerate(sorted(pts.items())):
        c = colors[i % len(colors)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in v)
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.8" points="{path}"/>')
        if len(v) == 1:
            out.append(f'<circle cx="{sx(v[0][0]):.1f}" cy="{sy(v[0][1]):.1f}" r="3" fill="{c}"/>')
        if len(pts) > 1:
            out.append(f'<text x="{width - R - 4}" y="{T + 12 + 13 * i}" text-anchor="end" '
                       f'class="tick" style="fill:{c}">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)
