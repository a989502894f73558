"""Bit-exact round trips (reliability-plan.md §5 T3).

Tensors of every pas dtype are drawn as *raw bytes* (never floats, which
would canonicalise NaNs), with special values mixed in, shapes including ()
and zero-size, and handed to `Tensor.from_array` as contiguous, strided,
transposed, reversed and big-endian numpy arrays. Archive, retrieve, compare
bytes. ``PAS_HYPOTHESIS_EXAMPLES`` scales the number of examples.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from conftest import HYPOTHESIS_EXAMPLES, tensor_fingerprint
from pas import planes
from pas.dtypes import DTYPES
from pas.repo import Repository
from pas.snapshot import Snapshot, Tensor

#: Special bit patterns per dtype (NaN payloads, sNaN, -0.0, +-inf, subnormals, extremes).
SPECIALS: dict[str, list[int]] = {
    "F64": [0x7FF8000000012345, 0x7FF0000000000001, 0xFFF8000000000000, 0x8000000000000000,
            0x7FF0000000000000, 0xFFF0000000000000, 0x0000000000000001, 0x800FFFFFFFFFFFFF,
            0x7FEFFFFFFFFFFFFF, 0x0010000000000000, 0x7FF7FFFFFFFFFFFF],
    "F32": [0x7FC12345, 0x7F800001, 0xFFC00000, 0xFFA00001, 0x80000000, 0x7F800000, 0xFF800000,
            0x00000001, 0x807FFFFF, 0x7F7FFFFF, 0x00800000, 0x7FBFFFFF],
    "F16": [0x7E01, 0x7C01, 0xFE00, 0xFD55, 0x8000, 0x7C00, 0xFC00, 0x0001, 0x83FF, 0x7BFF, 0x0400],
    "BF16": [0x7FC1, 0x7F81, 0xFFC0, 0xFF81, 0x8000, 0x7F80, 0xFF80, 0x0001, 0x807F, 0x7F7F, 0x0080],
    "F8_E4M3": [0x7F, 0xFF, 0x80, 0x7E, 0xFE, 0x01, 0x87, 0x08, 0x00],
    "F8_E5M2": [0x7C, 0xFC, 0x7D, 0x7E, 0x7F, 0xFF, 0x80, 0x01, 0x83, 0x7B, 0x04],
    "BOOL": [0, 1, 2, 0x80, 0xFF],                      # non-canonical bool bytes stay as stored
}


def specials(name: str) -> list[int]:
    dt = DTYPES[name]
    if name in SPECIALS:
        return SPECIALS[name]
    bits = 8 * dt.itemsize
    return [0, 1, (1 << bits) - 1, 1 << (bits - 1), (1 << (bits - 1)) - 1, (1 << (bits - 1)) + 1]


# ---------------------------------------------------------------- building
def words_from(name: str, raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, DTYPES[name].bits_dtype).copy()


VARIANTS = ["contiguous", "bigendian", "strided", "transposed", "reversed", "bigendian-strided"]


def as_input(name: str, words: np.ndarray, shape: tuple[int, ...], variant: str) -> np.ndarray:
    """A numpy array holding ``words`` (LE bit patterns) in ``shape``, laid out as ``variant``.

    Built in the unsigned-integer domain only (byteswap, copies of uints, views),
    so no float operation can touch the bits the test expects back.
    """
    dt = DTYPES[name]
    np_dt = dt.np_dtype
    grid = words.reshape(shape)
    if variant == "contiguous":
        return grid.view(np_dt)
    if variant in ("bigendian", "bigendian-strided"):
        if dt.itemsize == 1:
            be_bits, be_dt = grid, np_dt
        else:
            be_bits, be_dt = grid.byteswap(), np_dt.newbyteorder(">")
        if variant == "bigendian":
            return be_bits.view(be_dt)
        base = np.zeros(shape + (3,), be_bits.dtype)
        base[..., 1] = be_bits
        base[..., 0] = base[..., 2] = 0xA5
        return base.view(be_dt)[..., 1]
    if variant == "strided":
        base = np.full(shape + (2,), 0x5A, dt.bits_dtype)
        base[..., 0] = grid
        return base.view(np_dt)[..., 0]
    if variant == "transposed":
        return np.array(grid.T, order="C").view(np_dt).T   # (ascontiguousarray makes 0-d 1-d)
    if variant == "reversed":
        if not shape:
            return grid.view(np_dt)
        return np.array(grid[::-1], order="C").view(np_dt)[::-1]
    raise AssertionError(variant)


def make_tensor(tname: str, name: str, words: np.ndarray, shape, variant: str) -> Tensor:
    arr = as_input(name, words, tuple(shape), variant)
    explicit = name in ("BF16", "F8_E4M3", "F8_E5M2")
    t = Tensor.from_array(tname, arr, dtype=name if explicit else None)
    assert t.dtype == name
    return t


def check_tensor(t: Tensor, name: str, shape, words: np.ndarray) -> None:
    got = tensor_fingerprint(t)
    assert got[0] == name and got[1] == tuple(shape)
    if got[2] != words.tobytes():
        a = np.frombuffer(got[2], words.dtype)
        bad = np.nonzero(a != words)[0][:5]
        raise AssertionError(f"{name}{tuple(shape)}: words differ at {bad.tolist()}: "
                             f"got {[hex(int(x)) for x in a[bad]]}, want {[hex(int(x)) for x in words[bad]]}")


# ---------------------------------------------------------------- strategies
@st.composite
def shapes(draw):
    kind = draw(st.sampled_from(["small", "small", "small", "scalar", "empty", "long"]))
    if kind == "scalar":
        return ()
    if kind == "empty":
        dims = draw(st.lists(st.integers(0, 5), min_size=1, max_size=3))
        dims[draw(st.integers(0, len(dims) - 1))] = 0
        return tuple(dims)
    if kind == "long":   # big enough for layout selection and multi-chunk planes
        return (draw(st.integers(4096, 9000)),)
    return tuple(draw(st.lists(st.integers(1, 7), min_size=1, max_size=4)))


@st.composite
def tensor_specs(draw):
    name = draw(st.sampled_from(sorted(DTYPES)))
    shape = draw(shapes())
    n = math.prod(shape)
    k = DTYPES[name].itemsize
    if n > 1000:   # long tensors: a smooth-ish random pattern is cheaper to draw than 70 kB
        seed = draw(st.integers(0, 2**32 - 1))
        style = draw(st.sampled_from(["random", "lowbits", "constant"]))
        rng = np.random.default_rng(seed)
        raw = rng.integers(0, 256, n * k, dtype=np.uint8)
        if style == "lowbits":      # high bytes constant-ish, like weights of one magnitude
            raw.reshape(n, k)[:, k - 1] = 0x3C
        elif style == "constant":
            raw[:] = raw[0]
        words = raw.view(DTYPES[name].bits_dtype).copy()
    else:
        words = words_from(name, draw(st.binary(min_size=n * k, max_size=n * k)))
    # sprinkle special values at drawn positions
    if n:
        sp = specials(name)
        for _ in range(draw(st.integers(0, min(n, 12)))):
            words[draw(st.integers(0, n - 1))] = draw(st.sampled_from(sp))
    variant = draw(st.sampled_from(VARIANTS))
    return name, shape, words, variant


#: Tensors compared as bytes after a round trip in this run (reported by make stress).
ROUND_TRIPPED = {"tensors": 0, "chain versions": 0, "chain tensors stored as deltas": 0}


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    from reliability import report
    report("bit-exact round trips", ROUND_TRIPPED)


MEM_REPO = Repository.in_memory()
TINY_CHUNKS = Repository.in_memory(chunker={"id": "fixed", "size": 1000})


@given(specs=st.lists(tensor_specs(), min_size=1, max_size=4), tiny=st.booleans())
def test_archive_retrieve_bit_exact(specs, tiny):
    repo = TINY_CHUNKS if tiny else MEM_REPO
    snap = Snapshot()
    for i, (name, shape, words, variant) in enumerate(specs):
        note(f"t{i}: {name}{shape} {variant}")
        t = make_tensor(f"t{i}", name, words, shape, variant)
        check_tensor(t, name, shape, words)            # from_array itself is exact
        snap.add(t)
    res = repo.archive_snapshot(snap, "prop")
    got = repo.retrieve(res.version_id)
    assert list(got.tensors) == list(snap.tensors)
    for i, (name, shape, words, _) in enumerate(specs):
        check_tensor(got.tensors[f"t{i}"], name, shape, words)
    part = repo.retrieve(res.version_id, names=["t0"])
    check_tensor(part.tensors["t0"], specs[0][0], specs[0][1], specs[0][2])
    ROUND_TRIPPED["tensors"] += len(specs)


# ------------------------------------------------------------- deep chains
CHAIN_DTYPES = ["F32", "BF16", "F16", "F64", "I32", "U8"]


@st.composite
def chain_steps(draw, depth: int):
    """What changes from one version to the next: one of the tensors gets a few
    bits flipped, rows appended or removed, a new dtype, or is replaced; a
    tensor may appear or vanish."""
    return [draw(st.tuples(st.sampled_from(["bits", "bits", "bits", "grow", "shrink", "dtype", "new", "drop"]),
                           st.integers(0, 2**32 - 1))) for _ in range(depth)]


def _evolve(state: dict, step: tuple[str, int]) -> dict:
    kind, seed = step
    rng = np.random.default_rng(seed)
    state = {k: (name, w.copy()) for k, (name, w) in state.items()}
    key = sorted(state)[seed % len(state)] if state else None
    if kind == "new" or key is None:
        name = CHAIN_DTYPES[seed % len(CHAIN_DTYPES)]
        n = int(rng.integers(0, 3000)) * 8
        state[f"t{seed % 97}"] = (name, rng.integers(0, 2**63, n, dtype=np.uint64).view(DTYPES[name].bits_dtype)[:n])
        return state
    name, w = state[key]
    if kind == "bits" and w.size:
        idx = rng.integers(0, w.size, max(1, w.size // 50))
        w[idx] ^= np.asarray(1 << rng.integers(0, 8 * w.itemsize, idx.size), dtype=w.dtype)
        if seed % 3 == 0:
            w[idx[:3]] = np.array(specials(name)[:3], w.dtype)[:len(idx[:3])]
    elif kind == "grow":
        w = np.concatenate([w, rng.integers(0, 2**63, 8 * int(rng.integers(1, 200)), dtype=np.uint64)
                            .view(w.dtype)[:8 * int(rng.integers(1, 200))]])
    elif kind == "shrink":
        w = w[: (w.size // 2) // 8 * 8].copy()
    elif kind == "dtype":   # the same bytes read as another dtype of the same or another width
        name = CHAIN_DTYPES[(CHAIN_DTYPES.index(name) + 1 + seed % 5) % len(CHAIN_DTYPES)] \
            if name in CHAIN_DTYPES else "U8"
        raw = w.view(np.uint8)
        k = DTYPES[name].itemsize
        w = raw[: raw.size // k * k].view(DTYPES[name].bits_dtype).copy()
    elif kind == "drop" and len(state) > 1:
        del state[key]
        return state
    state[key] = (name, w)
    return state


@settings(max_examples=max(4, HYPOTHESIS_EXAMPLES // 40))
@given(steps=chain_steps(depth=49), start=st.integers(0, 2**32 - 1))
def test_chain_of_50_versions_bit_exact(steps, start):
    """A lineage 50 versions deep whose tensors change bits, shape and dtype along
    the way, each version archived against its parent: every version comes back
    byte for byte (and the chain depth bound holds)."""
    rng = np.random.default_rng(start)
    state = {f"t{i}": ("F32", rng.integers(0, 2**32, 4000, dtype=np.uint32)) for i in range(3)}
    states = [state]
    for step in steps:
        states.append(_evolve(states[-1], step))
    repo = Repository.in_memory(chunker={"id": "fixed", "size": 4096})
    ids = []
    for i, st_ in enumerate(states):
        snap = Snapshot()
        for k, (name, w) in st_.items():
            snap.add(make_tensor(k, name, w, (w.size,), "contiguous"))
        ids.append(repo.archive_snapshot(snap, "chain", parent=ids[-1] if ids else None).version_id)
    for vid, st_ in zip(ids, states):
        got = repo.retrieve(vid)
        assert list(got.tensors) == list(st_)
        for k, (name, w) in st_.items():
            check_tensor(got.tensors[k], name, (w.size,), w)
        ROUND_TRIPPED["tensors"] += len(st_)
    ROUND_TRIPPED["chain versions"] += len(ids)
    depths = [repo.reader.parse(e.object).depth for v in repo.versions() for e in v.tensors]
    assert max(depths) <= repo.config["delta"]["max_depth"]
    ROUND_TRIPPED["chain tensors stored as deltas"] += sum(d > 0 for d in depths)


@given(name=st.sampled_from(sorted(DTYPES)), data=st.data(), numba=st.booleans())
def test_planes_round_trip_any_bits(name, data, numba):
    dt = DTYPES[name]
    n = data.draw(st.integers(0, 300))
    words = words_from(name, data.draw(st.binary(min_size=n * dt.itemsize, max_size=n * dt.itemsize)))
    layouts = ["planes", "planes-exp"] if dt.is_float and dt.itemsize >= 2 else ["planes"]
    layout = data.draw(st.sampled_from(layouts))
    old = planes.NUMBA_MIN_ELEMENTS
    planes.NUMBA_MIN_ELEMENTS = 1 if numba else old
    try:
        p = planes.split(words, dt, layout)
        back = planes.merge(p, dt, layout)
    finally:
        planes.NUMBA_MIN_ELEMENTS = old
    assert back.tobytes() == words.tobytes()


# ------------------------------------------------------------ fixed corpus
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", sorted(DTYPES))
def test_special_values_corpus(name, variant):
    sp = specials(name)
    words = np.array(sp * 3, DTYPES[name].bits_dtype)
    shape = (3, len(sp))
    snap = Snapshot()
    snap.add(make_tensor("grid", name, words, shape, variant))
    snap.add(make_tensor("empty", name, words[:0].copy(), (0, 4), variant))
    snap.add(make_tensor("wide", name, np.tile(words, 400), (len(words) * 400,), variant))
    repo = Repository.in_memory(chunker={"id": "fixed", "size": 4096})
    res = repo.archive_snapshot(snap, "corpus")
    got = repo.retrieve(res.version_id)
    check_tensor(got.tensors["grid"], name, shape, words)
    check_tensor(got.tensors["empty"], name, (0, 4), words[:0])
    check_tensor(got.tensors["wide"], name, (len(words) * 400,), np.tile(words, 400))
    assert repo.verify().ok


@pytest.mark.parametrize("variant", ["contiguous", "bigendian"])
@pytest.mark.parametrize("name", ["F32", "I64", "BF16", "BOOL"])
def test_zero_dim_tensor_from_array(name, variant):
    """0-d tensors (e.g. BatchNorm's num_batches_tracked) keep shape () end to end."""
    words = np.array([specials(name)[0]], DTYPES[name].bits_dtype)
    t = make_tensor("scalar", name, words, (), variant)
    check_tensor(t, name, (), words)
    repo = Repository.in_memory()
    snap = Snapshot()
    snap.add(t)
    check_tensor(repo.retrieve(repo.archive_snapshot(snap, "s").version_id).tensors["scalar"], name, (), words)


@pytest.mark.parametrize("name", ["F32", "I64", "F8_E5M2"])
def test_zero_dim_tensor_built_directly(name):
    """A Tensor holding a 0-d array (as a format reader builds it) archives and comes back 0-d."""
    dt = DTYPES[name]
    words = np.array([specials(name)[0]], dt.bits_dtype)
    t = Tensor("scalar", name, (), words.reshape(()).view(dt.np_dtype))
    repo = Repository.in_memory()
    snap = Snapshot()
    snap.add(t)
    res = repo.archive_snapshot(snap, "s")
    check_tensor(repo.retrieve(res.version_id).tensors["scalar"], name, (), words)


def test_shape_distinguishes_scalar_one_and_empty():
    repo = Repository.in_memory()
    one = np.array([0x7FC12345], "<u4")
    snap = Snapshot()
    snap.add(Tensor("scalar", "F32", (), one.reshape(()).view("<f4")))
    snap.add(Tensor.from_array("vec1", one.view("<f4")))
    snap.add(Tensor.from_array("mat11", one.reshape(1, 1).view("<f4")))
    snap.add(Tensor.from_array("e0", np.zeros((0,), "<f4")))
    snap.add(Tensor.from_array("e05", np.zeros((0, 5), "<f4")))
    snap.add(Tensor.from_array("e50", np.zeros((5, 0), "<f4")))
    v = repo.version(repo.archive_snapshot(snap, "s").version_id)
    assert len({e.object for e in v.tensors}) == 6     # shape is part of the address
    got = repo.retrieve("s")
    assert {k: t.shape for k, t in got.tensors.items()} == {
        "scalar": (), "vec1": (1,), "mat11": (1, 1), "e0": (0,), "e05": (0, 5), "e50": (5, 0)}
    for k in ("scalar", "vec1", "mat11"):
        assert got.tensors[k].data.tobytes() == one.tobytes()


def test_examples_setting_is_configurable():
    from hypothesis import settings
    assert settings().max_examples == HYPOTHESIS_EXAMPLES
