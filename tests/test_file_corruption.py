"""Corruption of the files on disk (issue 5, T5/T6 of the reliability plan): a
bit flipped or a file truncated at a random offset in every kind of file of a
repository (RocksDB table and blob files, MANIFEST, CURRENT, OPTIONS, the write-ahead
log of a repository whose writer was killed, pas's version journal and its
record of the OPTIONS file's digest).

After each damage: no wrong bytes are ever returned, every error is typed
(`PasError`), and either the repository is intact (the damage hit bytes nothing
reads) or `verify` fails and names every version that cannot be read back
exactly, or the store refuses to open with a typed error. A version the store
forgot without complaint (a truncated MANIFEST, a damaged table index, a torn
log) is named through the journal.

Default size for CI; ``PAS_STRESS=1`` (``make stress``) damages 1,000 offsets.
"""
from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from reliability import LINEAGE, STRESS, cli_env, make_lineage, report, source_of

from pas.errors import PasError
from pas.stores.rocks import OPTIONS_CHECK

DAMAGES = 1000 if STRESS else 80
CLI_CHECK_EVERY = 10            # also run `pas verify` as a command on every 10th damaged repository
COUNTS: dict[str, int] = {}


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    report("file corruption", COUNTS)


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real CLI (its own chunk batch size: the killed template relies on it)."""
    return subprocess.run([sys.executable, "-m", "pas.cli", *args], capture_output=True, text=True,
                          env=cli_env(**(env or {})), timeout=300)


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """Two repositories holding v0, v1, v2: one closed cleanly (everything in
    table files), one whose writer was killed right after v2 was saved (v1 and v2
    only in the write-ahead log)."""
    from pas.repo import Repository
    lin = make_lineage(tmp_path_factory.mktemp("corrupt"))
    closed = lin["root"] / "closed"
    shutil.copytree(lin["template"], closed)
    with Repository.open(closed, write=True) as repo:
        repo.archive_series([str(lin["files"][k]) for k in ("v1", "v2")], "m")
    killed = lin["root"] / "killed"
    shutil.copytree(lin["template"], killed)
    r = _cli("--repo", str(killed), "archive", str(lin["files"]["v1"]), str(lin["files"]["v2"]), "--name", "m",
             env={"PAS_CRASH_AT": "journal.append.done:2"})
    assert r.returncode == -signal.SIGKILL, r.stderr
    logs = [f for f in (killed / ".pas" / "db").glob("*.log") if f.stat().st_size > 0]
    assert logs, "the killed writer's versions should be in the write-ahead log"
    ids = {}
    for name, path in (("closed", closed), ("killed", killed)):
        with Repository.open(path) as repo:
            assert repo.verify().ok
            ids[name] = {k: v.id for k, v in _identify(repo, lin).items()}
            assert set(ids[name]) == set(LINEAGE)
    return {"lineage": lin, "closed": closed, "killed": killed, "ids": ids}


def _identify(repo, lin) -> dict:
    """Source name -> version, for the versions that retrieve exactly; raises on wrong bytes."""
    found = {}
    for v in repo.versions():
        try:
            src = source_of(repo, v.id, lin)
        except PasError:
            continue
        assert src is not None, f"version {v.id.hex()[:12]} returned bytes that are none of the sources"
        found[src] = v
    return found


def _kind(path: Path) -> str:
    n = path.name
    if n == "journal":
        return "journal"
    if n.endswith(".sst"):
        return "table"
    if n.endswith(".log"):
        return "wal"
    if n.endswith(".blob"):
        return "blob"       # values of 4 KiB and more (chunks, big records): pas.stores.rocks
    if n.startswith(OPTIONS_CHECK):
        return "options-check"
    return n.split("-")[0].split(".")[0]      # MANIFEST, CURRENT, OPTIONS, IDENTITY, rocksdict-config


def _damage(repo: Path, rng: random.Random, kind: str | None = None) -> tuple[str, str]:
    """Flip a bit or truncate at a random offset in a random file (of ``kind``, if given)."""
    pas_dir = repo / ".pas"
    files = sorted(f for f in (pas_dir / "db").iterdir()
                   if f.is_file() and f.stat().st_size > 0 and f.name != "LOCK" and not f.name.startswith("LOG"))
    files.append(pas_dir / "journal")
    if kind is not None:
        files = [f for f in files if _kind(f) == kind]
    f = rng.choice(files)
    data = bytearray(f.read_bytes())
    off = rng.randrange(len(data))
    how = rng.choice(["flip", "truncate"])
    if how == "flip":
        data[off] ^= 1 << rng.randrange(8)
    else:
        del data[off:]
    f.write_bytes(bytes(data))
    return _kind(f), how


def _judge(repo_path: Path, lin: dict, ids: dict) -> str:
    from pas.repo import Repository
    try:
        with Repository.open(repo_path) as repo:
            rep = repo.verify()
            found = _identify(repo, lin)
    except PasError as exc:
        return f"refused with {type(exc).__name__}"
    lost = [k for k in LINEAGE if k not in found]
    if rep.ok:
        assert not lost, f"verify is clean but {lost} cannot be read back: silent loss"
        return "harmless"
    named = " ".join(rep.damaged_versions)
    for k in lost:
        assert ids[k].hex()[:12] in named, f"{k} cannot be read back and verify does not name it: {rep.errors[:3]}"
    return "named by verify" if lost else "reported by verify"


KINDS = {"closed": {"table", "blob", "MANIFEST", "CURRENT", "OPTIONS", "journal"}}
KINDS["killed"] = KINDS["closed"] | {"wal"}


@pytest.mark.parametrize("which", ["closed", "killed"])
def test_damaged_files_never_return_wrong_bytes(templates, which, tmp_path):
    rng = random.Random(f"{which}-corruption")
    kinds = set()
    first = sorted(KINDS[which])       # every kind of file once, then files at random
    for i in range(DAMAGES // 2):
        repo = tmp_path / "r"
        if repo.exists():
            shutil.rmtree(repo)
        shutil.copytree(templates[which], repo)
        kind, how = _damage(repo, rng, first[i] if i < len(first) else None)
        kinds.add(kind)
        outcome = _judge(repo, templates["lineage"], templates["ids"][which])
        key = f"{which} {kind} {how}: {outcome}"
        COUNTS[key] = COUNTS.get(key, 0) + 1
        COUNTS["offsets damaged"] = COUNTS.get("offsets damaged", 0) + 1
        if i % CLI_CHECK_EVERY == 0 and outcome != "harmless":
            r = _cli("--repo", str(repo), "verify")
            assert r.returncode in (12, 14), (outcome, r.returncode, r.stderr[-300:])
            assert "Traceback" not in r.stderr
    assert KINDS[which] <= kinds, f"not every kind of file was damaged: {kinds}"   # not a vacuous pass
