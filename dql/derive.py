"""New networks from old ones: DQL's slice and construct, on the stored network
definition (`pas.dlv.netdef`, kind ``graph``: nodes with ``args`` naming their
inputs as ``{"node": id}``, and ``[from, to]`` edges).

- `slice_network`: the layers on some path from one layer to another, fed by a
  new input in place of the first layer's inputs, the last one's output as
  the network's output.
- `insert_after` / `delete_layer`: construct's edits. An inserted layer takes
  over the selected layer's outgoing edges (the paper: it "splits an outgoing
  edge"); a deleted layer's consumers read its input instead.

Every function returns a new, validated network (`netdef.validate`) and
leaves its argument alone.
"""
from __future__ import annotations

import copy

from pas.dlv import netdef

from .ast import Template
from .errors import DQLSemanticError
from .layers import KINDS, POOL_KINDS

#: Layers construct can insert: template kind -> module type and its default parameters.
#: Only layers without weights: a derived version's weights all come from its source.
INSERTABLE = {
    "RELU": ("ReLU", {}), "SIGMOID": ("Sigmoid", {}), "TANH": ("Tanh", {}), "GELU": ("GELU", {}),
    "SILU": ("SiLU", {}), "DROPOUT": ("Dropout", {"p": 0.5}), "FLATTEN": ("Flatten", {}),
    "IDENTITY": ("Identity", {}), "SOFTMAX": ("Softmax", {"dim": 1}),
    "POOL": ("MaxPool2d", {"kernel_size": 2}),
}


def _refs(value) -> list[str]:
    if isinstance(value, dict):
        if set(value) == {"node"}:
            return [value["node"]]
        return [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


def _replace_refs(value, old: str, new: str):
    if isinstance(value, dict):
        if set(value) == {"node"}:
            return {"node": new} if value["node"] == old else value
        return {k: _replace_refs(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_refs(v, old, new) for v in value]
    return value


def _edges_from_args(nodes: list[dict]) -> list[list[str]]:
    return [[r, n["id"]] for n in nodes for r in dict.fromkeys(_refs(n.get("args", [])) + _refs(n.get("kwargs", {})))]


def _need_graph(net: dict, what: str) -> None:
    if net["kind"] != "graph":
        raise DQLSemanticError(f"{what} needs a network stored as a graph (traced or hand-written), "
                               "not a module tree")


def slice_network(net: dict, first: str, last: str) -> dict:
    """The sub-network from layer ``first`` to layer ``last`` (both kept)."""
    _need_graph(net, "slice")
    nodes = {n["id"]: n for n in net["nodes"]}
    succ: dict[str, list[str]] = {i: [] for i in nodes}
    pred: dict[str, list[str]] = {i: [] for i in nodes}
    for a, b in net["edges"]:
        succ[a].append(b)
        pred[b].append(a)

    def reach(start: str, step) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            for j in step[todo.pop()]:
                if j not in seen:
                    seen.add(j)
                    todo.append(j)
        return seen

    keep = reach(first, succ) & reach(last, pred)
    if last not in keep:
        raise DQLSemanticError(f"no path leads from layer {first!r} to layer {last!r}")
    # Parameters read by kept nodes (get_attr nodes) come along; any other
    # outside input would be a value the slice cannot compute.
    for i in sorted(keep - {first}):
        for p in pred[i]:
            if p in keep:
                continue
            if nodes[p]["op"] == "attr":
                keep.add(p)
            else:
                raise DQLSemanticError(f"layer {i!r} also reads {p!r}, which lies outside the slice "
                                       f"from {first!r} to {last!r}")
    input_id = _free_id("input", nodes)
    output_id = _free_id("output", nodes)
    out = [{"id": input_id, "op": "input", "type": "Input", "target": input_id, "params": {}, "attrs": {},
            "args": []}]
    for n in net["nodes"]:
        if n["id"] not in keep:
            continue
        n = copy.deepcopy(n)
        if n["id"] == first:
            for p in set(pred[first]):
                n["args"] = _replace_refs(n.get("args", []), p, input_id)
                n["kwargs"] = _replace_refs(n.get("kwargs", {}), p, input_id)
        out.append(n)
    out.append({"id": output_id, "op": "output", "type": "Output", "target": "output", "params": {}, "attrs": {},
                "args": [{"node": last}]})
    sliced = {k: v for k, v in net.items() if k not in ("nodes", "edges")}
    sliced.update(nodes=out, edges=_edges_from_args(out), source="dql slice")
    return netdef.validate(sliced, "sliced network")


def insert_after(net: dict, layer: str, template: Template) -> dict:
    """A new layer (the template's) between ``layer`` and every layer that reads it."""
    _need_graph(net, "insert")
    if template.kind not in INSERTABLE:
        kinds = ", ".join(sorted(INSERTABLE))
        raise DQLSemanticError(f"construct inserts layers without weights ({kinds}), not {template.kind}(...)"
                               if template.kind in KINDS else f"unknown layer type {template.kind}(...)",
                               *template.pos)
    typ, params = INSERTABLE[template.kind]
    params = dict(params)
    args = list(template.args)
    if template.kind == "POOL" and args:
        kind = POOL_KINDS.get(str(args.pop(0)).upper())
        if kind is None:
            raise DQLSemanticError('POOL takes "MAX" or "AVG"', *template.pos)
        typ = "MaxPool2d" if kind == "max" else "AvgPool2d"
    name = args.pop(0) if args else None
    if args or (name is not None and not isinstance(name, str)):
        raise DQLSemanticError(f"{template.kind}(...) takes a layer name (a string) and keyword parameters",
                               *template.pos)
    allowed = set(netdef.MODULE_PARAMS[typ])
    for k, v in template.kwargs:
        if k not in allowed:
            raise DQLSemanticError(f"{typ} has no parameter {k!r} (it has: {', '.join(sorted(allowed)) or 'none'})",
                                   *template.pos)
        params[k] = list(v) if isinstance(v, tuple) else v
    nodes = copy.deepcopy(net["nodes"])
    ids = {n["id"] for n in nodes}
    new_id = name or _free_id(typ.lower(), {i: None for i in ids})
    if new_id in ids:
        raise DQLSemanticError(f"a layer named {new_id!r} already exists", *template.pos)
    targets = {n.get("target") for n in nodes if n["op"] in ("module", "attr")}
    if new_id in targets or any(t and t.startswith(new_id + ".") for t in targets):
        raise DQLSemanticError(f"module path {new_id!r} is taken", *template.pos)
    for n in nodes:
        if n["id"] != layer:
            n["args"] = _replace_refs(n.get("args", []), layer, new_id)
            n["kwargs"] = _replace_refs(n.get("kwargs", {}), layer, new_id)
    at = next(i for i, n in enumerate(nodes) if n["id"] == layer)
    nodes.insert(at + 1, {"id": new_id, "op": "module", "type": typ, "target": new_id, "params": params,
                          "attrs": netdef._layer_attrs(typ), "args": [{"node": layer}], "kwargs": {}})
    out = {**net, "nodes": nodes, "edges": _edges_from_args(nodes), "source": "dql construct"}
    return netdef.validate(out, "constructed network")


def delete_layer(net: dict, layer: str) -> dict:
    """The network without ``layer``: whatever read it reads its (single) input."""
    _need_graph(net, "delete")
    nodes = copy.deepcopy(net["nodes"])
    node = next(n for n in nodes if n["id"] == layer)
    inputs = list(dict.fromkeys(_refs(node.get("args", [])) + _refs(node.get("kwargs", {}))))
    if node["op"] in ("input", "output") or len(inputs) != 1:
        raise DQLSemanticError(f"layer {layer!r} cannot be deleted: it has {len(inputs)} inputs (needs exactly 1)")
    for n in nodes:
        n["args"] = _replace_refs(n.get("args", []), layer, inputs[0])
        n["kwargs"] = _replace_refs(n.get("kwargs", {}), layer, inputs[0])
    nodes = [n for n in nodes if n["id"] != layer]
    out = {**net, "nodes": nodes, "edges": _edges_from_args(nodes), "source": "dql construct"}
    return netdef.validate(out, "constructed network")


def tensor_names(net: dict, available: list[str]) -> list[str]:
    """The version's tensors a network uses: those under a module node's path, and attribute nodes'."""
    prefixes = {n["target"] + "." for n in net["nodes"] if n["op"] == "module"}
    exact = {n["target"] for n in net["nodes"] if n["op"] == "attr"}
    return [t for t in available if t in exact or t.rpartition(".")[0] + "." in prefixes]


def _free_id(base: str, taken) -> str:
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}{i}"
    return name
