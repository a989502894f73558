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

    def decode_into(self, data: bytes | memoryview, out: np.ndarray):
        """Decode into ``out`` (a uint8 array of the decoded size) where the codec
        can, saving a fresh allocation; returns the decoded bytes (``out`` or a view)."""
        out[:] = np.frombuffer(self.decode(data, out.shape[0]), np.uint8)
        return out

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

    def decode_into(self, data, out):
        return data   # already the bytes: no copy


class Constant(Codec):
    """A chunk whose bytes are all one value (e.g. the zero low planes of bf16-origin float32)."""

    codec_id = "const"

    def encode(self, data):
        return bytes(data[:1])

    def decode(self, data, size):
        if len(data) != 1 and size:
            raise IntegrityError("constant chunk payload must be one byte")
        return bytes(data) * size if size else b""

    def decode_into(self, data, out):
        if len(data) != 1 and out.shape[0]:
            raise IntegrityError("constant chunk payload must be one byte")
        out.fill(data[0] if out.shape[0] else 0)
        return out


class Zstd(Codec):
    """zstd. Level 1 is the default for weight planes: on MiniLM's exponent
    plane it beats level 3 (8.25 vs 9.28 MB) because weight bytes are near
    i.i.d. and the literal coder, not LZ matching, does the work; it is also
    fast on the near-random mantissa planes, which end up stored raw."""

    codec_id = "zstd"

    def __init__(self, level: int = 3, min_match: int | None = None, hash_log: int | None = None):
        self.level = int(level)
        self.min_match = None if min_match is None else int(min_match)
        self.hash_log = None if hash_log is None else int(hash_log)
        self._local = threading.local()  # a ZstdCompressor must not be shared between threads

    def get_config(self):
        cfg = {"id": self.codec_id, "level": self.level}
        if self.min_match is not None:
            cfg["min_match"] = self.min_match
        if self.hash_log is not None:
            cfg["hash_log"] = self.hash_log
        return cfg

    def _compressor(self):
        import zstandard
        c = getattr(self._local, "c", None)
        if c is None:
            if self.min_match is None and self.hash_log is None:
                c = zstandard.ZstdCompressor(level=self.level)
            else:
                extra = {k: v for k, v in (("min_match", self.min_match), ("hash_log", self.hash_log))
                         if v is not None}
                params = zstandard.ZstdCompressionParameters.from_level(self.level, **extra)
                c = zstandard.ZstdCompressor(compression_params=params)
            self._local.c = c
        return c

    def encode(self, data):
        return self._compressor().compress(data)

    def _decompressor(self):
        d = getattr(self._local, "d", None)
        if d is None:
            import zstandard
            d = self._local.d = zstandard.ZstdDecompressor()
        return d

    def decode(self, data, size):
        import zstandard
        try:
            # A frame that declares its size is allocated at that size whatever
            # max_output_size says: a damaged or hostile header could ask for
            # terabytes (found by the decoder fuzz test), so it is checked first.
            declared = zstandard.frame_content_size(data)
            if declared not in (-1, size):
                raise IntegrityError(f"zstd chunk declares {declared} bytes, expected {size}")
            return self._decompressor().decompress(data, max_output_size=size)
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"zstd chunk does not decode: {exc}") from None

    def decode_into(self, data, out):
        # Streaming into a reused buffer: fresh pages cost more than zstd itself
        # on big chunks (first touch ~2.5 GB/s on a VM).
        import zstandard
        size, got = out.shape[0], 0
        try:
            with self._decompressor().stream_reader(data, read_across_frames=False) as r:
                view = memoryview(out)
                while got < size:
                    n = r.readinto(view[got:])
                    if not n:
                        break
                    got += n
                extra = r.read(1) if got == size else b""
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"zstd chunk does not decode: {exc}") from None
        if got != size or extra:
            raise IntegrityError(f"zstd chunk decodes to the wrong size (expected {size} bytes)")
        return out

    def __getstate__(self):
        return {"level": self.level, "min_match": self.min_match, "hash_log": self.hash_log}

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


#: zstd's match table for tensor planes, as a power of two (6, its minimum).
#: Weight planes are near-i.i.d. bytes: the literal coder does the work, and
#: the chance matches a big table finds cost more bits than the literals they
#: replace, while probing it is most of zstd's time. Measured at level 1 on
#: MiniLM's exponent planes: default table 238 MB/s, ratio 0.363; hash_log 6
#: 634 MB/s, 0.331 (other planes: same ratio, a little faster); the whole
#: corpus 400.2 -> 396.3 MB. Runs (delta planes, constant stretches) are still
#: found: they repeat at the previous offset, which needs no table.
PLANE_HASH_LOG = 6


def for_planes(codec: "Codec") -> "Codec":
    """The compressor for tensor planes given the repository's: zstd without a
    ``hash_log`` of its own gets `PLANE_HASH_LOG`; anything else as it is.
    (Side files, text mostly, keep the configured codec: LZ matching pays there.)"""
    if type(codec) is Zstd and codec.hash_log is None:
        key = (codec.level, codec.min_match)
        if key not in _plane_codecs:   # one instance: its per-thread compressors are reused
            _plane_codecs[key] = Zstd(codec.level, codec.min_match, PLANE_HASH_LOG)
        return _plane_codecs[key]
    return codec


_plane_codecs: dict[tuple, "Codec"] = {}


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


# --- framing -------------------------------------------------------------------
# A frame is one encoded byte stream: a one-byte codec tag, the payload, and
# (for stand-alone chunk objects) an 8-byte xxh3-64 of all before it. The
# built-in codecs' decoders need no parameters (zstd and blosc2 frames
# describe themselves), so the tag alone says how to decode; any other
# registered codec is written as tag 255, a 1-byte length and its JSON config.
# The check catches every damaged stored byte, even one that would still
# decode to the right data; content addresses are checked after decoding.
TAG_JSON = 255
RAW = Raw()
CONSTANT = Constant()
_config_cache: dict[bytes, Codec] = {}


def _tag(codec: Codec) -> int:
    return _TAGS.get(type(codec), TAG_JSON)


def frame(codec: Codec, payload: bytes | memoryview, checked: bool = True) -> bytes:
    tag = _tag(codec)
    if tag == TAG_JSON:
        cfg = json.dumps(codec.get_config(), separators=(",", ":"), sort_keys=True).encode()
        if len(cfg) > 255:
            raise ValueError("codec config too long for a frame header")
        head = bytes((TAG_JSON, len(cfg))) + cfg
    else:
        head = bytes((tag,))
    if not checked:
        return head + payload
    return b"".join((head, payload, checksum64_parts(head, payload)))


def unframe(value, checked: bool = True) -> tuple[Codec, memoryview]:
    view = memoryview(value)
    if checked:
        if len(view) < 9 or checksum64(view[:-8]) != view[-8:]:
            raise IntegrityError("chunk is damaged (checksum mismatch)")
        view = view[:-8]
    if len(view) < 1:
        raise IntegrityError("frame is empty")
    tag = view[0]
    if tag != TAG_JSON:
        codec = _BY_TAG.get(tag)
        if codec is None:
            raise IntegrityError(f"frame has an unknown codec tag {tag}")
        return codec, view[1:]
    n = view[1] if len(view) > 1 else 0
    cfg = bytes(view[2:2 + n])
    codec = _config_cache.get(cfg)
    if codec is None:
        try:
            codec = get_codec(json.loads(cfg))
        except (ValueError, TypeError, UnsupportedFormat) as exc:
            raise IntegrityError(f"frame codec config is damaged or unknown: {exc}") from None
        _config_cache[cfg] = codec
    return codec, view[2 + n:]


_TAGS = {Raw: 0, Constant: 1, Zstd: 2, Blosc2: 3}
_BY_TAG = {0: RAW, 1: CONSTANT, 2: Zstd(), 3: Blosc2()}

#: A big chunk whose first PROBE_BYTES do not shrink below PROBE_RAW_ABOVE is
#: stored raw without compressing the rest: the low mantissa planes of
#: weights are near-random, and compressing them is most of ingest time.
PROBE_BYTES = 1 << 16
PROBE_RAW_ABOVE = 0.99


def encode(data: np.ndarray, compressor: Codec, raw_above: float = 0.95) -> tuple[Codec, bytes]:
    """The cheapest of const / raw / compressor for ``data`` (a uint8 array), and its payload."""
    codec, payload = _encode(data, compressor, raw_above)
    return codec, payload if type(payload) is bytes else bytes(payload)


def _encode(data: np.ndarray, compressor: Codec, raw_above: float = 0.95):
    """`encode`, with a raw payload given as a view of ``data`` (the frame copies it once)."""
    if data.size and data[0] == data[-1] and not np.any(data != data[0]):
        return CONSTANT, bytes(data[:1])
    raw = memoryview(np.ascontiguousarray(data)).cast("B")
    if data.size >= 4 * PROBE_BYTES:
        probe = compressor.encode(raw[:PROBE_BYTES])
        if len(probe) > PROBE_RAW_ABOVE * PROBE_BYTES:
            return RAW, raw
    payload = compressor.encode(raw)
    if len(payload) > raw_above * data.size:
        return RAW, raw
    return compressor, payload


def encode_chunk(data: np.ndarray, compressor: Codec, checked: bool = True) -> bytes:
    """``data`` encoded and framed (a stand-alone chunk object when ``checked``)."""
    codec, payload = _encode(data, compressor)
    return frame(codec, payload, checked)


def decode_chunk(value, size: int, checked: bool = True) -> bytes | bytearray | memoryview:
    codec, payload = unframe(value, checked)
    out = codec.decode(payload, size)
    if len(out) != size:
        raise IntegrityError(f"chunk decoded to {len(out)} bytes, expected {size}")
    return out


def decode_chunk_into(value, out: np.ndarray, checked: bool = True):
    """`decode_chunk` into ``out`` (uint8, the decoded size) where the codec can.

    Returns the decoded bytes: ``out``, or a view of ``value`` for raw chunks.
    """
    codec, payload = unframe(value, checked)
    data = codec.decode_into(payload, out)
    if len(data) != out.shape[0]:
        raise IntegrityError(f"chunk decoded to {len(data)} bytes, expected {out.shape[0]}")
    return data
