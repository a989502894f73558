"""Numba kernel behind pas.chunking.cdc (imported only when a CDC cut is asked for).

Module level, not a closure, so Numba's on-disk cache (cache=True) works.
All hash arithmetic stays in uint64: mixing signed and unsigned integers
makes Numba fall back to floats.
"""
import numba
from numba import uint64


@numba.njit(cache=True, nogil=True)
def cdc_cuts(data, gear, min_size, normal, max_size, mask_s, mask_l, out):
    """Write the end offset of every chunk of ``data`` (uint8) to ``out``; return their count.

    FastCDC with normalized chunking: from byte ``min_size`` of a chunk on,
    ``fp = (fp << 1) + gear[byte]``; the chunk ends after the first byte
    where ``fp & mask_s == 0`` (below ``normal`` bytes) or ``fp & mask_l ==
    0`` (from ``normal`` on), and after ``max_size`` bytes at the latest.
    A remainder of at most ``min_size`` bytes is the last chunk.
    """
    n = data.size
    one = uint64(1)
    zero = uint64(0)
    start = 0
    k = 0
    while start < n:
        remaining = n - start
        if remaining <= min_size:
            end = n
        else:
            lim = min(max_size, remaining)
            norm = min(lim, normal)
            end = start + lim
            fp = zero
            i = start + min_size
            stop = start + norm
            found = False
            while i < stop:
                fp = (fp << one) + gear[data[i]]
                if (fp & mask_s) == zero:
                    found = True
                    break
                i += 1
            if not found:
                stop = start + lim
                while i < stop:
                    fp = (fp << one) + gear[data[i]]
                    if (fp & mask_l) == zero:
                        found = True
                        break
                    i += 1
            if found:
                end = i + 1
        out[k] = end
        k += 1
        start = end
    return k
