"""Float segmentation: split tensors into byte planes, most significant first.

A tensor of itemsize k becomes k streams; plane 0 holds byte k-1 of every
element (sign and high exponent bits for IEEE floats), plane k-1 byte 0. The
high planes compress well and can be read alone for approximate answers.

Layouts (chosen per tensor from the data, recorded in the tensor record):
- ``planes``: the element's bytes as they are.
- ``planes-exp``: floats only; the bits are first permuted to
  ``exponent | sign | mantissa`` so that plane 0 is the exponent alone. The
  exponent is the only low-entropy field of a weight, and keeping it whole in
  one plane lets the entropy coder see it (ZipNN's observation); the sign
  moves into plane 1, which is near-random anyway.

Kernels are Numba loops that transform and split in one pass into a
preallocated buffer, and merge back the same way.
"""
from __future__ import annotations

import numpy as np

from .dtypes import DType

LAYOUTS = ("planes", "planes-exp")

# Below this many elements numpy does the work: importing Numba costs more
# than it saves, and a CLI call on a small model must stay fast.
NUMBA_MIN_ELEMENTS = 1 << 18

_kernels = None


def _load_kernels():
    """Compile (or load from Numba's cache) the split/merge kernels on first use."""
    global _kernels
    if _kernels is not None:
        return _kernels
    import numba

    u64 = numba.uint64

    # Every quantity is uint64: Numba turns mixed signed/unsigned arithmetic into floats.
    # Plane-outer loops write each plane sequentially (3 GB/s on float32).
    @numba.njit(cache=True, nogil=True)
    def split(words, out, k, rot, e_bits, m_bits):
        n = words.shape[0]
        width = u64(8 * k)
        m = u64(m_bits)
        one = u64(1)
        e_mask = (one << u64(e_bits)) - one
        m_mask = (one << m) - one
        for p in range(k):
            sh = u64(8 * (k - 1 - p))
            for i in range(n):
                v = u64(words[i])
                if rot:
                    v = (((v >> m) & e_mask) << (m + one)) | (((v >> (width - one)) & one) << m) | (v & m_mask)
                out[p, i] = numba.uint8((v >> sh) & u64(0xFF))

    # Merge in cache-sized blocks: gather the planes into a uint64 scratch, un-permute, store.
    @numba.njit(cache=True, nogil=True)
    def merge(planes, out, k, rot, e_bits, m_bits):
        n = out.shape[0]
        width = u64(8 * k)
        m = u64(m_bits)
        one = u64(1)
        e_mask = (one << u64(e_bits)) - one
        m_mask = (one << m) - one
        block = 2048
        tmp = np.zeros(block, np.uint64)
        for s in range(0, n, block):
            e = min(n, s + block)
            length = e - s
            tmp[:length] = 0
            for p in range(k):
                sh = u64(8 * (k - 1 - p))
                row = planes[p, s:e]
                for j in range(length):
                    tmp[j] |= u64(row[j]) << sh
            if rot:
                for j in range(length):
                    v = tmp[j]
                    tmp[j] = (((v >> m) & one) << (width - one)) | (((v >> (m + one)) & e_mask) << m) | (v & m_mask)
            for j in range(length):
                out[s + j] = tmp[j]

    _kernels = (split, merge)
    return _kernels


def _params(dtype: DType, layout: str) -> tuple[int, int, int]:
    if layout == "planes-exp":
        if not dtype.is_float or dtype.itemsize < 2:
            raise ValueError(f"layout planes-exp needs a float dtype of 2+ bytes, not {dtype.name}")
        e, m = dtype.float_bits
        return 1, e, m
    if layout != "planes":
        raise ValueError(f"unknown layout {layout!r}")
    return 0, 0, 0


def _rotate_np(words: np.ndarray, dtype: DType, inverse: bool) -> np.ndarray:
    """numpy version of the planes-exp bit permutation (small tensors, and the test oracle)."""
    t = words.dtype.type
    width = dtype.itemsize * 8
    e, m = dtype.float_bits
    one = t(1)
    e_mask, m_mask = t((1 << e) - 1), t((1 << m) - 1)
    if not inverse:
        sign, exp = (words >> t(width - 1)) & one, (words >> t(m)) & e_mask
        return (exp << t(m + 1)) | (sign << t(m)) | (words & m_mask)
    exp, sign = (words >> t(m + 1)) & e_mask, (words >> t(m)) & one
    return (sign << t(width - 1)) | (exp << t(m)) | (words & m_mask)


def split(data: np.ndarray, dtype: DType, layout: str = "planes") -> np.ndarray:
    """Byte planes of ``data`` (any shape, raw bits) as a (k, n) uint8 array, MSB first."""
    k = dtype.itemsize
    words = np.ascontiguousarray(data).reshape(-1).view(dtype.bits_dtype)
    rot, e, m = _params(dtype, layout)
    out = np.empty((k, words.shape[0]), dtype=np.uint8)
    if k == 1:
        out[0] = words.view(np.uint8)
    elif words.shape[0] >= NUMBA_MIN_ELEMENTS:
        _load_kernels()[0](words, out, k, rot, e, m)
    else:
        if rot:
            words = _rotate_np(words, dtype, inverse=False)
        out[:] = words.view(np.uint8).reshape(-1, k).T[::-1]
    return out


def merge(planes: np.ndarray, dtype: DType, layout: str = "planes",
          out: np.ndarray | None = None) -> np.ndarray:
    """Inverse of `split`: a flat array of ``dtype.bits_dtype`` (written into ``out`` if given)."""
    k, n = planes.shape
    if out is None:
        out = np.empty(n, dtype=dtype.bits_dtype)
    rot, e, m = _params(dtype, layout)
    if k == 1:
        out.view(np.uint8)[:] = planes[0]
    elif n >= NUMBA_MIN_ELEMENTS:
        _load_kernels()[1](planes, out, k, rot, e, m)
    else:
        view = out.view(np.uint8).reshape(n, k)
        for p in range(k):
            view[:, k - 1 - p] = planes[p]
        if rot:
            out[:] = _rotate_np(out, dtype, inverse=True)
    return out
