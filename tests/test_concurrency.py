"""Concurrency (issue 5, T8 of the reliability plan): several `pas archive`, a
`pas gc --force` and readers started together, at random offsets, many rounds.

pas's model (docs/guarantees.md): one writer at a time, the others refused at
once with `RepositoryLocked` (exit code 11), not queued; readers open read-only
beside the writer. After every round: each process either succeeded or was
refused with exit 11 and no traceback; no reader ever saw a version that is not
exactly one of the sources; every archive that succeeded left its version whole
and its ref on it; gc removed nothing a version needs; verify is clean.

Default size for CI; ``PAS_STRESS=1`` runs 100 rounds (``PAS_STRESS_ROUNDS``).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import time

from conftest import TESTS_DIR
from reliability import STRESS, cli_env, module_fixtures, source_of

from pas.repo import Repository

ROUNDS = int(os.environ.get("PAS_STRESS_ROUNDS", 100 if STRESS else 4))
COUNTS: dict[str, int] = {}
lineage, report_counts = module_fixtures("concurrency", COUNTS)

READER = textwrap.dedent("""
    import json, sys, time
    from pas.errors import PasError
    from pas.formats import read
    from pas.repo import Repository
    from reliability import fingerprint
    repo_path, seconds, sources = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    prints = [fingerprint(read(p)) for p in sources]
    seen = bad = opens = 0
    end = time.time() + seconds
    while time.time() < end:
        try:
            with Repository.open(repo_path) as repo:
                opens += 1
                for v in repo.versions():
                    if fingerprint(repo.retrieve(v.id)) not in prints:
                        bad += 1
                    seen += 1
        except PasError as exc:
            print(json.dumps({"error": type(exc).__name__ + ": " + str(exc)}))
            sys.exit(1)
    print(json.dumps({"seen": seen, "bad": bad, "opens": opens}))
""")


def _count(key: str) -> None:
    COUNTS[key] = COUNTS.get(key, 0) + 1


def test_writers_gc_and_readers_together(lineage, tmp_path):
    rng = random.Random(11)
    files = lineage["files"]
    pas = [sys.executable, "-m", "pas.cli", "--repo"]
    for rnd in range(ROUNDS):
        repo = tmp_path / "r"
        if repo.exists():
            shutil.rmtree(repo)
        shutil.copytree(lineage["template"], repo)
        jobs = {   # name -> (command, the source its ref must end on)
            "archive-a": (pas + [str(repo), "archive", str(files["v1"]), "--name", "a"], "v1"),
            "archive-b": (pas + [str(repo), "archive", str(files["v2"]), "--name", "b"], "v2"),
            "archive-m": (pas + [str(repo), "archive", str(files["v1"]), str(files["v2"]), "--name", "m"], "v2"),
            "gc": (pas + [str(repo), "gc", "--force"], None),
            "reader-1": ([sys.executable, "-c", READER, str(repo), "2.5", *map(str, files.values())], None),
            "reader-2": ([sys.executable, "-c", READER, str(repo), "2.5", *map(str, files.values())], None),
        }
        order = list(jobs)
        rng.shuffle(order)
        procs = {}
        for name in order:
            time.sleep(rng.uniform(0, 0.15))
            procs[name] = subprocess.Popen(jobs[name][0], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                           env=cli_env((str(TESTS_DIR),)))
        results = {}
        for name, p in procs.items():
            out, err = p.communicate(timeout=300)
            results[name] = (p.returncode, out, err)
        winners = []
        for name, (rc, out, err) in results.items():
            assert "Traceback" not in err, (name, err[-800:])
            if name.startswith("reader"):
                got = json.loads(out.strip().splitlines()[-1])
                assert rc == 0 and got["bad"] == 0, (name, got)
                COUNTS["versions read by readers"] = COUNTS.get("versions read by readers", 0) + got["seen"]
                continue
            assert rc in (0, 11), (name, rc, err[-500:])
            if rc == 11:
                assert "locked" in err.lower()
                _count("writers refused (exit 11)")
            else:
                winners.append(name)
                _count(f"{name.split('-')[0]} succeeded")
        assert winners, f"round {rnd}: no writer got the lock"
        with Repository.open(repo) as r:
            rep = r.verify()
            assert rep.ok, rep.errors[:5]
            by_id = {}
            for v in r.versions():
                by_id[v.id] = source_of(r, v.id, lineage)
                assert by_id[v.id] is not None, f"round {rnd}: a version is none of the sources"
            for name in winners:
                want = jobs[name][1]
                if want is not None:
                    ref = name.split("-")[1]
                    assert by_id[r.resolve(ref)] == want, f"round {rnd}: ref {ref} is not on {want}"
        _count("rounds")
