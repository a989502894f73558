"""The `dlv` command (ModelHub's verbs) and the same verbs as `pas` subcommands.

`dlv init/archive/eval` are dlv's own (repository + staging area; the storage
planner over the repository; progressive evaluation with the stored network);
the verbs that do not clash with `pas` commands are also registered on the
`pas` app (`register`). Errors print ``dlv: error: ...`` with the exit code of
their class (pas/errors.py, docs/cli.md). Heavy modules (numpy, torch) are
imported inside the commands that need them.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import BadInput

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="dlv: model versioning over pas (ModelHub's DLV verbs). See docs/dlv.md.")

JsonOpt = typer.Option(False, "--json", help="Machine-readable JSON on stdout.")


@app.callback()
def _main(repo: Optional[str] = typer.Option(None, "--repo", "-R", help="Repository path (default: $PAS_REPO, "
                                             "then the current directory)."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars.")):
    st = _state()
    st.repo, st.quiet = repo, quiet


def _state():
    # pas.cli holds --repo for both commands; imported here, not at the top,
    # because pas.cli imports this module at its end to register the verbs.
    from ..cli import state
    return state


def _open(write: bool = False):
    from ..repo import Repository
    st = _state()
    # `pas -o KEY=VALUE` (s3:// repositories, the remote-store work) reaches the verbs run under pas.
    opts = getattr(st, "storage_options", None)
    if opts:
        return Repository.open(st.repo, write=write, storage_options=opts)
    return Repository.open(st.repo, write=write)


def _root() -> Path:
    """Where dlv keeps its local files (staging area, saved queries): the
    repository folder; for an object-store repository (s3://), a folder of
    this machine's cache named after its URL (the stage is local work)."""
    from ..repo import Repository, is_url
    where = _state().repo or os.environ.get("PAS_REPO") or None
    if where is not None and is_url(where):
        import hashlib
        base = Path(os.environ.get("PAS_CACHE") or Path.home() / ".cache" / "pas")
        root = base / "remote-stage" / hashlib.sha256(where.rstrip("/").encode()).hexdigest()[:24]
        root.mkdir(parents=True, exist_ok=True)
        return root
    return Repository.find(_state().repo)


def _emit(obj, as_json: bool, human) -> None:
    if as_json:
        from .metadata import json_safe  # NaN/inf as strings: --json is strict JSON
        typer.echo(json.dumps(json_safe(obj), indent=2, default=str, allow_nan=False))
    else:
        human(obj)


def _g(x) -> str:
    return f"{x:.4g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else str(x)


# ------------------------------------------------------------ version management
@app.command()
def init(path: str = typer.Argument(".", help="Where to create the repository: a folder, or s3://BUCKET/PREFIX."),
         as_json: bool = JsonOpt):
    """Create a repository at PATH with an empty staging area (an existing pas repository gets the staging area)."""
    from ..errors import NotARepository
    from ..repo import REPO_DIR, Repository, is_url
    from .model import Stage
    if is_url(str(path)):   # an object store: the repository there, the stage in this machine's cache
        try:
            Repository.open(str(path)).close()
            created = False
        except NotARepository:
            Repository.init(str(path)).close()
            created = True
        _state().repo = str(path)
        root = _root()
    else:
        try:
            root = Repository.find(path)
            created = False
        except NotARepository:
            Repository.init(path).close()
            root = Path(path) / REPO_DIR
            created = True
    stage = Stage.load(root)
    if not stage.path.exists():
        stage.save()
    info = {"path": str(path) if is_url(str(path)) else str(root), "created": created, "stage": str(stage.path)}
    _emit(info, as_json, lambda i: typer.echo(
        f"{'Initialized empty' if created else 'Reinitialized existing'} dlv repository in {i['path']}"))


@app.command()
def add(paths: List[Path] = typer.Argument(None, help="Files to stage: a checkpoint (weights), a network "
                                           "definition (JSON/YAML), a config (hyper-parameters), a training log "
                                           "(CSV/JSON lines), any other file."),
        kind: Optional[str] = typer.Option(None, "--as", help="weights | network | config | log | file "
                                           "(default: guessed from the name and content)."),
        name: Optional[str] = typer.Option(None, "--name", "-n", help="The model the next commit goes to."),
        module: Optional[str] = typer.Option(None, "--module", help="file.py:attr or package.module:attr: a torch "
                                             "nn.Module (class, factory or instance) whose network is extracted "
                                             "with torch.fx at commit."),
        store_as: Optional[str] = typer.Option(None, "--path", help="Store the one file given under this "
                                               "relative path."),
        as_json: bool = JsonOpt):
    """Stage files for the next commit (checked now; committed by `dlv commit`)."""
    from .model import add as do_add
    stage, new = do_add(_root(), list(paths or []), kind=kind, model=name, module=module, store_as=store_as)
    info = {"model": stage.model, "added": new, "staged": stage.entries}

    def human(i):
        for e in i["added"]:
            typer.echo(f"staged {e['kind']:<8} {_entry_label(e)}")
        typer.echo(f"model: {i['model'] or '(none yet: --name NAME)'}")
    _emit(info, as_json, human)


def _entry_label(e: dict) -> str:
    return e.get("name") or e.get("path") or e.get("spec") or "?"


@app.command()
def status(as_json: bool = JsonOpt):
    """What is staged, and for which model."""
    from .model import Stage
    stage = Stage.load(_root())
    info = {"model": stage.model, "staged": stage.entries}

    def human(i):
        typer.echo(f"model: {i['model'] or '(none: dlv add --name NAME)'}")
        for e in i["staged"] or []:
            typer.echo(f"  {e['kind']:<8} {_entry_label(e)}")
        if not i["staged"]:
            typer.echo("  nothing staged")
    _emit(info, as_json, human)


@app.command()
def reset(paths: List[str] = typer.Argument(None, help="Staged files (as added, or their stored names) "
                                            "or a module spec; default: everything."),
          as_json: bool = JsonOpt):
    """Unstage files (the model name stays)."""
    from .model import reset as do_reset
    stage, removed = do_reset(_root(), list(paths or []))
    info = {"model": stage.model, "removed": removed, "staged": stage.entries}

    def human(i):
        for e in i["removed"]:
            typer.echo(f"unstaged {e['kind']:<8} {_entry_label(e)}")
        typer.echo(f"{len(i['staged'])} still staged")
    _emit(info, as_json, human)


@app.command()
def commit(message: str = typer.Option(..., "--message", "-m"),
           name: Optional[str] = typer.Option(None, "--name", "-n", help="Model name (default: the staged one)."),
           parent: Optional[str] = typer.Option(None, "--parent", "-p", help="Derive from this version "
                                                "(default: the model's current version)."),
           as_json: bool = JsonOpt):
    """Create a model version from the staged files (weights, network, metadata, files: one atomic version).

    Weights go through pas with deltas against the parent; what is not
    restaged (weights, network, hyper-parameters, files) is the parent's."""
    from .model import commit as do_commit
    root = _root()
    with _open(write=True) as repo:
        res = do_commit(repo, root, message, name=name, parent=parent)

    def human(r):
        enc = ", ".join(f"{k} {v}" for k, v in sorted(r["encodings"].items()))
        typer.echo(f"{r['name']} -> {r['version_id'][:12]}  {r['message']}  "
                   f"(parent {r['parent'][:12] if r['parent'] else '(root)'}; {r['tensors']} objects, {r['tensors_reused']} reused; {enc})")
        typer.echo("  from: " + ", ".join(f"{k} {v}" for k, v in r["sources"].items()))
    _emit(res, as_json, human)


@app.command()
def copy(src: str = typer.Argument(..., help="Version to copy (ref or id)."),
         new_name: str = typer.Argument(..., help="The new model's name."),
         message: str = typer.Option("", "--message", "-m"),
         as_json: bool = JsonOpt):
    """Scaffold a new model from an existing version (its lineage records where it came from)."""
    from .model import Stage
    from .model import copy as do_copy
    root = _root()
    with _open(write=True) as repo:
        res = do_copy(repo, src, new_name, message)
    stage = Stage.load(root)
    stage.model = new_name
    stage.save()
    _emit(res, as_json, lambda r: typer.echo(f"{r['name']} -> {r['version_id'][:12]}  copied from "
                                             f"{src} ({r['parent'][:12]}); {r['tensors_reused']} objects reused"))


@app.command()
def archive(algorithm: str = typer.Option("best", "--algorithm", "-a", help="mst | spt | last | pas-mt | pas-pt | best | exact."),
            alpha: Optional[float] = typer.Option(None, "--budget", "-b", help="Each version may cost ALPHA x its "
                                                  "recreation cost in the shortest-path tree."),
            max_seconds: Optional[float] = typer.Option(None, "--max-seconds", "-s"),
            recreation: str = typer.Option("independent", "--recreation", "-r", help="independent | parallel."),
            dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Plan and report; write nothing."),
            as_json: bool = JsonOpt):
    """Run the storage planner over the repository and apply its plan (what `pas repack` does)."""
    from ..archive.repack import repack
    from ..cli import check_plan_options
    check_plan_options(algorithm, alpha, max_seconds, recreation)
    with _open(write=not dry_run) as repo:
        res = repack(repo, algorithm, alpha, max_seconds, recreation, dry_run=dry_run, gc=True)
    info = res.to_json()

    def human(i):
        t = i["tensors"]
        typer.echo(f"algorithm {i['algorithm']}: {t['encode']} tensors re-encoded, {t['unchanged']} unchanged; "
                   f"storage (estimated) {i['storage']['before']:,.0f} -> {i['storage']['after']:,.0f} bytes"
                   + (" (dry run: nothing written)" if i["dry_run"] else ""))
    _emit(info, as_json, human)


# ------------------------------------------------------------------ exploration
@app.command("list")
def list_(name: Optional[str] = typer.Option(None, "--name", "-n", help="Only this model."),
          last: bool = typer.Option(False, "--last", help="Only each model's current version."),
          message: Optional[str] = typer.Option(None, "--message", "-m", help="Only versions whose commit "
                                                "message contains this (case-insensitive)."),
          as_json: bool = JsonOpt):
    """Models and their lineage, as a tree (copies hang under the version they came from)."""
    from .model import tree
    with _open() as repo:
        info = tree(repo, name=name, last=last, message=message)

    def human(i):
        for m in i["models"]:
            typer.echo(f"{m['name']}: {m['versions']} version{'s' if m['versions'] != 1 else ''}, "
                       f"head {str(m['head'])[:12]}")
        typer.echo("")

        def walk(node, prefix, last_child, top):
            branch = "" if top else ("└── " if last_child else "├── ")
            refs = f" ({', '.join(node['refs'])})" if node["refs"] else ""
            base = f"  [from {node['base']['name']}@{node['base']['id'][:12]}]" if node.get("base") else ""
            typer.echo(f"{prefix}{branch}{node['name']}@{node['id'][:12]}{refs}  {node['time'][:19]}  "
                       f"{node['message']}{base}")
            kids = node["children"]
            ext = "" if top else ("    " if last_child else "│   ")
            for j, c in enumerate(kids):
                walk(c, prefix + ext, j == len(kids) - 1, False)
        for r in i["tree"]:
            walk(r, "", True, True)
    _emit(info, as_json, human)


@app.command()
def log(ref: str = typer.Argument(..., help="Ref name or version id."), as_json: bool = JsonOpt):
    """The lineage of REF: parent(base, derived, commit), newest first."""
    from .model import lineage
    with _open() as repo:
        rows = lineage(repo, ref)

    def human(rs):
        for r in rs:
            base = r["base"][:12] if r["base"] else "(root)"
            typer.echo(f"{r['derived'][:12]} <- {base}  {r['name']}  {r['commit']['time'][:19]}  {r['commit']['message']}")
    _emit(rows, as_json, human)


@app.command()
def desc(ref: str = typer.Argument(..., help="Ref name or version id."), as_json: bool = JsonOpt):
    """One version: network, parameters per layer (shapes, counts), hyper-parameters, metrics across iterations, files."""
    from . import metadata as md
    from .model import describe
    with _open() as repo:
        info = md.json_safe(describe(repo, ref))

    def human(i):
        typer.echo(f"{i['name']}@{i['id'][:12]}  {i['time'][:19]}  {i['message']}")
        typer.echo(f"  parent {i['parent'][:12] if i['parent'] else '(root)'}, {len(i['children'])} children, refs {', '.join(i['refs']) or '-'}"
                   + (f", copied from {i['copied_from']['name']}@{i['copied_from']['id'][:12]}" if i["copied_from"] else ""))
        n = i["network"]
        if n:
            typer.echo(f"network: {n['class'] or ''} ({n['kind']}, from {n['source']}), {n['nodes']} nodes, "
                       f"{n['edges']} edges, {'rebuildable' if n['rebuildable'] else 'not rebuildable'}")
        else:
            typer.echo("network: none stored")
        p = i["parameters"]
        typer.echo(f"parameters: {p['elements']:,} in {p['tensors']} tensors ({p['bytes']:,} bytes)")
        for layer in i["layers"]:
            params = ", ".join(f"{k}={v}" for k, v in layer["params"].items())
            shapes = ", ".join(f"{t['name'].rpartition('.')[2]} {tuple(t['shape'])}" for t in layer["tensors"])
            typer.echo(f"  {layer['id']:<20} {layer['type'] or ''!s:<12} {layer['count']:>10,}  {shapes}"
                       + (f"  [{params}]" if params else ""))
        if i["hyperparams"]:
            typer.echo("hyper-parameters: " + ", ".join(f"{k}={v}" for k, v in i["hyperparams"].items()))
        if i["metrics"]:
            typer.echo("metrics (first -> last):")
            for m, s in i["metrics"].items():
                typer.echo(f"  {m:<10} {_g(s['first']['value'])} @ {s['first']['iteration']} -> "
                           f"{_g(s['last']['value'])} @ {s['last']['iteration']}  ({s['count']} points)")
        for f in i["files"]:
            typer.echo(f"file: {f['name']} ({f['bytes']:,} bytes)")
    _emit(info, as_json, human)


@app.command()
def diff(refs: List[str] = typer.Argument(..., help="Two or more versions (refs or ids)."),
         no_weights: bool = typer.Option(False, "--no-weights", help="Compare metadata and network only."),
         as_json: bool = JsonOpt):
    """Versions side by side: tensors, network, hyper-parameters, metrics, files.

    Tensors added, removed and changed (relative L2, share of elements
    changed, max abs); a tensor with the same content address in both is
    unchanged without being read."""
    from .diff import diff_many
    with _open() as repo:
        info = diff_many(repo, list(refs), weights=not no_weights)

    def one(d):
        typer.echo(f"{d['a']['name']}@{d['a']['id'][:12]} -> {d['b']['name']}@{d['b']['id'][:12]}")
        if "changed" in d:
            typer.echo(f"  tensors: {len(d['added'])} added, {len(d['removed'])} removed, {len(d['changed'])} changed, "
                       f"{d['unchanged']} unchanged ({d['tensors_read']} of {d['tensors_total']} read)")
            for n in d["added"]:
                typer.echo(f"  + {n}")
            for n in d["removed"]:
                typer.echo(f"  - {n}")
            for c in d["changed"]:
                if c.get("note"):
                    typer.echo(f"  ~ {c['name']}: {c['note']} ({c['dtype']}, {c['shape']})")
                else:
                    typer.echo(f"  ~ {c['name']}: rel L2 {_g(c['rel_l2'])}, {100 * c['changed_fraction']:.1f}% changed, "
                               f"max abs {_g(c['max_abs'])}")
        net = d["network"]
        if not net.get("same"):
            typer.echo("  network: " + json.dumps({k: v for k, v in net.items() if v and k != "same"})[:400])
        hp = d["hyperparams"]
        for k, (a, b) in hp["changed"].items():
            typer.echo(f"  hyper-parameter {k}: {a} -> {b}")
        for k, v in hp["added"].items():
            typer.echo(f"  hyper-parameter + {k} = {v}")
        for k, v in hp["removed"].items():
            typer.echo(f"  hyper-parameter - {k} = {v}")
        for m, s in d["metrics"].items():
            fa = f"{_g(s['a']['value'])} @ {s['a']['iteration']}" if s["a"] else "-"
            fb = f"{_g(s['b']['value'])} @ {s['b']['iteration']}" if s["b"] else "-"
            typer.echo(f"  metric {m}: {fa} -> {fb}")
        f = d["files"]
        if any(f.values()):
            typer.echo(f"  files: +{f['added']} -{f['removed']} ~{f['changed']}")

    def human(i):
        for d in i.get("pairs", [i]):
            one(d)
    _emit(info, as_json, human)


@app.command("eval")
def eval_(ref: str = typer.Argument(..., help="Ref name or version id."),
          data: Path = typer.Option(..., "--data", "-d", help=".npz with x (inputs) and optionally y (labels)."),
          model: Optional[str] = typer.Option(None, "--model", "-m", help="module:attr of an nn.Module (default: "
                                              "the network stored with the version, rebuilt)."),
          top_k: int = typer.Option(1, "--top-k", "-k"),
          progressive: bool = typer.Option(True, "--progressive/--no-progressive", help="Top byte planes first; "
                                           "lower ones only for undecided inputs (exact predictions)."),
          batch_size: int = typer.Option(256, "--batch-size"),
          as_json: bool = JsonOpt):
    """Evaluate a version on DATA through pas's progressive path, with its stored network."""
    from ..progressive import evaluate, load_model, load_npz
    from . import netdef
    from .model import open_version
    x, y = load_npz(data)
    with _open() as repo:
        if model is not None:
            net = load_model(model)
        else:
            mv = open_version(repo, ref)
            if mv.network is None:
                raise BadInput(f"{mv.name}@{mv.short} has no stored network: give --model module:attr")
            net = netdef.build(mv.network)
        res = evaluate(repo, ref, net, x, y, top_k=top_k, progressive=progressive, batch_size=batch_size)
    info = res.to_json()

    def human(i):
        typer.echo(f"{i['n']} inputs, top-{i['top_k']}, {'progressive' if i['progressive'] else 'full precision'}")
        for s in i["steps"]:
            typer.echo(f"  {s['planes']} planes{' (exact)' if s['exact'] else ''}: {s['evaluated']} evaluated, "
                       f"{s['decided']} decided, {s['bytes_read']:,} bytes read")
        typer.echo(f"bytes read {i['bytes_read']:,} of {i['full_bytes']:,}, {i['seconds']:.3f} s")
        if i["accuracy"] is not None:
            typer.echo(f"top-{i['top_k']} accuracy {100 * i['accuracy']:.2f}%")
    _emit(info, as_json, human)


@app.command()
def query(text: str = typer.Argument(..., help="A DQL statement (docs/dql.md)."),
          explain: bool = typer.Option(False, "--explain", help="Say what the statement would read, commit "
                                       "and train; run nothing."),
          save: Optional[str] = typer.Option(None, "--save", help="Keep the statement under this name (for "
                                             "`from \"NAME\"`) instead of running it."),
          as_json: bool = JsonOpt):
    """Run a DQL statement: select, slice, construct or evaluate (docs/dql.md)."""
    import dql
    from dql import saved
    from dql.ast import Select
    stmt = dql.parse(text)   # a syntax error is reported before the repository is opened
    if save is not None:
        saved.save(_root(), save, text)
        _emit({"saved": save}, as_json, lambda i: typer.echo(f"saved query {i['saved']!r}"))
        return
    # select only reads; slice, construct and evaluate commit new versions.
    write = not explain and not isinstance(stmt.query, Select)
    named = saved.load(_root())
    with _open(write=write) as repo:
        if explain:
            plan = dql.explain(repo, text, named)
            _emit(plan, as_json, lambda p: typer.echo(json.dumps(p, indent=2, default=str)))
            return
        res = dql.execute(repo, text, named)
    rows = res["rows"]

    def human(rs):
        for r in rs:
            typer.echo(f"{r['name']}@{r['id'][:12]}  {str(r['time'])[:19]}  {r['message']}")
        typer.echo(f"({len(rs)} row{'s' if len(rs) != 1 else ''})")
        st = res["stats"]
        if st:
            typer.echo(f"trained {st['candidates']} candidates, {st['trained_iterations']:,} iterations "
                       f"(the full grid: {st['full_grid_iterations']:,}); {st['survivors']} kept")
    if res["stats"]:   # evaluate: every row says what the run trained (a list of rows either way)
        rows = [dict(r, evaluate=res["stats"]) for r in rows]
    _emit(rows, as_json, lambda _: human(res["rows"]))


# ------------------------------------------------------------------------ remote
def _remote(path, write: bool, create: bool = False):
    from ..transfer import open_remote
    return open_remote(path, write=write, create=create, storage_options=getattr(_state(), "storage_options", None))


@app.command()
def publish(names: List[str] = typer.Argument(..., help="Models (refs) or versions to publish."),
            to: str = typer.Option(..., "--to", help="The remote repository: a folder or s3://BUCKET/PREFIX."),
            create: bool = typer.Option(False, "--create", help="Create the remote repository if it does not exist."),
            force: bool = typer.Option(False, "--force", help="Move remote refs even when not a fast-forward."),
            as_json: bool = JsonOpt):
    """Copy models (with their lineage) to a remote repository: only the objects it lacks, refs last."""
    from ..transfer import copy_versions, wanted
    with _open() as src:
        refs, versions = wanted(src, names)
        with _remote(to, write=True, create=create) as dst:
            rep = copy_versions(src, dst, versions, refs, force=force)
    from ..cli import _transfer_summary
    _emit(rep.to_json(), as_json, lambda r: typer.echo(_transfer_summary("published to", to, r)))


@app.command()
def pull(names: List[str] = typer.Argument(..., help="Models (refs) or versions to fetch."),
         from_: str = typer.Option(..., "--from", help="The remote repository: a folder or s3://BUCKET/PREFIX."),
         force: bool = typer.Option(False, "--force", help="Move local refs even when not a fast-forward."),
         as_json: bool = JsonOpt):
    """Fetch models (with their lineage) from a remote repository: only the objects missing here."""
    from ..transfer import copy_versions, wanted
    with _remote(from_, write=False) as src:
        refs, versions = wanted(src, names)
        with _open(write=True) as dst:
            rep = copy_versions(src, dst, versions, refs, force=force)
    from ..cli import _transfer_summary
    _emit(rep.to_json(), as_json, lambda r: typer.echo(_transfer_summary("pulled from", from_, r)))


@app.command()
def search(text: str = typer.Argument(..., help="Text to find in names, messages, hyper-parameters, networks, files."),
           remote: Optional[str] = typer.Option(None, "--remote", help="Search this repository (a folder or "
                                                "s3://BUCKET/PREFIX) instead."),
           as_json: bool = JsonOpt):
    """Find model versions by name or metadata (case-insensitive substring)."""
    from .model import search as do_search
    with (_remote(remote, write=False) if remote is not None else _open()) as repo:
        rows = do_search(repo, text)

    def human(rs):
        for r in rs:
            typer.echo(f"{r['name']}@{r['id'][:12]}{' (head)' if r['head'] else ''}  {r['time'][:19]}  "
                       f"{r['message']}  [{', '.join(r['matched'])}]")
        if not rs:
            typer.echo("no match")
    _emit(rows, as_json, human)


# ----------------------------------------------------------------- registration
#: Verbs also offered as `pas` subcommands (init, archive, eval and log are
#: pas commands of their own with other meanings).
PAS_VERBS = ("add", "status", "reset", "commit", "copy", "list", "desc", "diff", "query", "publish", "search", "pull")
_FUNCS = {"add": add, "status": status, "reset": reset, "commit": commit, "copy": copy, "list": list_, "desc": desc,
          "diff": diff, "query": query, "publish": publish, "search": search, "pull": pull}


def register(pas_app) -> None:
    """Add the dlv verbs that do not clash with pas's own commands to the `pas` app."""
    # typer keeps name=None for commands named after their function
    existing = {c.name or c.callback.__name__.replace("_", "-") for c in pas_app.registered_commands}
    for verb in PAS_VERBS:
        if verb not in existing:
            pas_app.command(verb)(_FUNCS[verb])


def main() -> None:
    from ..cli import run_app
    run_app(app, "dlv")
