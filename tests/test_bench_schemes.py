"""Benchmark schemes defined as data (bench/pas_configs.toml), the plug-in codec
example (bench/plugins/example_codec.py) and the ZipNN scheme."""
from __future__ import annotations

import importlib.util
import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bench import schemes, tensorio

pytestmark = pytest.mark.skipif(schemes.Pas.available() is not None, reason="pas.repo not available")

REPO_ROOT = Path(__file__).resolve().parent.parent


def _lineage(root: Path) -> list[tuple[str, Path, int | None]]:
    """Three versions, v0 <- v1 <- v2: (name, path, parent index). Big enough
    (~260 KB of float32) that pas deltas the fine-tuned tensors."""
    rng = np.random.default_rng(7)
    t = {
        "w": rng.normal(0, 0.02, (256, 128)).astype("<f4"),
        "e": rng.normal(0, 0.02, (128, 64)).astype("<f4"),
        "b": np.zeros(64, "<f4"),
        "h": (rng.normal(0, 0.02, (32, 64)).astype("<f4").view("<u4") >> 16).astype("<u2"),
        "steps": np.array(3, "<i8"),
    }
    dts = {"h": "BF16"}
    out = []
    for i in range(3):
        p = root / f"v{i}.safetensors"
        tensorio.write_safetensors(p, t, dts)
        out.append((f"v{i}", p, i - 1 if i else None))
        t = dict(t)
        t["w"] = (t["w"] + rng.normal(0, 1e-4, t["w"].shape)).astype("<f4")
        t["e"] = (t["e"] + rng.normal(0, 1e-4, t["e"].shape)).astype("<f4")
        t["steps"] = np.array(3 + i + 1, "<i8")
    return out


def _roundtrip(cls, tmp_path: Path):
    """Archive the lineage, close, reopen read-only, retrieve: every tensor bit-exact."""
    versions = _lineage(tmp_path / "data")
    s = cls(tmp_path / "store")
    ids = []
    for name, path, parent in versions:
        ids.append(s.archive(path, ids[parent] if parent is not None else None, name=name))
    s.close()
    s.reopen()
    assert s.physical_bytes() > 0
    for sid, (_, path, _) in zip(ids, versions):
        src, got = tensorio.load(path), s.retrieve(sid)
        assert set(src) == set(got)
        for n in src:
            assert tensorio.same_bytes(src[n], got[n]) is None, (cls.name, n, tensorio.same_bytes(src[n], got[n]))
        assert tensorio.same_bytes(src["w"], s.retrieve_one(sid, "w")) is None
    return s, ids


# ------------------------------------------------------------------ the config file
def test_every_config_entry_builds_a_scheme(tmp_path):
    entries = schemes.load_pas_configs()
    assert {"pas-zstd3", "pas-blosc2", "pas-planes-only", "pas-xor", "pas-sub", "pas-whole",
            "pas-depth8", "pas-chunk256k", "pas-example-codec"} <= set(entries)
    assert schemes.PAS_CONFIGS == list(entries)
    for name, entry in entries.items():
        cls = schemes.SCHEMES[name]
        assert issubclass(cls, schemes.Pas) and cls.name == name
        assert entry["description"] and entry["description"] in cls.description
        assert cls.available() is None, (name, cls.available())
        s = cls(tmp_path / name)          # creates the repository: the overrides are valid
        try:
            cfg = s.repo.config
            for k, v in cls.overrides.items():
                if isinstance(v, dict) and "id" not in v:
                    assert {kk: cfg[k][kk] for kk in v} == v, name
                else:
                    assert cfg[k] == v, name
        finally:
            s.close()


def test_default_schemes_are_the_alternatives_pas_and_zipnn():
    assert schemes.DEFAULT_SCHEMES == ["raw", "zstd3", "blosc2", "xor3", "paper", "patch-from", "pas", "zipnn"]
    assert not set(schemes.DEFAULT_SCHEMES) & set(schemes.PAS_CONFIGS)
    assert all(n in schemes.SCHEMES for n in schemes.DEFAULT_SCHEMES)


def test_merge_config():
    base = {"codec": {"id": "zstd", "level": 1}, "delta": {"max_depth": 4, "ops": ["xor", "sub"]}}
    schemes.merge_config(base, {"codec": {"id": "blosc2"}, "delta": {"ops": ["xor"]}})
    assert base == {"codec": {"id": "blosc2"}, "delta": {"max_depth": 4, "ops": ["xor"]}}


# ------------------------------------------------------------------ variants round-trip
def test_pas_xor_roundtrip(tmp_path):
    s, _ = _roundtrip(schemes.SCHEMES["pas-xor"], tmp_path)
    s.close()


def test_pas_whole_stores_no_deltas(tmp_path):
    s, ids = _roundtrip(schemes.SCHEMES["pas-whole"], tmp_path)
    try:
        for sid in ids:
            for e in s.repo.version(sid).tensors:
                assert s.repo.reader.parse(e.object).base is None, e.name
    finally:
        s.close()
    # while the default configuration does delta the fine-tuned tensors
    d, ids = _roundtrip(schemes.Pas, tmp_path / "default")
    try:
        bases = {e.name: d.repo.reader.parse(e.object).base for e in d.repo.version(ids[2]).tensors}
        assert bases["w"] is not None
    finally:
        d.close()


def test_plugin_codec_is_used_and_roundtrips(tmp_path):
    from pas import codecs
    from pas.records import CHUNK
    s, ids = _roundtrip(schemes.SCHEMES["pas-example-codec"], tmp_path)
    try:
        assert s.repo.config["codec"] == {"id": "example-zlib", "level": 6}
        frames = []
        for sid in ids:
            for e in s.repo.version(sid).tensors:
                lay = s.repo.reader.parse(e.object)
                frames += [(bytes(f), False) for f in lay.inline or ()]
                frames += [(s.repo.store.get(CHUNK + a), True) for plane in lay.addrs for a in plane]
        assert frames
        used = {}
        for value, checked in frames:
            codec, _ = codecs.unframe(value, checked)
            used[codec.get_config()["id"]] = used.get(codec.get_config()["id"], 0) + 1
            if codec.get_config()["id"] == "example-zlib":
                assert value[0] == codecs.TAG_JSON
                n = value[1]
                assert json.loads(value[2:2 + n]) == {"id": "example-zlib", "level": 6}
        # the exponent planes compress: they go through the plug-in (mantissa planes stay raw)
        assert used.get("example-zlib", 0) > 0, used
        assert "zstd" not in used, used
    finally:
        s.close()


# ------------------------------------------------------------------ bad entries
def _bad_entry(tmp_path, entry: dict, name: str = "pas-bad"):
    cls = schemes.pas_variant(name, entry)
    with pytest.raises(ValueError) as ei:
        cls(tmp_path / name).close()
    return str(ei.value)


def test_unknown_codec_is_a_clear_error(tmp_path):
    msg = _bad_entry(tmp_path, {"description": "typo", "codec": {"id": "zlibb"}})
    assert "pas-bad" in msg and "zlibb" in msg and "unknown codec" in msg and "plugin" in msg


def test_unknown_config_keys_are_errors(tmp_path):
    msg = _bad_entry(tmp_path, {"delta": {"max_dpeth": 2}})
    assert "delta.max_dpeth" in msg and "max_depth" in msg
    msg = _bad_entry(tmp_path, {"deltas": {"max_depth": 2}})
    assert "'deltas'" in msg
    msg = _bad_entry(tmp_path, {"layouts": ["planes", "bitfields"]})
    assert "bitfields" in msg


def test_missing_plugin_is_skipped_with_its_reason():
    cls = schemes.pas_variant("pas-missing", {"plugin": "bench.plugins.no_such_codec", "codec": {"id": "x"}})
    why = cls.available()
    assert why and "bench.plugins.no_such_codec" in why


def test_config_file_clash_and_structure(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[raw]\ndescription = "x"\n')
    with pytest.raises(ValueError, match="clashes"):
        schemes.register_pas_configs(p)
    p.write_text('pas-x = 3\n')
    with pytest.raises(TypeError, match="table"):
        schemes.load_pas_configs(p)


# ------------------------------------------------------------------ ZipNN
def test_zipnn_roundtrip_or_skip(tmp_path):
    why = schemes.ZipNNPerTensor.available()
    if why is not None:
        assert "zipnn" in why
        pytest.skip(why)
    s, ids = _roundtrip(schemes.ZipNNPerTensor, tmp_path)
    with open(tmp_path / "store" / f"{ids[0]}.znn", "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        index = json.loads(f.read(hlen))
    assert index["w"]["codec"] == "zipnn" and index["h"]["codec"] == "zipnn"
    assert index["steps"]["codec"] == "zstd"
    assert index["w"]["frames"][0] < 0.9 * 256 * 128 * 4      # ZipNN compresses float32 weights
    s.close()


@pytest.mark.skipif(importlib.util.find_spec("zipnn") is None, reason="zipnn not installed")
def test_zipnn_imports_without_torch(tmp_path):
    """ZipNN's byte mode through stand-ins for torch and safetensors (a subprocess with torch blocked)."""
    code = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None          # as if torch were not installed
        import numpy as np
        from bench import schemes
        z = schemes.import_zipnn().ZipNN(input_format="byte", bytearray_dtype="float32", threads=1)
        a = np.random.default_rng(0).normal(0, 0.02, 50000).astype("<f4")
        c = z.compress(a.tobytes())
        assert bytes(z.decompress(c)) == a.tobytes() and len(c) < a.nbytes
        try:
            import torch
        except ImportError:
            print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
