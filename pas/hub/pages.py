"""The web pages: server-rendered HTML (Jinja2, autoescaped), inline SVG, no build step.

    /                     repositories and their models, search
    /r/REPO               a repository: models, lineage forest, search (text or DQL select)
    /r/REPO/v/REF         a version: network graph, tensors, metrics, files, download
    /r/REPO/lineage/REF   a version's ancestry and its model's lineage
    /r/REPO/diff?a=&b=    two versions side by side

Pages read what the JSON API reads (pas/hub/views.py) with the same
permissions; an error is a page with the same message and status."""
from __future__ import annotations

from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse
from jinja2 import DictLoader, Environment, select_autoescape
from markupsafe import Markup

from . import auth, render_svg, views
from .api import Ctx

router = APIRouter(include_in_schema=False)
MAX_ROWS = 2000   # tensors listed on a version page

BASE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}pas hub{% endblock %}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1f2330;background:#fafafb}
header{background:#1f2a44;color:#fff;padding:10px 24px;display:flex;gap:18px;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600}
main{padding:18px 24px;max-width:1200px}
a{color:#1d4ed8}
table{border-collapse:collapse;margin:8px 0 18px;background:#fff}
th,td{border:1px solid #dde;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef0f5}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#667}
.box{background:#fff;border:1px solid #dde;border-radius:6px;padding:10px 14px;margin:10px 0;overflow-x:auto}
.cols{display:flex;gap:16px;flex-wrap:wrap}.cols>div{flex:1;min-width:320px}
.btn{display:inline-block;background:#1d4ed8;color:#fff;padding:5px 12px;border-radius:5px;text-decoration:none}
input[type=text]{width:340px;padding:4px}
code{background:#eef0f5;padding:0 3px;border-radius:3px}
.graph rect{fill:#eef3ff;stroke:#4a6fd1}.graph .hl rect{fill:#fff3c4;stroke:#c28a00}
.graph .input rect,.graph .output rect{fill:#eefbea;stroke:#3c9a3c}
.graph text{font-size:12px;fill:#1f2330}.graph text.sub{font-size:10px;fill:#556}
.plot .tick{font-size:10px;fill:#556}.plot .title{font-size:12px;font-weight:600}
.add{background:#e9f9e9}.del{background:#fdeaea}.chg{background:#fff6d6}
.err{background:#fdeaea;border:1px solid #e5a0a0;padding:10px 14px;border-radius:6px}
</style></head><body>
<header><a href="/">pas hub</a>{% block crumbs %}{% endblock %}</header>
<main>{% block main %}{% endblock %}</main></body></html>"""

SEARCH = """<form class="box" method="get" action="/r/{{ repo|urlq }}" id="search">
<label>Text <input type="text" name="q" value="{{ q or '' }}" placeholder="name, message, hyper-parameter, layer type"></label>
<button type="submit">Search</button>
<span class="muted"> or DQL </span>
<input type="text" name="dql" value="{{ dql or '' }}" placeholder='select m where m.name like "cnn%"' form="dqlform">
<button type="submit" form="dqlform">Run</button></form>
<form id="dqlform" method="get" action="/r/{{ repo|urlq }}"></form>"""

TEMPLATES = {
    "base.html": BASE,
    "search.html": SEARCH,
    "index.html": """{% extends "base.html" %}{% block main %}
<h1>Repositories</h1>
{% for r in repos %}<div class="box"><h2><a href="/r/{{ r.name|urlq }}">{{ r.name }}</a>
<span class="muted">{{ 'public' if r.public else 'private' }} · {{ r.models|length }} models · {{ r.versions }} versions</span></h2>
<table><tr><th>model</th><th>versions</th><th>head</th><th>last change</th></tr>
{% for m in r.models %}<tr><td><a href="/r/{{ r.name|urlq }}/v/{{ m.name|urlq }}">{{ m.name }}</a></td>
<td class="n">{{ m.versions }}</td><td><code>{{ (m.head or '')[:12] }}</code></td><td>{{ m.last[:19] }}</td></tr>{% endfor %}
</table></div>{% else %}<p class="muted">No repository you may read.</p>{% endfor %}
{% endblock %}""",
    "repo.html": """{% extends "base.html" %}{% block title %}{{ repo }} · pas hub{% endblock %}
{% block crumbs %}<a href="/r/{{ repo|urlq }}">{{ repo }}</a>{% endblock %}{% block main %}
{% include "search.html" %}
{% if rows is not none %}<h2>{{ rows|length }} match{{ '' if rows|length == 1 else 'es' }}
<span class="muted">for {{ 'DQL' if dql else 'text' }} “{{ dql or q }}”</span></h2>
<table id="results"><tr><th>version</th><th>model</th><th>time</th><th>message</th>{% if q %}<th>matched</th>{% endif %}</tr>
{% for r in rows %}<tr><td><a href="/r/{{ repo|urlq }}/v/{{ r.id }}"><code>{{ r.id[:12] }}</code></a></td><td>{{ r.name }}</td>
<td>{{ r.time[:19] }}</td><td>{{ r.message }}</td>{% if q %}<td>{{ r.matched|join(', ') }}</td>{% endif %}</tr>{% endfor %}</table>{% endif %}
<h2>Models</h2><table id="models"><tr><th>model</th><th>versions</th><th>head</th><th>first</th><th>last</th><th></th></tr>
{% for m in models %}<tr><td><a href="/r/{{ repo|urlq }}/v/{{ m.name|urlq }}">{{ m.name }}</a></td><td class="n">{{ m.versions }}</td>
<td><code>{{ (m.head or '')[:12] }}</code></td><td>{{ m.first[:19] }}</td><td>{{ m.last[:19] }}</td>
<td>{% if m.head %}<a href="/r/{{ repo|urlq }}/lineage/{{ m.name|urlq }}">lineage</a>{% endif %}</td></tr>{% endfor %}</table>
<h2>Lineage</h2><div class="box">{{ forest }}</div>
{% endblock %}""",
    "version.html": """{% extends "base.html" %}{% block title %}{{ v.name }}@{{ v.id[:12] }} · pas hub{% endblock %}
{% block crumbs %}<a href="/r/{{ repo|urlq }}">{{ repo }}</a><a href="/r/{{ repo|urlq }}/v/{{ v.name|urlq }}">{{ v.name }}</a>{% endblock %}
{% block main %}<h1>{{ v.name }} <code>{{ v.id[:12] }}</code></h1>
<p>{{ v.message }} <span class="muted">· {{ v.time[:19] }} · {{ v.kind }}{% if v.refs %} · refs {{ v.refs|join(', ') }}{% endif %}</span></p>
<p><a class="btn" id="download" href="/api/repos/{{ repo|urlq }}/versions/{{ v.id }}/safetensors" download>Download safetensors</a>
<a href="/r/{{ repo|urlq }}/lineage/{{ v.id }}">lineage</a>
{% if v.parent %}· parent <a href="/r/{{ repo|urlq }}/v/{{ v.parent }}"><code>{{ v.parent[:12] }}</code></a>
· <a id="diff-parent" href="/r/{{ repo|urlq }}/diff?{{ {'a': v.parent, 'b': v.id}|qs }}">diff with parent</a>{% endif %}
{% for c in v.children %} · child <a href="/r/{{ repo|urlq }}/v/{{ c }}"><code>{{ c[:12] }}</code></a>{% endfor %}</p>
<div class="cols"><div><h2>Network</h2>
{% if v.network %}<p class="muted">{{ v.network.kind }}{% if v.network['class'] %} · {{ v.network['class'] }}{% endif %} · {{ v.network.nodes }} nodes, {{ v.network.edges }} edges
· {{ 'rebuildable' if v.network.rebuildable else 'not rebuildable' }}</p><div class="box" id="network">{{ network_svg }}</div>
{% else %}<p class="muted">No network definition stored (a plain <code>pas archive</code> version).</p>{% endif %}</div>
<div><h2>Metrics</h2>{% for name, svg in plots %}<div class="box">{{ svg }}</div>{% else %}<p class="muted">No training log.</p>{% endfor %}
<h2>Hyper-parameters</h2>{% if v.hyperparams %}<table>{% for k, val in v.hyperparams|dictsort %}<tr><th>{{ k }}</th><td><code>{{ val|tojson }}</code></td></tr>{% endfor %}</table>
{% else %}<p class="muted">none</p>{% endif %}
{% if v.metadata %}<h2>Weight-file metadata</h2><table>{% for k, val in v.metadata|dictsort %}<tr><th>{{ k }}</th><td>{{ val }}</td></tr>{% endfor %}</table>{% endif %}
{% if v.files %}<h2>Files</h2><table>{% for f in v.files %}<tr><td>{{ f.name }}</td><td class="n">{{ f.bytes|size }}</td></tr>{% endfor %}</table>{% endif %}
</div></div>
<h2>Tensors <span class="muted">{{ v.parameters.tensors }} · {{ v.parameters.elements|num }} elements · {{ v.parameters.bytes|size }}
{% if v.stored_sizes %} · stored {{ stored|size }} ({{ ratio }}){% endif %}</span></h2>
<table id="tensors"><tr><th>name</th><th>dtype</th><th>shape</th><th>elements</th><th>bytes</th>{% if v.stored_sizes %}<th>stored</th><th>ratio</th><th>encoding</th>{% endif %}</tr>
{% for t in v.tensors[:max_rows] %}<tr><td>{{ t.name }}</td><td>{{ t.dtype }}{% if t.lossy %} ({{ t.lossy }}){% endif %}</td><td>{{ t.shape|join('×') }}</td>
<td class="n">{{ t.elements|num }}</td><td class="n">{{ t.bytes|size }}</td>{% if v.stored_sizes %}<td class="n">{{ t.stored_bytes|size }}</td>
<td class="n">{{ '%.2f'|format(t.bytes / t.stored_bytes) if t.stored_bytes else '' }}</td><td>{{ t.encoding }}{% if t.base %} on <code>{{ t.base[:8] }}</code>{% endif %}</td>{% endif %}</tr>{% endfor %}</table>
{% if v.tensors|length > max_rows %}<p class="muted">{{ v.tensors|length - max_rows }} more tensors: the JSON API lists them all.</p>{% endif %}
{% endblock %}""",
    "lineage.html": """{% extends "base.html" %}{% block title %}lineage of {{ l.name }} · pas hub{% endblock %}
{% block crumbs %}<a href="/r/{{ repo|urlq }}">{{ repo }}</a><a href="/r/{{ repo|urlq }}/v/{{ l.id }}">{{ l.name }}</a>{% endblock %}
{% block main %}<h1>Lineage of {{ l.name }} <code>{{ l.id[:12] }}</code></h1>
<div class="box" id="lineage">{{ forest }}</div>
<h2>Ancestry</h2><table id="ancestry"><tr><th>derived</th><th>model</th><th>base</th><th>commit</th><th>time</th><th></th></tr>
{% for e in l.ancestry %}<tr><td><a href="/r/{{ repo|urlq }}/v/{{ e.derived }}"><code>{{ e.derived[:12] }}</code></a></td><td>{{ e.name }}</td>
<td>{% if e.base %}<code>{{ e.base[:12] }}</code>{% endif %}</td><td>{{ e.commit.message }}</td><td>{{ e.commit.time[:19] }}</td>
<td>{% if e.base %}<a href="/r/{{ repo|urlq }}/diff?{{ {'a': e.base, 'b': e.derived}|qs }}">diff</a>{% endif %}</td></tr>{% endfor %}</table>
{% endblock %}""",
    "diff.html": """{% extends "base.html" %}{% block title %}diff · pas hub{% endblock %}
{% block crumbs %}<a href="/r/{{ repo|urlq }}">{{ repo }}</a>{% endblock %}{% block main %}
<h1>Diff</h1>
<div class="cols" id="sides">{% for side in ['a', 'b'] %}{% set s = d[side] %}<div class="box"><h2>{{ side }}: <a href="/r/{{ repo|urlq }}/v/{{ s.id }}">{{ s.name }} <code>{{ s.id[:12] }}</code></a></h2>
<p>{{ s.message }} <span class="muted">{{ s.time[:19] }}</span></p>
<p><a class="btn" href="/api/repos/{{ repo|urlq }}/versions/{{ s.id }}/safetensors" download>Download</a></p></div>{% endfor %}</div>
<h2>Weights <span class="muted">{{ d.changed|length }} changed · {{ d.added|length }} added · {{ d.removed|length }} removed · {{ d.unchanged }} unchanged ·
{{ d.tensors_read }} of {{ d.tensors_total }} tensors read</span></h2>
<table id="weights"><tr><th>tensor</th><th>dtype</th><th>shape</th><th>changed</th><th>max |b−a|</th><th>rel L2</th></tr>
{% for c in d.changed %}<tr class="chg"><td>{{ c.name }}</td><td>{{ c.dtype if c.dtype is string else c.dtype|join(' → ') }}</td>
<td>{{ c.shape|tojson }}</td><td class="n">{{ '%.1f%%'|format(100 * c.changed_fraction) if c.changed_fraction is number else (c.note or '') }}</td>
<td class="n">{{ '%.3g'|format(c.max_abs) if c.max_abs is number else '' }}</td><td class="n">{{ '%.3g'|format(c.rel_l2) if c.rel_l2 is number else '' }}</td></tr>{% endfor %}
{% for n in d.added %}<tr class="add"><td>{{ n }}</td><td colspan="5">added in b</td></tr>{% endfor %}
{% for n in d.removed %}<tr class="del"><td>{{ n }}</td><td colspan="5">removed in b</td></tr>{% endfor %}</table>
<div class="cols"><div><h2>Network {% if d.network.same %}<span class="muted">same</span>{% endif %}</h2>
{% if not d.network.same %}<table>{% for n in d.network.added %}<tr class="add"><td>{{ n if n is string else n|tojson }}</td><td>added</td></tr>{% endfor %}
{% for n in d.network.removed %}<tr class="del"><td>{{ n if n is string else n|tojson }}</td><td>removed</td></tr>{% endfor %}
{% for c in d.network.changed %}<tr class="chg"><td>{{ c.id }}</td><td>{{ c.fields|join(', ') }}</td></tr>{% endfor %}
{% for e in d.network.edges_added %}<tr class="add"><td>{{ e|join(' → ') }}</td><td>edge added</td></tr>{% endfor %}
{% for e in d.network.edges_removed %}<tr class="del"><td>{{ e|join(' → ') }}</td><td>edge removed</td></tr>{% endfor %}</table>{% endif %}
<h2>Hyper-parameters</h2><table id="hparams"><tr><th>key</th><th>a</th><th>b</th></tr>
{% for k, v in d.hyperparams.changed|dictsort %}<tr class="chg"><td>{{ k }}</td><td><code>{{ v[0]|tojson }}</code></td><td><code>{{ v[1]|tojson }}</code></td></tr>{% endfor %}
{% for k, v in d.hyperparams.added|dictsort %}<tr class="add"><td>{{ k }}</td><td></td><td><code>{{ v|tojson }}</code></td></tr>{% endfor %}
{% for k, v in d.hyperparams.removed|dictsort %}<tr class="del"><td>{{ k }}</td><td><code>{{ v|tojson }}</code></td><td></td></tr>{% endfor %}</table></div>
<div><h2>Metrics (last logged)</h2><table id="metrics"><tr><th>metric</th><th>a</th><th>b</th></tr>
{% for m, v in d.metrics|dictsort %}<tr><td>{{ m }}</td><td class="n">{{ v.a.value if v.a else '' }}{% if v.a %} <span class="muted">@{{ v.a.iteration }}</span>{% endif %}</td>
<td class="n">{{ v.b.value if v.b else '' }}{% if v.b %} <span class="muted">@{{ v.b.iteration }}</span>{% endif %}</td></tr>{% endfor %}</table>
{% for name, svg in plots %}<div class="box">{{ svg }}</div>{% endfor %}
<h2>Files</h2><p>{% for f in d.files.added %}<span class="add">+{{ f }}</span> {% endfor %}{% for f in d.files.removed %}<span class="del">−{{ f }}</span> {% endfor %}
{% for f in d.files.changed %}<span class="chg">~{{ f }}</span> {% endfor %}{% if not (d.files.added or d.files.removed or d.files.changed) %}<span class="muted">same</span>{% endif %}</p></div></div>
{% endblock %}""",
    "error.html": """{% extends "base.html" %}{% block title %}{{ status }} · pas hub{% endblock %}{% block main %}
<div class="err"><h1>{{ status }}</h1><p id="message">{{ message }}</p></div><p><a href="/">back to the hub</a></p>{% endblock %}""",
}


def _size(n) -> str:
    if not isinstance(n, (int, float)):
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


_env = Environment(loader=DictLoader(TEMPLATES), autoescape=select_autoescape(default=True, default_for_string=True))
_env.filters.update(urlq=lambda s: quote(str(s), safe=""), qs=lambda d: urlencode(d), size=_size,
                    num=lambda n: f"{n:,}" if isinstance(n, int) else str(n))


def render(name: str, **kw) -> str:
    return _env.get_template(name).render(**kw)


def error_page(status: int, message: str) -> str:
    return render("error.html", status=status, message=message)


def _page(html: str) -> HTMLResponse:
    return HTMLResponse(html)


def _forest_svg(repo: str, roots: list[dict], highlight: set | None = None) -> Markup:
    nodes, edges = [], []

    def walk(n, parent):
        nodes.append({"id": n["id"], "label": n["name"], "sub": f"{n['id'][:8]} · {n['message'][:22]}",
                      "class": "node"})
        if parent is not None:
            edges.append((parent, n["id"]))
        for c in n["children"]:
            walk(c, n["id"])
    for r in roots:
        walk(r, None)
        if r.get("base") and r["base"]["id"] not in {x["id"] for x in nodes}:
            nodes.append({"id": r["base"]["id"], "label": r["base"]["name"] or "?", "sub": r["base"]["id"][:8],
                          "class": "input"})
            edges.append((r["base"]["id"], r["id"]))
    return Markup(render_svg.graph(nodes, edges, width=190, height=36,
                                   link=lambda n: f"/r/{quote(repo, safe='')}/v/{n['id']}", highlight=highlight))


def _network_svg(net: dict | None) -> Markup:
    if not net:
        return Markup("")
    nodes = []
    for n in net["nodes"]:
        params = n.get("params") or {}
        sub = ", ".join(f"{k}={v}" for k, v in list(params.items())[:2]) if params else (n.get("target") or "")
        cls = n["op"] if n["op"] in ("input", "output") else "node"
        nodes.append({"id": n["id"], "label": f"{n['id']}: {n['type']}" if n["type"] != n["id"] else n["id"],
                      "sub": str(sub), "class": cls})
    return Markup(render_svg.graph(nodes, [tuple(e) for e in net["edges"]]))


@router.get("/", response_class=HTMLResponse)
def index(ctx: Ctx = Depends(Ctx)):
    repos = []
    for name, rc in sorted(ctx.cfg.repos.items()):
        if auth.can_read(rc, ctx.user):
            with ctx.hub.repos.read(name) as r:
                t = views.models(r)
                repos.append({"name": name, "public": rc.public, "models": t["models"],
                              "versions": sum(m["versions"] for m in t["models"])})
    return _page(render("index.html", repos=repos))


@router.get("/r/{repo}", response_class=HTMLResponse)
def repo_page(repo: str, q: str | None = None, dql: str | None = None, ctx: Ctx = Depends(Ctx)):
    q = q or None
    dql = dql or None
    with ctx.read(repo) as r:
        t = views.models(r)
        rows = None
        if dql is not None:
            rows = views.dql_select(r, ctx.text(dql, "the DQL statement"))
        elif q is not None:
            rows = views.search(r, ctx.text(q, "the search text"))
    return _page(render("repo.html", repo=repo, models=t["models"], forest=_forest_svg(repo, t["tree"]),
                        rows=rows, q=q, dql=dql))


@router.get("/r/{repo}/v/{ref}", response_class=HTMLResponse)
def version_page(repo: str, ref: str, ctx: Ctx = Depends(Ctx)):
    with ctx.read(repo) as r:
        v = views.version_detail(r, ctx.text(ref, "the version"))
    stored = sum(t.get("stored_bytes", 0) for t in v["tensors"])
    ratio = f"{v['parameters']['bytes'] / stored:.2f}x" if stored else ""
    plots = [(n, Markup(render_svg.plot({n: s}, title=n))) for n, s in sorted(v["series"].items())]
    return _page(render("version.html", repo=repo, v=v, plots=plots, stored=stored, ratio=ratio, max_rows=MAX_ROWS,
                        network_svg=_network_svg(v["network_def"])))


@router.get("/r/{repo}/lineage/{ref}", response_class=HTMLResponse)
def lineage_page(repo: str, ref: str, ctx: Ctx = Depends(Ctx)):
    with ctx.read(repo) as r:
        lin = views.lineage(r, ctx.text(ref, "the version"))
    mine = {e["derived"] for e in lin["ancestry"]}
    roots = [t for t in lin["tree"] if _contains(t, mine)]
    return _page(render("lineage.html", repo=repo, l=lin, forest=_forest_svg(repo, roots, highlight=mine)))


def _contains(node: dict, ids: set) -> bool:
    return node["id"] in ids or any(_contains(c, ids) for c in node["children"])


@router.get("/r/{repo}/diff", response_class=HTMLResponse)
def diff_page(repo: str, a: str, b: str, ctx: Ctx = Depends(Ctx)):
    with ctx.read(repo) as r:
        d = views.diff(r, ctx.text(a, "version a"), ctx.text(b, "version b"))
        sa = views.version_detail(r, d["a"]["id"], stored_sizes=False)["series"]
        sb = views.version_detail(r, d["b"]["id"], stored_sizes=False)["series"]
    plots = [(m, Markup(render_svg.plot({"a": sa.get(m, []), "b": sb.get(m, [])}, title=m)))
             for m in sorted(set(sa) | set(sb))]
    return _page(render("diff.html", repo=repo, d=d, plots=plots))
