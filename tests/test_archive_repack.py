"""`pas repack` (pas/archive/repack.py): applying a storage plan to a repository.

A small repository (seven versions in a chain of a few float32 tensors with
small changes; one tensor big enough to be stored in chunks): repacked with
a tight and a loose budget, every version still retrieves bit-exact, verify
is clean, the physical size moves as the plan says, chains stay within
delta.max_depth, and `pas plan` then reports the new layout as "before".
`--dry-run` changes nothing. Killed at every repack crash point, or failing
there (PAS_FAIL_AT), the repository keeps the old or the new layout whole,
and a rerun succeeds.
"""
from __future__ import annotations

import json
import signal

import numpy as np
import pytest
from reliability import copy_repo, crash_points, pas
from test_cli import parallel

from pas.archive import repo_graph
from pas.archive.repack import POINTS, repack
from pas.errors import BadInput
from pas.records import CHUNK, REF, TENSOR, VERSION
from pas.repo import Repository
from pas.snapshot import Snapshot, Tensor

VERSIONS = 7


@pytest.fixture(scope="module", autouse=True)
def _calibrate_at_once():
    """Calibrations here time at once, without waiting for a quiet machine (tests stay fast)."""
    before, repo_graph.QUIET_SECONDS = repo_graph.QUIET_SECONDS, 0.0
    yield
    repo_graph.QUIET_SECONDS = before
SHAPES = {"enc.weight": (1000, 100), "dec.weight": (400, 250), "big.weight": (320_000,), "bias": (64,)}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """The template repository (cost model calibrated once) and every version's
    tensors as bytes, by message."""
    root = tmp_path_factory.mktemp("repack")
    rng = np.random.default_rng(11)
    w = {n: rng.normal(0, 0.05, s).astype("<f4") for n, s in SHAPES.items()}
    expected = {}
    template = root / "template"
    with Repository.init(template) as repo:
        for i in range(VERSIONS):
            snap = Snapshot(format="safetensors")
            for n, a in w.items():
                snap.add(Tensor.from_array(n, a))
            repo.archive_snapshot(snap, "m", message=f"e{i}")
            expected[f"e{i}"] = {n: ("F32", a.shape, a.tobytes()) for n, a in w.items()}
            w = {n: (a * (1 + rng.normal(0, 1e-3, a.shape))).astype("<f4") if n != "bias" else a
                 for n, a in w.items()}
        repo_graph.cost_model(repo)          # .pas/costs.json: every copy reuses it
    return {"root": root, "template": template, "expected": expected}


def _copy(source, name):
    return copy_repo(source["template"], source["root"] / "trials" / name)


def _items(path) -> dict:
    with Repository.open(path) as repo:
        return {k: v for prefix in (CHUNK, TENSOR, VERSION, REF) for k, v in repo.store.items_prefix(prefix)}


def check(path, source) -> dict:
    """Verify clean; every version bit-exact; every chain within delta.max_depth.
    Returns {"physical", "whole", "deltas", "depth"}."""
    with Repository.open(path) as repo:
        rep = repo.verify()
        assert rep.ok, rep.errors[:5]
        versions = repo.versions()
        assert sorted(v.message for v in versions) == sorted(source["expected"])
        for v in versions:
            snap = repo.retrieve(v.id)
            got = {n: (t.dtype, tuple(t.shape), np.ascontiguousarray(t.data).tobytes()) for n, t in snap.tensors.items()}
            assert got == source["expected"][v.message], v.message
        live = {e.object for v in versions for e in v.tensors}
        lays = [repo.reader.parse(a) for a in live]
        limit = repo.config["delta"]["max_depth"]
        assert all(lay.depth <= limit for lay in lays)
        changes = {a: lay.rec["change"] for a, lay in zip(live, lays) if "change" in lay.rec}
        return {"physical": repo.physical_bytes(), "whole": sum(lay.base is None for lay in lays), "changes": changes,
                "deltas": sum(lay.base is not None for lay in lays), "depth": max(lay.depth for lay in lays)}


def test_tight_and_loose_budgets(source):
    path = _copy(source, "budgets")
    before = check(path, source)
    # tight: every version as fast as it can be (the shortest-path tree: all whole) -> larger
    r = pas(path, "repack", "--budget", "1.0", "--json")
    assert r.returncode == 0, r.stderr
    tight = json.loads(r.stdout)
    assert tight["feasible"]["after"] and tight["tensors"]["encode"] > 0 and tight["verified"] > 0
    after_tight = check(path, source)
    # the change statistics pas diff reads (measured once, by the writer) survive re-encoding
    assert len(before["changes"]) >= VERSIONS - 1 and after_tight["changes"] == before["changes"]
    assert after_tight["whole"] > before["whole"] and after_tight["physical"] > before["physical"]
    assert tight["physical_before"] == before["physical"] and tight["physical_after"] == after_tight["physical"]
    assert tight["gc"]["chunks"] > 0        # the old delta chunks, removed
    # `pas plan` now reports the new layout as "before", evaluated as the repack's plan was
    plan = json.loads(pas(path, "plan", "--budget", "1.0", "--json").stdout)
    assert plan["before"]["feasible"]
    assert plan["before"]["storage"] == pytest.approx(tight["storage"]["after"], rel=1e-9)
    assert all(e["from"] == "v0" for e in plan["before"]["plan"])
    assert plan["before"]["measured_bytes"] <= after_tight["physical"]
    # loose: least storage within delta.max_depth -> smaller than the tight layout, and no
    # larger than what the writer chose (a 7-version chain: unbounded, it would chain 6 deep)
    r = pas(path, "repack", "--budget", "100", "--json")
    assert r.returncode == 0, r.stderr
    loose = json.loads(r.stdout)
    after_loose = check(path, source)
    assert after_loose["physical"] < after_tight["physical"]
    assert after_loose["physical"] <= before["physical"] * 1.01
    assert after_loose["deltas"] > after_tight["deltas"] and loose["depth"]["after"] <= 4
    with Repository.open(path) as repo:
        rg = repo_graph.build(repo, measure=False)
    from pas.archive import budgets_for
    from pas.archive import plan as make_plan
    unbounded = make_plan(rg.graph, "best", budgets_for(rg.graph, "independent", 100.0))
    assert max(rg.depths(unbounded).values()) > 4        # the depth bound is what kept it at 4
    # a rerun with the same budget has (nearly) nothing left to do, and changes no byte of content
    again = repack(Repository.open(path, write=True), alpha=100.0)
    assert again.tensors["encode"] <= 2
    check(path, source)


def test_dry_run_changes_nothing(source):
    path = _copy(source, "dry")
    items = _items(path)
    r = pas(path, "repack", "--budget", "1.0", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["dry_run"] and out["tensors"]["encode"] > 0 and out["physical_after"] is None
    after = _items(path)
    assert after.keys() == items.keys() and all(after[k] == items[k] for k in items)
    assert pas(path, "repack", "--budget", "1.0", "--dry-run").returncode == 0
    assert _items(path) == items


def test_measured_versions_are_planned_against_budget_over_factor(source, monkeypatch):
    """`--measure-versions`: every version's retrieval is timed (a factor per
    version: measured / modelled), and a version the model underestimates is
    planned against its budget divided by its factor; the others keep theirs."""
    path = _copy(source, "measured")
    with Repository.open(path) as repo:
        rg = repo_graph.build(repo, measure=False)
        factors = repo_graph.version_factors(repo, rg, repeats=1)
    assert set(factors) == set(rg.graph.snapshots) and all(f > 0 for f in factors.values())
    # Factors count over the median one: a machine slower than at calibration moves them all alike.
    assert repo_graph.planning_budgets({"a": 10.0, "b": 10.0, "c": 10.0, "d": float("inf")},
                                       {"a": 2.4, "b": 0.6, "c": 1.2, "d": 1.2}) == {
        "a": 5.0, "b": 10.0, "c": 10.0, "d": float("inf")}
    assert repo_graph.planning_budgets({"a": 10.0, "b": 10.0}, {"a": 1.5, "b": 1.5}) == {"a": 10.0, "b": 10.0}
    assert repo_graph.planning_budgets({"a": 11.0, "b": float("inf")}, {}, margin=0.1) == {"a": 10.0, "b": float("inf")}
    with pytest.raises(BadInput, match="margin"):
        repo_graph.planning_budgets({"a": 1.0}, {}, margin=float("nan"))

    with Repository.open(path) as repo:
        plain = repack(repo, alpha=1.6, dry_run=True)
    assert plain.version_factors is None
    # the version the plain plan fills most: say the model underestimates it
    slow = max(plain.recreation, key=lambda s: plain.recreation[s]["after"] / plain.recreation[s]["budget"])
    filled = plain.recreation[slow]["after"] / plain.recreation[slow]["budget"]
    assert filled > 0.7                         # PAS fills budgets: the case this option is for
    factor = min(1.5, 1 / (0.9 * filled))       # budget / factor stays above the version's SPT cost (1 / 1.6)
    monkeypatch.setattr(repo_graph, "version_factors",
                        lambda repo, rg, **k: {s: (factor if s == slow else 1.0) for s in rg.graph.snapshots})
    with Repository.open(path) as repo:
        res = repack(repo, alpha=1.6, dry_run=True, measure_versions=True)
    assert res.version_factors[slow] == factor and res.feasible["after"]
    after, budget = res.recreation[slow]["after"], res.recreation[slow]["budget"]
    assert after <= budget / factor * (1 + 1e-9) < plain.recreation[slow]["after"]
    r = pas(path, "plan", "--budget", "1.6", "--measure-versions", "--json")     # the real measurement, by the CLI
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out["version_factors"]) == set(out["recreation"]) and all(f > 0 for f in out["version_factors"].values())
    r = pas(path, "plan", "--budget", "1.6", "--measure-versions")
    assert r.returncode == 0 and "measured / modelled retrieval" in r.stdout, r.stderr
    assert pas(path, "plan", "--graph", str(path / "none.json"), "--measure-versions").returncode == 4


def test_margin_plans_every_version_under_its_budget(source):
    """`--margin M`: each version planned M under its budget (room for the cost
    model's error); the report keeps the budgets themselves. It costs storage."""
    path = _copy(source, "margin")
    with Repository.open(path) as repo:
        plain = repack(repo, alpha=1.6, dry_run=True)
        res = repack(repo, alpha=1.6, dry_run=True, margin=0.2)
    assert res.margin == 0.2 and res.feasible["after"]
    for s, r in res.recreation.items():
        assert r["budget"] == plain.recreation[s]["budget"]
        assert r["after"] <= r["budget"] / 1.2 * (1 + 1e-9)
    assert res.storage["after"] >= plain.storage["after"]
    out = json.loads(pas(path, "repack", "--budget", "1.6", "--margin", "0.2", "--dry-run", "--json").stdout)
    assert out["margin"] == 0.2


def test_refine_applies_measures_and_plans_again(source, monkeypatch):
    """`--refine`: the plan is applied, every version timed in its new layout,
    then planned and applied again against its budget over its factor there.
    One result: the second pass's layout, the first pass's starting point."""
    path = _copy(source, "refine")
    timed_layouts = []
    real = repo_graph.version_factors

    def factors(repo, rg, **k):
        timed_layouts.append(rg.describe(rg.current))
        return real(repo, rg, repeats=1)
    monkeypatch.setattr(repo_graph, "version_factors", factors)
    with Repository.open(path) as repo:
        plain = repack(repo, alpha=1.6, dry_run=True, margin=0.05)
        rg = repo_graph.build(repo, measure=False)
        original = rg.describe(rg.current)
    assert plain.tensors["encode"] + plain.tensors["depth"] > 0     # the first pass changes the layout
    with Repository.open(path, write=True) as repo:
        res = repack(repo, alpha=1.6, margin=0.05, refine=True)
    assert len(timed_layouts) == 1 and timed_layouts[0] != original   # timed in the first pass's layout
    assert len(res.passes) == 2 and res.passes[0]["version_factors"] is None
    assert res.passes[1]["version_factors"] == res.version_factors and set(res.version_factors) == set(res.recreation)
    assert res.storage["before"] == plain.storage["before"] and res.feasible["after"]
    with Repository.open(path) as repo:   # the store's size before the first pass and after the second
        assert res.physical_before == plain.physical_before and res.physical_after == repo.physical_bytes()
    assert res.passes[0]["storage"]["after"] == pytest.approx(plain.storage["after"])
    for r in res.recreation.values():
        assert r["after"] <= r["budget"] / 1.05 * (1 + 1e-9)
    check(path, source)
    with Repository.open(path) as repo, pytest.raises(BadInput, match="dry run"):
        repack(repo, alpha=1.6, dry_run=True, refine=True)
    out = json.loads(pas(path, "repack", "--budget", "1.6", "--refine", "--json").stdout)
    assert len(out["passes"]) == 2
    check(path, source)


def test_bad_options(source):
    path = _copy(source, "bad")
    cases = (["--budget", "1", "--max-seconds", "1"], ["--budget", "-1"], ["--algorithm", "nope"],
             ["--recreation", "nope"], ["--max-seconds", "nan"])
    items = _items(path)
    for args, r in zip(cases, parallel(*[lambda a=a: pas(path, "repack", *a) for a in cases])):
        assert r.returncode == 4 and r.stderr.startswith("pas: error:"), (args, r.stderr)
    assert _items(path) == items


def test_a_bad_encoding_is_never_committed(source, monkeypatch):
    """Step (b) catches an encoding that does not decode to its content: nothing is written
    but unreferenced chunks (gc's), and the repository reads as before."""
    import pas.archive.repack as rp
    path = _copy(source, "broken")
    items = _items(path)
    real = rp.planes.split

    def flipped(words, *a, **kw):
        out = real(words, *a, **kw)
        if out.shape[1] > 1000:
            out[-1, 7] ^= 1                  # one low bit of one element
        return out
    monkeypatch.setattr(rp.planes, "split", flipped)
    from pas.errors import IntegrityError
    with Repository.open(path, write=True) as repo, pytest.raises(IntegrityError, match="does not decode"):
        repack(repo, alpha=1.0)
    monkeypatch.undo()
    after = _items(path)
    assert {k for k in after if k[:1] != CHUNK} == {k for k in items if k[:1] != CHUNK}
    assert all(after[k] == v for k, v in items.items())
    check(path, source)


def after_crash(path, source) -> None:
    """The invariants after a killed or failed repack: every version bit-exact,
    verify clean (old layout or new, never a mix); a rerun finishes the job."""
    check(path, source)
    with Repository.open(path, write=True) as repo:
        res = repack(repo, alpha=1.0)
    assert res.physical_after is not None
    assert check(path, source)["deltas"] == 0


def test_killed_at_every_repack_point(source):
    points = crash_points(_copy(source, "enumerate"), "repack", "--budget", "1.0")
    named = [p for p in points if p.startswith("repack.")]
    assert named == list(POINTS)
    assert "store.put_many" in points and "store.flush" in points    # chunks went in bulk, then flushed
    paths = [_copy(source, f"kill-{i}") for i in range(len(named))]
    runs = parallel(*[lambda p=p, pt=pt: pas(p, "repack", "--budget", "1.0", PAS_CRASH_AT=pt)
                      for p, pt in zip(paths, named)])
    for path, point, r in zip(paths, named, runs):
        assert r.returncode == -signal.SIGKILL, (point, r.returncode, r.stderr[-500:])
        after_crash(path, source)


def test_failing_at_every_repack_point(source):
    failable = [p for p in POINTS if not p.endswith(".done")]
    paths = [_copy(source, f"fail-{i}") for i in range(len(failable))]
    runs = parallel(*[lambda p=p, pt=pt: pas(p, "repack", "--budget", "1.0", PAS_FAIL_AT=pt)
                      for p, pt in zip(paths, failable)])
    for path, point, r in zip(paths, failable, runs):
        assert r.returncode == 14, (point, r.returncode, r.stderr[-500:])
        assert r.stderr.startswith("pas: error:") and "No space left on device" in r.stderr
        assert "Traceback" not in r.stderr
        after_crash(path, source)
