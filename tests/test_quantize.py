"""Opt-in lossy float schemes (pas/quantize, issue 7; docs/format.md §5.1).

Each scheme's error bound, NaN/inf/-0.0 handling, exact tensors untouched
(bytes compared, never ``==``), lossy data never sharing an address with
exact data, the manifest's record of scheme and measured error, the CLI
round trip and typed errors for bad scheme names.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT, tensor_fingerprint
from pas import quantize, records
from pas.errors import BadInput, IntegrityError
from pas.quantize import SchemeSpec, measure, parse_scheme
from pas.repo import Repository
from pas.snapshot import Snapshot, Tensor

F32_SPECIALS = np.array([0x7FC00000, 0x7F800001, 0xFFC12345, 0x7F800000, 0xFF800000, 0x80000000, 0x00000000,
                         0x00000001, 0x3F800000], "<u4").view("<f4")


def _bits(a) -> bytes:
    return np.ascontiguousarray(a).tobytes()


def _roundtrip(name, x, dtype="F32"):
    s = parse_scheme(name)
    enc = s.encode(x, dtype)
    return enc, s.decode(enc.stored, enc.side, dtype)


def _weights(seed=0, shape=(64, 48), dist="normal"):
    rng = np.random.default_rng(seed)
    if dist == "laplace":
        return rng.laplace(0, 0.02, shape).astype("<f4")
    return rng.normal(0, 0.05, shape).astype("<f4")


# ----------------------------------------------------------------- grammar
@pytest.mark.parametrize("text,name", [
    ("float16", "float16"), ("FP16", "float16"), ("half", "float16"), ("bf16-trunc", "bf16-trunc"),
    ("bf16-round", "bf16-round"), ("bf16", "bf16-round"), ("fixed:16", "fixed:16"), ("fixed8", "fixed:8"),
    ("fixed:32", "fixed:32"), ("quant-uniform:8", "quant-uniform:8"), ("quant-kmeans:4", "quant-kmeans:4"),
    ("quant-kmeans", "quant-kmeans:8"), ("quant-uniform:1", "quant-uniform:1")])
def test_scheme_names(text, name):
    assert parse_scheme(text).name == name
    assert parse_scheme(name).name == name          # canonical names parse to themselves


@pytest.mark.parametrize("bad", ["bogus", "fixed", "fixed:1", "fixed:33", "quant-kmeans:9", "quant-uniform:0",
                                 "quant:4", "float17", "", "bf16-nearest"])
def test_bad_scheme_names_are_bad_input(bad):
    with pytest.raises(BadInput):
        parse_scheme(bad)


def test_rules_first_glob_wins_keep_exact_first():
    spec = SchemeSpec.parse(["fc.*=fixed:8", "quant-kmeans:4", "*.bias=float16"], keep_exact=["fc.skip*"])
    assert spec.rule("fc.skip.weight").scheme is None
    assert spec.rule("fc.weight").scheme.name == "fixed:8"
    assert spec.rule("conv.bias").scheme.name == "float16"
    assert spec.rule("conv.weight").scheme.name == "quant-kmeans:4" and spec.rule("conv.weight").pattern is None
    assert spec.texts == ["fc.skip*=exact", "fc.*=fixed:8", "*.bias=float16", "quant-kmeans:4"]
    with pytest.raises(BadInput, match="two default"):
        SchemeSpec.parse(["float16", "fixed:16"])
    with pytest.raises(BadInput, match="empty tensor glob"):
        SchemeSpec.parse(["=float16"])
    assert SchemeSpec.parse(None) is None and SchemeSpec.parse(["exact"], keep_exact=["x"]) is None


# ----------------------------------------------------------- error bounds
def test_float16_is_numpy_rounding_and_half_ulp():
    x = _weights()
    enc, back = _roundtrip("float16", x)
    assert enc.stored_dtype == "F16" and back.dtype == np.dtype("<f4") and back.shape == x.shape
    assert _bits(back) == _bits(x.astype("<f2").astype("<f4"))
    normal = np.abs(x) >= 2.0 ** -14
    ulp = 2.0 ** (np.floor(np.log2(np.abs(x[normal].astype(np.float64)))) - 10)
    assert (np.abs(back[normal].astype(np.float64) - x[normal]) <= ulp / 2).all()


def test_bf16_round_half_ulp_and_matches_torch():
    x = np.concatenate([_weights().ravel(), np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8)], "<f4")])
    enc, back = _roundtrip("bf16-round", x)
    assert enc.stored_dtype == "BF16" and enc.stored.dtype == np.dtype("<u2")
    x64, b64 = x.astype(np.float64), back.astype(np.float64)
    nz = x != 0
    ulp = 2.0 ** (np.floor(np.log2(np.abs(x64[nz]))) - 7)
    assert (np.abs(b64[nz] - x64[nz]) <= ulp / 2).all()
    # Ties go to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 -> 1; 1 + 3*2^-8 -> 1 + 2^-6.
    assert back[-3] == 1.0 and back[-2] == 1 + 2 ** -6 and back[-1] == -1.0
    # An independent reference: the nearer of the two neighbouring bfloat16 numbers, ties to even.
    lo = (x.view("<u4") & 0xFFFF0000).view("<f4").astype(np.float64)          # toward zero
    hi = ((x.view("<u4") & 0xFFFF0000) + 0x10000).view("<f4").astype(np.float64)  # next away from zero
    dlo, dhi = np.abs(x64 - lo), np.abs(hi - x64)
    even_lo = ((x.view("<u4") >> 16) & 1) == 0
    ref = np.where((dlo < dhi) | ((dlo == dhi) & even_lo), lo, hi)
    assert _bits(b64) == _bits(ref)


def test_bf16_trunc_keeps_top_16_bits():
    x = _weights()
    enc, back = _roundtrip("bf16-trunc", x)
    assert _bits(back) == _bits((x.view("<u4") & 0xFFFF0000).view("<f4"))
    assert (np.abs(back) <= np.abs(x)).all()            # toward zero
    x64 = x.astype(np.float64)
    ulp = 2.0 ** (np.floor(np.log2(np.abs(x64))) - 7)
    assert (np.abs(back - x64) < ulp).all()


@pytest.mark.parametrize("bits", [2, 4, 8, 12, 16, 24, 32])
def test_fixed_point_within_half_step(bits):
    x = _weights(bits, dist="laplace")
    enc, back = _roundtrip(f"fixed:{bits}", x)
    e = enc.side["exponent"]
    qmax = 2 ** (bits - 1) - 1
    q = enc.stored.astype(np.int64)
    assert enc.stored_dtype == ("I8" if bits <= 8 else "I16" if bits <= 16 else "I32")
    assert np.abs(q).max() <= qmax
    assert np.rint(np.abs(x).max() / 2.0 ** (e - 1)) > qmax    # E is the smallest that fits
    err = np.abs(back.astype(np.float64) - x.astype(np.float64))
    bound = 2.0 ** (e - 1) + (np.spacing(np.abs(x)).astype(np.float64) / 2 if bits > 24 else 0)
    assert (err <= bound).all()


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_quant_uniform_within_half_step(bits):
    x = _weights(bits, dist="laplace")
    enc, back = _roundtrip(f"quant-uniform:{bits}", x)
    table = np.frombuffer(bytes.fromhex(enc.side["table"]), "<f4")
    assert enc.stored_dtype == "U8" and table.shape[0] <= 2 ** bits and enc.stored.max() < table.shape[0]
    lo, hi = float(x.min()), float(x.max())
    step = (hi - lo) / (2 ** bits - 1)
    err = np.abs(back.astype(np.float64) - x)
    assert err.max() <= step / 2 + np.spacing(np.float32(max(abs(lo), abs(hi))))
    assert _bits(back) == _bits(table[enc.stored])


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quant_kmeans_nearest_and_beats_uniform(bits):
    x = _weights(bits, shape=(200, 250), dist="laplace")
    enc, back = _roundtrip(f"quant-kmeans:{bits}", x)
    table = np.frombuffer(bytes.fromhex(enc.side["table"]), "<f4").astype(np.float64)
    assert table.shape[0] <= 2 ** bits and (np.diff(table) > 0).all()
    # Every element has its nearest table value.
    err = np.abs(back.astype(np.float64) - x)
    best = np.abs(x.reshape(-1, 1).astype(np.float64) - table[None, :]).min(1).reshape(x.shape)
    assert _bits(err) == _bits(best)
    # Lloyd starts at the uniform table and only lowers the squared error.
    _, uni = _roundtrip(f"quant-uniform:{bits}", x)
    assert measure(x, back, "F32")["rel_l2_error"] <= measure(x, uni, "F32")["rel_l2_error"] * (1 + 1e-6)
    enc2, _ = _roundtrip(f"quant-kmeans:{bits}", x)     # deterministic
    assert enc2.side == enc.side and _bits(enc2.stored) == _bits(enc.stored)


def test_other_source_dtypes():
    rng = np.random.default_rng(3)
    x16 = rng.normal(0, 1, (40, 40)).astype("<f2")
    enc, back = _roundtrip("fixed:8", x16, "F16")
    assert back.dtype == np.dtype("<f2") and enc.stored_dtype == "I8"
    bf = (rng.normal(0, 1, (40, 40)).astype("<f4").view("<u4") >> 16).astype("<u2")
    enc, back = _roundtrip("quant-kmeans:4", bf, "BF16")
    assert back.dtype == np.dtype("<u2")                     # BF16 bit view, as pas holds BF16
    assert np.frombuffer(bytes.fromhex(enc.side["table"]), "<u2").shape[0] <= 16
    x64 = rng.normal(0, 1, (40, 40))
    _, back = _roundtrip("float16", x64, "F64")
    assert back.dtype == np.dtype("<f8")
    for name, dtype in (("float16", "F16"), ("bf16-round", "F64"), ("fixed:17", "BF16"), ("fixed:32", "F16")):
        with pytest.raises(quantize.Refused):
            parse_scheme(name).check(dtype)


# ------------------------------------------------------ NaN, inf, -0.0
@pytest.mark.parametrize("name", ["float16", "bf16-trunc", "bf16-round"])
def test_float_schemes_keep_nan_inf_signed_zero(name):
    enc, back = _roundtrip(name, F32_SPECIALS)
    b = back.view("<u4")
    assert np.isnan(back[:3]).all()                        # incl. 0x7F800001, whose payload is in the low bits
    assert np.signbit(back[2])
    assert back[3] == np.inf and back[4] == -np.inf
    assert b[5] == 0x80000000 and b[6] == 0                  # -0.0 stays -0.0
    assert back[8] == 1.0
    assert measure(F32_SPECIALS, back, "F32")["max_abs_error"] < 1e-44   # only the subnormal 2**-149 moves


@pytest.mark.parametrize("name", ["fixed:16", "quant-uniform:8", "quant-kmeans:4"])
def test_fixed_and_quant_refuse_non_finite_and_zero_sign(name):
    x = _weights()
    x[3, 3] = np.nan
    with pytest.raises(quantize.Refused):
        parse_scheme(name).encode(x, "F32")
    x[3, 3] = np.inf
    with pytest.raises(quantize.Refused):
        parse_scheme(name).encode(x, "F32")
    z = np.array([[-0.0, 0.0, 1.0, -1.0, 0.5]], "<f4")
    _, back = _roundtrip(name, z)
    assert _bits(back[0, 0]) == _bits(back[0, 1])            # -0.0 codes as +0.0 (documented)
    if name.startswith("fixed"):
        assert _bits(back[0, 0]) == _bits(np.float32(0))      # fixed point: exactly +0.0


def test_overflow_and_non_finite_keep_tensors_exact(mem_repo):
    s = Snapshot()
    big = _weights(shape=(64, 64))
    big[0, 0] = 1e5                                          # beyond float16
    s.add(Tensor.from_array("big", big))
    top = _weights(1, shape=(64, 64))
    top[0, 0] = np.finfo(np.float32).max                      # rounds to inf in bf16
    s.add(Tensor.from_array("top", top))
    nan = _weights(2, shape=(64, 64))
    nan[1, 1] = np.nan
    s.add(Tensor.from_array("nan", nan))
    s.add(Tensor.from_array("ok", _weights(3, shape=(64, 64))))
    r16 = mem_repo.archive_snapshot(s, "a", scheme=["float16", "top=bf16-round", "nan=fixed:8"])
    v = mem_repo.version(r16.version_id)
    lossy = {e.name for e in v.tensors if e.lossy}
    assert lossy == {"ok"}
    assert set(v.lossy["exact"]) == {"big", "top", "nan"}
    got = mem_repo.retrieve(r16.version_id)
    for n in ("big", "top", "nan"):
        assert tensor_fingerprint(got.tensors[n]) == tensor_fingerprint(s.tensors[n])


# --------------------------------------------------------- repository
def _model(seed=0) -> Snapshot:
    rng = np.random.default_rng(seed)
    s = Snapshot(metadata={"m": "1"})
    s.add(Tensor.from_array("conv.weight", rng.normal(0, 0.1, (16, 8, 3, 3)).astype("<f4")))
    s.add(Tensor.from_array("conv.bias", rng.normal(0, 0.1, 16).astype("<f4")))
    s.add(Tensor.from_array("bn.num_batches_tracked", np.array(7, "<i8").reshape(())))
    s.add(Tensor.from_array("bn.running_var", rng.random(16).astype("<f4")))
    s.add(Tensor.from_array("fc.weight", rng.normal(0, 0.05, (64, 128)).astype("<f4")))
    s.add(Tensor.from_array("head.weight", rng.normal(0, 0.05, (10, 64)).astype("<f4")))   # 640 < 1024
    s.add(Tensor.from_array("ids", rng.integers(0, 100, (32, 64)).astype("<i8")))
    s.add(Tensor.from_array("emb.f16", rng.normal(0, 1, (32, 64)).astype("<f2")))
    s.files["config.json"] = b'{"a": 1}'
    return s


@pytest.mark.parametrize("scheme", ["float16", "bf16-trunc", "bf16-round", "fixed:16", "fixed:8",
                                    "quant-uniform:8", "quant-kmeans:4"])
def test_archive_lossy_version(any_repo, scheme):
    s = _model()
    res = any_repo.archive_snapshot(s, "m", scheme=scheme, keep_exact=["emb.*"])
    v = any_repo.version(res.version_id)
    lossy = {e.name: e for e in v.tensors if e.lossy}
    # The default rule: float matrices of >= 1024 elements; ints, 1-D, small and kept-exact ones exact.
    assert set(lossy) == {"conv.weight", "fc.weight"}
    assert v.lossy == res.lossy and v.lossy["schemes"] == [scheme] and v.lossy["tensors"] == 2
    assert v.logical_bytes == s.nbytes and quantize.label(v.lossy) == f"lossy ({scheme})"
    got = any_repo.retrieve(res.version_id)
    for n, t in s.tensors.items():
        g = got.tensors[n]
        assert (g.dtype, g.shape) == (t.dtype, t.shape)
        if n in lossy:
            e = lossy[n]
            info = e.lossy
            assert info["scheme"] == scheme and info["dtype"] == "F32" and info["nbytes"] == t.nbytes
            assert records.is_lossy_address(e.object)
            m = measure(t.data, g.data, "F32")       # the recorded error is the retrieved data's error
            assert info["max_abs_error"] == m["max_abs_error"] and info["rel_l2_error"] == m["rel_l2_error"]
            assert 0 < info["rel_l2_error"] < 0.5
            assert _bits(g.data) != _bits(t.data)
        else:
            assert tensor_fingerprint(g) == tensor_fingerprint(t)   # exact tensors untouched, bit for bit
    assert got.files == s.files
    assert any_repo.verify().ok


def test_lossy_never_shares_an_address_with_exact_data(mem_repo):
    s = _model()
    exact = mem_repo.version(mem_repo.archive_snapshot(s, "exact").version_id)
    # bf16-trunc of a tensor whose values are already bfloat16 numbers stores the very
    # bits of an exact BF16 tensor: archive that exact BF16 tensor too.
    w = (_weights(5).view("<u4") & 0xFFFF0000).view("<f4")
    bf = Snapshot()
    bf.add(Tensor.from_array("w", (w.view("<u4") >> 16).astype("<u2"), dtype="BF16"))
    bf_exact = mem_repo.version(mem_repo.archive_snapshot(bf, "bf-exact").version_id)
    src = Snapshot()
    src.add(Tensor.from_array("w", w))
    for scheme in ("bf16-trunc", "float16", "quant-kmeans:4"):
        lossy = mem_repo.version(mem_repo.archive_snapshot(s, "lossy-" + scheme.replace(":", "-"), scheme=scheme).version_id)
        exact_objects = {e.object for e in exact.tensors}
        for e in lossy.tensors:
            if e.lossy:
                assert e.object not in exact_objects
                assert e.object[-1] >= records.LOSSY_VARIANT
            else:
                assert e.object in exact_objects                 # exact tensors are shared, as always
    lossy_bf = mem_repo.version(mem_repo.archive_snapshot(src, "bf-lossy", scheme="bf16-trunc").version_id)
    le, ee = lossy_bf.tensors[0], bf_exact.tensors[0]
    assert le.lossy and (le.dtype, le.shape) == (ee.dtype, ee.shape)
    assert records.address_digest(le.object) == records.address_digest(ee.object)   # same bits ...
    assert le.object != ee.object                                                    # ... never the same object
    assert all(e.object[-1] < records.LOSSY_VARIANT for v in (exact, bf_exact) for e in v.tensors)
    got = mem_repo.retrieve("bf-lossy").tensors["w"]
    assert got.dtype == "F32" and _bits(got.data) == _bits(w)
    assert _bits(mem_repo.retrieve("bf-exact").tensors["w"].data) == _bits(bf.tensors["w"].data)
    # Two lossy archives of one source with one scheme do share (lossy with lossy).
    again = mem_repo.version(mem_repo.archive_snapshot(src, "bf-lossy2", scheme="bf16-trunc").version_id)
    assert again.tensors[0].object == le.object
    assert mem_repo.verify().ok


def test_glob_rules_override_the_size_rule(mem_repo):
    s = _model()
    res = mem_repo.archive_snapshot(s, "m", scheme=["head.*=fixed:8", "*.bias=float16", "ids=float16"])
    v = mem_repo.version(res.version_id)
    by = {e.name: e for e in v.tensors}
    assert by["head.weight"].lossy["scheme"] == "fixed:8" and by["conv.bias"].lossy["scheme"] == "float16"
    assert by["fc.weight"].lossy is None                    # no default rule: untouched
    assert by["ids"].lossy is None and "ids" in v.lossy["exact"]   # named, but not a float tensor
    assert v.lossy["schemes"] == ["fixed:8", "float16"]


def test_no_qualifying_tensor_gives_an_exact_version(mem_repo):
    s = Snapshot()
    s.add(Tensor.from_array("b", np.ones(10, "<f4")))
    res = mem_repo.archive_snapshot(s, "m", scheme="quant-kmeans:4")
    assert res.lossy is None and mem_repo.version(res.version_id).lossy is None


def test_lossy_series_with_deltas_and_api(tmp_path):
    from pas import api
    repo = Repository.init(tmp_path / "r")
    srcs = []
    rng = np.random.default_rng(9)
    w = rng.normal(0, 0.05, (256, 256)).astype("<f4")
    for i in range(3):
        w = w + rng.normal(0, 1e-4, w.shape).astype("<f4")
        s = Snapshot()
        s.add(Tensor.from_array("w", w.copy()))
        s.add(Tensor.from_array("b", np.zeros(256, "<f4")))
        srcs.append(s)
    for i, s in enumerate(srcs):
        repo.archive_snapshot(s, "run", scheme="bf16-round", message=f"v{i}")
    v = repo.version("run")
    assert v.parent is not None and v.tensors[0].lossy
    loaded = api.load(repo, "run")
    assert loaded["w"].dtype == np.dtype("<f4")
    with api.VersionHandle(repo, "run") as h:
        assert h.dtype("w") == "F32"
        assert _bits(h.get_tensor("w")) == _bits(loaded["w"])
        assert _bits(h.get_rows("w", 3, 9)) == _bits(loaded["w"][3:9])
        with pytest.raises(BadInput, match="lossy"):
            h.get_approx("w", 1)
        with pytest.raises(BadInput, match="lossy"):
            h.get_interval("w", 1)
    top = repo.retrieve("run", top_bytes=1)            # lossy tensors come back whole, decoded
    assert _bits(top.tensors["w"].data) == _bits(loaded["w"])
    assert repo.verify().ok
    repo.close()


def test_malformed_lossy_entries_are_integrity_errors(mem_repo):
    s = _model()
    res = mem_repo.archive_snapshot(s, "m", scheme="quant-kmeans:4")
    v = mem_repo.version(res.version_id)
    e = next(e for e in v.tensors if e.lossy)
    stored = mem_repo.read_entry(e)
    for bad in ({**e.lossy, "scheme": "quant-kmeans:9"}, {**e.lossy, "table": "zz"},
                {**e.lossy, "table": e.lossy["table"][:8]}, {**e.lossy, "dtype": "I32"},
                {**e.lossy, "scheme": "float16"}):
        with pytest.raises(IntegrityError):
            quantize.decode(bad, stored, e.dtype, e.shape)
    m = json.loads(json.dumps(v.manifest))
    m["tensors"][0]["lossy"] = "float16"
    with pytest.raises(IntegrityError):
        records.Version(v.id, m)


def test_quantize_does_not_import_torch():
    code = "import sys, pas.quantize, pas.cli, pas.repo; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT).returncode == 0


# ------------------------------------------------------------------ CLI
def test_cli_round_trip(tmp_path):
    from test_cli import parallel, pas, pas_json
    from pas import formats
    s = _model()
    src = tmp_path / "m.safetensors"
    s.files = {}
    formats.write(s, src, "safetensors")
    repo = tmp_path / "repo"
    bad = parallel(   # bad names fail before the repository is opened: typed, exit 4, one error line
        lambda: pas("--repo", repo, "archive", src, "-n", "x", "--scheme", "quant-kmeans:12", expect=4).stderr,
        lambda: pas("--repo", repo, "archive", src, "-n", "x", "--scheme", "nope", expect=4).stderr,
        lambda: pas("--repo", repo, "archive", src, "-n", "x", "--keep-exact", "fc.*", expect=4).stderr,
        lambda: pas("init", repo))
    assert "1 to 8 bits" in bad[0] and "unknown scheme 'nope'" in bad[1] and "--scheme" in bad[2]
    out = pas_json("--repo", repo, "archive", src, "-n", "q", "--scheme", "quant-kmeans:4",
                   "--scheme", "fc.*=fixed:16", "--keep-exact", "conv.*")
    assert out["lossy"]["schemes"] == ["fixed:16", "quant-kmeans:4"] and out["lossy"]["tensors"] == 2
    out = pas_json("--repo", repo, "archive", src, "-n", "k", "--scheme", "quant-kmeans:4",
                   "--keep-exact", "emb.*")
    assert out["lossy"]["schemes"] == ["quant-kmeans:4"] and out["lossy"]["tensors"] == 2
    pas("--repo", repo, "archive", src, "-n", "e")
    log, show_k, show_e, ls_k, refs, _, _ = parallel(
        lambda: pas("--repo", repo, "log").stdout,
        lambda: pas("--repo", repo, "show", "k").stdout,
        lambda: pas("--repo", repo, "show", "e").stdout,
        lambda: pas_json("--repo", repo, "ls", "k"),
        lambda: pas_json("--repo", repo, "ls"),
        lambda: pas("--repo", repo, "retrieve", "k", "-o", tmp_path / "out.safetensors"),
        lambda: pas("--repo", repo, "verify"))
    assert "lossy (quant-kmeans:4)" in log and "lossy (fixed:16, quant-kmeans:4)" in log
    assert sum("lossy" in line for line in log.splitlines()) == 2
    assert "lossy (quant-kmeans:4)" in show_k and "bit-exact" in show_e
    rows = {r["name"]: r for r in ls_k}
    assert rows["fc.weight"]["lossy"] == "quant-kmeans:4" and rows["fc.weight"]["dtype"] == "F32"
    assert rows["fc.weight"]["stored_dtype"] == "U8" and "lossy" not in rows["conv.bias"]
    assert "x" not in {r["ref"] for r in refs}
    got = formats.read(tmp_path / "out.safetensors")
    with Repository.open(repo) as r:
        want = r.retrieve("k")
    for n, t in s.tensors.items():
        assert (got.tensors[n].dtype, got.tensors[n].shape) == (t.dtype, t.shape)
        assert _bits(got.tensors[n].data) == _bits(want.tensors[n].data)
    assert _bits(got.tensors["conv.bias"].data) == _bits(s.tensors["conv.bias"].data)
    assert _bits(got.tensors["fc.weight"].data) != _bits(s.tensors["fc.weight"].data)
