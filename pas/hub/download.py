"""A version as a safetensors file, streamed: the header from the manifest, then
one tensor at a time (memory: the largest tensor, not the model).

The bytes are those `pas retrieve -o x.safetensors` writes: the same header
builder (`pas.formats.safetensors.build_header`), the same order and metadata,
every tensor read through `Repository.read_tensor` (checked against its address)."""
from __future__ import annotations

import struct
from typing import Iterator

import numpy as np

from .. import dtypes
from ..formats.safetensors import build_header
from ..snapshot import Tensor

PIECE = 1 << 20


def plan(version) -> tuple[bytes, int]:
    """(length prefix + header, total file size) of ``version`` as safetensors."""
    tensors = []
    for e in version.tensors:
        dt = dtypes.get(e.out_dtype)
        # A zero-stride view stands for the data: build_header checks dtype and shape, never reads it.
        tensors.append(Tensor(e.name, dt.name, tuple(e.shape), np.broadcast_to(np.zeros((), dt.np_dtype), e.shape)))
    meta = version.manifest["source"].get("metadata", {})
    header = build_header(tensors, {k: v for k, v in meta.items()})
    head = struct.pack("<Q", len(header)) + header
    return head, len(head) + sum(t.nbytes for t in tensors)


def stream(open_repo, ref: str) -> tuple[str, int, Iterator[bytes]]:
    """(file name, size, byte iterator). ``open_repo()`` is a context manager giving an
    open repository; it is held open while the body streams and closed after."""
    cm = open_repo()
    repo = cm.__enter__()
    try:
        v = repo.version(ref)
        head, size = plan(v)
    except BaseException as exc:
        cm.__exit__(type(exc), exc, exc.__traceback__)
        raise

    def body() -> Iterator[bytes]:
        # Small tensors are sent together: each piece a streaming response yields
        # costs a hop to the server's thread pool.
        try:
            pending, size = [head], len(head)
            for e in v.tensors:
                arr = repo.read_tensor(e)
                if arr.nbytes:
                    pending.append(bytes(dtypes.raw_bytes(arr)))
                    size += arr.nbytes
                if size >= PIECE:
                    yield b"".join(pending)
                    pending, size = [], 0
            if pending:
                yield b"".join(pending)
        finally:
            cm.__exit__(None, None, None)
    return f"{v.name}-{v.short}.safetensors", size, body()
