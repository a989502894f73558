"""The `pas` command line, run as a real process (docs/cli.md).

Every command with ``--json`` must print parseable JSON; errors must exit with
the documented code and one ``pas: error:`` line on stderr, never a traceback.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT, formats_available
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


def _build_repo(path: Path, names=("main",)) -> dict[str, str]:
    """A repository made in-process (fast); the CLI is what is under test."""
    ids = {}
    with Repository.init(path) as repo:
        for i, name in enumerate(names):
            ids[name] = repo.archive_snapshot(_snapshot(i), name, message=f"v{i}").version_id
    return ids


@pytest.fixture
def built(tmp_path):
    path = tmp_path / "repo"
    return path, _build_repo(path, ("main", "other"))


# --------------------------------------------------------------- happy path
@needs_formats
def test_init_archive_retrieve_log(tmp_path):
    import pas.formats as pasfmt
    repo = tmp_path / "repo"
    info = pas_json("init", repo)
    assert Path(info["path"]).resolve() == (repo / ".pas").resolve()
    assert info["config"]["format_version"] == 1
    src1, src2 = tmp_path / "v1.safetensors", tmp_path / "v2.safetensors"
    s1, s2 = _snapshot(1), _snapshot(2)
    pasfmt.write(s1, src1, "safetensors")
    pasfmt.write(s2, src2, "safetensors")

    a1 = pas_json("--repo", repo, "archive", src1, "--name", "main", "-m", "first")
    assert a1["name"] == "main" and a1["parent"] is None and a1["tensors"] == len(s1.tensors)
    assert a1["logical_bytes"] == s1.nbytes and a1["physical_added"] > 0
    a2 = pas_json("-R", repo, "archive", src2, "-n", "main", "-m", "second")
    assert a2["parent"] == a1["version_id"]
    human = pas("-R", repo, "archive", src1, "-n", "copy").stdout
    assert "copy ->" in human and "reused" in human

    out, old, part = tmp_path / "out.safetensors", tmp_path / "old.npz", tmp_path / "part.safetensors"
    r, _, rp, log, everything, human_log = parallel(
        lambda: pas_json("-R", repo, "retrieve", "main", "-o", out),
        lambda: pas("-R", repo, "retrieve", a1["version_id"][:10], "-o", old, "--format", "npz"),
        lambda: pas_json("-R", repo, "retrieve", "main", "-o", part, "--tensor", "steps", "-t", "nan"),
        lambda: pas_json("-R", repo, "log", "main"),
        lambda: pas_json("-R", repo, "log"),
        lambda: pas("-R", repo, "log", "main").stdout)
    assert r["version_id"] == a2["version_id"] and r["tensors"] == len(s2.tensors)
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
def test_archive_errors(tmp_path):
    repo = tmp_path / "repo"
    _build_repo(repo)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 64)
    good = tmp_path / "good.safetensors"
    import pas.formats as pasfmt
    pasfmt.write(_snapshot(3), good, "safetensors")
    # sequential: `archive` may take the write lock before it reads its sources, and a
    # concurrent second writer would (rightly) get exit code 11 instead of the error under test
    pas("-R", repo, "archive", tmp_path / "missing.safetensors", "-n", "x", expect=3)
    pas("-R", repo, "archive", junk, "-n", "x", expect=4)
    pas("-R", repo, "archive", good, "-n", "../escape", expect=4)
    pas("-R", repo, "archive", good, "-n", "x", "--parent", "nope", expect=3)
    assert [r["ref"] for r in pas_json("-R", repo, "ls")] == ["main"]


@needs_formats
def test_archive_file_with_scalar_tensor(tmp_path):
    """A state dict with a 0-d tensor (BatchNorm's num_batches_tracked), written by the
    reference safetensors library, archives and comes back with shape ()."""
    from safetensors.numpy import load_file, save_file
    src, out = tmp_path / "bn.safetensors", tmp_path / "out.safetensors"
    save_file({"bn.num_batches_tracked": np.array(123456789, "<i8"),
               "bn.weight": np.array([1.0, -0.0, 2.5], "<f4")}, str(src))
    _build_repo(tmp_path / "repo")
    pas("-R", tmp_path / "repo", "archive", src, "-n", "bn")
    pas("-R", tmp_path / "repo", "retrieve", "bn", "-o", out)
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


def test_tag_and_delete(built):
    path, ids = built
    t = pas_json("-R", path, "tag", "release/v1", "main")
    assert t == {"ref": "release/v1", "version": ids["main"]}
    t = pas_json("-R", path, "tag", "by-prefix", ids["other"][:6])
    assert t["version"] == ids["other"]
    d = pas_json("-R", path, "tag", "release/v1", "x", "--delete")
    assert d["deleted"] is True
    with Repository.open(path) as repo:
        assert repo.refs() == {"main": ids["main"], "other": ids["other"], "by-prefix": ids["other"]}
    # sequential: each invocation takes the write lock
    pas("-R", path, "tag", "nope", "x", "--delete", expect=3)
    pas("-R", path, "tag", "x", "no-such-version", expect=3)
    pas("-R", path, "tag", "../evil", "main", expect=4)
    with Repository.open(path) as repo:
        assert set(repo.refs()) == {"main", "other", "by-prefix"}


def test_verify_ok(built):
    path, ids = built
    rep, human = parallel(lambda: pas_json("-R", path, "verify"), lambda: pas("-R", path, "verify").stdout)
    assert rep["ok"] is True and rep["versions"] == 2 and rep["errors"] == []
    assert rep["tensors"] > 0 and rep["damaged_versions"] == [] and rep["damaged_refs"] == []
    assert "ok" in human


@pytest.fixture
def corrupted(built):
    """The built repository with one byte flipped in an object only "main" uses: the inline
    plane frames of a tensor record (the tensors are small, so they have no chunks)."""
    path, ids = built
    import struct

    from pas.records import CHUNK, TENSOR
    from pas.stores.rocks import RocksStore
    with Repository.open(path) as repo:
        def records_of(name):
            return {e.object for e in repo.version(name).tensors}
        only_main = sorted(records_of("main") - records_of("other"))
        assert list(repo.store.list_prefix(CHUNK)) == []
    assert only_main
    with RocksStore(path / ".pas" / "db") as store:
        key = TENSOR + only_main[0]
        value = bytearray(store.get(key))
        (n,) = struct.unpack("<I", value[:4])
        payload = (4 + n, len(value) - 8)
        assert payload[1] > payload[0]
        value[(payload[0] + payload[1]) // 2] ^= 0x01      # inside the inline frames
        store.write([(key, bytes(value))])
    return path, ids


def test_verify_corrupt_exit_12(corrupted):
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
    calls = [lambda: pas("-R", path, "retrieve", "main", "-o", out, expect=12)]
    if formats_available():
        calls.append(lambda: pas("-R", path, "retrieve", "other", "-o", tmp_path / "fine.safetensors"))
    parallel(*calls)
    assert not out.exists()


def test_gc_dry_run_and_force(built):
    path, ids = built
    from pas import codecs, records
    from pas.hashing import digest
    from pas.records import CHUNK
    orphan = b"left behind by a killed archive" * 10
    with Repository.open(path, write=True) as repo:
        key = CHUNK + records.address(digest(orphan), len(orphan))
        repo.store.write([(key, codecs.encode_chunk(np.frombuffer(orphan, np.uint8), repo.compressor))])
    dry = pas_json("-R", path, "gc")
    assert dry["dry_run"] is True and dry["chunks"] == 1 and dry["tensors"] == 0 and dry["bytes"] > 0
    assert "dry run" in pas("-R", path, "gc").stdout
    done = pas_json("-R", path, "gc", "--force")
    assert done["dry_run"] is False and done["chunks"] == 1
    assert pas_json("-R", path, "gc", "--force")["chunks"] == 0
    with Repository.open(path) as repo:
        assert repo.store.get(key) is None and repo.verify().ok
        assert set(repo.refs()) == {"main", "other"}


# ---------------------------------------------------------- repository lookup
def test_repo_option_env_and_cwd(built, tmp_path):
    path, ids = built
    expected = [{"ref": "main", "version": ids["main"]}, {"ref": "other", "version": ids["other"]}]
    deep = path / "x" / "y"
    deep.mkdir(parents=True)
    results = parallel(
        lambda: pas_json("-R", path, "ls"),
        lambda: pas_json("ls", env=_env(PAS_REPO=path), cwd=tmp_path),
        lambda: pas_json("ls", cwd=deep),
        # --repo beats PAS_REPO
        lambda: pas_json("--repo", path, "ls", env=_env(PAS_REPO=tmp_path / "nowhere")))
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
                              "--format", "tiff", expect=4)]
    parallel(*calls)
    assert not any((tmp_path / n).exists() for n in ("x.safetensors", "y.safetensors", "z.bin"))


def test_exit_code_not_a_repository(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    p, _, _ = parallel(lambda: pas("-R", empty, "ls", expect=10),
                       lambda: pas("verify", cwd=empty, expect=10),
                       lambda: pas("stats", env=_env(PAS_REPO=tmp_path / "missing"), cwd=empty, expect=10))
    assert str(empty) in p.stderr


def test_exit_code_unsupported_format(built):
    path, _ = built
    cfg = path / ".pas" / "config.json"
    c = json.loads(cfg.read_text())
    c["format_version"] = 99
    cfg.write_text(json.dumps(c))
    pas("-R", path, "ls", expect=13)


def test_exit_code_locked(built):
    path, ids = built
    holder = textwrap.dedent("""
        import sys
        from pas.repo import Repository
        repo = Repository.open(sys.argv[1], write=True)
        print("ready", flush=True)
        sys.stdin.read()
        repo.close()
    """)
    child = subprocess.Popen([sys.executable, "-c", holder, str(path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        t0 = time.monotonic()
        p = pas("-R", path, "tag", "x", "main", expect=11)
        assert time.monotonic() - t0 < 10, "a locked repository must fail at once, not wait"
        assert "lock" in p.stderr.lower()
        pas("-R", path, "gc", "--force", expect=11)
        # readers are not blocked by a writer
        assert [r["ref"] for r in pas_json("-R", path, "ls")] == ["main", "other"]
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    assert child.returncode == 0
    pas("-R", path, "tag", "x", "main")


def test_usage_error_no_traceback(built):
    path, _ = built
    p, _ = parallel(lambda: pas("-R", path, "frobnicate", expect=2),
                    lambda: pas("-R", path, "show", expect=2))   # missing argument
    assert "frobnicate" in p.stderr


def test_init_json_and_twice(tmp_path):
    info, human = parallel(lambda: pas_json("init", tmp_path / "r", "--chunk-size", "4096"),
                           lambda: pas("init", tmp_path / "r2").stdout)
    assert info["config"]["chunker"]["size"] == 4096
    assert "Initialized" in human
    pas("init", tmp_path / "r", expect=4)
