"""A version's network as DQL sees it: named layers, edges, and template matching.

Layers are the nodes of the stored network definition (`pas.dlv.netdef`:
``{"id", "op", "type", "target", "params", ...}`` and ``[from, to]`` edges)
other than its inputs and outputs; a layer's name is its node id. Templates
(``POOL("MAX")``, ``RELU()``, ``CONV(kernel_size=3)``) match layers by kind:
a module of that type, or the function or method that does the same thing.
"""
from __future__ import annotations

from . import patterns
from .ast import Selector, Template
from .errors import DQLSemanticError

#: Template kind -> (module types, function/method names) it matches.
KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "CONV": (("Conv1d", "Conv2d"), ("conv1d", "conv2d")),
    "LINEAR": (("Linear",), ("linear",)),
    "POOL": (("MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d",
              "AdaptiveMaxPool1d", "AdaptiveMaxPool2d"),
             ("max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d")),
    "RELU": (("ReLU", "ReLU6", "LeakyReLU"), ("relu", "relu6", "leaky_relu")),
    "SIGMOID": (("Sigmoid",), ("sigmoid",)),
    "TANH": (("Tanh",), ("tanh",)),
    "GELU": (("GELU",), ("gelu",)),
    "SILU": (("SiLU",), ("silu",)),
    "SOFTMAX": (("Softmax", "LogSoftmax"), ("softmax", "log_softmax")),
    "BN": (("BatchNorm1d", "BatchNorm2d"), ("batch_norm",)),
    "LAYERNORM": (("LayerNorm",), ("layer_norm",)),
    "DROPOUT": (("Dropout", "Dropout1d", "Dropout2d"), ("dropout",)),
    "FLATTEN": (("Flatten",), ("flatten",)),
    "EMBEDDING": (("Embedding",), ("embedding",)),
    "IDENTITY": (("Identity",), ()),
}
KINDS["FC"] = KINDS["IP"] = KINDS["LINEAR"]       # the paper's Caffe names
KINDS["BATCHNORM"] = KINDS["BN"]
#: POOL's first argument: which pooling.
POOL_KINDS = {"MAX": "max", "AVG": "avg", "AVERAGE": "avg"}


def template_kind(t: Template) -> tuple[tuple[str, ...], tuple[str, ...]]:
    kind = KINDS.get(t.kind)
    if kind is None:
        raise DQLSemanticError(f"unknown layer type {t.kind}(...); known: {', '.join(sorted(KINDS))}", *t.pos)
    return kind


class Network:
    """Layers and edges of one stored network definition."""

    def __init__(self, net: dict):
        self.kind = net["kind"]
        self.nodes = {n["id"]: n for n in net["nodes"]}
        self.layer_ids = [n["id"] for n in net["nodes"] if n["op"] not in ("input", "output")]
        self.succ: dict[str, list[str]] = {i: [] for i in self.nodes}
        self.pred: dict[str, list[str]] = {i: [] for i in self.nodes}
        for a, b in net["edges"]:
            self.succ[a].append(b)
            self.pred[b].append(a)

    def select(self, sel: Selector, captures: dict[str, str]) -> list[tuple[str, dict[str, str]]]:
        """(layer id, captures) of every layer the selector reaches: the pattern's
        matches whose captures agree with those already bound, each moved along
        its hops (``next``: every successor)."""
        out = []
        try:
            hits = patterns.match(sel.pattern, self.layer_ids, captures)
        except DQLSemanticError as e:
            raise DQLSemanticError(e.bare_message, *sel.pos) from None
        for layer, caps in hits:
            if any(captures.get(k, v) != v for k, v in caps.items()):
                continue   # a capture bound earlier in the statement must agree
            ids = [layer]
            for hop in sel.hops:
                step = self.succ if hop == "next" else self.pred
                ids = [j for i in ids for j in step[i] if self.nodes[j]["op"] not in ("input", "output")]
            out += [(i, {**captures, **caps}) for i in ids]
        return out

    def matches(self, layer: str, t: Template) -> bool:
        """Whether a layer is of the template's kind (and its arguments, where they say something)."""
        modules, functions = template_kind(t)
        n = self.nodes[layer]
        typ = n["type"]
        if n["op"] == "module":
            ok = typ in modules
            name = typ.lower()
        else:
            name = typ.rpartition(".")[2].lower()
            ok = name in functions
        if not ok:
            return False
        if t.kind == "POOL" and t.args:
            want = POOL_KINDS.get(str(t.args[0]).upper())
            if want is None:
                raise DQLSemanticError(f'POOL takes "MAX" or "AVG", not {t.args[0]!r}', *t.pos)
            if want not in name.replace("adaptive", ""):
                return False
        params = n.get("params", {})
        for key, value in t.kwargs:
            have = params.get(key)
            if isinstance(have, list) and not isinstance(value, tuple):   # kernel_size=3 matches [3, 3]
                if any(h != value for h in have):
                    return False
            elif have != (list(value) if isinstance(value, tuple) else value):
                return False
        return True
