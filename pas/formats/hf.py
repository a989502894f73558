"""Hugging Face style model folders.

Weights are every ``*.safetensors`` file in the folder (single-file or
sharded, in subfolders too, e.g. diffusers' ``unet/``). A folder without
safetensors weights may hold PyTorch ones instead: ``pytorch_model*.bin``
(``diffusion_pytorch_model*.bin``, ``adapter_model.bin``) or the shards a
``*.bin.index.json`` names. Everything else (config.json, tokenizer files,
the index files themselves, README, ...) is a side file kept byte for byte
in ``Snapshot.files``; ``.git`` is skipped. File symlinks are followed only
when they stay inside the folder (or point into the HF cache's ``blobs``).

All tensors of all shards go into one snapshot. Tensors of shards in a
subfolder are named ``<subfolder>/<name>`` so components cannot collide.
``layout`` records how to cut the snapshot back into the same files::

    {"version": 1,
     "shards": [
       {"file": "model-00001-of-00002.safetensors", "format": "safetensors",
        "metadata": {"format": "pt"}, "tensors": ["embed.weight", "layers.0.w"]},
       {"file": "model-00002-of-00002.safetensors", "format": "safetensors",
        "metadata": {"format": "pt"}, "tensors": ["layers.1.w"]},
       {"file": "pytorch_model.bin", "format": "pt", "tensors": [...], "pt": <pytorch layout>}]}

Shards are in path order, ``tensors`` in file order, names as inside the
file. Index files are checked (``weight_map`` shard paths must be safe,
present, and hold the tensors named) but kept verbatim, not regenerated.
"""
from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from ..errors import BadInput, BadName, NotFound
from ..names import check_file_path, check_tensor_name
from ..snapshot import Snapshot, Tensor
from . import pytorch, safetensors
from ._common import atomic_dir, join_inside, snapshot_tensors

LAYOUT_VERSION = 1
MAX_SIDE_FILE = 512 * 2**20      # one non-weight file
MAX_SIDE_TOTAL = 4 * 2**30       # all side files: they are held in memory
MAX_FILES = 100_000
SKIP_DIRS = {".git"}
DEFAULT_SHARD = "model.safetensors"
_PT_WEIGHTS = re.compile(r"(.*pytorch_model.*|adapter_model)\.(bin|pt|pth)")
_INDEX_SUFFIXES = (".safetensors.index.json", ".bin.index.json")


def _parent(relpath: str) -> str:
    parent = str(PurePosixPath(relpath).parent)
    return "" if parent == "." else parent


def _prefix(relpath: str) -> str:
    parent = _parent(relpath)
    return parent + "/" if parent else ""


def _symlink_roots(root: Path) -> list[str]:
    """Where file symlinks may point: inside the folder, or, for a snapshot of
    the Hugging Face cache (``models--x/snapshots/<rev>``), its ``blobs`` folder.

    Anything else is refused: a cloned repository with ``config.json ->
    ~/.ssh/id_rsa`` must not smuggle that file into a snapshot.
    """
    real = os.path.realpath(root)
    roots = [real]
    if Path(real).parent.name == "snapshots":
        roots.append(os.path.realpath(Path(real).parent.parent / "blobs"))
    return roots


def _inside(path: str, roots: list[str]) -> bool:
    return any(os.path.commonpath([r, path]) == r for r in roots)


def _walk(root: Path) -> dict[str, Path]:
    """Regular files under root by relative POSIX path (sorted), .git skipped."""
    found: dict[str, Path] = {}
    link_roots = _symlink_roots(root)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for d in dirnames:
            if os.path.islink(os.path.join(dirpath, d)):
                raise BadInput(f"{os.path.join(dirpath, d)}: symlinked folders are not supported")
        for fn in filenames:
            if fn in SKIP_DIRS:
                continue                 # a ".git" file (worktree / submodule pointer)
            full = Path(dirpath, fn)
            rel = full.relative_to(root).as_posix()
            check_file_path(rel)
            if full.is_symlink() and not _inside(os.path.realpath(full), link_roots):
                raise BadInput(f"{full}: symlink points outside the folder")
            try:
                st = os.stat(full)       # follows file symlinks (the HF cache is made of them)
            except OSError as e:
                raise BadInput(f"{full}: cannot stat ({e.strerror or e})") from None
            if not stat.S_ISREG(st.st_mode):
                raise BadInput(f"{full}: not a regular file")
            found[rel] = full
            if len(found) > MAX_FILES:
                raise BadInput(f"{root}: more than {MAX_FILES} files")
    return dict(sorted(found.items()))


def _read_side_file(path: Path, rel: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read(MAX_SIDE_FILE + 1)       # never more than the cap, even if the file grows
    if len(data) > MAX_SIDE_FILE:
        raise BadInput(f"{rel}: {os.path.getsize(path)} bytes, over the {MAX_SIDE_FILE >> 20} MiB limit "
                       "for non-weight files (is it a weight format pas does not read?)")
    return data


def _weight_map(rel: str, data: bytes) -> dict[str, str]:
    """tensor name -> shard path (relative to the folder root) of an index file."""
    try:
        index = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise BadInput(f"{rel}: index is not valid JSON ({e})") from None
    wm = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(wm, dict):
        raise BadInput(f"{rel}: index has no 'weight_map' object")
    out = {}
    for name, shard in wm.items():
        check_tensor_name(name)
        if not isinstance(shard, str):
            raise BadInput(f"{rel}: weight_map[{name!r}] is not a string")
        check_file_path(shard)                   # BadName for "../evil.safetensors"
        out[name] = check_file_path(_prefix(rel) + shard)
    return out


def _classify(files: dict[str, Path]) -> tuple[dict[str, str], set[str]]:
    """(weight file path -> "safetensors" | "pt", folders holding safetensors weights)."""
    st_dirs = {_parent(r) for r in files if r.endswith(".safetensors")}
    shards = {r: "safetensors" for r in files if r.endswith(".safetensors")}
    for r in files:
        # PyTorch weights count only where no safetensors weights sit beside them
        # (repos often ship both; the .bin copy is then an ordinary side file).
        if _parent(r) not in st_dirs and _PT_WEIGHTS.fullmatch(PurePosixPath(r).name):
            shards[r] = "pt"
    return shards, st_dirs


def read(path: str | os.PathLike) -> Snapshot:
    root = Path(path)
    if not root.exists():
        raise NotFound(f"{root}: no such folder")
    if not root.is_dir():
        raise BadInput(f"{root}: not a folder")
    files = _walk(root)
    shards, st_dirs = _classify(files)

    # Index files first: their paths are checked before any shard is opened,
    # and a .bin index may name shards the file-name rule did not catch.
    side: dict[str, bytes] = {}
    wanted: dict[str, dict[str, str]] = {}        # shard -> {tensor: index that names it}
    for rel in (r for r in files if r.endswith(_INDEX_SUFFIXES)):
        side[rel] = _read_side_file(files[rel], rel)
        weight_map = _weight_map(rel, side[rel])
        is_bin = rel.endswith(".bin.index.json")
        if is_bin and _parent(rel) in st_dirs:
            continue                              # its .bin shards are side files here
        for name, shard in weight_map.items():
            if shard not in files:
                raise BadInput(f"{rel}: names shard {shard!r}, which is not in the folder")
            if shard not in shards:
                if not is_bin or shard.endswith(_INDEX_SUFFIXES):
                    raise BadInput(f"{rel}: names {shard!r}, which is not a weight file")
                shards[shard] = "pt"
            wanted.setdefault(shard, {})[name] = rel
    total = sum(len(b) for b in side.values())
    for rel, full in files.items():
        if rel in shards or rel in side:
            continue
        side[rel] = _read_side_file(full, rel)
        total += len(side[rel])
        if total > MAX_SIDE_TOTAL:
            raise BadInput(f"{root}: non-weight files exceed {MAX_SIDE_TOTAL >> 30} GiB in total")
    side = dict(sorted(side.items()))
    if not shards:
        raise BadInput(f"{root}: no weights (*.safetensors or pytorch_model*.bin) in this folder")
    shards = dict(sorted(shards.items()))

    snap = Snapshot(format="hf", files=side)
    layout_shards = []
    metas = []
    for rel, fmt in shards.items():
        part = safetensors.read(files[rel]) if fmt == "safetensors" else pytorch.read(files[rel])
        entry: dict[str, Any] = {"file": rel, "format": fmt}
        if fmt == "safetensors":
            entry["metadata"] = dict(part.metadata)
            metas.append(part.metadata)
        entry["tensors"] = list(part.tensors)
        if fmt == "pt":
            entry["pt"] = part.layout
        for name in wanted.get(rel, {}):
            if name not in part.tensors:
                raise BadInput(f"{wanted[rel][name]}: says {name!r} is in {rel!r}, but it is not")
        prefix = _prefix(rel)
        for name, t in part.tensors.items():
            full_name = check_tensor_name(prefix + name)
            if full_name in snap.tensors:
                raise BadInput(f"{root}: tensor {full_name!r} appears in more than one weight file")
            snap.add(Tensor(full_name, t.dtype, t.shape, t.data))
        layout_shards.append(entry)
    snap.layout = {"version": LAYOUT_VERSION, "shards": layout_shards}
    # Snapshot-level metadata: what all safetensors shards agree on.
    if metas:
        snap.metadata = {k: v for k, v in metas[0].items() if all(m.get(k) == v for m in metas[1:])}
    return snap


# ---------------------------------------------------------------- writing

def _check_side_path(rel: str) -> str:
    check_file_path(rel)
    if any(part in SKIP_DIRS for part in rel.split("/")):
        # A planted .git/hooks/* would run code the next time git runs there.
        raise BadName(f"side file {rel!r} is inside a .git folder")
    return rel


def _plan_shards(snapshot: Snapshot, tensors: dict[str, Tensor]) -> list[tuple[str, Callable[[Path], None]]]:
    layout = snapshot.layout if snapshot.format == "hf" else {}
    if not isinstance(layout, dict):
        raise BadInput(f"hf layout is a {type(layout).__name__}, not an object")
    shards = layout.get("shards")
    if shards is None:
        # From another format: one plain safetensors file, as save_pretrained would.
        return [(DEFAULT_SHARD, _safetensors_job(list(tensors.values()), snapshot.metadata))]
    if layout.get("version") != LAYOUT_VERSION or not isinstance(shards, list):
        raise BadInput(f"unsupported hf layout (version {layout.get('version')!r})")
    plan = []
    placed: set[str] = set()
    for shard in shards:
        if not isinstance(shard, dict) or not isinstance(shard.get("tensors"), list):
            raise BadInput("malformed hf layout: shard entry without a tensor list")
        rel = _check_side_path(shard.get("file"))
        prefix = _prefix(rel)
        part: dict[str, Tensor] = {}
        for name in shard["tensors"]:
            full = prefix + check_tensor_name(name)
            if full not in tensors:
                raise BadInput(f"hf layout puts {full!r} in {rel!r}, but the snapshot has no such tensor")
            if full in placed:
                raise BadInput(f"hf layout puts {full!r} in more than one shard")
            placed.add(full)
            t = tensors[full]
            part[name] = Tensor(name, t.dtype, t.shape, t.data)
        fmt = shard.get("format")
        if fmt == "safetensors":
            metadata = shard.get("metadata", {})
            if not isinstance(metadata, dict):
                raise BadInput(f"hf layout: metadata of {rel!r} is not an object")
            plan.append((rel, _safetensors_job(list(part.values()), metadata)))
        elif fmt == "pt":
            sub = Snapshot(tensors=part, format="pt", layout=shard.get("pt") or {})   # type checked there
            plan.append((rel, _pt_job(pytorch.checkpoint_object(sub))))   # validates now
        else:
            raise BadInput(f"hf layout: shard {rel!r} has unknown format {fmt!r}")
    missing = [n for n in tensors if n not in placed]
    if missing:
        raise BadInput(f"hf layout places no shard for {len(missing)} tensor(s), e.g. {missing[0]!r}")
    return plan


def _safetensors_job(tensors: list[Tensor], metadata: dict[str, str]) -> Callable[[Path], None]:
    safetensors.build_header(tensors, metadata)          # validate before anything is written
    return lambda target: safetensors.write_tensors(target, tensors, metadata)


def _pt_job(obj: Any) -> Callable[[Path], None]:
    return lambda target: pytorch.save(obj, target)


def _bytes_job(data: bytes) -> Callable[[Path], None]:
    def job(target: Path) -> None:
        with open(target, "xb") as f:            # fresh folder: never overwrite, never follow a link
            f.write(data)
    return job


def write(snapshot: Snapshot, out_path: str | os.PathLike) -> None:
    tensors = {t.name: t for t in snapshot_tensors(snapshot)}
    plan = _plan_shards(snapshot, tensors)
    for rel, data in snapshot.files.items():
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise BadInput(f"side file {rel!r} is not bytes")
        plan.append((_check_side_path(rel), _bytes_job(bytes(data))))
    # One path, one file; and no file may also be a folder of another.
    paths = [rel for rel, _ in plan]
    if len(set(paths)) != len(paths):
        dup = next(p for p in paths if paths.count(p) > 1)
        raise BadInput(f"{dup!r} would be written twice (a shard and a side file?)")
    as_set = set(paths)
    for rel in paths:
        parent = _parent(rel)
        while parent:
            if parent in as_set:
                raise BadInput(f"{parent!r} would be both a file and the folder of {rel!r}")
            parent = _parent(parent)

    with atomic_dir(out_path) as tmp:
        for rel, job in plan:
            target = join_inside(tmp, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            job(target)
