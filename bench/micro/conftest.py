"""Inputs shared by the kernel micro-benchmarks, built once per session.

Sizes come from the environment so ``python -m bench.micro`` can pass them
through pytest: PAS_MICRO_MIB (float32 buffer size, default 16) and
PAS_MICRO_ROUNDS (timed rounds per benchmark, default 15).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pytest

from pas import dtypes, planes

MIB = 1 << 20
SIZE_MIB = float(os.environ.get("PAS_MICRO_MIB", "16"))
ROUNDS = int(os.environ.get("PAS_MICRO_ROUNDS", "15"))
CHUNK = 1 << 20               # pas's default chunk size (pas.chunking.FixedChunker)
SAMPLE = (4, 1 << 14)         # pas.delta.select.SAMPLE elements, four planes


@dataclass
class Inputs:
    """One weight tensor ("parent") and a fine-tune of it ("child"), as raw bits."""
    f32: np.ndarray                       # parent weights, float32 N(0, 0.02)
    words: dict[str, np.ndarray]          # "F32"/"BF16" -> parent bits (uint32/uint16)
    child: dict[str, np.ndarray]          # "F32"/"BF16" -> child bits: parent + N(0, 1e-4)
    _cache: dict = field(default_factory=dict)

    def dtype(self, name: str):
        return dtypes.get(name)

    def planes(self, name: str, layout: str, op: str | None = None) -> np.ndarray:
        """Planes of the child (whole, or its delta against the parent); cached."""
        key = (name, layout, op)
        if key not in self._cache:
            if op is None:
                self._cache[key] = planes.split(self.child[name], dtypes.get(name), layout)
            else:
                self._cache[key] = planes.split(self.child[name], dtypes.get(name), layout,
                                                base=self.words[name], op=op)
        return self._cache[key]


@pytest.fixture(scope="session")
def inputs() -> Inputs:
    # Load the Numba kernels up front: pas imports them lazily (tensors of 2**18+
    # elements), and once loaded they serve every size, so every call below takes
    # the same path whatever PAS_MICRO_MIB is. Each benchmark also runs one
    # untimed warm-up round, which compiles (or loads from cache) its specialisation.
    import pas._plane_kernels  # noqa: F401

    n = max(1, int(SIZE_MIB * MIB) // 4)
    rng = np.random.default_rng(20261127)
    f32 = rng.normal(0.0, 0.02, n).astype(np.float32)
    child32 = f32 + rng.normal(0.0, 1e-4, n).astype(np.float32)
    w32, c32 = f32.view(np.uint32), child32.view(np.uint32)
    w16 = (w32 >> np.uint32(16)).astype(np.uint16)      # bf16 = top 16 bits (truncation)
    c16 = (c32 >> np.uint32(16)).astype(np.uint16)
    return Inputs(f32=f32, words={"F32": w32, "BF16": w16}, child={"F32": c32, "BF16": c16})
