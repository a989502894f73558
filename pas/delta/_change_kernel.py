"""The Numba kernel of `pas.delta.change` (module level, so its on-disk cache works)."""
from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def sums(va, vb, ba, bb):
    """(changed, nonfinite_changed, max_abs, sum a^2, sum b^2, sum (b-a)^2) over
    two flat tensors: ``va``/``vb`` their values, ``ba``/``bb`` their bit
    patterns. Changed = bit patterns differ; the sums and max_abs cover the
    elements finite on both sides, in float64."""
    changed = 0
    nonfinite = 0
    max_abs = 0.0
    sq_a = 0.0
    sq_b = 0.0
    sq_d = 0.0
    for i in range(va.shape[0]):
        x = np.float64(va[i])
        y = np.float64(vb[i])
        differ = ba[i] != bb[i]
        if differ:
            changed += 1
        if math.isfinite(x) and math.isfinite(y):
            sq_a += x * x
            sq_b += y * y
            if differ:
                d = y - x
                max_abs = max(max_abs, abs(d))
                sq_d += d * d
        elif differ:
            nonfinite += 1
    return changed, nonfinite, max_abs, sq_a, sq_b, sq_d
