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


#: Per-plane figures are kept for float tensors: plane p of an F32 and of a
#: BF16 are different fields, so records are keyed by (dtype, plane). Other
#: dtypes count in the total floor only.
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")


@dataclass
class PlaneFloor:
    """Per (dtype, plane index p) (p = 0: the most significant byte): bytes stored,
    entropy floor, and bytes before compression, summed over the objects counted."""
    planes: dict[tuple[str, int], list] = field(default_factory=dict)
    other_floor: float = 0.0

    def add(self, dtype: str, p: int, stored: int, floor: float, logical: int) -> None:
        if dtype not in FLOAT_DTYPES:
            self.other_floor += floor
            return
        x = self.planes.setdefault((dtype, p), [0, 0.0, 0])
        x[0] += stored
        x[1] += floor
        x[2] += logical

    @property
    def total_floor(self) -> int:
        return int(round(sum(x[1] for x in self.planes.values()) + self.other_floor))

    def to_json(self) -> list[dict]:
        return [{"dtype": d, "plane": p, "stored_bytes": x[0], "floor_bytes": int(round(x[1])),
                 "logical_bytes": x[2]} for (d, p), x in sorted(self.planes.items())]


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
            out.add(lay.dtype.name, p, len(frame), entropy_bytes(data), lay.n)
        for p, plane in enumerate(lay.addrs):
            for a in plane:
                if a in seen:
                    continue
                seen.add(a)
                value = repo.store.get(CHUNK + a)
                n = records.address_length(a)
                data = np.frombuffer(codecs.decode_chunk(value, n), np.uint8)
                out.add(lay.dtype.name, p, len(value), entropy_bytes(data), n)
    return out
