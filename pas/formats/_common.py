"""Helpers shared by the format modules: inputs, atomic outputs, tensor checks.

Writers never write in place: they write a temporary sibling and rename it
over the target, so a failure (a typed error halfway through, a full disk)
leaves nothing behind and never a half-written file under the final name.
"""
from __future__ import annotations

import contextlib
import gc
import os
import secrets
import shutil
import zipfile
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from .. import dtypes
from ..errors import BadInput, NotFound
from ..names import check_file_path, check_tensor_name
from ..snapshot import Snapshot, Tensor


def existing(path: str | os.PathLike) -> Path:
    """The path as a Path, or NotFound when nothing is there."""
    p = Path(path)
    if not p.exists():
        raise NotFound(f"{p}: no such file or directory")
    return p


def open_input(path: str | os.PathLike) -> BinaryIO:
    """Open a regular file for reading (NotFound / BadInput, never OSError)."""
    p = existing(path)
    if not p.is_file():
        raise BadInput(f"{p}: not a regular file")
    try:
        return open(p, "rb")
    except OSError as e:
        raise BadInput(f"{p}: cannot open: {e.strerror or e}") from None


def _check_output_file(out: Path) -> None:
    if out.is_dir():
        raise BadInput(f"{out}: is a directory, expected a file path")


def _temp_name(out: Path) -> Path:
    """A fresh hidden sibling of ``out`` (same file system, so rename is atomic)."""
    return out.parent / f".{out.name}.{secrets.token_hex(8)}.pas-tmp"


@contextlib.contextmanager
def atomic_file(out_path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yield a temporary file that replaces ``out_path`` only on success."""
    out = Path(out_path)
    _check_output_file(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(out)
    # Not mkstemp: its 0600 mode would stick to the output; this gets the umask's.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(out_path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder that becomes ``out_path`` on success.

    ``out_path`` must not exist or be an empty folder: mixing new shards
    with stale ones from an earlier export would silently corrupt it.
    """
    out = Path(out_path)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise BadInput(f"{out}: exists and is not a directory")
        if any(out.iterdir()):
            raise BadInput(f"{out}: output folder is not empty")
        out = Path(os.path.realpath(out))    # an (empty) symlinked folder: fill its target
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(out)
    tmp.mkdir(0o777)              # not mkdtemp: its 0700 mode would stick to the output
    try:
        yield tmp
        if out.exists():
            out.rmdir()          # empty (checked above); portable rename needs it gone
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def join_inside(root: Path, relpath: str) -> Path:
    """``root / relpath`` after checking the path grammar and that it stays inside."""
    check_file_path(relpath)
    target = root.joinpath(*relpath.split("/"))
    # Belt and braces: no component may be a symlink leading elsewhere.
    real_root = os.path.realpath(root)
    real = os.path.realpath(target)
    if os.path.commonpath([real_root, real]) != real_root:
        raise BadInput(f"{relpath!r} resolves outside the output folder")
    return target


def snapshot_tensors(snapshot: Snapshot) -> list[Tensor]:
    """The snapshot's tensors in order, checking each is filed under its own name."""
    out = []
    for key, t in snapshot.tensors.items():
        if not isinstance(t, Tensor) or key != t.name:
            raise BadInput(f"snapshot entry {key!r} is not a Tensor named {key!r}")
        out.append(t)
    return out


def check_tensor(t: Tensor) -> dtypes.DType:
    """The tensor's dtype after checking its name and that its array really holds it."""
    check_tensor_name(t.name)
    dt = dtypes.get(t.dtype)
    data = t.data
    if not isinstance(data, np.ndarray):
        raise BadInput(f"tensor {t.name!r}: data is {type(data).__name__}, not a numpy array")
    if data.dtype.itemsize != dt.itemsize or data.dtype.kind not in "fiub":
        raise BadInput(f"tensor {t.name!r}: array of {data.dtype} cannot hold {dt.name}")
    if tuple(data.shape) != tuple(t.shape):
        raise BadInput(f"tensor {t.name!r}: shape {tuple(t.shape)} but its array has {data.shape}")
    return dt


def le_contiguous(array: np.ndarray) -> np.ndarray:
    """The same values, little-endian and C-contiguous; no copy when already so.

    Unlike ``dtypes.as_le_contiguous`` this keeps 0-d arrays 0-d
    (``np.ascontiguousarray`` turns them into shape ``(1,)``).
    """
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and not np.little_endian):
        array = array.astype(array.dtype.newbyteorder("<"))
    if not array.flags.c_contiguous:
        array = np.array(array, order="C")
    return array


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small objects.

    Parsing a 10^5-tensor header allocates ~10^6 containers, none of them
    garbage; with torch imported each triggered collection walks a big heap,
    which more than doubles the time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


MAX_ZIP_MEMBERS = 1_000_000
MAX_DEFLATE_RATIO = 1100        # deflate cannot exceed ~1032:1; more means a lying directory


def check_zip_directory(zf: zipfile.ZipFile, where: str, max_total: int | None,
                        max_inflated: int) -> list[zipfile.ZipInfo]:
    """Zip-bomb checks from the central directory alone, before any member is read.

    Members must be stored or deflated, with sizes deflate can produce, must
    not overlap (one compressed stream counted many times is a classic bomb)
    or repeat a name; deflated members may inflate to ``max_inflated`` bytes
    in total, and all members to ``max_total`` (None: no cap; stored members
    are bounded by the file itself). ``zipfile`` then never reads more than
    the sizes checked here.
    """
    infos = zf.infolist()
    if len(infos) > MAX_ZIP_MEMBERS:
        raise BadInput(f"{where}: {len(infos)} zip members (max {MAX_ZIP_MEMBERS})")
    seen: set[str] = set()
    total = inflated = 0
    for info in infos:
        name = info.filename
        if name in seen:
            raise BadInput(f"{where}: zip member {name!r} appears twice")
        seen.add(name)
        if info.compress_type == zipfile.ZIP_STORED:
            if info.file_size != info.compress_size:
                raise BadInput(f"{where}: stored zip member {name!r} has inconsistent sizes")
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            if info.file_size > max(info.compress_size, 1) * MAX_DEFLATE_RATIO:
                raise BadInput(f"{where}: zip member {name!r} claims {info.file_size} bytes from "
                               f"{info.compress_size} compressed (zip bomb?)")
            inflated += info.file_size
            if inflated > max_inflated:
                raise BadInput(f"{where}: compressed zip members would inflate past {max_inflated} bytes")
        else:
            raise BadInput(f"{where}: zip member {name!r} uses compression method {info.compress_type} "
                           "(only stored or deflate)")
        total += info.file_size
        if max_total is not None and total > max_total:
            raise BadInput(f"{where}: zip members claim more than {max_total} bytes uncompressed")
    spans = sorted((i.header_offset, i.header_offset + i.compress_size, i.filename) for i in infos)
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        if start < end:
            raise BadInput(f"{where}: zip members {a!r} and {b!r} overlap")
    return infos
