"""How much a tensor changed from one version to another: the statistics `pas diff` reports.

For two tensors a (before) and b (after) of one dtype and shape:
  * ``changed``: elements whose *bit patterns* differ (so -0.0 vs 0.0 is a
    change, and a NaN equal to itself bit for bit is not);
  * ``max_abs``, and the sums of a^2, b^2 and (b - a)^2, over the elements
    finite on both sides (float64 arithmetic), from which ``rel_l2`` =
    ||b - a||2 / ||a||2 (null when ||a|| = 0 and b != a);
  * ``nonfinite``: changed elements where either side is NaN or inf.

The writer measures them while it archives a tensor against its parent's
same-named tensor (it holds both anyway) and keeps them in the new tensor's
record (``change``, docs/format.md §4), so diffing a version against its
parent reads two records instead of decoding two tensors. Both sums of
squares are kept, so the record answers the diff in either direction.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np

from .. import dtypes, planes
from ..errors import BadInput
from ..reader import float_values

#: Elements per slab of the numpy sums: its float64 temporaries (512 KiB
#: each) stay in cache across the slab's passes (12M float32: 52 ms against
#: 120 ms with slabs of 1M elements).
SLAB = 1 << 16


@dataclass(frozen=True)
class Change:
    """The change statistics of one tensor from a to b (see the module doc)."""
    elements: int
    changed: int
    nonfinite: int
    max_abs: float
    sq_a: float
    sq_b: float
    sq_d: float

    def reversed(self) -> Change:
        """The same change seen from b to a."""
        return Change(self.elements, self.changed, self.nonfinite, self.max_abs, self.sq_b, self.sq_a, self.sq_d)

    def __add__(self, other: Change) -> Change:
        """Two disjoint parts of one tensor together (slabs of a big tensor)."""
        return Change(self.elements + other.elements, self.changed + other.changed, self.nonfinite + other.nonfinite,
                      max(self.max_abs, other.max_abs), self.sq_a + other.sq_a, self.sq_b + other.sq_b,
                      self.sq_d + other.sq_d)

    def stats(self) -> dict:
        """The figures `pas diff` prints for a changed tensor."""
        if self.sq_d == 0.0:
            rel = 0.0
        elif self.sq_a == 0.0:
            rel = None
        else:
            rel = math.sqrt(self.sq_d) / math.sqrt(self.sq_a)
            rel = rel if math.isfinite(rel) else None
        n = self.elements
        return {"elements": n, "changed_elements": self.changed, "changed_fraction": self.changed / n if n else 0.0,
                "max_abs": self.max_abs, "rel_l2": rel, "nonfinite_changed": self.nonfinite}

    # The record form: the sums as measured (JSON floats round-trip exactly),
    # named against the tensor they were measured from.
    _FIELDS = ("changed", "nonfinite", "max_abs", "sq_a", "sq_b", "sq_d")

    def to_record(self, vs: bytes) -> dict | None:
        """The ``change`` field of b's tensor record (None when a sum overflowed: not kept)."""
        floats = (self.max_abs, self.sq_a, self.sq_b, self.sq_d)
        if not all(math.isfinite(x) for x in floats):
            return None
        return {"vs": vs.hex(), **{f: getattr(self, f) for f in self._FIELDS}}

    @classmethod
    def from_record(cls, field, elements: int) -> tuple[bytes, Change] | None:
        """(address of a, change) from a record's ``change`` field; None when it
        is absent or malformed (the diff then measures the tensors instead)."""
        try:
            vs = bytes.fromhex(field["vs"])
            changed, nonfinite = int(field["changed"]), int(field["nonfinite"])
            floats = [float(field[f]) for f in cls._FIELDS[2:]]
        except (TypeError, KeyError, ValueError):
            return None
        if not (0 <= nonfinite <= changed <= elements) or not all(math.isfinite(x) and x >= 0 for x in floats):
            return None
        return vs, cls(elements, changed, nonfinite, *floats)


def _f8_table(exp_bits: int, man_bits: int, fn: bool) -> np.ndarray:
    """float64 value of each of the 256 bit patterns of a float8 format."""
    bias = (1 << (exp_bits - 1)) - 1
    out = np.empty(256, np.float64)
    for b in range(256):
        s = -1.0 if b >> 7 else 1.0
        e = (b >> man_bits) & ((1 << exp_bits) - 1)
        f = b & ((1 << man_bits) - 1)
        top = (1 << exp_bits) - 1
        if fn and e == top and f == (1 << man_bits) - 1:       # E4M3fn: only NaN, no inf
            out[b] = math.nan
        elif not fn and e == top:                              # E5M2: IEEE inf / NaN
            out[b] = s * math.inf if f == 0 else math.nan
        elif e == 0:
            out[b] = s * f / (1 << man_bits) * 2.0 ** (1 - bias)
        else:
            out[b] = s * (1 + f / (1 << man_bits)) * 2.0 ** (e - bias)
    return out


_F8 = {"F8_E4M3": lambda: _f8_table(4, 3, True), "F8_E5M2": lambda: _f8_table(5, 2, False)}


def _values(words: np.ndarray, dt: dtypes.DType) -> np.ndarray:
    """Element values in a dtype the kernel computes with, exactly: BF16/F16
    widened to float32, F8 through its table, the rest as they are."""
    if dt.name == "BF16":
        return float_values(words, dt)
    if dt.name == "F16":
        return words.view(np.float16).astype(np.float32)
    if dt.name in _F8:
        return _F8[dt.name]()[words]
    return words.view(dt.np_dtype)


def _kernel(n: int):
    """The Numba kernel (one pass over both tensors, no temporaries) once Numba is
    loaded or the tensors are big enough to pay for loading it (~1-2 s a process,
    the rule of `pas.planes`); else the numpy version, slab by slab (five passes
    and as many float64 temporaries: ~4x slower per element, no start-up)."""
    if "numba" in sys.modules or n >= planes.NUMBA_WORTH_ELEMENTS:
        from ._change_kernel import sums
        return sums
    return numpy_sums


def measure(a_words: np.ndarray, b_words: np.ndarray, dtype: str) -> Change:
    """The change from a to b, given as flat unsigned views (``DType.bits_dtype``) of equal length."""
    dt = dtypes.get(dtype)
    if a_words.shape != b_words.shape:
        raise BadInput(f"cannot compare {a_words.shape[0]} elements with {b_words.shape[0]}")
    sums = _kernel(a_words.shape[0])(_values(a_words, dt), _values(b_words, dt), a_words, b_words)
    changed, nonfinite, max_abs, sq_a, sq_b, sq_d = sums
    return Change(int(a_words.shape[0]), int(changed), int(nonfinite), float(max_abs),
                  float(sq_a), float(sq_b), float(sq_d))


def tensor_stats(a: np.ndarray, b: np.ndarray, dtype: str) -> dict:
    """Change statistics of two arrays of one dtype (pas's name) and shape (see the module doc)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        raise BadInput(f"cannot compare arrays of {a.dtype}{a.shape} and {b.dtype}{b.shape}")
    bits = dtypes.get(dtype).bits_dtype
    flat = lambda x: np.ascontiguousarray(x).reshape(-1).view(bits)
    return measure(flat(a), flat(b), dtype).stats()


def numpy_sums(va, vb, ba, bb):
    """`pas.delta._change_kernel.sums` in numpy, SLAB elements at a time."""
    with np.errstate(invalid="ignore", over="ignore"):    # inf - inf and the like: masked out below
        return _numpy_slabs(va, vb, ba, bb)


def _sq(v: np.ndarray) -> float:
    """Sum of squares without BLAS: its threads fight the pool's, which runs
    these statistics two tensors at a time (8 tensors of 2.8M: 0.25 s through
    np.dot on two threads, 0.09 s this way)."""
    return float(np.einsum("i,i->", v, v))


def _numpy_slabs(va, vb, ba, bb):
    changed = nonfinite = 0
    max_abs = sq_a = sq_b = sq_d = 0.0
    # One set of float64 buffers for every slab: a fresh temporary per slab is
    # a fresh mapping (glibc maps blocks this big), paid in page faults.
    bufs = np.empty((3, min(SLAB, va.shape[0])), np.float64)
    for i in range(0, va.shape[0], SLAB):
        m = min(SLAB, va.shape[0] - i)
        x, y, d = bufs[0, :m], bufs[1, :m], bufs[2, :m]
        np.copyto(x, va[i:i + m])
        np.copyto(y, vb[i:i + m])
        differ = ba[i:i + m] != bb[i:i + m]
        changed += int(np.count_nonzero(differ))
        np.subtract(y, x, out=d)   # exact for inputs of 32 bits or less; 0 where the bits are equal and finite
        slab = _sq(x), _sq(y), _sq(d)
        if all(np.isfinite(s) for s in slab):   # all finite: the common case, no masks
            sq_a, sq_b, sq_d = sq_a + slab[0], sq_b + slab[1], sq_d + slab[2]
            if d.size:
                max_abs = max(max_abs, float(d.max()), -float(d.min()))   # |d| without a temporary
            continue
        finite = np.isfinite(x) & np.isfinite(y)
        nonfinite += int(np.count_nonzero(differ & ~finite))
        sq_a += _sq(x[finite])
        sq_b += _sq(y[finite])
        df = d[finite & differ]
        if df.size:
            max_abs = max(max_abs, float(np.abs(df).max()))
            sq_d += _sq(df)
    return changed, nonfinite, max_abs, sq_a, sq_b, sq_d
