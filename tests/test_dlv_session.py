"""End to end: a modeller's session through the dlv CLI (issue 8).

Train a small CNN on sklearn digits with torch, commit two snapshots with
their training log, copy the model and fine-tune it, then diff, desc, list,
eval (progressive, with the stored network), archive (the planner), publish
to another repository and pull back into a third; every repository verifies
clean and every retrieved weight is the trained one, as bytes.
"""
from __future__ import annotations

import csv
import json
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from typer.testing import CliRunner

from pas.dlv import cli as dlv_cli
from pas.repo import Repository

NETS = textwrap.dedent('''
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.fc1 = nn.Linear(8 * 4 * 4, 32)
            self.fc2 = nn.Linear(32, 10)

        def forward(self, x):
            x = self.pool(torch.relu(self.conv(x)))
            return self.fc2(torch.relu(self.fc1(x.flatten(1))))
''')


def _digits():
    try:
        from sklearn.datasets import load_digits
        d = load_digits()
        x, y = d.data.astype(np.float32) / 16.0, d.target.astype(np.int64)
    except ImportError:   # synthetic stand-in: 10 noisy prototypes
        rng = np.random.default_rng(0)
        protos = rng.random((10, 64), dtype=np.float32)
        y = rng.integers(0, 10, 1797)
        x = (protos[y] + 0.3 * rng.standard_normal((1797, 64))).astype(np.float32)
    return x.reshape(-1, 1, 8, 8), y


def _train(model, x, y, iterations, lr, start=0, params=None):
    opt = torch.optim.SGD(params if params is not None else model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(start)
    rows = []
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for it in range(start, start + iterations):
        idx = torch.randint(0, len(xt), (64,), generator=g)
        out = model(xt[idx])
        loss = torch.nn.functional.cross_entropy(out, yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        acc = (out.argmax(1) == yt[idx]).float().mean().item()
        rows.append({"iteration": it, "loss": loss.item(), "accuracy": acc, "lr": lr})
    return rows


def _write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["iteration", "loss", "accuracy", "lr"])
        w.writeheader()
        w.writerows(rows)


runner = CliRunner()


def dlv(*args, app=None):
    res = runner.invoke(app or dlv_cli.app, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout) if "--json" in args else res.stdout


def dlv_fails(capsys, monkeypatch, *args) -> tuple[int, str]:
    """Run `dlv` through its main() (error printing and exit codes)."""
    monkeypatch.setattr(sys, "argv", ["dlv", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        dlv_cli.main()
    return exc.value.code, capsys.readouterr().err


def test_modeller_session(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nets.py").write_text(NETS)
    (tmp_path / "train.py").write_text("# the training script (a file F of the version)\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import importlib
        nets = importlib.import_module("nets")
    finally:
        sys.path.remove(str(tmp_path))
    x, y = _digits()
    xtr, ytr, xte, yte = x[:1400], y[:1400], x[1400:], y[1400:]
    np.savez(tmp_path / "test.npz", x=xte, y=yte)
    repo = tmp_path / "repo"
    R = ("--repo", repo)

    info = dlv("init", repo, "--json")
    assert info["created"] and (repo / ".pas" / "dlv-stage.json").is_file()

    # -- train, commit snapshot 1 and 2 of one run
    torch.manual_seed(0)
    model = nets.Net()
    log = _train(model, xtr, ytr, 40, 0.2)
    torch.save(model.state_dict(), tmp_path / "w1.pt")
    w1 = {k: v.clone() for k, v in model.state_dict().items()}
    _write_csv(tmp_path / "log1.csv", log)
    (tmp_path / "config.yaml").write_text("optimizer: sgd\nlr: 0.2\nbatch_size: 64\nnet: {width: 8}\n")
    added = dlv(*R, "add", "w1.pt", "log1.csv", "config.yaml", "train.py", "--module", "nets.py:Net",
                "--name", "digits", "--json")
    assert sorted(e["kind"] for e in added["staged"]) == ["config", "file", "log", "module", "weights"]
    c1 = dlv(*R, "commit", "-m", "40 iterations", "--json")
    assert c1["name"] == "digits" and c1["parent"] is None
    log += _train(model, xtr, ytr, 40, 0.2, start=40)
    torch.save(model.state_dict(), tmp_path / "w2.pt")
    _write_csv(tmp_path / "log2.csv", log)
    dlv(*R, "add", "w2.pt", "log2.csv")
    c2 = dlv(*R, "commit", "-m", "80 iterations", "--json")
    assert c2["parent"] == c1["version_id"]
    assert dlv(*R, "status", "--json")["staged"] == []

    # -- copy and fine-tune the classifier only (conv frozen), new hyper-parameters and log
    cp = dlv(*R, "copy", "digits", "digits-ft", "--json")
    assert cp["parent"] == c2["version_id"] and cp["physical_added"] < 4096   # nothing stored twice
    ft = nets.Net()
    ft.load_state_dict(model.state_dict())
    ft_log = _train(ft, xtr, ytr, 30, 0.05, params=list(ft.fc1.parameters()) + list(ft.fc2.parameters()))
    torch.save(ft.state_dict(), tmp_path / "w3.pt")
    with open(tmp_path / "ft.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in ft_log)
    (tmp_path / "ft.json").write_text(json.dumps({"optimizer": "sgd", "lr": 0.05, "batch_size": 64,
                                                  "net": {"width": 8}, "frozen": ["conv"]}))
    dlv(*R, "add", "w3.pt", "ft.jsonl", "ft.json")
    c4 = dlv(*R, "commit", "-m", "fine-tune fc", "--json")
    assert c4["name"] == "digits-ft" and c4["parent"] == cp["version_id"]

    # -- diff: the frozen conv is unchanged without being read; fc layers changed. The fc
    # weight's change from the parent was recorded as it was archived: only the
    # tensors too small to keep a record of are read
    reads = []
    real = Repository.read_tensor
    monkeypatch.setattr(Repository, "read_tensor", lambda self, e, **kw: reads.append(e.name) or real(self, e, **kw))
    d = dlv(*R, "diff", "digits", "digits-ft", "--json")
    monkeypatch.setattr(Repository, "read_tensor", real)
    assert d["added"] == [] and d["removed"] == []
    assert sorted(c["name"] for c in d["changed"]) == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]
    from pas.delta.select import MIN_SAVING
    small = sorted(c["name"] for c in d["changed"] if c["elements"] * 4 < MIN_SAVING)
    assert d["unchanged"] == 2 and "fc1.weight" not in small and sorted(set(reads)) == small
    assert len(reads) == d["tensors_read"] == 2 * len(small)
    fc1 = next(c for c in d["changed"] if c["name"] == "fc1.weight")
    want = ft.state_dict()["fc1.weight"].double() - model.state_dict()["fc1.weight"].double()
    assert fc1["max_abs"] == pytest.approx(want.abs().max().item(), rel=1e-12)
    assert fc1["rel_l2"] == pytest.approx((want.norm() / model.state_dict()["fc1.weight"].double().norm()).item(),
                                          rel=1e-9)
    assert 0 < fc1["changed_fraction"] <= 1
    assert d["hyperparams"]["changed"] == {"lr": [0.2, 0.05]} and "frozen" in d["hyperparams"]["added"]
    assert d["metrics"]["accuracy"]["a"]["iteration"] == 79 and d["metrics"]["accuracy"]["b"]["iteration"] == 29
    assert d["network"]["same"] is True
    three = dlv(*R, "diff", c1["version_id"], "digits", "digits-ft", "--json")
    assert len(three["pairs"]) == 2 and three["pairs"][0]["unchanged"] == 0

    # -- desc: network, per-layer shapes and counts, metadata, metrics across iterations, files
    ds = dlv(*R, "desc", "digits-ft", "--json")
    assert ds["network"]["class"] == "Net" and ds["network"]["rebuildable"]
    conv = next(layer for layer in ds["layers"] if layer["id"] == "conv")
    assert conv["type"] == "Conv2d" and conv["params"]["kernel_size"] == [3, 3]
    assert [t["shape"] for t in conv["tensors"]] == [[8, 1, 3, 3], [8]] and conv["count"] == 80
    pool = next(layer for layer in ds["layers"] if layer["id"] == "pool")
    assert pool["attrs"]["pool"] == "max"
    assert ds["hyperparams"]["lr"] == 0.05 and ds["copied_from"] is None and ds["parent"] == cp["version_id"]
    assert ds["metrics"]["loss"]["count"] == 30 and len(ds["log"]) == 30
    assert [f["name"] for f in ds["files"]] == ["train.py"]   # F inherited through the copy
    assert "digits-ft" in dlv(*R, "desc", "digits-ft")

    # -- list: one lineage tree across both models
    ls = dlv(*R, "list", "--json")
    assert [m["name"] for m in ls["models"]] == ["digits", "digits-ft"]
    (root,) = ls["tree"]
    assert root["id"] == c1["version_id"]
    (v2,) = root["children"]
    (v3,) = v2["children"]
    (v4,) = v3["children"]
    assert (v2["id"], v3["name"], v4["id"]) == (c2["version_id"], "digits-ft", c4["version_id"])
    text = dlv(*R, "list")
    assert "└── digits-ft@" in text
    assert dlv(*R, "list", "--name", "digits-ft", "--json")["tree"][0]["base"]["name"] == "digits"
    assert [r["derived"] for r in dlv(*R, "log", "digits-ft", "--json")] == \
        [c4["version_id"], cp["version_id"], c2["version_id"], c1["version_id"]]

    # -- eval with the stored network (rebuilt), progressive: exact predictions
    ev = dlv(*R, "eval", "digits-ft", "--data", "test.npz", "--json")
    ft.eval()
    with torch.no_grad():
        want_pred = ft(torch.from_numpy(xte)).argmax(1).numpy()
    assert np.asarray(ev["predictions"]).reshape(-1).astype(np.int64).tobytes() == want_pred.tobytes()
    assert ev["accuracy"] == pytest.approx(float((want_pred == yte).mean()))
    assert ev["bytes_read"] <= ev["full_bytes"]

    # -- search, query
    hits = dlv(*R, "search", "frozen", "--json")
    assert [h["id"] for h in hits] == [c4["version_id"]] and hits[0]["matched"] == ["hyperparams"]
    assert {h["name"] for h in dlv(*R, "search", "conv2d", "--json")} == {"digits", "digits-ft"}
    # query: DQL (docs/dql.md); select reads records only, --save keeps a statement for `from "NAME"`
    rows = dlv(*R, "query", 'select m where m.name like "digits%" and m["conv*"].next has RELU()', "--json")
    assert {r["name"] for r in rows} == {"digits", "digits-ft"} and c4["version_id"] in {r["id"] for r in rows}
    assert dlv(*R, "query", "--save", "ft", 'select m where m.hparams.frozen != null', "--json") == {"saved": "ft"}
    assert [r["id"] for r in dlv(*R, "query", 'select m from "ft"', "--json")] == [c4["version_id"]]
    n_before = len(dlv(*R, "list", "--json")["models"])
    plan = dlv(*R, "query", "--explain", 'construct m2 from m1 where m1.name = "digits" mutate m1["fc*"].delete',
               "--json")
    assert plan["statement"] == "construct" and plan["commits"] and "no weights" in plan["reads"]
    assert len(dlv(*R, "list", "--json")["models"]) == n_before      # explain committed nothing
    code, err = dlv_fails(capsys, monkeypatch, *R, "query", "select m where")
    assert code == 4 and "line 1, column 15" in err

    # -- archive: the planner over the repository; every version stays bit-exact
    arc = dlv(*R, "archive", "--budget", "2", "--json")
    assert arc["dry_run"] is False
    # -- publish to a remote path, pull back into a fresh repository
    remote = tmp_path / "remote"
    pub = dlv(*R, "publish", "digits-ft", "--to", remote, "--create", "--json")
    assert sorted(pub["versions"]) == sorted([c1["version_id"], c2["version_id"], cp["version_id"],
                                              c4["version_id"]])
    assert pub["refs"] == {"digits-ft": c4["version_id"]}
    again = dlv(*R, "publish", "digits-ft", "--to", remote, "--json")
    assert again["versions"] == [] and again["chunks"] == 0 and again["records"] == 0
    assert dlv(*R, "search", "fine-tune", "--remote", remote, "--json")[0]["id"] == c4["version_id"]
    local2 = tmp_path / "local2"
    dlv("init", local2)
    pulled = dlv("--repo", local2, "pull", "digits-ft", "--from", remote, "--json")
    assert len(pulled["versions"]) == 4
    for path in (repo, remote, local2):
        with Repository.open(path) as r:
            rep = r.verify()
            assert rep.ok, rep.errors
    with Repository.open(local2) as r:
        snap = r.retrieve("digits-ft")
        assert r.refs() == {"digits-ft": c4["version_id"]}
    for k, v in ft.state_dict().items():
        assert snap.tensors[k].data.tobytes() == v.numpy().tobytes(), k
    assert snap.files["train.py"] == (tmp_path / "train.py").read_bytes()
    with Repository.open(repo) as r:
        first = r.retrieve(c1["version_id"])
    for k, v in w1.items():
        assert first.tensors[k].data.tobytes() == v.numpy().tobytes(), k

    # -- the same verbs as pas subcommands
    from pas.cli import app as pas_app
    assert dlv(*R, "list", "--json", app=pas_app) == ls
    assert dlv(*R, "desc", "digits", "--json", app=pas_app)["id"] == c2["version_id"]


def test_cli_errors_are_typed_and_change_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, err = dlv_fails(capsys, monkeypatch, "--repo", tmp_path / "nowhere", "list")
    assert code == 10 and err.startswith("dlv: error: no pas repository")
    repo = tmp_path / "r"
    dlv("init", repo)
    R = ("--repo", repo)
    assert dlv(*R, "list", "--json") == {"models": [], "tree": []}
    code, err = dlv_fails(capsys, monkeypatch, *R, "desc", "nope")
    assert code == 3 and "no ref or version 'nope'" in err
    code, err = dlv_fails(capsys, monkeypatch, *R, "commit", "-m", "x", "--name", "m")
    assert code == 4 and "nothing staged" in err
    (tmp_path / "log.csv").write_text("iteration,loss\nx,1\n")
    code, err = dlv_fails(capsys, monkeypatch, *R, "add", "log.csv")
    assert code == 4 and "bad iteration" in err
    code, err = dlv_fails(capsys, monkeypatch, *R, "add", "w.pt", "--as", "weights")
    assert code == 3
    code, err = dlv_fails(capsys, monkeypatch, *R, "add", "log.csv", "--as", "tensorboard")
    assert code == 4 and "unknown kind" in err
    code, err = dlv_fails(capsys, monkeypatch, *R, "diff", "a")
    assert code == 4 and "at least two" in err
    code, err = dlv_fails(capsys, monkeypatch, *R, "publish", "m", "--to", tmp_path / "remote")
    assert code == 3   # no ref m
    code, err = dlv_fails(capsys, monkeypatch, *R, "archive", "--budget", "-1")
    assert code == 4
    assert dlv(*R, "status", "--json") == {"model": None, "staged": []}
    assert dlv(*R, "list", "--json") == {"models": [], "tree": []}
    # The same through `pas`: its error line and exit code.
    from pas.cli import main as pas_main
    monkeypatch.setattr(sys, "argv", ["pas", "--repo", str(repo), "desc", "nope"])
    with pytest.raises(SystemExit) as exc:
        pas_main()
    assert exc.value.code == 3 and capsys.readouterr().err.startswith("pas: error: no ref")
