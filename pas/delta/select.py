"""Choosing how to store a tensor: whole or as a delta, against which base, with which operator.

The choice is made per tensor from the data: a sample of the tensor is
split into byte planes under every option (whole in each plane layout, XOR
and integer difference against each candidate base), and the option whose
planes have the smallest order-0 entropy wins. zstd on weight planes sits
within a few percent of that floor (compression-facts.md §3), so the
estimate ranks options as the real coder would, at a fraction of the cost.
A delta must beat whole storage by `MIN_GAIN` and by `MIN_SAVING` bytes to
be chosen: it costs a base decode on every read.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from .. import planes
from ..dtypes import DType
from . import aligned_base

#: Elements sampled per option.
SAMPLE = 1 << 14
#: Tensors with fewer elements are not considered for the planes-exp layout.
PERMUTE_MIN_ELEMENTS = 1 << 14
#: A delta is used only if its estimate is below this share of whole storage...
MIN_GAIN = 0.97
#: ... and saves at least this many bytes: every read of a delta also decodes
#: its base, a fixed cost (a record, a merge) that a few saved bytes on a
#: bias or a norm never repay; those stay whole and out of every chain.
MIN_SAVING = 4096


@dataclass
class Choice:
    layout: str
    op: str | None = None          # None: whole
    base: object = None            # caller's handle on the chosen base (e.g. a TensorEntry)
    estimate: float = 0.0          # estimated stored bytes of the whole tensor
    whole_estimate: float = 0.0


def plane_entropy_bytes(plane_sample: np.ndarray) -> float:
    """Sum over the sampled planes of their order-0 entropy, in bytes (a constant plane costs ~0)."""
    k, n = plane_sample.shape
    if n == 0:
        return 0.0
    if "pas._plane_kernels" in sys.modules:   # loaded by any big tensor: ~8x faster than bincount
        # An import statement, not sys.modules[...]: another thread may still be
        # compiling the module, and the import waits for it to finish.
        from .._plane_kernels import plane_histograms
        counts = np.zeros((k, 256), np.int64)
        plane_histograms(plane_sample, counts)
    else:
        # One histogram for all planes: plane p's byte b counts in bin 256*p + b.
        offsets = (np.arange(k, dtype=np.int64) * 256)[:, None]
        counts = np.bincount((plane_sample + offsets).ravel(), minlength=256 * k)
    counts = counts[counts > 0]
    return float(-(counts * np.log2(counts / n)).sum()) / 8


def sample_index(n: int) -> slice:
    return slice(None, None, max(1, n // SAMPLE))


def sample_windows(n: int, count: int = 4) -> list[tuple[int, int]]:
    """Element ranges [a, b) spread over a tensor of ``n`` elements, SAMPLE in all:
    the sample of a tensor too big to read whole (base ranges are read, not strided)."""
    width = max(1, SAMPLE // count)
    if n <= SAMPLE:
        return [(0, n)]
    return [(a, a + width) for a in (i * (n - width) // (count - 1) for i in range(count))]


def choose(words: np.ndarray, dt: DType, candidates: list[tuple[object, np.ndarray, str]],
           ops: tuple[str, ...] = ("xor", "sub"), layouts: tuple[str, ...] = planes.LAYOUTS,
           n_total: int | None = None) -> Choice:
    """Pick the cheapest encoding of ``words`` (flat bits).

    ``candidates`` are ``(handle, base_words, base_layout)``; base words may
    be shorter or longer than ``words`` (aligned by `aligned_base`). XOR
    deltas keep the base's layout, so a K-plane read can XOR planes down the
    chain; difference deltas use it too (one layout per chain). With
    ``n_total``, ``words`` and the base words are already a sample (aligned
    element for element) of a tensor of ``n_total`` elements.
    """
    n = words.shape[0]
    if n == 0:
        return Choice("planes")
    idx = sample_index(n) if n_total is None else slice(None)
    n_total = n if n_total is None else n_total
    sample = words[idx]
    # The planes-exp permutation costs a pass on every read; on small tensors
    # it saves a few bytes at most, so they keep the plain layout.
    if not (dt.is_float and dt.itemsize >= 2 and n_total >= PERMUTE_MIN_ELEMENTS):
        layouts = ("planes",)
    if len(layouts) == 1 and not candidates:
        return Choice(layouts[0])   # nothing to choose: the estimate would only cost time
    whole = {lay: plane_entropy_bytes(planes.split(sample, dt, lay)) for lay in layouts}
    best_layout = min(whole, key=whole.get)
    scale = n_total / sample.shape[0]
    best = Choice(best_layout, estimate=whole[best_layout] * scale,
                  whole_estimate=whole[best_layout] * scale)
    for handle, base_words, base_layout in candidates:
        base_sample = aligned_base(base_words, n)[idx]
        for op in ops:
            est = plane_entropy_bytes(planes.split(sample, dt, base_layout, base=base_sample, op=op)) * scale
            if (est < best.estimate and est < MIN_GAIN * best.whole_estimate
                    and best.whole_estimate - est >= MIN_SAVING):
                best = Choice(base_layout, op, handle, est, best.whole_estimate)
    return best


def similarity(a: np.ndarray, b: np.ndarray, dt: DType) -> float:
    """Share of sampled elements whose sign and exponent (floats; top byte otherwise) agree.

    A fine-tune keeps ~95% of them; an unrelated tensor of the same
    distribution ~15%, so 0.5 separates "same weights, moved" from "another layer".
    """
    n = min(a.shape[0], b.shape[0])
    if n == 0:
        return 0.0
    idx = slice(0, n, max(1, n // 4096))
    kept = 1 + dt.float_bits[0] if dt.is_float else 8
    shift = max(0, dt.itemsize * 8 - kept)
    hi_a = a[idx] >> np.array(shift, a.dtype)
    hi_b = b[idx] >> np.array(shift, b.dtype)
    return float(np.mean(hi_a == hi_b))
