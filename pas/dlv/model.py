"""Model versions (name, id, N, W, M, F), the staging area, commit, copy, lineage.

A model version is a pas version. Its weights W are the version's tensors
(archived with `Repository.archive_snapshot`, deltas against the parent);
N, M and dlv's own record ride in the same snapshot as side files under the
reserved folder ``.dlv/`` (content-addressed, deduplicated, and committed in
the version's one atomic batch, so a version is visible with all of them or
not at all); the files F are the snapshot's other side files. Lineage
``parent(base, derived, commit)`` is the manifest's ``parent``: derived =
the version, base = its parent, commit = its message and time.

The model ``name`` is the version's ref: its current head.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInput, NotFound
from . import metadata as md
from . import netdef

DLV_DIR = ".dlv/"
NETWORK = netdef.FILE                    # .dlv/network.json
HYPERPARAMS = ".dlv/hyperparams.json"
LOG = ".dlv/log.jsonl"
INFO = ".dlv/info.json"
STAGE_FILE = "dlv-stage.json"
FORMAT = 1
KINDS = ("weights", "network", "module", "config", "log", "file")
_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".npz")
MAX_SIDE_FILE = 1 << 30
MAX_CONFIG_BYTES = 16 << 20   # a bigger JSON/YAML is data (a file), not a config or a network


# -------------------------------------------------------------------- staging
@dataclass
class Stage:
    """What `dlv add` staged for the next commit: ``<repo>/.pas/dlv-stage.json``.

    Files are recorded by absolute path, size and mtime; commit reads them
    then and refuses any that changed since they were added."""

    path: Path
    model: str | None = None
    entries: list[dict] = field(default_factory=list)

    @classmethod
    def load(cls, root: Path) -> "Stage":
        p = Path(root) / STAGE_FILE
        if not p.exists():
            return cls(p)
        try:
            doc = json.loads(p.read_text())
            if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("entries"), list):
                raise ValueError("not a dlv stage")
            return cls(p, doc.get("model"), doc["entries"])
        except (OSError, ValueError) as exc:
            raise BadInput(f"the staging area {p} is damaged ({exc}); delete it and add the files again") from None

    def save(self) -> None:
        # Written whole and renamed into place: a crash leaves the old stage or the new one.
        tmp = self.path.with_name(self.path.name + f".tmp{os.getpid()}")
        with open(tmp, "w") as f:
            json.dump({"format": FORMAT, "model": self.model, "entries": self.entries}, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def put(self, entry: dict) -> None:
        """Stage ``entry``, replacing what was staged for the same role (one weights,
        network, config and log; files by stored name)."""
        def same(e):
            if entry["kind"] == "file":
                return e["kind"] == "file" and e["name"] == entry["name"]
            roles = {"network", "module"} if entry["kind"] in ("network", "module") else {entry["kind"]}
            return e["kind"] in roles
        self.entries = [e for e in self.entries if not same(e)] + [entry]


def reset(root: Path, paths: list[str] | None = None) -> tuple[Stage, list[dict]]:
    """Unstage ``paths`` (as added, or stored names; a module by its spec), or everything."""
    stage = Stage.load(root)
    if not paths:
        removed, stage.entries = stage.entries, []
    else:
        wanted = {str(Path(p).resolve()) for p in paths} | set(paths)
        keys = lambda e: {e.get("path"), e.get("name"), e.get("spec")}  # noqa: E731
        removed = [e for e in stage.entries if keys(e) & wanted]
        unknown = [p for p in paths if not any({p, str(Path(p).resolve())} & keys(e) for e in removed)]
        if unknown:
            raise NotFound(f"{unknown[0]} is not staged")
        stage.entries = [e for e in stage.entries if e not in removed]
    stage.save()
    return stage, removed


def guess_kind(path: Path) -> str:
    """weights (checkpoint files, folders), log (.csv/.tsv/.jsonl), network (a JSON/YAML
    mapping with 'nodes' or 'layers'), config (other JSON/YAML mappings up to 16 MiB), else file."""
    name = path.name.lower()
    if path.is_dir() or name.endswith(_WEIGHT_SUFFIXES):
        return "weights"
    if name.endswith((".csv", ".tsv", ".jsonl", ".ndjson")):
        return "log"
    if name.endswith((".json", ".yaml", ".yml")) and path.stat().st_size <= MAX_CONFIG_BYTES:
        try:
            doc = md.load_mapping(path.read_bytes(), path.name)
        except BadInput:
            return "file"
        return "network" if ("nodes" in doc or "layers" in doc) else "config"
    return "file"


def add(root: Path, paths: list[Path], kind: str | None = None, model: str | None = None,
        module: str | None = None, store_as: str | None = None) -> tuple[Stage, list[dict]]:
    """Stage files (checked now: a bad config or log fails here, nothing staged)."""
    from ..names import check_file_path, check_ref_name
    stage = Stage.load(root)
    if model is not None:
        check_ref_name(model)
    if kind is not None and kind not in KINDS:
        raise BadInput(f"unknown kind {kind!r} (one of {', '.join(KINDS)})")
    if store_as is not None and len(paths) != 1:
        raise BadInput("--path names one file: add one file with it")
    new: list[dict] = []
    if module is not None:
        if ":" not in module:
            raise BadInput(f"--module {module!r}: expected file.py:attr or package.module:attr")
        mod, _, attr = module.rpartition(":")
        spec = f"{Path(mod).resolve()}:{attr}" if mod.endswith(".py") else module
        if mod.endswith(".py") and not Path(mod).is_file():
            raise NotFound(f"{mod}: no such file")
        new.append({"kind": "module", "spec": spec, "cwd": str(Path.cwd())})
    if not paths and module is None and model is None:
        raise BadInput("nothing to add: give files, --module or --name")
    for p in paths:
        if not p.exists():
            raise NotFound(f"{p}: no such file or directory")
        k = kind or guess_kind(p)
        if k == "module":
            raise BadInput("a module is staged with --module file.py:attr")
        st = p.stat()
        entry = {"kind": k, "path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        if k == "weights":
            from .. import formats
            entry["format"] = formats.detect(p)
        elif p.is_dir():
            raise BadInput(f"{p} is a folder: only weights (a Hugging Face folder) can be added as one")
        else:
            if k == "network":
                netdef.parse(p.read_bytes(), p.name)
            elif k == "config":
                md.parse_hyperparams(p.read_bytes(), p.name)
            elif k == "log":
                md.parse_log(p.read_bytes(), p.name)
            elif k == "file":
                if st.st_size > MAX_SIDE_FILE:
                    raise BadInput(f"{p}: {st.st_size} bytes is more than a side file may hold ({MAX_SIDE_FILE})")
                rel = store_as or _stored_name(p)
                check_file_path(rel)
                if rel.startswith(DLV_DIR) or rel == DLV_DIR.rstrip("/"):
                    raise BadInput(f"{rel}: the folder {DLV_DIR} is reserved for dlv's own records")
                entry["name"] = rel
        new.append(entry)
    for e in new:
        stage.put(e)
    if model is not None:
        stage.model = model
    stage.save()
    return stage, new


def _stored_name(p: Path) -> str:
    """A file's name in the version: its path relative to the current directory
    when it lies below it, else its base name."""
    try:
        return p.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return p.name


def _read_staged(e: dict) -> bytes:
    p = Path(e["path"])
    _check_unchanged(e)
    return p.read_bytes()


def _check_unchanged(e: dict) -> None:
    p = Path(e["path"])
    try:
        st = p.stat()
    except OSError:
        raise NotFound(f"{p} was staged but is gone; add it again or unstage it (dlv reset {p})") from None
    if not p.is_dir() and (st.st_size != e["size"] or st.st_mtime_ns != e["mtime_ns"]):
        raise BadInput(f"{p} changed since it was added; add it again (dlv add {p})")


# --------------------------------------------------------------------- commit
def commit(repo, root: Path, message: str, name: str | None = None, parent: str | None = None) -> dict:
    """Create a version of model ``name`` from the stage (see docs/dlv.md for what is inherited)."""
    from .. import formats
    from ..names import check_ref_name
    stage = Stage.load(root)
    name = name or stage.model
    if not name:
        raise BadInput("which model? give --name NAME (or dlv add --name NAME)")
    check_ref_name(name)
    if not stage.entries:
        raise BadInput("nothing staged to commit (dlv add FILES)")
    by_kind = {e["kind"]: e for e in stage.entries if e["kind"] != "file"}
    for e in stage.entries:
        if e["kind"] != "module":
            _check_unchanged(e)
    refs = repo.refs()
    parent_v = repo.version(parent) if parent else (repo.version(refs[name]) if name in refs else None)
    sources: dict[str, Any] = {}
    # W: the staged checkpoint, else the parent's weights (a commit of new metadata only).
    if "weights" in by_kind:
        w = by_kind["weights"]
        snap = formats.read(w["path"], w.get("format"))
        sources["weights"] = Path(w["path"]).name
        inherited = _side_files(repo, parent_v) if parent_v is not None else {}
        for path, data in inherited.items():
            snap.files.setdefault(path, data)
    elif parent_v is not None:
        snap = repo.retrieve(parent_v.id)
        sources["weights"] = f"parent {parent_v.short}"
    else:
        raise BadInput(f"model {name!r} has no version yet: add its weights (a checkpoint file)")
    old = {p: snap.files.pop(p) for p in list(snap.files) if p.startswith(DLV_DIR)}
    # N: staged network file or module, else the parent's.
    if "network" in by_kind:
        e = by_kind["network"]
        snap.files[NETWORK] = netdef.encode(netdef.parse(_read_staged(e), Path(e["path"]).name))
        sources["network"] = Path(e["path"]).name
    elif "module" in by_kind:
        snap.files[NETWORK] = netdef.encode(netdef.extract(_load_module(by_kind["module"])))
        sources["network"] = by_kind["module"]["spec"].rpartition(":")[2]
    elif NETWORK in old:
        snap.files[NETWORK] = old[NETWORK]
    # M: hyper-parameters (inherited unless restaged), the training log (this version's own).
    if "config" in by_kind:
        e = by_kind["config"]
        snap.files[HYPERPARAMS] = md.canonical_json(md.parse_hyperparams(_read_staged(e), Path(e["path"]).name))
        sources["config"] = Path(e["path"]).name
    elif HYPERPARAMS in old:
        snap.files[HYPERPARAMS] = old[HYPERPARAMS]
    if "log" in by_kind:
        e = by_kind["log"]
        snap.files[LOG] = md.encode_log(md.parse_log(_read_staged(e), Path(e["path"]).name))
        sources["log"] = Path(e["path"]).name
    if NETWORK in snap.files and ("weights" in by_kind or "network" in by_kind or "module" in by_kind):
        _check_network(snap)
    for e in stage.entries:
        if e["kind"] == "file":
            snap.files[e["name"]] = _read_staged(e)
    snap.files[INFO] = md.canonical_json({"format": FORMAT, "kind": "commit", "sources": sources})
    res = repo.archive_snapshot(snap, name, parent=parent_v.hex if parent_v is not None else None,
                                message=message)
    stage.entries = []
    stage.model = name
    stage.save()
    out = res.to_json()
    out["sources"] = sources
    return out


def _check_network(snap) -> None:
    """N and W of one version must agree (names and shapes of every layer's
    tensors); checked where torch is installed, which rebuilding needs anyway."""
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        return
    net = netdef.decode(snap.files[NETWORK])
    netdef.check_weights(net, {k: t.shape for k, t in snap.tensors.items()})


def _side_files(repo, v) -> dict[str, bytes]:
    """The parent's files F and dlv records (inherited by a commit that does not restage them)."""
    return {f.name: repo.read_entry(f).tobytes() for f in v.files}


def _load_module(e: dict):
    from ..progressive.models import load_model
    cwd = os.getcwd()
    try:
        os.chdir(e.get("cwd", cwd))   # a package spec resolves from where it was added
        return load_model(e["spec"])
    finally:
        os.chdir(cwd)


def copy(repo, src: str, new_name: str, message: str = "") -> dict:
    """Scaffold model ``new_name`` from version ``src``: a new version with the same
    W, N, M and F (all deduplicated: nothing is stored twice), its parent ``src``."""
    from ..names import check_ref_name
    check_ref_name(new_name)
    v = repo.version(src)
    if new_name in repo.refs():
        raise BadInput(f"model {new_name!r} already exists; copy to a new name")
    snap = repo.retrieve(v.id)
    snap.files[INFO] = md.canonical_json({"format": FORMAT, "kind": "copy",
                                          "from": {"name": v.name, "id": v.hex}})
    res = repo.archive_snapshot(snap, new_name, parent=v.hex,
                                message=message or f"copy of {v.name}@{v.short}")
    return res.to_json()


# -------------------------------------------------------------------- reading
class ModelVersion:
    """One version seen as a model: W (tensor entries), N, M (hyper-parameters, log), F.

    N and M are read on first use (side files, a few KiB each); W is never read here."""

    def __init__(self, repo, version):
        self.repo = repo
        self.version = version
        self._side = {f.name: f for f in version.files}
        self._cache: dict[str, Any] = {}

    name = property(lambda self: self.version.name)
    id = property(lambda self: self.version.hex)
    short = property(lambda self: self.version.short)
    time = property(lambda self: self.version.time)
    message = property(lambda self: self.version.message)
    tensors = property(lambda self: self.version.tensors)

    @property
    def parent(self) -> str | None:
        p = self.version.parent
        return p.hex() if p else None

    @property
    def files(self) -> list:
        """F: the side files that are not dlv's records."""
        return [f for f in self.version.files if not f.name.startswith(DLV_DIR)]

    @property
    def is_model(self) -> bool:
        """Whether dlv committed it (a plain `pas archive` version has no .dlv/ records)."""
        return INFO in self._side

    def side(self, path: str) -> bytes | None:
        e = self._side.get(path)
        return None if e is None else self.repo.read_entry(e).tobytes()

    def _json(self, path: str, default):
        if path not in self._cache:
            data = self.side(path)
            if data is None:
                self._cache[path] = default
            else:
                try:
                    self._cache[path] = json.loads(data)
                except ValueError as exc:
                    raise BadInput(f"{self.name}@{self.short}: {path} is not JSON: {exc}") from None
        return self._cache[path]

    @property
    def info(self) -> dict:
        return self._json(INFO, {})

    @property
    def network(self) -> dict | None:
        if NETWORK not in self._cache:
            data = self.side(NETWORK)
            self._cache[NETWORK] = None if data is None else netdef.decode(data, f"{self.name}@{self.short}: {NETWORK}")
        return self._cache[NETWORK]

    @property
    def hyperparams(self) -> dict:
        hp = self._json(HYPERPARAMS, {})
        if not isinstance(hp, dict):
            raise BadInput(f"{self.name}@{self.short}: {HYPERPARAMS} is not a mapping")
        return hp

    @property
    def log(self) -> list[dict]:
        if LOG not in self._cache:
            data = self.side(LOG)
            self._cache[LOG] = [] if data is None else md.decode_log(data, f"{self.name}@{self.short}: {LOG}")
        return self._cache[LOG]

    def metric(self, name: str, iteration: int | None = None) -> float:
        """Metric ``name`` (loss, accuracy, lr, ...) at ``iteration``, or at the last one that has it."""
        return md.value_at(self.log, name, iteration)

    def series(self, name: str) -> list[tuple[int, float]]:
        return md.series(self.log, name)


def open_version(repo, ref: str | bytes) -> ModelVersion:
    return ModelVersion(repo, repo.version(ref))


def metric(repo, version: str | bytes, name: str, iteration: int | None = None) -> float:
    """The value of metric ``name`` of ``version`` at ``iteration`` (None: the last logged)."""
    return open_version(repo, version).metric(name, iteration)


def describe(repo, ref: str) -> dict:
    """Everything `dlv desc` shows about one version (weights are not read)."""
    mv = open_version(repo, ref)
    v = mv.version
    refs = sorted(n for n, vid in repo.refs().items() if vid == v.hex)
    children = [c.hex for c in repo.versions() if c.parent == v.id]
    net = mv.network
    tensors = v.tensors
    if net is not None:
        layers = netdef.layers(net, tensors)
    else:   # no N stored: group the tensors by module path
        groups: dict[str, list] = {}
        for e in tensors:
            groups.setdefault(e.name.rpartition(".")[0], []).append(e)
        layers = [{"id": k or "<root>", "type": None, "target": k, "params": {}, "attrs": {},
                   "tensors": [{"name": e.name, "dtype": e.out_dtype, "shape": list(e.shape),
                                "count": _count(e.shape)} for e in es],
                   "count": sum(_count(e.shape) for e in es)} for k, es in groups.items()]
    log = mv.log
    return {
        "id": v.hex, "name": v.name, "parent": mv.parent, "children": children, "refs": refs,
        "time": v.time, "message": v.message, "kind": mv.info.get("kind", "archive"),
        "copied_from": mv.info.get("from"), "sources": mv.info.get("sources", {}),
        "network": None if net is None else {
            "kind": net["kind"], "source": net.get("source"), "class": net.get("class"),
            "nodes": len(net["nodes"]), "edges": len(net["edges"]),
            "rebuildable": not netdef.rebuild_problems(net), "problems": netdef.rebuild_problems(net)[:10],
            "graph": [{"id": n["id"], "op": n["op"], "type": n["type"],
                       "inputs": [a for a, b in net["edges"] if b == n["id"]]} for n in net["nodes"]]},
        "layers": layers,
        "parameters": {"tensors": len(tensors), "elements": sum(_count(e.shape) for e in tensors),
                       "bytes": sum(e.nbytes for e in tensors), "lossy": v.lossy},
        "hyperparams": mv.hyperparams,
        "metrics": md.summary(log),
        "log": log,
        "files": [{"name": f.name, "bytes": f.nbytes} for f in mv.files],
    }


def _count(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# --------------------------------------------------------------------- lineage
def tree(repo, name: str | None = None, last: bool = False, message: str | None = None) -> dict:
    """Models (name, head, versions) and the lineage forest, from the manifests alone.

    ``name``: only that model's versions; ``message``: only versions whose commit
    message contains it (case-insensitive); a version whose parent is left out
    is a root, with ``base`` naming where it came from. ``last``: only heads."""
    versions = repo.versions()
    refs = repo.refs()
    by_id = {v.hex: v for v in versions}
    models: dict[str, dict] = {}
    for v in versions:
        m = models.setdefault(v.name, {"name": v.name, "versions": 0, "head": refs.get(v.name),
                                       "first": v.time, "last": v.time})
        m["versions"] += 1
        m["last"] = v.time
    keep = [v for v in versions if (name is None or v.name == name)]
    if name is not None and not keep:
        raise NotFound(f"no model {name!r}")
    if message is not None:
        keep = [v for v in keep if message.lower() in v.message.lower()]
    if last:
        heads = {refs.get(v.name) for v in keep}
        keep = [v for v in keep if v.hex in heads]
    kept = {v.hex for v in keep}
    nodes = {v.hex: {"id": v.hex, "name": v.name, "time": v.time, "message": v.message,
                     "refs": sorted(n for n, vid in refs.items() if vid == v.hex), "children": []} for v in keep}
    roots = []
    for v in keep:
        p = v.parent.hex() if v.parent else None
        if p is not None and p in kept and not last:
            nodes[p]["children"].append(nodes[v.hex])
        else:
            if p is not None:
                base = by_id.get(p)
                nodes[v.hex]["base"] = {"id": p, "name": base.name if base else None}
            roots.append(nodes[v.hex])
    return {"models": sorted((m for m in models.values() if name is None or m["name"] == name),
                             key=lambda m: m["name"]), "tree": roots}


def lineage(repo, ref: str) -> list[dict]:
    """parent(base, derived, commit) edges from ``ref`` back to its root, newest first."""
    out = []
    for v in repo.log(ref):
        out.append({"derived": v.hex, "base": v.parent.hex() if v.parent else None, "name": v.name,
                    "commit": {"message": v.message, "time": v.time}})
    return out


def search(repo, text: str) -> list[dict]:
    """Versions whose name, message, hyper-parameters, network (class, layer types) or
    file names contain ``text`` (case-insensitive); reads only manifests and dlv records."""
    if not text:
        raise BadInput("search for what? give a non-empty text")
    needle = text.lower()
    rows = []
    refs = repo.refs()
    for v in repo.versions():
        mv = ModelVersion(repo, v)
        fields = {"name": v.name, "message": v.message}
        hp = mv.hyperparams
        if hp:
            fields["hyperparams"] = json.dumps(hp, sort_keys=True)
        net = mv.network
        if net is not None:
            fields["network"] = " ".join([net.get("class") or ""] + sorted({n["type"] for n in net["nodes"]}))
        if mv.files:
            fields["files"] = " ".join(f.name for f in mv.files)
        meta = v.manifest["source"].get("metadata", {})
        if meta:
            fields["metadata"] = json.dumps(meta, sort_keys=True)
        hits = sorted(k for k, s in fields.items() if needle in s.lower())
        if hits:
            rows.append({"id": v.hex, "name": v.name, "time": v.time, "message": v.message,
                         "head": refs.get(v.name) == v.hex, "matched": hits})
    return rows
