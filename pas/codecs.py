"""Pluggable byte codecs, described by JSON configs stored beside the data.

A codec turns one chunk of a stream into bytes and back. Its config (a small
JSON object with an ``id``) is written into every chunk it encodes, so
decoding never depends on defaults or on the repository's current settings.
New codecs register with `register`; `get_codec(config)` rebuilds one.

`encode_chunk` picks the codec for a chunk from the data: a constant chunk
costs one byte, a chunk the compressor cannot shrink by 5% is stored raw
(ZipNN's guard), everything else goes through the configured compressor.
"""
from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from typing import Any, Callable

import numpy as np

from .errors import IntegrityError, UnsupportedFormat
from .hashing import checksum64, checksum64_parts


class Codec(ABC):
    codec_id: str = ""

    def get_config(self) -> dict[str, Any]:
        return {"id": self.codec_id}

    @abstractmethod
    def encode(self, data: bytes | memoryview) -> bytes: ...

    @abstractmethod
    def decode(self, data: bytes | memoryview, size: int) -> bytes | bytearray | memoryview:
        """Decode to exactly ``size`` bytes."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.get_config()})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Codec) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(json.dumps(self.get_config(), sort_keys=True))


class Raw(Codec):
    codec_id = "raw"

    def encode(self, data):
        return bytes(data)

    def decode(self, data, size):
        return data


class Constant(Codec):
    """A chunk whose bytes are all one value (e.g. the zero low planes of bf16-origin float32)."""

    codec_id = "const"

    def encode(self, data):
        return bytes(data[:1])

    def decode(self, data, size):
        if len(data) != 1 and size:
            raise IntegrityError("constant chunk payload must be one byte")
        return bytes(data) * size if size else b""


class Zstd(Codec):
    """zstd. Level 1 is the default for weight planes: on MiniLM's exponent
    plane it beats level 3 (8.25 vs 9.28 MB) because weight bytes are near
    i.i.d. and the literal coder, not LZ matching, does the work; it is also
    fast on the near-random mantissa planes, which end up stored raw."""

    codec_id = "zstd"

    def __init__(self, level: int = 3, min_match: int | None = None):
        self.level = int(level)
        self.min_match = None if min_match is None else int(min_match)
        self._local = threading.local()  # a ZstdCompressor must not be shared between threads

    def get_config(self):
        cfg = {"id": self.codec_id, "level": self.level}
        if self.min_match is not None:
            cfg["min_match"] = self.min_match
        return cfg

    def _compressor(self):
        import zstandard
        c = getattr(self._local, "c", None)
        if c is None:
            if self.min_match is None:
                c = zstandard.ZstdCompressor(level=self.level)
            else:
                params = zstandard.ZstdCompressionParameters.from_level(
                    self.level, min_match=self.min_match)
                c = zstandard.ZstdCompressor(compression_params=params)
            self._local.c = c
        return c

    def encode(self, data):
        return self._compressor().compress(data)

    def decode(self, data, size):
        import zstandard
        d = getattr(self._local, "d", None)
        if d is None:
            d = self._local.d = zstandard.ZstdDecompressor()
        try:
            out = d.decompress(data, max_output_size=size)
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"zstd chunk does not decode: {exc}") from None
        return out

    def __getstate__(self):
        return {"level": self.level, "min_match": self.min_match}

    def __setstate__(self, state):
        self.__init__(**state)


class Blosc2(Codec):
    """blosc2 with zstd inside; shuffle on or off (typesize = element size)."""

    codec_id = "blosc2"

    def __init__(self, clevel: int = 1, shuffle: bool = True, typesize: int = 1):
        self.clevel, self.shuffle, self.typesize = int(clevel), bool(shuffle), int(typesize)

    def get_config(self):
        return {"id": self.codec_id, "clevel": self.clevel, "shuffle": self.shuffle,
                "typesize": self.typesize}

    def encode(self, data):
        import blosc2
        filt = blosc2.Filter.SHUFFLE if self.shuffle else blosc2.Filter.NOFILTER
        return blosc2.compress2(bytes(data), typesize=self.typesize, clevel=self.clevel,
                                codec=blosc2.Codec.ZSTD, filters=[filt])

    def decode(self, data, size):
        import blosc2
        try:
            return blosc2.decompress2(bytes(data))
        except Exception as exc:  # noqa: BLE001 - blosc2 raises RuntimeError/ValueError
            raise IntegrityError(f"blosc2 chunk does not decode: {exc}") from None


_REGISTRY: dict[str, Callable[..., Codec]] = {}


def register(cls: Callable[..., Codec], codec_id: str | None = None) -> None:
    _REGISTRY[codec_id or cls.codec_id] = cls


for _cls in (Raw, Constant, Zstd, Blosc2):
    register(_cls)


def get_codec(config: dict[str, Any]) -> Codec:
    cfg = dict(config)
    codec_id = cfg.pop("id", None)
    try:
        cls = _REGISTRY[codec_id]
    except KeyError:
        raise UnsupportedFormat(f"unknown codec {codec_id!r}; this pas knows {sorted(_REGISTRY)}") from None
    return cls(**cfg)


# --- chunk framing ------------------------------------------------------------
# A stored chunk is: version byte, 1-byte length of the codec's compact JSON
# config, the config, the payload, then an 8-byte xxh3-64 of all before it.
# The check catches every damaged stored byte, even one that still decodes to
# the right data (a codec level digit); the chunk's key carries the hash and
# length of the *decoded* bytes, checked after decoding.
CHUNK_VERSION = 1
RAW = Raw()
CONSTANT = Constant()
_config_cache: dict[bytes, Codec] = {}


def frame(codec: Codec, payload: bytes) -> bytes:
    cfg = json.dumps(codec.get_config(), separators=(",", ":"), sort_keys=True).encode()
    if len(cfg) > 255:
        raise ValueError("codec config too long for a chunk header")
    head = bytes((CHUNK_VERSION, len(cfg))) + cfg
    return b"".join((head, payload, checksum64_parts(head, payload)))


def unframe(value: bytes) -> tuple[Codec, memoryview]:
    view = memoryview(value)
    if len(view) < 10 or checksum64(view[:-8]) != view[-8:]:
        raise IntegrityError("chunk is damaged (checksum mismatch)")
    view = view[:-8]
    if view[0] != CHUNK_VERSION:
        raise IntegrityError(f"chunk format version {view[0]} is unknown")
    n = view[1]
    cfg = bytes(view[2:2 + n])
    codec = _config_cache.get(cfg)
    if codec is None:
        try:
            codec = get_codec(json.loads(cfg))
        except (ValueError, TypeError, UnsupportedFormat) as exc:
            raise IntegrityError(f"chunk codec config is damaged or unknown: {exc}") from None
        _config_cache[cfg] = codec
    return codec, view[2 + n:]


#: A big chunk whose first PROBE_BYTES do not shrink below PROBE_RAW_ABOVE is
#: stored raw without compressing the rest: the low mantissa planes of
#: weights are near-random, and compressing them is most of ingest time.
PROBE_BYTES = 1 << 16
PROBE_RAW_ABOVE = 0.99


def encode_chunk(data: np.ndarray, compressor: Codec, raw_above: float = 0.95) -> bytes:
    """Frame ``data`` (a uint8 array) with the cheapest of const / raw / compressor."""
    if data.size and data[0] == data[-1] and not np.any(data != data[0]):
        return frame(CONSTANT, bytes(data[:1]))
    if data.size >= 4 * PROBE_BYTES:
        probe = compressor.encode(memoryview(data[:PROBE_BYTES]))
        if len(probe) > PROBE_RAW_ABOVE * PROBE_BYTES:
            return frame(RAW, data.tobytes())
    payload = compressor.encode(memoryview(data))
    if len(payload) > raw_above * data.size:
        return frame(RAW, data.tobytes())
    return frame(compressor, payload)


def decode_chunk(value: bytes, size: int) -> bytes | bytearray | memoryview:
    codec, payload = unframe(value)
    out = codec.decode(payload, size)
    if len(out) != size:
        raise IntegrityError(f"chunk decoded to {len(out)} bytes, expected {size}")
    return out
