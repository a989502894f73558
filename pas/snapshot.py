"""What a source file holds, independent of its container format.

Readers (pas/formats) turn safetensors, PyTorch, npz and Hugging Face folders
into a `Snapshot`; writers turn a `Snapshot` back into those files. The
repository stores snapshots and never looks at container formats.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import dtypes


@dataclass
class Tensor:
    """One named tensor as raw bits.

    ``data`` is C-contiguous little-endian with ``data.shape == shape``; its
    numpy dtype is the pas dtype's ``numpy`` dtype (BF16 and float8 as
    unsigned-integer bit views).
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    data: np.ndarray

    @classmethod
    def from_array(cls, name: str, array: np.ndarray, dtype: str | None = None) -> "Tensor":
        dt = dtypes.get(dtype) if dtype else dtypes.from_numpy(array.dtype)
        if array.dtype.itemsize != dt.itemsize:
            raise dtypes.UnsupportedDType(
                f"tensor {name!r}: array of {array.dtype} cannot hold {dt.name}")
        array = dtypes.as_le_contiguous(array)
        if array.dtype != dt.np_dtype:
            array = array.view(dt.np_dtype)
        return cls(name, dt.name, tuple(int(s) for s in array.shape), array)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)


@dataclass
class Snapshot:
    """Tensors, string metadata, small side files and how to rebuild the container.

    ``layout`` is plain JSON data owned by the format that read the snapshot
    (e.g. the shard map of a sharded folder, the nesting of a PyTorch
    checkpoint with its non-tensor leaves); writers use it to restore the
    original shape, and ignore what they do not need.
    """

    tensors: dict[str, Tensor] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    format: str = "safetensors"
    layout: dict[str, Any] = field(default_factory=dict)

    def add(self, tensor: Tensor) -> None:
        self.tensors[tensor.name] = tensor

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values()) + sum(len(b) for b in self.files.values())
