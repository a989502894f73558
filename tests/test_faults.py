"""Resource faults (issue 5, T9 of the reliability plan): the Nth write or sync
of `pas archive` and `pas gc` fails as on a full disk (``PAS_FAIL_AT=N``,
pas.faults), for every N until the command runs through. Each time: a typed
error (exit 14, one line, no traceback) or, when only the journal line failed
after the version was saved, success with a warning; then the repository
verifies clean, holds only whole versions, and a retry succeeds.
"""
from __future__ import annotations


from reliability import check_repository, copy_repo, crash_points, module_fixtures, pas

from pas.repo import Repository

COUNTS: dict[str, int] = {}
lineage, report_counts = module_fixtures("injected faults", COUNTS)


def _copy(lineage, name: str):
    return copy_repo(lineage["template"], lineage["root"] / name)


def test_every_failing_write_of_archive(lineage):
    args = ["archive", str(lineage["files"]["v1"]), str(lineage["files"]["v2"]), "--name", "m"]
    points = crash_points(_copy(lineage, "enumerate"), *args)
    failable = [i + 1 for i, p in enumerate(points) if not p.endswith(".done")]
    assert len(failable) >= 6
    for n in failable:
        repo = _copy(lineage, "fault")
        r = pas(repo, *args, PAS_FAIL_AT=str(n))
        assert "Traceback" not in r.stderr, r.stderr[-800:]
        if points[n - 1] == "journal.append":
            assert r.returncode == 0 and "pas: warning:" in r.stderr and "journal" in r.stderr
            COUNTS["journal write failed: saved with a warning"] = COUNTS.get(
                "journal write failed: saved with a warning", 0) + 1
        else:
            assert r.returncode == 14, (n, points[n - 1], r.returncode, r.stderr[-500:])
            assert r.stderr.startswith("pas: error:") and "No space left on device" in r.stderr
            COUNTS["store write failed: typed error"] = COUNTS.get("store write failed: typed error", 0) + 1
        present = check_repository(repo, lineage)
        missing = [k for k in ("v1", "v2") if k not in present]
        if missing:   # the retry
            r = pas(repo, "archive", *[str(lineage["files"][k]) for k in missing], "--name", "m")
            assert r.returncode == 0, r.stderr
        assert check_repository(repo, lineage) == ["v0", "v1", "v2"]
        COUNTS["faults injected"] = COUNTS.get("faults injected", 0) + 1


def test_every_failing_write_of_gc(lineage):
    orphaned = _copy(lineage, "orphaned")
    assert pas(orphaned, "archive", str(lineage["files"]["v1"]), "--name", "m",
               PAS_FAIL_AT="store.write").returncode == 14          # chunks flushed, records failed
    with Repository.open(orphaned) as r:
        assert r.gc().chunks > 0
    points = crash_points(copy_repo(orphaned, orphaned.parent / "gc-enumerate"), "gc", "--force")
    failable = [i + 1 for i, p in enumerate(points) if not p.endswith(".done")]
    assert failable
    for n in failable:
        repo = copy_repo(orphaned, orphaned.parent / "gc-fault")
        r = pas(repo, "gc", "--force", PAS_FAIL_AT=str(n))
        assert r.returncode == 14 and "Traceback" not in r.stderr, r.stderr[-500:]
        assert check_repository(repo, lineage) == ["v0"]
        assert pas(repo, "gc", "--force").returncode == 0
        with Repository.open(repo) as rp:
            assert rp.gc().chunks == 0
        COUNTS["faults injected"] = COUNTS.get("faults injected", 0) + 1
