"""Content-defined chunking (FastCDC) for opaque files: tokenizers, configs, any side file.

Weight planes are cut at fixed offsets (see ``pas.chunking``); a side file
that is edited in place (a vocabulary with tokens added in the middle, a
config with one more key) shifts every byte after the edit, so fixed cuts
share nothing past it. Content-defined cuts depend only on the bytes just
before them and re-synchronise a few chunks after an edit.

Algorithm: FastCDC (Xia et al., USENIX ATC 2016) with normalized chunking.

- A gear hash ``fp = (fp << 1) + GEAR[byte]`` (64-bit, wrapping) is rolled
  over the chunk from byte ``min`` on; ``fp`` is reset to 0 at each chunk
  start. Bit 63 of ``fp`` depends on the last 64 bytes, so the masks test the
  *top* bits (as Xet does), never the low ones (bit 0 sees only one byte).
- With ``bits = log2(avg)``: before the normal point (``avg`` bytes from the
  chunk start) a cut needs the top ``bits + 2`` bits of ``fp`` to be zero
  (``MASK_S``, harder), from there on the top ``bits - 2`` bits (``MASK_L``,
  easier): FastCDC's normalization level 2, which narrows the size spread.
- The chunk ends *after* the byte at which the mask test succeeds; a chunk is
  never longer than ``max``; it is at least ``min + 1`` bytes long unless it
  is the last chunk of the data (which may be shorter).

Sizes: min/avg/max = 16 KiB / 64 KiB / 256 KiB by default. Xet's chunker
(64 KiB target, 8-128 KiB bounds) is the model; the min is doubled because
the first ``min`` bytes of a chunk are skipped without hashing (speed), and
the max is raised to 4x avg so that the max cap almost never forces a cut
(a forced cut is not content-defined and hurts re-synchronisation). With
normalization, ``avg`` is the normal point (where the mask switches), not
the exact mean: the mean chunk size on random data is 74 KiB (measured on
64 MiB; 5th/50th/95th percentiles 34/73/110 KiB, no chunk hit the max).

Gear table (frozen: changing it, the masks or the cut rule changes every
boundary and loses dedup against existing repositories): 256 64-bit words,
``GEAR[i]`` = the (i+1)-th output of SplitMix64 seeded with
``int.from_bytes(b"pas-cdc1", "big")``::

    state = (state + 0x9E3779B97F4A7C15) mod 2^64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) mod 2^64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) mod 2^64
    z = z ^ (z >> 31)

tests/test_cdc.py freezes a digest of the table and the cut offsets of a
seeded input, so any change fails CI.

The kernel is Numba (``@njit(cache=True, nogil=True)``, module level so the
on-disk cache works); Numba is imported only when the first cut is asked
for, not when this module is imported.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import Chunker

GEAR_SEED = int.from_bytes(b"pas-cdc1", "big")
NORMALIZATION = 2          # FastCDC normalization level: mask bits +-2 around log2(avg)

_M64 = (1 << 64) - 1


def _splitmix64(seed: int, n: int) -> list[int]:
    out, state = [], seed & _M64
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & _M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        out.append(z ^ (z >> 31))
    return out


#: The gear table (read-only). Part of the format: see the module docstring.
GEAR = np.array(_splitmix64(GEAR_SEED, 256), dtype=np.uint64)
GEAR.flags.writeable = False


def _top_mask(nbits: int) -> int:
    """A 64-bit mask of the top ``nbits`` bits."""
    return ((1 << nbits) - 1) << (64 - nbits)


_KERNEL = None


def _kernel():
    global _KERNEL
    if _KERNEL is None:
        from ._cdc_kernel import cdc_cuts
        _KERNEL = cdc_cuts
    return _KERNEL


class CDCChunker(Chunker):
    """FastCDC content-defined chunker. Cut a buffer with :meth:`cuts_of`."""

    chunker_id = "cdc"

    def __init__(self, min: int = 16 << 10, avg: int = 64 << 10, max: int = 256 << 10):
        min, avg, max = int(min), int(avg), int(max)
        if avg <= 0 or avg & (avg - 1):
            raise ValueError(f"cdc avg must be a power of two, not {avg}")
        bits = avg.bit_length() - 1
        if bits - NORMALIZATION < 1 or bits + NORMALIZATION > 63:
            raise ValueError(f"cdc avg {avg} out of range")
        if not 0 < min < avg < max:
            raise ValueError(f"cdc sizes must satisfy 0 < min < avg < max, got {min}/{avg}/{max}")
        self.min, self.avg, self.max = min, avg, max
        self.mask_s = np.uint64(_top_mask(bits + NORMALIZATION))
        self.mask_l = np.uint64(_top_mask(bits - NORMALIZATION))

    def cuts(self, nbytes: int, align: int = 1) -> list[tuple[int, int]]:
        raise NotImplementedError("content-defined cuts depend on the bytes: use cuts_of(data)")

    def cut_ends(self, data) -> np.ndarray:
        """End offsets (exclusive, increasing, last == len) of the chunks of ``data``'s bytes."""
        buf = _as_bytes(data)
        n = buf.size
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        out = np.empty(n // (self.min + 1) + 2, dtype=np.int64)
        k = _kernel()(buf, GEAR, self.min, self.avg, self.max, self.mask_s, self.mask_l, out)
        return out[:k]

    def cuts_of(self, data) -> list[tuple[int, int]]:
        ends = self.cut_ends(data)
        if ends.size == 0:
            return [(0, 0)]
        starts = np.concatenate(([0], ends[:-1]))
        return list(zip(starts.tolist(), (ends - starts).tolist()))

    def get_config(self) -> dict[str, Any]:
        return {"id": self.chunker_id, "min": self.min, "avg": self.avg, "max": self.max}


def _as_bytes(data) -> np.ndarray:
    """A 1-D contiguous uint8 view of ``data`` (ndarray of any dtype, bytes, memoryview)."""
    if isinstance(data, np.ndarray):
        arr = np.ascontiguousarray(data).reshape(-1)
        return arr.view(np.uint8)
    return np.frombuffer(data, dtype=np.uint8)
