"""The dtypes pas stores, named as safetensors names them.

pas never does arithmetic on stored values: every tensor travels as the raw
little-endian bytes of a C-contiguous buffer plus ``(dtype name, shape)``.
numpy has no bfloat16 or float8, so those are held in unsigned-integer
"bit views" of the same width; the dtype *name* keeps their meaning.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import UnsupportedDType


@dataclass(frozen=True)
class DType:
    name: str                      # safetensors name: "F32", "BF16", ...
    itemsize: int                  # bytes per element
    numpy: str                     # numpy dtype users get back ("<u2" for BF16)
    float_bits: tuple[int, int] | None = None  # (exponent bits, mantissa bits) for floats

    @property
    def is_float(self) -> bool:
        return self.float_bits is not None

    @property
    def bits_dtype(self) -> np.dtype:
        """Unsigned integer dtype of the same width: the view all kernels work on."""
        return np.dtype(f"<u{self.itemsize}")

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.numpy)


_ALL = [
    DType("F64", 8, "<f8", (11, 52)),
    DType("F32", 4, "<f4", (8, 23)),
    DType("F16", 2, "<f2", (5, 10)),
    DType("BF16", 2, "<u2", (8, 7)),
    DType("F8_E4M3", 1, "u1", (4, 3)),
    DType("F8_E5M2", 1, "u1", (5, 2)),
    DType("I64", 8, "<i8"),
    DType("I32", 4, "<i4"),
    DType("I16", 2, "<i2"),
    DType("I8", 1, "i1"),
    DType("U64", 8, "<u8"),
    DType("U32", 4, "<u4"),
    DType("U16", 2, "<u2"),
    DType("U8", 1, "u1"),
    DType("BOOL", 1, "|b1"),
]
DTYPES: dict[str, DType] = {d.name: d for d in _ALL}

# numpy dtype kind+size -> pas name, for arrays handed to us without a name.
_FROM_NUMPY = {
    ("f", 8): "F64", ("f", 4): "F32", ("f", 2): "F16",
    ("i", 8): "I64", ("i", 4): "I32", ("i", 2): "I16", ("i", 1): "I8",
    ("u", 8): "U64", ("u", 4): "U32", ("u", 2): "U16", ("u", 1): "U8",
    ("b", 1): "BOOL",
}


def get(name: str) -> DType:
    try:
        return DTYPES[name]
    except KeyError:
        raise UnsupportedDType(f"unsupported dtype {name!r} (known: {', '.join(DTYPES)})") from None


def from_numpy(dtype: np.dtype) -> DType:
    dtype = np.dtype(dtype)
    name = _FROM_NUMPY.get((dtype.kind, dtype.itemsize))
    if name is None:
        raise UnsupportedDType(f"unsupported numpy dtype {dtype}")
    return DTYPES[name]


def as_le_contiguous(array: np.ndarray) -> np.ndarray:
    """The same values as a C-contiguous little-endian array (no copy when already so)."""
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and not _NATIVE_LE):
        array = array.astype(array.dtype.newbyteorder("<"))
    if not array.flags.c_contiguous:
        array = np.array(array, order="C")  # not ascontiguousarray: it turns 0-d into 1-d
    return array


def raw_bytes(array: np.ndarray) -> memoryview:
    """The tensor's little-endian, C-order bytes as a flat uint8 view."""
    array = as_le_contiguous(array)
    return memoryview(array.reshape(-1).view(np.uint8))


_NATIVE_LE = np.little_endian
