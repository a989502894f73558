"""Progressive evaluation (ModelHub §IV-D): predict from the top byte planes of
the weights, fetch lower planes only for the inputs still undecided.

At each plane count k every float weight is known to lie in an interval
(`Repository.read_interval`); the interval forward pass (`interval.py`) bounds
every output; an input whose top-k classes are certain (`decide`, the paper's
Lemma 4) is final. The rest go on to k + 1 planes. At full precision the
weights are exact: an interval pass with exact weights decides all but true
float32 near-ties, which are evaluated by the very call the reference makes
(their batch of the ordinary float32 forward pass), so the predictions are
exactly those of `reference_predictions` on every input.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from .. import dtypes
from .. import reader as reader_mod
from ..errors import BadInput
from .errors import ModelMismatch
from .interval import Interval, IntervalNet

#: Dtypes read plane by plane (their values widen exactly to float32).
PROGRESSIVE_DTYPES = ("F32", "F16", "BF16")


@dataclass
class PlaneStep:
    """One round: every progressive weight known from its top ``planes`` planes
    (``exact``: the full-precision round)."""
    planes: int
    exact: bool
    evaluated: int          # inputs evaluated in this round
    decided: int            # of them, decided in this round
    undecided: int          # left for the next round
    undecided_share: float  # undecided / all inputs
    bytes_read: int | None  # stored bytes of the planes fetched in this round (None: not counted)
    seconds: float          # fetch + evaluation (byte accounting excluded)


@dataclass
class EvalResult:
    predictions: np.ndarray          # (N, top_k) class indices; top_k > 1: the set, ascending
    top_k: int
    progressive: bool
    steps: list[PlaneStep] = field(default_factory=list)
    bytes_read: int | None = None    # all rounds
    full_bytes: int | None = None    # what a full read of the same tensors touches
    seconds: float = 0.0
    accuracy: float | None = None    # top-k accuracy when labels are given
    layouts: dict = field(default_factory=dict)   # layout -> number of progressive tensors
    first_planes: int = 1
    near_ties: int = 0               # inputs decided by re-running their reference batch

    @property
    def labels(self) -> np.ndarray:
        return self.predictions[:, 0] if self.top_k == 1 else self.predictions

    def to_json(self) -> dict:
        return {"n": int(self.predictions.shape[0]), "top_k": self.top_k, "progressive": self.progressive,
                "first_planes": self.first_planes, "layouts": self.layouts,
                "steps": [asdict(s) for s in self.steps], "bytes_read": self.bytes_read,
                "full_bytes": self.full_bytes, "seconds": self.seconds, "accuracy": self.accuracy,
                "near_ties": self.near_ties, "predictions": self.predictions.tolist()}


# ---------------------------------------------------------------- decisions
def decide(lo: torch.Tensor, hi: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lemma 4, for top-k. Take S, the k classes with the largest lower bounds;
    the top-k set is certain iff the smallest lower bound in S is strictly
    greater than the largest upper bound outside S (then every value in S
    beats every value outside it, whatever the weights in their intervals;
    and if any set qualifies, it is this S). NaN bounds never decide.
    Returns (decided mask (N,), S as (N, k) sorted ascending)."""
    c = lo.shape[1]
    order = torch.argsort(lo, dim=1, descending=True, stable=True)
    top = order[:, :k]
    kth = lo.gather(1, top).amin(1)
    if c > k:
        rest = hi.gather(1, order[:, k:]).amax(1)
        ok = kth > rest
    else:
        ok = torch.ones(lo.shape[0], dtype=torch.bool)
    ok &= ~torch.isnan(lo).any(1) & ~torch.isnan(hi).any(1)
    return ok, top.sort(1).values


def exact_top(logits: torch.Tensor, k: int) -> torch.Tensor:
    """The reference's top-k from float32 logits: argmax for k = 1 (first index
    on ties), else the set torch.topk returns, ascending."""
    if k == 1:
        return logits.argmax(1, keepdim=True)
    return torch.topk(logits, k, dim=1).indices.sort(1).values


def reference_predictions(model: nn.Module, x: torch.Tensor, top_k: int = 1, batch_size: int = 256) -> np.ndarray:
    """Full-precision evaluation: the ordinary float32 forward pass in batches
    [0, B), [B, 2B), ... — what progressive predictions equal."""
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(x), batch_size):
            out.append(exact_top(model(x[s:s + batch_size]), top_k))
    return torch.cat(out).numpy() if out else np.zeros((0, top_k), np.int64)


# ------------------------------------------------------------------ inputs
def as_input(x) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x))
    if t.dim() == 0 or t.shape[0] == 0:
        raise BadInput("the inputs x must be an array with at least one row (one input per row)")
    if t.is_floating_point():
        return t.to(torch.float32).contiguous()
    if t.dtype == torch.bool or t.is_complex():
        raise BadInput(f"inputs of dtype {t.dtype} are not supported (float or integer)")
    return t.to(torch.int64).contiguous()


def load_npz(path) -> tuple[np.ndarray, np.ndarray | None]:
    """An .npz with array ``x`` (inputs, one per row) and optionally ``y`` (labels)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f.files:
                raise BadInput(f"{path}: no array 'x' (has {sorted(f.files)})")
            x = f["x"]
            y = f["y"] if "y" in f.files else None
    except BadInput:
        raise
    except FileNotFoundError:
        from ..errors import NotFound
        raise NotFound(f"{path}: no such file") from None
    except Exception as e:  # noqa: BLE001 - numpy raises many kinds on bad files
        raise BadInput(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from None
    if y is not None and (y.ndim != 1 or len(y) != len(x)):
        raise BadInput(f"{path}: y must be one label per row of x ({y.shape} vs {x.shape})")
    return x, y


# ------------------------------------------------------------- evaluation
def _entries(repo, ref, model: nn.Module, needed: list[str]) -> tuple[dict, dict]:
    version = repo.version(ref)
    entries = {e.name: e for e in version.tensors}
    state = model.state_dict()
    missing = [n for n in needed if n not in entries]
    if missing:
        raise ModelMismatch(f"version {version.id[:12]} has no tensor named {missing[0]!r}"
                            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                            + "; the model's state_dict names must match the version's tensors")
    for name in needed:
        e, t = entries[name], state[name]
        if tuple(e.shape) != tuple(t.shape):
            raise ModelMismatch(f"{name}: shape {tuple(e.shape)} in the version, {tuple(t.shape)} in the model")
        dt = dtypes.get(e.out_dtype)   # a lossy tensor: the dtype it decodes to
        if t.is_floating_point() != dt.is_float:
            raise ModelMismatch(f"{name}: dtype {e.out_dtype} in the version, {t.dtype} in the model")
    return entries, state


def _as_model_tensor(arr: np.ndarray, entry, like: torch.Tensor) -> torch.Tensor:
    """``arr``: the tensor as `Repository.read_tensor` gives it (lossy ones decoded)."""
    dt = dtypes.get(entry.out_dtype)
    if dt.name == "BF16":
        t = torch.from_numpy(reader_mod.float_values(arr.reshape(-1).view(np.uint16), dt))
    else:
        t = torch.from_numpy(np.ascontiguousarray(arr).reshape(-1))
    return t.reshape(tuple(entry.shape)).to(like.dtype)


def _load_exact(repo, entries, state, names) -> dict[str, torch.Tensor]:
    return {n: _as_model_tensor(repo.read_tensor(entries[n]), entries[n], state[n]) for n in names}


def _install(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    model.load_state_dict(weights, strict=False)


def evaluate(repo, ref, model: nn.Module, x, y=None, top_k: int = 1, progressive: bool = True,
             batch_size: int = 256, first_planes: int | None = None, count_bytes: bool = True) -> EvalResult:
    """Predictions (top-k) of ``model`` with the weights of version ``ref`` on
    inputs ``x`` (one per row), exactly those of full-precision evaluation
    (`reference_predictions`). ``progressive``: start from the top planes and
    read lower ones only while inputs are undecided (``first_planes``: where to
    start; default 1, or 2 when a weight keeps its sign in plane 1 — layout
    ``planes-exp``, where 1 plane bounds every weight symmetrically about 0 and
    decides nothing). The model's parameters are replaced by the version's;
    its state_dict names must match the version's tensors (other tensors of
    the version are ignored). The model is put in eval mode and otherwise
    left as it is (the exact rounds run on a copy holding the version's weights)."""
    t_start = time.perf_counter()
    if top_k < 1:
        raise BadInput("--top-k must be at least 1")
    if batch_size < 1:
        raise BadInput("the batch size must be at least 1")
    x_t = as_input(x)
    n = x_t.shape[0]
    if y is not None:
        y = np.asarray(y)
        if y.shape != (n,):
            raise BadInput(f"y must hold one label per input ({y.shape} vs {n} inputs)")
    model.eval()
    if not progressive:
        names = [nm for nm in model.state_dict() if not nm.endswith("num_batches_tracked")]
        entries, state = _entries(repo, ref, model, names)
        t0 = time.perf_counter()
        exact = copy.deepcopy(model)
        _install(exact, _load_exact(repo, entries, state, [nm for nm in state if nm in entries]))
        preds = reference_predictions(exact, x_t, top_k, batch_size)
        secs = time.perf_counter() - t0
        full = sum(repo.planes_stored_bytes(entries[nm], 64) for nm in state if nm in entries) if count_bytes else None
        res = EvalResult(preds, top_k, False, [PlaneStep(_max_planes(entries, names), True, n, n, 0, 0.0, full, secs)],
                         full, full, time.perf_counter() - t_start, first_planes=0)
        res.accuracy = _accuracy(preds, y)
        return res

    net = IntervalNet(model)
    entries, state = _entries(repo, ref, model, net.needed)
    others = [nm for nm in state if nm in entries and nm not in net.needed]
    # A lossy tensor is read whole (its codes have no float planes): its decoded values are exact points.
    prog = [nm for nm in net.needed if entries[nm].lossy is None and entries[nm].dtype in PROGRESSIVE_DTYPES
            and dtypes.get(entries[nm].dtype).itemsize > 1]
    whole = [nm for nm in net.needed if nm not in prog]
    if top_k > _classes(net, model, x_t):
        raise BadInput(f"--top-k {top_k} exceeds the number of classes")
    layouts: dict[str, str] = {nm: repo.reader.record(entries[nm].object)["layout"] for nm in prog}
    p_full = max([dtypes.get(entries[nm].dtype).itemsize for nm in prog] or [1])
    if first_planes is None:
        first_planes = 2 if any(layouts[nm] == "planes-exp" for nm in prog) else 1
    if not 1 <= first_planes <= p_full:
        raise BadInput(f"first planes must be in [1, {p_full}]")

    preds = np.full((n, top_k), -1, np.int64)
    todo = np.arange(n)
    steps: list[PlaneStep] = []
    counted: dict[str, int] = {}       # stored bytes counted per tensor so far
    fixed: dict[str, Interval] = {}    # exact tensors (read whole)
    total_bytes = 0
    acct = 0.0

    def account(names_k: dict[str, int]) -> int | None:
        nonlocal acct, total_bytes
        if not count_bytes:
            return None
        t = time.perf_counter()
        added = 0
        for nm, k in names_k.items():
            b = repo.planes_stored_bytes(entries[nm], k)
            added += b - counted.get(nm, 0)
            counted[nm] = b
        total_bytes += added
        acct += time.perf_counter() - t
        return added

    for k in range(first_planes, p_full):
        if len(todo) == 0:
            break
        t0 = time.perf_counter()
        params: dict[str, Interval] = {}
        fetched: dict[str, int] = {}
        if not fixed and whole:
            for nm, t in _load_exact(repo, entries, state, whole).items():
                fixed[nm] = Interval.point(t)
            fetched.update({nm: 64 for nm in whole})
        for nm in prog:
            e = entries[nm]
            dt = dtypes.get(e.dtype)
            kk = min(k, dt.itemsize)
            if kk >= dt.itemsize:
                if nm not in fixed:
                    fixed[nm] = Interval.point(_as_model_tensor(repo.read_tensor(e), e, state[nm]))
                    fetched[nm] = dt.itemsize
                continue
            top, layout = repo.read_planes(e, kk)
            lo, hi = reader_mod.interval(top, dt, layout, top.shape[1])
            params[nm] = Interval(torch.from_numpy(lo.astype(np.float64)).reshape(tuple(e.shape)),
                                  torch.from_numpy(hi.astype(np.float64)).reshape(tuple(e.shape)))
            fetched[nm] = kk
        params.update(fixed)
        decided_now = _interval_round(net, x_t, todo, params, top_k, batch_size, preds)
        evaluated = len(todo)
        todo = todo[~decided_now]
        secs = time.perf_counter() - t0
        steps.append(PlaneStep(k, False, evaluated, int(decided_now.sum()), len(todo), len(todo) / n,
                               account(fetched), secs))

    near_ties = 0
    if len(todo):
        t0 = time.perf_counter()
        exact_names = [nm for nm in prog + whole if not (nm in fixed)]
        weights = _load_exact(repo, entries, state, exact_names + [nm for nm in others])
        for nm, t in weights.items():
            if nm in net.needed:
                fixed[nm] = Interval.point(t)
        weights.update({nm: iv.lo.to(state[nm].dtype) for nm, iv in fixed.items() if nm not in weights})
        exact = copy.deepcopy(model)   # the caller's model is left as it was
        _install(exact, weights)
        evaluated = len(todo)
        decided_now = _interval_round(net, x_t, todo, fixed, top_k, batch_size, preds)
        rest = todo[~decided_now]
        near_ties = len(rest)
        with torch.no_grad():
            for b in np.unique(rest // batch_size):
                s = int(b) * batch_size
                top = exact_top(exact(x_t[s:s + batch_size]), top_k).numpy()
                mine = rest[(rest >= s) & (rest < s + batch_size)]
                preds[mine] = top[mine - s]
        secs = time.perf_counter() - t0
        steps.append(PlaneStep(p_full, True, evaluated, evaluated, 0, 0.0,
                               account({nm: 64 for nm in exact_names + others}), secs))
    full_bytes = None
    if count_bytes:
        t = time.perf_counter()
        full_bytes = sum(repo.planes_stored_bytes(entries[nm], 64) for nm in net.needed + others)
        acct += time.perf_counter() - t
    res = EvalResult(preds, top_k, True, steps, total_bytes if count_bytes else None, full_bytes,
                     time.perf_counter() - t_start - acct, layouts=_count(layouts.values()),
                     first_planes=first_planes, near_ties=near_ties)
    res.accuracy = _accuracy(preds, y)
    return res


def _interval_round(net: IntervalNet, x: torch.Tensor, todo: np.ndarray, params: dict[str, Interval], k: int,
                    batch_size: int, preds: np.ndarray) -> np.ndarray:
    """Interval pass over inputs ``todo``; fills ``preds`` of the decided ones; returns the decided mask."""
    decided = np.zeros(len(todo), bool)
    with torch.no_grad():
        for s in range(0, len(todo), batch_size):
            idx = todo[s:s + batch_size]
            out, bad = net.forward(x[torch.from_numpy(idx)], params)
            lo, hi = out.lo.reshape(len(idx), -1), out.hi.reshape(len(idx), -1)
            ok, top = decide(lo, hi, k)
            ok &= ~bad
            ok_np = ok.numpy()
            preds[idx[ok_np]] = top.numpy()[ok_np]
            decided[s:s + batch_size] = ok_np
    return decided


def _classes(net: IntervalNet, model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        out = model(x[:1])
    if out.dim() != 2:
        raise BadInput(f"the model must return one row of class scores per input, not shape {tuple(out.shape)}")
    return out.shape[1]


def _max_planes(entries, names) -> int:
    return max([dtypes.get(entries[nm].dtype).itemsize for nm in names] or [1])


def _accuracy(preds: np.ndarray, y) -> float | None:
    if y is None:
        return None
    return float((preds == np.asarray(y).reshape(-1, 1)).any(1).mean())


def _count(values) -> dict:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out
