"""bench.measure (schemes interleaved), bench.memory.probe (memory in a process
apart) and bench.compare (do two runs agree), on tiny files and fake schemes."""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np

from bench import compare, measure, memory, tensorio
from bench.datasets import Dataset, Version
from bench.measure import MAX_REPEAT_FACTOR, adaptive_rounds, plan_versions, rotated, run_matrix
from bench.schemes import Scheme

CALLS: list[tuple[str, str, str]] = []


class _Quiet:
    def log(self, msg):
        pass

    def task(self, description, total):
        import contextlib
        return contextlib.nullcontext(lambda n=1: None)


def _fake(name: str, broken: bool = False, archive_delay: float = 0.0) -> type[Scheme]:
    """A scheme that keeps each version's tensors in memory and logs every call."""

    class Fake(Scheme):
        label = description = name

        def __init__(self, root):
            super().__init__(root)
            self.kept = {}

        def archive(self, version_path, parent_id, name=""):
            CALLS.append((type(self).name, "archive", name))
            time.sleep(archive_delay)
            vid = self._new_id()
            self.kept[vid] = tensorio.load(version_path)
            self.added[vid] = Path(version_path).stat().st_size
            return vid

        def retrieve(self, id):
            CALLS.append((type(self).name, "retrieve", id))
            got = {n: a.copy() for n, a in self.kept[id].items()}
            if broken:   # one wrong bit: the harness must notice
                n = sorted(got)[0]
                got[n].view(np.uint8).reshape(-1)[0] ^= 1
            return got

        def retrieve_one(self, id, name):
            return self.kept[id][name].copy()

    Fake.name = name
    return Fake


def _dataset(root: Path, n: int = 3) -> Dataset:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    versions, parent = [], None
    for i in range(n):
        p = root / f"v{i}.safetensors"
        tensorio.write_safetensors(p, {"w": rng.normal(size=(32, 8)).astype("<f4"),
                                       "b": rng.normal(size=8).astype("<f4")}, {})
        versions.append(Version(id=f"v{i}", parent=parent, path=p))
        parent = f"v{i}"
    return Dataset(name="tiny", kind="corpus", source="test", description="tiny", versions=versions)


def test_rotated_starts_at_a_different_scheme_each_step():
    cs = [type("C", (), {"alive": True, "name": x})() for x in "abc"]
    assert ["".join(c.name for c in rotated(cs, s)) for s in range(4)] == ["abc", "bca", "cab", "abc"]
    cs[1].alive = False
    assert ["".join(c.name for c in rotated(cs, s)) for s in range(2)] == ["ac", "ca"]


def test_schemes_interleave_version_by_version(tmp_path):
    CALLS.clear()
    ds = _dataset(tmp_path / "data")
    meta = plan_versions([ds])
    res = run_matrix([_fake("a"), _fake("b")], [ds], meta, tmp_path / "work", repeat=2, archive_repeat=2,
                     one_repeat=2, rep=_Quiet(), min_seconds=0)
    archives = [(s, n) for s, what, n in CALLS if what == "archive"]
    # every version archived by both schemes before the next version, the order rotated per step
    assert archives[:6] == [("a", "tiny/v0"), ("b", "tiny/v0"), ("b", "tiny/v1"), ("a", "tiny/v1"),
                            ("a", "tiny/v2"), ("b", "tiny/v2")]
    assert len(archives) == 12   # two passes
    retrieves = [s for s, what, _ in CALLS if what == "retrieve"]
    assert retrieves[:4] in (["a", "b", "b", "a"], ["b", "a", "a", "b"])
    for name in "ab":
        r = res[name]
        assert r["ok"], r["error"]
        assert len(r["archive_pass_s"]) == 2
        for key in meta:
            v = r["versions"][key]
            assert v["verified"] and len(v["retrieve_s_all"]) == 2 and len(v["archive_s_all"]) == 2


def test_fast_versions_get_more_rounds_up_to_a_cap(tmp_path):
    """A version retrieved in microseconds is retrieved until the fastest scheme
    has been timed for min_seconds in all, at most MAX_REPEAT_FACTOR x repeat;
    the added rounds stay interleaved (every scheme as many)."""
    CALLS.clear()
    ds = _dataset(tmp_path / "data", n=2)
    res = run_matrix([_fake("a"), _fake("b")], [ds], plan_versions([ds]), tmp_path / "work", repeat=2,
                     archive_repeat=1, one_repeat=3, rep=_Quiet(), min_seconds=10.0)
    for name in "ab":
        for v in res[name]["versions"].values():
            assert len(v["retrieve_s_all"]) == MAX_REPEAT_FACTOR * 2
            assert len(v["one_tensor_s_all"]) == MAX_REPEAT_FACTOR * 3
    # a fast dataset is archived again, parents first, into scratch stores: every
    # scheme as many passes (interleaved), the per-version times joining the main
    # pass's; the whole-store pass totals stay the main passes'
    archives = [(s, n) for s, what, n in CALLS if what == "archive"]
    assert len(archives) == 2 * 2 * MAX_REPEAT_FACTOR
    assert archives[4:6] in ([("a", "tiny/v0"), ("b", "tiny/v0")], [("b", "tiny/v0"), ("a", "tiny/v0")])
    for name in "ab":
        assert len(res[name]["archive_pass_s"]) == 1
        for v in res[name]["versions"].values():
            assert len(v["archive_s_all"]) == MAX_REPEAT_FACTOR
    assert not list((tmp_path / "work").glob("*.extra"))   # scratch stores removed
    assert adaptive_rounds({"a": [0.01, 0.02], "b": [0.5]}, 3, 15, min_seconds=0.25) == 15   # 0.25 / 0.015
    assert adaptive_rounds({"a": [0.1], "b": [0.5]}, 3, 15, min_seconds=0.25) == 3           # slow enough
    assert adaptive_rounds({"a": [0.05], "b": [0.5]}, 3, 15, min_seconds=0.25) == 5
    assert adaptive_rounds({"a": []}, 3, 15) == 3


def test_a_wrong_bit_fails_that_scheme_only(tmp_path):
    ds = _dataset(tmp_path / "data", n=2)
    res = run_matrix([_fake("good"), _fake("bad", broken=True)], [ds], plan_versions([ds]), tmp_path / "work",
                     repeat=1, archive_repeat=1, one_repeat=1, rep=_Quiet())
    assert res["good"]["ok"]
    assert not res["bad"]["ok"] and "not bit-exact" in res["bad"]["error"]


def test_a_much_slower_archiver_is_timed_in_fewer_passes(tmp_path):
    """Past SLOW_ARCHIVE_FACTOR x the fastest scheme's first pass, a scheme is not
    archived again after SLOW_ARCHIVE_PASSES passes (two: its ratio keeps a noise
    band); its last store is the one retrieved from (bit-exact)."""
    ds = _dataset(tmp_path / "data", n=2)
    CALLS.clear()
    assert measure.SLOW_ARCHIVE_PASSES == 2
    res = run_matrix([_fake("quick"), _fake("slow", archive_delay=0.05)], [ds], plan_versions([ds]),
                     tmp_path / "work", repeat=1, archive_repeat=4, one_repeat=1, rep=_Quiet())
    archives = [c for c in CALLS if c[1] == "archive"]
    assert sum(c[0] == "quick" for c in archives) >= 4 * 2 and sum(c[0] == "slow" for c in archives) == 2 * 2
    assert len(res["slow"]["archive_pass_s"]) == 2 and len(res["quick"]["archive_pass_s"]) == 4
    assert res["slow"]["ok"] and res["quick"]["ok"]


def test_memory_probe_measures_each_scheme_in_a_process_apart(tmp_path):
    ds = _dataset(tmp_path / "data", n=2)
    versions = [(f"tiny/{v.id}", str(v.path), f"tiny/{v.parent}" if v.parent else None) for v in ds.versions]
    got = memory.probe(["raw", "zstd3", "no-such-scheme"], versions, tmp_path / "work")
    for name in ("raw", "zstd3"):
        assert got[name]["errors"] == {}
        assert got[name]["archive_peak_bytes"] >= 0
        assert set(got[name]["retrieve_peak_bytes"]) == {"tiny/v1"}   # newest = largest here: measured once
    assert "KeyError" in got["no-such-scheme"]["error"]


def _report(size_a: float, ret_a: float) -> dict:
    def s(phys, rmb, amb):
        return {"physical_bytes": phys, "retrieve_mb_s": rmb, "archive_mb_s": amb}
    schemes_ = {"pas": s(100, ret_a, 50), "alt": s(size_a, 100, 100)}
    return {"datasets": [{"name": "d", "schemes": copy.deepcopy(schemes_)}], "totals": schemes_}


def test_compare_flags_moved_ratios_and_sizes(tmp_path, capsys):
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(json.dumps(_report(200, 120)))
    b.write_text(json.dumps(_report(200, 126)))     # retrieve ratio +5%: within 15%
    c.write_text(json.dumps(_report(210, 180)))     # size differs, retrieve ratio +50%
    assert compare.main([str(a), str(b)]) == 0
    assert compare.main([str(a), str(c)]) == 1
    out = capsys.readouterr().out
    assert "✗" in out and "+50%" in out


def test_compare_accepts_a_move_within_both_runs_noise(tmp_path, capsys):
    """A ratio that moved beyond the tolerance reproduces when the two runs' per-repeat
    bands overlap (the noise each run measured), and does not when they are apart."""
    def run(pas_s, alt_s):
        r = _report(200, 100 * sum(alt_s) / sum(pas_s))
        for part in (r["datasets"][0]["schemes"], r["totals"]):
            part["pas"]["retrieve_s_per_repeat"], part["alt"]["retrieve_s_per_repeat"] = pas_s, alt_s
        return r
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(json.dumps(run([1.0, 1.0, 1.0], [1.3, 1.6, 1.4])))    # ratios 1.3-1.6, median 1.4
    b.write_text(json.dumps(run([1.0, 1.0, 1.0], [1.1, 1.35, 1.15])))  # 1.1-1.35: -18%, bands overlap
    c.write_text(json.dumps(run([1.0, 1.0, 1.0], [1.0, 1.1, 1.05])))   # 1.0-1.1: -25%, apart
    assert compare.main([str(a), str(b)]) == 0
    assert compare.main([str(a), str(c)]) == 1
    assert "(1.30–1.60)" in capsys.readouterr().out


def test_noise_band_holds_the_headline_ratio(tmp_path, capsys):
    """The headline ratio comes from per-version medians, so it can fall outside the
    per-repeat ratios; the band printed (and judged by compare) is widened to hold it."""
    r = _report(200, 170)                       # headline 1.70, per-repeat ratios 1.3-1.6
    for part in (r["datasets"][0]["schemes"], r["totals"]):
        part["pas"]["retrieve_s_per_repeat"], part["alt"]["retrieve_s_per_repeat"] = [1.0] * 3, [1.3, 1.6, 1.4]
    a = tmp_path / "a.json"
    a.write_text(json.dumps(r))
    assert compare.main([str(a), str(a)]) == 0
    assert "1.70x (1.30–1.70)" in capsys.readouterr().out


def test_allocator_keeps_the_heap_in_a_child():
    """bench.memory.pin_allocator keeps freed buffers for reuse: a 48 MB buffer
    allocated and filled again after a first one was freed costs no fresh pages
    (page faults cost what the VM makes them cost in each run)."""
    import subprocess
    import sys
    code = ("import bench.memory as m, resource, numpy as np\n"
            "m.no_huge_pages()\n"     # as the timed run: else numpy's huge pages hide the faults
            "why = m.pin_allocator()\n"
            "def fill():\n"
            "    a = np.empty(12 << 20, np.float32); a.fill(1.0); return a\n"
            "del_a = fill(); del del_a\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "b = fill()\n"
            "print(why, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).resolve().parent.parent)).stdout.strip()
    why, faults = out.rsplit(" ", 1)
    if why != "None":                  # another libc, or a glibc that refuses: said in the report
        assert why == "not glibc" or why.startswith("glibc refused"), why
        return
    assert int(faults) < 1000, out     # 48 MB of fresh pages: ~12,300 faults (measured unpinned)


def test_numpy_huge_pages_are_turned_off_in_a_child():
    """bench.memory.no_huge_pages stops numpy's madvise for huge pages (a per-run state otherwise)."""
    import subprocess
    import sys
    code = ("import bench.memory as m; print(m.no_huge_pages()); "
            "from numpy._core.multiarray import _set_madvise_hugepage as s; print(s(False))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).resolve().parent.parent)).stdout.split()
    assert out == ["None", "False"], out     # the switch returns its previous state: already off
