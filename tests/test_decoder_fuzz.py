"""Fuzzed stored values (issue 5, T11): whatever bytes a damaged or hostile store
holds, the decoders raise a typed error or return data that the content
address then judges; they never crash with another exception, hang or
allocate without bound."""
from __future__ import annotations

import json

import numpy as np
from conftest import big_elements
from hypothesis import given
from hypothesis import strategies as st

from pas import codecs, records
from pas.errors import PasError
from pas.reader import parse_record
from pas.repo import Repository
from pas.snapshot import Snapshot, Tensor


def _stored_values():
    """Real stored values to mutate: a chunk frame, a tensor record, a manifest."""
    repo = Repository.in_memory(chunker={"id": "fixed", "size": 4096})
    snap = Snapshot()
    snap.add(Tensor.from_array("w", np.random.default_rng(0).normal(0, 0.02, big_elements()).astype("<f4")))
    snap.add(Tensor.from_array("b", np.zeros(7, "<f4")))
    vid = repo.archive_snapshot(snap, "m").version_id
    out = {}
    for key, value in repo.store.items_prefix(b""):
        out.setdefault(key[:1], []).append((key[1:], value))
    return out, vid


VALUES, _ = _stored_values()
CHUNKS, TENSORS = VALUES[records.CHUNK], VALUES[records.TENSOR]


def _mutate(value: bytes, data) -> bytes:
    b = bytearray(value)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        if not b:
            break
        i = data.draw(st.integers(0, len(b) - 1))
        if op == "flip":
            b[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del b[i:]
        elif op == "insert":
            b[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            b[i] = data.draw(st.integers(0, 255))
    return bytes(b)


@given(data=st.data(), checked=st.booleans())
def test_chunk_decoder_on_mutated_frames(data, checked):
    addr, value = data.draw(st.sampled_from(CHUNKS))
    n = records.address_length(addr)
    bad = _mutate(value, data)
    try:
        out = codecs.decode_chunk(bad, n, checked=checked)
    except PasError:
        return
    assert len(bytes(out)) == n or not checked


@given(raw=st.binary(max_size=300), n=st.integers(0, 1 << 20))
def test_chunk_decoder_on_random_bytes(raw, n):
    try:
        codecs.decode_chunk(raw, n)
    except PasError:
        pass


@given(data=st.data())
def test_record_parser_on_mutated_records(data):
    addr, value = data.draw(st.sampled_from(TENSORS))
    try:
        parse_record(addr, _mutate(value, data))
    except PasError:
        pass


@given(obj=st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                        max_leaves=20))
def test_manifest_parser_on_arbitrary_json(obj):
    from pas.records import Version
    value = json.dumps(obj).encode()
    try:
        manifest = records.unpack_json(value, "fuzzed manifest")
        v = Version(b"\0" * 16, manifest)
        _ = [(e.name, e.object) for e in v.tensors + v.files]
    except PasError:
        pass
