"""DQL evaluate: enumerate hyper-parameters, train every candidate on CPU,
eliminate early by the keep rule, commit the survivors.

The training configuration (``with config = "train.json"``, JSON or YAML;
every key optional):

    {"input_data": "digits.npz",  # arrays x (inputs) and y (integer labels)
     "iterations": 200,          # SGD steps per candidate
     "batch_size": 32, "base_lr": 0.01, "momentum": 0.9, "weight_decay": 0.0,
     "optimizer": "sgd",         # or "adam"
     "val_fraction": 0.2,        # the last share of the data, held out for accuracy
     "log_every": 10, "seed": 0,
     "net": {"conv*": {"lr": 0.1}}}   # per-layer learning-rate multipliers, by layer pattern

``vary config.KEY in [...]`` makes a grid axis; ``vary config.KEY auto``
searches it (rates and decays: a tenth, the value, ten times; other numbers:
half, the value, twice). ``vary config.net["conv*"].lr ...`` varies a
multiplier. Each candidate starts from its source version's weights
(fine-tuning: construct and slice keep them).

Early elimination (successive halving, the paper's "keep"): every candidate
trains to the rule's iteration; ``top(k, m["metric"], n)`` keeps the k best
there, ``threshold(m["metric"] < v, n)`` those that pass; only they train on
to ``iterations``. Metrics: ``loss`` (training loss, mean over the last
``log_every`` steps), ``accuracy`` and ``val_loss`` (on the held-out share),
``lr``. Survivors are committed as versions of ``<source>-<var>-<n>`` with
their hyper-parameters, training log and lineage.
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from . import ast as A
from . import patterns
from .errors import DQLError, DQLSemanticError

DEFAULTS = {"input_data": None, "iterations": None, "batch_size": 32, "base_lr": 0.01, "momentum": 0.9,
            "weight_decay": 0.0, "optimizer": "sgd", "val_fraction": 0.2, "log_every": 10, "seed": 0, "net": {}}
#: Metrics a keep rule may use, and which way is better.
METRICS = {"loss": "min", "val_loss": "min", "accuracy": "max", "lr": "max"}
MAX_CANDIDATES = 1000


@dataclass
class Candidate:
    source: object                       # ModelVersion trained from
    config: dict
    log: list[dict] = field(default_factory=list)
    iterations: int = 0
    state: dict | None = None            # model, optimizer, data position between rungs


def load_config(path: str | None, base: Path) -> dict:
    cfg = dict(DEFAULTS)
    if path is None:
        return cfg
    from pas.dlv.metadata import load_mapping
    p = (base / path) if not Path(path).is_absolute() else Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise DQLSemanticError(f"config {path!r}: {exc.strerror or exc}") from None
    doc = load_mapping(data, p.name)
    unknown = sorted(set(doc) - set(DEFAULTS))
    if unknown:
        raise DQLSemanticError(f"config {path!r}: unknown setting {unknown[0]!r} (known: {', '.join(sorted(DEFAULTS))})")
    cfg.update(doc)
    return cfg


def grid(cfg: dict, varies: tuple[A.Vary, ...]) -> list[dict]:
    """Every combination of the varied settings (grid for lists, `auto` expanded)."""
    axes = []
    for v in varies:
        steps = v.path.steps
        key = steps[0].name if isinstance(steps[0], A.Field) else None
        if key not in DEFAULTS or key == "net" and not (len(steps) == 3 and isinstance(steps[1], A.Key)
                                                          and isinstance(steps[2], A.Field) and steps[2].name == "lr"):
            raise DQLSemanticError(f"vary {v.path.text()}: settings are config.<key> ({', '.join(sorted(DEFAULTS))}) "
                                   'or config.net["pattern"].lr', *v.path.pos)
        if key != "net" and len(steps) != 1:
            raise DQLSemanticError(f"vary {v.path.text()}: {key} has no parts", *v.path.pos)
        current = _get(cfg, steps)
        values = v.values if v.values is not None else _auto(key if key != "net" else "lr", current, v)
        axes.append((steps, values))
    out = []
    for combo in itertools.product(*[vals for _, vals in axes]) if axes else [()]:
        c = json.loads(json.dumps(cfg))
        for (steps, _), value in zip(axes, combo):
            _set(c, steps, value)
        out.append(c)
        if len(out) > MAX_CANDIDATES:
            raise DQLSemanticError(f"the grid has more than {MAX_CANDIDATES} candidates")
    return out


def _get(cfg: dict, steps):
    if steps[0].name == "net":
        return cfg.get("net", {}).get(steps[1].key, {}).get("lr", 1.0)
    return cfg.get(steps[0].name)


def _set(cfg: dict, steps, value) -> None:
    if steps[0].name == "net":
        cfg.setdefault("net", {}).setdefault(str(steps[1].key), {})["lr"] = value
    else:
        cfg[steps[0].name] = value


def _auto(key: str, current, v: A.Vary) -> tuple:
    if isinstance(current, bool) or not isinstance(current, (int, float)) or current <= 0:
        raise DQLSemanticError(f"vary {v.path.text()} auto: needs a positive number to search around "
                               f"(it is {current!r}); give the values with 'in [...]'", *v.path.pos)
    if key.endswith("lr") or key.endswith("rate") or key.endswith("decay"):
        return (current / 10, current, current * 10)
    if isinstance(current, int):
        return tuple(sorted({max(1, current // 2), current, current * 2}))
    return (current / 2, current, current * 2)


def _check_config(c: dict, where: str) -> None:
    def positive_int(k):
        if isinstance(c[k], bool) or not isinstance(c[k], int) or c[k] < 1:
            raise DQLSemanticError(f"{where}: {k} must be a positive integer, not {c[k]!r}")
    for k in ("batch_size", "log_every"):
        positive_int(k)
    for k in ("base_lr", "momentum", "weight_decay", "val_fraction"):
        if isinstance(c[k], bool) or not isinstance(c[k], (int, float)) or not math.isfinite(c[k]) or c[k] < 0:
            raise DQLSemanticError(f"{where}: {k} must be a number >= 0, not {c[k]!r}")
    if not 0 < c["val_fraction"] < 1:
        raise DQLSemanticError(f"{where}: val_fraction must be between 0 and 1")
    if c["optimizer"] not in ("sgd", "adam"):
        raise DQLSemanticError(f"{where}: optimizer is 'sgd' or 'adam', not {c['optimizer']!r}")
    if not isinstance(c["input_data"], str):
        raise DQLSemanticError(f"{where}: input_data (an .npz with x and y) is not given")
    if not isinstance(c["net"], dict) or not all(isinstance(v, dict) and set(v) <= {"lr"} for v in c["net"].values()):
        raise DQLSemanticError(f'{where}: net is {{"pattern": {{"lr": multiplier}}}}')


class Trainer:
    """Trains candidates in rungs on CPU with torch; keeps per-candidate state between rungs."""

    def __init__(self, repo, base: Path):
        self.repo = repo
        self.base = base
        self._data: dict[str, tuple] = {}

    def data(self, c: dict):
        path = c["input_data"]
        key = (path, c["val_fraction"])
        if key not in self._data:
            import numpy as np
            import torch

            from pas.progressive.evaluate import load_npz
            p = (self.base / path) if not Path(path).is_absolute() else Path(path)
            x, y = load_npz(p)
            if y is None:
                raise DQLSemanticError(f"input_data {path!r} has no labels y")
            x = torch.as_tensor(np.asarray(x, dtype=np.float32))
            y = torch.as_tensor(np.asarray(y)).long()
            n_val = max(1, int(round(len(x) * c["val_fraction"])))
            if n_val >= len(x):
                raise DQLSemanticError(f"input_data {path!r}: {len(x)} rows leave none to train on")
            self._data[key] = (x[:-n_val], y[:-n_val], x[-n_val:], y[-n_val:])
        return self._data[key]

    def start(self, cand: Candidate) -> None:
        import torch

        from pas.api import to_torch
        from pas.dlv import netdef
        net = cand.source.network
        if net is None:
            raise DQLSemanticError(f"{cand.source.name}@{cand.source.short} has no network definition to train")
        torch.manual_seed(int(cand.config["seed"]))
        module = netdef.build(net)
        weights = {e.name: to_torch(self.repo.read_tensor(e), e.out_dtype) for e in cand.source.tensors}
        netdef.load_weights(module, weights)
        base_lr = float(cand.config["base_lr"])
        groups = []
        layer_of = {n["target"]: n["id"] for n in net["nodes"] if n["op"] == "module"}
        for pname, param in module.named_parameters():
            layer = layer_of.get(pname.rpartition(".")[0], pname)
            mult = 1.0
            for pattern, opts in cand.config["net"].items():
                if patterns.match(pattern, [layer]):
                    mult = float(opts.get("lr", 1.0))
            groups.append({"params": [param], "lr": base_lr * mult})
        opt_cls = torch.optim.SGD if cand.config["optimizer"] == "sgd" else torch.optim.Adam
        kw = {"momentum": float(cand.config["momentum"])} if cand.config["optimizer"] == "sgd" else {}
        optimizer = opt_cls(groups, lr=base_lr, weight_decay=float(cand.config["weight_decay"]), **kw)
        gen = torch.Generator().manual_seed(int(cand.config["seed"]))
        cand.state = {"module": module, "optimizer": optimizer, "gen": gen, "losses": []}

    def train_to(self, cand: Candidate, iterations: int) -> None:
        import torch
        c = cand.config
        xt, yt, xv, yv = self.data(c)
        if cand.state is None:
            self.start(cand)
        st = cand.state
        module, optimizer = st["module"], st["optimizer"]
        loss_fn = torch.nn.CrossEntropyLoss()
        while cand.iterations < iterations:
            module.train()
            idx = torch.randint(0, len(xt), (int(c["batch_size"]),), generator=st["gen"])
            optimizer.zero_grad()
            out = module(xt[idx])
            if out.dim() != 2:
                raise DQLError(f"evaluate trains classifiers: the network must return (batch, classes), "
                               f"not {tuple(out.shape)}")
            loss = loss_fn(out, yt[idx])
            loss.backward()
            optimizer.step()
            st["losses"].append(float(loss.detach()))
            cand.iterations += 1
            if cand.iterations % int(c["log_every"]) == 0 or cand.iterations == iterations:
                cand.log.append(self.measure(cand, xv, yv))

    def measure(self, cand: Candidate, xv, yv) -> dict:
        import torch
        st = cand.state
        module = st["module"]
        module.eval()
        with torch.no_grad():
            out = module(xv)
            val_loss = float(torch.nn.functional.cross_entropy(out, yv))
            acc = float((out.argmax(1) == yv).float().mean())
        recent = st["losses"][-int(cand.config["log_every"]):]
        return {"iteration": cand.iterations, "loss": sum(recent) / len(recent), "val_loss": val_loss,
                "accuracy": acc, "lr": float(cand.config["base_lr"])}


def metric_at(cand: Candidate, metric: str, iteration: int) -> float:
    for row in cand.log:
        if row["iteration"] == iteration:
            return row[metric]
    raise DQLError(f"no {metric} logged at iteration {iteration}")   # pragma: no cover - train_to logs it


def evaluate(repo, q: A.Evaluate, sources: list, base: Path) -> tuple[list[Candidate], dict]:
    """Train the grid over every source version, eliminating early; (survivors, statistics)."""
    cfg = load_config(q.config, base)
    configs = grid(cfg, q.varies)
    keep = q.keep
    if keep is not None and keep.metric not in METRICS:
        raise DQLSemanticError(f"keep on metric {keep.metric!r}: known metrics {', '.join(sorted(METRICS))}",
                               *keep.pos)
    total = cfg["iterations"] if cfg["iterations"] is not None else (keep.iterations if keep else None)
    if total is None:
        raise DQLSemanticError("how long to train? give iterations in the config, or a keep rule")
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise DQLSemanticError(f"iterations must be a positive integer, not {total!r}")
    for i, c in enumerate(configs):
        _check_config(c, f"candidate {i + 1}")
    cands = [Candidate(s, dict(c, iterations=total)) for s in sources for c in configs]
    if not cands:
        return [], {"candidates": 0, "trained_iterations": 0, "full_grid_iterations": 0}
    trainer = Trainer(repo, base)
    alive = list(cands)
    if keep is not None and keep.iterations < total:
        for cand in alive:
            trainer.train_to(cand, keep.iterations)
        alive = _apply_keep(alive, keep)
    elif keep is not None and keep.iterations > total:
        raise DQLSemanticError(f"keep at iteration {keep.iterations}, but candidates train {total}", *keep.pos)
    for cand in alive:
        trainer.train_to(cand, total)
    if keep is not None and keep.iterations == total:
        alive = _apply_keep(alive, keep)
    stats = {"candidates": len(cands), "survivors": len(alive),
             "trained_iterations": sum(c.iterations for c in cands), "full_grid_iterations": len(cands) * total}
    return alive, stats


def _apply_keep(cands: list[Candidate], keep: A.Keep) -> list[Candidate]:
    order = keep.order or METRICS[keep.metric]
    scored = [(metric_at(c, keep.metric, keep.iterations), i, c) for i, c in enumerate(cands)]
    scored = [s for s in scored if not math.isnan(s[0])]
    if keep.rule == "top":
        scored.sort(key=lambda s: (s[0] if order == "min" else -s[0], s[1]))
        return [c for _, _, c in scored[:keep.k]]
    ops = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
    return [c for v, _, c in scored if ops[keep.op](v, keep.value)]


def commit(repo, cand: Candidate, name: str, index: int, stats: dict) -> object:
    """The trained candidate as a new version: its weights, network, hyper-parameters and log."""
    from pas.dlv import metadata as md
    from pas.dlv import netdef
    from pas.dlv.model import FORMAT, HYPERPARAMS, INFO, LOG, NETWORK, ModelVersion
    from pas.snapshot import Snapshot, Tensor
    src = cand.source
    snap = Snapshot(format="safetensors")
    for k, t in cand.state["module"].state_dict().items():
        arr = t.detach().contiguous().numpy()
        snap.add(Tensor.from_array(k, arr))
    snap.files[NETWORK] = netdef.encode(src.network)
    hp = {k: v for k, v in cand.config.items() if v is not None}
    snap.files[HYPERPARAMS] = md.canonical_json(hp)
    snap.files[LOG] = md.encode_log(cand.log)
    snap.files[INFO] = md.canonical_json({"format": FORMAT, "kind": "evaluate", "from": src.id,
                                          "sources": {"weights": f"trained from {src.name}@{src.short}"},
                                          "dql": {"candidate": index, **stats}})
    res = repo.archive_snapshot(snap, name, parent=src.id,
                                message=f"dql evaluate: candidate {index} of {src.name}@{src.short}")
    return ModelVersion(repo, repo.version(res.version_id))
