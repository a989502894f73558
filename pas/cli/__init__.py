"""The `pas` command line: a thin layer over `pas.repo.Repository`.

Human output goes to stdout, progress bars to stderr (only on a terminal),
`--json` gives machine output. Errors print `pas: error: ...` and exit with
the code of their class (pas/errors.py; docs/cli.md lists them).
"""
from __future__ import annotations

import errno
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import BadInput, NotFound, PasError, StoreError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="pas: Parameter Archival Storage for neural-network weights.",
                  pretty_exceptions_enable=False)

JsonOpt = typer.Option(False, "--json", help="Machine-readable JSON on stdout.")


class State:
    repo: Optional[str] = None
    quiet: bool = False
    storage_options: Optional[dict] = None


state = State()


@app.callback()
def _main(repo: Optional[str] = typer.Option(None, "--repo", "-R", help="Repository path (default: $PAS_REPO, then the current directory)."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
          storage_option: Optional[List[str]] = typer.Option(
              None, "--storage-option", "-o", help="KEY=VALUE for an s3:// repository (endpoint, region, profile, "
              "cache_dir, ...; docs/cli.md); repeatable.")):
    state.repo = repo
    state.quiet = quiet
    state.storage_options = _storage_options(storage_option)


def _storage_options(items: Optional[List[str]]) -> Optional[dict]:
    if not items:
        return None
    bad = [x for x in items if "=" not in x or not x.split("=", 1)[0]]
    if bad:
        raise BadInput(f"--storage-option takes KEY=VALUE, not {bad[0]!r}")
    return dict(x.split("=", 1) for x in items)


def _emit(obj, as_json: bool, human) -> None:
    if as_json:
        typer.echo(json.dumps(obj, indent=2, default=str))
    else:
        human(obj)


def _open(write: bool = False, uncached: bool = False):
    """The repository; ``uncached``: without this machine's cache of an s3:// one
    (what the bucket holds; storage options do not apply to a local repository)."""
    from ..repo import Repository
    opts = {**(state.storage_options or {}), "cache_dir": "none"} if uncached else state.storage_options
    return Repository.open(state.repo, write=write, storage_options=opts)


@contextmanager
def _progress(total: int, label: str):
    """A rich progress bar on stderr when it is a terminal; a no-op callback otherwise."""
    if state.quiet or not sys.stderr.isatty() or total <= 0:
        yield None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TimeRemainingColumn,
                               TransferSpeedColumn)
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.2f} MB"


@app.command()
def init(path: str = typer.Argument(".", help="Where to create the repository: a directory, or s3://BUCKET/PREFIX."),
         chunk_size: Optional[int] = typer.Option(None, help="Chunk size in bytes (default 1 MiB)."),
         sign_first: bool = typer.Option(False, "--sign-first", help="Keep the sign in the first plane of every float "
                                         "(1-byte progressive reads need it; slightly larger)."),
         storage_option: Optional[List[str]] = typer.Option(
             None, "--storage-option", "-o", help="KEY=VALUE for an s3:// repository (endpoint, region, profile, "
             "cache_dir, ...; docs/cli.md); repeatable."),
         as_json: bool = JsonOpt):
    """Create a repository at PATH (its data lives in PATH/.pas, or in the bucket for s3://)."""
    from ..repo import Repository
    opts = {**(state.storage_options or {}), **(_storage_options(storage_option) or {})}
    repo = Repository.init(path, chunk_size=chunk_size, layouts=["planes"] if sign_first else None,
                           **({"storage_options": opts} if opts else {}))
    info = {"path": str(repo.root) if repo.root is not None else path, "config": repo.config}
    repo.close()
    _emit(info, as_json, lambda i: typer.echo(f"Initialized empty pas repository in {i['path']}"))


@app.command()
def archive(src: List[Path] = typer.Argument(..., help="Safetensors/.pt/.bin/.npz files, a Hugging Face folder, "
                                              "or a folder of checkpoints (archived in order as a chain)."),
            name: str = typer.Option(..., "--name", "-n", help="Ref to move to the new version."),
            parent: Optional[str] = typer.Option(None, "--parent", "-p", help="Parent version (default: the current version of NAME)."),
            message: str = typer.Option("", "--message", "-m"),
            fmt: Optional[str] = typer.Option(None, "--format", help="Input format (default: detected)."),
            memory_limit: Optional[str] = typer.Option(
                None, "--memory-limit", help="Memory for data while archiving, e.g. 512M (default 4G or "
                "$PAS_MEMORY_LIMIT); tensors bigger than a share of it are encoded slab by slab."),
            scheme: Optional[List[str]] = typer.Option(
                None, "--scheme", help="LOSSY: store float tensors as SCHEME (float16, bf16-trunc, bf16-round, "
                "fixed:K, quant-uniform:K, quant-kmeans:K) or 'GLOB=SCHEME' for the tensors GLOB names "
                "(repeatable; docs/cli.md). Default: every tensor bit-exact."),
            keep_exact: Optional[List[str]] = typer.Option(
                None, "--keep-exact", help="With --scheme: keep the tensors this glob names exact (repeatable)."),
            as_json: bool = JsonOpt):
    """Archive SRC as a new immutable version and move the ref NAME to it.

    Several SRC, or one folder of checkpoints, become a chain of versions,
    each the parent of the next; NAME ends on the last. With --scheme the
    versions are lossy: marked so, each lossy tensor's scheme and error recorded.
    """
    import os

    from .. import formats
    spec = None
    if scheme or keep_exact:
        if not scheme:
            raise BadInput("--keep-exact only makes sense with --scheme")
        from ..quantize import SchemeSpec
        spec = SchemeSpec.parse(scheme, keep_exact or ())
    sources = list(src)
    if len(sources) == 1:
        sources = formats.checkpoint_series(sources[0]) or sources
    for s in sources:
        if not s.exists():
            raise NotFound(f"{s}: no such file or directory")
    total = sum(s.stat().st_size if s.is_file() else
                sum(f.stat().st_size for f in s.rglob("*") if f.is_file()) for s in sources)
    from ..repo import parse_size
    limit = parse_size(memory_limit) if memory_limit is not None else None
    with _open(write=True) as repo, _progress(total, f"archive {sources[0].name}"
                                              + (f" (+{len(sources) - 1})" if len(sources) > 1 else "")) as cb:
        if limit is not None:
            repo.memory_limit = limit
        results = repo.archive_series([os.fspath(s) for s in sources], name, parent=parent,
                                      message=message, format=fmt, progress=cb, scheme=spec)

    def human(rows):
        for r in rows:
            ratio = f"{r['logical_bytes'] / r['physical_added']:.2f}x" if r["physical_added"] else "inf"
            enc = ", ".join(f"{k} {v}" for k, v in sorted(r["encodings"].items()))
            typer.echo(f"{r['name']} -> {r['version_id'][:12]}  {r['message'] or ''}  ({r['tensors']} tensors, "
                       f"{r['tensors_reused']} reused; {enc})")
            typer.echo(f"  logical {_mb(r['logical_bytes'])}, physical added {_mb(r['physical_added'])}, "
                       f"ratio {ratio}, {r['logical_bytes'] / 1e6 / max(r['seconds'], 1e-9):,.0f} MB/s")
            if r.get("lossy"):
                lo = r["lossy"]
                typer.echo(f"  {_lossy_label(lo)}: {lo['tensors']} tensors, max abs error {_g(lo['max_abs_error'])}, "
                           f"relative L2 error {_g(lo['rel_l2_error'])}"
                           + (f"; {len(lo['exact'])} kept exact (see --json)" if lo.get("exact") else ""))
            elif spec is not None:
                typer.echo("  no tensor qualified for the scheme: stored bit-exact")
    rows = [r.to_json() for r in results]
    _emit(rows[0] if len(rows) == 1 else rows, as_json, lambda x: human(rows))


@app.command()
def retrieve(refs: List[str] = typer.Argument(..., metavar="REF...", help="Ref names or version ids (prefixes)."),
             out: Path = typer.Option(..., "--out", "-o", help="Output file or folder; with several REFs a "
                                      "folder that gets one entry per version, named after its REF."),
             fmt: Optional[str] = typer.Option(None, "--format", "-f", help="safetensors | pt | npz | hf (default: the archived format)."),
             tensor: Optional[List[str]] = typer.Option(None, "--tensor", "-t", help="Only these tensors (repeatable; one REF)."),
             top_bytes: Optional[int] = typer.Option(None, "--bytes", "-k", help="Approximate: rebuild each element from its top K bytes only (reads only those planes; one REF)."),
             as_json: bool = JsonOpt):
    """Write version REF back out, every byte verified (or approximated with --bytes).

    With several REFs each stored delta is decoded once: a version whose
    tensors delta against another one's is rebuilt from it, not from its
    keyframe (a lineage costs about one decode per version)."""
    import time

    from .. import formats
    if len(refs) > 1:
        if tensor or top_bytes is not None:
            raise BadInput("--tensor and --bytes take one REF")
        return _retrieve_many(refs, out, fmt, as_json)
    t0 = time.perf_counter()
    with _open() as repo:
        v = repo.version(refs[0])
        total = sum(e.nbytes for e in v.tensors)
        with _progress(total, f"retrieve {v.short}") as cb:
            snap = repo.retrieve(v.id, names=tensor or None, progress=cb, top_bytes=top_bytes)
    formats.write(snap, out, fmt)
    info = {"version_id": v.hex, "out": str(out), "format": fmt or snap.format,
            "tensors": len(snap.tensors), "bytes": snap.nbytes, "seconds": time.perf_counter() - t0}
    _emit(info, as_json, lambda i: typer.echo(
        f"wrote {i['tensors']} tensors ({_mb(i['bytes'])}) of {v.short} to {out} in {i['seconds']:.3f} s"))


_FORMAT_SUFFIX = {"safetensors": ".safetensors", "pt": ".pt", "npz": ".npz", "hf": ""}


def _retrieve_many(refs: List[str], out: Path, fmt: Optional[str], as_json: bool) -> None:
    """`pas retrieve` of several versions into the folder ``out``: OUT/REF plus the format's suffix."""
    import time

    from .. import formats
    if fmt is not None and fmt not in formats.FORMATS:
        raise BadInput(f"unknown format {fmt!r} (known: {', '.join(formats.FORMATS)})")
    names = {}
    for ref in refs:
        name = ref.replace("/", "_").replace(os.sep, "_")
        if name in ("", ".", "..") or name in names.values():
            raise BadInput(f"REF {ref!r} does not make a distinct file name in {out}")
        names[ref] = name
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out} is not a folder (several REFs are written to a folder)")
    t0 = time.perf_counter()
    rows = []
    with _open() as repo:
        by_id: dict[bytes, list[str]] = {}
        versions = {}
        for ref in refs:
            v = repo.version(ref)
            versions[v.id] = v
            by_id.setdefault(v.id, []).append(ref)
        total = sum(e.nbytes for v in versions.values() for e in v.tensors)
        out.mkdir(parents=True, exist_ok=True)
        with _progress(total, f"retrieve {len(by_id)} versions") as cb:
            for v, snap in repo.retrieve_many(list(versions.values()), progress=cb):
                for ref in by_id[v.id]:
                    form = fmt or snap.format
                    path = out / (names[ref] + _FORMAT_SUFFIX[form])
                    formats.write(snap, path, fmt)
                    rows.append({"ref": ref, "version_id": v.hex, "out": str(path), "format": form,
                                 "tensors": len(snap.tensors), "bytes": snap.nbytes})
    info = {"versions": rows, "seconds": time.perf_counter() - t0}

    def human(i):
        for r in i["versions"]:
            typer.echo(f"wrote {r['tensors']} tensors ({_mb(r['bytes'])}) of {r['version_id'][:12]} to {r['out']}")
        n = len({r["version_id"] for r in i["versions"]})
        typer.echo(f"{len(i['versions'])} files of {n} versions, {_mb(sum(r['bytes'] for r in i['versions']))} "
                   f"in {i['seconds']:.3f} s")
    _emit(info, as_json, human)


@app.command("eval")
def eval_(ref: str = typer.Argument(..., help="Ref name or version id (prefix)."),
          data: Path = typer.Option(..., "--data", "-d", help=".npz with array x (inputs, one per row) and optionally y (labels)."),
          model: Optional[str] = typer.Option(None, "--model", "-m", help="module:attr (or file.py:attr): an nn.Module "
                                              "class or factory whose state_dict names match the version's tensors "
                                              "(default: the network stored with the version by dlv)."),
          top_k: int = typer.Option(1, "--top-k", "-k", help="Predict the top K classes (a set)."),
          progressive: bool = typer.Option(True, "--progressive/--no-progressive",
                                           help="Start from the top byte planes; read lower ones only for undecided inputs."),
          batch_size: int = typer.Option(256, "--batch-size", help="Inputs per forward pass."),
          first_planes: Optional[int] = typer.Option(None, "--first-planes", help="Planes of the first round "
                                                     "(default 1; 2 where weights keep their sign in plane 1)."),
          as_json: bool = JsonOpt):
    """Evaluate a torch model with the weights of REF on DATA (docs/progressive.md).

    The predictions are exactly those of the ordinary float32 forward pass
    with the full weights; with --progressive each input reads only the
    planes it needs to be decided. Reports, per plane count, the share of
    inputs decided, the stored bytes read and the time; the accuracy if DATA has y.
    """
    from ..progressive import evaluate, load_model, load_npz
    x, y = load_npz(data)
    net = load_model(model) if model is not None else None
    with _open() as repo:
        if net is None:   # the network definition dlv stored with the version (docs/dlv.md)
            from ..dlv import netdef
            from ..dlv.model import open_version
            mv = open_version(repo, ref)
            if mv.network is None:
                raise BadInput(f"{mv.name}@{mv.short} has no stored network definition: give --model module:attr")
            net = netdef.build(mv.network)
        res = evaluate(repo, ref, net, x, y, top_k=top_k, progressive=progressive, batch_size=batch_size,
                       first_planes=first_planes)
    info = res.to_json()

    def human(i):
        n = i["n"]
        typer.echo(f"{n} inputs, top-{i['top_k']}, {'progressive' if i['progressive'] else 'full precision'}"
                   + (f" (layouts: {', '.join(f'{k} {v}' for k, v in sorted(i['layouts'].items()))})" if i["layouts"] else ""))
        typer.echo(f"{'planes':>6}  {'evaluated':>9}  {'decided':>7}  {'undecided':>9}  {'bytes read':>12}  {'seconds':>8}")
        for s in i["steps"]:
            label = f"{s['planes']}{' (exact)' if s['exact'] else ''}"
            typer.echo(f"{label:>6}  {s['evaluated']:>9}  {s['decided']:>7}  {100 * s['undecided_share']:>8.1f}%  "
                       f"{s['bytes_read']:>12,}  {s['seconds']:>8.3f}")
        typer.echo(f"bytes read {i['bytes_read']:,} of {i['full_bytes']:,} ({100 * i['bytes_read'] / max(i['full_bytes'], 1):.1f}%), "
                   f"{i['seconds']:.3f} s")
        if i["accuracy"] is not None:
            typer.echo(f"top-{i['top_k']} accuracy {100 * i['accuracy']:.2f}%")
    _emit(info, as_json, human)


@app.command()
def log(ref: Optional[str] = typer.Argument(None, help="Start here (default: every version)."),
        as_json: bool = JsonOpt):
    """Versions, newest first: the ancestry of REF, or all versions."""
    with _open() as repo:
        versions = repo.log(ref) if ref is not None else list(reversed(repo.versions()))
        refs = repo.refs()
    by_id: dict[str, list[str]] = {}
    for n, vid in refs.items():
        by_id.setdefault(vid, []).append(n)
    rows = [dict(v.summary(), refs=sorted(by_id.get(v.hex, []))) for v in versions]

    def human(rows):
        for r in rows:
            names = f" ({', '.join(r['refs'])})" if r["refs"] else ""
            lossy = f"  {_lossy_label(r['lossy'])}" if r.get("lossy") else ""
            typer.echo(f"{r['id'][:12]}{names} {r['name']}  {r['time'][:19]}  "
                       f"{_mb(r['logical_bytes'])}{lossy}  {r['message']}")
    _emit(rows, as_json, human)


@app.command("ls")
def ls_(ref: Optional[str] = typer.Argument(None, help="List this version's tensors (default: list refs)."),
        as_json: bool = JsonOpt):
    """List refs, or the tensors and files of version REF."""
    with _open() as repo:
        if ref is None:
            refs = repo.refs()
            rows = [{"ref": n, "version": vid} for n, vid in sorted(refs.items())]
            _emit(rows, as_json, lambda rs: [typer.echo(f"{r['version'][:12]}  {r['ref']}") for r in rs])
            return
        v = repo.version(ref)
    rows = [{"name": e.name, "dtype": e.out_dtype, "shape": list(e.shape), "nbytes": e.nbytes, "kind": "tensor",
             **({"lossy": e.lossy["scheme"], "stored_dtype": e.dtype,
                 "max_abs_error": e.lossy.get("max_abs_error"), "rel_l2_error": e.lossy.get("rel_l2_error")}
                if e.lossy is not None else {})}
            for e in v.tensors]
    rows += [{"name": f.name, "nbytes": f.nbytes, "kind": "file"} for f in v.files]

    def human(rs):
        for r in rs:
            if r["kind"] == "tensor":
                lossy = (f"  lossy ({r['lossy']}, stored {r['stored_dtype']}, max abs error "
                         f"{_g(r['max_abs_error'])})" if r.get("lossy") else "")
                typer.echo(f"{r['name']}  {r['dtype']}  {tuple(r['shape'])}  {_mb(r['nbytes'])}{lossy}")
            else:
                typer.echo(f"{r['name']}  (file)  {_mb(r['nbytes'])}")
    _emit(rows, as_json, human)


@app.command()
def show(ref: str = typer.Argument(...), as_json: bool = JsonOpt):
    """Details of one version: id, parent, time, message, sizes, metadata."""
    with _open() as repo:
        v = repo.version(ref)
        info = v.summary()
        info["refs"] = sorted(n for n, vid in repo.refs().items() if vid == v.hex)

    def human(i):
        for k in ("id", "name", "parent", "time", "message", "format", "tensors", "files"):
            typer.echo(f"{k:>10}: {i[k]}")
        typer.echo(f"{'logical':>10}: {_mb(i['logical_bytes'])}")
        lo = i.get("lossy")
        typer.echo(f"{'storage':>10}: " + (f"{_lossy_label(lo)}, {lo.get('tensors')} tensors, max abs error "
                                          f"{_g(lo.get('max_abs_error'))}, relative L2 error "
                                          f"{_g(lo.get('rel_l2_error'))}" if lo else "bit-exact"))
        typer.echo(f"{'refs':>10}: {', '.join(i['refs'])}")
        for k, val in i["metadata"].items():
            typer.echo(f"{'meta':>10}: {k} = {val}")
    _emit(info, as_json, human)


@app.command()
def tag(name: str = typer.Argument(...), ref: str = typer.Argument(..., help="Version to point NAME at."),
        delete: bool = typer.Option(False, "--delete", "-d", help="Delete the ref NAME instead."),
        as_json: bool = JsonOpt):
    """Point the ref NAME at a version (refs are mutable; versions are not)."""
    with _open(write=True) as repo:
        if delete:
            repo.delete_ref(name)
            info = {"ref": name, "deleted": True}
        else:
            vid = repo.resolve(ref)
            repo.set_ref(name, vid)
            info = {"ref": name, "version": vid.hex()}
    _emit(info, as_json, lambda i: typer.echo(f"{name} -> {i.get('version', 'deleted')}"))


@app.command()
def verify(as_json: bool = JsonOpt):
    """Re-hash every chunk, check every record and version; exit 12 on any fault."""
    # On S3: the bucket's bytes, not copies this machine cached when it wrote or read them
    with _open(uncached=True) as repo:
        from ..records import CHUNK, address_length
        total = sum(address_length(k[1:]) for k in repo.store.list_prefix(CHUNK))
        with _progress(total, "verify") as cb:
            rep = repo.verify(progress=cb)

    def human(r):
        typer.echo(f"checked {r['chunks']} chunks ({_mb(r['bytes_checked'])}), "
                   f"{r['tensors']} tensor records, {r['versions']} versions")
        for e in r["errors"]:
            typer.echo(f"error: {e}", err=True)
        if r["damaged_versions"]:
            typer.echo("damaged versions: " + ", ".join(r["damaged_versions"]), err=True)
        typer.echo("ok" if r["ok"] else f"{len(r['errors'])} problems found")
    _emit(rep.to_json(), as_json, human)
    if not rep.ok:
        raise typer.Exit(12)


@app.command()
def gc(force: bool = typer.Option(False, "--force", help="Really delete (default: dry run)."),
       as_json: bool = JsonOpt):
    """Remove objects no version references (left by interrupted archives)."""
    with _open(write=force) as repo:
        rep = repo.gc(force=force)
    verb = "would remove" if rep.dry_run else "removed"
    _emit(rep.to_json(), as_json, lambda r: typer.echo(
        f"{verb} {r['chunks']} chunks and {r['tensors']} tensor records ({_mb(r['bytes'])})"
        + (" (dry run; use --force)" if r["dry_run"] else "")))


@app.command()
def stats(as_json: bool = JsonOpt):
    """Logical and physical size of the repository."""
    with _open() as repo:
        s = repo.stats()
    _emit(s, as_json, lambda s: typer.echo(
        f"logical {_mb(s['logical_bytes'])}, physical {_mb(s['physical_bytes'])} "
        f"(ratio {s['ratio']}), on disk {_mb(s['disk_bytes'])}"))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(ctx: typer.Context,
          quick: bool = typer.Option(False, "--quick", help="The quick corpus and the smallest real model (about 2 minutes)."),
          data: Optional[List[Path]] = typer.Option(None, "--data", help="Benchmark this folder of checkpoints (or corpus) instead."),
          out: Optional[Path] = typer.Option(None, "--out", help="Where to write core.json, core.md and the plots.")):
    """Run the storage benchmark: pas against the alternatives, same data, same run.

    Any other option goes to the harness (`python -m bench --help`: --schemes,
    --repeat, --synthetic, ...). Needs the repository checkout's `bench` package.
    """
    try:
        from bench.core import main as bench_main
    except ImportError as exc:
        raise PasError(f"the benchmark suite is not installed ({exc}); run it from a pas checkout") from None
    argv = (["--quick"] if quick else []) + [a for d in data or () for a in ("--data", str(d))]
    argv += (["--out", str(out)] if out else []) + (["--quiet"] if state.quiet else []) + list(ctx.args)
    raise typer.Exit(bench_main(argv))


_PLAN_ALGORITHMS = ("mst", "spt", "last", "pas-mt", "pas-pt", "best", "exact")


MeasureVersionsOpt = typer.Option(False, "--measure-versions", help="Time every version's retrieval first "
                                  "(3 times) and plan each one against its budget less the cost model's "
                                  "measured error on it: measured times then stay within the budgets.")


def _note_calibration(repo, recalibrate: bool) -> None:
    """Say so on stderr before the cost model is measured: it times real
    retrievals (seconds to tens of seconds on a big repository), once per
    machine, and the command would otherwise sit silent meanwhile."""
    from ..archive import repo_graph
    if recalibrate or repo_graph.load_costs(repo) is None:
        typer.echo("measuring retrieval costs on this machine (once; kept in .pas/costs.json)...", err=True)


MarginOpt = typer.Option(0.0, "--margin", help="Plan every version this fraction under its budget (e.g. "
                         "0.05): room for the cost model's error and for timing noise, so that measured times "
                         "stay within the budgets. Costs storage.")


@app.command()
def plan(graph_file: Optional[Path] = typer.Option(None, "--graph", "-g", help="Plan this storage graph JSON "
                                                   "(docs/planning.md) instead of the repository's versions."),
         algorithm: str = typer.Option("best", "--algorithm", "-a", help="mst | spt | last | pas-mt | pas-pt | best | exact."),
         alpha: Optional[float] = typer.Option(None, "--budget", "-b", help="Budget factor ALPHA: each snapshot may cost "
                                               "ALPHA x its recreation cost in the shortest-path tree "
                                               "(default: the graph's own budgets, else none)."),
         max_seconds: Optional[float] = typer.Option(None, "--max-seconds", "-s", help="Every snapshot (version) may "
                                                     "cost at most S (seconds for a repository; graph units with --graph)."),
         recreation: str = typer.Option("independent", "--recreation", "-r", help="independent | parallel."),
         save_graph: Optional[Path] = typer.Option(None, "--save-graph", help="Also write the repository's storage "
                                                   "graph (with the budgets used) to this JSON file."),
         recalibrate: bool = typer.Option(False, "--recalibrate", help="Measure the decode cost model again "
                                          "(default: reuse .pas/costs.json)."),
         max_depth: Optional[int] = typer.Option(None, "--max-depth", help="No matrix rebuilt through more than N "
                                                 "deltas (default: unbounded with --graph; a repository's "
                                                 "delta.max_depth, which is also the most allowed)."),
         measure_versions: bool = MeasureVersionsOpt,
         margin: float = MarginOpt,
         as_json: bool = JsonOpt):
    """Plan archival storage: per matrix, whole or delta against which, for the
    least storage within each snapshot's recreation budget.

    Without --graph, plans the repository's own versions (read-only: nothing
    is changed) and shows storage and each version's recreation cost today
    and under the plan."""
    import math
    if algorithm not in _PLAN_ALGORITHMS:
        raise BadInput(f"unknown algorithm {algorithm!r} (choose from {', '.join(_PLAN_ALGORITHMS)})")
    if alpha is not None and max_seconds is not None:
        raise BadInput("--budget and --max-seconds exclude each other")
    if max_seconds is not None and not (max_seconds >= 0 and math.isfinite(max_seconds)):
        raise BadInput(f"--max-seconds must be a finite number >= 0, got {max_seconds!r}")
    from ..archive import StorageGraph, budgets_for, evaluate
    from ..archive import plan as make_plan
    from ..archive.plan import check_model
    check_model(recreation)
    fin = lambda x: x if x != float("inf") else None  # noqa: E731  JSON has no infinity

    def budgets_of(g):
        if max_seconds is not None:
            return {s: float(max_seconds) for s in g.snapshots}
        return budgets_for(g, recreation, alpha)

    if graph_file is not None:
        if save_graph is not None or recalibrate or measure_versions or margin:
            raise BadInput("--save-graph, --recalibrate, --measure-versions and --margin are for planning a "
                           "repository, not a --graph file")
        if not graph_file.is_file():
            raise NotFound(f"{graph_file}: no such file")
        g = StorageGraph.load(graph_file)
        budgets = budgets_of(g)
        p = make_plan(g, algorithm, budgets, recreation, max_depth=max_depth)
        ev = evaluate(g, p, budgets, recreation)
        info = {"algorithm": p.algorithm, "recreation_model": recreation, "storage": ev.storage,
                "recreation": ev.recreation, "budgets": {s: fin(b) for s, b in ev.budgets.items()},
                "feasible": ev.feasible, "plan": p.to_json()}

        def human(i):
            typer.echo(f"algorithm {i['algorithm']}, {recreation} recreation")
            typer.echo(f"total storage {i['storage']:g}")
            width = max([len("snapshot")] + [len(s) for s in i["recreation"]])
            typer.echo(f"{'snapshot':<{width}}  {'recreation':>10}  {'budget':>10}  ok")
            for s, c in i["recreation"].items():
                b = i["budgets"][s]
                ok = "yes" if b is None or c <= b + 1e-9 * max(1.0, abs(b)) else "NO"
                typer.echo(f"{s:<{width}}  {c:>10g}  {'-' if b is None else format(b, 'g'):>10}  {ok}")
            typer.echo(f"feasible: {'yes' if i['feasible'] else 'no'}")
            typer.echo("plan:")
            for e in i["plan"]:
                how = "whole" if e["from"] == g.root else f"delta against {e['from']}"
                typer.echo(f"  {e['to']}: {how}  (storage {e['storage']:g}, recreation {e['recreation']:g})")
        _emit(info, as_json, human)
        return

    # The repository's own versions: read-only; only .pas/costs.json may be written.
    from ..archive import repo_graph
    with _open() as repo:
        _note_calibration(repo, recalibrate)
        rg = repo_graph.build(repo, recreation, recalibrate=recalibrate)
        g = rg.graph
        budgets = budgets_of(g)
        if max_depth is not None and max_depth > rg.max_depth:
            raise BadInput(f"--max-depth {max_depth} is above the repository's delta.max_depth {rg.max_depth}")
        p, factors = repo_graph.plan_repository(repo, rg, algorithm, budgets, max_depth, measure_versions, margin)
    ev = evaluate(g, p, budgets, recreation)
    before = evaluate(g, rg.current, budgets, recreation)
    if save_graph is not None:
        g.with_budgets({s: b for s, b in budgets.items() if math.isfinite(b)}).save(save_graph)
    depth_before, depth_after = rg.depths(rg.current), rg.depths(p)
    info = {"algorithm": p.algorithm, "recreation_model": recreation, "storage": ev.storage,
            "recreation": ev.recreation, "budgets": {s: fin(b) for s, b in ev.budgets.items()},
            "feasible": ev.feasible, "plan": rg.describe(p),
            "before": {"storage": before.storage, "recreation": before.recreation, "feasible": before.feasible,
                       "plan": rg.describe(rg.current),
                       "measured_bytes": sum(v.stored_bytes or 0 for v in rg.vertices.values())},
            "units": {"storage": "bytes (estimated)", "recreation": "seconds (cost model)"},
            "cost_model": rg.costs.to_json(), "snapshots": rg.snapshots,
            "depth": {"repository_max": rg.max_depth, "before": max(depth_before.values(), default=0),
                      "after": max(depth_after.values(), default=0)},
            "graph": {"vertices": len(g.matrices), "edges": len(g.edges), "seconds": rg.seconds},
            "version_factors": factors, "margin": margin}
    if save_graph is not None:
        info["graph"]["saved"] = str(save_graph)

    def secs(x: float) -> str:
        return f"{x * 1e3:.2f} ms" if x < 1 else f"{x:.3f} s"

    def human(i):
        groups = sum(1 for v in rg.vertices.values() if v.address is None)
        typer.echo(f"repository: {len(rg.snapshots)} versions, {len(g.matrices)} matrices"
                   f"{f' ({groups} groups of small tensors)' if groups else ''}, {len(g.edges)} edges "
                   f"(graph built in {rg.seconds:.1f} s)")
        c = rg.costs
        typer.echo(f"cost model: {c.version * 1e3:.2f} ms per version + {c.tensor * 1e6:.1f} us per tensor; per "
                   f"tensor stored whole {c.a * 1e6:.1f} us + {c.b * 1e9:.3f} ns/stored byte + {c.c * 1e9:.3f} "
                   f"ns/element, per delta applied {c.delta_a * 1e6:.1f} us + {c.delta_b * 1e9:.3f} ns/stored byte "
                   f"+ {c.delta_c * 1e9:.3f} ns/element (calibrated {c.measured or '?'}, {c.version_samples} "
                   f"retrievals timed, fit error {c.residual:.0%} rms)")
        bud = (f"budget {alpha:g} x shortest-path cost" if alpha is not None else
               f"budget {max_seconds:g} s per version" if max_seconds is not None else "no budgets")
        typer.echo(f"algorithm {i['algorithm']}, {recreation} recreation, {bud}"
                   + (f", planned {i['margin']:.0%} under each budget" if i["margin"] else ""))
        if i["version_factors"]:
            f = sorted(i["version_factors"].values())
            typer.echo(f"measured / modelled retrieval: {f[0]:.2f}-{f[-1]:.2f} over {len(f)} versions (median "
                       f"{f[len(f) // 2]:.2f}); each version planned against its budget / its factor over the median")
        sb, sa = i["before"]["storage"], i["storage"]
        change = f" ({(sa - sb) / sb * 100:+.1f}%)" if sb else ""
        typer.echo(f"storage (estimated): before {_mb(int(sb))} (measured {_mb(i['before']['measured_bytes'])}), "
                   f"after {_mb(int(sa))}{change}")
        width = max([len("version")] + [len(s) for s in i["recreation"]])
        typer.echo(f"{'version':<{width}}  {'message':<16}  {'before':>10}  {'after':>10}  {'budget':>10}  ok")
        for s, cost in i["recreation"].items():
            b = i["budgets"][s]
            ok = "yes" if b is None or cost <= b + 1e-9 * max(1.0, abs(b)) else "NO"
            msg = (rg.snapshots[s]["message"] or "")[:16]
            typer.echo(f"{s:<{width}}  {msg:<16}  {secs(i['before']['recreation'][s]):>10}  {secs(cost):>10}  "
                       f"{'-' if b is None else secs(b):>10}  {ok}")
        typer.echo(f"feasible: before {'yes' if i['before']['feasible'] else 'no'}, "
                   f"after {'yes' if i['feasible'] else 'no'}")
        d = i["depth"]
        for when, rows, depth in (("before", i["before"]["plan"], d["before"]), ("after", i["plan"], d["after"])):
            deltas = sum(1 for e in rows if e["from"] != g.root)
            typer.echo(f"{when}: {len(rows) - deltas} whole, {deltas} deltas, deepest chain {depth}")
        if d["after"] > d["repository_max"]:
            typer.echo(f"note: the plan chains deeper than the repository's delta.max_depth {d['repository_max']}")
        old = {e["to"]: e for e in i["before"]["plan"]}
        changed = [e for e in i["plan"] if old[e["to"]]["from"] != e["from"]]
        typer.echo(f"changes: {len(changed)}")
        for e in changed[:20]:
            def how(x):
                return "whole" if x["from"] == g.root else f"{x['op'] or 'delta'} against {x['from']}"
            typer.echo(f"  {e['to']}: {how(old[e['to']])} -> {how(e)}")
        if len(changed) > 20:
            typer.echo(f"  ... {len(changed) - 20} more (--json lists all)")
        typer.echo("nothing was changed (`pas repack` applies a plan)")
    _emit(info, as_json, human)


@app.command()
def repack(algorithm: str = typer.Option("best", "--algorithm", "-a", help="mst | spt | last | pas-mt | pas-pt | best | exact."),
           alpha: Optional[float] = typer.Option(None, "--budget", "-b", help="Budget factor ALPHA: each version may cost "
                                                 "ALPHA x its recreation cost in the shortest-path tree."),
           max_seconds: Optional[float] = typer.Option(None, "--max-seconds", "-s", help="Every version may cost at most "
                                                       "S seconds to rebuild (cost model)."),
           recreation: str = typer.Option("independent", "--recreation", "-r", help="independent | parallel."),
           dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Plan and report the changes; write nothing."),
           no_gc: bool = typer.Option(False, "--no-gc", help="Leave the chunks nothing names any more for `pas gc`."),
           recalibrate: bool = typer.Option(False, "--recalibrate", help="Measure the decode cost model again "
                                            "(default: reuse .pas/costs.json)."),
           memory_limit: Optional[str] = typer.Option(None, "--memory-limit", help="Memory for data while re-encoding "
                                                      "(e.g. 512M; default 4G or $PAS_MEMORY_LIMIT)."),
           measure_versions: bool = MeasureVersionsOpt,
           margin: float = MarginOpt,
           refine: bool = typer.Option(False, "--refine", help="Apply the plan, then time every version in "
                                       "its new layout (3 times) and plan and apply again against each budget "
                                       "less the cost model's measured error on that version there."),
           as_json: bool = JsonOpt):
    """Apply a storage plan: re-encode every tensor whose storage the plan
    changes (whole, delta against which base, chain depth), crash-safely.

    The plan is the one `pas plan` shows with the same options, bounded by
    the repository's delta.max_depth. New chunks are written and flushed,
    every re-encoded tensor is decoded and checked bit-exact, then all new
    records are committed in one atomic batch; old chunks are removed by gc."""
    check_plan_options(algorithm, alpha, max_seconds, recreation)
    from ..repo import parse_size
    limit = parse_size(memory_limit) if memory_limit is not None else None
    from ..archive.repack import repack as run_repack
    with _open(write=not dry_run) as repo:
        if limit is not None:
            repo.memory_limit = limit
        _note_calibration(repo, recalibrate)
        res = run_repack(repo, algorithm, alpha, max_seconds, recreation, dry_run=dry_run, gc=not no_gc,
                         recalibrate=recalibrate, measure_versions=measure_versions, margin=margin,
                         refine=refine)
    info = res.to_json()

    def human(i):
        typer.echo(f"algorithm {i['algorithm']}, {recreation} recreation, deepest chain "
                   f"{i['depth']['before']} -> {i['depth']['after']} (max {i['max_depth']})"
                   + (f", planned {i['margin']:.0%} under each budget" if i["margin"] else ""))
        if i.get("passes"):
            p1, p2 = i["passes"]
            typer.echo(f"refined: first pass to {_mb(int(p1['storage']['after']))}, then every version timed in "
                       f"that layout and planned again to {_mb(int(p2['storage']['after']))}")
        sb, sa = i["storage"]["before"], i["storage"]["after"]
        typer.echo(f"storage (estimated): {_mb(int(sb))} -> {_mb(int(sa))}; feasible: "
                   f"{'yes' if i['feasible']['before'] else 'no'} -> {'yes' if i['feasible']['after'] else 'no'}")
        t = i["tensors"]
        typer.echo(f"tensors{' (second pass)' if i.get('passes') else ''}: {t['encode']} re-encoded, {t['depth']} "
                   f"with a new depth only, {t['unchanged']} unchanged")
        for c in i["changes"][:20]:
            typer.echo(f"  {c['vertex']}: {c['before']} -> {c['after']} (depth {c['depth_before']} -> {c['depth_after']})")
        if len(i["changes"]) > 20:
            typer.echo(f"  ... {len(i['changes']) - 20} more (--json lists all)")
        if i["dry_run"]:
            typer.echo(f"dry run: nothing was changed (physical {_mb(i['physical_before'])})")
            return
        typer.echo(f"wrote {i['chunks_written']} chunks ({i['chunks_reused']} reused) and {i['records_written']} "
                   f"records, {_mb(i['bytes_written'])}; {i['verified']} tensors checked bit-exact before commit")
        if i["gc"] is not None:
            typer.echo(f"gc removed {i['gc']['chunks']} chunks and {i['gc']['tensors']} records ({_mb(i['gc']['bytes'])})")
        typer.echo(f"physical {_mb(i['physical_before'])} -> {_mb(i['physical_after'])} in {i['seconds']:.1f} s")
    _emit(info, as_json, human)


def check_plan_options(algorithm: str, alpha: Optional[float], max_seconds: Optional[float],
                       recreation: str) -> None:
    """The storage planner's options (pas repack, dlv archive), each refused with a clear message."""
    import math

    from ..archive.plan import check_model
    if algorithm not in _PLAN_ALGORITHMS:
        raise BadInput(f"unknown algorithm {algorithm!r} (choose from {', '.join(_PLAN_ALGORITHMS)})")
    if alpha is not None and max_seconds is not None:
        raise BadInput("--budget and --max-seconds exclude each other")
    if alpha is not None and not (alpha > 0 and math.isfinite(alpha)):
        raise BadInput(f"--budget must be a positive number, got {alpha!r}")
    if max_seconds is not None and not (max_seconds >= 0 and math.isfinite(max_seconds)):
        raise BadInput(f"--max-seconds must be a finite number >= 0, got {max_seconds!r}")
    check_model(recreation)


def _transfer_summary(verb: str, where: str, r: dict) -> str:
    return (f"{verb} {where}: {len(r['versions'])} versions, {r['records']} records, {r['chunks']} chunks "
            f"({r['bytes']:,} bytes); already there: {r['versions_present']} versions, {r['records_present']} "
            f"records, {r['chunks_present']} chunks"
            + ("; refs " + ", ".join(f"{k} -> {v[:12]}" for k, v in r["refs"].items()) if r["refs"] else ""))


@app.command()
def push(remote: str = typer.Argument(..., help="The other repository: a folder, s3://BUCKET/PREFIX, or a hub's "
                                      "http(s)://HOST/r/NAME (token in $PAS_HUB_TOKEN)."),
         refs: Optional[List[str]] = typer.Argument(None, help="Refs or versions to push (default: every ref)."),
         create: bool = typer.Option(False, "--create", help="Create the other repository if there is none."),
         force: bool = typer.Option(False, "--force", help="Move refs there even when not a fast-forward."),
         as_json: bool = JsonOpt):
    """Copy versions (with their ancestry) to another repository: only the objects
    it lacks, refs last; run it again after an interruption to finish."""
    from ..transfer import copy_versions, open_remote, wanted
    with _open() as src:
        names = refs or sorted(src.refs())
        if remote.startswith(("http://", "https://")):   # a hub: asks what it has in batches first
            import os

            from ..hub.remote import publish
            rep = publish(src, remote, names, os.environ.get("PAS_HUB_TOKEN") or "", force=force)
        else:
            ref_map, versions = wanted(src, names)
            with open_remote(remote, write=True, create=create, storage_options=state.storage_options) as dst:
                rep = copy_versions(src, dst, versions, ref_map, force=force)
    _emit(rep.to_json(), as_json, lambda r: typer.echo(_transfer_summary("pushed to", remote, r)))


@app.command()
def pull(remote: str = typer.Argument(..., help="The other repository: a folder, s3://BUCKET/PREFIX, or a hub's "
                                      "http(s)://HOST/r/NAME."),
         refs: Optional[List[str]] = typer.Argument(None, help="Refs or versions to pull (default: every ref)."),
         force: bool = typer.Option(False, "--force", help="Move refs here even when not a fast-forward."),
         as_json: bool = JsonOpt):
    """Copy versions (with their ancestry) from another repository: only the objects
    missing here, refs last; run it again after an interruption to finish."""
    from ..transfer import copy_versions, open_remote, wanted
    with open_remote(remote, write=False, storage_options=state.storage_options) as src:
        ref_map, versions = wanted(src, refs or sorted(src.refs()))
        with _open(write=True) as dst:
            rep = copy_versions(src, dst, versions, ref_map, force=force)
    _emit(rep.to_json(), as_json, lambda r: typer.echo(_transfer_summary("pulled from", remote, r)))


def _lossy_label(summary) -> str:
    from ..quantize import label
    return label(summary)


def _g(x) -> str:
    """A recorded error, printed short (a damaged or forged manifest may hold anything)."""
    return f"{x:.3g}" if isinstance(x, (int, float)) else "?"


def _bounded(text: str, limit: int = 1000) -> str:
    """An error message of bounded length: hostile inputs can be megabytes long."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def main() -> None:
    run_app(app, "pas")


def run_app(typer_app, prog: str) -> None:
    """Run a typer app as a command (``pas``, ``dlv``): typed errors print one
    ``PROG: error: ...`` line and exit with their class's code (pas/errors.py)."""
    import warnings
    warnings.showwarning = lambda message, *args, **kwargs: typer.echo(f"{prog}: warning: {message}", err=True)
    try:
        rc = typer_app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except PasError as exc:
        typer.echo(f"{prog}: error: {_bounded(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:
        # Reading inputs and writing outputs (not the store, whose errors are
        # StoreError): a bad path, a full disk, a name too long for the OS.
        name = f": {_bounded(str(exc.filename), 200)}" if exc.filename else ""
        typer.echo(f"{prog}: error: {exc.strerror or exc}{name}", err=True)
        sys.exit(StoreError.exit_code if exc.errno in (errno.ENOSPC, errno.EIO, errno.EDQUOT) else BadInput.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        # Usage errors: typer bundles its own click, so match by shape, not class.
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            if isinstance(getattr(exc, "message", None), str):
                exc.message = _bounded(exc.message)    # it quotes the bad value, which may be megabytes
            exc.show()
            sys.exit(exc.exit_code)
        raise


# dlv's verbs (pas/dlv, docs/dlv.md) as pas subcommands, except those whose
# names pas already uses for its own commands (init, archive, eval, log).
def _register_dlv() -> None:
    from ..dlv.cli import register
    register(app)


_register_dlv()


# The hub (pas/hub, docs/hub.md): `pas serve`. FastAPI and uvicorn are the
# `hub` extra, imported only when the command runs.
def _register_hub() -> None:
    @app.command()
    def serve(repos: List[str] = typer.Argument(None, help="Repositories to serve: PATH or NAME=PATH (also s3:// URLs)."),
              host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
              port: int = typer.Option(8000, "--port", help="Port to listen on."),
              config: Optional[Path] = typer.Option(None, "--config", help="hub.toml: repositories, users, "
                                                    "tokens, permissions, limits (docs/hub.md)."),
              log_level: str = typer.Option("info", "--log-level", help="uvicorn's log level.")):
        """Serve repositories over HTTP: a JSON API, the pull/publish protocol and web pages (docs/hub.md)."""
        try:
            from ..hub.app import serve as run
            from ..hub.config import load_config
        except ImportError as exc:
            raise BadInput(f"pas serve needs the hub extra: pip install 'pas[hub]' ({exc.name} is missing)") from None
        run(load_config(config, repos or []), host=host, port=port, log_level=log_level)


_register_hub()
