"""Byte planes: split/merge round trips, MSB-first order, the planes-exp permutation,
and agreement of the numpy path with the Numba kernels."""
from __future__ import annotations

import numpy as np
import pytest

from pas import planes
from pas.dtypes import DTYPES

ALL = sorted(DTYPES)
EXP_DTYPES = sorted(n for n, d in DTYPES.items() if d.is_float and d.itemsize >= 2)
MULTIBYTE = sorted(n for n, d in DTYPES.items() if d.itemsize >= 2)


def _layouts(name):
    return ["planes", "planes-exp"] if name in EXP_DTYPES else ["planes"]


CASES = [(n, lay) for n in ALL for lay in _layouts(n)]


def special_words(dt) -> np.ndarray:
    """Edge bit patterns of an element of ``dt``'s width."""
    bits = dt.itemsize * 8
    top = 1 << (bits - 1)
    full = (1 << bits) - 1
    vals = {0, 1, full, top, top - 1, top + 1, full - 1, 0x55 * (full // 0xFF), 0xAA * (full // 0xFF)}
    if dt.is_float:
        e, m = dt.float_bits
        exp_all = ((1 << e) - 1) << m
        vals |= {exp_all, exp_all | 1, exp_all | (1 << (m - 1)) | 0x5 if m > 2 else exp_all | 1,
                 exp_all | top, 1 << m, (1 << m) - 1, top | 1, top | ((1 << m) - 1)}
    return np.array(sorted(v & full for v in vals), dtype=dt.bits_dtype)


def sample_words(dt, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 256, n * dt.itemsize, dtype=np.uint8).view(dt.bits_dtype).copy()
    sp = special_words(dt)
    words[: min(n, sp.size)] = sp[: min(n, sp.size)]
    return words


def reference_split(words: np.ndarray, dt, layout: str) -> np.ndarray:
    """Independent oracle in Python ints: plane p = byte (k-1-p) of the (permuted) element."""
    k = dt.itemsize
    width = 8 * k
    out = np.empty((k, words.size), np.uint8)
    for i, w in enumerate(int(x) for x in words.reshape(-1)):
        if layout == "planes-exp":
            e, m = dt.float_bits
            sign, exp, man = w >> (width - 1), (w >> m) & ((1 << e) - 1), w & ((1 << m) - 1)
            w = (exp << (m + 1)) | (sign << m) | man
        for p in range(k):
            out[p, i] = (w >> (8 * (k - 1 - p))) & 0xFF
    return out


@pytest.fixture
def numba_everywhere(monkeypatch):
    """Route every split/merge of 2+ byte dtypes through the Numba kernels."""
    monkeypatch.setattr(planes, "NUMBA_MIN_ELEMENTS", 1)


@pytest.mark.parametrize("name,layout", CASES)
def test_round_trip_small_against_oracle(name, layout):
    dt = DTYPES[name]
    words = sample_words(dt, 300, seed=len(name))
    p = planes.split(words, dt, layout)
    assert p.shape == (dt.itemsize, words.size) and p.dtype == np.uint8
    assert p.tobytes() == reference_split(words, dt, layout).tobytes()
    back = planes.merge(p, dt, layout)
    assert back.dtype == dt.bits_dtype and back.shape == (words.size,)
    assert back.tobytes() == words.tobytes()


@pytest.mark.parametrize("name,layout", [c for c in CASES if DTYPES[c[0]].itemsize >= 2])
def test_numba_path_equals_numpy_path(name, layout, monkeypatch):
    dt = DTYPES[name]
    words = sample_words(dt, 5000, seed=7)
    numpy_planes = planes.split(words, dt, layout)
    monkeypatch.setattr(planes, "NUMBA_MIN_ELEMENTS", 1)
    numba_planes = planes.split(words, dt, layout)
    assert numba_planes.tobytes() == numpy_planes.tobytes()
    assert numba_planes.tobytes() == reference_split(words, dt, layout).tobytes()
    assert planes.merge(numba_planes, dt, layout).tobytes() == words.tobytes()
    # merge through Numba with a block-unaligned length and a caller-supplied out
    out = np.full(words.size, 0xAB, dt.bits_dtype)
    res = planes.merge(numba_planes, dt, layout, out=out)
    assert res is out and out.tobytes() == words.tobytes()


@pytest.mark.parametrize("name", MULTIBYTE)
def test_sizes_around_numba_threshold(name):
    """Real threshold: n-1 takes the numpy path, n and n+1 the Numba path; all agree."""
    dt = DTYPES[name]
    n0 = planes.NUMBA_MIN_ELEMENTS
    base = sample_words(dt, n0 + 1, seed=3)
    layouts = _layouts(name)
    ref = {lay: planes.split(base[:64], dt, lay) for lay in layouts}
    for n in (n0 - 1, n0, n0 + 1):
        words = base[:n]
        for lay in layouts:
            p = planes.split(words, dt, lay)
            assert p.shape == (dt.itemsize, n)
            assert p[:, :64].tobytes() == ref[lay].tobytes()
            # the permutation is elementwise: spot-check the tail against the oracle
            assert p[:, -50:].tobytes() == reference_split(words[-50:], dt, lay).tobytes()
            assert planes.merge(p, dt, lay).tobytes() == words.tobytes()


@pytest.mark.parametrize("name,layout", CASES)
@pytest.mark.parametrize("n", [0, 1, 2, 7, 2047, 2048, 2049])
def test_edge_lengths_both_paths(name, layout, n, monkeypatch):
    dt = DTYPES[name]
    words = sample_words(dt, n, seed=n)
    expect = reference_split(words, dt, layout).tobytes()
    for threshold in (1 << 40, 1):
        monkeypatch.setattr(planes, "NUMBA_MIN_ELEMENTS", threshold)
        p = planes.split(words, dt, layout)
        assert p.shape == (dt.itemsize, n)
        assert p.tobytes() == expect
        assert planes.merge(p, dt, layout).tobytes() == words.tobytes()


def test_plane0_is_most_significant_byte():
    dt = DTYPES["U32"]
    p = planes.split(np.array([0x11223344, 0xA0B0C0D0], "<u4"), dt)
    assert p.tolist() == [[0x11, 0xA0], [0x22, 0xB0], [0x33, 0xC0], [0x44, 0xD0]]
    p = planes.split(np.array([0x0102030405060708], "<u8"), DTYPES["I64"])
    assert p[:, 0].tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    # float32: plane 0 holds sign + the top 7 exponent bits
    p = planes.split(np.array([1.0, -2.0], "<f4").view("<u4"), DTYPES["F32"])
    assert p[:, 0].tolist() == [0x3F, 0x80, 0, 0] and p[:, 1].tolist() == [0xC0, 0, 0, 0]


def test_planes_exp_puts_whole_exponent_in_plane0():
    # F32 1.0: exponent 127 -> plane 0 == 0x7f; -2.0: exponent 128, sign goes to plane 1's top bit
    p = planes.split(np.array([1.0, -2.0, -0.0], "<f4").view("<u4"), DTYPES["F32"], "planes-exp")
    assert p[:, 0].tolist() == [0x7F, 0x00, 0, 0]
    assert p[:, 1].tolist() == [0x80, 0x80, 0, 0]
    assert p[:, 2].tolist() == [0x00, 0x80, 0, 0]
    # BF16 1.0 = 0x3f80 -> 0x7f00 ; F64 1.0 exponent 1023 -> top 8 of 11 exponent bits in plane 0
    p = planes.split(np.array([0x3F80, 0xBF80], "<u2"), DTYPES["BF16"], "planes-exp")
    assert p.tolist() == [[0x7F, 0x7F], [0x00, 0x80]]
    p = planes.split(np.array([1.0], "<f8").view("<u8"), DTYPES["F64"], "planes-exp")
    assert p[0, 0] == (1023 << 53) >> 56


@pytest.mark.parametrize("name,layout", CASES)
def test_split_accepts_any_shape_and_noncontiguous(name, layout):
    dt = DTYPES[name]
    words = sample_words(dt, 60, seed=1)
    grid = words.reshape(6, 10)
    for arr in (grid, grid.T, grid[:, ::3], grid[::-1], words[5]):
        expect = np.ascontiguousarray(arr).reshape(-1)
        p = planes.split(arr, dt, layout)
        assert p.shape == (dt.itemsize, expect.size)
        assert planes.merge(p, dt, layout).tobytes() == expect.tobytes()


@pytest.mark.parametrize("name", ["F8_E4M3", "F8_E5M2", "I8", "U8", "BOOL"] + sorted(
    n for n, d in DTYPES.items() if not d.is_float and d.itemsize >= 2))
def test_planes_exp_refused_for_non_float_or_1_byte(name):
    dt = DTYPES[name]
    with pytest.raises(ValueError):
        planes.split(np.zeros(4, dt.bits_dtype), dt, "planes-exp")
    with pytest.raises(ValueError):
        planes.merge(np.zeros((dt.itemsize, 4), np.uint8), dt, "planes-exp")


def test_unknown_layout_refused():
    dt = DTYPES["F32"]
    with pytest.raises(ValueError):
        planes.split(np.zeros(4, "<u4"), dt, "columns")
    with pytest.raises(ValueError):
        planes.merge(np.zeros((4, 4), np.uint8), dt, "columns")


def test_numba_loads_only_when_the_work_pays_for_it():
    """A call declaring a small workload keeps big tensors on numpy (loading Numba
    costs ~1-2 s per process), to its end however much it merges (a retrieve down
    a delta chain); a big workload, or the next one once enough numpy work was
    done in the process, loads the kernels. In a fresh process: the module state
    is global."""
    import subprocess
    import sys
    code = """
import sys, numpy as np
from pas import planes
from pas.dtypes import DTYPES
dt = DTYPES["F32"]
w = np.arange(planes.NUMBA_MIN_ELEMENTS * 2, dtype=np.uint32)
with planes.workload(w.size):
    p = planes.split(w, dt, "planes-exp")
    assert planes.merge(p, dt, "planes-exp").tobytes() == w.tobytes()
assert "pas._plane_kernels" not in sys.modules, "a small call loaded Numba"
planes.NUMBA_WORTH_ELEMENTS = 6 * w.size          # as if the process kept working
with planes.workload(w.size):
    for _ in range(8):                            # more than the threshold, in one call
        planes.split(w, dt, "planes-exp")
assert "pas._plane_kernels" not in sys.modules, "Numba loaded in the middle of a call"
with planes.workload(w.size):
    planes.split(w, dt, "planes-exp")
assert "pas._plane_kernels" in sys.modules, "numpy work adding up did not load Numba"
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    big = """
import sys, numpy as np
from pas import planes
from pas.dtypes import DTYPES
w = np.arange(planes.NUMBA_MIN_ELEMENTS, dtype=np.uint32)
with planes.workload(planes.NUMBA_WORTH_ELEMENTS):
    planes.split(w, DTYPES["F32"], "planes")
assert "pas._plane_kernels" in sys.modules
"""
    r = subprocess.run([sys.executable, "-c", big], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
