"""The `pas` command line, run as a real process (docs/cli.md).

Every command with ``--json`` must print parseable JSON; errors must exit with
the documented code and one ``pas: error:`` line on stderr, never a traceback.

The tests taking ``backend`` run twice: on local repositories (folders, RocksDB)
and on S3 repositories (``s3://BUCKET/PREFIX``, a fresh bucket per test on a moto
server on loopback, one per module; endpoint and credentials in the environment
every command and in-process `Repository` of the test sees).
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT, formats_available
from s3_server import CREDENTIALS, endpoint_fixture, new_bucket, s3_client

from pas.repo import Repository
from pas.snapshot import Snapshot, Tensor

needs_formats = pytest.mark.skipif(not formats_available(), reason="pas.formats.read/write not available yet")

_SCRIPT = Path(sys.executable).with_name("pas")
PAS = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-c", "from pas.cli import main; main()"]


def _env(**extra):
    env = dict(os.environ)
    env.pop("PAS_REPO", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "200"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def pas(*args, expect: int = 0, cwd=None, env=None, timeout=120,
        error_line: bool = True) -> subprocess.CompletedProcess:
    """Run the console script; check the exit code and that no traceback escaped.

    A failing command must print exactly one ``pas: error:`` line on stderr
    (``error_line=False`` for `verify`, whose failure is its report)."""
    p = subprocess.run(PAS + [str(a) for a in args], capture_output=True, text=True,
                       cwd=cwd, env=env or _env(), timeout=timeout)
    where = f"pas {' '.join(map(str, args))}\nstdout: {p.stdout[-2000:]}\nstderr: {p.stderr[-2000:]}"
    assert "Traceback" not in p.stderr, where
    assert p.returncode == expect, f"exit {p.returncode}, expected {expect}\n{where}"
    if expect not in (0, 2) and error_line:
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pas: error: "), where
    return p


def pas_json(*args, expect: int = 0, **kw):
    p = pas(*args, "--json", expect=expect, **kw)
    try:
        return json.loads(p.stdout)
    except ValueError as exc:
        raise AssertionError(f"pas {' '.join(map(str, args))} --json printed non-JSON: {p.stdout[:500]!r}") from exc


def parallel(*thunks):
    """Run independent CLI invocations concurrently (each is mostly interpreter start-up)."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(t) for t in thunks]
        return [f.result() for f in futures]


def writers(backend, *thunks):
    """Invocations that each open the repository for writing and must not disturb each
    other: at once on S3, where writers share a repository (docs/cli.md); one after
    another on a local one, where a second writer would (rightly) exit 11."""
    return parallel(*thunks) if backend.kind == "s3" else [t() for t in thunks]


def _snapshot(seed: int) -> Snapshot:
    rng = np.random.default_rng(seed)
    s = Snapshot(metadata={"seed": str(seed)}, format="safetensors")
    s.add(Tensor.from_array("encoder.weight", rng.normal(0, 0.02, (40, 30)).astype("<f4")))
    s.add(Tensor.from_array("encoder.bias", np.zeros(40, "<f4")))
    s.add(Tensor.from_array("head.weight", rng.normal(0, 1, (8, 5)).astype("<f2")))
    s.add(Tensor.from_array("steps", np.array([seed, 7], "<i8")))
    s.add(Tensor.from_array("nan", np.array([0x7FC12345, 0x7F800001, 0x80000000], "<u4").view("<f4")))
    return s


def _same_tensors(got: Snapshot, want: Snapshot, names=None):
    names = list(want.tensors) if names is None else names
    assert sorted(got.tensors) == sorted(names)
    for n in names:
        g, w = got.tensors[n], want.tensors[n]
        assert (g.dtype, tuple(g.shape)) == (w.dtype, tuple(w.shape)), n
        assert np.ascontiguousarray(g.data).tobytes() == w.data.tobytes(), n


def _build_repo(path: Path | str, names=("main",)) -> dict[str, str]:
    """A repository made in-process (fast); the CLI is what is under test."""
    ids = {}
    with Repository.init(path) as repo:
        for i, name in enumerate(names):
            ids[name] = repo.archive_snapshot(_snapshot(i), name, message=f"v{i}").version_id
    return ids


# ------------------------------------------------------------------ backends
s3_endpoint = endpoint_fixture("s3_endpoint", "module")     # one moto server for the S3 tests here


class Backend:
    """Where a test's repositories live. Local: folders under the test's tmp_path.
    S3: prefixes of the test's own bucket; the endpoint, credentials and cache
    folder are in the environment (`_env()` passes it to every command, and the
    in-process `Repository.open`/`init` read it too), so a location is all a
    test hands to the CLI, for both kinds."""

    def __init__(self, kind: str, tmp_path: Path, endpoint: str | None = None, bucket: str | None = None):
        self.kind, self.tmp_path, self.endpoint, self.bucket = kind, tmp_path, endpoint, bucket

    def location(self, name: str) -> Path | str:
        return self.tmp_path / name if self.kind == "local" else f"s3://{self.bucket}/{name}"

    def _key(self, location: str, name: str) -> str:
        return location.removeprefix(f"s3://{self.bucket}/") + "/" + name

    def edit_config(self, location, edit) -> None:
        """Rewrite the repository's config.json (the file, or the object) through ``edit(dict)``."""
        if self.kind == "local":
            cfg = Path(location) / ".pas" / "config.json"
            c = json.loads(cfg.read_text())
            edit(c)
            cfg.write_text(json.dumps(c))
            return
        s3, key = s3_client(self.endpoint), self._key(location, "config.json")
        c = json.loads(s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        edit(c)
        s3.put_object(Bucket=self.bucket, Key=key, Body=json.dumps(c).encode())

    def flip_in_pack(self, location: str, key: bytes, where) -> None:
        """Flip one bit of ``key``'s value where it lies in its pack object on the
        server (``where(value)``: the offset in the value), found by reading the
        packs' trailers (docs/format.md §9), not through pas."""
        s3, prefix = s3_client(self.endpoint), self._key(location, "packs/")
        found = 0
        for obj in s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix).get("Contents", []):
            data = bytearray(s3.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read())
            assert data[-8:] == b"PASPACK1", obj["Key"]
            (tlen,) = struct.unpack(">I", data[-12:-8])
            pos = len(data) - 12 - tlen
            (n,), pos = struct.unpack_from(">I", data, pos), pos + 4
            for _ in range(n):
                (klen,) = struct.unpack_from(">H", data, pos)
                k = bytes(data[pos + 2:pos + 2 + klen])
                off, length, _ = struct.unpack_from(">QQQ", data, pos + 2 + klen)
                pos += 2 + klen + 24
                if k == key:
                    data[off + where(bytes(data[off:off + length]))] ^= 0x01
                    s3.put_object(Bucket=self.bucket, Key=obj["Key"], Body=bytes(data))
                    found += 1
        assert found == 1, f"{key.hex()} found in {found} packs"


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path, monkeypatch) -> Backend:
    if request.param == "local":
        return Backend("local", tmp_path)
    endpoint = request.getfixturevalue("s3_endpoint")
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "PAS_S3_LOCK_LEASE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS["access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS["secret_access_key"])
    monkeypatch.setenv("AWS_REGION", CREDENTIALS["region"])
    # this machine's cache, shared by the test's commands and its in-process repositories
    monkeypatch.setenv("PAS_S3_CACHE", str(tmp_path / "s3-cache"))
    return Backend("s3", tmp_path, endpoint, new_bucket(endpoint))


@pytest.fixture
def built(backend):
    path = backend.location("repo")
    return path, _build_repo(path, ("main", "other"))


def _plant_orphan(path) -> bytes:
    """A chunk no version names (what a killed archive leaves); its key."""
    from pas import codecs, records
    from pas.hashing import digest
    from pas.records import CHUNK
    orphan = b"left behind by a killed archive" * 10
    with Repository.open(path, write=True) as repo:
        key = CHUNK + records.address(digest(orphan), len(orphan))
        repo.store.write([(key, codecs.encode_chunk(np.frombuffer(orphan, np.uint8), repo.compressor))])
    return key


# --------------------------------------------------------------- happy path
@needs_formats
def test_init_archive_retrieve_log(backend, tmp_path):
    import pas.formats as pasfmt
    repo = backend.location("repo")
    info = pas_json("init", repo)
    if backend.kind == "local":
        assert Path(info["path"]).resolve() == (repo / ".pas").resolve()
    else:
        assert info["path"] == repo
    assert info["config"]["format_version"] == 1
    src1, src2 = tmp_path / "v1.safetensors", tmp_path / "v2.safetensors"
    s1, s2 = _snapshot(1), _snapshot(2)
    pasfmt.write(s1, src1, "safetensors")
    pasfmt.write(s2, src2, "safetensors")

    a1 = pas_json("--repo", repo, "archive", src1, "--name", "main", "-m", "first")
    assert a1["name"] == "main" and a1["parent"] is None and a1["tensors"] == len(s1.tensors)
    assert a1["logical_bytes"] == s1.nbytes and a1["physical_added"] > 0
    a2, human = writers(backend, lambda: pas_json("-R", repo, "archive", src2, "-n", "main", "-m", "second"),
                        lambda: pas("-R", repo, "archive", src1, "-n", "copy").stdout)
    assert a2["parent"] == a1["version_id"]
    assert "copy ->" in human and "reused" in human

    out, old, part = tmp_path / "out.safetensors", tmp_path / "old.npz", tmp_path / "part.safetensors"
    many = tmp_path / "many"
    r, _, rp, log, everything, human_log, rm = parallel(
        lambda: pas_json("-R", repo, "retrieve", "main", "-o", out),
        lambda: pas("-R", repo, "retrieve", a1["version_id"][:10], "-o", old, "--format", "npz"),
        lambda: pas_json("-R", repo, "retrieve", "main", "-o", part, "--tensor", "steps", "-t", "nan"),
        lambda: pas_json("-R", repo, "log", "main"),
        lambda: pas_json("-R", repo, "log"),
        lambda: pas("-R", repo, "log", "main").stdout,
        lambda: pas_json("-R", repo, "retrieve", "main", a1["version_id"][:10], "-o", many))
    assert r["version_id"] == a2["version_id"] and r["tensors"] == len(s2.tensors)
    # several REFs: a folder, one file per REF
    assert sorted(x["ref"] for x in rm["versions"]) == sorted([a1["version_id"][:10], "main"])
    _same_tensors(pasfmt.read(many / "main.safetensors"), s2)
    _same_tensors(pasfmt.read(many / f"{a1['version_id'][:10]}.safetensors"), s1)
    assert sorted(p.name for p in many.iterdir()) == sorted([f"{a1['version_id'][:10]}.safetensors", "main.safetensors"])
    _same_tensors(pasfmt.read(out), s2)
    assert pasfmt.read(out).metadata == s2.metadata
    from safetensors.numpy import load_file                     # an independent reader
    independent = load_file(str(out))
    for name, t in s2.tensors.items():
        assert independent[name].astype(independent[name].dtype.newbyteorder("<")).tobytes() == t.data.tobytes()
    _same_tensors(pasfmt.read(old), s1)
    assert rp["tensors"] == 2
    _same_tensors(pasfmt.read(part), s2, names=["steps", "nan"])
    assert [v["id"] for v in log] == [a2["version_id"], a1["version_id"]]
    assert [v["message"] for v in log] == ["second", "first"]
    assert log[0]["refs"] == ["main"]
    assert len(everything) == 3
    assert "second" in human_log


@needs_formats
def test_archive_errors(backend, tmp_path):
    repo = backend.location("repo")
    _build_repo(repo)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 64)
    good = tmp_path / "good.safetensors"
    import pas.formats as pasfmt
    pasfmt.write(_snapshot(3), good, "safetensors")
    # locally one after another: `archive` may take the write lock before it reads its
    # sources, and a concurrent second writer would (rightly) get exit code 11 instead
    writers(backend,
            lambda: pas("-R", repo, "archive", tmp_path / "missing.safetensors", "-n", "x", expect=3),
            lambda: pas("-R", repo, "archive", junk, "-n", "x", expect=4),
            lambda: pas("-R", repo, "archive", good, "-n", "../escape", expect=4),
            lambda: pas("-R", repo, "archive", good, "-n", "x", "--parent", "nope", expect=3))
    assert [r["ref"] for r in pas_json("-R", repo, "ls")] == ["main"]


@needs_formats
def test_archive_file_with_scalar_tensor(backend, tmp_path):
    """A state dict with a 0-d tensor (BatchNorm's num_batches_tracked), written by the
    reference safetensors library, archives and comes back with shape ()."""
    from safetensors.numpy import load_file, save_file
    src, out = tmp_path / "bn.safetensors", tmp_path / "out.safetensors"
    save_file({"bn.num_batches_tracked": np.array(123456789, "<i8"),
               "bn.weight": np.array([1.0, -0.0, 2.5], "<f4")}, str(src))
    repo = backend.location("repo")
    _build_repo(repo)
    pas("-R", repo, "archive", src, "-n", "bn")
    pas("-R", repo, "retrieve", "bn", "-o", out)
    got = load_file(str(out))
    assert got["bn.num_batches_tracked"].shape == ()
    assert got["bn.num_batches_tracked"].tobytes() == np.array(123456789, "<i8").tobytes()
    assert got["bn.weight"].tobytes() == np.array([1.0, -0.0, 2.5], "<f4").tobytes()


def test_ls_show_stats_json(built):
    path, ids = built
    refs, rows, show, human, stats = parallel(
        lambda: pas_json("-R", path, "ls"),
        lambda: pas_json("-R", path, "ls", "main"),
        lambda: pas_json("-R", path, "show", ids["other"][:8]),
        lambda: pas("-R", path, "show", "main").stdout,
        lambda: pas_json("-R", path, "stats"))
    assert refs == [{"ref": "main", "version": ids["main"]}, {"ref": "other", "version": ids["other"]}]
    s0 = _snapshot(0)
    assert [r["name"] for r in rows if r["kind"] == "tensor"] == list(s0.tensors)
    w = next(r for r in rows if r["name"] == "encoder.weight")
    assert w == {"name": "encoder.weight", "dtype": "F32", "shape": [40, 30], "nbytes": 4800, "kind": "tensor"}
    assert show["id"] == ids["other"] and show["name"] == "other" and show["refs"] == ["other"]
    assert show["metadata"] == {"seed": "1"} and show["message"] == "v1"
    assert ids["main"] in human
    assert stats["logical_bytes"] == _snapshot(0).nbytes + _snapshot(1).nbytes
    assert stats["objects"]["versions"]["count"] == 2 and stats["physical_bytes"] > 0


def test_tag_and_delete(backend, built):
    path, ids = built
    # locally one after another: each takes the write lock
    t, t2 = writers(backend, lambda: pas_json("-R", path, "tag", "release/v1", "main"),
                    lambda: pas_json("-R", path, "tag", "by-prefix", ids["other"][:6]))
    assert t == {"ref": "release/v1", "version": ids["main"]}
    assert t2["version"] == ids["other"]
    d, *_ = writers(backend,
                    lambda: pas_json("-R", path, "tag", "release/v1", "x", "--delete"),
                    lambda: pas("-R", path, "tag", "nope", "x", "--delete", expect=3),
                    lambda: pas("-R", path, "tag", "x", "no-such-version", expect=3),
                    lambda: pas("-R", path, "tag", "../evil", "main", expect=4))
    assert d["deleted"] is True
    with Repository.open(path) as repo:
        assert repo.refs() == {"main": ids["main"], "other": ids["other"], "by-prefix": ids["other"]}


def test_verify_ok(built):
    path, ids = built
    rep, human = parallel(lambda: pas_json("-R", path, "verify"), lambda: pas("-R", path, "verify").stdout)
    assert rep["ok"] is True and rep["versions"] == 2 and rep["errors"] == []
    assert rep["tensors"] > 0 and rep["damaged_versions"] == [] and rep["damaged_refs"] == []
    assert "ok" in human


@pytest.fixture
def corrupted(backend, built):
    """The built repository with one byte flipped in an object only "main" uses: the inline
    plane frames of a tensor record (the tensors are small, so they have no chunks).
    Local: rewritten in RocksDB; S3: flipped in its pack object on the server."""
    path, ids = built
    from pas.records import CHUNK, TENSOR
    with Repository.open(path) as repo:
        def records_of(name):
            return {e.object for e in repo.version(name).tensors}
        only_main = sorted(records_of("main") - records_of("other"))
        assert list(repo.store.list_prefix(CHUNK)) == []
    assert only_main
    key = TENSOR + only_main[0]

    def inside_inline_frames(value: bytes) -> int:
        (n,) = struct.unpack("<I", value[:4])
        payload = (4 + n, len(value) - 8)
        assert payload[1] > payload[0]
        return (payload[0] + payload[1]) // 2

    if backend.kind == "s3":
        backend.flip_in_pack(path, key, inside_inline_frames)
        return path, ids
    from pas.stores.rocks import RocksStore
    with RocksStore(path / ".pas" / "db") as store:
        value = bytearray(store.get(key))
        value[inside_inline_frames(bytes(value))] ^= 0x01
        store.write([(key, bytes(value))])
    return path, ids


def test_verify_corrupt_exit_12(corrupted):
    """On S3 this machine's cache still holds the good value (the test wrote it):
    `verify` checks what the bucket holds all the same (docs/cli.md)."""
    path, ids = corrupted
    label = f"main@{ids['main'][:12]}"
    pj, ph = parallel(lambda: pas("-R", path, "verify", "--json", expect=12, error_line=False),
                      lambda: pas("-R", path, "verify", expect=12, error_line=False))
    rep = json.loads(pj.stdout)                      # the report is still printed, as JSON
    assert rep["ok"] is False and rep["damaged_versions"] == [label]
    assert label in ph.stdout + ph.stderr


def test_retrieve_corrupt_exit_12(corrupted, tmp_path):
    path, ids = corrupted
    out = tmp_path / "never.safetensors"
    # On S3: from another machine, whose cache does not hold the value (this one's holds
    # the good copy it wrote, checked against the index, which retrieve may use)
    env = _env(PAS_S3_CACHE=tmp_path / "other-machine")
    calls = [lambda: pas("-R", path, "retrieve", "main", "-o", out, expect=12, env=env)]
    if formats_available():
        calls.append(lambda: pas("-R", path, "retrieve", "other", "-o", tmp_path / "fine.safetensors", env=env))
    parallel(*calls)
    assert not out.exists()


def test_gc_dry_run_and_force(built):
    path, ids = built
    key = _plant_orphan(path)
    dry, human = parallel(lambda: pas_json("-R", path, "gc"), lambda: pas("-R", path, "gc").stdout)
    assert dry["dry_run"] is True and dry["chunks"] == 1 and dry["tensors"] == 0 and dry["bytes"] > 0
    assert "dry run" in human
    done = pas_json("-R", path, "gc", "--force")
    assert done["dry_run"] is False and done["chunks"] == 1
    assert pas_json("-R", path, "gc", "--force")["chunks"] == 0
    with Repository.open(path) as repo:
        assert repo.store.get(key) is None and repo.verify().ok
        assert set(repo.refs()) == {"main", "other"}


# ---------------------------------------------------------- repository lookup
def test_repo_option_env_and_cwd(backend, built, tmp_path):
    path, ids = built
    expected = [{"ref": "main", "version": ids["main"]}, {"ref": "other", "version": ids["other"]}]
    calls = [
        lambda: pas_json("-R", path, "ls"),
        lambda: pas_json("ls", env=_env(PAS_REPO=path), cwd=tmp_path),
        # --repo beats PAS_REPO
        lambda: pas_json("--repo", path, "ls", env=_env(PAS_REPO=backend.location("nowhere")))]
    if backend.kind == "local":
        deep = path / "x" / "y"
        deep.mkdir(parents=True)
        calls.append(lambda: pas_json("ls", cwd=deep))       # found from the current directory's parents
    else:
        # an s3:// repository is never found from the current directory (only --repo and
        # PAS_REPO name one); instead: storage options in PAS_REPO's query string
        calls.append(lambda: pas_json("ls", env=_env(PAS_REPO=f"{path}?cache_dir=none&retries=1")))
    results = parallel(*calls)
    assert results == [expected] * 4


# ------------------------------------------------------------- exit codes
def test_exit_codes_not_found_and_bad_input(built, tmp_path):
    path, _ = built
    calls = [lambda: pas("-R", path, "show", "no-such-ref", expect=3),
             lambda: pas("-R", path, "ls", "deadbeefdeadbeef", expect=3),
             lambda: pas("-R", path, "retrieve", "nope", "-o", tmp_path / "x.safetensors", expect=3)]
    if formats_available():
        calls += [lambda: pas("-R", path, "retrieve", "main", "-o", tmp_path / "y.safetensors",
                              "-t", "no.such.tensor", expect=3),
                  lambda: pas("-R", path, "retrieve", "main", "-o", tmp_path / "z.bin",
                              "--format", "tiff", expect=4),
                  # several REFs: a folder of distinct names, whole versions only
                  lambda: pas("-R", path, "retrieve", "main", "main", "-o", tmp_path / "m1", expect=4),
                  lambda: pas("-R", path, "retrieve", "main", "other", "-o", tmp_path / "m2",
                              "-t", "steps", expect=4),
                  lambda: pas("-R", path, "retrieve", "main", "nope", "-o", tmp_path / "m3", expect=3)]
    parallel(*calls)
    assert not any((tmp_path / n).exists() for n in ("x.safetensors", "y.safetensors", "z.bin", "m1", "m2", "m3"))


def test_exit_code_not_a_repository(backend, tmp_path):
    if backend.kind == "local":
        empty = tmp_path / "empty"
        empty.mkdir()
        p, _, _ = parallel(lambda: pas("-R", empty, "ls", expect=10),
                           lambda: pas("verify", cwd=empty, expect=10),
                           lambda: pas("stats", env=_env(PAS_REPO=tmp_path / "missing"), cwd=empty, expect=10))
    else:
        # an empty prefix; a prefix with a repository below it; one inside a repository
        Repository.init(backend.location("team/repo")).close()
        empty = backend.location("empty")
        p, _, _ = parallel(lambda: pas("-R", empty, "ls", expect=10),
                           lambda: pas("verify", env=_env(PAS_REPO=backend.location("team")), expect=10),
                           lambda: pas("stats", env=_env(PAS_REPO=backend.location("team/repo/sub")), expect=10))
    assert str(empty) in p.stderr


def test_exit_code_unsupported_format(backend, built):
    path, _ = built
    backend.edit_config(path, lambda c: c.update(format_version=99))
    pas("-R", path, "ls", expect=13)


def test_exit_code_locked(backend, built):
    """Local: a writer holds RocksDB's lock, every other writer exits 11 at once.
    S3 (docs/cli.md): writers share the repository (a second one's `tag` works) but
    deleting content needs it alone (`gc --force` exits 11); a writer that is
    deleting (holds the exclusive lock object) makes every other writer exit 11."""
    path, ids = built
    _plant_orphan(path)           # gc --force has something to delete
    holder = textwrap.dedent("""
        import sys
        from pas.records import CHUNK
        from pas.repo import Repository
        repo = Repository.open(sys.argv[1], write=True)
        print("ready", flush=True)
        for line in sys.stdin:    # "delete": delete as gc --force does (S3: the exclusive lock)
            repo.store.write(deletes=[CHUNK + bytes(25)], sync=True)
            print("ready", flush=True)
        repo.close()
    """)
    child = subprocess.Popen([sys.executable, "-c", holder, str(path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    refs = ["main", "other"]
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        if backend.kind == "s3":
            assert pas_json("-R", path, "tag", "y", "main") == {"ref": "y", "version": ids["main"]}
            refs.append("y")
            t0 = time.monotonic()
            p = pas("-R", path, "gc", "--force", expect=11)
            assert time.monotonic() - t0 < 10, "a locked repository must fail at once, not wait"
            assert "lock" in p.stderr.lower()
            child.stdin.write("delete\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "ready", child.stderr.read()

        def timed(*args, **kw):
            t0 = time.monotonic()
            p = pas(*args, **kw)
            assert time.monotonic() - t0 < 10, "a locked repository must fail at once, not wait"
            return p
        p, _, listed = parallel(lambda: timed("-R", path, "tag", "x", "main", expect=11),
                                lambda: timed("-R", path, "gc", "--force", expect=11),
                                # readers are not blocked by a writer
                                lambda: pas_json("-R", path, "ls"))
        assert "lock" in p.stderr.lower()
        assert [r["ref"] for r in listed] == refs
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    assert child.returncode == 0
    pas("-R", path, "tag", "x", "main")


@pytest.mark.parametrize("backend", ["local", pytest.param("s3", marks=pytest.mark.skip(
    reason="usage errors are found by the argument parser before any repository is opened: "
           "no S3 code runs"))], indirect=True)
def test_usage_error_no_traceback(built):
    path, _ = built
    p, _ = parallel(lambda: pas("-R", path, "frobnicate", expect=2),
                    lambda: pas("-R", path, "show", expect=2))   # missing argument
    assert "frobnicate" in p.stderr


def test_init_json_and_twice(backend):
    r, r2 = backend.location("r"), backend.location("r2")
    info, human = parallel(lambda: pas_json("init", r, "--chunk-size", "4096"),
                           lambda: pas("init", r2).stdout)
    assert info["config"]["chunker"]["size"] == 4096
    assert "Initialized" in human
    pas("init", r, expect=4)
