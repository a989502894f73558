"""Codecs and chunk framing: round trips, codec choice, damaged headers, configs.

Frame layout (docs/format.md §3): one codec tag byte (0 raw, 1 const, 2 zstd,
3 blosc2; 255 = a 1-byte length and the JSON config of any other registered
codec), the payload, and for chunk objects an xxh3-64 of all before it. The
built-in decoders need no parameters: unframing a built-in tag yields a
default decoder of that codec, and the compressor's full config lives in the
tensor record (`codec`), not in the frame.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from pas import codecs
from pas.errors import IntegrityError, UnsupportedFormat
from pas.hashing import checksum64

#: The one-byte tags of the built-in codecs (docs/format.md §3): part of the format.
TAGS = {"raw": 0, "const": 1, "zstd": 2, "blosc2": 3}

RNG = np.random.default_rng(1234)
RANDOM = RNG.integers(0, 256, 1 << 16, dtype=np.uint8)
COMPRESSIBLE = np.frombuffer((b"weights-" * 9000)[: 1 << 16], np.uint8).copy()
SKEWED = RNG.geometric(0.3, 1 << 16).clip(0, 255).astype(np.uint8)   # like an exponent plane
CONSTANT = np.full(1 << 16, 0x3C, np.uint8)

#: Every registered codec with a few configs (registry checked below, so a new codec is noticed).
CONFIGS = {
    "raw": [{"id": "raw"}],
    "const": [{"id": "const"}],
    "zstd": [{"id": "zstd", "level": 3}, {"id": "zstd", "level": 1, "min_match": 7},
             {"id": "zstd", "level": 19}],
    "blosc2": [{"id": "blosc2", "clevel": 1, "shuffle": True, "typesize": 1},
               {"id": "blosc2", "clevel": 5, "shuffle": False, "typesize": 4},
               {"id": "blosc2", "clevel": 9, "shuffle": True, "typesize": 2}],
}
ALL_CONFIGS = [c for cs in CONFIGS.values() for c in cs]


def test_configs_cover_the_registry():
    # pas's own codecs (plug-ins registered by other tests, e.g. the bench's example, are not ours to list)
    builtin = {k for k, cls in codecs._REGISTRY.items() if cls.__module__ == "pas.codecs"}
    assert builtin == set(CONFIGS), "a codec was registered: add it to CONFIGS"


DATAS = {"random": RANDOM, "compressible": COMPRESSIBLE, "skewed": SKEWED, "constant": CONSTANT,
         "one": RANDOM[:1], "empty": RANDOM[:0], "4097": RANDOM[:4097]}
ROUND_TRIPS = [pytest.param(c, d, id=f"{d}-{json.dumps(c, sort_keys=True)}")
               for c in ALL_CONFIGS for d in DATAS
               # const can only encode constant chunks
               if c["id"] != "const" or d in ("constant", "one", "empty")]


@pytest.mark.parametrize("config,data_name", ROUND_TRIPS)
def test_round_trip(config, data_name):
    data = DATAS[data_name]
    codec = codecs.get_codec(config)
    payload = codec.encode(memoryview(data))
    out = codec.decode(payload, data.size)
    assert bytes(out) == data.tobytes()
    # through the chunk frame, with the codec forced: tag byte, payload, xxh3-64 check
    framed = codecs.frame(codec, payload)
    assert framed[0] == TAGS[config["id"]]
    assert framed[1:-8] == payload
    assert framed[-8:] == checksum64(framed[:-8])
    assert bytes(codecs.decode_chunk(framed, data.size)) == data.tobytes()
    got_codec, got_payload = codecs.unframe(framed)
    # the tag names the codec; its decoder is a default instance that decodes any config's output
    assert type(got_codec) is type(codec) and got_codec.codec_id == config["id"]
    assert bytes(got_payload) == payload
    assert bytes(got_codec.decode(got_payload, data.size)) == data.tobytes()
    # an unchecked frame (inline in a tensor record) is the same without the check
    inline = codecs.frame(codec, payload, checked=False)
    assert inline == framed[:-8]
    assert bytes(codecs.decode_chunk(inline, data.size, checked=False)) == data.tobytes()
    got_codec, got_payload = codecs.unframe(inline, checked=False)
    assert type(got_codec) is type(codec) and bytes(got_payload) == payload


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=lambda c: json.dumps(c, sort_keys=True))
def test_config_json_round_trip(config):
    codec = codecs.get_codec(config)
    cfg = codec.get_config()
    assert cfg["id"] == codec.codec_id
    again = codecs.get_codec(json.loads(json.dumps(cfg)))
    assert again == codec and hash(again) == hash(codec)
    assert again.get_config() == cfg
    assert type(again) is type(codec)
    # the config given is the config kept (nothing silently dropped or defaulted away)
    for k, v in config.items():
        assert cfg[k] == v


def test_codec_equality_distinguishes_parameters():
    assert codecs.get_codec({"id": "zstd", "level": 3}) != codecs.get_codec({"id": "zstd", "level": 4})
    assert codecs.get_codec({"id": "zstd", "level": 3}) != codecs.get_codec({"id": "zstd", "level": 3, "min_match": 7})
    assert codecs.get_codec({"id": "raw"}) != codecs.get_codec({"id": "const"})


def test_get_codec_unknown_id():
    with pytest.raises(UnsupportedFormat):
        codecs.get_codec({"id": "lz4-from-the-future"})
    with pytest.raises(UnsupportedFormat):
        codecs.get_codec({})


def test_zstd_codec_pickles_without_compressor_state():
    import pickle
    c = codecs.get_codec({"id": "zstd", "level": 5, "min_match": 6})
    c.encode(b"x" * 100)  # builds the cached compressor
    c2 = pickle.loads(pickle.dumps(c))
    assert c2 == c
    assert bytes(c2.decode(c2.encode(b"abc" * 50), 150)) == b"abc" * 50


# ------------------------------------------------------------- encode_chunk
ZSTD = codecs.get_codec({"id": "zstd", "level": 3, "min_match": 7})


def _chosen(framed: bytes) -> str:
    return codecs.unframe(framed)[0].codec_id


@pytest.mark.parametrize("value", [0, 0x7F, 0xFF])
@pytest.mark.parametrize("n", [1, 2, 4096, 1 << 20])
def test_encode_chunk_constant(value, n):
    data = np.full(n, value, np.uint8)
    framed = codecs.encode_chunk(data, ZSTD)
    assert _chosen(framed) == "const"
    assert len(framed) <= 32, len(framed)  # header + 1 byte + 8-byte check
    assert bytes(codecs.decode_chunk(framed, n)) == data.tobytes()


def test_encode_chunk_almost_constant_is_not_const():
    for pos in (0, 1, 2048, 4095):
        data = np.zeros(4096, np.uint8)
        data[pos] = 1
        framed = codecs.encode_chunk(data, ZSTD)
        assert _chosen(framed) != "const", pos
        assert bytes(codecs.decode_chunk(framed, 4096)) == data.tobytes()


@pytest.mark.parametrize("n", [100, 4095, 4096, 1 << 16, 1 << 20])
def test_encode_chunk_random_is_raw(n):
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8)
    framed = codecs.encode_chunk(data, ZSTD)
    assert _chosen(framed) == "raw"
    assert len(framed) <= n + 32  # header + 8-byte check
    assert bytes(codecs.decode_chunk(framed, n)) == data.tobytes()


@pytest.mark.parametrize("data", [COMPRESSIBLE, SKEWED], ids=["text", "skewed"])
def test_encode_chunk_compressible_uses_compressor(data):
    framed = codecs.encode_chunk(data, ZSTD)
    assert _chosen(framed) == "zstd"
    assert framed[0] == TAGS["zstd"]              # one tag byte: the config is not in the frame
    assert codecs.unframe(framed)[1] == ZSTD.encode(memoryview(data))   # the compressor's output
    assert len(framed) < 0.95 * data.size
    assert bytes(codecs.decode_chunk(framed, data.size)) == data.tobytes()


@pytest.mark.parametrize("data", [CONSTANT, RANDOM, COMPRESSIBLE], ids=["const", "raw", "zstd"])
def test_encode_chunk_unchecked_is_the_frame_without_its_check(data):
    framed = codecs.encode_chunk(data, ZSTD)
    inline = codecs.encode_chunk(data, ZSTD, checked=False)
    assert inline == framed[:-8] and framed[-8:] == checksum64(inline)
    assert bytes(codecs.decode_chunk(inline, data.size, checked=False)) == data.tobytes()


def test_encode_chunk_empty():
    framed = codecs.encode_chunk(np.zeros(0, np.uint8), ZSTD)
    assert bytes(codecs.decode_chunk(framed, 0)) == b""


def test_encode_chunk_with_blosc2_compressor():
    b = codecs.get_codec({"id": "blosc2", "clevel": 5, "shuffle": True, "typesize": 1})
    framed = codecs.encode_chunk(COMPRESSIBLE, b)
    assert _chosen(framed) == "blosc2"
    assert bytes(codecs.decode_chunk(framed, COMPRESSIBLE.size)) == COMPRESSIBLE.tobytes()


# ---------------------------------------------------------- damaged frames
def _framed():
    return codecs.encode_chunk(COMPRESSIBLE, ZSTD)


def _rechecked(body: bytes) -> bytes:
    """A chunk frame with a valid check over ``body``: damage the check cannot see."""
    return body + checksum64(body)


@pytest.mark.parametrize("damage", [
    lambda v: b"",
    lambda v: v[:1],
    lambda v: v[:8],
    lambda v: v[:9],                                    # tag + check, no payload
    lambda v: bytes([0]) + v[1:],                       # tag -> raw
    lambda v: bytes([1]) + v[1:],                       # tag -> const
    lambda v: bytes([3]) + v[1:],                       # tag -> blosc2
    lambda v: bytes([4]) + v[1:],                       # unknown tags
    lambda v: bytes([0x80]) + v[1:],
    lambda v: bytes([0xFE]) + v[1:],
    lambda v: bytes([0xFF]) + v[1:],                    # tag -> "JSON config follows"
    lambda v: v[:1] + bytes([v[1] ^ 0x01]) + v[2:],     # payload bytes
    lambda v: v[:len(v) // 2] + bytes([v[len(v) // 2] ^ 0x80]) + v[len(v) // 2 + 1:],
    lambda v: v[:-9] + bytes([v[-9] ^ 0x01]) + v[-8:],  # last payload byte
    lambda v: v[:-1] + bytes([v[-1] ^ 0x01]),           # the check itself
    lambda v: v[:-1],                                   # truncated
    lambda v: v + b"\x00",                              # extended
    lambda v: v[:1] + v[2:],                            # a payload byte dropped
], ids=["empty", "1-byte", "8-bytes", "9-bytes", "tag-raw", "tag-const", "tag-blosc2", "tag4",
        "tag128", "tag254", "tag255", "payload0", "payload-mid", "payload-last", "check",
        "trunc", "extend", "drop"])
def test_unframe_damaged_header_raises_integrity(damage):
    """Any damage to a chunk frame, header or payload, is caught by its check."""
    bad = damage(_framed())
    with pytest.raises(IntegrityError):
        codecs.unframe(bad)
    with pytest.raises(IntegrityError):
        codecs.decode_chunk(bad, COMPRESSIBLE.size)


@pytest.mark.parametrize("tag", [0, 1, 3, 4, 5, 0x7F, 0x80, 0xFE, 0xFF])
@pytest.mark.parametrize("checked", [True, False], ids=["rechecked", "inline"])
def test_wrong_tag_with_valid_check_never_decodes_to_the_data(tag, checked):
    """A tag that lies (written by a bug, or damage under a recomputed check; inline frames
    have no check of their own): decoding raises IntegrityError or returns other bytes
    (which the content address then rejects); it never crashes with another exception."""
    body = _framed()[:-8]
    bad = bytes([tag]) + body[1:]
    value = _rechecked(bad) if checked else bad
    try:
        out = codecs.decode_chunk(value, COMPRESSIBLE.size, checked=checked)
    except IntegrityError:
        return
    assert bytes(out) != COMPRESSIBLE.tobytes()


def _json_frame(config: dict, payload: bytes, checked: bool = True) -> bytes:
    cfg = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
    body = bytes((codecs.TAG_JSON, len(cfg))) + cfg + payload
    return _rechecked(body) if checked else body


class _XorCodec(codecs.Codec):
    """A codec outside the built-in tags: framed with tag 255 and its JSON config."""

    codec_id = "test-xor"

    def __init__(self, key: int = 0x5A):
        self.key = int(key)

    def get_config(self):
        return {"id": self.codec_id, "key": self.key}

    def encode(self, data):
        return bytes(b ^ self.key for b in bytes(data))

    def decode(self, data, size):
        return bytes(b ^ self.key for b in bytes(data))


@pytest.fixture
def registered_xor(monkeypatch):
    monkeypatch.setitem(codecs._REGISTRY, _XorCodec.codec_id, _XorCodec)
    monkeypatch.setattr(codecs, "_config_cache", {})
    return _XorCodec


@pytest.mark.parametrize("checked", [True, False])
def test_registered_codec_frames_with_its_json_config(registered_xor, checked):
    """Tag 255: the frame carries the codec's config, so unframing rebuilds exactly that codec."""
    codec = registered_xor(0x33)
    data = COMPRESSIBLE[:1000].tobytes()
    framed = codecs.frame(codec, codec.encode(data), checked=checked)
    cfg = json.dumps(codec.get_config(), separators=(",", ":"), sort_keys=True).encode()
    assert framed[0] == codecs.TAG_JSON and framed[1] == len(cfg) and framed[2:2 + len(cfg)] == cfg
    got, payload = codecs.unframe(framed, checked=checked)
    assert got == codec and got.get_config() == {"id": "test-xor", "key": 0x33}
    assert bytes(codecs.decode_chunk(framed, len(data), checked=checked)) == data
    # another key is another codec: the config is what decodes, not a default
    other = codecs.frame(registered_xor(0x34), registered_xor(0x34).encode(data), checked=checked)
    assert codecs.unframe(other, checked=checked)[0] != codec
    assert bytes(codecs.decode_chunk(other, len(data), checked=checked)) == data


def test_built_in_codec_under_tag_255_decodes():
    """Tag 255 may name any registered codec, built-ins included (docs/format.md §3)."""
    payload = ZSTD.encode(COMPRESSIBLE.tobytes())
    value = _json_frame({"id": "zstd", "level": 3}, payload)
    assert bytes(codecs.decode_chunk(value, COMPRESSIBLE.size)) == COMPRESSIBLE.tobytes()
    assert codecs.unframe(value)[0] == codecs.get_codec({"id": "zstd", "level": 3})


@pytest.mark.parametrize("checked", [True, False], ids=["rechecked", "inline"])
@pytest.mark.parametrize("damage", [
    lambda cfg: bytes((codecs.TAG_JSON, len(cfg) ^ 0xFF)) + cfg,         # config length
    lambda cfg: bytes((codecs.TAG_JSON, len(cfg) - 1)) + cfg,
    lambda cfg: bytes((codecs.TAG_JSON, len(cfg) + 1)) + cfg,
    lambda cfg: bytes((codecs.TAG_JSON, 0)) + cfg,
    lambda cfg: bytes((codecs.TAG_JSON, len(cfg))) + b"\xff" + cfg[1:],  # config bytes
    lambda cfg: bytes((codecs.TAG_JSON, len(cfg))) + b"[" + cfg[1:-1] + b"]",
    lambda cfg: bytes((codecs.TAG_JSON, len(cfg))) + cfg[:3],            # truncated inside
    lambda cfg: bytes((codecs.TAG_JSON,)),
    lambda cfg: bytes((codecs.TAG_JSON, 3)) + b'"x"',                   # JSON, not an object
    lambda cfg: bytes((codecs.TAG_JSON, 1)) + b"7",
], ids=["len^ff", "len-1", "len+1", "len0", "cfg-ff", "cfg-not-object", "trunc-cfg",
        "no-len", "cfg-string", "cfg-number"])
def test_damaged_json_header_raises_integrity(damage, checked):
    cfg = json.dumps({"id": "zstd", "level": 3}, separators=(",", ":"), sort_keys=True).encode()
    body = damage(cfg) + ZSTD.encode(COMPRESSIBLE.tobytes())
    value = _rechecked(body) if checked else body
    with pytest.raises(IntegrityError):
        codecs.decode_chunk(value, COMPRESSIBLE.size, checked=checked)


def test_unframe_config_with_unknown_parameter_is_integrity_error():
    for checked in (True, False):
        with pytest.raises(IntegrityError):
            codecs.unframe(_json_frame({"id": "zstd", "level": 3, "bogus": 1}, b"payload", checked),
                           checked=checked)


def test_unframe_unknown_codec_is_typed():
    for checked in (True, False):
        value = _json_frame({"id": "zstc"}, b"payload", checked)
        with pytest.raises((IntegrityError, UnsupportedFormat)):
            codecs.decode_chunk(value, 7, checked=checked)


@pytest.mark.parametrize("config", [c for c in ALL_CONFIGS if c["id"] in ("zstd", "blosc2")],
                         ids=lambda c: json.dumps(c, sort_keys=True))
def test_damaged_payload_never_decodes_silently_to_other_size(config):
    codec = codecs.get_codec(config)
    payload = codec.encode(COMPRESSIBLE.tobytes())
    for checked in (True, False):          # chunk objects, and inline frames (no check of their own)
        framed = codecs.frame(codec, payload, checked=checked)
        header = 1
        for cut in (header, header + 1, header + 10, len(framed) - 1):
            with pytest.raises(IntegrityError):
                codecs.decode_chunk(framed[:cut], COMPRESSIBLE.size, checked=checked)
        garbage = framed[:header] + bytes(200)
        with pytest.raises(IntegrityError):
            codecs.decode_chunk(garbage, COMPRESSIBLE.size, checked=checked)


def test_decode_chunk_size_mismatch():
    framed = codecs.encode_chunk(COMPRESSIBLE, ZSTD)
    for size in (COMPRESSIBLE.size - 1, COMPRESSIBLE.size + 1):
        with pytest.raises(IntegrityError):
            codecs.decode_chunk(framed, size)
    raw = codecs.frame(codecs.RAW, b"abc")
    with pytest.raises(IntegrityError):
        codecs.decode_chunk(raw, 4)
    const = codecs.frame(codecs.CONSTANT, b"ab")        # const payload must be one byte
    with pytest.raises(IntegrityError):
        codecs.decode_chunk(const, 2)
    with pytest.raises(IntegrityError):
        codecs.decode_chunk(codecs.frame(codecs.CONSTANT, b""), 3)


def test_frame_refuses_oversized_config():
    class Big(codecs.Codec):
        codec_id = "big"

        def get_config(self):
            return {"id": "big", "pad": "x" * 300}

        def encode(self, data):
            return bytes(data)

        def decode(self, data, size):
            return data

    with pytest.raises(ValueError):
        codecs.frame(Big(), b"x")


def test_zstd_frame_declaring_another_size_is_refused_before_allocating():
    """python-zstandard allocates what a frame header declares, whatever
    max_output_size says: a damaged header once raised MemoryError (decoder fuzz)."""
    import zstandard

    from pas.codecs import Zstd
    from pas.errors import IntegrityError
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(bytes(1 << 20))
    with pytest.raises(IntegrityError, match="declares 1048576 bytes"):
        Zstd().decode(frame, 4096)
    assert bytes(Zstd().decode(frame, 1 << 20)) == bytes(1 << 20)
