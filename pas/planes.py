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

Kernels (pas/_plane_kernels.py) are Numba loops that permute and split in
one pass into a preallocated buffer, and merge back the same way; small
tensors take a numpy path that needs no Numba import.
"""
from __future__ import annotations

import contextlib
import functools
import sys

import numpy as np

from . import delta
from .dtypes import DType

LAYOUTS = ("planes", "planes-exp")

# Below this many elements numpy does the work: importing Numba and loading
# its kernels costs ~0.7-2 s per process (numba's own import pulls in
# scipy.linalg for its BLAS check, and the first kernel initialises its CPU
# target), while numpy runs these passes at ~450 MB/s against Numba's ~3 GB/s.
# So a tensor of NUMBA_MIN_ELEMENTS or more uses Numba, unless the whole call
# (an archive or a retrieve, which says so through `workload`) is smaller than
# NUMBA_WORTH_ELEMENTS: loading pays off only past a few hundred MB (measured on
# a 90 MB MiniLM, one process per call: `pas archive` 1.1-1.4 s on numpy,
# 1.8-2.7 s with Numba; `pas retrieve` 1.0-1.2 vs 1.8-2.0 s). The choice is made
# when a workload starts and holds to its end: a retrieve down a delta chain
# merges every level, and counting those passes as they came loaded Numba in
# the middle of a single `pas retrieve` (2.5 s for a version 3 levels deep,
# 0.67 s on numpy). A process that keeps working (a training loop, the
# benchmark, many versions of a small model) loads the kernels at the start of
# a workload once the work numpy did adds up to NUMBA_WORTH_ELEMENTS, each call
# counted NUMBA_CALL_ELEMENTS more (numpy's per-call overhead on small tensors).
NUMBA_MIN_ELEMENTS = 1 << 18
NUMBA_LOADED_MIN_ELEMENTS = 0
NUMBA_WORTH_ELEMENTS = 1 << 26
NUMBA_CALL_ELEMENTS = 1 << 12
_numpy_work = 0
_numba_decided: bool | None = None   # inside a `workload`: may its big tensors use Numba


def _kernels(k: int):
    from ._plane_kernels import KERNELS
    return KERNELS[k]


def _use_numba(n: int) -> bool:
    global _numpy_work
    if "pas._plane_kernels" in sys.modules:
        return n >= NUMBA_LOADED_MIN_ELEMENTS
    if n >= NUMBA_MIN_ELEMENTS and (_numba_decided is None or _numba_decided):
        return True
    _numpy_work += n + NUMBA_CALL_ELEMENTS
    return _numba_decided is None and _numpy_work >= NUMBA_WORTH_ELEMENTS


@contextlib.contextmanager
def workload(elements: int):
    """Declare that the calls inside will split or merge about ``elements``
    elements in all (an archive or a retrieve): unless Numba is already
    loaded, or this workload or the numpy work done so far reaches
    NUMBA_WORTH_ELEMENTS, numpy does all of it (see above)."""
    global _numba_decided
    before = _numba_decided
    if before is None:
        _numba_decided = int(elements) >= NUMBA_WORTH_ELEMENTS or _numpy_work >= NUMBA_WORTH_ELEMENTS
    try:
        yield
    finally:
        _numba_decided = before


def _params(dtype: DType, layout: str) -> tuple[int, int, int]:
    if layout == "planes":
        return 0, 0, 0
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


def split(data: np.ndarray, dtype: DType, layout: str = "planes",
          base: np.ndarray | None = None, op: str | None = None) -> np.ndarray:
    """Byte planes of ``data`` (any shape, raw bits) as a (k, n) uint8 array, MSB first.

    With ``base`` (same number of elements, raw bits) and ``op`` ("xor" or
    "sub"), the planes are those of the delta against ``base`` (pas.delta).
    """
    k = dtype.itemsize
    words = np.ascontiguousarray(data).reshape(-1).view(dtype.bits_dtype)
    rot, e, m = _params(dtype, layout)
    code = delta.op_code(op)
    basew = words if base is None else np.ascontiguousarray(base).reshape(-1).view(dtype.bits_dtype)
    if code and basew.shape != words.shape:
        raise ValueError("delta base must have as many elements as the tensor")
    out = np.empty((k, words.shape[0]), dtype=np.uint8)
    if _use_numba(words.shape[0]):
        _kernels(k)[0](words, basew, code, out, rot, e, m)
        return out
    if code:
        words = delta.encode(words, basew, op)
    view = words.view(np.uint8).reshape(-1, k)
    if rot and e == 8:
        # float32 and bfloat16: the permutation touches the top two bytes only
        # (sign, exponent | mantissa -> exponent, sign | mantissa), so it is
        # done on those two planes, as `merge` undoes it (measured on 22M
        # float32: 0.19-0.21 s for the split, against 0.33-0.37 s rotating the words).
        hi, lo = view[:, k - 1], view[:, k - 2]
        out[0] = (hi << np.uint8(1)) | (lo >> np.uint8(7))
        out[1] = (hi & np.uint8(0x80)) | (lo & np.uint8(0x7F))
        for p in range(2, k):
            out[p] = view[:, k - 1 - p]
        return out
    if rot:
        view = _rotate_np(words, dtype, inverse=False).view(np.uint8).reshape(-1, k)
    out[:] = view.T[::-1]
    return out


def merge(planes, dtype: DType, layout: str = "planes",
          out: np.ndarray | None = None, base: np.ndarray | None = None,
          op: str | None = None) -> np.ndarray:
    """Inverse of `split`: a flat array of ``dtype.bits_dtype`` (written into ``out`` if given).

    ``planes`` is a (k, n) uint8 array or a sequence of k 1-D uint8 arrays of
    equal length (e.g. the decoded chunks of one row, used in place). ``base``
    may be ``out`` itself: each element's base is read before it is written.
    """
    planes = tuple(planes)
    k, n = len(planes), (planes[0].shape[0] if planes else 0)
    if k != dtype.itemsize or any(p.shape != (n,) for p in planes):
        raise ValueError(f"{dtype.name} needs {dtype.itemsize} planes of equal length")
    if out is None:
        out = np.empty(n, dtype=dtype.bits_dtype)
    rot, e, m = _params(dtype, layout)
    code = delta.OPS[op] if op else 0
    basew = out if base is None else base.reshape(-1).view(dtype.bits_dtype)
    if code and basew.shape != (n,):
        raise ValueError("delta base must have as many elements as the tensor")
    in_place = False
    if code and np.may_share_memory(basew, out):
        in_place = basew.ctypes.data == out.ctypes.data
        if not in_place:
            basew = basew.copy()   # a partial overlap: never read a base element after writing it
    if _use_numba(n):
        if in_place:
            code += 2   # the kernels' in-place variants: see pas/_plane_kernels.py
        writable = [p.flags.writeable for p in planes]
        if any(writable) and not all(writable):  # one Numba type for the whole tuple
            planes = tuple(p.view() for p in planes)
            for p in planes:
                p.flags.writeable = False
        _kernels(k)[1](planes, basew, code, out, rot, e, m)
        return out
    # numpy: the planes go into a scratch word array (``out`` itself without a
    # delta), then the delta is applied into ``out``, reading each base word
    # before writing it.
    words = np.empty(n, dtype=dtype.bits_dtype) if code else out
    view = words.view(np.uint8).reshape(n, k)
    if rot and e == 8:
        # float32 and bfloat16: planes 0-1 are exponent | sign, mantissa; the
        # original top two bytes are sign, exponent | mantissa. Undoing the
        # permutation on those two bytes costs a fraction of a pass over the
        # words (measured on 12M float32: 180 -> 95 ms for the whole merge).
        p0, p1 = planes[0], planes[1]
        view[:, k - 1] = (p1 & np.uint8(0x80)) | (p0 >> np.uint8(1))
        view[:, k - 2] = ((p0 & np.uint8(1)) << np.uint8(7)) | (p1 & np.uint8(0x7F))
        for p in range(2, k):
            view[:, k - 1 - p] = planes[p]
    else:
        for p in range(k):
            view[:, k - 1 - p] = planes[p]
        if rot:
            words[:] = _rotate_np(words, dtype, inverse=True)
    if code:
        delta.decode(words, basew, op, out=out)
    return out


def _half(dtype: DType, k: int) -> int:
    """The first bit below the top ``k`` bytes of a word (the middle of what they leave open)."""
    if not 0 < k < dtype.itemsize:
        raise ValueError(f"a midpoint needs 1 to {dtype.itemsize - 1} known planes of {dtype.name}, not {k}")
    return 1 << (8 * (dtype.itemsize - k) - 1)


def midpoint(top, dtype: DType, layout: str = "planes", out: np.ndarray | None = None) -> np.ndarray:
    """Words rebuilt from their top k planes (1 <= k < itemsize), each missing
    low part set to the middle of its range: the first missing bit set, the
    rest clear, in the layout's bit order (then mapped back, like `merge`).

    ``top`` is a (k, n) uint8 array or a sequence of k 1-D uint8 arrays (the
    decoded chunks of one row, used in place). Written into ``out`` if given.
    (The planes-exp rule "sign unknown -> 0" is the caller's: pas.reader.midpoint.)
    """
    top = tuple(top)
    k, n = len(top), (top[0].shape[0] if top else 0)
    half = _half(dtype, k)
    if any(p.shape != (n,) for p in top):
        raise ValueError("planes must have equal length")
    if out is None:
        out = np.empty(n, dtype=dtype.bits_dtype)
    rot, e, m = _params(dtype, layout)
    if _use_numba(n):
        from ._plane_kernels import MIDPOINT, mid8
        kernel = MIDPOINT.get((dtype.itemsize, k))
        if kernel is not None:
            kernel(*top, out, half, rot, e, m)
        else:
            mid8(top, out, half, rot, e, m)
        return out
    if k <= 2:   # small: every case looked up in a table of 256 or 65,536 words
        table = _midpoint_table(dtype, layout, k)
        out[:] = table[top[0]] if k == 1 else table[(top[0].astype(np.intp) << 8) | top[1]]
        return out
    full = np.zeros((dtype.itemsize, n), np.uint8)
    full[:k] = top
    full[k] = 0x80
    return merge(full, dtype, layout, out=out)


def midpoint_words(words: np.ndarray, dtype: DType, layout: str, k: int,
                   out: np.ndarray | None = None) -> np.ndarray:
    """`midpoint` of the top k planes of whole words (flat ``dtype.bits_dtype``),
    without splitting them: ``out`` may be ``words`` itself. The layouts only
    permute bits, so in the word's own order the rule is one mask (the bits
    the top k planes hold) and one bit (the first missing one)."""
    half = _half(dtype, k)
    words = words.reshape(-1).view(dtype.bits_dtype)
    if out is None:
        out = np.empty_like(words)
    keep = ((1 << (8 * dtype.itemsize)) - 1) ^ ((1 << (8 * (dtype.itemsize - k))) - 1)
    masks = np.array([keep, half], dtype.bits_dtype)
    if _params(dtype, layout)[0]:
        masks = _rotate_np(masks, dtype, inverse=True)
    keep, half = masks[0], masks[1]
    if _use_numba(words.shape[0]):
        from ._plane_kernels import mask_or
        mask_or(words, out, keep, half)
        return out
    np.bitwise_and(words, keep, out=out)
    out |= half
    return out


@functools.lru_cache(maxsize=64)
def _midpoint_table(dtype: DType, layout: str, k: int) -> np.ndarray:
    """Midpoint words for every value of the top k planes (k = 1 or 2), indexed
    by the top bytes read as one big-endian number."""
    cases = np.arange(256 ** k, dtype=np.uint32)
    top = [((cases >> np.uint32(8 * (k - 1 - p))) & np.uint32(255)).astype(np.uint8) for p in range(k)]
    full = np.zeros((dtype.itemsize, cases.size), np.uint8)
    full[:k] = top
    full[k] = 0x80
    return merge(full, dtype, layout)
