"""Content addresses: xxh3-128 digests (fast, 20+ GB/s), keyed together with
the length; a dedup hit is always confirmed against the stored bytes, since
xxh3 is not collision-resistant (reliability-plan.md §1.5)."""
from __future__ import annotations

import xxhash

DIGEST_SIZE = 16


def digest(data) -> bytes:
    return xxhash.xxh3_128_digest(data)


def digest_parts(*parts) -> bytes:
    return _hash_parts(xxhash.xxh3_128(), parts)


def checksum64(data) -> bytes:
    """8-byte check appended to mutable or small records (refs, manifests)."""
    return xxhash.xxh3_64_digest(data)


def checksum64_parts(*parts) -> bytes:
    return _hash_parts(xxhash.xxh3_64(), parts)


def _hash_parts(h, parts) -> bytes:
    for p in parts:
        h.update(p)
    return h.digest()
