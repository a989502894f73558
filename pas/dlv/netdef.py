"""Network definition N: a DAG of layers, as the paper's Node(id, node, A) + Edge(from, to).

Three ways in:
  * `extract(module)`: torch.fx tracing of an ``nn.Module`` (kind ``graph``);
    a module that fx cannot trace (data-dependent control flow) falls back to
    its tree of named children (kind ``tree``: nodes are modules, edges are
    containment), which describes it but cannot be rebuilt;
  * `parse(data, name)`: a JSON/YAML layer graph written by hand (validated,
    normalised to the stored form);
  * `decode(data)`: the stored ``.dlv/network.json`` of a version (checked
    like any input: a shared repository may be hostile).

`build(net)` turns a ``graph`` back into a runnable torch module (an fx
GraphModule whose state_dict names are the module paths of the nodes), for
the layer types in `MODULE_PARAMS` and the functions and methods in the
allowlists below: nothing stored can name an arbitrary Python callable.

torch is imported only inside `extract`, `build` and `load_weights`; the rest
(parse, decode, validation, diff) is plain Python, so `dlv list` stays fast.
"""
from __future__ import annotations

import json
import math
from typing import Any

from ..errors import BadInput

FORMAT = 1
FILE = ".dlv/network.json"
MAX_NODES = 100_000
MAX_BUILD_ELEMENTS = 4_000_000_000   # parameters a rebuilt network may allocate

#: Supported layer types: constructor parameters read back from an instance.
MODULE_PARAMS: dict[str, tuple[str, ...]] = {
    "Linear": ("in_features", "out_features", "bias"),
    "Conv1d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias",
               "padding_mode"),
    "Conv2d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias",
               "padding_mode"),
    "ReLU": ("inplace",), "ReLU6": ("inplace",), "LeakyReLU": ("negative_slope", "inplace"),
    "GELU": ("approximate",), "SiLU": ("inplace",), "ELU": ("alpha", "inplace"),
    "Sigmoid": (), "Tanh": (), "Identity": (),
    "Softmax": ("dim",), "LogSoftmax": ("dim",),
    "MaxPool1d": ("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
    "MaxPool2d": ("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
    "AvgPool1d": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"),
    "AvgPool2d": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
    "AdaptiveAvgPool1d": ("output_size",), "AdaptiveAvgPool2d": ("output_size",),
    "AdaptiveMaxPool1d": ("output_size",), "AdaptiveMaxPool2d": ("output_size",),
    "Flatten": ("start_dim", "end_dim"),
    "BatchNorm1d": ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    "BatchNorm2d": ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    "LayerNorm": ("normalized_shape", "eps", "elementwise_affine", "bias"),
    "Dropout": ("p", "inplace"), "Dropout1d": ("p", "inplace"), "Dropout2d": ("p", "inplace"),
    "Embedding": ("num_embeddings", "embedding_dim", "padding_idx", "max_norm", "norm_type", "scale_grad_by_freq",
                  "sparse"),
}
#: Shorthand layer types of hand-written graphs: n-ary functions of their inputs.
GRAPH_FUNCTIONS = {"Add": "dlv.sum", "Mul": "dlv.product", "Concat": "torch.cat"}

_FUNCTION_NAMES = (
    "operator.add", "operator.sub", "operator.mul", "operator.truediv", "operator.floordiv", "operator.neg",
    "operator.matmul", "operator.getitem", "operator.iadd", "builtins.getattr",
    "torch.flatten", "torch.cat", "torch.concat", "torch.stack", "torch.relu", "torch.sigmoid", "torch.tanh",
    "torch.add", "torch.sub", "torch.mul", "torch.matmul", "torch.reshape", "torch.permute", "torch.transpose",
    "torch.squeeze", "torch.unsqueeze", "torch.mean", "torch.sum", "torch.softmax", "torch.log_softmax",
    "torch.neg",
    *(f"torch.nn.functional.{f}" for f in (
        "relu", "relu6", "leaky_relu", "gelu", "silu", "elu", "sigmoid", "tanh", "softmax", "log_softmax",
        "dropout", "max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d",
        "adaptive_avg_pool2d", "interpolate", "linear", "conv1d", "conv2d", "batch_norm", "layer_norm",
        "embedding", "pad")),
    "dlv.sum", "dlv.product",
)
_METHODS = frozenset({
    "view", "reshape", "flatten", "size", "dim", "relu", "sigmoid", "tanh", "softmax", "log_softmax", "mean",
    "sum", "permute", "transpose", "contiguous", "squeeze", "unsqueeze", "add", "sub", "mul", "div", "matmul",
    "neg", "float", "t", "view_as", "reshape_as", "expand", "repeat", "chunk", "split", "__getitem__"})
#: The only attributes a stored `getattr` node may read (fx records `x.shape` so).
_GETATTR_NAMES = frozenset({"shape", "dtype", "ndim", "T"})
_OPS = ("input", "module", "function", "method", "attr", "output")


# ------------------------------------------------------------------ validation
def _fail(what: str, msg: str):
    raise BadInput(f"{what}: {msg}")


def validate(net: Any, what: str = "network definition") -> dict:
    """Check the stored form (see docs/dlv.md) and return it; BadInput names the first problem."""
    if not isinstance(net, dict):
        _fail(what, "not a JSON object")
    if net.get("format") != FORMAT:
        _fail(what, f"unknown format {net.get('format')!r} (this pas reads {FORMAT})")
    if net.get("kind") not in ("graph", "tree"):
        _fail(what, "kind must be 'graph' or 'tree'")
    nodes, edges = net.get("nodes"), net.get("edges")
    if not isinstance(nodes, list) or not isinstance(edges, list):
        _fail(what, "nodes and edges must be lists")
    if len(nodes) > MAX_NODES:
        _fail(what, f"{len(nodes)} nodes (max {MAX_NODES})")
    ids: set[str] = set()
    for n in nodes:
        if not isinstance(n, dict) or not isinstance(n.get("id"), str) or not n["id"]:
            _fail(what, "every node needs a non-empty string id")
        if n["id"] in ids:
            _fail(what, f"node id {n['id'][:100]!r} is used twice")
        ids.add(n["id"])
        if n.get("op") not in _OPS or not isinstance(n.get("type"), str):
            _fail(what, f"node {n['id'][:100]!r}: op must be one of {', '.join(_OPS)} and type a string")
        for key in ("params", "attrs", "kwargs"):
            if not isinstance(n.get(key, {}), dict):
                _fail(what, f"node {n['id'][:100]!r}: {key} must be an object")
        if not isinstance(n.get("args", []), list) or not isinstance(n.get("target", ""), str):
            _fail(what, f"node {n['id'][:100]!r}: args must be a list and target a string")
    for e in edges:
        if not (isinstance(e, list) and len(e) == 2 and all(isinstance(x, str) for x in e)):
            _fail(what, "every edge is a [from, to] pair of node ids")
        if e[0] not in ids or e[1] not in ids:
            _fail(what, f"edge {e[0][:100]!r} -> {e[1][:100]!r} names a node that does not exist")
    if net["kind"] == "graph":
        for n in nodes:
            for ref in _refs(n.get("args", [])) + _refs(n.get("kwargs", {})):
                if ref not in ids:
                    _fail(what, f"node {n['id'][:100]!r} reads node {ref[:100]!r}, which does not exist")
        order = topological(nodes, edges)
        if order is None:
            _fail(what, "the graph has a cycle")
    return net


def _refs(value: Any) -> list[str]:
    """Node ids an encoded argument refers to."""
    if isinstance(value, dict):
        if set(value) == {"node"} and isinstance(value["node"], str):
            return [value["node"]]
        return [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


def topological(nodes: list[dict], edges: list[list[str]]) -> list[str] | None:
    """Node ids in an order where every edge goes forward (stable: ties keep the given order); None on a cycle."""
    pos = {n["id"]: i for i, n in enumerate(nodes)}
    indeg = {n["id"]: 0 for n in nodes}
    out: dict[str, list[str]] = {n["id"]: [] for n in nodes}
    for a, b in edges:
        out[a].append(b)
        indeg[b] += 1
    import heapq
    ready = [(pos[i], i) for i, d in indeg.items() if d == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, i = heapq.heappop(ready)
        order.append(i)
        for j in out[i]:
            indeg[j] -= 1
            if indeg[j] == 0:
                heapq.heappush(ready, (pos[j], j))
    return order if len(order) == len(nodes) else None


def encode(net: dict) -> bytes:
    """The stored bytes (canonical JSON: the same network is the same object, stored once)."""
    return json.dumps(net, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def decode(data: bytes, what: str = "stored network definition") -> dict:
    try:
        net = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadInput(f"{what}: not JSON: {exc}") from None
    return validate(net, what)


# ---------------------------------------------------------- hand-written graphs
def parse(data: bytes, name: str) -> dict:
    """A layer graph from JSON/YAML: ``nodes`` (``id``/``name``, ``type``, ``params``, ``attrs``)
    and ``edges`` (``[from, to]`` or ``{from:, to:}``); without edges, the
    nodes form a chain in order. Input/Output nodes are added to a chain
    that lacks them. Stored forms (``format``/``kind`` present) are taken as they are."""
    from .metadata import load_mapping
    doc = load_mapping(data, name)
    if "format" in doc and "kind" in doc:
        return validate(doc, name)
    nodes_in = doc.get("nodes", doc.get("layers"))
    if not isinstance(nodes_in, list) or not nodes_in:
        _fail(name, "a layer graph needs a non-empty list 'nodes' (or 'layers')")
    nodes = []
    for i, n in enumerate(nodes_in):
        if not isinstance(n, dict):
            _fail(name, f"node {i} is not an object")
        nid = n.get("id", n.get("name"))
        typ = n.get("type")
        if not isinstance(nid, str) or not nid or not isinstance(typ, str) or not typ:
            _fail(name, f"node {i} needs a string id (or name) and type")
        params = n.get("params", {})
        attrs = n.get("attrs", {})
        if not isinstance(params, dict) or not isinstance(attrs, dict):
            _fail(name, f"node {nid!r}: params and attrs must be mappings")
        nodes.append({"id": nid, "type": typ, "params": params, "attrs": attrs, "target": n.get("target", nid)})
    edges_in = doc.get("edges")
    if edges_in is None:
        if nodes[0]["type"] != "Input":
            nodes.insert(0, {"id": _free_id("input", nodes), "type": "Input", "params": {}, "attrs": {}})
        if nodes[-1]["type"] != "Output":
            nodes.append({"id": _free_id("output", nodes), "type": "Output", "params": {}, "attrs": {}})
        edges = [[a["id"], b["id"]] for a, b in zip(nodes, nodes[1:])]
    elif isinstance(edges_in, list):
        edges = []
        for e in edges_in:
            if isinstance(e, dict):
                e = [e.get("from"), e.get("to")]
            if not (isinstance(e, list) and len(e) == 2 and all(isinstance(x, str) for x in e)):
                _fail(name, "every edge is [from, to] or {from: .., to: ..} with node ids")
            edges.append(list(e))
    else:
        _fail(name, "edges must be a list")
    ids = [n["id"] for n in nodes]
    if len(set(ids)) != len(ids):
        _fail(name, "node ids must be unique")
    known = set(ids)
    for a, b in edges:
        if a not in known or b not in known:
            _fail(name, f"edge {a!r} -> {b!r} names a node that does not exist")
    preds: dict[str, list[str]] = {i: [] for i in ids}
    for a, b in edges:
        preds[b].append(a)
    out = []
    for n in nodes:
        typ, ins = n["type"], [{"node": p} for p in preds[n["id"]]]
        node = {"id": n["id"], "type": typ, "params": n["params"], "attrs": dict(n["attrs"])}
        if typ == "Input":
            node.update(op="input", target=n["id"], args=[])
        elif typ == "Output":
            if len(ins) != 1:
                _fail(name, f"output node {n['id']!r} needs exactly one input, has {len(ins)}")
            node.update(op="output", target="output", args=ins)
        elif typ in GRAPH_FUNCTIONS:
            if len(ins) < 1:
                _fail(name, f"node {n['id']!r} ({typ}) needs inputs")
            node.update(op="function", target=GRAPH_FUNCTIONS[typ],
                        args=[ins] if typ == "Concat" else ins,
                        kwargs={"dim": n["params"].get("dim", 1)} if typ == "Concat" else {})
        else:
            if len(ins) != 1:
                _fail(name, f"layer {n['id']!r} ({typ}) needs exactly one input, has {len(ins)}")
            node.update(op="module", target=n["target"] if isinstance(n.get("target"), str) else n["id"], args=ins)
            node["attrs"].update(_layer_attrs(typ))
        out.append(node)
    net = {"format": FORMAT, "kind": "graph", "source": "file", "nodes": out, "edges": edges}
    if not any(n["op"] == "input" for n in out) or not any(n["op"] == "output" for n in out):
        _fail(name, "the graph needs an Input and an Output node")
    return validate(net, name)


def _free_id(base: str, nodes: list[dict]) -> str:
    ids = {n["id"] for n in nodes}
    name, i = base, 1
    while name in ids:
        i += 1
        name = f"{base}{i}"
    return name


def _layer_attrs(typ: str) -> dict:
    """Attributes DQL selects on (the paper's POOL("MAX")): the pooling kind."""
    low = typ.lower()
    if "pool" in low:
        return {"pool": "max" if "max" in low else "avg" if "avg" in low else low}
    return {}


# ---------------------------------------------------------------- extraction
def extract(module, example_class: str | None = None) -> dict:
    """The network of a torch module: fx graph if it traces, else its module tree.

    Traced in eval mode (the graph of inference: a functional dropout that
    reads ``self.training`` is recorded with training=False)."""
    import torch
    from torch import fx, nn
    if not isinstance(module, nn.Module):
        raise BadInput(f"not a torch nn.Module: {type(module).__name__}")
    was_training = module.training
    module.eval()
    try:
        gm = fx.symbolic_trace(module)
    except Exception as exc:
        net = _tree(module)
        net["trace_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        return validate(net)
    finally:
        module.train(was_training)
    modules = dict(gm.named_modules())
    nodes, edges = [], []
    for node in gm.graph.nodes:
        d: dict[str, Any] = {"id": node.name, "params": {}, "attrs": {}}
        problems: list[str] = []
        d["args"] = [_enc(a, problems) for a in node.args]
        d["kwargs"] = {k: _enc(v, problems) for k, v in node.kwargs.items()}
        if node.op == "placeholder":
            d.update(op="input", type="Input", target=str(node.target))
            d["args"], d["kwargs"] = [], {}
        elif node.op == "output":
            d.update(op="output", type="Output", target="output")
        elif node.op == "call_module":
            m = modules[node.target]
            typ = type(m).__name__
            d.update(op="module", type=typ, target=str(node.target))
            d["params"] = _module_params(m, problems)
            d["attrs"].update(_layer_attrs(typ))
        elif node.op == "call_function":
            fname = _function_name(node.target)
            d.update(op="function", type=fname.rsplit(".", 1)[-1], target=fname)
            if fname not in _FUNCTION_NAMES:
                problems.append(f"function {fname} is not supported")
            d["attrs"].update(_layer_attrs(d["type"]))
        elif node.op == "call_method":
            d.update(op="method", type=str(node.target), target=str(node.target))
            if node.target not in _METHODS:
                problems.append(f"method Tensor.{node.target} is not supported")
        elif node.op == "get_attr":
            t = gm.get_parameter(node.target) if _is_param(gm, node.target) else _get_path(gm, node.target)
            d.update(op="attr", type="Parameter" if isinstance(t, nn.Parameter) else "Buffer", target=str(node.target))
            if isinstance(t, torch.Tensor):
                d["attrs"].update(shape=list(t.shape), dtype=str(t.dtype).replace("torch.", ""))
            else:
                problems.append(f"attribute {node.target} is not a tensor")
        if problems:
            d["unsupported"] = "; ".join(problems)
        nodes.append(d)
        for inp in node.all_input_nodes:
            if [inp.name, node.name] not in edges:
                edges.append([inp.name, node.name])
    net = {"format": FORMAT, "kind": "graph", "source": "fx", "class": type(module).__name__,
           "nodes": nodes, "edges": edges}
    return validate(net)


def _is_param(gm, target: str) -> bool:
    try:
        gm.get_parameter(target)
        return True
    except AttributeError:
        return False


def _get_path(root, path: str):
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _tree(module) -> dict:
    nodes, edges = [], []
    for path, m in module.named_modules():
        nid = path or "<root>"
        problems: list[str] = []
        typ = type(m).__name__
        d = {"id": nid, "op": "module", "type": typ, "target": path, "args": [], "kwargs": {},
             "params": _module_params(m, problems) if typ in MODULE_PARAMS else {}, "attrs": _layer_attrs(typ)}
        nodes.append(d)
        if path:
            parent = path.rsplit(".", 1)[0] if "." in path else "<root>"
            edges.append([parent, nid])
    return {"format": FORMAT, "kind": "tree", "source": "modules", "class": type(module).__name__,
            "nodes": nodes, "edges": edges}


def _module_params(m, problems: list[str]) -> dict:
    from torch import nn
    typ = type(m).__name__
    names = MODULE_PARAMS.get(typ)
    if names is None or type(m) is not getattr(nn, typ, None):
        problems.append(f"layer type {typ} is not supported")
        return {}
    out = {}
    for name in names:
        if name == "bias":
            out[name] = getattr(m, "bias", None) is not None
            continue
        if not hasattr(m, name):
            continue
        out[name] = _plain(_enc(getattr(m, name), problems))
    return out


def _plain(v: Any) -> Any:
    """Constructor parameters read as plain JSON (kernel_size [3, 3], not a tagged tuple):
    what people and DQL read; `_params` turns lists back into tuples."""
    if isinstance(v, dict) and set(v) == {"tuple"}:
        return [_plain(x) for x in v["tuple"]]
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _function_name(target) -> str:
    table = _function_table()
    for name, fn in table.items():
        if fn is target:
            return name
    mod = getattr(target, "__module__", None) or "?"
    return f"{mod}.{getattr(target, '__qualname__', getattr(target, '__name__', repr(target)))}"


_TABLE: dict | None = None


def _function_table() -> dict:
    global _TABLE
    if _TABLE is None:
        import builtins
        import operator

        import torch
        import torch.nn.functional as F
        table = {}
        for name in _FUNCTION_NAMES:
            mod, _, attr = name.rpartition(".")
            if mod == "dlv":
                table[name] = {"sum": _sum, "product": _product}[attr]
            else:
                base = {"operator": operator, "builtins": builtins, "torch": torch, "torch.nn.functional": F}[mod]
                if hasattr(base, attr):
                    table[name] = getattr(base, attr)
        _TABLE = table
    return _TABLE


def _sum(*xs):
    """n-ary Add of a hand-written graph (a residual join), left to right."""
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


def _product(*xs):
    out = xs[0]
    for x in xs[1:]:
        out = out * x
    return out


def _enc(v: Any, problems: list[str]) -> Any:
    """An fx argument as JSON (node refs, tuples, slices, dtypes tagged)."""
    import torch
    from torch import fx
    if isinstance(v, fx.Node):
        return {"node": v.name}
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else {"float": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}
    if isinstance(v, tuple):
        return {"tuple": [_enc(x, problems) for x in v]}
    if isinstance(v, list):
        return [_enc(x, problems) for x in v]
    if isinstance(v, slice):
        return {"slice": [_enc(v.start, problems), _enc(v.stop, problems), _enc(v.step, problems)]}
    if v is Ellipsis:
        return {"ellipsis": True}
    if isinstance(v, torch.dtype):
        return {"dtype": str(v).replace("torch.", "")}
    if isinstance(v, torch.Size):
        return {"tuple": list(v)}
    problems.append(f"an argument of type {type(v).__name__} cannot be stored")
    return {"repr": repr(v)[:200]}


def _dec(v: Any, env: dict, what: str) -> Any:
    import torch
    if isinstance(v, list):
        return [_dec(x, env, what) for x in v]
    if not isinstance(v, dict):
        return v
    if set(v) == {"node"}:
        return env[v["node"]]
    if set(v) == {"tuple"} and isinstance(v["tuple"], list):
        return tuple(_dec(x, env, what) for x in v["tuple"])
    if set(v) == {"slice"} and isinstance(v["slice"], list) and len(v["slice"]) == 3:
        return slice(*(_dec(x, env, what) for x in v["slice"]))
    if set(v) == {"ellipsis"}:
        return Ellipsis
    if set(v) == {"float"} and v["float"] in ("nan", "inf", "-inf"):
        return float(v["float"])
    if set(v) == {"dtype"} and isinstance(v["dtype"], str):
        dt = getattr(torch, v["dtype"], None)
        if isinstance(dt, torch.dtype):
            return dt
    raise BadInput(f"{what}: an argument {json.dumps(v)[:100]} cannot be rebuilt")


def _params(v: Any) -> Any:
    """Stored constructor parameters as torch expects them (lists back to tuples)."""
    if isinstance(v, dict) and set(v) == {"tuple"}:
        return tuple(_params(x) for x in v["tuple"])
    if isinstance(v, dict) and set(v) == {"float"}:
        return float(v["float"])
    if isinstance(v, list):
        return tuple(_params(x) for x in v)
    return v


# ------------------------------------------------------------------- rebuild
def rebuild_problems(net: dict) -> list[str]:
    """Why `build` would refuse this network ([] if it can rebuild it)."""
    if net["kind"] != "graph":
        why = f" (torch.fx could not trace it: {net['trace_error']})" if net.get("trace_error") else ""
        return [f"the network is stored as a module tree{why}; only traced or hand-written graphs can be rebuilt"]
    out = []
    for n in net["nodes"]:
        if n.get("unsupported"):
            out.append(f"node {n['id']}: {n['unsupported']}")
        elif n["op"] == "module" and n["type"] not in MODULE_PARAMS:
            out.append(f"node {n['id']}: layer type {n['type']} is not supported")
        elif n["op"] == "function" and n["target"] not in _FUNCTION_NAMES:
            out.append(f"node {n['id']}: function {n['target']} is not supported")
        elif n["op"] == "method" and n["target"] not in _METHODS:
            out.append(f"node {n['id']}: method {n['target']} is not supported")
        elif n["op"] == "function" and n["target"] == "builtins.getattr":
            args = n.get("args", [])
            if len(args) != 2 or args[1] not in _GETATTR_NAMES:
                out.append(f"node {n['id']}: getattr of {str(args[1:])[:40]} is not supported")
    return out


def build(net: dict):
    """A runnable torch module (fx GraphModule) for a ``graph`` network; parameters freshly initialised.

    Module nodes become submodules at their ``target`` paths, so the
    state_dict names are those of the module the network was traced from."""
    import torch
    from torch import fx, nn
    problems = rebuild_problems(net)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise BadInput("cannot rebuild the network: " + "; ".join(problems[:3]) + more)
    specs, attrs = _specs(net)
    # Construct on the meta device first: bad parameters fail and sizes are
    # known before any memory is allocated (a hostile graph may ask for 10^12).
    total = sum(math.prod(shape) for shape in _meta_state(specs, attrs).values())
    if total > MAX_BUILD_ELEMENTS:
        raise BadInput(f"cannot rebuild the network: {total:,} parameters (max {MAX_BUILD_ELEMENTS:,})")
    root = nn.Module()
    for path, (typ, params) in specs.items():
        _install(root, path, _construct(nn, typ, params, path))
    for path, n in attrs.items():
        dtype = getattr(torch, n["attrs"].get("dtype", "float32"), torch.float32)
        if not isinstance(dtype, torch.dtype):
            raise BadInput(f"cannot rebuild the network: attribute {path!r} has a bad dtype")
        t = torch.zeros(_shape(n), dtype=dtype)
        parent, _, leaf = path.rpartition(".")
        holder = _container(root, parent)
        if n["type"] == "Parameter":
            holder.register_parameter(leaf, nn.Parameter(t, requires_grad=t.is_floating_point()))
        else:
            holder.register_buffer(leaf, t)
    graph = fx.Graph()
    env: dict[str, Any] = {}
    table = _function_table()
    by_id = {n["id"]: n for n in net["nodes"]}
    for nid in topological(net["nodes"], net["edges"]):
        n = by_id[nid]
        what = f"node {nid}"
        args = tuple(_dec(a, env, what) for a in n.get("args", []))
        kwargs = {k: _dec(v, env, what) for k, v in n.get("kwargs", {}).items()}
        op = n["op"]
        if op == "input":
            env[nid] = graph.placeholder(_py_name(nid, env))
        elif op == "module":
            env[nid] = graph.call_module(n["target"], args, kwargs)
        elif op == "function":
            env[nid] = graph.call_function(table[n["target"]], args, kwargs)
        elif op == "method":
            env[nid] = graph.call_method(n["target"], args, kwargs)
        elif op == "attr":
            env[nid] = graph.get_attr(n["target"])
        elif op == "output":
            env[nid] = graph.output(args[0] if args else None)
    if not any(n["op"] == "output" for n in net["nodes"]):
        raise BadInput("cannot rebuild the network: it has no output node")
    try:
        graph.lint()
        return fx.GraphModule(root, graph, class_name=_py_name(net.get("class") or "DlvNetwork", {}))
    except Exception as exc:
        raise BadInput(f"cannot rebuild the network: {type(exc).__name__}: {str(exc)[:300]}") from None


def _specs(net: dict) -> tuple[dict[str, tuple[str, dict]], dict[str, dict]]:
    """Layers by module path (type, params) and bare parameters by path."""
    specs: dict[str, tuple[str, dict]] = {}
    attrs: dict[str, dict] = {}
    for n in net["nodes"]:
        if n["op"] == "module":
            spec = (n["type"], n.get("params", {}))
            if specs.setdefault(n["target"], spec) != spec:
                raise BadInput(f"cannot rebuild the network: module {n['target']!r} is given two definitions")
        elif n["op"] == "attr":
            attrs[n["target"]] = n
    return specs, attrs


def _meta_state(specs: dict, attrs: dict) -> dict[str, tuple[int, ...]]:
    """The state_dict names and shapes the network's layers have, built on the meta device (no memory)."""
    import torch
    from torch import nn
    out: dict[str, tuple[int, ...]] = {}
    with torch.device("meta"):
        for path, (typ, params) in specs.items():
            for k, t in _construct(nn, typ, params, path).state_dict().items():
                out[f"{path}.{k}"] = tuple(t.shape)
    for path, n in attrs.items():
        out[path] = tuple(_shape(n))
    return out


def check_weights(net: dict, shapes: dict[str, tuple[int, ...]]) -> None:
    """BadInput unless ``shapes`` (tensor name -> shape) holds every parameter and buffer
    the network's layers have, with their shapes (BN's num_batches_tracked may be
    missing; extra tensors are fine). Networks that cannot be rebuilt are not checked."""
    if rebuild_problems(net):
        return
    specs, attrs = _specs(net)
    want = _meta_state(specs, attrs)
    missing = [k for k in want if k not in shapes and not k.endswith("num_batches_tracked")]
    wrong = [k for k in want if k in shapes and tuple(shapes[k]) != want[k]]
    if missing or wrong:
        parts = []
        if missing:
            parts.append(f"the weights have no {missing[0]!r}" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
        if wrong:
            k = wrong[0]
            parts.append(f"{k!r} is {tuple(shapes[k])} in the weights, {want[k]} in the network"
                         + (f" (+{len(wrong) - 1} more)" if len(wrong) > 1 else ""))
        raise BadInput("the network and the weights disagree: " + "; ".join(parts))


def _shape(n: dict) -> list[int]:
    shape = n.get("attrs", {}).get("shape")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise BadInput(f"cannot rebuild the network: attribute node {n['id']!r} has no valid shape")
    return shape


def _construct(nn, typ: str, params: dict, path: str):
    cls = getattr(nn, typ)
    kwargs = {k: _params(v) for k, v in params.items()}
    if typ in ("Linear", "Conv1d", "Conv2d", "LayerNorm") and "bias" in kwargs:
        kwargs["bias"] = bool(kwargs["bias"])
    try:
        return cls(**kwargs)
    except Exception as exc:
        raise BadInput(f"cannot rebuild layer {path!r} ({typ}) from {json.dumps(params)[:200]}: "
                       f"{type(exc).__name__}: {str(exc)[:200]}") from None


def _container(root, path: str):
    from torch import nn
    holder = root
    for part in [p for p in path.split(".") if p] if path else []:
        nxt = holder._modules.get(part)
        if nxt is None:
            nxt = nn.Module()
            holder.add_module(part, nxt)
        holder = nxt
    return holder


def _install(root, path: str, module) -> None:
    parent, _, leaf = path.rpartition(".")
    if not leaf:
        raise BadInput("cannot rebuild the network: a layer has an empty module path")
    try:
        _container(root, parent).add_module(leaf, module)
    except (KeyError, TypeError) as exc:
        raise BadInput(f"cannot rebuild the network: bad module path {path!r}: {exc}") from None


def _py_name(name: str, taken: dict) -> str:
    import re
    s = re.sub(r"\W", "_", name) or "x"
    return "_" + s if s[0].isdigit() else s


# ---------------------------------------------------------------- inspection
def layers(net: dict, tensors: list) -> list[dict]:
    """Per layer node: id, type, params, attrs, and the version's tensors under its
    module path (name, dtype, shape, count) — read from the manifest, no weights read."""
    by_prefix: dict[str, list] = {}
    for e in tensors:
        by_prefix.setdefault(e.name.rpartition(".")[0], []).append(e)
    out = []
    for n in net["nodes"]:
        if n["op"] not in ("module", "attr"):
            continue
        if n["op"] == "attr":
            ts = [e for e in tensors if e.name == n["target"]]
        else:
            ts = by_prefix.get(n["target"], [])
        rows = [{"name": e.name, "dtype": e.out_dtype, "shape": list(e.shape), "count": math.prod(e.shape)}
                for e in ts]
        out.append({"id": n["id"], "type": n["type"], "target": n["target"], "params": n.get("params", {}),
                    "attrs": n.get("attrs", {}), "tensors": rows, "count": sum(r["count"] for r in rows)})
    return out


def diff(a: dict | None, b: dict | None) -> dict:
    """Network differences: nodes added/removed/changed (type, params, target, inputs), edges added/removed."""
    if a is None or b is None:
        return {"a": a is not None, "b": b is not None, "same": a is None and b is None}
    na, nb = {n["id"]: n for n in a["nodes"]}, {n["id"]: n for n in b["nodes"]}
    changed = []
    for nid in na.keys() & nb.keys():
        x, y = na[nid], nb[nid]
        fields = [k for k in ("op", "type", "target", "params", "attrs", "args", "kwargs") if x.get(k) != y.get(k)]
        if fields:
            changed.append({"id": nid, "fields": fields,
                            "a": {k: x.get(k) for k in fields}, "b": {k: y.get(k) for k in fields}})
    ea, eb = {tuple(e) for e in a["edges"]}, {tuple(e) for e in b["edges"]}
    out = {"added": sorted(nb.keys() - na.keys()), "removed": sorted(na.keys() - nb.keys()),
           "changed": sorted(changed, key=lambda c: c["id"]),
           "edges_added": sorted(list(e) for e in eb - ea), "edges_removed": sorted(list(e) for e in ea - eb)}
    out["same"] = not any(out.values())
    return out


def load_weights(model, tensors: dict) -> None:
    """Install ``tensors`` (name -> torch tensor, e.g. `pas.api.to_torch`) into ``model``:
    every parameter and buffer must be given (BN's num_batches_tracked may be
    missing) with its shape; values are cast to the model's dtype."""
    state = model.state_dict()
    missing = [k for k in state if k not in tensors and not k.endswith("num_batches_tracked")]
    if missing:
        raise BadInput(f"the version has no tensor {missing[0]!r} the network needs "
                       f"({len(missing)} missing)")
    new = {}
    for k, cur in state.items():
        if k not in tensors:
            continue
        t = tensors[k]
        if tuple(t.shape) != tuple(cur.shape):
            raise BadInput(f"tensor {k!r}: the version has shape {tuple(t.shape)}, the network {tuple(cur.shape)}")
        new[k] = t if t.dtype == cur.dtype else t.to(cur.dtype)
    model.load_state_dict(new, strict=False)
