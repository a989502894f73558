"""Metadata parsing, diff statistics and read counts, staging and commit errors, transfer (issue 8)."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from pas.dlv import metadata as md
from pas.dlv import model
from pas.delta.change import tensor_stats
from pas.dlv.diff import diff
from pas.errors import BadInput, BadName, NotFound
from pas.repo import Repository
from pas.snapshot import Snapshot, Tensor
from pas.transfer import copy_versions


# ------------------------------------------------------------------- metadata
def test_csv_log_ours_and_aliases():
    log = md.parse_log(b"iter,train_loss,acc,learning_rate,run\n0,2.5,0.1,0.1,a\n1,nan,0.2,0.1,a\n2,1.0,,0.05,a\n",
                       "log.csv")
    assert [r["iteration"] for r in log] == [0, 1, 2]
    assert math.isnan(log[1]["loss"]) and "accuracy" not in log[2] and "run" not in log[0]
    assert md.value_at(log, "accuracy") == 0.2                      # last iteration that has it
    assert md.value_at(log, "lr", iteration=2) == 0.05
    assert md.series(log, "loss")[2] == (2, 1.0)
    with pytest.raises(NotFound, match="no metric 'f1'"):
        md.value_at(log, "f1")
    with pytest.raises(NotFound, match="iteration 7"):
        md.value_at(log, "loss", 7)
    # Stored as strict JSON lines (NaN as a string) and read back the same.
    stored = md.encode_log(log)
    assert b"NaN" not in stored and b'"nan"' in stored
    back = md.decode_log(stored)
    assert json.dumps(md.json_safe(back), sort_keys=True) == json.dumps(md.json_safe(log), sort_keys=True)


def test_lightning_metrics_csv_rows_are_merged_by_step():
    text = (b"epoch,step,train_loss,val_loss,val_acc,lr-SGD\n"
            b"0,49,0.9,,,0.1\n0,49,,0.8,0.7,\n1,99,0.5,,,0.05\n1,99,,0.45,0.85,\n")
    log = md.parse_log(text, "metrics.csv")
    assert log == [{"iteration": 49, "epoch": 0.0, "loss": 0.9, "lr": 0.1, "val_loss": 0.8, "val_acc": 0.7},
                   {"iteration": 99, "epoch": 1.0, "loss": 0.5, "lr": 0.05, "val_loss": 0.45, "val_acc": 0.85}]


def test_tensorboard_export_and_jsonl():
    tb = md.parse_log(b"Wall time,Step,Value\n1700000000.5,10,0.5\n1700000001.5,20,0.25\n", "accuracy.csv")
    assert tb == [{"iteration": 10, "accuracy": 0.5}, {"iteration": 20, "accuracy": 0.25}]
    jl = md.parse_log(b'{"step": 3, "loss": 1.5}\n\n{"step": 1, "loss": "inf", "lr": 0.1}\n', "run.jsonl")
    assert [r["iteration"] for r in jl] == [1, 3] and jl[0]["loss"] == math.inf


@pytest.mark.parametrize("data, name, match", [
    (b"loss\n1.0\n", "l.csv", "no iteration"),
    (b"iteration,loss\n-1,1.0\n", "l.csv", "bad iteration"),
    (b"iteration,loss\n1.5,1.0\n", "l.csv", "bad iteration"),
    (b'{"iteration": 1}\n{oops\n', "l.jsonl", "line 2"),
    (b"", "l.csv", "no header"),
    (b"iteration\n", "l.csv", "no records"),
    (b"\xff\xfe", "l.csv", "UTF-8"),
    (b"x", "l.parquet", "unknown training log format"),
])
def test_bad_logs(data, name, match):
    with pytest.raises(BadInput, match=match):
        md.parse_log(data, name)


def test_hyperparams_json_and_yaml():
    assert md.parse_hyperparams(b'{"lr": 0.1, "opt": {"name": "sgd"}}', "c.json") == {"lr": 0.1, "opt": {"name": "sgd"}}
    pytest.importorskip("yaml")
    hp = md.parse_hyperparams(b"lr: 1e-3\nwhen: 2026-01-02\nlayers: [1, 2]\nbad: .nan\nname: '1e5x'\n", "c.yaml")
    assert hp == {"lr": 1e-3, "when": "2026-01-02", "layers": [1, 2], "bad": "nan", "name": "1e5x"}
    for data, name in ((b"[1, 2]", "c.json"), (b"- a\n", "c.yaml"), (b"{nope", "c.json"), (b"a: [", "c.yaml")):
        with pytest.raises(BadInput):
            md.parse_hyperparams(data, name)


# -------------------------------------------------------------- diff statistics
@pytest.fixture(params=["numba", "numpy"])
def stats_kernel(request, monkeypatch):
    """The statistics tests run on both kernels (Numba, and numpy for processes
    that have not loaded Numba)."""
    import pas.delta.change as change
    if request.param == "numba":
        from pas.delta._change_kernel import sums
        monkeypatch.setattr(change, "_kernel", lambda n: sums)
    else:
        monkeypatch.setattr(change, "_kernel", lambda n: change.numpy_sums)
    return request.param


def _stats(a, b, dtype="F32"):
    return tensor_stats(np.asarray(a), np.asarray(b), dtype)


def test_numpy_and_numba_stats_agree_on_hostile_values():
    """Random tensors with NaN, inf, signed zeros and huge values, slabs crossed."""
    import pas.delta.change as change
    from pas.delta._change_kernel import sums
    rng = np.random.default_rng(7)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 3e38, -3e38, 1e-45], np.float32)
    for case in range(60):
        n = int(rng.integers(1, 3000)) if case else change.SLAB + 5
        a = rng.normal(0, 1, n).astype(np.float32)
        b = a + rng.normal(0, 1e-3, n).astype(np.float32) * (rng.random(n) < 0.5)
        for arr, count in ((b, 20), (a, 5)):
            idx = rng.integers(0, n, int(rng.integers(0, count)))
            arr[idx] = rng.choice(specials, len(idx))
        got = change.numpy_sums(a, b, a.view(np.uint32), b.view(np.uint32))
        want = sums(a, b, a.view(np.uint32), b.view(np.uint32))
        assert got[:2] == tuple(want[:2]), case
        for g, w in zip(got[2:], want[2:]):
            assert g == w or g == pytest.approx(w, rel=1e-9), (case, got, want)


def test_stats_are_bitwise_about_nan_and_signed_zero(stats_kernel):
    nan = np.float32("nan")
    s = _stats(np.array([1.0, nan, 0.0, 2.0], np.float32), np.array([1.0, nan, -0.0, 2.0], np.float32))
    # The NaN is the same bit pattern: unchanged. -0.0 is another bit pattern: changed, by 0 in value.
    assert (s["changed_elements"], s["changed_fraction"], s["max_abs"], s["rel_l2"], s["nonfinite_changed"]) == \
        (1, 0.25, 0.0, 0.0, 0)
    other_nan = np.array([0x7FC00001], np.uint32).view(np.float32)[0]
    s = _stats(np.array([nan, 3.0], np.float32), np.array([other_nan, 4.0], np.float32))
    assert s["changed_elements"] == 2 and s["nonfinite_changed"] == 1
    assert s["max_abs"] == 1.0 and s["rel_l2"] == pytest.approx(1 / 3)   # over the finite pair only
    s = _stats(np.array([1.0, 1.0], np.float32), np.array([np.inf, 1.0], np.float32))
    assert s["nonfinite_changed"] == 1 and s["max_abs"] == 0.0


def test_stats_values(stats_kernel):
    rng = np.random.default_rng(0)
    a = rng.standard_normal(10_000).astype(np.float32)
    b = a.copy()
    b[::4] += np.float32(0.5)
    s = _stats(a, b)
    d = b.astype(np.float64) - a.astype(np.float64)
    assert s["changed_elements"] == 2500 and s["changed_fraction"] == 0.25
    assert s["max_abs"] == float(np.abs(d).max())
    assert s["rel_l2"] == pytest.approx(np.linalg.norm(d) / np.linalg.norm(a.astype(np.float64)), rel=1e-12)
    zero = _stats(np.zeros(3, np.float32), np.array([0, 1, 0], np.float32))
    assert zero["rel_l2"] is None and zero["max_abs"] == 1.0       # relative to a zero tensor: undefined
    same = _stats(a, a.copy())
    assert (same["changed_elements"], same["rel_l2"], same["max_abs"]) == (0, 0.0, 0.0)


def test_stats_bf16_f8_and_integers(stats_kernel):
    a = np.array([0x3F80, 0x4000], np.uint16)            # BF16 1.0, 2.0 (bit views)
    b = np.array([0x3F80, 0x4040], np.uint16)            # 1.0, 3.0
    s = tensor_stats(a, b, "BF16")
    assert s["changed_elements"] == 1 and s["max_abs"] == 1.0
    f8 = tensor_stats(np.array([0x38], np.uint8), np.array([0x40], np.uint8), "F8_E4M3")   # 1.0 -> 2.0
    assert f8["max_abs"] == 1.0
    assert tensor_stats(np.array([0x7C], np.uint8), np.array([0x7C], np.uint8), "F8_E5M2")["changed_elements"] == 0
    ints = tensor_stats(np.array([1, 5], np.int64), np.array([1, -5], np.int64), "I64")
    assert ints["max_abs"] == 10.0 and ints["changed_elements"] == 1
    with pytest.raises(BadInput):
        tensor_stats(np.zeros(2, np.float32), np.zeros(3, np.float32), "F32")


def _snap(tensors: dict[str, np.ndarray], files=None) -> Snapshot:
    s = Snapshot(files=dict(files or {}))
    for k, v in tensors.items():
        s.add(Tensor.from_array(k, v))
    return s


def _two_versions(repo):
    rng = np.random.default_rng(1)
    base = {f"layer{i}.weight": rng.standard_normal((64, 64)).astype(np.float32) for i in range(12)}
    va = repo.archive_snapshot(_snap(base), "m", message="a").version_id
    new = dict(base)
    new["layer3.weight"] = base["layer3.weight"] * np.float32(1.01)
    new["layer7.weight"] = base["layer7.weight"].copy()
    new["layer7.weight"][0, 0] = -new["layer7.weight"][0, 0]
    del new["layer11.weight"]
    new["extra.bias"] = np.zeros(4, np.float32)
    vb = repo.archive_snapshot(_snap(new), "m", message="b").version_id
    return base, va, vb


def _counting_reads(monkeypatch) -> list[str]:
    reads = []
    real = Repository.read_tensor
    monkeypatch.setattr(Repository, "read_tensor", lambda self, e, **kw: reads.append(e.name) or real(self, e, **kw))
    return reads


def test_diff_reads_only_differing_tensors(monkeypatch):
    """Without recorded changes (a pair that is not a version and its parent),
    only the tensors whose addresses differ are read."""
    import pas.dlv.diff as diff_mod
    repo = Repository.in_memory()
    base, va, vb = _two_versions(repo)
    monkeypatch.setattr(diff_mod, "_recorded", lambda *a: None)
    reads = _counting_reads(monkeypatch)
    d = diff(repo, va, vb)
    assert sorted(reads) == ["layer3.weight", "layer3.weight", "layer7.weight", "layer7.weight"]
    assert d["tensors_read"] == 4 and d["tensors_total"] == 24
    _check_two_versions(d, base)


def _check_two_versions(d, base):
    assert d["added"] == ["extra.bias"] and d["removed"] == ["layer11.weight"] and d["unchanged"] == 9
    by = {c["name"]: c for c in d["changed"]}
    assert by["layer7.weight"]["changed_elements"] == 1
    assert by["layer7.weight"]["max_abs"] == 2 * abs(float(base["layer7.weight"][0, 0]))
    assert by["layer3.weight"]["rel_l2"] == pytest.approx(0.01, rel=1e-5)


def _same_stats(got: dict, want: dict) -> None:
    """Counts exactly; sums to float64 rounding (the writer may add a big tensor's slabs up separately)."""
    assert got.keys() == want.keys()
    for k in got:
        if isinstance(want[k], float):
            assert got[k] == pytest.approx(want[k], rel=1e-12, abs=0.0), k
        else:
            assert got[k] == want[k], k


def test_diff_of_a_version_and_its_parent_reads_no_tensor(monkeypatch):
    """The writer records each tensor's change from its parent's same-named one:
    diffing the pair, either way round, reads records only, and says what
    measuring the tensors says."""
    import pas.dlv.diff as diff_mod
    repo = Repository.in_memory()
    base, va, vb = _two_versions(repo)
    for first, second in ((va, vb), (vb, va)):
        reads = _counting_reads(monkeypatch)
        d = diff(repo, first, second)
        assert reads == [] and d["tensors_read"] == 0
        with monkeypatch.context() as m:
            m.setattr(diff_mod, "_recorded", lambda *a: None)
            measured = diff(repo, first, second)
        assert [c["name"] for c in d["changed"]] == [c["name"] for c in measured["changed"]]
        for got, want in zip(d["changed"], measured["changed"]):
            _same_stats(got, want)
    _check_two_versions(diff(repo, va, vb), base)


def test_recorded_changes_name_their_base_and_stay_exact_only():
    """A record's change names the tensor it was measured from: a diff against
    any other tensor measures; lossy tensors record none (their stored words
    are not their values)."""
    from pas.delta.change import Change
    repo = Repository.in_memory()
    base, va, vb = _two_versions(repo)
    v2 = dict(base)
    v2["layer3.weight"] = base["layer3.weight"] * np.float32(1.02)
    vc = repo.archive_snapshot(_snap(v2), "m", message="c").version_id
    entry = {e.name: e for e in repo.version(vc).tensors}["layer3.weight"]
    lay = repo.reader.parse(entry.object)
    vs, _ = Change.from_record(lay.rec["change"], lay.n)
    assert vs == {e.name: e for e in repo.version(vb).tensors}["layer3.weight"].object
    d = diff(repo, va, vc)     # not a parent pair: layer3 is measured, and agrees with the data
    by = {c["name"]: c for c in d["changed"]}
    assert d["tensors_read"] >= 2
    assert by["layer3.weight"]["rel_l2"] == pytest.approx(0.02, rel=1e-4)
    lossy = dict(v2, **{"layer3.weight": base["layer3.weight"] * np.float32(1.03)})
    vl = repo.archive_snapshot(_snap(lossy), "m", message="lossy", scheme="bf16").version_id
    entries = repo.version(vl).tensors
    assert any(e.lossy is not None for e in entries)
    for e in entries:
        assert "change" not in repo.reader.parse(e.object).rec or e.lossy is None
    assert Change.from_record({"vs": "zz"}, 4) is None and Change.from_record({**lay.rec["change"], "changed": -1}, 4) is None


# ----------------------------------------------------------- staging and commit
@pytest.fixture
def repo_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Repository.init(tmp_path / "r").close()
    np.savez(tmp_path / "w.npz", **{"fc.weight": np.ones((4, 4), np.float32), "fc.bias": np.zeros(4, np.float32)})
    return tmp_path


def _state(path):
    with Repository.open(path / "r") as r:
        return sorted(v.hex for v in r.versions()), r.refs()


def test_commit_errors_change_nothing(repo_dir):
    root = repo_dir / "r" / ".pas"
    before = _state(repo_dir)
    with Repository.open(repo_dir / "r", write=True) as r:
        with pytest.raises(BadInput, match="which model"):
            model.commit(r, root, "m")
        model.add(root, [], model="net")
        with pytest.raises(BadInput, match="nothing staged"):
            model.commit(r, root, "m")
    with pytest.raises(NotFound):
        model.add(root, [repo_dir / "missing.pt"])
    (repo_dir / "bad.csv").write_text("loss\n1\n")
    stage_before = (root / model.STAGE_FILE).read_bytes()
    with pytest.raises(BadInput, match="no iteration"):
        model.add(root, [repo_dir / "bad.csv"])
    assert (root / model.STAGE_FILE).read_bytes() == stage_before     # nothing staged on a bad file
    with pytest.raises(BadName):
        model.add(root, [], model="../evil")
    (repo_dir / "notes.txt").write_text("x")
    with pytest.raises(BadInput, match="reserved"):
        model.add(root, [repo_dir / "notes.txt"], store_as=".dlv/network.json")
    model.add(root, [repo_dir / "w.npz", repo_dir / "notes.txt"])
    (repo_dir / "notes.txt").write_text("changed after add")
    os.utime(repo_dir / "notes.txt", ns=(1, 1))
    with Repository.open(repo_dir / "r", write=True) as r:
        with pytest.raises(BadInput, match="changed since it was added"):
            model.commit(r, root, "m")
    assert _state(repo_dir) == before


def test_commit_inherits_and_copy_dedups(repo_dir):
    root = repo_dir / "r" / ".pas"
    (repo_dir / "hp.json").write_text('{"lr": 0.1}')
    (repo_dir / "log.csv").write_text("iteration,loss\n0,1.0\n1,0.5\n")
    (repo_dir / "readme.md").write_text("about")
    model.add(root, [repo_dir / "w.npz", repo_dir / "hp.json", repo_dir / "log.csv", repo_dir / "readme.md"],
              model="net")
    with Repository.open(repo_dir / "r", write=True) as r:
        c1 = model.commit(r, root, "first")
        mv = model.open_version(r, "net")
        assert mv.hyperparams == {"lr": 0.1} and mv.metric("loss") == 0.5 and mv.metric("loss", 0) == 1.0
        assert [f.name for f in mv.files] == ["readme.md"] and mv.network is None
        # A commit of new hyper-parameters only: weights and files come from the parent.
        (repo_dir / "hp2.json").write_text('{"lr": 0.01}')
        model.add(root, [repo_dir / "hp2.json"])
        c2 = model.commit(r, root, "lower lr")
        assert c2["parent"] == c1["version_id"] and c2["physical_added"] < 2048
        mv2 = model.open_version(r, "net")
        assert mv2.hyperparams == {"lr": 0.01} and mv2.log == [] and [f.name for f in mv2.files] == ["readme.md"]
        assert model.metric(r, c1["version_id"], "loss") == 0.5
        with pytest.raises(NotFound):
            mv2.metric("loss")
        cp = model.copy(r, "net", "net2")
        assert cp["parent"] == c2["version_id"] and cp["chunks_written"] == 0
        with pytest.raises(BadInput, match="already exists"):
            model.copy(r, "net", "net2")
        t = model.tree(r)
        assert [m["name"] for m in t["models"]] == ["net", "net2"]
        assert t["tree"][0]["children"][0]["children"][0]["name"] == "net2"
        assert [x["name"] for x in model.search(r, "LR")] == ["net", "net", "net2"]
        assert model.describe(r, "net2")["kind"] == "copy"


# --------------------------------------------------------------------- transfer
def test_transfer_copies_only_missing_objects_and_refs_move_forward(tmp_path):
    rng = np.random.default_rng(2)
    w = {"a": rng.standard_normal((1024, 512)).astype(np.float32), "b": rng.standard_normal(64).astype(np.float32)}
    src = Repository.init(tmp_path / "src")
    dst = Repository.init(tmp_path / "dst")
    v1 = src.archive_snapshot(_snap(w, {"cfg.json": b"{}"}), "m").version_id
    w2 = dict(w, b=w["b"] + 1)
    v2 = src.archive_snapshot(_snap(w2, {"cfg.json": b"{}"}), "m").version_id
    r1 = copy_versions(src, dst, [bytes.fromhex(v1)], {"m": bytes.fromhex(v1)})
    assert r1.versions == [v1] and r1.chunks > 0
    r2 = copy_versions(src, dst, [bytes.fromhex(v2)], {"m": bytes.fromhex(v2)})
    assert r2.versions == [v2] and r2.chunks == 0 and r2.records_present >= 2   # "a" and the file were there
    assert dst.refs() == {"m": v2} and dst.verify().ok
    assert dst.retrieve("m").tensors["b"].data.tobytes() == w2["b"].tobytes()
    # A diverged destination ref is not moved back without force, and nothing is written.
    v3 = src.archive_snapshot(_snap({"c": np.ones(3, np.float32)}), "other").version_id
    dst.set_ref("other", bytes.fromhex(v2))
    before = sorted(v.hex for v in dst.versions())
    with pytest.raises(BadInput, match="not an ancestor"):
        copy_versions(src, dst, [bytes.fromhex(v3)], {"other": bytes.fromhex(v3)})
    assert sorted(v.hex for v in dst.versions()) == before and dst.refs()["other"] == v2
    copy_versions(src, dst, [bytes.fromhex(v3)], {"other": bytes.fromhex(v3)}, force=True)
    assert dst.refs()["other"] == v3 and dst.verify().ok
    with pytest.raises(BadInput, match="same repository"):
        copy_versions(src, src, [bytes.fromhex(v1)])
    src.close()
    dst.close()


def test_commit_refuses_a_network_that_disagrees_with_the_weights(repo_dir):
    pytest.importorskip("torch")
    root = repo_dir / "r" / ".pas"
    before = _state(repo_dir)
    net = {"nodes": [{"id": "fc", "type": "Linear", "params": {"in_features": 4, "out_features": 3}}]}
    (repo_dir / "net.json").write_text(json.dumps(net))
    model.add(root, [repo_dir / "w.npz", repo_dir / "net.json"], model="m")
    with Repository.open(repo_dir / "r", write=True) as r:
        with pytest.raises(BadInput, match=r"'fc.weight' is \(4, 4\) in the weights, \(3, 4\) in the network"):
            model.commit(r, root, "x")
    assert _state(repo_dir) == before
    net["nodes"][0]["params"]["out_features"] = 4
    (repo_dir / "net.json").write_text(json.dumps(net))
    model.add(root, [repo_dir / "net.json"])
    with Repository.open(repo_dir / "r", write=True) as r:
        model.commit(r, root, "x")
        mv = model.open_version(r, "m")
        assert [n["type"] for n in mv.network["nodes"]] == ["Input", "Linear", "Output"]
        layer = model.describe(r, "m")["layers"][0]
        assert (layer["id"], layer["count"]) == ("fc", 20)


def test_transfer_interrupted_before_the_manifests_leaves_a_clean_destination(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    w = {"a": rng.standard_normal((1024, 512)).astype(np.float32), "b": rng.standard_normal(8).astype(np.float32)}
    src = Repository.init(tmp_path / "src")
    v1 = src.archive_snapshot(_snap(w), "m").version_id
    v2 = src.archive_snapshot(_snap(dict(w, a=w["a"] * np.float32(1.001))), "m").version_id
    dst = Repository.init(tmp_path / "dst")
    real_write = type(dst.store).write

    def failing(self, puts=(), deletes=(), sync=False):
        puts = list(puts)
        if any(k[:1] == b"v" for k, _ in puts):
            raise OSError(28, "No space left on device")   # the manifests' batch fails
        return real_write(self, puts, deletes, sync)
    monkeypatch.setattr(type(dst.store), "write", failing)
    with pytest.raises(OSError):
        copy_versions(src, dst, [bytes.fromhex(v2)], {"m": bytes.fromhex(v2)})
    monkeypatch.setattr(type(dst.store), "write", real_write)
    assert dst.versions() == [] and dst.refs() == {}
    rep = dst.verify()
    assert rep.ok, rep.errors                      # orphans only: every record whole
    assert dst.gc(force=True).tensors >= 2         # ... which gc removes
    again = copy_versions(src, dst, [bytes.fromhex(v2)], {"m": bytes.fromhex(v2)})
    assert sorted(again.versions) == sorted([v1, v2]) and dst.verify().ok
    assert dst.retrieve(v2).tensors["a"].data.tobytes() == (w["a"] * np.float32(1.001)).tobytes()
    src.close()
    dst.close()


def test_reset_unstages_and_list_filters_by_message(repo_dir):
    root = repo_dir / "r" / ".pas"
    (repo_dir / "notes.txt").write_text("x")
    (repo_dir / "hp.json").write_text('{"lr": 1}')
    model.add(root, [repo_dir / "w.npz", repo_dir / "notes.txt", repo_dir / "hp.json"], model="m")
    with pytest.raises(NotFound, match="not staged"):
        model.reset(root, ["other.txt"])
    stage, removed = model.reset(root, ["notes.txt"])            # by stored name
    assert [e["kind"] for e in removed] == ["file"] and {e["kind"] for e in stage.entries} == {"weights", "config"}
    stage, removed = model.reset(root, [str(repo_dir / "hp.json")])   # by path
    assert [e["kind"] for e in stage.entries] == ["weights"] and stage.model == "m"
    with Repository.open(repo_dir / "r", write=True) as r:
        model.commit(r, root, "Baseline run")
        model.add(root, [repo_dir / "hp.json"])
        model.commit(r, root, "tune lr")
        assert [f.name for f in model.open_version(r, "m").files] == []
        t = model.tree(r, message="BASELINE")
        assert [n["message"] for n in t["tree"]] == ["Baseline run"] and t["tree"][0]["children"] == []
        t = model.tree(r, message="lr")
        assert t["tree"][0]["message"] == "tune lr" and t["tree"][0]["base"]["name"] == "m"
    assert model.reset(root)[0].entries == []
