"""DQL slice and construct (the paper's Q2 and Q3, adapted): new runnable models
whose weights come from the source version, committed with lineage."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dql import DQLSemanticError, run  # noqa: E402
from pas.dlv import model, netdef  # noqa: E402
from pas.repo import Repository  # noqa: E402
from pas.snapshot import Snapshot, Tensor  # noqa: E402

NET = {"nodes": [
    {"id": "conv1", "type": "Conv2d", "params": {"in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": 1}},
    {"id": "pool1", "type": "AvgPool2d", "params": {"kernel_size": 2}},
    {"id": "conv2", "type": "Conv2d", "params": {"in_channels": 4, "out_channels": 8, "kernel_size": 3, "padding": 1}},
    {"id": "relu2", "type": "ReLU", "params": {}},
    {"id": "pool2", "type": "MaxPool2d", "params": {"kernel_size": 2}},
    {"id": "flatten", "type": "Flatten", "params": {}},
    {"id": "drop", "type": "Dropout", "params": {"p": 0.5}},
    {"id": "fc1", "type": "Linear", "params": {"in_features": 32, "out_features": 10}},
]}


@pytest.fixture()
def repo(tmp_path):
    root = tmp_path / "repo"
    Repository.init(root).close()
    r = Repository.open(root, write=True)
    torch.manual_seed(0)
    (tmp_path / "net.json").write_text(json.dumps(NET))
    net = netdef.parse(json.dumps(NET).encode(), "net.json")
    m = netdef.build(net).eval()
    snap = Snapshot()
    for k, v in m.state_dict().items():
        snap.add(Tensor.from_array(k, v.numpy().copy()))
    from pas.formats import write
    write(snap, tmp_path / "w.safetensors", "safetensors")
    (tmp_path / "hp.json").write_text('{"lr": 0.1}')
    model.add(root, [tmp_path / "w.safetensors", tmp_path / "net.json", tmp_path / "hp.json"], model="cnn-avg1")
    src = model.commit(r, root, "source", name="cnn-avg1")["version_id"]
    yield r, src, m
    r.close()


def _weights(r, vid):
    return {e.name: torch.from_numpy(r.read_tensor(e).copy()) for e in r.version(vid).tensors}


def test_q2_slice_runs_like_the_source_up_to_the_cut(repo):
    r, src, source_model = repo
    rows = run(r, '''slice m2 from m1 where m1.name like "cnn-avg%"
                     mutate m2.input = m1["conv2"] and m2.output = m1["pool2"]''')
    assert [row["name"] for row in rows] == ["cnn-avg1-m2"]
    v = r.version(rows[0]["id"])
    assert v.parent.hex() == src                                          # lineage
    mv = model.open_version(r, rows[0]["id"])
    assert [n["id"] for n in mv.network["nodes"] if n["op"] == "module"] == ["conv2", "relu2", "pool2"]
    assert sorted(e.name for e in v.tensors) == ["conv2.bias", "conv2.weight"]
    # weights deduplicated against the source: the same objects
    src_objects = {e.name: e.object for e in r.version(src).tensors}
    assert all(e.object == src_objects[e.name] for e in v.tensors)
    sliced = netdef.build(mv.network).eval()
    netdef.load_weights(sliced, _weights(r, rows[0]["id"]))
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        mid = source_model.pool1(source_model.conv1(x))
        want = source_model.pool2(source_model.relu2(source_model.conv2(mid)))
        got = sliced(mid)
    assert got.numpy().tobytes() == want.numpy().tobytes()
    assert model.open_version(r, rows[0]["id"]).hyperparams == {"lr": 0.1}


def test_q3_construct_inserts_relus_after_convs_followed_by_avg_pools(repo):
    r, src, source_model = repo
    rows = run(r, '''construct m2 from m1 where m1.name like "cnn-avg%" and m1["conv*($1)"].next has POOL("AVG")
                     mutate m1["conv*($1)"].insert = RELU("relu$1")''')
    assert [row["name"] for row in rows] == ["cnn-avg1-m2"]
    mv = model.open_version(r, rows[0]["id"])
    order = [n["id"] for n in mv.network["nodes"] if n["op"] == "module"]
    # only conv1 is followed by an AVG pool: relu1 goes between them, conv2 is left alone
    assert order == ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten", "drop", "fc1"]
    assert ["relu1", "pool1"] in mv.network["edges"] and ["conv1", "pool1"] not in mv.network["edges"]
    built = netdef.build(mv.network).eval()
    netdef.load_weights(built, _weights(r, rows[0]["id"]))
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        s = source_model
        h = s.pool1(torch.relu(s.conv1(x)))
        want = s.fc1(s.drop(s.flatten(s.pool2(s.relu2(s.conv2(h))))))
        got = built(x)
    assert got.numpy().tobytes() == want.numpy().tobytes()


def test_construct_delete_and_errors(repo):
    r, _, _ = repo
    rows = run(r, 'construct m3 from m1 where m1.name = "cnn-avg1" mutate m1["drop"].delete')
    mv = model.open_version(r, rows[0]["id"])
    assert "drop" not in [n["id"] for n in mv.network["nodes"]] and ["flatten", "fc1"] in mv.network["edges"]
    with pytest.raises(DQLSemanticError, match="selects 2 layers"):
        run(r, 'slice m2 from m1 where m1.name = "cnn-avg1" mutate m2.input = m1["conv*"] and m2.output = m1["fc1"]')
    with pytest.raises(DQLSemanticError, match="no path"):
        run(r, 'slice m2 from m1 where m1.name = "cnn-avg1" mutate m2.input = m1["fc1"] and m2.output = m1["conv1"]')
    with pytest.raises(DQLSemanticError, match="without weights"):
        run(r, 'construct m2 from m1 where m1.name = "cnn-avg1" mutate m1["conv1"].insert = CONV("c")')
    with pytest.raises(DQLSemanticError, match="already exists"):
        run(r, 'construct m2 from m1 where m1.name = "cnn-avg1" mutate m1["conv1"].insert = RELU("relu2")')
    with pytest.raises(DQLSemanticError, match="selects no layer"):
        run(r, 'construct m2 from m1 where m1.name = "cnn-avg1" mutate m1["nope*"].delete')
    assert len(r.versions()) == 2   # the failed statements committed nothing


def _data(path, n=300, seed=0):
    """Ten classes of 8x8 images: a fixed pattern per class plus noise."""
    rng = np.random.default_rng(seed)
    patterns = rng.normal(size=(10, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, n)
    x = patterns[y] + 0.5 * rng.normal(size=(n, 1, 8, 8)).astype(np.float32)
    np.savez(path, x=x, y=y)


def test_q4_evaluate_trains_the_grid_and_eliminates_early(repo, tmp_path):
    r, src, _ = repo
    _data(tmp_path / "data.npz")
    (tmp_path / "train.json").write_text(json.dumps({"input_data": "data.npz", "iterations": 12, "log_every": 4,
                                                     "batch_size": 16}))
    # Q4 adapted: the models query3 built (here: the source's construct), a grid of 3 x 2
    named = {"query3": 'select m where m.name = "cnn-avg1"'}
    q = '''evaluate m from "query3" with config = "train.json"
           vary config.base_lr in [0.001, 0.01, 0.1] and config.momentum in [0.0, 0.9]
           keep top(2, m["loss"], 4)'''
    from dql.executor import execute
    res = execute(r, q, named=named, base=tmp_path)
    st = res["stats"]
    assert (st["candidates"], st["survivors"]) == (6, 2)
    assert st["trained_iterations"] == 6 * 4 + 2 * 8 < st["full_grid_iterations"] == 6 * 12
    rows = res["rows"]
    assert [row["name"] for row in rows] == ["cnn-avg1-m-1", "cnn-avg1-m-2"]
    kept = []
    for row in rows:
        mv = model.open_version(r, row["id"])
        assert mv.parent == src and [x["iteration"] for x in mv.log] == [4, 8, 12]
        kept.append((mv.hyperparams["base_lr"], mv.hyperparams["momentum"]))
    # The same grid with everything kept: the two best losses at iteration 4 are the survivors above
    full = execute(r, q.replace("top(2,", "top(6,").replace('"query3"', '"query3b"'),
                   named={"query3b": named["query3"]}, base=tmp_path)
    assert full["stats"]["trained_iterations"] == 6 * 12
    at4 = []
    for row in full["rows"]:
        mv = model.open_version(r, row["id"])
        at4.append((mv.metric("loss", 4), (mv.hyperparams["base_lr"], mv.hyperparams["momentum"])))
    assert sorted(kept) == sorted(cfg for _, cfg in sorted(at4)[:2])


def test_evaluate_auto_and_errors(repo, tmp_path):
    r, _, _ = repo
    _data(tmp_path / "data.npz", n=100)
    (tmp_path / "t.json").write_text(json.dumps({"input_data": "data.npz", "iterations": 2, "log_every": 1}))
    from dql.executor import execute
    res = execute(r, '''evaluate m from m1 with config = "t.json" vary config.base_lr auto
                        and config.net["conv*"].lr in [0.5] keep threshold(m["accuracy"] >= 0, 1)''',
                  base=tmp_path)
    assert res["stats"]["candidates"] == 3 and res["stats"]["survivors"] == 3
    lrs = sorted(model.open_version(r, row["id"]).hyperparams["base_lr"] for row in res["rows"])
    assert lrs == pytest.approx([0.001, 0.01, 0.1])
    assert model.open_version(r, res["rows"][0]["id"]).hyperparams["net"] == {"conv*": {"lr": 0.5}}
    with pytest.raises(DQLSemanticError, match="unknown setting 'colour'"):
        (tmp_path / "bad.json").write_text('{"colour": 1}')
        execute(r, 'evaluate m from m1 with config = "bad.json" keep top(1, m["loss"], 2)', base=tmp_path)
    with pytest.raises(DQLSemanticError, match="input_data"):
        execute(r, 'evaluate m from m1 keep top(1, m["loss"], 2)', base=tmp_path)
    with pytest.raises(DQLSemanticError, match="settings are config"):
        execute(r, 'evaluate m from m1 with config = "t.json" vary config.colour in [1]', base=tmp_path)
    with pytest.raises(DQLSemanticError, match="known metrics"):
        execute(r, 'evaluate m from m1 with config = "t.json" keep top(1, m["f1"], 2)', base=tmp_path)


def test_explain_runs_nothing(repo, tmp_path):
    r, _, _ = repo
    import dql
    _data(tmp_path / "data.npz", n=50)
    (tmp_path / "t.json").write_text(json.dumps({"input_data": "data.npz", "iterations": 10}))
    before = len(r.versions())
    e = dql.explain(r, 'evaluate m from m1 with config = "t.json" vary config.base_lr in [0.1, 0.01] '
                       'keep top(1, m["loss"], 4)', base=tmp_path)
    assert e["matches"] == 1 and e["trains"]["candidates"] == 2 and e["trains"]["full_grid_iterations"] == 20
    assert e["trains"]["at_most_iterations"] == 2 * 4 + 1 * 6
    e = dql.explain(r, 'slice m2 from m1 mutate m2.input = m1["conv2"] and m2.output = m1["fc1"]')
    assert e["commits"] == ["cnn-avg1-m2"] and "no weights" in e["reads"]
    assert dql.explain(r, 'select m where m.name = "x"')["matches"] == 0
    assert len(r.versions()) == before
