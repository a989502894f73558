"""DQL select over a repository of dlv model versions (hand-written networks, no torch)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dql import DQLError, DQLSemanticError, run
from pas.dlv import model
from pas.repo import Repository
from pas.snapshot import Snapshot, Tensor


def _net(pool_after: dict[str, str], extra: list[dict] = ()) -> dict:
    """conv1 -> pool? -> conv2 -> pool? -> conv3 -> flatten -> fc1, pools as given ("MAX"/"AVG")."""
    nodes = []
    for i in (1, 2, 3):
        nodes.append({"id": f"conv{i}", "type": "Conv2d", "params": {"in_channels": 1 if i == 1 else 4,
                                                                    "out_channels": 4, "kernel_size": [3, 3]}})
        if f"conv{i}" in pool_after:
            kind = "MaxPool2d" if pool_after[f"conv{i}"] == "MAX" else "AvgPool2d"
            nodes.append({"id": f"pool{i}", "type": kind, "params": {"kernel_size": 2}})
    nodes += [{"id": "flatten", "type": "Flatten", "params": {}}, *extra,
              {"id": "fc1", "type": "Linear", "params": {"in_features": 16, "out_features": 10}}]
    return {"nodes": nodes}


def _commit(repo, root, tmp, name, net, hp, log, seed, parent=None):
    w = tmp / f"{name}-{seed}.safetensors"
    from pas.formats import write
    snap = Snapshot()
    rng = np.random.default_rng(seed)
    shapes = {"conv1.weight": (4, 1, 3, 3), "conv1.bias": (4,), "conv2.weight": (4, 4, 3, 3), "conv2.bias": (4,),
              "conv3.weight": (4, 4, 3, 3), "conv3.bias": (4,), "fc1.weight": (10, 16), "fc1.bias": (10,)}
    for k, shape in shapes.items():   # what the network's layers hold
        snap.add(Tensor.from_array(k, rng.normal(size=shape).astype(np.float32)))
    write(snap, w, "safetensors")
    (tmp / "net.json").write_text(json.dumps(net))
    (tmp / "hp.json").write_text(json.dumps(hp))
    (tmp / "log.csv").write_text("iteration,loss,accuracy\n" + "".join(f"{i},{l},{a}\n" for i, l, a in log))
    model.add(root, [w, tmp / "net.json", tmp / "hp.json", tmp / "log.csv"], model=name)
    return model.commit(repo, root, f"{name} seed {seed}", name=name, parent=parent)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dql")
    root = tmp / "repo"
    r = Repository.init(root)
    r.close()
    r = Repository.open(root, write=True)
    ids = {}
    ids["cnn_a"] = _commit(r, root, tmp, "cnn_a", _net({"conv1": "MAX", "conv3": "MAX"}), {"lr": 0.1, "opt": {"name": "sgd"}},
                           [(0, 2.0, 0.1), (100, 0.5, 0.9)], 1)["version_id"]
    ids["cnn_b"] = _commit(r, root, tmp, "cnn_b", _net({"conv2": "MAX"}), {"lr": 0.01},
                           [(0, 2.0, 0.1), (100, 0.9, 0.7)], 2)["version_id"]
    ids["cnn-avg"] = _commit(r, root, tmp, "cnn-avg", _net({"conv1": "AVG", "conv2": "AVG"}), {"lr": 0.01},
                             [(0, 2.0, 0.1), (50, 1.0, 0.6)], 3)["version_id"]
    ids["other"] = _commit(r, root, tmp, "other", _net({}, [{"id": "drop", "type": "Dropout", "params": {"p": 0.5}}]),
                           {"lr": 0.001}, [(0, 1.0, 0.5)], 4)["version_id"]
    # a plain pas version, no dlv records: no network, no metadata
    plain = Snapshot()
    plain.add(Tensor.from_array("w", np.zeros(4, np.float32)))
    ids["plain"] = r.archive_snapshot(plain, "plain").version_id
    yield r, ids
    r.close()


def _names(rows):
    return sorted(r["name"] for r in rows)


def test_attributes(repo):
    r, ids = repo
    assert _names(run(r, 'select m where m.name like "cnn_%"')) == ["cnn-avg", "cnn_a", "cnn_b"]   # _: any one
    assert _names(run(r, r'select m where m.name like "cnn\\_%"')) == ["cnn_a", "cnn_b"]   # \_: itself
    assert _names(run(r, 'select m where m.hparams.lr < 0.05')) == ["cnn-avg", "cnn_b", "other"]
    assert _names(run(r, 'select m where m.hparams.opt.name = "sgd"')) == ["cnn_a"]
    assert _names(run(r, 'select m where m.metrics["accuracy"] >= 0.7')) == ["cnn_a", "cnn_b"]
    assert _names(run(r, 'select m where m.metrics["loss"][100] < 1')) == ["cnn_a", "cnn_b"]
    assert _names(run(r, 'select m where m.metrics["loss"][50] = null and m.name like "cnn%"')) == ["cnn_a", "cnn_b"]
    assert _names(run(r, 'select m where m.creation_time > "2000-01-01" and not m.name like "cnn%"')) \
        == ["other", "plain"]
    assert _names(run(r, 'select m where m.creation_time < "2000-01-01"')) == []
    assert _names(run(r, 'select m where m.layers = null')) == ["plain"]
    assert _names(run(r, 'select m where m.head = true and m.name like "c%"')) == ["cnn-avg", "cnn_a", "cnn_b"]
    row = run(r, f'select m where m.id = "{ids["other"]}"')
    assert row == [{"name": "other", "id": ids["other"], "time": row[0]["time"], "message": "other seed 4"}]
    assert _names(run(r, 'select m where m.tensors = 8 or m.parameters = 4')) == ["cnn-avg", "cnn_a", "cnn_b",
                                                                                 "other", "plain"]


def test_graph_conditions(repo):
    r, _ = repo
    # Q1 adapted: some conv among 1, 3 followed by a max pool
    assert _names(run(r, 'select m1 where m1.name like "cnn%" and m1["conv[1,3]"].next has POOL("MAX")')) \
        == ["cnn_a"]
    assert _names(run(r, 'select m where m["conv*"].next has POOL("MAX")')) == ["cnn_a", "cnn_b"]
    assert _names(run(r, 'select m where m["conv*"].next has POOL()')) == ["cnn-avg", "cnn_a", "cnn_b"]
    assert _names(run(r, 'select m where m["conv?"].next has POOL("AVG")')) == ["cnn-avg"]
    assert _names(run(r, 'select m where m["pool*"].prev has CONV(kernel_size=3)')) == ["cnn-avg", "cnn_a", "cnn_b"]
    assert _names(run(r, 'select m where m["flatten"].next has DROPOUT()')) == ["other"]
    assert _names(run(r, 'select m where m["*"] has LINEAR(out_features=10) and not m["*"] has POOL()')) == ["other"]
    # captures carry across an and: the pool after conv$1 is pool$1
    assert _names(run(r, 'select m where m["conv*($1)"].next has POOL("MAX") and m["pool$1"] has POOL("MAX")')) \
        == ["cnn_a", "cnn_b"]
    assert _names(run(r, 'select m where m["conv*($1)"].next has POOL("AVG") and m["pool$1"].next has CONV()')) \
        == ["cnn-avg"]
    assert _names(run(r, 'select m where m["conv*($1)"] has CONV() and m["pool$1"].next has LINEAR()')) == []


def test_nested_and_named(repo):
    r, _ = repo
    inner = 'select m where m.name like "cnn%"'
    assert _names(run(r, f'select m from ({inner}) where m.hparams.lr = 0.01')) == ["cnn-avg", "cnn_b"]
    assert _names(run(r, 'select m from "cnns" where m.metrics["accuracy"] > 0.8', named={"cnns": inner})) == ["cnn_a"]
    with pytest.raises(DQLSemanticError, match="no saved query named 'nope'"):
        run(r, 'select m from "nope"')
    with pytest.raises(DQLSemanticError, match="refers to itself"):
        run(r, 'select m from "loop"', named={"loop": 'select m from "loop"'})


def test_semantic_errors(repo):
    r, _ = repo
    with pytest.raises(DQLSemanticError, match="unknown attribute m.colour"):
        run(r, 'select m where m.colour = "red"')
    with pytest.raises(DQLSemanticError, match="unknown layer type BLAH"):
        run(r, 'select m where m["conv1"] has BLAH()')
    with pytest.raises(DQLSemanticError, match="cannot order"):
        run(r, 'select m where m.name > 3')
    with pytest.raises(DQLSemanticError, match='"MAX" or "AVG"'):
        run(r, 'select m where m["conv*"].next has POOL("MIN")')
    with pytest.raises(DQLSemanticError, match="iteration is an integer"):
        run(r, 'select m where m.metrics["loss"]["x"] > 1')
    n = len(r.versions())
    with pytest.raises(DQLSemanticError, match="plain@.* has no network definition to slice"):
        run(r, 'slice m2 from m1 mutate m2.input = m1["conv1"] and m2.output = m1["fc1"]')
    assert len(r.versions()) == n   # nothing committed for the versions that had a network
    with pytest.raises(DQLError, match="settings are config"):
        run(r, 'evaluate m from m1 vary config.lr in [0.1] keep top(1, m["loss"], 10)')
