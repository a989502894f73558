"""The entropy floor of what pas stores, plane by plane.

For every plane stream a version added to a pas repository (each chunk, and
each inline plane of a small tensor, on its own), the order-0 entropy of its
bytes: the limit for any coder with one static byte model per chunk, given
pas's own choices of layout, delta operator and base. Set against the bytes
pas actually stored for the same planes, it says how much a better entropy
coder could still win (and where: plane 0 is the most significant byte).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class PlaneFloor:
    """Per plane index p (0 = most significant byte): bytes stored, entropy floor,
    and bytes before compression, summed over the objects counted."""
    stored: list[int] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    logical: list[int] = field(default_factory=list)

    def add(self, p: int, stored: int, floor: float, logical: int) -> None:
        while len(self.stored) <= p:
            self.stored.append(0)
            self.floor.append(0.0)
            self.logical.append(0)
        self.stored[p] += stored
        self.floor[p] += floor
        self.logical[p] += logical

    def merge(self, other: "PlaneFloor") -> None:
        for p in range(len(other.stored)):
            self.add(p, other.stored[p], other.floor[p], other.logical[p])

    @property
    def total_floor(self) -> int:
        return int(round(sum(self.floor)))

    def to_json(self) -> list[dict]:
        return [{"plane": p, "stored_bytes": self.stored[p], "floor_bytes": int(round(self.floor[p])),
                 "logical_bytes": self.logical[p]} for p in range(len(self.stored))]


def entropy_bytes(data: np.ndarray) -> float:
    """Order-0 entropy of a byte array, in bytes."""
    from pas.delta.select import plane_entropy_bytes
    return plane_entropy_bytes(data.reshape(1, -1))


def version_floor(repo, version_id: str, seen: set[bytes]) -> PlaneFloor:
    """The planes ``version_id`` added to ``repo``: objects already in ``seen``
    (counted for an earlier version) are skipped, and the new ones added to it,
    so calling this in archive order counts every stored object once."""
    from pas import codecs, records
    from pas.records import CHUNK
    out = PlaneFloor()
    v = repo.version(version_id)
    for e in v.tensors + v.files:
        if e.object in seen:
            continue
        seen.add(e.object)
        lay = repo.reader.parse(e.object)
        for p, frame in enumerate(lay.inline or ()):
            data = np.frombuffer(codecs.decode_chunk(frame, lay.n, checked=False), np.uint8)
            out.add(p, len(frame), entropy_bytes(data), lay.n)
        for p, plane in enumerate(lay.addrs):
            for a in plane:
                if a in seen:
                    continue
                seen.add(a)
                value = repo.store.get(CHUNK + a)
                n = records.address_length(a)
                data = np.frombuffer(codecs.decode_chunk(value, n), np.uint8)
                out.add(p, len(value), entropy_bytes(data), n)
    return out
