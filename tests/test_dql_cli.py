"""The paper's four DQL queries (adapted to our layer names), end to end through
`pas query`, on small CNNs trained on sklearn's digits and committed with `pas commit`."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from typer.testing import CliRunner  # noqa: E402

from pas.cli import app  # noqa: E402
from pas.dlv import model, netdef  # noqa: E402
from pas.repo import Repository  # noqa: E402

runner = CliRunner()


def _net(pool1: str) -> dict:
    return {"nodes": [
        {"id": "conv1", "type": "Conv2d", "params": {"in_channels": 1, "out_channels": 6, "kernel_size": 3,
                                                     "padding": 1}},
        {"id": "pool1", "type": pool1, "params": {"kernel_size": 2}},
        {"id": "conv2", "type": "Conv2d", "params": {"in_channels": 6, "out_channels": 8, "kernel_size": 3,
                                                     "padding": 1}},
        {"id": "pool2", "type": "MaxPool2d", "params": {"kernel_size": 2}},
        {"id": "flatten", "type": "Flatten", "params": {}},
        {"id": "fc1", "type": "Linear", "params": {"in_features": 32, "out_features": 10}}]}


def _digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    return (d.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8), d.target.astype(np.int64)


def pas(*args):
    res = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    pytest.importorskip("sklearn")
    tmp = tmp_path_factory.mktemp("q")
    x, y = _digits()
    np.savez(tmp / "digits.npz", x=x[:600], y=y[:600])
    root = tmp / "repo"
    pas("init", root)
    for name, pool1, seed in (("cnn-origin", "MaxPool2d", 0), ("cnn-avgv1", "AvgPool2d", 1)):
        net = _net(pool1)
        (tmp / f"{name}.json").write_text(json.dumps(net))
        torch.manual_seed(seed)
        m = netdef.build(netdef.parse(json.dumps(net).encode(), "net.json"))
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        rows = []
        for it in range(30):
            idx = torch.randint(0, 1000, (64,))
            loss = torch.nn.functional.cross_entropy(m(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            rows.append(f"{it},{loss.item()}\n")
        (tmp / f"{name}.csv").write_text("iteration,loss\n" + "".join(rows))
        (tmp / f"{name}.hp.json").write_text('{"base_lr": 0.1}')
        from pas.formats import write
        from pas.snapshot import Snapshot, Tensor
        snap = Snapshot()
        for k, v in m.state_dict().items():
            snap.add(Tensor.from_array(k, v.detach().numpy().copy()))
        write(snap, tmp / f"{name}.safetensors", "safetensors")
        pas("-R", root, "add", tmp / f"{name}.safetensors", tmp / f"{name}.json", tmp / f"{name}.hp.json",
            tmp / f"{name}.csv", "--name", name)
        pas("-R", root, "commit", "-m", f"trained {name}")
    return root, tmp


def q(root, *args):
    return json.loads(pas("-R", root, "query", *args, "--json"))


def test_q1_select(repo):
    root, _ = repo
    rows = q(root, 'select m1 where m1.name like "cnn%" and m1.creation_time > "2020-01-01" '
                   'and m1["conv[1,3,5]"].next has POOL("MAX")')
    assert [r["name"] for r in rows] == ["cnn-origin"]
    rows = q(root, 'select m where m["conv*"].next has POOL("MAX") and m.metrics["loss"][29] < 10')
    assert sorted(r["name"] for r in rows) == ["cnn-avgv1", "cnn-origin"]   # conv2 -> max pool in both


def test_q2_slice(repo):
    root, _ = repo
    rows = q(root, 'slice m2 from m1 where m1.name like "cnn-origin%" '
                   'mutate m2.input = m1["conv1"] and m2.output = m1["pool2"]')
    assert [r["name"] for r in rows] == ["cnn-origin-m2"]
    with Repository.open(root) as r:
        mv = model.open_version(r, rows[0]["id"])
        assert [n["id"] for n in mv.network["nodes"] if n["op"] == "module"] == ["conv1", "pool1", "conv2", "pool2"]
        assert sorted(e.name for e in mv.tensors) == ["conv1.bias", "conv1.weight", "conv2.bias", "conv2.weight"]


def test_q3_construct_and_q4_evaluate(repo):
    root, tmp = repo
    q3 = ('construct m2 from m1 where m1.name like "cnn-avgv1%" and m1["conv*($1)"].next has POOL("AVG") '
          'mutate m1["conv*($1)"].insert = RELU("relu$1")')
    rows = q(root, q3)
    with Repository.open(root) as r:
        net = model.open_version(r, rows[0]["id"]).network
        assert [n["id"] for n in net["nodes"] if n["op"] == "module"] == \
            ["conv1", "relu1", "pool1", "conv2", "pool2", "flatten", "fc1"]
    assert q(root, "--save", "query3", q3) == {"saved": "query3"}
    (tmp / "train.json").write_text(json.dumps({"input_data": str(tmp / "digits.npz"), "iterations": 20,
                                                "log_every": 5, "batch_size": 32}))
    q4 = (f'evaluate m from "query3" with config = "{tmp / "train.json"}" '
          'vary config.base_lr in [0.1, 0.01, 0.001] and config.net["conv*"].lr auto '
          'keep top(2, m["loss"], 5)')
    plan = q(root, "--explain", q4)
    assert plan["trains"]["candidates"] == 9 and plan["trains"]["full_grid_iterations"] == 180
    rows = q(root, q4)
    st = rows[0]["evaluate"]
    assert (st["candidates"], st["survivors"]) == (9, 2)
    assert st["trained_iterations"] == 9 * 5 + 2 * 15 == plan["trains"]["at_most_iterations"] < 180
    assert [r["name"] for r in rows] == ["cnn-avgv1-m2-m-1", "cnn-avgv1-m2-m-2"]
    with Repository.open(root) as r:
        for row in rows:
            mv = model.open_version(r, row["id"])
            assert [x["iteration"] for x in mv.log] == [5, 10, 15, 20]
            assert mv.hyperparams["net"]["conv*"]["lr"] in (0.1, 1.0, 10.0)
        assert r.verify().ok


def _fails(capsys, monkeypatch, *args) -> tuple[int, str]:
    """Run `pas ARGS` through main() (which maps typed errors to exit codes)."""
    import sys

    from pas.cli import main
    monkeypatch.setattr(sys, "argv", ["pas", *map(str, args)])
    with pytest.raises(SystemExit) as ei:
        main()
    return ei.value.code, capsys.readouterr().err


def test_query_errors_exit_4(repo, capsys, monkeypatch):
    root, _ = repo
    code, err = _fails(capsys, monkeypatch, "-R", root, "query", "select m where m.colour = 1")
    assert code == 4 and "unknown attribute m.colour" in err
    code, err = _fails(capsys, monkeypatch, "-R", root, "query", "select m were")
    assert code == 4 and "line 1, column 10" in err
