"""pas push / pas pull between repositories (issue 10, item 3): a local folder and
an S3 repository on a real S3 API server (moto, started here) behind a counting
proxy. Only missing objects move; an interrupted push finishes when run again;
refs move last and only forward; every copy verifies clean and reads back bit-exact."""
from __future__ import annotations

import numpy as np
import pytest
import safetensors.numpy as safetensors_numpy
from s3_server import CREDENTIALS, new_bucket, proxy_fixture
from test_cli import _env, pas, pas_json


proxy = proxy_fixture()


def _models(tmp_path, n=3):
    """Three versions of a model: a base and two fine-tunes (deltas against their parent)."""
    rng = np.random.default_rng(0)
    cur = {"w": rng.normal(0, 0.02, (1024, 512)).astype("<f4"), "b": rng.normal(0, 1, 512).astype("<f4")}
    paths = []
    for i in range(n):
        p = tmp_path / f"v{i}.safetensors"
        safetensors_numpy.save_file(cur, str(p))
        paths.append((p, {k: v.copy() for k, v in cur.items()}))
        cur = {k: v + rng.normal(0, 1e-4, v.shape).astype("<f4") for k, v in cur.items()}
    return paths


def _same(path, expected: dict) -> None:
    got = safetensors_numpy.load_file(str(path))
    assert sorted(got) == sorted(expected)
    for k, v in expected.items():
        assert got[k].dtype == v.dtype and got[k].tobytes() == v.tobytes(), k


def test_push_and_pull_between_folders_move_only_what_is_missing(tmp_path):
    models = _models(tmp_path)
    pas("init", tmp_path / "a")
    for p, _ in models[:2]:
        pas("-R", tmp_path / "a", "archive", p, "-n", "m")
    pas("-R", tmp_path / "a", "tag", "first", "m~1")
    pas("-R", tmp_path / "a", "push", tmp_path / "b", expect=10)              # no repository there
    full = pas_json("-R", tmp_path / "a", "push", tmp_path / "b", "--create")
    assert len(full["versions"]) == 2 and set(full["refs"]) == {"m", "first"}
    again = pas_json("-R", tmp_path / "a", "push", tmp_path / "b")
    assert again["versions"] == [] and again["bytes"] == 0 and again["versions_present"] == 2
    pas("-R", tmp_path / "a", "archive", models[2][0], "-n", "m")
    inc = pas_json("-R", tmp_path / "a", "push", tmp_path / "b", "m")
    assert len(inc["versions"]) == 1 and 0 < inc["bytes"] < full["bytes"] / 2 and inc["chunks_present"] == 0
    # pull back into a third repository: every version bit-exact, verify clean
    pas("init", tmp_path / "c")
    pulled = pas_json("-R", tmp_path / "c", "pull", tmp_path / "b")
    assert len(pulled["versions"]) == 3
    for ref, (_, want) in (("m", models[2]), ("m~1", models[1]), ("first", models[0])):
        pas("-R", tmp_path / "c", "retrieve", ref, "-o", tmp_path / "out.safetensors")
        _same(tmp_path / "out.safetensors", want)
    assert pas_json("-R", tmp_path / "c", "verify")["ok"]
    # refs only move forward: a diverged ref at the destination is refused, nothing written
    pas("-R", tmp_path / "c", "archive", models[0][0], "-n", "m", "--parent", "first", "-m", "branch")
    p = pas("-R", tmp_path / "c", "push", tmp_path / "b", "m", expect=4)
    assert "not an ancestor" in p.stderr
    assert pas_json("-R", tmp_path / "b", "show", "m")["id"] == pulled["refs"]["m"]


def test_push_to_s3_is_incremental_and_resumes(proxy, tmp_path):
    bucket = new_bucket(proxy.endpoint)
    url = f"s3://{bucket}/shared"
    env = _env(AWS_ENDPOINT_URL=proxy.endpoint, AWS_ACCESS_KEY_ID=CREDENTIALS["access_key_id"],
               AWS_SECRET_ACCESS_KEY=CREDENTIALS["secret_access_key"], AWS_REGION="us-east-1",
               PAS_S3_CACHE=tmp_path / "cache")
    models = _models(tmp_path)
    local = tmp_path / "local"
    pas("init", local, env=env)
    for p, _ in models[:2]:
        pas("-R", local, "archive", p, "-n", "m", env=env)
    pas("init", url, env=env)
    # the server fails every request from the 6th on: the push stops with a typed error ...
    proxy.reset()
    proxy.faults = {n: "500" for n in range(6, 400)}
    try:
        r = pas("-R", local, "push", url, env=env, expect=14)
    finally:
        proxy.reset()
    assert "error" in r.stderr
    assert pas_json("-R", url, "log", env=env) == []                          # no version half there
    # ... and run again it finishes, copying what the first attempt did not
    done = pas_json("-R", local, "push", url, env=env)
    assert len(done["versions"]) == 2 and done["refs"]["m"]
    pas("-R", local, "archive", models[2][0], "-n", "m", env=env)
    proxy.reset()
    inc = pas_json("-R", local, "push", url, "m", env=env)
    assert len(inc["versions"]) == 1 and inc["bytes"] < done["bytes"]
    assert sum(proxy.bytes_in.values()) < 2 * inc["bytes"] + 200_000         # what moved over the wire
    assert pas_json("-R", url, "verify", env=env)["ok"]
    # pull from S3 into a fresh folder: bit-exact
    pas("init", tmp_path / "copy", env=env)
    pas_json("-R", tmp_path / "copy", "pull", url, env=env)
    pas("-R", tmp_path / "copy", "retrieve", "m", "-o", tmp_path / "o.safetensors", env=env)
    _same(tmp_path / "o.safetensors", models[2][1])
