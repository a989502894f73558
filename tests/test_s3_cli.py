"""Repositories on S3 through the `pas` command (real processes), against a
real S3 API server on loopback (moto, started here) behind a counting proxy:
init, archive, ls, log, show, verify, retrieve (bit-exact), gc --force, and
a top-plane read that fetches fewer bytes than a full one."""
from __future__ import annotations

import numpy as np
import pytest
import safetensors.numpy as safetensors_numpy
from s3_server import CREDENTIALS, new_bucket, proxy_fixture
from test_cli import _env, pas, pas_json

from pas.stores.s3 import S3Store


proxy = proxy_fixture()


def _model(seed: int, base: dict | None = None) -> dict:
    rng = np.random.default_rng(seed)
    if base is None:
        return {"big.weight": rng.normal(0, 0.02, (1024, 768)).astype("<f4"),     # 3 MiB: chunked planes
                "small.bias": rng.normal(0, 1, (300,)).astype("<f2"),
                "steps": np.array([seed, 7], "<i8")}
    out = dict(base)
    out["big.weight"] = base["big.weight"] + rng.normal(0, 1e-4, base["big.weight"].shape).astype("<f4")
    return out


def _same(path, expected: dict) -> None:
    got = safetensors_numpy.load_file(str(path))
    assert sorted(got) == sorted(expected)
    for k, v in expected.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape and got[k].tobytes() == v.tobytes(), k


def test_repository_on_s3_through_the_cli(proxy, tmp_path):
    bucket = new_bucket(proxy.endpoint)
    url = f"s3://{bucket}/team/models"
    env = _env(AWS_ENDPOINT_URL=proxy.endpoint, AWS_ACCESS_KEY_ID=CREDENTIALS["access_key_id"],
               AWS_SECRET_ACCESS_KEY=CREDENTIALS["secret_access_key"], AWS_REGION="us-east-1",
               PAS_S3_CACHE=tmp_path / "cache")
    m0 = _model(0)
    m1 = _model(1, m0)
    safetensors_numpy.save_file(m0, str(tmp_path / "m0.safetensors"))
    safetensors_numpy.save_file(m1, str(tmp_path / "m1.safetensors"))

    info = pas_json("init", url, env=env)
    assert info["path"] == url
    pas("init", url, expect=4, env=env)                               # only once
    pas("-R", f"s3://{bucket}/elsewhere", "ls", expect=10, env=env)   # not a repository
    assert "no bucket" in pas("init", "s3://no-such-bucket/x", expect=14, env=env).stderr

    a0 = pas_json("-R", url, "archive", tmp_path / "m0.safetensors", "-n", "m", env=env)
    a1 = pas_json("-R", url, "archive", tmp_path / "m1.safetensors", "-n", "m", "-m", "tuned", env=env)
    assert a1["parent"] == a0["version_id"]
    assert a1["physical_added"] < a0["physical_added"]              # stored as a delta

    # the rest through $PAS_REPO, with storage options in the URL (no cache)
    env_nc = dict(env, PAS_REPO=url + "?cache_dir=none")
    assert pas_json("ls", env=env_nc) == [{"ref": "m", "version": a1["version_id"]}]
    assert {t["name"] for t in pas_json("ls", "m", env=env_nc)} == set(m1)
    assert [v["id"] for v in pas_json("log", "m", env=env_nc)] == [a1["version_id"], a0["version_id"]]
    assert pas_json("show", "m", env=env_nc)["message"] == "tuned"
    assert pas_json("verify", env=env_nc)["ok"] is True

    pas("retrieve", "m", "-o", tmp_path / "full.safetensors", env=env_nc)
    _same(tmp_path / "full.safetensors", m1)
    # the top plane of the first version (stored whole): ranged reads of plane 0's chunks only
    v0 = a0["version_id"][:8]
    proxy.reset()
    pas("retrieve", v0, "-o", tmp_path / "v0.safetensors", env=env_nc)
    _same(tmp_path / "v0.safetensors", m0)
    full_bytes = proxy.bytes_out["GET"]
    proxy.reset()
    pas("retrieve", v0, "-o", tmp_path / "top.safetensors", "--bytes", "1", env=env_nc)
    top_bytes = proxy.bytes_out["GET"]
    assert top_bytes < full_bytes * 0.5, (top_bytes, full_bytes)
    pas("-R", url, "retrieve", v0, "-o", tmp_path / "v0.safetensors", env=env)     # fills the cache

    # a second retrieve from the cache: no pack bytes fetched again
    proxy.reset()
    pas("-R", url, "retrieve", a0["version_id"][:8], "-o", tmp_path / "v0b.safetensors", env=env)
    _same(tmp_path / "v0b.safetensors", m0)
    assert proxy.bytes_out["GET"] < 20_000, proxy.bytes_out

    # leftovers of an interrupted archive: gc --force removes them, nothing else
    orphan = S3Store(url, dict(CREDENTIALS, endpoint=proxy.endpoint, cache_dir="none"))
    orphan.put_many([(b"c" + bytes(range(25)), b"orphan chunk" * 100)])
    orphan.flush()
    orphan.close()
    assert pas_json("-R", url, "gc", env=env)["chunks"] == 1             # dry run
    assert pas_json("-R", url, "gc", "--force", env=env)["chunks"] == 1
    assert pas_json("-R", url, "gc", env=env)["chunks"] == 0
    assert pas_json("verify", env=env_nc)["ok"] is True
    pas("retrieve", "m", "-o", tmp_path / "after-gc.safetensors", env=env_nc)
    _same(tmp_path / "after-gc.safetensors", m1)

    # --storage-option on the command line (endpoint and credentials not from the environment)
    bare = _env(PAS_S3_CACHE=tmp_path / "cache2")
    opts = ["-o", f"endpoint={proxy.endpoint}", "-o", f"access_key_id={CREDENTIALS['access_key_id']}",
            "-o", f"secret_access_key={CREDENTIALS['secret_access_key']}", "-o", "region=us-east-1"]
    assert pas_json(*opts, "-R", url, "ls", env=bare) == [{"ref": "m", "version": a1["version_id"]}]
    url2 = f"s3://{bucket}/other"
    assert pas_json("init", url2, *opts, env=bare)["path"] == url2
    pas("-o", "bogus", "-R", url, "ls", expect=4, env=bare)
    assert "unknown S3 storage option" in pas(*opts, "-o", "colour=blue", "-R", url, "ls", expect=4, env=bare).stderr
    assert "integers" in pas(*opts, "-o", "pack_size=big", "-R", url, "ls", expect=4, env=bare).stderr


def test_credentials_from_an_aws_profile(proxy, tmp_path):
    """AWS_PROFILE (or --storage-option profile=) signs with that profile's keys;
    an unknown profile is a typed error."""
    bucket = new_bucket(proxy.endpoint)
    url = f"s3://{bucket}/p"
    (tmp_path / "credentials").write_text("[dev]\naws_access_key_id = AKIDEVPROFILE\n"
                                          "aws_secret_access_key = secret\n")
    env = {k: v for k, v in _env().items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=proxy.endpoint, AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "credentials"),
               AWS_CONFIG_FILE=str(tmp_path / "config"), AWS_REGION="us-east-1", PAS_S3_CACHE=str(tmp_path / "c"))
    proxy.reset()
    pas("init", url, env=dict(env, AWS_PROFILE="dev"))
    assert proxy.access_keys == {"AKIDEVPROFILE"}
    proxy.reset()
    assert pas_json("-o", "profile=dev", "-R", url, "ls", env=env) == []
    assert proxy.access_keys == {"AKIDEVPROFILE"}
    assert "nope" in pas("-R", url, "ls", expect=4, env=dict(env, AWS_PROFILE="nope")).stderr


def test_archive_with_the_server_failing_for_good(proxy, tmp_path):
    """Every request from some point of an archive on answers 500: exit 14 with
    one error line, and the repository is as before (verify clean, old ref)."""
    bucket = new_bucket(proxy.endpoint)
    url = f"s3://{bucket}/r"
    env = _env(AWS_ENDPOINT_URL=proxy.endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_REGION="us-east-1", PAS_S3_CACHE=tmp_path / "cache", PAS_REPO=url)
    m0 = _model(0)
    safetensors_numpy.save_file(m0, str(tmp_path / "m0.safetensors"))
    safetensors_numpy.save_file(_model(1, m0), str(tmp_path / "m1.safetensors"))
    pas("init", url, env=env)
    v0 = pas_json("archive", tmp_path / "m0.safetensors", "-n", "m", env=env)["version_id"]
    proxy.reset()
    proxy.faults = {n: "500" for n in range(6, 200)}       # open and lock pass; the uploads fail
    p = pas("-o", "retries=2", "-o", "backoff=0.01", "archive", tmp_path / "m1.safetensors", "-n", "m",
            expect=14, env=env)
    assert "failed after 3 attempts" in p.stderr
    proxy.faults = {}
    assert pas_json("ls", env=env) == [{"ref": "m", "version": v0}]
    assert [v["id"] for v in pas_json("log", env=env)] == [v0]
    assert pas_json("verify", env=env)["ok"] is True
