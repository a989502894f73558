"""The safetensors-style Python API: `pas.load` and the lazy `pas.open` handle."""
from __future__ import annotations

import os

import numpy as np

from . import dtypes
from .errors import BadInput, NotFound
from .repo import Repository

_FRAMEWORKS = ("np", "numpy", "pt", "torch")


def _convert(data: np.ndarray, dtype: str, framework: str):
    if framework in ("np", "numpy"):
        return data
    return to_torch(data, dtype)


def to_torch(data: np.ndarray, dtype: str):
    """A torch tensor with the real dtype (bf16, float8 ...) sharing ``data``'s bits."""
    import torch
    target = {"BF16": torch.bfloat16, "F8_E4M3": torch.float8_e4m3fn,
              "F8_E5M2": torch.float8_e5m2}.get(dtype)
    arr = np.ascontiguousarray(data)
    if target is None:
        return torch.from_numpy(arr.copy() if not arr.flags.writeable else arr)
    holder = torch.from_numpy(arr.view(np.int16 if dtypes.get(dtype).itemsize == 2 else np.uint8).copy())
    return holder.view(target)


def _check_framework(framework: str) -> None:
    if framework not in _FRAMEWORKS:
        raise BadInput(f"framework must be one of {_FRAMEWORKS}, not {framework!r}")


def _as_repo(repo) -> tuple[Repository, bool]:
    if isinstance(repo, Repository):
        return repo, False
    return Repository.open(repo if repo is None else os.fspath(repo)), True


def load(repo, ref: str, names=None, framework: str = "np") -> dict:
    _check_framework(framework)
    r, owned = _as_repo(repo)
    try:
        snap = r.retrieve(ref, names=names, files=False)
    finally:
        if owned:
            r.close()
    return {n: _convert(t.data, t.dtype, framework) for n, t in snap.tensors.items()}


def load_many(repo, refs, framework: str = "np"):
    """Yield (version id hex, {name: array}) for every version of ``refs``, each
    stored delta decoded once (`Repository.retrieve_many`: bases first)."""
    _check_framework(framework)
    refs = list(refs)
    r, owned = _as_repo(repo)
    try:
        for v, snap in r.retrieve_many(refs, files=False):
            yield v.hex, {n: _convert(t.data, t.dtype, framework) for n, t in snap.tensors.items()}
    finally:
        if owned:
            r.close()


class VersionHandle:
    """Lazy access to one version: only the tensors asked for are read."""

    def __init__(self, repo, ref: str, framework: str = "np"):
        _check_framework(framework)
        self._repo, self._owned = _as_repo(repo)
        self.framework = framework
        self.version = self._repo.version(ref)
        self._entries = {e.name: e for e in self.version.tensors}

    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def metadata(self) -> dict[str, str]:
        return dict(self.version.manifest["source"].get("metadata", {}))

    def _entry(self, name: str):
        entry = self._entries.get(name)
        if entry is None:
            raise NotFound(f"version {self.version.short} has no tensor {name!r}")
        return entry

    def _read(self, name: str, read, convert: bool = True):
        """``read(entry)`` on the named tensor; decoded delta bases are not kept between calls."""
        entry = self._entry(name)
        try:
            data = read(entry)
        finally:
            self._repo.reader.clear_cache()
        return _convert(data, entry.out_dtype, self.framework) if convert else data

    def get_tensor(self, name: str):
        return self._read(name, self._repo.read_tensor)   # a lossy tensor decoded to its original dtype

    def get_rows(self, name: str, start: int, stop: int):
        """Rows [start, stop) of a tensor; reads only the chunks they lie in."""
        return self._read(name, lambda e: self._repo.read_rows(e, start, stop))

    def get_approx(self, name: str, k: int):
        """The tensor rebuilt from the top ``k`` bytes of each element (reads only those planes)."""
        return self._read(name, lambda e: self._repo.read_approx(e, k))

    def get_interval(self, name: str, k: int):
        """Exact (lo, hi) numpy bounds of every element, from its top ``k`` bytes (float tensors)."""
        return self._read(name, lambda e: self._repo.read_interval(e, k), convert=False)

    def dtype(self, name: str) -> str:
        return self._entries[name].out_dtype

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name].shape

    def close(self) -> None:
        if self._owned:
            self._repo.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
