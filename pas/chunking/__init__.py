"""Chunkers: where a byte stream is cut before each piece is addressed and stored.

A chunker is deterministic (the same stream always yields the same cuts, so
identical data dedups) and aligned to the element size. The fixed-size
chunker is the default: weight planes change everywhere between versions, so
content-defined boundaries find nothing that fixed ones miss
(compression-facts.md §4.4), and fixed cuts allow ranged reads by offset.

Opaque side files (tokenizers, configs) are edited in place, which shifts
every byte after the edit: ``CDCChunker`` (pas/chunking/cdc.py, FastCDC)
cuts them where their content says, so unchanged stretches dedup. Cut a
buffer with ``chunker.cuts_of(data)``, which works for every chunker.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np


class Chunker(ABC):
    chunker_id = ""

    @abstractmethod
    def cuts(self, nbytes: int, align: int = 1) -> list[tuple[int, int]]:
        """(offset, length) pieces covering ``nbytes``; lengths are multiples of ``align``."""

    def cuts_of(self, data: np.ndarray) -> list[tuple[int, int]]:
        """(offset, length) pieces covering ``data``'s bytes, cut where this chunker cuts them.

        Chunkers whose cuts depend only on the length (fixed) need not
        override this; content-defined ones (``CDCChunker``) do.
        """
        return self.cuts(data.nbytes)

    def get_config(self) -> dict[str, Any]:
        return {"id": self.chunker_id}


class FixedChunker(Chunker):
    chunker_id = "fixed"

    def __init__(self, size: int = 1 << 20):
        if size <= 0:
            raise ValueError("chunk size must be positive")
        self.size = int(size)

    def cuts(self, nbytes: int, align: int = 1) -> list[tuple[int, int]]:
        size = max(align, self.size - self.size % align)
        return [(off, min(size, nbytes - off)) for off in range(0, nbytes, size)] or [(0, 0)]

    def get_config(self) -> dict[str, Any]:
        return {"id": self.chunker_id, "size": self.size}


def get_chunker(config: dict[str, Any]) -> Chunker:
    cfg = dict(config)
    kind = cfg.pop("id", "fixed")
    if kind == "cdc":
        from .cdc import CDCChunker
        return CDCChunker(**cfg)
    if kind != "fixed":
        from ..errors import UnsupportedFormat
        raise UnsupportedFormat(f"unknown chunker {kind!r}")
    return FixedChunker(**cfg)
