"""Shared by the reliability tests (test_crash.py, test_file_corruption.py): a
small three-version lineage (v0 <- v1 <- v2) with chunked and inline tensors,
written as files, and the check that a repository holds only whole, bit-exact
versions of it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, big_elements, snapshot_fingerprint

STRESS = os.environ.get("PAS_STRESS") == "1"
LINEAGE = ("v0", "v1", "v2")


def snapshot(seed: int, base=None):
    """A model of ~2.5 MB: chunked tensors (several 1 MiB chunks) and small inline ones."""
    from pas.snapshot import Snapshot, Tensor
    rng = np.random.default_rng(seed)
    s = Snapshot(metadata={"seed": str(seed)}, format="safetensors")
    n = big_elements() // 100
    if base is None:
        arrays = {"big.0": rng.normal(0, 0.02, (n, 100)).astype("<f4"),
                  "big.1": rng.normal(0, 0.02, (n, 100)).astype("<f4"),
                  "small.w": rng.normal(0, 0.02, (32, 8)).astype("<f4"),
                  "small.i": rng.integers(0, 9, 10, dtype="<i8")}
    else:   # a fine-tune: small updates to some tensors, one new tensor
        arrays = {k: t.data.copy() for k, t in base.tensors.items()}
        arrays["big.0"] = (arrays["big.0"] + rng.normal(0, 1e-4, arrays["big.0"].shape)).astype("<f4")
        arrays["small.w"] = (arrays["small.w"] + rng.normal(0, 1e-4, (32, 8))).astype("<f4")
        arrays[f"new.{seed}"] = rng.normal(0, 0.02, (n // 2, 100)).astype("<f4")
    for k, a in arrays.items():
        s.add(Tensor.from_array(k, a))
    return s


def make_lineage(root: Path) -> dict:
    """Three versions as files (v0 <- v1 <- v2), their fingerprints, and a repository
    holding v0 as ref "m" (the template every trial copies)."""
    from pas.formats import read, safetensors
    from pas.repo import Repository
    snaps = {"v0": snapshot(0)}
    snaps["v1"] = snapshot(1, snaps["v0"])
    snaps["v2"] = snapshot(2, snaps["v1"])
    files, prints = {}, {}
    for k, s in snaps.items():
        files[k] = root / f"{k}.safetensors"
        safetensors.write(s, files[k])
        prints[k] = fingerprint(read(files[k]))
    template = root / "template"
    Repository.init(template).close()
    with Repository.open(template, write=True) as repo:
        repo.archive(files["v0"], "m")
    return {"root": root, "files": files, "prints": prints, "template": template}


def fingerprint(snap) -> dict:
    fp = snapshot_fingerprint(snap)
    return {"tensors": fp["tensors"], "order": fp["order"]}




def source_of(repo, version_id: bytes, lineage: dict) -> str | None:
    """The lineage source that a stored version is, byte for byte, or None."""
    fp = fingerprint(repo.retrieve(version_id))
    return next((k for k, p in lineage["prints"].items() if p == fp), None)


def check_repository(repo_path: Path, lineage: dict) -> list[str]:
    """The invariants after any crash: verify clean; every version is exactly one
    of the sources, whole; v1 only with v0, v2 only with v1; ref "m" on the newest.
    Returns the sources present, in lineage order."""
    from pas.repo import Repository
    with Repository.open(repo_path) as repo:
        rep = repo.verify()
        assert rep.ok, rep.errors[:5]
        present = {}
        for v in repo.versions():
            src = source_of(repo, v.id, lineage)
            assert src is not None, f"version {v.id.hex()[:12]} is none of the sources (partly visible?)"
            assert src not in present, f"{src} stored twice"
            present[src] = v.id
        order = [k for k in LINEAGE if k in present]
        assert order == list(LINEAGE[:len(order)]), f"versions out of order: {sorted(present)}"
        assert repo.resolve("m") == present[order[-1]], "ref m is not on the newest complete version"
    return order


def report(section: str, counts: dict) -> None:
    """Print the counts of a reliability test module; with PAS_STRESS_REPORT=PATH
    also merge them into that JSON file under ``section``."""
    print(f"\n{section}:", json.dumps(counts, indent=1))
    path = os.environ.get("PAS_STRESS_REPORT")
    if path:
        p = Path(path)
        data = json.loads(p.read_text()) if p.exists() else {}
        data[section] = counts
        p.write_text(json.dumps(data, indent=1) + "\n")


# The CLI with a small chunk batch, so that a version's chunks are written in
# several bulk batches and flushed before its records (the path big models take).
CLI = ("import sys, pas.writer as w; w.BATCH_BYTES = 256 << 10; "
       "from pas.cli import main; sys.argv[0] = 'pas'; main()")


def cli_env(extra_path: tuple[str, ...] = (), **extra) -> dict:
    """This environment without fault settings, plus ``extra``, with pas (and
    ``extra_path``) importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAS_CRASH_", "PAS_FAIL_"))}
    env.update(extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), *extra_path, env.get("PYTHONPATH")]))
    return env


def pas(repo: Path, *args: str, **env) -> subprocess.CompletedProcess:
    """``pas --repo REPO ARGS`` (the small-batch CLI) with extra environment ``env``."""
    return subprocess.run([sys.executable, "-c", CLI, "--repo", str(repo), *args], capture_output=True,
                          text=True, env=cli_env(**env), timeout=300)


def crash_points(repo: Path, *args: str) -> list[str]:
    """The crash points one run of ``pas ARGS`` reaches, in order (it runs to the end)."""
    log = repo.parent / f"{repo.name}.points"
    log.unlink(missing_ok=True)
    r = pas(repo, *args, PAS_CRASH_LOG=str(log))
    assert r.returncode == 0, r.stderr
    return log.read_text().split()


def copy_repo(src: Path, dst: Path) -> Path:
    """A fresh copy of repository ``src`` at ``dst`` (replacing what is there)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


def module_fixtures(section: str, counts: dict):
    """The two module fixtures of a reliability test module: ``lineage`` (a
    fresh ``make_lineage``) and ``report_counts`` (autouse: reports ``counts``
    under ``section`` after the module). Use: ``lineage, report_counts = module_fixtures(...)``."""

    @pytest.fixture(scope="module")
    def lineage(tmp_path_factory):
        return make_lineage(tmp_path_factory.mktemp(section.replace(" ", "-")))

    @pytest.fixture(scope="module", autouse=True)
    def report_counts():
        yield
        report(section, counts)

    return lineage, report_counts
