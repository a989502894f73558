"""numpy ``.npz`` archives: a zip of ``<name>.npy`` files.

Before numpy reads anything the zip directory is checked: only ``.npy``
members, stored or deflated, no overlapping members, no compression ratio
deflate cannot produce, total uncompressed size under a limit, and every
member's ``.npy`` header parsed (no object dtypes, a known dtype, a claimed
array size equal to the member size). Only then does
``np.load(allow_pickle=False)`` read the arrays. That stops zip bombs and
pickled object arrays before any large allocation.

npz has no bfloat16 or float8: writing those is UnsupportedDType rather than
silently turning them into plain unsigned ints. ``layout`` is ``{}``.
"""
from __future__ import annotations

import math
import os
import struct
import zipfile
import zlib

import numpy as np

from .. import dtypes
from ..errors import BadInput, PasError, UnsupportedDType
from ..names import check_file_path, check_tensor_name
from ..snapshot import Snapshot, Tensor
from ._common import atomic_file, check_tensor, check_zip_directory, existing, le_contiguous, snapshot_tensors

MAX_TOTAL_BYTES = 64 * 2**30    # uncompressed size of all members together
MAX_NPY_HEADER = 10_000         # numpy's own default limit for .npy headers
_SUFFIX = ".npy"
# Dtypes npz holds with their meaning intact: those that read back as themselves
# (BF16 and float8 would come back as U16 / U8).
_NATIVE = {name for name, dt in dtypes.DTYPES.items() if dtypes.from_numpy(dt.np_dtype).name == name}


def _check_directory(zf: zipfile.ZipFile, where: str, max_bytes: int) -> list[zipfile.ZipInfo]:
    # np.load reads every member into memory, so stored ones count too.
    infos = check_zip_directory(zf, where, max_total=max_bytes, max_inflated=max_bytes)
    for info in infos:
        if not info.filename.endswith(_SUFFIX):
            raise BadInput(f"{where}: member {info.filename!r} is not a .npy array")
    return infos


def _check_member_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> None:
    """Parse one member's .npy header; refuse objects and sizes that do not add up."""
    name = info.filename
    try:
        with zf.open(info) as fp:
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fp, max_header_size=MAX_NPY_HEADER)
            elif version in ((2, 0), (3, 0)):
                shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fp, max_header_size=MAX_NPY_HEADER)
            else:
                raise BadInput(f"{where}: member {name!r} has .npy version {version}")
            header_len = fp.tell()
    except PasError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure of hostile bytes
        raise BadInput(f"{where}: member {name!r} has no valid .npy header ({e})") from None
    if dtype.hasobject:
        raise BadInput(f"{where}: member {name!r} is an object array (refused: it would need pickle)")
    dtypes.from_numpy(dtype)                                   # UnsupportedDType for the rest
    claimed = math.prod(shape) * dtype.itemsize
    if header_len + claimed != info.file_size:
        raise BadInput(f"{where}: member {name!r} claims {claimed} bytes of {dtype}{shape} "
                       f"but holds {info.file_size - header_len}")


def read(path: str | os.PathLike, max_bytes: int = MAX_TOTAL_BYTES) -> Snapshot:
    p = existing(path)
    where = str(p)
    if not p.is_file():
        raise BadInput(f"{where}: not a regular file")
    try:
        with zipfile.ZipFile(p) as zf:
            infos = _check_directory(zf, where, max_bytes)
            for info in infos:
                check_file_path(check_tensor_name(info.filename[:-len(_SUFFIX)]))
                _check_member_header(zf, info, where)
        snap = Snapshot(format="npz", layout={})
        with np.load(p, allow_pickle=False) as npz:
            for info in infos:                                  # archive order
                name = info.filename[:-len(_SUFFIX)]
                array = le_contiguous(npz[name])                # big-endian / Fortran -> LE C order
                dt = dtypes.from_numpy(array.dtype)
                snap.add(Tensor(name, dt.name, tuple(array.shape), array))
    except PasError:
        raise
    # zipfile raises NotImplementedError for an unknown zip version or method and
    # RuntimeError for an encrypted member; zlib and struct errors escape it on
    # damaged streams (a fuzzed archive found the first: tests/fuzz_corpus/npz_file)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError,
            NotImplementedError, RuntimeError, zlib.error, struct.error) as e:
        raise BadInput(f"{where}: not a readable npz archive ({type(e).__name__}: {e})") from None
    return snap


def write(snapshot: Snapshot, out_path: str | os.PathLike) -> None:
    tensors = snapshot_tensors(snapshot)
    for t in tensors:
        dt = check_tensor(t)
        if dt.name not in _NATIVE:
            raise UnsupportedDType(f"tensor {t.name!r}: npz cannot hold {dt.name} (numpy has no such "
                                   "dtype); write safetensors or pt instead")
        check_file_path(t.name + _SUFFIX)                       # member names are file paths on unzip
    # What np.savez does, minus its keyword-argument API (a tensor named
    # "file" would collide with its first parameter).
    with atomic_file(out_path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for t in tensors:
            with zf.open(t.name + _SUFFIX, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, le_contiguous(t.data), allow_pickle=False)
