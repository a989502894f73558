"""Object batches on the wire: the pull and publish protocol's binary body.

    b"PAS1" then, per object: key length (u16 BE), key, value length (u32 BE), value
    (a value length of 0xFFFFFFFF: the object is absent, no value follows)

Keys are store keys (a kind byte, then an address or version id), values the
stored bytes as they are: what one side's `Store.get_many` returned is what
the other side's `put_many` writes, checked on the way in (pas/hub/upload.py)."""
from __future__ import annotations

import struct
from typing import Iterable

from ..errors import BadInput

MAGIC = b"PAS1"
ABSENT = 0xFFFFFFFF
MEDIA_TYPE = "application/x-pas-objects"


def encode(items: Iterable[tuple[bytes, bytes | None]]) -> bytes:
    parts = [MAGIC]
    for key, value in items:
        if len(key) > 0xFFFF:
            raise BadInput("an object key is longer than 65535 bytes")
        if value is None:
            parts.append(struct.pack(">H", len(key)) + key + struct.pack(">I", ABSENT))
        else:
            if len(value) >= ABSENT:
                raise BadInput("an object is larger than 4 GiB")
            parts.append(struct.pack(">H", len(key)) + key + struct.pack(">I", len(value)))
            parts.append(value)
    return b"".join(parts)


def decode(data: bytes | memoryview, max_items: int) -> list[tuple[bytes, bytes | None]]:
    """The objects of a batch, every length checked against what is there (hostile input)."""
    data = memoryview(data)
    if bytes(data[:4]) != MAGIC:
        raise BadInput("not an object batch (it must start with PAS1)")
    out, pos, n = [], 4, len(data)
    while pos < n:
        if len(out) >= max_items:
            raise BadInput(f"an object batch holds at most {max_items} objects")
        if pos + 2 > n:
            raise BadInput("object batch truncated in a key length")
        (klen,) = struct.unpack_from(">H", data, pos)
        pos += 2
        if klen == 0 or pos + klen + 4 > n:
            raise BadInput("object batch truncated in a key (or an empty key)")
        key = bytes(data[pos:pos + klen])
        pos += klen
        (vlen,) = struct.unpack_from(">I", data, pos)
        pos += 4
        if vlen == ABSENT:
            out.append((key, None))
            continue
        if pos + vlen > n:
            raise BadInput(f"object batch truncated: a value claims {vlen} bytes, {n - pos} remain")
        out.append((key, bytes(data[pos:pos + vlen])))
        pos += vlen
    return out
