"""Delta storage (docs/format.md §4 "Deltas"): operators, fused plane kernels, and
repository chains.

Part 1 are property tests (Hypothesis; ``PAS_HYPOTHESIS_EXAMPLES`` raises the
example count) of `pas.delta.encode/decode` and of `planes.split/merge` with a
base and an operator, for every element width, against an oracle in Python
integers, with special bit patterns (NaN payloads, -0.0, subnormals, inf) in
target and base, on both the numpy and the Numba path.

Part 2 archives lineages: a parent and fine-tuned children, chains deeper than
``delta.max_depth``, resized, renamed and inserted tensors, dtype and shape
changes, a fine-tune archived without its parent, a series of checkpoint
files, gc around delta chains, row-range and top-plane reads. Tensors are
sized around ``pas.writer.INLINE_MAX`` so both inline records and chunked ones
are used. Every comparison is of bytes.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from conftest import RecordingStore, assert_same_snapshot, needed_keys, record_chunks, tensor_record
from test_planes import reference_split
from test_roundtrip_property import specials
from pas import codecs, delta, dtypes, planes, records, writer
from pas.delta import select
from pas.dtypes import DTYPES
from pas.records import CHUNK, REF, TENSOR, VERSION
from pas.repo import DEFAULT_CONFIG, Repository
from pas.snapshot import Snapshot, Tensor

WIDTHS = {w: sorted(n for n, d in DTYPES.items() if d.itemsize == w) for w in (1, 2, 4, 8)}
OPS = ("xor", "sub")


def layouts(name: str) -> list[str]:
    d = DTYPES[name]
    return ["planes", "planes-exp"] if d.is_float and d.itemsize >= 2 else ["planes"]


# ============================================================== oracles
def ref_delta(t: int, b: int, op: str, width: int) -> int:
    """docs/format.md §4 in Python integers: xor, or zigzag((t - b) mod 2^w)."""
    mask = (1 << width) - 1
    if op == "xor":
        return t ^ b
    d = (t - b) & mask
    return ((d << 1) & mask) ^ (mask if d >> (width - 1) else 0)


def ref_undelta(d: int, b: int, op: str, width: int) -> int:
    mask = (1 << width) - 1
    if op == "xor":
        return d ^ b
    return (b + ((d >> 1) ^ (mask if d & 1 else 0))) & mask


def ref_delta_words(t: np.ndarray, b: np.ndarray, op: str) -> np.ndarray:
    width = t.dtype.itemsize * 8
    return np.array([ref_delta(int(x), int(y), op, width) for x, y in zip(t, b)], dtype=t.dtype)


# ============================================================ strategies
@st.composite
def word_pairs(draw, width: int):
    """(dtype name, target words, base words): raw bits with special patterns mixed in,
    and a base that is unrelated, equal, a few low bits off, a small signed step off,
    or made of special patterns itself."""
    name = draw(st.sampled_from(WIDTHS[width]))
    dt = DTYPES[name]
    n = draw(st.integers(0, 70))
    sp = specials(name)

    def words():
        raw = draw(st.binary(min_size=n * width, max_size=n * width))
        w = np.frombuffer(raw, dt.bits_dtype).copy()
        for i, v in draw(st.lists(st.tuples(st.integers(0, max(n - 1, 0)), st.sampled_from(sp)),
                                  max_size=n)):
            if n:
                w[i] = v
        return w

    t = words()
    mode = draw(st.sampled_from(["unrelated", "equal", "low-bits", "step", "specials"]))
    mask = (1 << (8 * width)) - 1
    if mode == "unrelated":
        b = words()
    elif mode == "equal":
        b = t.copy()
    elif mode == "low-bits":
        flips = draw(st.lists(st.integers(0, 255), min_size=n, max_size=n))
        b = t ^ np.array(flips, dtype=np.uint64).astype(dt.bits_dtype)
    elif mode == "step":
        steps = draw(st.lists(st.integers(-300, 300), min_size=n, max_size=n))
        b = np.array([(int(x) + s) & mask for x, s in zip(t, steps)], dtype=dt.bits_dtype)
    else:
        b = np.array(draw(st.lists(st.sampled_from(sp), min_size=n, max_size=n)), dtype=np.uint64
                     ).astype(dt.bits_dtype)
    note(f"{name} n={n} mode={mode}")
    return name, t, b.reshape(-1)


# ====================================================== delta operators
@pytest.mark.parametrize("width", sorted(WIDTHS))
@given(data=st.data())
def test_delta_encode_decode_against_oracle(width, data):
    name, t, b = data.draw(word_pairs(width))
    for op in OPS:
        d = delta.encode(t, b, op)
        assert d.dtype == t.dtype and d.shape == t.shape
        assert d.tobytes() == ref_delta_words(t, b, op).tobytes(), op
        back = delta.decode(d, b, op)
        assert back.dtype == t.dtype and back.tobytes() == t.tobytes(), op
        # the oracle's inverse agrees too (the format is what the oracle says, not just a round trip)
        assert [ref_undelta(int(x), int(y), op, 8 * width) for x, y in zip(d, b)] == [int(x) for x in t]
    # inputs untouched
    assert delta.encode(t, t, "xor").tobytes() == bytes(t.nbytes)
    assert delta.encode(t, t, "sub").tobytes() == bytes(t.nbytes)


def test_zigzag_small_steps_become_small_codes():
    for width, dtype in ((8, "<u1"), (16, "<u2"), (32, "<u4"), (64, "<u8")):
        mask = (1 << width) - 1
        base = np.array([1000 % (mask + 1), 0, mask, 1 << (width - 1)] * 5, dtype)
        steps = [0, 1, -1, 2, -2, 3, -3, 50, -50, 127, -128, 5, -5, 7, -7, 9, -9, 11, -11, 0]
        t = np.array([(int(x) + s) & mask for x, s in zip(base, steps)], dtype)
        d = delta.encode(t, base, "sub")
        assert [int(x) for x in d] == [2 * s if s >= 0 else -2 * s - 1 for s in steps]
        assert delta.decode(d, base, "sub").tobytes() == t.tobytes()


def test_unknown_operator_and_aligned_base():
    w = np.arange(5, dtype="<u4")
    with pytest.raises(ValueError):
        delta.encode(w, w, "add")
    with pytest.raises(ValueError):
        delta.decode(w, w, "add")
    with pytest.raises(ValueError):
        delta.op_code("mul")
    assert delta.op_code(None) == 0 and {delta.op_code(o) for o in OPS} == {1, 2}
    assert delta.aligned_base(w, 5) is w
    assert delta.aligned_base(w, 3).tolist() == [0, 1, 2]
    assert delta.aligned_base(w, 8).tolist() == [0, 1, 2, 3, 4, 0, 0, 0]
    assert delta.aligned_base(w, 0).tolist() == []


# ==================================================== fused plane kernels
class _Path:
    """Force the numpy or the Numba path of planes.split/merge."""

    def __init__(self, numba: bool):
        self.numba = numba

    def __enter__(self):
        self.mp = pytest.MonkeyPatch()
        self.mp.setattr(planes, "NUMBA_MIN_ELEMENTS", 0 if self.numba else 1 << 60)
        self.mp.setattr(planes, "NUMBA_LOADED_MIN_ELEMENTS", 0 if self.numba else 1 << 60)
        self.mp.setattr(planes, "NUMBA_WORTH_ELEMENTS", 0 if self.numba else 1 << 60)
        return self

    def __exit__(self, *exc):
        self.mp.undo()


@pytest.mark.parametrize("width", sorted(WIDTHS))
@given(data=st.data())
def test_split_merge_with_base_against_oracle(width, data):
    """planes hold perm(D(t, b)) (MSB plane first), and merge inverts it, on both paths;
    merge also takes the planes as separate read-only rows and writes into ``out``."""
    name, t, b = data.draw(word_pairs(width))
    dt = DTYPES[name]
    layout = data.draw(st.sampled_from(layouts(name)))
    op = data.draw(st.sampled_from(OPS))
    note(f"layout={layout} op={op}")
    expect = reference_split(ref_delta_words(t, b, op), dt, layout).tobytes()
    # the fused kernels equal the numpy reference: delta first, then the plain split
    assert planes.split(delta.encode(t, b, op), dt, layout).tobytes() == expect
    for numba in (False, True):
        with _Path(numba):
            p = planes.split(t, dt, layout, base=b, op=op)
            assert p.shape == (width, t.size) and p.dtype == np.uint8
            assert p.tobytes() == expect, f"split numba={numba}"
            back = planes.merge(p, dt, layout, base=b, op=op)
            assert back.dtype == dt.bits_dtype and back.tobytes() == t.tobytes(), f"merge numba={numba}"
            rows = [np.frombuffer(p[i].tobytes(), np.uint8) for i in range(width)]   # read-only, as decoded
            if width > 1:
                rows[0] = rows[0].copy()                                              # mixed writeability
            out = np.full(t.size, 0xA5, dt.bits_dtype)
            res = planes.merge(rows, dt, layout, out=out, base=b.copy(), op=op)
            assert res is out and out.tobytes() == t.tobytes(), f"merge rows numba={numba}"
    # without a base the planes are those of the words themselves
    assert planes.split(t, dt, layout).tobytes() == reference_split(t, dt, layout).tobytes()


@pytest.mark.parametrize("name", ["F32", "BF16", "F64", "U8", "I16"])
@pytest.mark.parametrize("op", OPS)
def test_split_merge_with_base_large_paths_agree(name, op):
    """A tensor above the Numba threshold with specials in target and base: both paths agree."""
    dt = DTYPES[name]
    n = planes.NUMBA_MIN_ELEMENTS + 17
    rng = np.random.default_rng(len(name))
    t = rng.integers(0, 256, n * dt.itemsize, dtype=np.uint8).view(dt.bits_dtype).copy()
    sp = np.array(specials(name), dtype=np.uint64).astype(dt.bits_dtype)
    t[: sp.size] = sp
    b = t ^ (rng.integers(0, 4, n, dtype=np.uint64).astype(dt.bits_dtype))
    b[sp.size: 2 * sp.size] = sp
    b[-sp.size:] = sp[::-1]
    for layout in layouts(name):
        with _Path(False):
            ref = planes.split(t, dt, layout, base=b, op=op)
        with _Path(True):
            fast = planes.split(t, dt, layout, base=b, op=op)
            assert fast.tobytes() == ref.tobytes()
            assert planes.merge(fast, dt, layout, base=b, op=op).tobytes() == t.tobytes()
        with _Path(False):
            assert planes.merge(ref, dt, layout, base=b, op=op).tobytes() == t.tobytes()
        for numba in (False, True):   # the base already in ``out`` (chains decoded in place)
            with _Path(numba):
                out = b.copy()
                planes.merge(ref, dt, layout, out=out, base=out, op=op)
                assert out.tobytes() == t.tobytes(), (layout, numba)
                out = np.concatenate([b, b[:5]])           # a base overlapping ``out``, shifted
                planes.merge(ref, dt, layout, out=out[5:], base=out[:-5], op=op)
                assert out[5:].tobytes() == t.tobytes(), (layout, numba, "shifted")
        head = reference_split(ref_delta_words(t[:300], b[:300], op), dt, layout)
        assert ref[:, :300].tobytes() == head.tobytes()


def test_split_merge_refuse_a_base_of_another_length():
    dt = DTYPES["F32"]
    w = np.arange(10, dtype="<u4")
    for numba in (False, True):
        with _Path(numba):
            with pytest.raises(ValueError):
                planes.split(w, dt, "planes", base=w[:9], op="xor")
            with pytest.raises(ValueError):
                planes.merge(planes.split(w, dt), dt, "planes", base=w[:9], op="sub")


# ============================================================ repositories
IM = writer.INLINE_MAX   # read at import; tests size tensors around it


def _rows(nbytes: int, cols: int, itemsize: int) -> int:
    return max(1, nbytes // (cols * itemsize))


def inline_f32(rng, frac=0.6, cols=128):
    """An F32 weight matrix of about ``frac`` x INLINE_MAX bytes (<= INLINE_MAX: inline)."""
    return rng.normal(0, 0.02, (_rows(int(IM * frac), cols, 4), cols)).astype("<f4")


def chunked_f32(rng, frac=2.0, cols=256):
    """An F32 weight matrix of about ``frac`` x INLINE_MAX bytes (> INLINE_MAX: chunks)."""
    return rng.normal(0, 0.02, (_rows(int(IM * frac), cols, 4) + 1, cols)).astype("<f4")


F32_SPECIALS = np.array(specials("F32"), "<u4")
BF16_SPECIALS = np.array(specials("BF16"), "<u2")


def with_specials(a: np.ndarray, sp: np.ndarray, at: int = 0) -> np.ndarray:
    w = a.reshape(-1).view(sp.dtype)
    w[at: at + sp.size] = sp
    return a


def model(seed: int, scale: float = 1.0) -> Snapshot:
    """A small "model": chunked F32 and BF16, inline F32 and F16, a bias, a counter,
    with special bit patterns in its weights."""
    rng = np.random.default_rng(seed)
    s = Snapshot(metadata={"seed": str(seed)})
    s.add(Tensor.from_array("emb", with_specials(chunked_f32(rng, 2.0 * scale), F32_SPECIALS, 5)))
    s.add(Tensor.from_array("w1", with_specials(inline_f32(rng, 0.6), F32_SPECIALS, 100)))
    bf = (rng.normal(0, 0.02, (_rows(int(IM * 1.25 * scale), 128, 2) + 1, 128)).astype("<f4")
          .view("<u4") >> 16).astype("<u2")
    s.add(Tensor.from_array("bf", with_specials(bf, BF16_SPECIALS, 7), dtype="BF16"))
    s.add(Tensor.from_array("f16", rng.normal(0, 1, (64, 64)).astype("<f2")))
    s.add(Tensor.from_array("bias", np.zeros(128, "<f4")))
    s.add(Tensor.from_array("steps", np.array([seed, 1000 * seed], "<i8")))
    return s


def tune_words(words: np.ndarray, rng, dtype: str) -> np.ndarray:
    """A fine-tune step on bit patterns: small relative updates of every F32 weight (low
    mantissa bits change, sometimes an exponent), +-1 ulp on 5% of 16-bit floats; special
    patterns are flipped among themselves (NaN payloads, -0.0 <-> +0.0, inf, subnormals)."""
    w = words.reshape(-1).copy()
    if dtype == "F32":
        f = w.view("<f4")
        sp = np.isin(w, F32_SPECIALS)
        plain = ~sp & np.isfinite(f)
        f[plain] = (f[plain] * (1 + rng.normal(0, 1e-5, int(plain.sum())))).astype("<f4")
        w[sp] = rng.permutation(w[sp])
    elif dtype in ("BF16", "F16"):
        m = rng.random(w.size) < 0.05
        w[m] += np.where(rng.random(int(m.sum())) < 0.5, 1, -1).astype(w.dtype)
    elif dtype == "I64":
        w += 1
    return w.reshape(words.shape)


def tune(s: Snapshot, seed: int, skip=()) -> Snapshot:
    rng = np.random.default_rng(seed)
    out = Snapshot(metadata=dict(s.metadata, tuned=str(seed)))
    for name, t in s.tensors.items():
        dt = dtypes.get(t.dtype)
        words = t.data.view(dt.bits_dtype)
        if name not in skip:
            words = tune_words(words, rng, t.dtype)
        out.add(Tensor.from_array(name, words.view(dt.np_dtype), dtype=t.dtype))
    return out


def rec(repo, addr: bytes) -> dict:
    return tensor_record(repo.store, addr)[0]


def entries(repo, ref) -> dict:
    return {e.name: e for e in repo.version(ref).tensors}


def check_delta_invariants(repo, max_depth: int = 8, ops=OPS) -> dict:
    """docs/format.md §4 for every stored tensor record: a delta's base exists, has the same
    dtype and width, the same shape or the same row shape, depth = base depth + 1 <= max_depth
    (= the number of deltas down the chain); an XOR delta keeps its base's layout.
    Returns counts by kind."""
    kinds: dict = {}
    for key in repo.store.list_prefix(TENSOR):
        r = rec(repo, key[1:])
        kind = ("inline" if "inline" in r else "chunked", r["delta"]["op"] if "delta" in r else "whole")
        kinds[kind] = kinds.get(kind, 0) + 1
        if "delta" not in r:
            assert r.get("depth", 0) == 0, r
            continue
        assert r["delta"]["op"] in ops, r
        base = bytes.fromhex(r["delta"]["base"])
        assert repo.store.exists(TENSOR + base)
        b = rec(repo, base)
        assert b["dtype"] == r["dtype"], (r, b)
        assert b["shape"] == r["shape"] or (len(b["shape"]) == len(r["shape"]) >= 1
                                            and b["shape"][1:] == r["shape"][1:]), (r, b)
        assert r["depth"] == b.get("depth", 0) + 1 <= max_depth, (r, b)
        if r["delta"]["op"] == "xor":
            assert r["layout"] == b["layout"], (r, b)
        hops, a = 0, base
        while a is not None:
            hops += 1
            d = rec(repo, a).get("delta")
            a = bytes.fromhex(d["base"]) if d else None
        assert hops == r["depth"]
    return kinds


def delta_base(repo, entry) -> bytes | None:
    d = rec(repo, entry.object).get("delta")
    return bytes.fromhex(d["base"]) if d else None


def counting_repo(**overrides) -> Repository:
    config = json.loads(json.dumps(DEFAULT_CONFIG))
    config.update(overrides)
    return Repository(RecordingStore(), config)


# ----------------------------------------------------------- fine-tune chains
def test_finetuned_children_are_deltas_and_round_trip():
    repo = Repository.in_memory(chunker={"id": "fixed", "size": IM // 2})
    snaps = [model(1)]
    for i in range(3):
        snaps.append(tune(snaps[-1], 100 + i))
    results = [repo.archive_snapshot(s, "m", message=f"v{i}") for i, s in enumerate(snaps)]
    first = results[0]
    assert first.encodings == {"whole": len(snaps[0].tensors)}
    kinds = check_delta_invariants(repo)
    assert {("inline", "whole"), ("chunked", "whole")} <= set(kinds)
    assert any(k[0] == "inline" and k[1] != "whole" for k in kinds), kinds
    assert any(k[0] == "chunked" and k[1] != "whole" for k in kinds), kinds
    for prev, res in zip(results, results[1:]):
        assert res.parent == prev.version_id and res.delta_source is None
        assert res.encodings.get("xor", 0) + res.encodings.get("sub", 0) >= 3, res.encodings
        assert res.physical_added < 0.5 * first.physical_added, (res.physical_added, first.physical_added)
        mine, parent = entries(repo, res.version_id), entries(repo, prev.version_id)
        for name in ("emb", "w1", "bf"):          # deltas against the same-named tensor of the parent
            assert delta_base(repo, mine[name]) == parent[name].object, name
        assert "delta_source" not in repo.version(res.version_id).manifest
    for s, res in zip(snaps, results):
        assert_same_snapshot(repo.retrieve(res.version_id), s)
    # and again from a cold reader (no decoded bases cached), one tensor at a time
    repo.reader.clear_cache()
    for s, res in zip(snaps[::-1], results[::-1]):
        for name in ("emb", "bf", "w1"):
            got = repo.retrieve(res.version_id, names=[name])
            assert got.tensors[name].data.tobytes() == s.tensors[name].data.tobytes()
    assert repo.verify().ok


@pytest.mark.parametrize("op", OPS)
def test_chain_whose_levels_are_cut_at_other_offsets(op):
    """A chain decoded in place assumes nothing about chunk grids: here every level
    was written with another chunk size (a repository whose setting changed), so
    rows of one level straddle rows of the next. Whole and row-range reads are exact."""
    from pas.chunking import FixedChunker
    rng = np.random.default_rng(9)
    repo = Repository.in_memory(delta={"max_depth": 8, "ops": [op]})
    snaps, s = [], Snapshot()
    w = rng.normal(0, 0.02, (700, 500)).astype("<f4")
    s.add(Tensor.from_array("w", w))
    for i, size in enumerate([1 << 15, 50_000, 1 << 16, 77_777]):
        repo.chunker = FixedChunker(size)
        if i:
            w = (w + rng.normal(0, 1e-5, w.shape).astype("<f4"))[: 700 - 7 * i]   # shrinks too
            s = Snapshot()
            s.add(Tensor.from_array("w", w))
        snaps.append((repo.archive_snapshot(s, "m").version_id, w.copy()))
    e = entries(repo, snaps[-1][0])["w"]
    assert rec(repo, e.object).get("depth") == 3 and rec(repo, e.object)["delta"]["op"] == op
    for vid, want in snaps:
        repo.reader.clear_cache()
        assert repo.retrieve(vid).tensors["w"].data.tobytes() == want.tobytes()
        ent = entries(repo, vid)["w"]
        for a, b in ((0, 1), (33, 190), (250, 251), (600, 700)):
            repo.reader.clear_cache()
            assert repo.read_rows(ent, a, b).tobytes() == want[a:b].tobytes(), (vid, a, b)


def test_tiny_tensors_stay_whole_when_a_delta_would_save_too_little():
    """A bias or a norm saves a few bytes as a delta but would cost a base decode
    on every read: below select.MIN_SAVING the writer keeps it whole (deduplicated
    when unchanged), while the big tensors of the same version delta."""
    from pas.delta import select
    rng = np.random.default_rng(3)
    parent, child = Snapshot(), Snapshot()
    big = rng.normal(0, 0.02, 1 << 16).astype("<f4")
    tiny = rng.normal(0, 0.02, 64).astype("<f4")
    parent.add(Tensor.from_array("big", big))
    parent.add(Tensor.from_array("tiny", tiny))
    child.add(Tensor.from_array("big", big + rng.normal(0, 1e-5, big.shape).astype("<f4")))
    child.add(Tensor.from_array("tiny", tiny + rng.normal(0, 1e-5, tiny.shape).astype("<f4")))
    repo = Repository.in_memory()
    repo.archive_snapshot(parent, "m")
    res = repo.archive_snapshot(child, "m")
    got = entries(repo, res.version_id)
    assert "delta" in rec(repo, got["big"].object)
    assert "delta" not in rec(repo, got["tiny"].object)
    assert_same_snapshot(repo.retrieve(res.version_id), child)
    # the same tiny change is a delta when the threshold allows it: the rule, not the data, decided
    repo2 = Repository.in_memory()
    repo2.archive_snapshot(parent, "m")
    old, select.MIN_SAVING = select.MIN_SAVING, 0
    try:
        res2 = repo2.archive_snapshot(child, "m")
    finally:
        select.MIN_SAVING = old
    assert "delta" in rec(repo2, entries(repo2, res2.version_id)["tiny"].object)
    assert_same_snapshot(repo2.retrieve(res2.version_id), child)


@pytest.mark.parametrize("ops", [["xor", "sub"], ["xor"], ["sub"]], ids="+".join)
def test_chain_longer_than_max_depth(ops):
    repo = Repository.in_memory(delta={"max_depth": 3, "ops": ops})
    snaps = [model(2, scale=0.6)]
    for i in range(8):
        snaps.append(tune(snaps[-1], 200 + i))
    results = [repo.archive_snapshot(s, "m") for s in snaps]
    check_delta_invariants(repo, max_depth=3, ops=ops)
    depths = {name: [] for name in ("emb", "w1", "bf")}
    for res in results:
        for name, e in entries(repo, res.version_id).items():
            if name in depths:
                depths[name].append(rec(repo, e.object).get("depth", 0))
    for name, ds in depths.items():
        assert max(ds) == 3, (name, ds)                  # chains do reach the bound ...
        assert all(d <= 3 for d in ds), (name, ds)       # ... and never pass it
        assert ds.count(0) >= 2, (name, ds)              # a whole tensor restarts the chain
    for r, ds in list(zip(results, zip(*depths.values())))[1:]:
        assert set(r.encodings) <= {"whole", *ops}
        # below the bound the tuned tensors are deltas; at it, they are stored whole
        assert sum(v for k, v in r.encodings.items() if k != "whole") >= sum(d > 0 for d in ds)
    for s, res in zip(snaps, results):
        assert_same_snapshot(repo.retrieve(res.version_id), s)
    assert repo.verify().ok


# ---------------------------------------------- resized, renamed, inserted
@pytest.mark.parametrize("size", ["inline", "chunked"])
def test_resized_tensor_deltas_against_its_old_self(size):
    repo = Repository.in_memory(chunker={"id": "fixed", "size": 1 << 16})
    rng = np.random.default_rng(3)
    make = inline_f32 if size == "inline" else chunked_f32
    emb = make(rng, 0.4 if size == "inline" else 1.5)
    head = make(rng, 0.4 if size == "inline" else 1.5)
    p = Snapshot()
    p.add(Tensor.from_array("emb", emb))
    p.add(Tensor.from_array("head", head))
    parent = repo.archive_snapshot(p, "m")
    c = Snapshot()
    grown = np.concatenate([tune_words(emb.view("<u4"), rng, "F32").view("<f4"),
                            rng.normal(0, 0.02, (37, emb.shape[1])).astype("<f4")])
    shrunk = tune_words(head.view("<u4"), rng, "F32").view("<f4")[:-5]
    c.add(Tensor.from_array("emb", grown))              # vocabulary grown by 37 rows
    c.add(Tensor.from_array("head", shrunk))            # 5 rows cut
    child = repo.archive_snapshot(c, "m")
    assert child.encodings.get("whole", 0) == 0, child.encodings
    old, new = entries(repo, parent.version_id), entries(repo, child.version_id)
    for name in ("emb", "head"):
        assert new[name].shape != old[name].shape
        assert delta_base(repo, new[name]) == old[name].object, name
    check_delta_invariants(repo)
    assert_same_snapshot(repo.retrieve(child.version_id), c)
    assert_same_snapshot(repo.retrieve(parent.version_id), p)
    n = emb.shape[0]
    for a, b in ((n - 2, n + 3), (n, n + 37), (0, n + 37), (n + 30, n + 99)):
        repo.reader.clear_cache()
        assert repo.read_rows(new["emb"], a, b).tobytes() == grown[a:b].tobytes(), (a, b)
    assert child.physical_added < 0.6 * parent.physical_added


def test_renamed_inserted_and_replaced_tensors_find_their_base():
    """A renamed (and tuned) tensor, an inserted tuned copy of another layer, and a
    same-named tensor replaced by a tuned copy of another layer delta against the tensor
    they came from, among same-shaped distractors; an exact renamed copy is deduplicated."""
    repo = Repository.in_memory()
    rng = np.random.default_rng(4)
    p = Snapshot()
    for group, make, frac in (("big", chunked_f32, 1.2), ("small", inline_f32, 0.3)):
        shape = None
        for i in range(4):
            a = make(rng, frac)
            if shape is not None:
                a = rng.normal(0, 0.02, shape).astype("<f4")
            shape = a.shape
            p.add(Tensor.from_array(f"{group}.{i}", a))
    parent = repo.archive_snapshot(p, "m")
    old = entries(repo, parent.version_id)

    def tuned(name):
        return tune_words(p.tensors[name].data.view("<u4"), rng, "F32").view("<f4")

    c = Snapshot()
    expect = {}
    for g in ("big", "small"):
        c.add(Tensor.from_array(f"{g}.0", p.tensors[f"{g}.0"].data))          # unchanged
        c.add(Tensor.from_array(f"{g}.renamed", tuned(f"{g}.2")))             # big.2 renamed + tuned
        expect[f"{g}.renamed"] = f"{g}.2"
        c.add(Tensor.from_array(f"{g}.3", tuned(f"{g}.0")))                   # replaced by a copy of .0
        expect[f"{g}.3"] = f"{g}.0"
        c.add(Tensor.from_array(f"{g}.4", tuned(f"{g}.1")))                   # inserted copy of .1
        expect[f"{g}.4"] = f"{g}.1"
        c.add(Tensor.from_array(f"{g}.moved", p.tensors[f"{g}.1"].data.copy()))  # exact copy, new name
    child = repo.archive_snapshot(c, "m")
    new = entries(repo, child.version_id)
    for name, source in expect.items():
        assert delta_base(repo, new[name]) == old[source].object, (name, source)
    for g in ("big", "small"):
        assert new[f"{g}.moved"].object == old[f"{g}.1"].object
        assert new[f"{g}.0"].object == old[f"{g}.0"].object
    assert child.tensors_reused == 4
    check_delta_invariants(repo)
    assert_same_snapshot(repo.retrieve(child.version_id), c)
    assert_same_snapshot(repo.retrieve(parent.version_id), p)


def test_dtype_or_shape_change_never_deltas_against_an_incompatible_base():
    """Same name, same bytes, another dtype or shape: the tempting base (XOR would be all
    zeros) is another tensor and must not be used."""
    repo = Repository.in_memory()
    rng = np.random.default_rng(5)
    w = chunked_f32(rng, 1.2)
    v = inline_f32(rng, 0.3, cols=64)
    h = (rng.normal(0, 1, (300, 64)).astype("<f4").view("<u4") >> 16).astype("<u2")
    p = Snapshot()
    p.add(Tensor.from_array("w", w))
    p.add(Tensor.from_array("v", v))
    p.add(Tensor.from_array("h", h, dtype="BF16"))
    p.add(Tensor.from_array("i", np.arange(4096, dtype="<i4").reshape(64, 64)))
    parent = repo.archive_snapshot(p, "m")
    old = entries(repo, parent.version_id)
    c = Snapshot()
    c.add(Tensor.from_array("w", w.view("<i4")))                    # F32 -> I32, same bytes
    c.add(Tensor.from_array("v", v.T.copy()))                       # transposed: other row shape
    c.add(Tensor.from_array("h", h.view("<f2")))                    # BF16 -> F16, same bytes
    c.add(Tensor.from_array("i", np.arange(4096, dtype="<i4").reshape(32, 128)))   # reshaped
    c.add(Tensor.from_array("flat", w.reshape(-1).copy()))          # flattened copy of w
    child = repo.archive_snapshot(c, "m")
    new = entries(repo, child.version_id)
    for name in c.tensors:
        assert new[name].object not in {e.object for e in old.values()}
        assert delta_base(repo, new[name]) is None, (name, rec(repo, new[name].object))
    assert child.encodings == {"whole": len(c.tensors)}
    check_delta_invariants(repo)
    assert_same_snapshot(repo.retrieve(child.version_id), c)


# ------------------------------------------------------------- find_similar
def test_find_similar_picks_the_version_a_finetune_came_from():
    repo = Repository.in_memory()
    a, b = model(10, scale=0.6), model(11, scale=0.6)
    ra = repo.archive_snapshot(a, "model-a")
    rb = repo.archive_snapshot(b, "model-b")
    ft = tune(b, 12)
    assert repo.find_similar(ft).id == bytes.fromhex(rb.version_id)
    res = repo.archive_snapshot(ft, "finetune")              # a new name: no parent
    assert res.parent is None and res.delta_source == rb.version_id
    v = repo.version("finetune")
    assert v.parent is None and v.manifest["delta_source"] == rb.version_id
    assert res.encodings.get("xor", 0) + res.encodings.get("sub", 0) >= 3, res.encodings
    base_objs = {e.object for e in repo.version(rb.version_id).tensors}
    deltas = [e for e in v.tensors if delta_base(repo, e) is not None]
    assert deltas and all(delta_base(repo, e) in base_objs for e in deltas)
    assert res.physical_added < 0.5 * rb.physical_added
    # a model like none stored: stored whole, no delta_source
    res2 = repo.archive_snapshot(model(13, scale=0.6), "unrelated")
    assert res2.delta_source is None and "delta_source" not in repo.version("unrelated").manifest
    assert set(res2.encodings) == {"whole"}
    # with an explicit parent the parent is the delta source, recorded as the parent only
    res3 = repo.archive_snapshot(tune(a, 14), "from-a", parent="model-a")
    assert res3.parent == ra.version_id and res3.delta_source is None
    assert "delta_source" not in repo.version("from-a").manifest
    check_delta_invariants(repo)
    for ref, s in (("model-a", a), ("model-b", b), ("finetune", ft)):
        assert_same_snapshot(repo.retrieve(ref), s)
    assert repo.verify().ok


# ----------------------------------------------------------- archive_series
def _branching_lineage(repo):
    """v0 <- v1 <- v2, v1 <- v3 (a branch), every version a fine-tune of its parent."""
    snaps = {"v0": model(1)}
    snaps["v1"] = tune(snaps["v0"], 101)
    snaps["v2"] = tune(snaps["v1"], 102)
    snaps["v3"] = tune(snaps["v1"], 103)
    ids = {}
    for name, parent in (("v0", None), ("v1", "v0"), ("v2", "v1"), ("v3", "v1")):
        ids[name] = repo.archive_snapshot(snaps[name], name, parent=ids.get(parent)).version_id
    return snaps, ids


def test_retrieve_many_decodes_every_stored_delta_once():
    """Versions retrieved together share decoded bases: each tensor record's own
    chunks are read once, where one-by-one retrieves read every chain to its keyframe."""
    repo = counting_repo(delta={"max_depth": 8, "ops": OPS})
    snaps, ids = _branching_lineage(repo)
    objects = {e.object for v in ids.values() for e in repo.version(v).tensors}
    own_chunks = sum(len(record_chunks(rec(repo, a))) for a in objects)
    assert any(rec(repo, a).get("depth", 0) >= 2 for a in objects)   # there are chains to share

    def chunk_reads():
        return sum(1 for k in repo.store.read if k[:1] == CHUNK)

    repo.reader.clear_cache()
    repo.store.read.clear()
    for name in ("v3", "v2", "v1", "v0"):
        assert_same_snapshot(repo.retrieve(ids[name]), snaps[name])
    one_by_one = chunk_reads()

    repo.store.read.clear()
    got = list(repo.retrieve_many([ids["v3"], "v2", ids["v1"][:12], repo.version("v0"), "v2"]))
    # bases first, the given order otherwise; a version named twice comes once (a
    # Version already read stands for its ref)
    assert [v.name for v, _ in got] == ["v0", "v1", "v3", "v2"]
    for v, snap in got:
        assert_same_snapshot(snap, snaps[v.name])
    assert chunk_reads() == own_chunks < one_by_one
    assert repo.reader._cached == 0   # nothing is kept once the versions are read


def test_retrieve_many_with_a_lossy_version_matches_retrieve():
    """A lossy version among exact ones: its codes are read whole and decoded,
    and every snapshot equals what `retrieve` gives for that version alone."""
    repo = Repository.in_memory()
    rng = np.random.default_rng(5)
    base = Snapshot()
    base.add(Tensor.from_array("w", rng.normal(0, 0.02, (512, 512)).astype("<f4")))
    base.add(Tensor.from_array("b", np.zeros(512, "<f4")))
    tuned = tune(base, 7)
    ids = {"v0": repo.archive_snapshot(base, "v0").version_id}
    ids["v1"] = repo.archive_snapshot(tuned, "v1", parent=ids["v0"]).version_id
    ids["q"] = repo.archive_snapshot(tuned, "q", parent=ids["v1"], scheme="bf16-round").version_id
    assert any(e.lossy for e in repo.version(ids["q"]).tensors)
    alone = {name: repo.retrieve(vid) for name, vid in ids.items()}
    got = {v.name: snap for v, snap in repo.retrieve_many([ids["q"], ids["v1"], ids["v0"]])}
    assert set(got) == set(ids)
    for name, snap in got.items():
        assert_same_snapshot(snap, alone[name])


def test_retrieve_many_snapshots_are_the_callers_to_change():
    """A snapshot handed out may be changed before the next version, whose tensors
    delta against it, is read: the next version is still exact (rebuilt from the
    store), and tensors identical across versions are separate arrays."""
    repo = Repository.in_memory()
    snaps, ids = _branching_lineage(repo)
    seen = []
    for v, snap in repo.retrieve_many(["v0", "v1", "v2", "v3"]):
        assert_same_snapshot(snap, snaps[v.name])
        for t in snap.tensors.values():
            assert all(not np.shares_memory(t.data, other) for other in seen)
            seen.append(t.data)
            t.data.reshape(-1).view(np.uint8)[:8] ^= 0xFF    # the caller scribbles on it
    assert repo.verify().ok


def test_archive_series_of_checkpoint_files(tmp_path):
    from pas import formats
    snaps = [model(20, scale=0.6)]
    for i in range(3):
        snaps.append(tune(snaps[-1], 300 + i))
    files = []
    for i, s in enumerate(snaps):
        f = tmp_path / f"ckpt-{i}.safetensors"
        formats.write(s, f, "safetensors")
        files.append(str(f))
    with Repository.init(tmp_path / "repo") as repo:
        first = repo.archive_snapshot(model(21, scale=0.6), "other")
        results = repo.archive_series(files, "run")
        assert len(results) == len(files)
        assert results[0].parent is None
        for prev, res in zip(results, results[1:]):
            assert res.parent == prev.version_id
            assert res.encodings.get("xor", 0) + res.encodings.get("sub", 0) >= 3, res.encodings
            assert res.physical_added < 0.5 * results[0].physical_added
        assert repo.refs() == {"other": first.version_id, "run": results[-1].version_id}
        assert [v.hex for v in repo.log("run")] == [r.version_id for r in results[::-1]]
        check_delta_invariants(repo)
    with Repository.open(tmp_path / "repo") as repo:            # read-only, cold
        for f, res in zip(files, results):
            assert_same_snapshot(repo.retrieve(res.version_id), formats.read(f))
        assert repo.verify().ok


# ------------------------------------------------ bases kept between archives
def test_next_archive_deltas_against_kept_copies_without_decoding(tmp_path, monkeypatch):
    """The version archived last through a Repository stays in memory (copies) as
    the next one's delta bases: nothing is decoded back from the store, and
    changing the caller's arrays in place afterwards (a training loop does) does
    not change what the next version is stored against."""
    parent = model(40, scale=0.6)
    with Repository.init(tmp_path / "repo") as repo:
        r0 = repo.archive_snapshot(parent, "run")
        kept = set(repo.recent_bases)
        big = {e.object for e in repo.version(r0.version_id).tensors if e.nbytes >= select.MIN_SAVING}
        assert kept == big, "every tensor that could be a delta base is kept"
        expected = Snapshot(metadata=parent.metadata)
        for n, t in parent.tensors.items():
            expected.add(Tensor.from_array(n, t.data.copy(), dtype=t.dtype))
        for t in parent.tensors.values():   # the caller reuses its buffers
            if t.data.flags.writeable:
                t.data.view(np.uint8)[:] ^= 0x5A
        decoded = []
        real = repo.reader.checked_words
        monkeypatch.setattr(repo.reader, "checked_words",
                            lambda addr, *a, **k: decoded.append(addr) or real(addr, *a, **k))
        child = tune(expected, 41)
        r1 = repo.archive_snapshot(child, "run")
        assert r1.encodings.get("xor", 0) + r1.encodings.get("sub", 0) >= 2, r1.encodings
        assert not kept & set(decoded)
        check_delta_invariants(repo)
    with Repository.open(tmp_path / "repo") as repo:
        assert_same_snapshot(repo.retrieve(r0.version_id), expected)
        assert_same_snapshot(repo.retrieve(r1.version_id), child)
        assert repo.verify().ok


def test_a_damaged_kept_copy_is_not_used_as_a_base(tmp_path):
    """A kept copy is checked against its content address before a delta is taken
    against it; one that no longer matches is decoded from the store instead."""
    parent = model(42, scale=0.6)
    with Repository.init(tmp_path / "repo") as repo:
        repo.archive_snapshot(parent, "run")
        for words in repo.recent_bases.values():
            words[len(words) // 2] ^= 1
        child = tune(parent, 43)
        r1 = repo.archive_snapshot(child, "run")
        assert r1.encodings.get("xor", 0) + r1.encodings.get("sub", 0) >= 2, r1.encodings
        assert_same_snapshot(repo.retrieve(r1.version_id), child)
        assert_same_snapshot(repo.retrieve(r1.parent), parent)
        assert repo.verify().ok
        repo.forget_bases()
        assert repo.recent_bases == {}


# ----------------------------------------------------------------------- gc
class _Crash(Exception):
    pass


def _pack_xor_child(repo, base_addr: bytes, words: np.ndarray) -> tuple[list, bytes]:
    """A hand-made XOR-delta record of ``words`` against a stored tensor, laid out as the
    writer would (inline up to INLINE_MAX, else chunks cut by the repository's chunker):
    the objects to write and the record's address."""
    b = rec(repo, base_addr)
    dt = dtypes.get(b["dtype"])
    base_words = repo.reader.words(base_addr)
    shape = tuple(b["shape"])
    p = planes.split(words, dt, b["layout"], base=base_words, op="xor")
    r = {"dtype": dt.name, "shape": list(shape), "layout": b["layout"], "codec": repo.compressor.get_config(),
         "delta": {"op": "xor", "base": base_addr.hex()}, "depth": b.get("depth", 0) + 1}
    objects, payload = [], b""
    if words.nbytes <= writer.INLINE_MAX:
        frames = [codecs.encode_chunk(p[i], repo.compressor, checked=False) for i in range(dt.itemsize)]
        r["inline"] = [len(f) for f in frames]
        payload = b"".join(frames)
    else:
        r["chunks"] = []
        for i in range(dt.itemsize):
            plane = []
            for off, n in repo.chunker.cuts(p.shape[1]):
                piece = p[i, off:off + n]
                a = records.address(writer.digest(memoryview(piece)), n)
                objects.append((CHUNK + a, codecs.encode_chunk(piece, repo.compressor)))
                plane.append(a.hex())
            r["chunks"].append(plane)
    addr = records.address(writer.tensor_digest(dt.name, shape, words.view(dt.np_dtype).reshape(shape)),
                           words.nbytes)
    objects.append((TENSOR + addr, records.pack_tensor_record(r, payload)))
    return objects, addr


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
def test_gc_keeps_every_base_of_live_records(tmp_path, monkeypatch, store):
    """An archive interrupted after its tensor records (not its manifest) were written
    leaves an orphaned delta chain; a later version names a delta whose base is one of
    those orphans (no manifest names the base itself). gc must keep exactly what live
    versions need, down every chain, and remove the rest."""
    from pas.writer import VersionWriter
    repo = (Repository.in_memory() if store == "memory" else Repository.init(tmp_path / "r"))
    p = model(30, scale=0.6)
    c1 = tune(p, 31)
    repo.archive_snapshot(p, "m")
    r1 = repo.archive_snapshot(c1, "m")
    c2 = tune(c1, 32)

    def crash(self, *args):
        self.flush()
        self.store.flush()
        self.store.write(self.final, sync=True)        # records written, manifest and ref lost
        raise _Crash("killed between records and manifest")

    monkeypatch.setattr(VersionWriter, "commit", crash)
    with pytest.raises(_Crash):
        repo.archive_snapshot(c2, "m")
    monkeypatch.undo()
    repo.reader.clear_cache()
    assert repo.refs() == {"m": r1.version_id} and len(repo.versions()) == 2
    live = set()
    for v in repo.versions():
        for e in v.tensors + v.files:
            live |= needed_keys(repo.store, e.object)
    orphans = {k for k in repo.store.list_prefix(TENSOR)} - live
    orphan_deltas = [k for k in orphans if "delta" in rec(repo, k[1:])]
    assert len(orphan_deltas) >= 3                                   # the chain c2 -> c1 -> p
    assert repo.verify().ok                                          # orphans are not damage

    # A version whose "emb" is a delta against c2's orphaned "emb" record (depth 3).
    emb_c2 = next(k for k in orphan_deltas if rec(repo, k[1:])["shape"] == list(c2.tensors["emb"].shape))
    rng = np.random.default_rng(33)
    c3_emb = tune_words(c2.tensors["emb"].data.view("<u4"), rng, "F32")
    objects, c3_addr = _pack_xor_child(repo, emb_c2[1:], c3_emb)
    assert len(objects) > 1                                          # chunks + the record
    c3 = Snapshot(metadata=dict(c1.metadata))
    for name, t in c1.tensors.items():
        c3.add(t)
    c3.add(Tensor.from_array("emb", c3_emb.view("<f4")))
    manifest = dict(repo.version("m").manifest, parent=r1.version_id, message="resumed")
    manifest["tensors"] = [dict(e, object=c3_addr.hex()) if e["name"] == "emb" else e
                           for e in manifest["tensors"]]
    body, vid = repo._new_version_id(manifest)
    repo.store.write(objects + [(VERSION + vid, body), (REF + b"resumed", records.pack_ref(vid))],
                     sync=True)
    repo.reader.clear_cache()
    assert_same_snapshot(repo.retrieve("resumed"), c3, files=False)
    assert repo.verify().ok

    live = {VERSION + v.id for v in repo.versions()} | {REF + b"m", REF + b"resumed"}
    for v in repo.versions():
        for e in v.tensors + v.files:
            live |= needed_keys(repo.store, e.object)
    assert emb_c2 in live and rec(repo, c3_addr)["depth"] == 3
    assert {k for k, _ in objects} <= live
    everything = set(repo.store.list_prefix(b""))
    dead = everything - live
    assert dead and all(k[:1] in (TENSOR, CHUNK) for k in dead)
    dry = repo.gc()
    assert (dry.tensors, dry.chunks) == (sum(k[:1] == TENSOR for k in dead), sum(k[:1] == CHUNK for k in dead))
    assert set(repo.store.list_prefix(b"")) == everything
    repo.gc(force=True)
    assert set(repo.store.list_prefix(b"")) == live
    repo.reader.clear_cache()
    assert repo.verify().ok
    assert_same_snapshot(repo.retrieve("resumed"), c3, files=False)
    assert_same_snapshot(repo.retrieve(r1.version_id), c1)
    assert_same_snapshot(repo.retrieve(repo.log("m")[-1].id), p)
    assert repo.gc(force=True).tensors == 0
    repo.close()


# -------------------------------------------------------- row-range reads
def expected_chunks(repo, addr: bytes, start: int, stop: int) -> set[bytes]:
    """The chunk keys elements [start, stop) of a tensor lie in, and those of the same
    elements of its delta base (as far as the base reaches), down the chain."""
    r = rec(repo, addr)
    keys: set[bytes] = set()
    if start < stop and "chunks" in r:
        lengths = [records.address_length(bytes.fromhex(h)) for h in r["chunks"][0]]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        for j in range(len(lengths)):
            if offsets[j] < stop and offsets[j + 1] > start:
                keys |= {CHUNK + bytes.fromhex(plane[j]) for plane in r["chunks"]}
    if "delta" in r:
        base = bytes.fromhex(r["delta"]["base"])
        n_base = math.prod(rec(repo, base)["shape"])
        keys |= expected_chunks(repo, base, start, min(stop, n_base))
    return keys


def _row_repo(ops):
    """Parent and child (tuned, one tensor grown, one shrunk) with small chunks, so a row
    range covers a few chunks of many."""
    repo = counting_repo(chunker={"id": "fixed", "size": 1 << 14},
                         delta={"max_depth": 8, "ops": ops})
    rng = np.random.default_rng(6)
    p = Snapshot()
    p.add(Tensor.from_array("big", with_specials(chunked_f32(rng, 1.2, cols=200), F32_SPECIALS, 450)))
    p.add(Tensor.from_array("grow", chunked_f32(rng, 1.1, cols=100)))
    p.add(Tensor.from_array("shrink", chunked_f32(rng, 1.1, cols=100)))
    bf = (rng.normal(0, 0.02, (_rows(int(IM * 1.2), 64, 2) + 1, 64)).astype("<f4").view("<u4") >> 16)
    p.add(Tensor.from_array("bf", with_specials(bf.astype("<u2"), BF16_SPECIALS, 64), dtype="BF16"))
    p.add(Tensor.from_array("small", inline_f32(rng, 0.2, cols=50)))
    c = tune(p, 61)
    g = c.tensors["grow"].data
    c.add(Tensor.from_array("grow", np.concatenate([g, rng.normal(0, 0.02, (23, g.shape[1])).astype("<f4")])))
    c.add(Tensor.from_array("shrink", c.tensors["shrink"].data[:-400].copy()))   # several chunks fewer
    rp = repo.archive_snapshot(p, "m")
    rc = repo.archive_snapshot(c, "m")
    c2 = tune(c, 62)
    rc2 = repo.archive_snapshot(c2, "m")
    return repo, {rp.version_id: p, rc.version_id: c, rc2.version_id: c2}


@pytest.mark.parametrize("ops", [["xor"], ["sub"]], ids="+".join)
def test_read_rows_returns_exactly_the_rows_and_reads_only_their_chunks(ops):
    repo, versions = _row_repo(ops)
    store = repo.store
    kinds = check_delta_invariants(repo, ops=ops)
    assert {("chunked", "whole"), ("inline", "whole"), ("chunked", ops[0]), ("inline", ops[0])} <= set(kinds)
    seen = set()
    for vid, snap in versions.items():
        for name, e in entries(repo, vid).items():
            r = rec(repo, e.object)
            seen.add(("inline" if "inline" in r else "chunked", r["delta"]["op"] if "delta" in r else "whole",
                      r.get("depth", 0)))
            data = snap.tensors[name].data
            rows = e.shape[0]
            row = math.prod(e.shape[1:])
            nchunks = len(r["chunks"][0]) if "chunks" in r else 0
            for a, b in ((0, 1), (0, rows), (rows - 1, rows), (17, 123), (rows // 2, rows // 2),
                         (-5, 3), (rows - 3, rows + 10), (rows // 3, rows // 3 + 1)):
                repo.reader.clear_cache()
                store.read.clear()
                got = repo.read_rows(e, a, b)
                lo, hi = max(a, 0), max(min(b, rows), max(a, 0))
                want = data[lo:hi]
                assert got.shape == want.shape and got.dtype == want.dtype, (name, a, b)
                assert got.tobytes() == want.tobytes(), (name, a, b)
                expect = expected_chunks(repo, e.object, lo * row, hi * row)
                if (lo, hi) == (0, rows) and name == "shrink" and "delta" in r:
                    # a whole read of a shrunk delta: see the test below
                    assert store.chunk_reads() >= expect
                    continue
                assert store.chunk_reads() == expect, (name, r.get("delta"), a, b, len(store.chunk_reads()),
                                                       len(expect))
                if "chunks" in r and hi - lo <= 2 and nchunks > 4:
                    assert len(store.chunk_reads()) < len(record_chunks(r))
    assert ("chunked", ops[0], 2) in seen and ("inline", ops[0], 2) in seen


@pytest.mark.parametrize("ops", [["xor"], ["sub"]], ids="+".join)
def test_whole_read_of_a_shrunk_delta_reads_no_base_chunks_beyond_it(ops):
    """A tensor cut by 400 rows deltas against its longer base: reading all of it needs the
    base's elements up to the tensor's own length only, not the base's last chunks."""
    repo, versions = _row_repo(ops)
    shrunk = 0
    for vid in list(versions)[1:]:
        e = entries(repo, vid)["shrink"]
        r = rec(repo, e.object)
        assert "delta" in r
        base_n = math.prod(rec(repo, bytes.fromhex(r["delta"]["base"]))["shape"])
        n = math.prod(e.shape)
        if base_n == n:      # the grandchild deltas against the already-shrunk child
            continue
        assert base_n > n
        shrunk += 1
        for read in (lambda: repo.read_rows(e, 0, e.shape[0]), lambda: repo.retrieve(vid, names=["shrink"])):
            repo.reader.clear_cache()
            repo.store.read.clear()
            got = read()
            data = got if isinstance(got, np.ndarray) else got.tensors["shrink"].data
            assert data.tobytes() == versions[vid].tensors["shrink"].data.tobytes()
            extra = repo.store.chunk_reads() - expected_chunks(repo, e.object, 0, n)
            assert not extra, f"{len(extra)} base chunks beyond the tensor's {n} elements were read"
    assert shrunk, "no version deltas a shrunk tensor against its longer base"


# ----------------------------------------------------------- top-K planes
@pytest.mark.parametrize("ops", [["xor"], ["sub"], ["xor", "sub"]], ids="+".join)
def test_read_planes_are_the_top_planes_of_the_tensor(ops):
    repo, versions = _row_repo(ops)
    store = repo.store
    for vid, snap in versions.items():
        for name, e in entries(repo, vid).items():
            r = rec(repo, e.object)
            dt = dtypes.get(e.dtype)
            full = None
            # an XOR chain of one layout (or a whole tensor) reads only the top k planes' chunks
            chain, a = [], e.object
            while a is not None:
                chain.append(rec(repo, a))
                d = chain[-1].get("delta")
                a = bytes.fromhex(d["base"]) if d else None
            planes_only = all(c.get("delta", {"op": "xor"})["op"] == "xor" and c["layout"] == r["layout"]
                              for c in chain)
            for k in range(1, dt.itemsize + 2):
                repo.reader.clear_cache()
                store.read.clear()
                top, layout = repo.read_planes(e, k)
                assert layout == r["layout"]
                if full is None:
                    full = planes.split(snap.tensors[name].data, dt, layout)
                kk = min(k, dt.itemsize)
                assert top.shape == (kk, math.prod(e.shape)), (name, k)
                assert top.tobytes() == full[:kk].tobytes(), (name, r.get("delta"), k)
                if planes_only:
                    allowed = {CHUNK + bytes.fromhex(h) for c in chain if "chunks" in c
                               for plane in c["chunks"][:kk] for h in plane}
                    assert store.chunk_reads() <= allowed, (name, k)
