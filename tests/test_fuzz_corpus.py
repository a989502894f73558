"""Every kept fuzz input (tests/fuzz_corpus: crashes found by `tests/fuzz.py`,
kept after their fix) and every seed, replayed: each target returns or raises
a typed error, nothing else."""
from __future__ import annotations

import pytest
from fuzz_targets import CORPUS, TARGETS, run, seeds

KEPT = sorted((d.name, f) for d in CORPUS.iterdir() if d.is_dir() for f in sorted(d.iterdir()))


@pytest.mark.parametrize("target,path", KEPT, ids=[f"{t}/{p.name[:20]}" for t, p in KEPT])
def test_kept_input(target, path):
    assert target in TARGETS, f"{path}: no such fuzz target"
    run(target, path.read_bytes())


def test_seeds_are_accepted():
    """The seeds are valid inputs: each target takes them without an error at all
    (tensor records: parsed; their chunks are not in the target's store)."""
    from pas import records
    from pas.hashing import checksum64
    from pas.reader import parse_record
    for target, inputs in seeds().items():
        assert inputs, target
        for data in inputs:
            if target == "tensor_record":
                addr = records.address(bytes(16), int.from_bytes(data[:3], "little"))
                parse_record(addr, data[3:] + checksum64(data[3:]))
            else:
                TARGETS[target](data)
