"""Numba kernels behind pas.planes (imported only for tensors big enough to pay for Numba).

Kept at module level so Numba's on-disk cache (cache=True) works: closures
are recompiled in every process. One kernel per element width with the
planes unrolled, which LLVM vectorises (float32: 7-8 GB/s split and merge,
3-4 GB/s with the planes-exp permutation, measured).

merge kernels take the planes as a tuple of 1-D arrays, so the decoded
chunks of one row of the tensor are merged where they lie, without a copy.

Every kernel fuses the delta against a base (``op``: 0 none, 1 XOR, 2
integer difference, zigzag-coded) with the split, and its inverse with the
merge, so a delta costs no extra pass over memory.

All arithmetic stays in the word's unsigned type: mixing signed and
unsigned integers makes Numba fall back to floats.
"""
import numba
from numba import uint8, uint16, uint32, uint64


@numba.njit(cache=True, nogil=True, inline="always")
def _to_exp_first(v, e_mask, m, m_mask, top, one):
    return (((v >> m) & e_mask) << (m + one)) | (((v >> top) & one) << m) | (v & m_mask)


@numba.njit(cache=True, nogil=True, inline="always")
def _from_exp_first(v, e_mask, m, m_mask, top, one):
    return (((v >> m) & one) << top) | (((v >> (m + one)) & e_mask) << m) | (v & m_mask)


# The delta is computed in uint64 and masked to the word's width: Numba
# promotes narrower unsigned arithmetic, so wrap-around must be explicit.
@numba.njit(cache=True, nogil=True, inline="always")
def _delta(v, b, op, width):
    v, b = uint64(v), uint64(b)
    if op == 0:
        return v
    if op == 1:
        return v ^ b
    mask = uint64(0xFFFFFFFFFFFFFFFF) >> uint64(64 - width)
    d = (v - b) & mask                                   # modular: exact for every bit pattern
    sign = d >> uint64(width - 1)
    return ((d << uint64(1)) ^ (uint64(0) - sign)) & mask  # zigzag: small |d| -> small code


@numba.njit(cache=True, nogil=True, inline="always")
def _unsub(v, b, width):
    v, b = uint64(v), uint64(b)
    mask = uint64(0xFFFFFFFFFFFFFFFF) >> uint64(64 - width)
    d = (v >> uint64(1)) ^ ((uint64(0) - (v & uint64(1))) & mask)
    return (b + d) & mask


# One element's word from its planes (and back out of the planes-exp order):
# inlined into every merge loop below, so each loop still compiles to one
# vectorisable body.
@numba.njit(cache=True, nogil=True, inline="always")
def _word2(p0, p1, i, rot, e_mask, m, m_mask, top, one):
    v = (uint16(p0[i]) << uint16(8)) | uint16(p1[i])
    if rot:
        v = _from_exp_first(v, e_mask, m, m_mask, top, one)
    return v


@numba.njit(cache=True, nogil=True, inline="always")
def _word4(p0, p1, p2, p3, i, rot, e_mask, m, m_mask, top, one):
    v = ((uint32(p0[i]) << uint32(24)) | (uint32(p1[i]) << uint32(16))
         | (uint32(p2[i]) << uint32(8)) | uint32(p3[i]))
    if rot:
        v = _from_exp_first(v, e_mask, m, m_mask, top, one)
    return v


@numba.njit(cache=True, nogil=True, inline="always")
def _word8(planes, i, rot, e_mask, m, m_mask, top, one):
    v = uint64(0)
    for p in range(8):
        v = (v << uint64(8)) | uint64(planes[p][i])
    if rot:
        v = _from_exp_first(v, e_mask, m, m_mask, top, one)
    return v


# Merge loops are written once per operator: a loop that never reads the base
# (op 0) stays vectorisable even when the caller passes `out` as the base,
# and a per-element operator branch would keep LLVM from vectorising the
# planes-exp permutation (measured: 0.5 vs 3 GB/s). Ops 3 and 4 are XOR and
# difference with the base already in `out` (chains decoded in place): read
# through a second pointer to the same memory, LLVM's alias check fails and
# the loop runs scalar (measured 1.3 vs 5.5 GB/s).


@numba.njit(cache=True, nogil=True)
def split2(words, base, op, out, rot, e_bits, m_bits):
    one, top, m = uint16(1), uint16(15), uint16(m_bits)
    e_mask, m_mask = uint16((1 << e_bits) - 1), uint16((1 << m_bits) - 1)
    p0, p1 = out[0], out[1]
    for i in range(words.shape[0]):
        v = uint16(_delta(words[i], base[i], op, 16))   # back to 16 bits: the permutation vectorises
        if rot:
            v = _to_exp_first(v, e_mask, m, m_mask, top, one)
        p0[i] = uint8(v >> uint16(8))
        p1[i] = uint8(v & uint16(255))


@numba.njit(cache=True, nogil=True)
def merge2(planes, base, op, out, rot, e_bits, m_bits):
    one, top, m = uint16(1), uint16(15), uint16(m_bits)
    e_mask, m_mask = uint16((1 << e_bits) - 1), uint16((1 << m_bits) - 1)
    p0, p1 = planes[0], planes[1]
    if op == 0:
        for i in range(out.shape[0]):
            v = _word2(p0, p1, i, rot, e_mask, m, m_mask, top, one)
            out[i] = v
    elif op == 1:
        for i in range(out.shape[0]):
            v = _word2(p0, p1, i, rot, e_mask, m, m_mask, top, one)
            out[i] = uint64(v) ^ uint64(base[i])
    elif op == 2:
        for i in range(out.shape[0]):
            v = _word2(p0, p1, i, rot, e_mask, m, m_mask, top, one)
            out[i] = _unsub(v, base[i], 16)
    elif op == 3:
        for i in range(out.shape[0]):
            v = _word2(p0, p1, i, rot, e_mask, m, m_mask, top, one)
            out[i] = uint64(v) ^ uint64(out[i])
    else:
        for i in range(out.shape[0]):
            v = _word2(p0, p1, i, rot, e_mask, m, m_mask, top, one)
            out[i] = _unsub(v, out[i], 16)


@numba.njit(cache=True, nogil=True)
def split4(words, base, op, out, rot, e_bits, m_bits):
    one, top, m = uint32(1), uint32(31), uint32(m_bits)
    e_mask, m_mask = uint32((1 << e_bits) - 1), uint32((1 << m_bits) - 1)
    p0, p1, p2, p3 = out[0], out[1], out[2], out[3]
    for i in range(words.shape[0]):
        v = uint32(_delta(words[i], base[i], op, 32))
        if rot:
            v = _to_exp_first(v, e_mask, m, m_mask, top, one)
        p0[i] = uint8(v >> uint32(24))
        p1[i] = uint8((v >> uint32(16)) & uint32(255))
        p2[i] = uint8((v >> uint32(8)) & uint32(255))
        p3[i] = uint8(v & uint32(255))


@numba.njit(cache=True, nogil=True)
def merge4(planes, base, op, out, rot, e_bits, m_bits):
    one, top, m = uint32(1), uint32(31), uint32(m_bits)
    e_mask, m_mask = uint32((1 << e_bits) - 1), uint32((1 << m_bits) - 1)
    p0, p1, p2, p3 = planes[0], planes[1], planes[2], planes[3]
    if op == 0:
        for i in range(out.shape[0]):
            v = _word4(p0, p1, p2, p3, i, rot, e_mask, m, m_mask, top, one)
            out[i] = v
    elif op == 1:
        for i in range(out.shape[0]):
            v = _word4(p0, p1, p2, p3, i, rot, e_mask, m, m_mask, top, one)
            out[i] = uint64(v) ^ uint64(base[i])
    elif op == 2:
        for i in range(out.shape[0]):
            v = _word4(p0, p1, p2, p3, i, rot, e_mask, m, m_mask, top, one)
            out[i] = _unsub(v, base[i], 32)
    elif op == 3:
        for i in range(out.shape[0]):
            v = _word4(p0, p1, p2, p3, i, rot, e_mask, m, m_mask, top, one)
            out[i] = uint64(v) ^ uint64(out[i])
    else:
        for i in range(out.shape[0]):
            v = _word4(p0, p1, p2, p3, i, rot, e_mask, m, m_mask, top, one)
            out[i] = _unsub(v, out[i], 32)


@numba.njit(cache=True, nogil=True)
def split8(words, base, op, out, rot, e_bits, m_bits):
    one, top, m = uint64(1), uint64(63), uint64(m_bits)
    e_mask, m_mask = uint64((1 << e_bits) - 1), uint64((1 << m_bits) - 1)
    for i in range(words.shape[0]):
        v = _delta(words[i], base[i], op, 64)
        if rot:
            v = _to_exp_first(v, e_mask, m, m_mask, top, one)
        for p in range(8):
            out[p, i] = uint8((v >> uint64(56 - 8 * p)) & uint64(255))


@numba.njit(cache=True, nogil=True)
def merge8(planes, base, op, out, rot, e_bits, m_bits):
    one, top, m = uint64(1), uint64(63), uint64(m_bits)
    e_mask, m_mask = uint64((1 << e_bits) - 1), uint64((1 << m_bits) - 1)
    if op == 0:
        for i in range(out.shape[0]):
            v = _word8(planes, i, rot, e_mask, m, m_mask, top, one)
            out[i] = v
    elif op == 1:
        for i in range(out.shape[0]):
            v = _word8(planes, i, rot, e_mask, m, m_mask, top, one)
            out[i] = uint64(v) ^ uint64(base[i])
    elif op == 2:
        for i in range(out.shape[0]):
            v = _word8(planes, i, rot, e_mask, m, m_mask, top, one)
            out[i] = _unsub(v, base[i], 64)
    elif op == 3:
        for i in range(out.shape[0]):
            v = _word8(planes, i, rot, e_mask, m, m_mask, top, one)
            out[i] = uint64(v) ^ uint64(out[i])
    else:
        for i in range(out.shape[0]):
            v = _word8(planes, i, rot, e_mask, m, m_mask, top, one)
            out[i] = _unsub(v, out[i], 64)


@numba.njit(cache=True, nogil=True)
def split1(words, base, op, out, rot, e_bits, m_bits):
    p0 = out[0]
    for i in range(words.shape[0]):
        p0[i] = _delta(words[i], base[i], op, 8)


@numba.njit(cache=True, nogil=True)
def merge1(planes, base, op, out, rot, e_bits, m_bits):
    p0 = planes[0]
    if op == 0:
        for i in range(out.shape[0]):
            out[i] = p0[i]
    elif op == 1:
        for i in range(out.shape[0]):
            out[i] = p0[i] ^ base[i]
    elif op == 2:
        for i in range(out.shape[0]):
            out[i] = _unsub(p0[i], base[i], 8)
    elif op == 3:
        for i in range(out.shape[0]):
            out[i] = p0[i] ^ out[i]
    else:
        for i in range(out.shape[0]):
            out[i] = _unsub(p0[i], out[i], 8)


@numba.njit(cache=True, nogil=True)
def plane_histograms(planes, counts):
    """counts[p, b] += occurrences of byte b in row p of ``planes`` (k, n)."""
    for p in range(planes.shape[0]):
        row = planes[p]
        c = counts[p]
        for i in range(row.shape[0]):
            c[row[i]] += 1


# Midpoints (progressive retrieval, pas.planes.midpoint): every element's word
# from its top k planes, the missing low part set to the middle of its range
# (``half``: the first missing bit), then taken out of the planes-exp order.
# One kernel per width and k, the planes as separate arguments, so each loop
# is one vectorisable body like the merges above.


@numba.njit(cache=True, nogil=True)
def mid2_1(p0, out, half, rot, e_bits, m_bits):
    one, top, m = uint16(1), uint16(15), uint16(m_bits)
    e_mask, m_mask = uint16((1 << e_bits) - 1), uint16((1 << m_bits) - 1)
    h = uint16(half)
    for i in range(out.shape[0]):
        v = (uint16(p0[i]) << uint16(8)) | h
        if rot:
            v = _from_exp_first(v, e_mask, m, m_mask, top, one)
        out[i] = v


@numba.njit(cache=True, nogil=True)
def mid4_1(p0, out, half, rot, e_bits, m_bits):
    one, top, m = uint32(1), uint32(31), uint32(m_bits)
    e_mask, m_mask = uint32((1 << e_bits) - 1), uint32((1 << m_bits) - 1)
    h = uint32(half)
    for i in range(out.shape[0]):
        v = (uint32(p0[i]) << uint32(24)) | h
        if rot:
            v = _from_exp_first(v, e_mask, m, m_mask, top, one)
        out[i] = v


@numba.njit(cache=True, nogil=True)
def mid4_2(p0, p1, out, half, rot, e_bits, m_bits):
    one, top, m = uint32(1), uint32(31), uint32(m_bits)
    e_mask, m_mask = uint32((1 << e_bits) - 1), uint32((1 << m_bits) - 1)
    h = uint32(half)
    for i in range(out.shape[0]):
        v = (uint32(p0[i]) << uint32(24)) | (uint32(p1[i]) << uint32(16)) | h
        if rot:
            v = _from_exp_first(v, e_mask, m, m_mask, top, one)
        out[i] = v


@numba.njit(cache=True, nogil=True)
def mid4_3(p0, p1, p2, out, half, rot, e_bits, m_bits):
    one, top, m = uint32(1), uint32(31), uint32(m_bits)
    e_mask, m_mask = uint32((1 << e_bits) - 1), uint32((1 << m_bits) - 1)
    h = uint32(half)
    for i in range(out.shape[0]):
        v = ((uint32(p0[i]) << uint32(24)) | (uint32(p1[i]) << uint32(16))
             | (uint32(p2[i]) << uint32(8)) | h)
        if rot:
            v = _from_exp_first(v, e_mask, m, m_mask, top, one)
        out[i] = v


@numba.njit(cache=True, nogil=True)
def mid8(planes, out, half, rot, e_bits, m_bits):
    """Any k < 8 (``planes``: a tuple of k arrays)."""
    one, top, m = uint64(1), uint64(63), uint64(m_bits)
    e_mask, m_mask = uint64((1 << e_bits) - 1), uint64((1 << m_bits) - 1)
    h = uint64(half)
    shift = uint64(8 * (8 - len(planes)))
    for i in range(out.shape[0]):
        v = uint64(0)
        for p in range(len(planes)):
            v = (v << uint64(8)) | uint64(planes[p][i])
        v = (v << shift) | h
        if rot:
            v = _from_exp_first(v, e_mask, m, m_mask, top, one)
        out[i] = v


# Midpoints from whole words (a tensor decoded whole, e.g. a difference delta):
# the planes-exp order is a permutation of bits, so keeping the top bits and
# setting the first missing one is one mask and one bit in the word's own order.


@numba.njit(cache=True, nogil=True)
def mask_or(words, out, keep, half):
    for i in range(out.shape[0]):
        out[i] = (words[i] & keep) | half


KERNELS = {1: (split1, merge1), 2: (split2, merge2), 4: (split4, merge4), 8: (split8, merge8)}
MIDPOINT = {(2, 1): mid2_1, (4, 1): mid4_1, (4, 2): mid4_2, (4, 3): mid4_3}
