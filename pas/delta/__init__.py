"""Bit-exact delta operators on the bit patterns of tensors.

A delta turns a tensor into its difference from a *base* tensor of the same
dtype, so the byte planes of a fine-tune or the next checkpoint are mostly
zeros. Both operators work on the unsigned integer view of the elements,
never on float values (floating-point subtraction is not invertible:
reliability-plan.md §1.4):

- ``xor``: ``d = t ^ b``. Equal high bits (sign, exponent, top mantissa)
  become zero bytes; byte planes of the result can be XORed with the base's
  planes one by one, so a K-plane read of a delta needs only K planes.
- ``sub``: ``d = zigzag((t - b) mod 2^w)``, the paper's Delta-SUB made exact:
  small steps in either direction become small codes, which beats XOR when
  updates cross a power of two (the exponent changes but the value barely
  moves). Carries cross byte boundaries, so a K-plane read needs all planes.

The fused split/merge kernels live in pas/_plane_kernels.py; the numpy
functions here are the reference (and the path for small tensors).
"""
from __future__ import annotations

import numpy as np

#: Operator names as recorded in tensor records, and their kernel codes.
OPS = {"xor": 1, "sub": 2}


def op_code(op: str | None) -> int:
    if op is None:
        return 0
    try:
        return OPS[op]
    except KeyError:
        raise ValueError(f"unknown delta operator {op!r} (known: {', '.join(OPS)})") from None


def encode(words: np.ndarray, base: np.ndarray, op: str) -> np.ndarray:
    """The delta of ``words`` against ``base`` (same unsigned dtype and length)."""
    if op == "xor":
        return words ^ base
    if op == "sub":
        width = words.dtype.itemsize * 8
        d = words - base                                   # unsigned: wraps mod 2^w
        return (d << np.uint8(1)) ^ (np.zeros_like(d) - (d >> np.uint8(width - 1)))
    raise ValueError(f"unknown delta operator {op!r}")


def decode(delta: np.ndarray, base: np.ndarray, op: str, out: np.ndarray | None = None) -> np.ndarray:
    """Inverse of `encode`: the original words (written into ``out`` if given,
    which may be ``base`` itself: each base word is read before it is written)."""
    if op == "xor":
        return np.bitwise_xor(delta, base, out=out)
    if op == "sub":
        d = (delta >> np.uint8(1)) ^ (np.zeros_like(delta) - (delta & np.uint8(1)))
        return np.add(base, d, out=out)
    raise ValueError(f"unknown delta operator {op!r}")


def aligned_base(base: np.ndarray, n: int) -> np.ndarray:
    """``base`` as n words: cut, or padded with zeros (a delta against 0 is the value itself).

    This is how a resized tensor (e.g. a vocabulary grown by N rows) is coded
    against its smaller parent: the shared leading rows delta, the new rows
    go whole.
    """
    if base.shape[0] == n:
        return base
    if base.shape[0] > n:
        return base[:n]
    out = np.zeros(n, base.dtype)
    out[: base.shape[0]] = base
    return out
