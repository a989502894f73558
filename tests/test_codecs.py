"""Codecs and chunk framing: round trips, codec choice, damaged headers, configs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pas import codecs
from pas.errors import IntegrityError, UnsupportedFormat

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
    assert set(codecs._REGISTRY) == set(CONFIGS), "a codec was registered: add it to CONFIGS"


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
    # through the chunk frame, with the codec forced
    framed = codecs.frame(codec, payload)
    assert bytes(codecs.decode_chunk(framed, data.size)) == data.tobytes()
    got_codec, got_payload = codecs.unframe(framed)
    assert got_codec == codec and bytes(got_payload) == payload


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
    assert codecs.unframe(framed)[0] == ZSTD
    assert len(framed) < 0.95 * data.size
    assert bytes(codecs.decode_chunk(framed, data.size)) == data.tobytes()


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


@pytest.mark.parametrize("damage", [
    lambda v: b"",
    lambda v: v[:1],
    lambda v: bytes([0]) + v[1:],                       # unknown chunk version
    lambda v: bytes([2]) + v[1:],
    lambda v: bytes([0xFF]) + v[1:],
    lambda v: v[:1] + bytes([v[1] ^ 0xFF]) + v[2:],     # config length
    lambda v: v[:1] + bytes([v[1] - 1]) + v[2:],
    lambda v: v[:1] + bytes([v[1] + 1]) + v[2:],
    lambda v: v[:1] + bytes([0]) + v[2:],
    lambda v: v[:2] + b"\xff" + v[3:],                  # config bytes
    lambda v: v[:2] + v[2:3].lower().replace(b"{", b"[") + v[3:],
    lambda v: v[:3],                                    # truncated inside the config
], ids=["empty", "1-byte", "ver0", "ver2", "ver255", "len^ff", "len-1", "len+1", "len0",
        "cfg-ff", "cfg-not-object", "trunc-cfg"])
def test_unframe_damaged_header_raises_integrity(damage):
    bad = damage(_framed())
    with pytest.raises(IntegrityError):
        codecs.unframe(bad)
    with pytest.raises(IntegrityError):
        codecs.decode_chunk(bad, COMPRESSIBLE.size)


def test_unframe_config_with_unknown_parameter_is_integrity_error():
    cfg = json.dumps({"id": "zstd", "level": 3, "bogus": 1}, separators=(",", ":")).encode()
    with pytest.raises(IntegrityError):
        codecs.unframe(bytes((codecs.CHUNK_VERSION, len(cfg))) + cfg + b"payload")


def test_unframe_unknown_codec_is_typed():
    cfg = b'{"id":"zstc"}'
    value = bytes((codecs.CHUNK_VERSION, len(cfg))) + cfg + b"payload"
    with pytest.raises((IntegrityError, UnsupportedFormat)):
        codecs.decode_chunk(value, 7)


@pytest.mark.parametrize("config", [c for c in ALL_CONFIGS if c["id"] in ("zstd", "blosc2")],
                         ids=lambda c: json.dumps(c, sort_keys=True))
def test_damaged_payload_never_decodes_silently_to_other_size(config):
    codec = codecs.get_codec(config)
    framed = codecs.frame(codec, codec.encode(COMPRESSIBLE.tobytes()))
    header = len(framed) - len(codec.encode(COMPRESSIBLE.tobytes()))
    for cut in (header, header + 1, header + 10, len(framed) - 1):
        with pytest.raises(IntegrityError):
            codecs.decode_chunk(framed[:cut], COMPRESSIBLE.size)
    garbage = framed[:header] + bytes(200)
    with pytest.raises(IntegrityError):
        codecs.decode_chunk(garbage, COMPRESSIBLE.size)


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
