"""The lossy float schemes: one small class each behind one interface.

A scheme turns a float tensor into a smaller *stored representation* (an
array of another dtype, same shape) plus a little side data (an exponent, a
coding table), and turns that back into floats of the original dtype:

    enc = scheme.encode(data, "F32")        # Encoded(stored, stored_dtype, side)
    back = scheme.decode(enc.stored, enc.side, "F32")
    err = measure(data, back, "F32")        # {"max_abs_error", "rel_l2_error"}

``data`` and ``back`` are raw tensor arrays as pas holds them (numpy float
arrays; BF16 as uint16 bit views). Decoding is deterministic (numpy casts,
power-of-two scaling, table lookups), so what a reader decodes is exactly
what the writer measured the error of.

| scheme | stored | side data | applies to |
|---|---|---|---|
| float16 | F16 (IEEE half, round to nearest even) | - | F32, F64 |
| bf16-trunc | BF16 (top 16 bits of the float32) | - | F32 |
| bf16-round | BF16 (round to nearest even) | - | F32 |
| fixed:K | I8 / I16 / I32 (K-bit two's complement q) | exponent E: value = q * 2**E | floats of >= K bits |
| quant-uniform:K | U8 codes | table: 2**K evenly spaced values, min..max | floats |
| quant-kmeans:K | U8 codes | table: up to 2**K values, 1-D k-means (Lloyd) | floats |

Special values: float16 and bf16 keep NaN as NaN (bf16 sets the quiet bit,
so a NaN whose payload sat in the low bits does not become infinity), keep
+-inf and -0.0. A finite value that would overflow to infinity, and any
NaN/inf under fixed point or quantisation (which cannot represent them),
make the scheme refuse the tensor (`Refused`): the caller keeps it exact.
Fixed point and quantisation turn -0.0 into +0.0 (error 0).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from .. import dtypes
from ..errors import BadInput, IntegrityError
from ..reader import float_values

FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
BF16_QUIET = 0x0040          # the top mantissa bit of a bfloat16 NaN
KMEANS_SAMPLE = 1 << 21      # k-means is fitted on at most this many elements (seeded sample)
KMEANS_ITERATIONS = 300


class Refused(Exception):
    """The scheme cannot represent this tensor (non-finite values, overflow, dtype): keep it exact."""


@dataclass
class Encoded:
    stored: np.ndarray           # same shape as the input; numpy dtype of ``stored_dtype``
    stored_dtype: str            # pas dtype name of the stored representation
    side: dict                   # JSON side data (exponent, table), recorded in the manifest entry


# ----------------------------------------------------------------- conversions
def values(data: np.ndarray, dtype: str) -> np.ndarray:
    """The float values of raw tensor data (BF16 bit views widened to float32)."""
    if dtype == "BF16":
        return float_values(np.ascontiguousarray(data).view("<u2"), dtypes.get("BF16"))
    return data


def bf16_bits(x32: np.ndarray, rounding: bool) -> np.ndarray:
    """float32 values -> bfloat16 bit patterns (uint16), truncating or rounding to nearest even.
    NaN stays NaN (quiet bit set), infinities and signed zeros stay."""
    bits = np.ascontiguousarray(x32, dtype="<f4").view("<u4")
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    if rounding:
        # Non-NaN patterns are at most 0xFF800000, so adding at most 0x8000 cannot wrap.
        out = (np.where(nan, 0, bits) + (0x7FFF + ((bits >> 16) & 1))) >> 16
    else:
        out = bits >> 16
    out = out.astype("<u2")
    if nan.any():
        out[nan] = (bits[nan] >> 16).astype("<u2") | BF16_QUIET
    return out


def from_values(v: np.ndarray, dtype: str) -> np.ndarray:
    """Float values -> raw data of ``dtype`` (one rounding to nearest even; BF16 via float32)."""
    if dtype == "BF16":
        return bf16_bits(np.asarray(v, dtype="<f4"), rounding=True)
    return np.asarray(v).astype(dtypes.get(dtype).np_dtype)


def measure(data: np.ndarray, back: np.ndarray, dtype: str) -> dict:
    """Max abs error and relative L2 error of ``back`` against ``data`` (float64).

    NaN must decode to NaN and +-inf to the same infinity, else `Refused`; a
    finite value that decoded to a non-finite one (overflow) is `Refused` too.
    Errors are over the finite elements; relative L2 is ||back - data|| / ||data||."""
    with np.errstate(invalid="ignore"):     # signalling NaNs raise "invalid" when widened
        a = values(data, dtype).astype(np.float64).reshape(-1)
        b = values(back, dtype).astype(np.float64).reshape(-1)
    fin = np.isfinite(a)
    if not fin.all():
        na, nb = a[~fin], b[~fin]
        ok = (np.isnan(na) & np.isnan(nb)) | (na == nb)
        if not ok.all():
            raise Refused("a NaN or infinity did not survive")
        a, b = a[fin], b[fin]
    if not np.isfinite(b).all():
        raise Refused("values overflow the scheme's range")
    d = np.abs(b - a)
    sq = float(np.dot(d, d))
    norm = float(np.dot(a, a))
    return {"max_abs_error": float(d.max()) if d.size else 0.0,
            "rel_l2_error": (math.sqrt(sq / norm) if norm > 0 else (0.0 if sq == 0 else math.inf)),
            "sq_error": sq, "sq_norm": norm}


# --------------------------------------------------------------------- schemes
class Scheme:
    """One lossy representation. Subclasses set ``kind`` and implement the three methods."""

    kind = ""

    @property
    def name(self) -> str:
        """Canonical name, as written on the command line and in manifests."""
        return self.kind

    @property
    def params(self) -> dict:
        return {}

    def check(self, dtype: str) -> None:
        """Raise `Refused` unless the scheme applies to tensors of ``dtype``."""
        raise NotImplementedError

    def stored_dtype(self, dtype: str) -> str:
        raise NotImplementedError

    def encode(self, data: np.ndarray, dtype: str) -> Encoded:
        raise NotImplementedError

    def decode(self, stored: np.ndarray, side: dict, dtype: str) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<scheme {self.name}>"

    def __eq__(self, other) -> bool:
        return isinstance(other, Scheme) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


def _require(dtype: str, allowed: tuple[str, ...], scheme: str) -> None:
    if dtype not in allowed:
        raise Refused(f"{scheme} does not apply to {dtype} tensors (only {', '.join(allowed)})")


def _finite(x: np.ndarray, scheme: str) -> None:
    if not np.isfinite(x).all():
        raise Refused(f"{scheme} cannot represent NaN or infinity")


class Float16(Scheme):
    kind = "float16"

    def check(self, dtype):
        _require(dtype, ("F32", "F64"), self.name)

    def stored_dtype(self, dtype):
        return "F16"

    def encode(self, data, dtype):
        self.check(dtype)
        with np.errstate(over="ignore", invalid="ignore"):   # overflow is found by `measure`: kept exact
            return Encoded(np.asarray(data).astype("<f2"), "F16", {})

    def decode(self, stored, side, dtype):
        return np.asarray(stored).astype(dtypes.get(dtype).np_dtype)


class BFloat16(Scheme):
    def __init__(self, rounding: bool):
        self.rounding = rounding
        self.kind = "bf16-round" if rounding else "bf16-trunc"

    def check(self, dtype):
        _require(dtype, ("F32",), self.name)

    def stored_dtype(self, dtype):
        return "BF16"

    def encode(self, data, dtype):
        self.check(dtype)
        return Encoded(bf16_bits(data, self.rounding), "BF16", {})

    def decode(self, stored, side, dtype):
        return float_values(np.asarray(stored).view("<u2"), dtypes.get("BF16"))


class FixedPoint(Scheme):
    """One exponent per tensor: value = q * 2**E, q a K-bit signed integer, |q| <= 2**(K-1) - 1.
    E is the smallest exponent that fits the tensor's largest magnitude; q = round-to-even(x / 2**E),
    so the error is at most 2**(E-1), half a step."""

    kind = "fixed"

    def __init__(self, bits: int):
        self.bits = bits

    @property
    def name(self):
        return f"fixed:{self.bits}"

    @property
    def params(self):
        return {"bits": self.bits}

    def check(self, dtype):
        _require(dtype, FLOAT_DTYPES, self.name)
        if self.bits > 8 * dtypes.get(dtype).itemsize:
            raise Refused(f"{self.name} has more bits than {dtype}")

    def stored_dtype(self, dtype):
        return "I8" if self.bits <= 8 else "I16" if self.bits <= 16 else "I32"

    def exponent(self, x: np.ndarray) -> int:
        qmax = (1 << (self.bits - 1)) - 1
        m = float(np.abs(x).max()) if x.size else 0.0
        if m == 0.0:
            return 0
        e = math.ceil(math.log2(m / qmax))
        while np.rint(math.ldexp(m, -e)) > qmax:      # log2 rounding: never let q overflow
            e += 1
        while e > -1100 and np.rint(math.ldexp(m, -(e - 1))) <= qmax:
            e -= 1
        return e

    def encode(self, data, dtype):
        self.check(dtype)
        x = values(data, dtype).astype(np.float64)
        _finite(x, self.name)
        e = self.exponent(x)
        q = np.rint(np.ldexp(x, -e)).astype(dtypes.get(self.stored_dtype(dtype)).np_dtype)
        return Encoded(q, self.stored_dtype(dtype), {"exponent": e})

    def decode(self, stored, side, dtype):
        e = side.get("exponent")
        if type(e) is not int or not -1200 < e < 1200:
            raise IntegrityError(f"{self.name}: exponent {e!r} is malformed")
        return from_values(np.ldexp(np.asarray(stored).astype(np.float64), e), dtype)


class Quantized(Scheme):
    """K-bit codes (K <= 8, one byte each) into a coding table of at most 2**K values of
    the tensor's own dtype; each element gets the code of its nearest table value.
    ``uniform``: 2**K evenly spaced values from min to max (error <= half a step).
    ``kmeans``: the table minimising squared error, by Lloyd's algorithm in 1-D, started
    from evenly spaced values, on a seeded sample of at most 2**21 elements."""

    def __init__(self, method: str, bits: int, seed: int = 0):
        self.method, self.bits, self.seed = method, bits, seed
        self.kind = f"quant-{method}"

    @property
    def name(self):
        return f"quant-{self.method}:{self.bits}"

    @property
    def params(self):
        return {"bits": self.bits, **({"seed": self.seed, "sample": KMEANS_SAMPLE} if self.method == "kmeans" else {})}

    def check(self, dtype):
        _require(dtype, FLOAT_DTYPES, self.name)

    def stored_dtype(self, dtype):
        return "U8"

    def centers(self, x: np.ndarray) -> np.ndarray:
        """Table values (float64, sorted) for the finite values ``x``."""
        levels = 1 << self.bits
        lo, hi = float(x.min()), float(x.max())
        if lo == hi or levels == 1:
            return np.array([lo if levels > 1 else float(x.mean())])
        if self.method == "uniform":
            return lo + (hi - lo) * (np.arange(levels) / (levels - 1))
        return kmeans_1d(x, levels, self.seed)

    def encode(self, data, dtype):
        self.check(dtype)
        v = values(data, dtype)
        x = v.astype(np.float64).reshape(-1)
        _finite(x, self.name)
        if x.size == 0:
            table = from_values(np.zeros(1), dtype)
        else:
            table = from_values(np.unique(self.centers(x)), dtype)
            # Rounding to the dtype may merge neighbours: one entry each, sorted by value.
            tv = values(table, dtype).astype(np.float64)
            _, first = np.unique(tv, return_index=True)
            table = table[np.sort(first)]
        codes = nearest(x, values(table, dtype).astype(np.float64)).reshape(np.shape(data))
        side = {"table": np.ascontiguousarray(table).view(np.uint8).tobytes().hex()}
        return Encoded(codes, "U8", side)

    def table(self, side: dict, dtype: str) -> np.ndarray:
        text = side.get("table")
        dt = dtypes.get(dtype)
        try:
            raw = bytes.fromhex(text)
        except (TypeError, ValueError):
            raise IntegrityError(f"{self.name}: coding table is malformed") from None
        if not raw or len(raw) % dt.itemsize or len(raw) // dt.itemsize > (1 << self.bits):
            raise IntegrityError(f"{self.name}: coding table has a wrong length")
        return np.frombuffer(raw, dt.np_dtype)

    def decode(self, stored, side, dtype):
        table = self.table(side, dtype)
        codes = np.asarray(stored)
        if codes.size and int(codes.max()) >= table.shape[0]:
            raise IntegrityError(f"{self.name}: a code is outside its coding table")
        return table[codes]


def nearest(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Index (uint8) of the nearest value of the sorted ``table`` for every element of ``x``."""
    if table.shape[0] == 1:
        return np.zeros(x.shape, np.uint8)
    mids = (table[:-1] + table[1:]) / 2
    codes = np.searchsorted(mids, x, side="left")
    # A midpoint computed in float64 can round: settle ties and near-ties exactly.
    lower = np.maximum(codes - 1, 0)
    closer = np.abs(x - table[lower]) < np.abs(x - table[codes])
    codes = np.where(closer, lower, codes)
    upper = np.minimum(codes + 1, table.shape[0] - 1)
    closer = np.abs(x - table[upper]) < np.abs(x - table[codes])
    return np.where(closer, upper, codes).astype(np.uint8)


def kmeans_1d(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Lloyd's algorithm in one dimension on sorted data with prefix sums: each
    iteration costs O(k log n). Deterministic: a seeded sample, linear start."""
    if x.shape[0] > KMEANS_SAMPLE:
        x = x[np.random.default_rng(seed).integers(0, x.shape[0], KMEANS_SAMPLE)]
    s = np.sort(x)
    n = s.shape[0]
    csum = np.concatenate(([0.0], np.cumsum(s)))
    # Linear start (min..max), as Deep Compression found best for weights: the tails
    # keep table values of their own (a quantile start leaves them far from any).
    cent = np.unique(np.linspace(s[0], s[-1], k))
    bounds = None
    for _ in range(KMEANS_ITERATIONS):
        mids = (cent[:-1] + cent[1:]) / 2
        b = np.concatenate(([0], np.searchsorted(s, mids, side="right"), [n]))
        if bounds is not None and np.array_equal(b, bounds):
            break
        bounds = b
        counts = np.diff(b)
        sums = csum[b[1:]] - csum[b[:-1]]
        cent = np.sort(np.where(counts > 0, sums / np.maximum(counts, 1), cent))
    return cent


# --------------------------------------------------------------------- grammar
SCHEME_NAMES = ("float16", "bf16-trunc", "bf16-round", "fixed:K", "quant-uniform:K", "quant-kmeans:K", "exact")
_ALIASES = {"float16": "float16", "fp16": "float16", "f16": "float16", "half": "float16",
            "bf16-trunc": "bf16-trunc", "bfloat16-trunc": "bf16-trunc",
            "bf16-round": "bf16-round", "bfloat16-round": "bf16-round", "bf16": "bf16-round", "bfloat16": "bf16-round"}


def parse_scheme(text: str) -> Scheme | None:
    """A scheme from its name (`SCHEME_NAMES`; None for ``exact``), else `BadInput`."""
    if not isinstance(text, str):
        raise BadInput(f"a scheme name must be a string, got {type(text).__name__}")
    t = text.strip().lower()
    if t == "exact":
        return None
    if t in _ALIASES:
        return Float16() if _ALIASES[t] == "float16" else BFloat16(_ALIASES[t] == "bf16-round")
    m = re.fullmatch(r"fixed:?(\d{1,3})", t)
    if m:
        k = int(m.group(1))
        if not 2 <= k <= 32:
            raise BadInput(f"scheme {text!r}: fixed point takes 2 to 32 bits")
        return FixedPoint(k)
    if t in ("fixed", "quant", "quant-uniform", "quant-kmeans") or t.startswith("quant:"):
        hint = "fixed:16" if t == "fixed" else "quant-uniform:8 or quant-kmeans:4"
        if t in ("quant-uniform", "quant-kmeans"):
            return Quantized(t.split("-")[1], 8)
        raise BadInput(f"scheme {text!r} needs a method and/or bit count, e.g. {hint}")
    m = re.fullmatch(r"quant-(uniform|kmeans):(\d{1,3})", t)
    if m:
        k = int(m.group(2))
        if not 1 <= k <= 8:
            raise BadInput(f"scheme {text!r}: quantisation takes 1 to 8 bits")
        return Quantized(m.group(1), k)
    raise BadInput(f"unknown scheme {text[:80]!r} (known: {', '.join(SCHEME_NAMES)}; K = bits, "
                   f"e.g. fixed:16, quant-kmeans:4)")
