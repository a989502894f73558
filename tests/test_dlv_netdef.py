"""Network definitions: torch.fx extraction, hand-written graphs, rebuild (outputs equal as bytes), hostile input."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F
from torch import nn

from pas.dlv import netdef
from pas.errors import BadInput
from pas.progressive.models import LeNetBN


def _same_outputs(a: nn.Module, b: nn.Module, x) -> bool:
    a.eval()
    b.eval()
    with torch.no_grad():
        return a(x).numpy().tobytes() == b(x).numpy().tobytes()


def _roundtrip(module: nn.Module) -> nn.Module:
    net = netdef.decode(netdef.encode(netdef.extract(module)))   # through the stored bytes
    rebuilt = netdef.build(net)
    netdef.load_weights(rebuilt, dict(module.state_dict()))
    return rebuilt


def test_lenet_bn_rebuilds_bit_identical():
    torch.manual_seed(0)
    m = LeNetBN()
    with torch.no_grad():   # BN statistics that are not the identity
        for bn in (m.bn1, m.bn2, m.bn3):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    rebuilt = _roundtrip(m)
    assert _same_outputs(m, rebuilt, torch.randn(7, 1, 8, 8))
    assert set(rebuilt.state_dict()) == set(m.state_dict())
    net = netdef.extract(m)
    types = [(n["op"], n["type"]) for n in net["nodes"]]
    assert ("module", "Conv2d") in types and ("function", "max_pool2d") in types and ("method", "flatten") in types
    pools = [n for n in net["nodes"] if n["type"] == "max_pool2d"]
    assert all(n["attrs"]["pool"] == "max" for n in pools) and len(pools) == 2
    conv1 = next(n for n in net["nodes"] if n["id"] == "conv1")
    assert conv1["params"]["kernel_size"] == [3, 3] and conv1["params"]["padding"] == [1, 1]
    assert ["conv1", "bn1"] in net["edges"]


class Residual(nn.Module):
    """Embedding, LayerNorm, GELU, residual add, AvgPool1d, Dropout, Sequential, a bare parameter."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 16, padding_idx=0)
        self.block = nn.Sequential(nn.Linear(16, 16), nn.GELU(), nn.Dropout(0.1))
        self.norm = nn.LayerNorm(16)
        self.pool = nn.AvgPool1d(2)
        self.scale = nn.Parameter(torch.tensor([1.5]))
        self.head = nn.Conv1d(16, 3, 1)

    def forward(self, idx):
        h = self.emb(idx)
        h = self.norm(h + self.block(h)) * self.scale
        h = self.pool(h.transpose(1, 2))
        return F.log_softmax(self.head(h).mean(-1), dim=-1)


def test_residual_embedding_layernorm_rebuild():
    torch.manual_seed(1)
    m = Residual()
    rebuilt = _roundtrip(m)
    assert _same_outputs(m, rebuilt, torch.randint(0, 20, (4, 6)))
    net = netdef.extract(m)
    add = next(n for n in net["nodes"] if n["target"] == "operator.add")
    assert len([e for e in net["edges"] if e[1] == add["id"]]) == 2        # the residual join
    attr = next(n for n in net["nodes"] if n["op"] == "attr")
    assert attr["target"] == "scale" and attr["attrs"]["shape"] == [1]


def test_untraceable_module_falls_back_to_its_tree():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
            self.out = nn.Linear(4, 2)

        def forward(self, x):
            if x.sum() > 0:      # data-dependent control flow: fx cannot trace it
                x = self.body(x)
            return self.out(x)

    net = netdef.extract(Branchy())
    assert net["kind"] == "tree" and "TraceError" in net["trace_error"]
    ids = {n["id"]: n for n in net["nodes"]}
    assert ids["body.0"]["type"] == "Linear" and ids["body.0"]["params"]["in_features"] == 4
    assert ["body", "body.0"] in net["edges"] and ["<root>", "out"] in net["edges"]
    with pytest.raises(BadInput, match="module tree"):
        netdef.build(net)


def test_hand_written_graph_yaml_and_json():
    pytest.importorskip("yaml")
    yaml_text = b"""
nodes:
  - {id: x, type: Input}
  - {id: fc1, type: Linear, params: {in_features: 8, out_features: 8}}
  - {id: act, type: ReLU}
  - {id: skip, type: Add}
  - {id: pool, type: MaxPool1d, params: {kernel_size: 2}}
  - {id: flat, type: Flatten}
  - {id: fc2, type: Linear, params: {in_features: 4, out_features: 3}}
  - {id: y, type: Output}
edges: [[x, fc1], [fc1, act], [act, skip], [x, skip], [skip, pool], [pool, flat], [flat, fc2], [fc2, y]]
"""
    net = netdef.parse(yaml_text, "net.yaml")
    assert next(n for n in net["nodes"] if n["id"] == "pool")["attrs"] == {"pool": "max"}
    m = netdef.build(net)
    torch.manual_seed(2)
    x = torch.randn(5, 1, 8)
    with torch.no_grad():
        h = torch.relu(m.fc1(x)) + x
        want = m.fc2(F.max_pool1d(h, 2).flatten(1))
        assert m(x).numpy().tobytes() == want.numpy().tobytes()
    # A chain without edges, from JSON; Input and Output are added.
    chain = netdef.parse(json.dumps({"layers": [{"name": "l1", "type": "Linear", "params": {"in_features": 3,
                                                                                            "out_features": 2}},
                                                {"name": "s", "type": "Sigmoid"}]}).encode(), "chain.json")
    assert [n["type"] for n in chain["nodes"]] == ["Input", "Linear", "Sigmoid", "Output"]
    assert netdef.build(chain)(torch.zeros(1, 3)).shape == (1, 2)


@pytest.mark.parametrize("doc, match", [
    ({"nodes": [{"id": "a", "type": "Linear"}], "edges": [["a", "zz"]]}, "does not exist"),
    ({"nodes": [{"id": "a", "type": "Input"}, {"id": "b", "type": "ReLU"}], "edges": [["a", "b"], ["b", "b"]]},
     "exactly one input"),
    ({"nodes": "no"}, "non-empty list"),
    ({"nodes": [{"id": "a", "type": "Input"}, {"id": "a", "type": "Output"}]}, "unique"),
    ([1, 2], "mapping"),
])
def test_bad_hand_written_graphs(doc, match):
    with pytest.raises(BadInput, match=match):
        netdef.parse(json.dumps(doc).encode(), "bad.json")


def _stored(nodes, edges=None):
    return {"format": 1, "kind": "graph", "nodes": nodes, "edges": edges or []}


def test_hostile_stored_networks_are_refused_typed():
    inp = {"id": "x", "op": "input", "type": "Input", "target": "x"}
    out = lambda src: {"id": "o", "op": "output", "type": "Output", "target": "output", "args": [{"node": src}]}
    # A function outside the allowlist is never resolved, whatever its name.
    evil = {"id": "e", "op": "function", "type": "system", "target": "os.system", "args": ["echo pwned"]}
    net = netdef.validate(_stored([inp, evil, out("e")], [["x", "e"], ["e", "o"]]))
    with pytest.raises(BadInput, match="os.system is not supported"):
        netdef.build(net)
    # getattr may read only shape-like attributes.
    ga = {"id": "g", "op": "function", "type": "getattr", "target": "builtins.getattr",
          "args": [{"node": "x"}, "__class__"]}
    with pytest.raises(BadInput, match="getattr"):
        netdef.build(netdef.validate(_stored([inp, ga, out("g")], [["x", "g"], ["g", "o"]])))
    # A method outside the allowlist.
    meth = {"id": "m", "op": "method", "type": "__reduce__", "target": "__reduce__", "args": [{"node": "x"}]}
    with pytest.raises(BadInput, match="not supported"):
        netdef.build(netdef.validate(_stored([inp, meth, out("m")], [["x", "m"], ["m", "o"]])))
    # Sizes are checked on the meta device before anything is allocated.
    huge = {"id": "h", "op": "module", "type": "Linear", "target": "h", "args": [{"node": "x"}],
            "params": {"in_features": 1 << 20, "out_features": 1 << 20}}
    with pytest.raises(BadInput, match="parameters"):
        netdef.build(netdef.validate(_stored([inp, huge, out("h")], [["x", "h"], ["h", "o"]])))
    bad_params = dict(huge, params={"in_features": "many"})
    with pytest.raises(BadInput, match="cannot rebuild layer"):
        netdef.build(netdef.validate(_stored([inp, bad_params, out("h")], [["x", "h"], ["h", "o"]])))
    # Structure: cycles, dangling references, unknown ops, not JSON.
    a = {"id": "a", "op": "module", "type": "ReLU", "target": "a", "args": [{"node": "b"}]}
    b = {"id": "b", "op": "module", "type": "ReLU", "target": "b", "args": [{"node": "a"}]}
    with pytest.raises(BadInput, match="cycle"):
        netdef.validate(_stored([a, b], [["a", "b"], ["b", "a"]]))
    with pytest.raises(BadInput, match="does not exist"):
        netdef.validate(_stored([dict(a, args=[{"node": "ghost"}])]))
    with pytest.raises(BadInput, match="op must be"):
        netdef.validate(_stored([dict(a, op="exec")]))
    with pytest.raises(BadInput, match="not JSON"):
        netdef.decode(b"\xff{")
    with pytest.raises(BadInput, match="format"):
        netdef.decode(json.dumps({"format": 99, "kind": "graph", "nodes": [], "edges": []}).encode())


def test_load_weights_checks_names_and_shapes():
    m = netdef.build(netdef.extract(nn.Sequential(nn.Linear(3, 2))))
    with pytest.raises(BadInput, match="no tensor"):
        netdef.load_weights(m, {"0.weight": torch.zeros(2, 3)})
    with pytest.raises(BadInput, match="shape"):
        netdef.load_weights(m, {"0.weight": torch.zeros(3, 2), "0.bias": torch.zeros(2)})
    netdef.load_weights(m, {"0.weight": torch.ones(2, 3, dtype=torch.bfloat16), "0.bias": torch.zeros(2)})
    assert m.state_dict()["0.weight"].dtype == torch.float32 and float(m.state_dict()["0.weight"].sum()) == 6.0


def test_network_diff():
    a = netdef.extract(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)))
    b = netdef.extract(nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 3), nn.Softmax(-1)))
    d = netdef.diff(a, b)
    assert d["added"] == ["_3"] and d["removed"] == []
    changed = {c["id"]: c for c in d["changed"]}
    assert changed["_1"]["b"]["type"] == "Tanh" and changed["_2"]["b"]["params"]["out_features"] == 3
    assert netdef.diff(a, a)["same"] is True
