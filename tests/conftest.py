"""Shared fixtures and helpers of the pas test suite.

Tensors are always compared as bytes plus (dtype name, shape), never with
float ``==`` (reliability-plan.md §4: NaN != NaN, -0.0 == +0.0).

Hypothesis: ``PAS_HYPOTHESIS_EXAMPLES`` sets ``max_examples`` for the property
tests (default 150, fast); e.g. ``PAS_HYPOTHESIS_EXAMPLES=10000`` for a long run.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
# pas may not be installed (no `pip install -e .`): make it and the helper
# modules of tests/ importable whatever pytest's import mode is.
for _p in (str(REPO_ROOT), str(TESTS_DIR)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from hypothesis import HealthCheck, settings  # noqa: E402

HYPOTHESIS_EXAMPLES = int(os.environ.get("PAS_HYPOTHESIS_EXAMPLES", "150"))
settings.register_profile(
    "pas",
    max_examples=HYPOTHESIS_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
    print_blob=True,
)
settings.load_profile("pas")


# ----------------------------------------------------------------- comparison
def tensor_fingerprint(t) -> tuple[str, tuple[int, ...], bytes]:
    """(dtype name, shape, raw bytes) of a pas Tensor; its data must be C-contiguous LE."""
    from pas import dtypes
    data = t.data
    assert isinstance(data, np.ndarray), type(data)
    assert tuple(data.shape) == tuple(t.shape), (t.name, data.shape, t.shape)
    assert data.dtype == dtypes.get(t.dtype).np_dtype, (t.name, data.dtype, t.dtype)
    assert data.dtype.byteorder in ("<", "|", "=") and (data.dtype.byteorder != "=" or sys.byteorder == "little")
    return t.dtype, tuple(int(s) for s in t.shape), np.ascontiguousarray(data).tobytes()


def snapshot_fingerprint(snap) -> dict:
    return {
        "tensors": {name: tensor_fingerprint(t) for name, t in snap.tensors.items()},
        "names": {key: t.name for key, t in snap.tensors.items()},
        "order": list(snap.tensors),
        "files": dict(snap.files),
        "metadata": dict(snap.metadata),
        "format": snap.format,
    }


def assert_same_snapshot(got, expected, files: bool = True, order: bool = True) -> None:
    g, e = snapshot_fingerprint(got), snapshot_fingerprint(expected)
    assert sorted(g["tensors"]) == sorted(e["tensors"])
    for name in e["tensors"]:
        gd, gs, gb = g["tensors"][name]
        ed, es, eb = e["tensors"][name]
        assert (gd, gs) == (ed, es), f"tensor {name!r}: dtype/shape {gd}{gs} != {ed}{es}"
        if gb != eb:
            diff = next(i for i in range(min(len(gb), len(eb))) if gb[i] != eb[i]) if len(gb) == len(eb) else None
            raise AssertionError(f"tensor {name!r}: bytes differ (len {len(gb)} vs {len(eb)}, first diff at {diff})")
    assert g["names"] == e["names"]
    if order:
        assert g["order"] == e["order"]
    assert g["metadata"] == e["metadata"]
    assert g["format"] == e["format"]
    if files:
        assert g["files"] == e["files"]


# ------------------------------------------------------------------- builders
def big_elements(itemsize: int = 4, extra: int = 40_000) -> int:
    """Elements of a tensor just above the writer's inline limit (``pas.writer.INLINE_MAX``,
    256 KiB in docs/format.md §4), so it is stored as chunks; a multiple of 100."""
    from pas import writer
    return -(-(writer.INLINE_MAX + extra) // itemsize // 100) * 100


def make_snapshot(seed: int = 0, scale: int = 1, files: bool = True, scalar: bool = False,
                  big: bool = False):
    """A small but varied snapshot: several dtypes, special values, an empty tensor
    (and a 0-d one with ``scalar``; 0-d tensors have their own tests). Its tensors are
    small, so they are stored inline; ``big`` adds one chunked tensor, "model.big"."""
    from pas.snapshot import Snapshot, Tensor
    rng = np.random.default_rng(seed)
    s = Snapshot(metadata={"origin": f"seed-{seed}", "format": "pt"}, format="safetensors")
    s.add(Tensor.from_array("model.w", rng.normal(0, 0.02, (64 * scale, 33)).astype("<f4")))
    s.add(Tensor.from_array("model.b", np.zeros(64 * scale, "<f4")))
    bf = (rng.normal(0, 1, 500).astype("<f4").view("<u4") >> 16).astype("<u2")
    s.add(Tensor.from_array("model.bf16", bf, dtype="BF16"))
    s.add(Tensor.from_array("model.f16", rng.normal(0, 1, (7, 9)).astype("<f2")))
    s.add(Tensor.from_array("model.i64", rng.integers(-2**62, 2**62, 37, dtype="<i8")))
    s.add(Tensor.from_array("model.bool", rng.integers(0, 2, 19).astype(bool)))
    s.add(Tensor.from_array("model.f8", rng.integers(0, 256, 31, dtype="u1"), dtype="F8_E4M3"))
    s.add(Tensor.from_array("nan1", np.array([0x7FC12345], "<u4").view("<f4")))
    if scalar:
        s.add(Tensor("scalar", "I64", (), np.array(-(2**62) - seed, "<i8")))
    s.add(Tensor.from_array("empty", np.zeros((0, 5), "<f8")))
    if big:
        s.add(Tensor.from_array("model.big", rng.normal(0, 0.02, (big_elements() // 100, 100)).astype("<f4")))
    if files:
        s.files["config.json"] = b'{"hidden_size": 64}'
        s.files["sub/tokenizer.txt"] = bytes(range(256)) * 3
    return s


@pytest.fixture
def mem_repo():
    from pas.repo import Repository
    repo = Repository.in_memory()
    yield repo
    repo.close()


@pytest.fixture
def disk_repo(tmp_path):
    from pas.repo import Repository
    repo = Repository.init(tmp_path / "repo")
    yield repo
    repo.close()


@pytest.fixture(params=["memory", "rocksdb"])
def any_repo(request, tmp_path):
    from pas.repo import Repository
    repo = Repository.in_memory() if request.param == "memory" else Repository.init(tmp_path / "repo")
    yield repo
    repo.close()


def formats_available() -> bool:
    """True when pas.formats offers read() and write() (it is being written in parallel)."""
    try:
        import pas.formats as f
    except Exception:  # noqa: BLE001
        return False
    return callable(getattr(f, "read", None)) and callable(getattr(f, "write", None))


# ------------------------------------------------------------------- timing
def seconds_within(action, bound: float, tries: int = 3) -> float:
    """Seconds ``action()`` takes, re-timed (up to ``tries`` runs, the least
    kept) only while a run is over ``bound``. A time bound in a test guards
    against a slow path (a hang, a quadratic parse, a read of /dev/zero), and a
    slow path is slow every time; a busy CI machine (two test workers on two
    cores) stalls a single run now and then, and that stall does not repeat."""
    import time
    best = float("inf")
    for _ in range(tries):
        t0 = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - t0)
        if best < bound:
            break
    return best


# ------------------------------------------------------------ stored objects
def tensor_record(store, addr: bytes) -> tuple[dict, bytes]:
    """A stored tensor record's JSON and inline payload (docs/format.md §4), checked."""
    from pas import records
    value = store.get(records.TENSOR + addr)
    assert value is not None, f"tensor record {addr.hex()[:16]} is missing"
    rec, payload = records.unpack_tensor_record(value, "tensor record")
    return rec, bytes(payload)


def record_chunks(rec: dict) -> list[bytes]:
    """Chunk addresses a tensor record names (none for an inline record)."""
    return [bytes.fromhex(h) for plane in rec.get("chunks", []) for h in plane]


def needed_keys(store, addr: bytes) -> set[bytes]:
    """Every key a tensor needs to be read: its record, its chunks, and the same for
    its delta base, down the chain."""
    from pas import records
    keys: set[bytes] = set()
    while addr is not None:
        keys.add(records.TENSOR + addr)
        rec, _ = tensor_record(store, addr)
        keys.update(records.CHUNK + a for a in record_chunks(rec))
        addr = bytes.fromhex(rec["delta"]["base"]) if rec.get("delta") else None
    return keys


from pas.records import CHUNK as _CHUNK  # noqa: E402
from pas.stores.memory import MemoryStore as _MemoryStore  # noqa: E402


class RecordingStore(_MemoryStore):
    """A memory store that records every key read (to check what a read touches)."""

    def __init__(self):
        super().__init__()
        self.read: list[bytes] = []

    def get_many(self, keys):
        self.read.extend(bytes(k) for k in keys)
        return super().get_many(keys)

    def items_prefix(self, prefix):
        for k, v in super().items_prefix(prefix):
            self.read.append(k)
            yield k, v

    def chunk_reads(self) -> set[bytes]:
        return {k for k in self.read if k[:1] == _CHUNK}
