"""Interval forward pass (pas/progressive/interval.py): sound against float32.

Property: for random small nets, weights known only from their top k planes
(either layout), and weights drawn anywhere inside those intervals, the
ordinary float32 forward pass lands inside the computed bounds, for every
output. With k = all planes the weights are exact and the bounds must still
contain the float32 result (the rounding-error widening).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from pas import dtypes, planes
from pas import reader as reader_mod
from pas.progressive import Interval, IntervalNet, UnsupportedLayer, decide
from pas.progressive.interval import bilinear

F32 = dtypes.get("F32")
ACTS = ["relu", "sigmoid", "tanh", "gelu", "gelu_tanh", "silu", "leaky", "elu", "relu6"]


def _act(name, x):
    return {"relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "gelu": F.gelu,
            "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"), "silu": F.silu,
            "leaky": lambda t: F.leaky_relu(t, 0.1), "elu": F.elu, "relu6": F.relu6}[name](x)


class MLP(nn.Module):
    def __init__(self, d, h, c, act, bn, residual):
        super().__init__()
        self.fc1 = nn.Linear(d, h)
        self.bn = nn.BatchNorm1d(h) if bn else nn.Identity()
        self.fc2 = nn.Linear(h, h)
        self.out = nn.Linear(h, c)
        self.act, self.residual = act, residual

    def forward(self, x):
        h = _act(self.act, self.bn(self.fc1(x)))
        g = F.relu(self.fc2(h))
        if self.residual:
            g = g + h
        return self.out(F.dropout(g, 0.1, self.training))


class CNN(nn.Module):
    def __init__(self, cin, c1, c, act, pool, bn, upsample):
        super().__init__()
        self.conv = nn.Conv2d(cin, c1, 3, padding=1)
        self.bn = nn.BatchNorm2d(c1) if bn else nn.Identity()
        self.conv2 = nn.Conv1d(c1, c1, 2)
        self.pool = nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)
        self.fc = nn.Linear(c1 * 3, c)
        self.act, self.upsample = act, upsample

    def forward(self, x):
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = F.avg_pool2d(x, 2)
        x = self.pool(_act(self.act, self.bn(self.conv(x))))          # (N, c1, 2, 2)
        x = F.relu(self.conv2(x.flatten(2)))                          # (N, c1, 3)
        return self.fc(torch.flatten(x, 1))


class Emb(nn.Module):
    def __init__(self, v, d, c):
        super().__init__()
        self.emb = nn.Embedding(v, d)
        self.fc = nn.Linear(2 * d, c)

    def forward(self, idx):
        return self.fc(torch.tanh(self.emb(idx)).reshape(idx.shape[0], -1))


def _intervals(model, k, layout, rng, special=True):
    """Each float tensor's interval from its top k planes, and a float32 sample inside it."""
    ivs, samples = {}, {}
    for name, t in model.state_dict().items():
        if not t.is_floating_point():
            continue
        a = t.numpy().reshape(-1).astype(np.float32)
        if special and a.size > 2:
            a[0] = 0.0   # an exact zero
        if k >= 4:
            lo = hi = a
        else:
            top = planes.split(a.view(np.uint32), F32, layout)[:k]
            lo, hi = reader_mod.interval(top, F32, layout, a.size)
        u = rng.random(a.size)
        u[rng.random(a.size) < 0.2] = 0.0
        u[rng.random(a.size) < 0.2] = 1.0
        s = (lo.astype(np.float64) + (hi.astype(np.float64) - lo.astype(np.float64)) * u).astype(np.float32)
        s = np.clip(s, lo, hi)
        shape = tuple(t.shape)
        ivs[name] = Interval(torch.from_numpy(lo.astype(np.float64)).reshape(shape),
                             torch.from_numpy(hi.astype(np.float64)).reshape(shape))
        samples[name] = torch.from_numpy(s).reshape(shape)
    return ivs, samples


def _randomize(model, rng, scale):
    sd = model.state_dict()
    for name, t in sd.items():
        if not t.is_floating_point():
            continue
        v = rng.normal(0, scale, t.shape).astype(np.float32)
        if name.endswith("running_var"):
            v = np.abs(v) + np.float32(0.05)
        sd[name] = torch.from_numpy(v)
    model.load_state_dict(sd)


def _check(model, x, k, layout, rng):
    model.eval()
    net = IntervalNet(model)
    ivs, samples = _intervals(model, k, layout, rng)
    with torch.no_grad():
        out, bad = net.forward(x, {n: ivs[n] for n in net.needed})
        for _ in range(3):
            model.load_state_dict(samples, strict=False)
            ref = model(x).double()
            ok = (out.lo <= ref) & (ref <= out.hi)
            # rows flagged bad (bounds beyond float32 range) make no claim
            ok |= bad.reshape(-1, *([1] * (ref.dim() - 1)))
            assert bool(ok.all()), (k, layout, float((ref - out.lo).min()), float((out.hi - ref).min()))
            _, samples = _intervals(model, k, layout, rng)
    return out, bad


settings_ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings_
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 4), layout=st.sampled_from(["planes", "planes-exp"]),
       act=st.sampled_from(ACTS), bn=st.booleans(), residual=st.booleans(),
       scale=st.sampled_from([0.05, 0.5, 3.0]), d=st.integers(1, 40))
def test_mlp_bounds_contain_float32(seed, k, layout, act, bn, residual, scale, d):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed % 1000)
    model = MLP(d, 8, 5, act, bn, residual)
    _randomize(model, rng, scale)
    x = torch.from_numpy(rng.normal(0, 2, (6, d)).astype(np.float32))
    _check(model, x, k, layout, rng)


@settings_
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 4), layout=st.sampled_from(["planes", "planes-exp"]),
       act=st.sampled_from(ACTS), pool=st.sampled_from(["max", "avg"]), bn=st.booleans(),
       upsample=st.booleans(), scale=st.sampled_from([0.1, 1.0]))
def test_cnn_bounds_contain_float32(seed, k, layout, act, pool, bn, upsample, scale):
    rng = np.random.default_rng(seed)
    model = CNN(2, 3, 4, act, pool, bn, upsample)
    _randomize(model, rng, scale)
    x = torch.from_numpy(rng.normal(0, 1, (4, 2, 4, 4)).astype(np.float32))
    _check(model, x, k, layout, rng)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 4), layout=st.sampled_from(["planes", "planes-exp"]))
def test_embedding_bounds_contain_float32(seed, k, layout):
    rng = np.random.default_rng(seed)
    model = Emb(7, 3, 4)
    _randomize(model, rng, 1.0)
    idx = torch.from_numpy(rng.integers(0, 7, (5, 2)))
    _check(model, idx, k, layout, rng)


def test_exact_weights_large_dot_products_contain_float32():
    """Long dot products, where float32 rounding is largest: exact weights, bounds still hold."""
    rng = np.random.default_rng(1)
    model = MLP(3000, 256, 10, "relu", False, True)
    _randomize(model, rng, 0.02)     # about 1/sqrt(fan-in), as trained nets are
    x = torch.from_numpy(rng.normal(0, 3, (16, 3000)).astype(np.float32))
    out, bad = _check(model, x, 4, "planes", rng)
    assert not bool(bad.any())
    width = (out.hi - out.lo).max().item()
    assert 0 < width < 0.25 * out.hi.abs().max().item()     # sound, yet not vacuous (worst-case float32 bounds)


def test_exact_weights_give_tight_bounds_and_decide():
    rng = np.random.default_rng(2)
    model = MLP(10, 16, 4, "tanh", True, False)
    _randomize(model, rng, 0.5)
    x = torch.from_numpy(rng.normal(0, 1, (32, 10)).astype(np.float32))
    out, _ = _check(model, x, 4, "planes", rng)
    ok, top = decide(out.lo, out.hi, 1)
    with torch.no_grad():
        ref = model(x)
    assert bool(ok.float().mean() > 0.9)
    assert torch.equal(top[ok, 0], ref.argmax(1)[ok])


def test_gelu_silu_rules_around_the_minimum():
    xs = torch.linspace(-3, 1, 4001, dtype=torch.float64)
    for lo_i in range(0, 4000, 97):
        for hi_i in (lo_i, lo_i + 13, lo_i + 400):
            hi_i = min(hi_i, 4000)
            iv = Interval(xs[lo_i:lo_i + 1].clone(), xs[hi_i:hi_i + 1].clone())
            inside = xs[lo_i:hi_i + 1]
            for fn, rule in ((F.gelu, "gelu"), (F.silu, "silu")):
                from pas.progressive import interval as I
                r = I._gelu(iv) if rule == "gelu" else I._silu(iv)
                v = fn(inside.float()).double()
                assert bool((r.lo <= v.min()) & (v.max() <= r.hi)), (rule, lo_i, hi_i)


def test_bilinear_midpoint_radius_is_sound_for_products():
    rng = np.random.default_rng(5)
    a_lo = torch.from_numpy(rng.normal(0, 1, (3, 7)))
    a = Interval(a_lo, a_lo + torch.from_numpy(rng.random((3, 7))))
    b_lo = torch.from_numpy(rng.normal(0, 1, (7, 2)))
    b = Interval(b_lo, b_lo + torch.from_numpy(rng.random((7, 2))))
    r = bilinear(torch.matmul, a, b, n=7)
    for _ in range(200):
        av = (a.lo + (a.hi - a.lo) * torch.from_numpy(rng.random((3, 7)))).float()
        bv = (b.lo + (b.hi - b.lo) * torch.from_numpy(rng.random((7, 2)))).float()
        v = (av @ bv).double()
        assert bool(((r.lo <= v) & (v <= r.hi)).all())


# ----------------------------------------------------------------- errors
class WithLayerNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.ln = nn.LayerNorm(4)

    def forward(self, x):
        return self.ln(self.fc(x))


class WithSoftmax(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.softmax(self.fc(x), 1)


class WithTrainingDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return F.dropout(self.fc(x), 0.5, True)


@pytest.mark.parametrize("cls, what", [(WithLayerNorm, "LayerNorm"), (WithSoftmax, "softmax"),
                                       (WithTrainingDropout, "dropout")])
def test_no_rule_is_a_typed_error_naming_the_op(cls, what):
    with pytest.raises(UnsupportedLayer) as exc:
        IntervalNet(cls())
    assert what in str(exc.value)
    assert exc.value.exit_code == 4


def test_model_must_be_float32():
    from pas.progressive import ModelMismatch
    with pytest.raises(ModelMismatch):
        IntervalNet(MLP(3, 4, 2, "relu", False, False).double())


# ---------------------------------------------------------------- Lemma 4
def test_decide_top1_and_topk():
    lo = torch.tensor([[5.0, 1.0, 0.0], [5.0, 4.9, 0.0], [3.0, 2.5, -1.0]], dtype=torch.float64)
    hi = torch.tensor([[6.0, 4.0, 4.5], [6.0, 5.1, 1.0], [3.5, 2.9, 2.6]], dtype=torch.float64)
    ok, top = decide(lo, hi, 1)
    assert ok.tolist() == [True, False, True]
    assert top[:, 0].tolist() == [0, 0, 0]
    ok, top = decide(lo, hi, 2)
    # top-2: row 0: {0, 1}? lower of class 1 (1.0) < upper of class 2 (4.5): undecided
    # row 1: {0, 1} with min lower 4.9 > 1.0: decided; row 2: 2.5 < 2.6: undecided
    assert ok.tolist() == [False, True, False]
    assert top[1].tolist() == [0, 1]
    ok, _ = decide(lo, hi, 3)          # every class: trivially certain
    assert ok.all()
    nan = lo.clone()
    nan[0, 2] = float("nan")
    assert not decide(nan, hi, 1)[0][0]
    eq_lo = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    eq_hi = torch.tensor([[2.0, 1.0]], dtype=torch.float64)   # touching: not strictly greater
    assert not decide(eq_lo, eq_hi, 1)[0][0]
