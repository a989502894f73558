"""Progressive evaluation (pas/progressive/evaluate.py, `pas eval`): the
predictions are exactly those of full-precision float32 evaluation on every
input, near-ties included, in both plane layouts; per-plane reports add up."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pas.progressive import (
    ModelMismatch,
    UnsupportedLayer,
    evaluate,
    load_model,
    reference_predictions,
)
from pas.repo import Repository
from pas.snapshot import Snapshot, Tensor


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc1 = nn.Linear(4 * 3 * 3, 16)
        self.fc2 = nn.Linear(16, 6)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def _model(seed: int) -> SmallCNN:
    torch.manual_seed(seed)
    m = SmallCNN()
    with torch.no_grad():
        m.bn.running_mean.normal_(0, 0.1)
        m.bn.running_var.uniform_(0.5, 1.5)
        m.bn.weight.normal_(1, 0.1)
        m.bn.bias.normal_(0, 0.1)
        # near-ties: class 1 is class 0 with one weight one ulp up; class 3 == class 2 exactly
        m.fc2.weight[1] = m.fc2.weight[0]
        m.fc2.bias[1] = m.fc2.bias[0]
        w = m.fc2.weight[1, 5].clone()
        m.fc2.weight[1, 5] = torch.nextafter(w, torch.tensor(float("inf")))
        m.fc2.bias[:2] += 0.15
        m.fc2.weight[3] = m.fc2.weight[2]
        m.fc2.bias[3] = m.fc2.bias[2]
    return m.eval()


def _inputs(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, 1, 6, 6)).astype(np.float32)
    x[: n // 4] *= 1e-3          # small inputs: logits close to the biases (more near-ties)
    x[n // 4: n // 4 + 3] = 0.0  # zero inputs
    return x


def _repo(model: nn.Module, layouts=None) -> Repository:
    r = Repository.in_memory(**({"layouts": layouts} if layouts else {}))
    snap = Snapshot()
    for k, v in model.state_dict().items():
        snap.add(Tensor.from_array(k, v.numpy()))
    snap.add(Tensor.from_array("optim.extra", np.ones(3, np.float32)))   # ignored by the model
    r.archive_snapshot(snap, "m")
    return r


@pytest.fixture(scope="module", params=[["planes"], None], ids=["planes", "default"])
def setup(request):
    model = _model(3)
    return _repo(model, request.param), model, request.param


@pytest.mark.parametrize("top_k", [1, 3])
def test_predictions_equal_full_evaluation(setup, top_k):
    r, model, layouts = setup
    x = _inputs(200)
    ref = reference_predictions(model, torch.from_numpy(x), top_k, batch_size=64)
    fresh = SmallCNN()
    res = evaluate(r, "m", fresh, x, top_k=top_k, batch_size=64)
    assert res.predictions.shape == (200, top_k)
    assert np.array_equal(res.predictions, ref)
    full = evaluate(r, "m", SmallCNN(), x, top_k=top_k, progressive=False, batch_size=64)
    assert np.array_equal(full.predictions, ref)
    # the caller's model is not changed by the evaluation
    assert not torch.equal(fresh.fc2.weight, model.fc2.weight)
    # report: rounds add up, every input decided exactly once
    assert sum(s.decided for s in res.steps) == 200
    assert res.steps[0].evaluated == 200
    for a, b in zip(res.steps, res.steps[1:]):
        assert b.evaluated == a.undecided and b.planes == a.planes + 1
    # 1 plane first, unless some weight keeps its sign in plane 1 (planes-exp: the writer's choice per tensor)
    assert res.first_planes == (2 if "planes-exp" in res.layouts else 1)
    if layouts == ["planes"]:
        assert res.layouts == {"planes": 10}
    if res.steps[-1].exact:
        assert res.bytes_read == res.full_bytes
    assert 0 < res.steps[0].bytes_read < res.full_bytes


def test_a_lossy_version_evaluates_with_its_decoded_weights():
    """A version stored lossy (pas.quantize) is evaluated with the weights retrieval
    gives (its codes decoded), progressive or not: the lossy tensors are exact
    points, the rest go plane by plane."""
    model = _model(5)
    r = Repository.in_memory()
    snap = Snapshot()
    for k, v in model.state_dict().items():
        snap.add(Tensor.from_array(k, v.numpy()))
    r.archive_snapshot(snap, "q", scheme="fc1.weight=quant-kmeans:4")
    assert r.version("q").lossy is not None
    decoded = SmallCNN()
    decoded.load_state_dict({n: torch.from_numpy(np.array(t.data)) for n, t in r.retrieve("q").tensors.items()})
    x = _inputs(120, seed=4)
    ref = reference_predictions(decoded.eval(), torch.from_numpy(x), 1, batch_size=64)
    for progressive in (True, False):
        res = evaluate(r, "q", SmallCNN(), x, progressive=progressive, batch_size=64)
        assert np.array_equal(res.predictions, ref)


def test_near_ties_reach_full_precision_and_match(setup):
    r, model, _ = setup
    x = _inputs(40)
    res = evaluate(r, "m", SmallCNN(), x, batch_size=16)
    ref = reference_predictions(model, torch.from_numpy(x), 1, batch_size=16)
    assert np.array_equal(res.predictions, ref)
    assert res.steps[-1].exact and res.steps[-1].evaluated > 0
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
    ties = int(((logits[:, 0] == logits[:, 1]) & (logits.argmax(1) == 0)).sum())
    assert ties > 0                      # exact float32 ties at the top: argmax takes the first index
    assert res.near_ties >= ties


def test_accuracy_and_json(setup):
    r, model, _ = setup
    x = _inputs(30)
    y = reference_predictions(model, torch.from_numpy(x), 1)[:, 0]
    y[:3] = (y[:3] + 1) % 6
    res = evaluate(r, "m", SmallCNN(), x, y)
    assert res.accuracy == pytest.approx(27 / 30)
    j = json.loads(json.dumps(res.to_json()))
    assert j["n"] == 30 and len(j["predictions"]) == 30 and j["steps"]


def test_bytes_of_top_planes():
    rng = np.random.default_rng(0)
    r = Repository.in_memory(layouts=["planes"], chunk_size=64 << 10)
    snap = Snapshot()
    snap.add(Tensor.from_array("w", rng.normal(0, 0.05, 300_000).astype(np.float32)))
    snap.add(Tensor.from_array("b", rng.normal(0, 0.05, 10).astype(np.float32)))
    r.archive_snapshot(snap, "m")
    for e in r.version("m").tensors:
        sizes = [r.planes_stored_bytes(e, k) for k in range(1, 5)]
        assert 0 < sizes[0] < sizes[1] < sizes[2] < sizes[3]
        assert r.planes_stored_bytes(e, 64) == sizes[3]
    big = next(e for e in r.version("m").tensors if e.name == "w")
    from pas.records import CHUNK
    stored = sum(len(v) for _, v in r.store.items_prefix(CHUNK))
    assert r.planes_stored_bytes(big, 4) == stored


def test_errors_are_typed():
    model = _model(1)
    r = _repo(model)
    x = _inputs(4)

    class Other(SmallCNN):
        def __init__(self):
            super().__init__()
            self.fc3 = nn.Linear(6, 6)

        def forward(self, x):
            return self.fc3(super().forward(x))

    with pytest.raises(ModelMismatch, match="fc3.weight"):
        evaluate(r, "m", Other(), x)

    class Norm(SmallCNN):
        def forward(self, x):
            return F.layer_norm(super().forward(x), (6,))

    with pytest.raises(UnsupportedLayer, match="layer_norm"):
        evaluate(r, "m", Norm(), x)
    from pas.errors import BadInput
    with pytest.raises(BadInput):
        evaluate(r, "m", SmallCNN(), x, top_k=7)
    with pytest.raises(BadInput):
        evaluate(r, "m", SmallCNN(), x[:0])


def test_load_model_spec(tmp_path, monkeypatch):
    from pas.progressive import BadModelSpec
    (tmp_path / "netmod_a.py").write_text("import torch.nn as nn\nclass Net(nn.Module):\n"
                                          "    def __init__(self):\n        super().__init__()\n"
                                          "        self.fc = nn.Linear(2, 2)\n    def forward(self, x):\n"
                                          "        return self.fc(x)\ndef make():\n    return Net()\nNOT = 3\n")
    monkeypatch.chdir(tmp_path)
    assert isinstance(load_model("netmod_a:Net"), nn.Module)
    assert isinstance(load_model("netmod_a:make"), nn.Module)
    assert isinstance(load_model(f"{tmp_path / 'netmod_a.py'}:Net"), nn.Module)
    for bad in ("netmod_a", "netmod_a:Missing", "netmod_a:NOT", "no_such_module_xyz:Net"):
        with pytest.raises(BadModelSpec):
            load_model(bad)


def test_cli_eval(tmp_path):
    from conftest import REPO_ROOT
    model = _model(2)
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    (tmp_path / "mynet.py").write_text(textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(REPO_ROOT / "tests")!r})
        from test_progressive_eval import SmallCNN
    '''))
    x = _inputs(20)
    y = reference_predictions(model, torch.from_numpy(x), 1)[:, 0]
    np.savez(tmp_path / "data.npz", x=x, y=y)
    env = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    pas = [sys.executable, "-c", "from pas.cli import main; main()"]

    def run(*args, expect=0):
        p = subprocess.run(pas + [str(a) for a in args], capture_output=True, text=True, cwd=tmp_path, env=env,
                           timeout=120, check=False)
        assert "Traceback" not in p.stderr, p.stderr
        assert p.returncode == expect, (p.returncode, p.stdout, p.stderr)
        return p

    run("init", "--sign-first", "repo")
    run("-R", "repo", "archive", "m.safetensors", "--name", "m")
    out = json.loads(run("-R", "repo", "eval", "m", "--data", "data.npz", "--model", "mynet:SmallCNN", "--json").stdout)
    assert out["accuracy"] == 1.0 and out["predictions"] == [[int(v)] for v in y]
    assert out["first_planes"] == 1 and out["steps"][0]["planes"] == 1
    human = run("-R", "repo", "eval", "m", "--data", "data.npz", "--model", "mynet:SmallCNN", "--no-progressive").stdout
    assert "accuracy 100.00%" in human
    p = run("-R", "repo", "eval", "m", "--data", "data.npz", expect=4)
    assert "--model" in p.stderr
    np.savez(tmp_path / "bad.npz", z=x)
    p = run("-R", "repo", "eval", "m", "--data", "bad.npz", "--model", "mynet:SmallCNN", expect=4)
    assert "'x'" in p.stderr
