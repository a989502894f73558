"""Kernel micro-benchmarks: split, merge, delta, hash and codec kernels, each
timed on the same weights as a memcpy of them (the denominator of every ratio).

Every benchmark records ``extra_info``: ``kernel`` (the label in the table),
``bytes`` (logical bytes processed: the tensor's bytes for split/merge/delta,
the uncompressed plane bytes for codecs, the hashed bytes for hashes) and
``order`` (run order, for the table). ``python -m bench.micro`` turns the
JSON into ratios; ``test_roundtrips`` checks that what is timed is correct.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import xxhash

from pas import codecs, delta, hashing, planes
from pas.delta import select

from .conftest import CHUNK, ROUNDS, SAMPLE, Inputs

DTYPES = ("F32", "BF16")
LAYOUTS = ("planes", "planes-exp")
OPS = (None, "xor", "sub")
CODECS = {"zstd-1": lambda: codecs.Zstd(level=1), "blosc2": lambda: codecs.Blosc2()}
CODEC_PLANES = (0, 3)         # F32 planes-exp: 0 = the exponent (compressible), 3 = low mantissa (near random)

_order = itertools.count()


def _run(benchmark, group: str, label: str, nbytes: int, fn, setup=None):
    benchmark.group = group
    benchmark.extra_info.update(kernel=label, bytes=int(nbytes), order=next(_order))
    return benchmark.pedantic(fn, setup=setup, rounds=ROUNDS, warmup_rounds=1, iterations=1)


def _ids(op):
    return op or "whole"


def _chunks(a: np.ndarray) -> list[np.ndarray]:
    return [a[i:i + CHUNK] for i in range(0, a.shape[0], CHUNK)]


def _sample(inputs: Inputs) -> np.ndarray:
    """A (4, 16384) plane sample, as pas.delta.select.choose takes it."""
    words = inputs.child["F32"]
    idx = slice(None, None, max(1, words.shape[0] // SAMPLE[1]))
    return planes.split(words[idx][:SAMPLE[1]], inputs.dtype("F32"), "planes-exp")


# --- baseline -------------------------------------------------------------------

def test_memcpy(benchmark, inputs):
    src = inputs.f32
    dst = np.empty_like(src)
    dst.fill(1.0)             # touched: no page faults in the timed copies
    _run(benchmark, "memcpy", "memcpy (np.copyto, F32 buffer)", src.nbytes, lambda: np.copyto(dst, src))


# --- pas.planes -----------------------------------------------------------------

@pytest.mark.parametrize("op", OPS, ids=_ids)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", DTYPES)
def test_split(benchmark, inputs, name, layout, op):
    dt, words = inputs.dtype(name), inputs.child[name]
    kw = {} if op is None else {"base": inputs.words[name], "op": op}
    _run(benchmark, "split", f"split {name} {layout}{' ' + op if op else ''}", words.nbytes,
         lambda: planes.split(words, dt, layout, **kw))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_split_kernel_preallocated(benchmark, inputs, layout):
    """The Numba kernel alone, into a reused output: split() minus its np.empty (fresh pages)."""
    dt, words = inputs.dtype("F32"), inputs.child["F32"]
    out = np.ones((dt.itemsize, words.shape[0]), np.uint8)
    kernel = planes._kernels(dt.itemsize)[0]
    rot, e, m = planes._params(dt, layout)
    _run(benchmark, "split", f"split F32 {layout} (kernel only, out reused)", words.nbytes,
         lambda: kernel(words, words, 0, out, rot, e, m))


@pytest.mark.parametrize("op", OPS, ids=_ids)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", DTYPES)
def test_merge(benchmark, inputs, name, layout, op):
    dt, pl = inputs.dtype(name), inputs.planes(name, layout, op)
    out = np.ones(pl.shape[1], dt.bits_dtype)
    kw = {} if op is None else {"base": inputs.words[name], "op": op}
    _run(benchmark, "merge", f"merge {name} {layout}{' ' + op if op else ''}", out.nbytes,
         lambda: planes.merge(pl, dt, layout, out=out, **kw))


@pytest.mark.parametrize("op", ("xor", "sub"))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", DTYPES)
def test_merge_in_place(benchmark, inputs, name, layout, op):
    """How chains are decoded: ``buf`` holds the base and becomes the child."""
    dt, pl, base = inputs.dtype(name), inputs.planes(name, layout, op), inputs.words[name]
    buf = np.empty_like(base)
    _run(benchmark, "merge", f"merge {name} {layout} {op} in place", buf.nbytes,
         lambda: planes.merge(pl, dt, layout, out=buf, base=buf, op=op),
         setup=lambda: np.copyto(buf, base))   # untimed: the base back into buf


# --- pas.delta (numpy reference) ------------------------------------------------------

@pytest.mark.parametrize("op", ("xor", "sub"))
@pytest.mark.parametrize("direction", ("encode", "decode"))
def test_delta_numpy(benchmark, inputs, direction, op):
    base, child = inputs.words["F32"], inputs.child["F32"]
    if direction == "encode":
        fn = lambda: delta.encode(child, base, op)  # noqa: E731
    else:
        d = delta.encode(child, base, op)
        fn = lambda: delta.decode(d, base, op)  # noqa: E731
    _run(benchmark, "delta", f"delta.{direction} F32 {op} (numpy)", child.nbytes, fn)


# --- pas.hashing ----------------------------------------------------------------

@pytest.mark.parametrize("func", ("digest", "checksum64"))
def test_hash(benchmark, inputs, func):
    view = memoryview(inputs.f32).cast("B")
    f = getattr(hashing, func)
    label = {"digest": "hashing.digest (xxh3-128)", "checksum64": "hashing.checksum64 (xxh3-64)"}[func]
    _run(benchmark, "hash", label, view.nbytes, lambda: f(view))


# --- pas.codecs -----------------------------------------------------------------

def _plane(inputs: Inputs, p: int) -> np.ndarray:
    return inputs.planes("F32", "planes-exp")[p]


@pytest.mark.parametrize("plane", CODEC_PLANES)
@pytest.mark.parametrize("codec", CODECS)
def test_codec_encode(benchmark, inputs, codec, plane):
    comp, chunks = CODECS[codec](), _chunks(_plane(inputs, plane))
    values = _run(benchmark, "codec", f"encode_chunk {codec} plane {plane}", sum(c.nbytes for c in chunks),
                  lambda: [codecs.encode_chunk(c, comp) for c in chunks])
    stored = sum(len(v) for v in values)
    benchmark.extra_info["stored_bytes"] = stored
    benchmark.extra_info["note"] = f"stored/raw {stored / sum(c.nbytes for c in chunks):.3f}" + (
        ", stored raw" if all(v[0] == 0 for v in values) else "")


@pytest.mark.parametrize("into", (False, True), ids=("decode_chunk", "decode_chunk_into"))
@pytest.mark.parametrize("plane", CODEC_PLANES)
@pytest.mark.parametrize("codec", CODECS)
def test_codec_decode(benchmark, inputs, codec, plane, into):
    comp, chunks = CODECS[codec](), _chunks(_plane(inputs, plane))
    values = [codecs.encode_chunk(c, comp) for c in chunks]
    nbytes = sum(c.nbytes for c in chunks)
    if into:
        outs = [np.ones(c.shape[0], np.uint8) for c in chunks]   # reused, touched
        fn = lambda: [codecs.decode_chunk_into(v, o) for v, o in zip(values, outs)]  # noqa: E731
    else:
        fn = lambda: [codecs.decode_chunk(v, c.shape[0]) for v, c in zip(values, chunks)]  # noqa: E731
    name = "decode_chunk_into" if into else "decode_chunk"
    _run(benchmark, "codec", f"{name} {codec} plane {plane}", nbytes, fn)
    if all(v[0] == 0 for v in values):
        benchmark.extra_info["note"] = "raw chunks: no copy"


# --- pas.delta.select -----------------------------------------------------------

def test_plane_entropy(benchmark, inputs):
    sample = _sample(inputs)
    _run(benchmark, "select", f"plane_entropy_bytes {sample.shape}", sample.nbytes,
         lambda: select.plane_entropy_bytes(sample))


# --- correctness of everything timed above ------------------------------------------

def _bits_equal(a, b) -> bool:
    return bytes(memoryview(np.ascontiguousarray(a)).cast("B")) == bytes(memoryview(np.ascontiguousarray(b)).cast("B"))


def test_roundtrips(inputs):
    """Each measured function gives bytes-equal results (no timing)."""
    src = inputs.f32
    dst = np.empty_like(src)
    np.copyto(dst, src)
    assert _bits_equal(dst, src)

    for name, layout, op in itertools.product(DTYPES, LAYOUTS, OPS):
        dt, child, parent = inputs.dtype(name), inputs.child[name], inputs.words[name]
        kw = {} if op is None else {"base": parent, "op": op}
        pl = planes.split(child, dt, layout, **kw)
        assert pl.shape == (dt.itemsize, child.shape[0])
        if op is not None:   # the fused kernel agrees with the numpy delta, then a plain split
            d = delta.encode(child, parent, op)
            assert _bits_equal(pl, planes.split(d, dt, layout)), (name, layout, op)
            assert _bits_equal(delta.decode(d, parent, op), child), (name, op)
        out = np.ones(child.shape[0], dt.bits_dtype)
        assert _bits_equal(planes.merge(pl, dt, layout, out=out, **kw), child), (name, layout, op)
        if op is not None:
            buf = parent.copy()
            planes.merge(pl, dt, layout, out=buf, base=buf, op=op)
            assert _bits_equal(buf, child), (name, layout, op, "in place")
        if op is None and name == "F32":
            kout = np.ones_like(pl)
            rot, e, m = planes._params(dt, layout)
            planes._kernels(dt.itemsize)[0](child, child, 0, kout, rot, e, m)
            assert _bits_equal(kout, pl), (layout, "kernel only")

    view = memoryview(src).cast("B")
    raw = bytes(view)
    assert hashing.digest(view) == xxhash.xxh3_128_digest(raw) and len(hashing.digest(view)) == 16
    assert hashing.checksum64(view) == xxhash.xxh3_64_digest(raw) and len(hashing.checksum64(view)) == 8

    for codec, p in itertools.product(CODECS, CODEC_PLANES):
        comp, chunks = CODECS[codec](), _chunks(_plane(inputs, p))
        for c in chunks:
            v = codecs.encode_chunk(c, comp)
            assert bytes(codecs.decode_chunk(v, c.shape[0])) == c.tobytes(), (codec, p)
            o = np.zeros(c.shape[0], np.uint8)
            assert bytes(codecs.decode_chunk_into(v, o)) == c.tobytes(), (codec, p, "into")

    sample = _sample(inputs)
    counts = np.stack([np.bincount(row, minlength=256) for row in sample]).astype(np.float64)
    nz = counts[counts > 0]
    want = float(-(nz * np.log2(nz / sample.shape[1])).sum()) / 8
    assert select.plane_entropy_bytes(sample) == pytest.approx(want, rel=1e-9)
