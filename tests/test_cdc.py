"""Content-defined chunking (pas.chunking.cdc): coverage, size bounds, determinism,
stability under an edit, frozen boundaries (a format contract), dedup on a
tokenizer-like file, and speed (printed, never asserted)."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import xxhash

from pas.chunking import Chunker, FixedChunker, get_chunker
from pas.chunking.cdc import GEAR, CDCChunker

SMALL = {"min": 64, "avg": 256, "max": 1024}


def rand_bytes(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


def check_cover(cuts: list[tuple[int, int]], n: int) -> None:
    off = 0
    for o, ln in cuts:
        assert o == off
        off += ln
    assert off == n


def reference_ends(data: bytes, mn: int, avg: int, mx: int) -> list[int]:
    """Pure-Python FastCDC as documented in pas/chunking/cdc.py (independent of the kernel)."""
    m64 = (1 << 64) - 1
    bits = avg.bit_length() - 1
    mask_s = ((1 << (bits + 2)) - 1) << (64 - bits - 2)
    mask_l = ((1 << (bits - 2)) - 1) << (64 - bits + 2)
    gear = [int(g) for g in GEAR]
    ends, start, n = [], 0, len(data)
    while start < n:
        rem = n - start
        end = n
        if rem > mn:
            lim = min(rem, mx)
            end = start + lim
            fp = 0
            for i in range(mn, lim):
                fp = ((fp << 1) + gear[data[start + i]]) & m64
                if fp & (mask_s if i < avg else mask_l) == 0:
                    end = start + i + 1
                    break
        ends.append(end)
        start = end
    return ends


# ------------------------------------------------------------------ contract
def test_gear_table_frozen():
    # Changing the table changes every boundary: old repositories would stop deduping.
    assert GEAR.dtype == np.uint64 and GEAR.size == 256
    assert int(GEAR[0]) == 0xDB35A54FC21A5910
    assert int(GEAR[255]) == 0xCDACD38287F4213C
    assert xxhash.xxh3_64_hexdigest(GEAR.astype("<u8").tobytes()) == "4a71958eb05559d1"


FROZEN_DEFAULT = [117680, 211623, 298228, 366363, 439682, 522774, 590695, 664038, 730357,
                  818921, 891776, 969900, 1040558, 1048576]
FROZEN_8K = [8867, 18001, 28631, 38284, 44569, 59608, 69912, 80992, 92380, 100627, 109529,
             117680, 126274, 136480, 147095, 157092, 165817, 174218, 182945, 192506, 203473,
             217702, 226893, 229967, 239263, 249496, 259015, 268103, 276268, 285911, 297394]


def test_frozen_cuts():
    """Boundaries of a seeded input never change between versions of pas."""
    data = rand_bytes(1 << 20, seed=20240601)
    assert CDCChunker().cut_ends(data).tolist() == FROZEN_DEFAULT
    assert CDCChunker(min=2048, avg=8192, max=32768).cut_ends(data)[:31].tolist() == FROZEN_8K


def test_kernel_matches_reference():
    data = rand_bytes(200_000, seed=7)
    ch = CDCChunker(**SMALL)
    assert ch.cut_ends(data).tolist() == reference_ends(data.tobytes(), 64, 256, 1024)
    text = b"".join(b'"tok%d": %d,\n' % (i * 7919 % 1000, i) for i in range(8000))
    assert ch.cut_ends(np.frombuffer(text, np.uint8)).tolist() == reference_ends(text, 64, 256, 1024)


def test_config_and_registry():
    ch = CDCChunker()
    assert ch.get_config() == {"id": "cdc", "min": 16384, "avg": 65536, "max": 262144}
    again = get_chunker(ch.get_config())
    assert isinstance(again, CDCChunker) and again.get_config() == ch.get_config()
    assert get_chunker({"id": "cdc"}).get_config() == ch.get_config()


@pytest.mark.parametrize("kw", [{"avg": 3000}, {"min": 0}, {"min": 65536},
                                {"max": 65536}, {"avg": 4, "min": 1, "max": 8}])
def test_bad_parameters(kw):
    with pytest.raises(ValueError):
        CDCChunker(**kw)


def test_cuts_without_data_refused():
    with pytest.raises(NotImplementedError):
        CDCChunker().cuts(100)


def test_base_cuts_of_is_cuts():
    fx = FixedChunker(1000)
    data = rand_bytes(4567)
    assert fx.cuts_of(data) == fx.cuts(4567)
    assert isinstance(fx, Chunker) and fx.cuts_of(np.zeros(0, np.uint8)) == [(0, 0)]


def test_numba_imported_lazily():
    code = ("import sys; import pas.chunking.cdc as c; from pas.chunking import get_chunker; "
            "get_chunker({'id': 'cdc'}); assert 'numba' not in sys.modules; "
            "import numpy as np; c.CDCChunker().cuts_of(np.zeros(10, np.uint8)); "
            "assert 'numba' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("conftest").REPO_ROOT))


# ------------------------------------------------------------------ behaviour
@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 1023, 1024, 1025, 5000, 100_000])
def test_cover_and_bounds(n):
    ch = CDCChunker(**SMALL)
    for data in (rand_bytes(n, seed=n), np.zeros(n, np.uint8)):
        cuts = ch.cuts_of(data)
        check_cover(cuts, n)
        if n == 0:
            assert cuts == [(0, 0)]
            continue
        lengths = [ln for _, ln in cuts]
        assert all(0 < ln <= SMALL["max"] for ln in lengths)
        assert all(ln > SMALL["min"] for ln in lengths[:-1])


def test_default_sizes_on_random_data():
    data = rand_bytes(16 << 20, seed=3)
    ch = CDCChunker()
    lengths = np.array([ln for _, ln in ch.cuts_of(data)])
    check_cover(ch.cuts_of(data), data.size)
    assert lengths.max() <= ch.max and lengths[:-1].min() > ch.min
    # Normalized chunking keeps the mean near avg (~74 KiB measured: avg + the skipped min's share).
    assert 56 << 10 < lengths.mean() < 88 << 10


def test_deterministic_and_input_types():
    data = rand_bytes(300_000, seed=11)
    a = CDCChunker(**SMALL).cuts_of(data)
    assert a == CDCChunker(**SMALL).cuts_of(data.copy())
    assert a == CDCChunker(**SMALL).cuts_of(data.tobytes())
    assert a == CDCChunker(**SMALL).cuts_of(data.view(np.uint32).reshape(-1, 25))  # byte view
    assert a == CDCChunker(**SMALL).cuts_of(data[::-1][::-1])                      # non-contiguous


def chunk_digests(data: np.ndarray, cuts) -> list[tuple[bytes, int]]:
    return [(xxhash.xxh3_128_digest(memoryview(data[o:o + ln])), ln) for o, ln in cuts]


def shared_bytes(old: np.ndarray, new: np.ndarray, chunker: Chunker) -> tuple[int, float]:
    """Bytes of ``new`` in chunks that ``old`` also has; share of ``new``'s chunks that are shared."""
    have = set(chunk_digests(old, chunker.cuts_of(old)))
    mine = chunk_digests(new, chunker.cuts_of(new))
    hit = [d in have for d in mine]
    return sum(ln for (d, ln), h in zip(mine, hit) if h), sum(hit) / len(hit)


@pytest.mark.parametrize("at,insert", [(1000, 1), (1000, 37), (20_000, 5000), (100_000, 100)])
def test_stable_under_insertion(at, insert):
    old = rand_bytes(4 << 20, seed=5)
    new = np.concatenate([old[:at], rand_bytes(insert, seed=6), old[at:]])
    ch = CDCChunker()
    nbytes, share = shared_bytes(old, new, ch)
    assert share > 0.9, share
    assert nbytes > new.size - 3 * ch.max
    # fixed cuts lose everything after the edit
    _, fixed_share = shared_bytes(old, new, FixedChunker(64 << 10))
    assert fixed_share < 0.1


def tokenizer_json(n_tokens: int, seed: int = 0, extra: int = 0) -> bytes:
    """A tokenizer.json-like vocabulary; ``extra`` new tokens inserted in the middle (new ids)."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = {}
    while len(vocab) < n_tokens:
        w = "".join(rng.choice(letters, rng.integers(2, 12)))
        vocab[("\u0120" if rng.random() < 0.4 else "##" if rng.random() < 0.2 else "") + w] = len(vocab)
    if extra:
        items = list(vocab.items())
        mid = len(items) // 2
        new = [(f"<extra_token_{i}>", n_tokens + i) for i in range(extra)]
        vocab = dict(items[:mid] + new + items[mid:])
    doc = {"version": "1.0", "added_tokens": [], "model": {"type": "BPE", "vocab": vocab}}
    return json.dumps(doc, ensure_ascii=False, indent=2).encode()


def test_dedup_tokenizer_edit():
    v1 = np.frombuffer(tokenizer_json(80_000), np.uint8)
    v2 = np.frombuffer(tokenizer_json(80_000, extra=200), np.uint8)
    cdc_bytes, _ = shared_bytes(v1, v2, CDCChunker())
    fixed_bytes, _ = shared_bytes(v1, v2, FixedChunker(64 << 10))
    print(f"\ntokenizer v1 {v1.size} B, v2 {v2.size} B: shared fixed-64KiB {fixed_bytes} B "
          f"({fixed_bytes / v2.size:.1%}), cdc {cdc_bytes} B ({cdc_bytes / v2.size:.1%})")
    assert cdc_bytes > 0.85 * v2.size
    assert fixed_bytes < 0.6 * v2.size


def test_speed_report():
    """Throughput on random bytes (printed with -s; no assertion on time)."""
    data = rand_bytes(64 << 20, seed=9)
    ch = CDCChunker()
    ch.cuts_of(data[:1 << 20])  # compile / load from cache
    best = min(_timed(ch, data) for _ in range(3))
    print(f"\ncdc: {data.size / best / 1e6:.0f} MB/s on {data.size >> 20} MiB")


def _timed(ch: CDCChunker, data: np.ndarray) -> float:
    t = time.perf_counter()
    ch.cut_ends(data)
    return time.perf_counter() - t
