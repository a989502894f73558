"""Input/output formats: files and folders <-> `pas.snapshot.Snapshot`.

    detect(path) -> "safetensors" | "pt" | "npz" | "hf"
    read(path, format=None) -> Snapshot
    write(snapshot, out_path, format=None) -> Path

One module per format (safetensors, pytorch, npz, hf); this module only
dispatches. Every failure is a typed `pas.errors` error. torch is imported
only when a PyTorch file is actually read or written.
"""
from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

from ..errors import BadInput, NotFound, StoreError
from ..snapshot import Snapshot
from . import hf, npz, pytorch, safetensors

FORMATS = ("safetensors", "pt", "npz", "hf")
_MODULES = {"safetensors": safetensors, "pt": pytorch, "npz": npz, "hf": hf}
_PT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")

__all__ = ["FORMATS", "detect", "read", "write", "checkpoint_series"]

_WEIGHT_SUFFIXES = (".safetensors", ".npz", *_PT_SUFFIXES)
_HF_MARKERS = ("config.json", "model.safetensors", "pytorch_model.bin",
               "model.safetensors.index.json", "pytorch_model.bin.index.json")


def checkpoint_series(path: str | os.PathLike) -> list[Path] | None:
    """The checkpoint files of a training-run folder, in natural order, or None.

    A folder is a series (not a Hugging Face model folder) when it has no HF
    marker file and holds two or more weight files directly; ``epoch10``
    sorts after ``epoch9``.
    """
    import re
    p = Path(path)
    if not p.is_dir() or any((p / m).exists() for m in _HF_MARKERS):
        return None
    files = [f for f in p.iterdir() if f.is_file() and f.name.lower().endswith(_WEIGHT_SUFFIXES)]
    if len(files) < 2:
        return None
    def natural(f: Path):
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", f.name)]
    return sorted(files, key=natural)


def _check_format(fmt: object) -> str:
    if fmt not in _MODULES:
        raise BadInput(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    return fmt  # type: ignore[return-value]


def _sniff(p: Path) -> str | None:
    """Guess a file's format from its first bytes (files without a known suffix)."""
    with open(p, "rb") as f:
        head = f.read(16)
    size = p.stat().st_size
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        try:
            with zipfile.ZipFile(p) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return None
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        if any(n.endswith("data.pkl") for n in names):      # torch.save's zip layout
            return "pt"
        return None
    if len(head) >= 9:
        # Before the pickle test: a header length of 128 also starts with 0x80.
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n <= min(size - 8, safetensors.MAX_HEADER_BYTES) and head[8:9] == b"{":
            return "safetensors"
    if head[:1] == b"\x80":                                 # pickle PROTO: legacy torch.save
        return "pt"
    return None


def detect(path: str | os.PathLike) -> str:
    """The format of a file or folder: by suffix, else by content. A folder is "hf"."""
    p = Path(path)
    if not p.exists():
        raise NotFound(f"{p}: no such file or directory")
    if p.is_dir():
        return "hf"
    if not p.is_file():
        raise BadInput(f"{p}: not a regular file or folder")
    name = p.name.lower()
    if name.endswith(".safetensors"):
        return "safetensors"
    if name.endswith(_PT_SUFFIXES):
        return "pt"
    if name.endswith(".npz"):
        return "npz"
    try:
        fmt = _sniff(p)
    except OSError as e:
        raise BadInput(f"{p}: cannot read ({e.strerror or e})") from None
    if fmt is None:
        raise BadInput(f"{p}: unknown format (expected .safetensors, .pt/.pth/.bin/.ckpt, .npz "
                       f"or a Hugging Face folder); name the format explicitly if it is one of {FORMATS}")
    return fmt


def read(path: str | os.PathLike, format: str | None = None) -> Snapshot:  # noqa: A002 - public name
    """Read a file or folder into a Snapshot (``format`` None = detect)."""
    if not Path(path).exists():
        raise NotFound(f"{path}: no such file or directory")
    fmt = detect(path) if format is None else _check_format(format)
    try:
        return _MODULES[fmt].read(path)
    except OSError as e:          # unreadable input (permissions, I/O error): typed, not raw
        raise BadInput(f"{e.filename or path}: cannot read: {e.strerror or e}") from None


def write(snapshot: Snapshot, out_path: str | os.PathLike, format: str | None = None) -> Path:  # noqa: A002
    """Write a Snapshot as ``format`` (None = the format it was read from).

    Files are replaced atomically; an "hf" folder must not exist or be empty.
    Nothing is written when the snapshot cannot be represented (typed error);
    I/O failures of the output are StoreError.
    """
    fmt = _check_format(snapshot.format if format is None else format)
    try:
        _MODULES[fmt].write(snapshot, out_path)
    except OSError as e:          # output not writable, disk full, ...
        raise StoreError(f"{e.filename or out_path}: cannot write: {e.strerror or e}") from None
    return Path(out_path)
