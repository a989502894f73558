"""Interval forward pass: sound bounds on a torch model's float32 outputs when
each weight is only known to lie in an interval (docs/progressive.md).

The model is traced with torch.fx; every node is mapped to an interval rule
(``_MODULE_RULES``, ``_FUNCTION_RULES``, ``_METHOD_RULES``); a node without
one raises `UnsupportedLayer` naming it, before anything is evaluated.

Soundness is against what users compare with: the ordinary float32 forward
pass with the exact weights. Bounds are computed in float64 and every rule
widens its result outward by a bound on the float32 rounding error of the
reference computation (and, with a 1% margin, on the float64 rounding of its
own), so for weights anywhere in their intervals the float32 value of every
node lies inside the node's interval. See docs/progressive.md for the bounds.
"""
from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from .errors import ModelMismatch, UnsupportedLayer

#: Unit roundoff of float32 (round to nearest).
U32 = 2.0 ** -24
#: Smallest normal float32: bounds one error of underflow or of flushing a
#: subnormal to zero (FTZ/DAZ), whichever mode the reference runs in.
TINY = 2.0 ** -126
#: Covers the float64 rounding of the interval computation itself (relative
#: to the same magnitudes, below 2^-50 per step: far under 1% of 2^-24).
SLACK = 1.01
#: A bound beyond which a sample is undecided: the float32 reference could
#: overflow there (or a bound is NaN), where the error model no longer holds.
HUGE = 2.0 ** 126


def gamma(n: int) -> float:
    """1.01 * n u / (1 - n u), u = 2^-24: the classical bound on the relative
    (to the sum of magnitudes) rounding error of an n-term float32 dot product
    or sum in any order (Higham, Accuracy and Stability, §3.1)."""
    nu = n * U32
    return math.inf if nu >= 0.5 else SLACK * nu / (1.0 - nu)


class Interval:
    """[lo, hi] bounds (float64 tensors of one shape). ``exact``: lo is hi."""

    __slots__ = ("hi", "lo")

    def __init__(self, lo: torch.Tensor, hi: torch.Tensor | None = None):
        self.lo = lo
        self.hi = lo if hi is None else hi

    @property
    def exact(self) -> bool:
        return self.lo is self.hi

    @classmethod
    def point(cls, t: torch.Tensor) -> Interval:
        return cls(t.to(torch.float64))

    @property
    def shape(self):
        return self.lo.shape

    def midrad(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Midpoint and radius (None when exact). The float64 rounding here is
        at most 2^-53 of the magnitude: inside the margin of every widening."""
        if self.exact:
            return self.lo, None
        mid = (self.lo + self.hi) * 0.5
        return mid, torch.maximum(self.hi - mid, mid - self.lo)

    def mag(self) -> torch.Tensor:
        """max |v| over the interval."""
        if self.exact:
            return self.lo.abs()
        return torch.maximum(self.lo.abs(), self.hi.abs())

    def map(self, f: Callable[[torch.Tensor], torch.Tensor]) -> Interval:
        """A function that is monotone non-decreasing and exact in floating point, applied to both ends."""
        if self.exact:
            return Interval(f(self.lo))
        return Interval(f(self.lo), f(self.hi))

    def widen(self, w) -> Interval:
        return Interval(self.lo - w, self.hi + w)

    def __repr__(self) -> str:
        return f"Interval(shape={tuple(self.lo.shape)}, exact={self.exact})"


def as_interval(v) -> Interval:
    if isinstance(v, Interval):
        return v
    if isinstance(v, torch.Tensor):
        return Interval.point(v)
    return Interval(torch.tensor(float(v), dtype=torch.float64))


# ----------------------------------------------------------------- arithmetic
def bilinear(f: Callable, a: Interval, b: Interval, n: int, bias: Interval | None = None,
             bias_shape: tuple | None = None) -> Interval:
    """Bounds of ``f(a, b) + bias`` for f bilinear and a sum of n products per
    output (matmul, linear, conv), in midpoint-radius form:

        mid = f(a_mid, b_mid),  rad = f(|a_mid|, b_rad) + f(a_rad, |b_mid| + b_rad),

    which holds for every real a in [a], b in [b]; then widened by
    gamma(n + 2) * f(|a|max, |b|max) (+ |bias|) for the float32 rounding of
    the reference's dot products (n products and n additions, bias included,
    any order or blocking, FMA or not), and by TINY * (2n + 3) * (2 + max|a|
    + max|b|) for underflow or flushed subnormals."""
    am, ar = a.midrad()
    bm, br = b.midrad()
    amag = a.mag()
    bmag = b.mag()
    mid = f(am, bm)
    rad = None
    if br is not None:
        rad = f(am.abs(), br)
    if ar is not None:
        t = f(ar, bmag)
        rad = t if rad is None else rad + t
    mag = f(amag, bmag)
    if bias is not None:
        sm, sr = bias.midrad()
        shape = bias_shape or tuple(sm.shape)
        mid = mid + sm.reshape(shape)
        mag = mag + bias.mag().reshape(shape)
        if sr is not None:
            rad = sr.reshape(shape) if rad is None else rad + sr.reshape(shape)
    amax = float(amag.max()) if amag.numel() else 0.0
    bmax = float(bmag.max()) if bmag.numel() else 0.0
    w = gamma(n + 2) * mag + TINY * (2 * n + 3) * (2.0 + amax + bmax)
    rad = w if rad is None else rad + w
    return Interval(mid - rad, mid + rad)


def mul(a: Interval, b: Interval, widen: bool = True) -> Interval:
    """Elementwise product (broadcasting): min and max of the endpoint products,
    widened by the float32 rounding of one product."""
    if a.exact and b.exact:
        p = a.lo * b.lo
        lo = hi = p
    else:
        ps = [a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi]
        lo = torch.minimum(torch.minimum(ps[0], ps[1]), torch.minimum(ps[2], ps[3]))
        hi = torch.maximum(torch.maximum(ps[0], ps[1]), torch.maximum(ps[2], ps[3]))
    if not widen:
        return Interval(lo, hi) if lo is not hi else Interval(lo)
    w = SLACK * U32 * (a.mag() * b.mag()) + TINY * (1.0 + a.mag() + b.mag())
    return Interval(lo - w, hi + w)


def add(a: Interval, b: Interval, sign: float = 1.0) -> Interval:
    """a + b (sign 1) or a - b (sign -1), widened by the rounding of one float32 addition."""
    if sign > 0:
        lo, hi = a.lo + b.lo, a.hi + b.hi
    else:
        lo, hi = a.lo - b.hi, a.hi - b.lo
    w = SLACK * U32 * (a.mag() + b.mag()) + 2 * TINY
    return Interval(lo - w, hi + w)


def neg(a: Interval) -> Interval:
    return Interval(-a.hi, -a.lo) if not a.exact else Interval(-a.lo)


def div_scalar(a: Interval, c: float) -> Interval:
    if c == 0 or not math.isfinite(c):
        raise UnsupportedLayer("division", f"by {c!r} (only by a finite non-zero constant)")
    lo, hi = a.lo / c, a.hi / c
    if c < 0:
        lo, hi = hi, lo
    return Interval(lo, hi).widen(SLACK * U32 * 2 * torch.maximum(lo.abs(), hi.abs()) + 2 * TINY)


def _everything(shape, like: torch.Tensor) -> Interval:
    return Interval(torch.full(shape, -math.inf, dtype=torch.float64, device=like.device),
                    torch.full(shape, math.inf, dtype=torch.float64, device=like.device))


# ----------------------------------------------------------------- layers
def linear(x: Interval, w: Interval, b: Interval | None) -> Interval:
    return bilinear(lambda a, ww: F.linear(a, ww), x, w, n=w.shape[-1], bias=b)


def conv(dim: int, x: Interval, w: Interval, b: Interval | None, stride, padding, dilation, groups,
         padding_mode: str = "zeros") -> Interval:
    if padding_mode != "zeros":
        raise UnsupportedLayer(f"Conv{dim}d", f"padding_mode={padding_mode!r} (only 'zeros')")
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dim]
    n = int(math.prod(w.shape[1:]))
    return bilinear(lambda a, ww: fn(a, ww, None, stride, padding, dilation, groups), x, w, n=n,
                    bias=b, bias_shape=(1, -1) + (1,) * dim)


def batch_norm(x: Interval, mean: Interval, var: Interval, weight: Interval | None, bias: Interval | None,
               eps: float) -> Interval:
    """Eval-mode batch norm y = (x - mean) / sqrt(var + eps) * weight + bias,
    every parameter an interval. The float32 reference rounds at most ~8 times
    on the way (eps add, sqrt, divide, scale, shift, however it groups them);
    the widening 16 u ((|x| + |mean|) |alpha| + |bias|) covers them (alpha =
    weight / sqrt(var + eps), rounded itself ~4 times)."""
    shape = (1, -1) + (1,) * (x.lo.dim() - 2)
    v_lo = var.lo + eps
    v_hi = var.hi + eps
    if bool((v_lo <= 0).any()):
        return _everything(x.shape, x.lo)   # the variance may be <= -eps: no bound (undecided)
    inv = Interval(torch.rsqrt(v_hi), torch.rsqrt(v_lo))
    alpha = mul(weight, inv, widen=False) if weight is not None else inv
    alpha = Interval(alpha.lo.reshape(shape), alpha.hi.reshape(shape))
    mean_s = Interval(mean.lo.reshape(shape), mean.hi.reshape(shape))
    d = Interval(x.lo - mean_s.hi, x.hi - mean_s.lo)
    y = mul(d, alpha, widen=False)
    amag = alpha.mag()
    m = (x.mag() + mean_s.mag()) * amag
    if bias is not None:
        b = Interval(bias.lo.reshape(shape), bias.hi.reshape(shape))
        y = Interval(y.lo + b.lo, y.hi + b.hi)
        m = m + b.mag()
    return y.widen(16 * SLACK * U32 * m + TINY * (16.0 + amag))


def monotone(x: Interval, f: Callable, rel: float = 0.0, abs_x: float = 0.0, abs_c: float = 0.0) -> Interval:
    """A non-decreasing function applied to both ends, widened by ``rel`` u |f|
    + ``abs_x`` u |x| + ``abs_c`` u + TINY (the float32 kernel's error bound)."""
    y = x.map(f)
    if rel == 0.0 and abs_x == 0.0 and abs_c == 0.0:
        return y
    w = SLACK * U32 * (rel * y.mag() + abs_x * x.mag() + abs_c) + TINY
    return y.widen(w)


def unimodal(x: Interval, f: Callable, left: float, right: float, fmin: float,
             rel: float, abs_x: float) -> Interval:
    """A function decreasing up to its minimum, somewhere in [left, right],
    and increasing after it, with minimum value >= ``fmin`` (GELU, SiLU):
    the maximum over an interval is at an end; the minimum is at an end
    unless the interval meets [left, right], where ``fmin`` bounds it."""
    flo, fhi = f(x.lo), f(x.hi)
    hi = torch.maximum(flo, fhi)
    lo = torch.where(x.hi < left, fhi, torch.where(x.lo > right, flo, torch.minimum(torch.minimum(flo, fhi),
                                                                                   torch.full_like(flo, fmin))))
    w = SLACK * U32 * (rel * torch.maximum(lo.abs(), hi.abs()) + abs_x * x.mag()) + TINY
    return Interval(lo - w, hi + w)


def avg_like(x: Interval, f: Callable, n_terms: int) -> Interval:
    """A non-negative weighted average of up to ``n_terms`` inputs per output
    (avg pooling): applied to both ends; the reference's sum and division
    round within gamma(n + 2) of the average of magnitudes."""
    y = x.map(f)
    return y.widen(gamma(n_terms + 2) * f(x.mag()) + TINY * (n_terms + 3))


def interpolate_linear(x: Interval, f: Callable, dims: int, in_sizes: list[int]) -> Interval:
    """(Bi/tri)linear interpolation: non-negative weights, so applied to both
    ends. The reference computes its weights in float32 from the source
    coordinate (within 4 u (size + 1) each, d per weight product), then a sum
    of 2^d products: widened by gamma(2^d + 2) f(|x|) + 2^d d (4 max(size) + 5)
    u max|x| (per sample and channel)."""
    y = x.map(f)
    mag = x.mag()
    g = mag.amax(dim=tuple(range(2, mag.dim())), keepdim=True) if mag.dim() > 2 else mag
    terms = 2 ** dims
    w = gamma(terms + 2) * f(mag) + SLACK * U32 * terms * dims * (4 * max(in_sizes) + 5) * g + TINY * (terms + 3)
    return y.widen(w)


# ------------------------------------------------------------------ rules
# A module rule: (module, get(name) -> parameter Interval, args, kwargs) -> value.
# Its "needs" lists the module's state names it reads.

def _conv_module(dim):
    def rule(m, get, args, kwargs):
        return conv(dim, as_interval(args[0]), get("weight"), get("bias") if m.bias is not None else None,
                    m.stride, m.padding, m.dilation, m.groups, m.padding_mode)
    return rule


def _linear_module(m, get, args, kwargs):
    return linear(as_interval(args[0]), get("weight"), get("bias") if m.bias is not None else None)


def _bn_module(m, get, args, kwargs):
    if m.training:
        raise UnsupportedLayer(type(m).__name__, "in training mode (call model.eval())")
    if not m.track_running_stats or m.running_mean is None:
        raise UnsupportedLayer(type(m).__name__, "without running statistics (uses batch statistics)")
    aff = m.weight is not None
    return batch_norm(as_interval(args[0]), get("running_mean"), get("running_var"),
                      get("weight") if aff else None, get("bias") if aff and m.bias is not None else None, m.eps)


def _bn_needs(m):
    names = ["running_mean", "running_var"]
    if m.weight is not None:
        names.append("weight")
    if m.bias is not None:
        names.append("bias")
    return names


def _embedding_module(m, get, args, kwargs):
    if m.max_norm is not None:
        raise UnsupportedLayer("Embedding", "max_norm renormalizes the weights in place")
    return _embedding(args[0], get("weight"))


def _embedding(idx, w: Interval) -> Interval:
    if isinstance(idx, Interval) or not isinstance(idx, torch.Tensor) or idx.is_floating_point():
        raise UnsupportedLayer("embedding", "the indices must be an exact integer tensor (a model input)")
    return Interval(F.embedding(idx, w.lo), F.embedding(idx, w.hi)) if not w.exact else Interval(F.embedding(idx, w.lo))


def _identity(m, get, args, kwargs):
    return args[0]


def _flatten_module(m, get, args, kwargs):
    return as_interval(args[0]).map(lambda t: t.flatten(m.start_dim, m.end_dim))


def _pool_module(kind):
    def rule(m, get, args, kwargs):
        x = as_interval(args[0])
        name = type(m).__name__
        if kind == "max":
            if m.return_indices:
                raise UnsupportedLayer(name, "return_indices=True")
            fn = {"MaxPool1d": F.max_pool1d, "MaxPool2d": F.max_pool2d, "MaxPool3d": F.max_pool3d}[name]
            return x.map(lambda t: fn(t, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode))
        if kind == "avg":
            fn = {"AvgPool1d": F.avg_pool1d, "AvgPool2d": F.avg_pool2d, "AvgPool3d": F.avg_pool3d}[name]
            kw = {"kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding, "ceil_mode": m.ceil_mode,
                  "count_include_pad": m.count_include_pad}
            if name != "AvgPool1d":
                kw["divisor_override"] = m.divisor_override
            return _avg_pool(x, fn, kw, name)
        if kind == "adaptive_max":
            if m.return_indices:
                raise UnsupportedLayer(name, "return_indices=True")
            fn = {"AdaptiveMaxPool1d": F.adaptive_max_pool1d, "AdaptiveMaxPool2d": F.adaptive_max_pool2d,
                  "AdaptiveMaxPool3d": F.adaptive_max_pool3d}[name]
            return x.map(lambda t: fn(t, m.output_size))
        fn = {"AdaptiveAvgPool1d": F.adaptive_avg_pool1d, "AdaptiveAvgPool2d": F.adaptive_avg_pool2d,
              "AdaptiveAvgPool3d": F.adaptive_avg_pool3d}[name]
        return _adaptive_avg(x, fn, m.output_size)
    return rule


def _tuple(v, d):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * d


def _avg_pool(x: Interval, fn, kw: dict, name: str) -> Interval:
    dims = {"avg_pool1d": 1, "avg_pool2d": 2, "avg_pool3d": 3, "AvgPool1d": 1, "AvgPool2d": 2,
            "AvgPool3d": 3}[name]
    n = int(math.prod(_tuple(kw["kernel_size"], dims)))
    if kw.get("divisor_override"):
        n = max(n, int(kw["divisor_override"]))
    return avg_like(x, lambda t: fn(t, **kw), n)


def _adaptive_avg(x: Interval, fn, output_size) -> Interval:
    spatial = list(x.shape[2:])
    out = _tuple(output_size, len(spatial))
    n = 1
    for s, o in zip(spatial, out):
        o = s if o is None else o
        n *= -(-s // max(o, 1)) + 1
    return avg_like(x, lambda t: fn(t, output_size), n)


def _act(f, **err):
    def rule(m, get, args, kwargs):
        return monotone(as_interval(args[0]), lambda t: f(m, t), **err)
    return rule


def _gelu(x: Interval, approximate: str = "none") -> Interval:
    # minimum near -0.7518 (both forms), value > -0.1700 (exact: -0.169971)
    return unimodal(x, lambda t: F.gelu(t, approximate=approximate), -0.80, -0.70, -0.171, rel=16, abs_x=8)


def _silu(x: Interval) -> Interval:
    # minimum near -1.2785, value -0.278465
    return unimodal(x, F.silu, -1.35, -1.20, -0.2786, rel=16, abs_x=8)


_MODULE_RULES: dict[type, tuple[Callable, Callable]] = {
    nn.Linear: (_linear_module, lambda m: ["weight"] + (["bias"] if m.bias is not None else [])),
    nn.Conv1d: (_conv_module(1), lambda m: ["weight"] + (["bias"] if m.bias is not None else [])),
    nn.Conv2d: (_conv_module(2), lambda m: ["weight"] + (["bias"] if m.bias is not None else [])),
    nn.Conv3d: (_conv_module(3), lambda m: ["weight"] + (["bias"] if m.bias is not None else [])),
    nn.BatchNorm1d: (_bn_module, _bn_needs),
    nn.BatchNorm2d: (_bn_module, _bn_needs),
    nn.BatchNorm3d: (_bn_module, _bn_needs),
    nn.Embedding: (_embedding_module, lambda m: ["weight"]),
    nn.Identity: (_identity, lambda m: []),
    nn.Dropout: (_identity, lambda m: []),
    nn.Dropout1d: (_identity, lambda m: []),
    nn.Dropout2d: (_identity, lambda m: []),
    nn.Dropout3d: (_identity, lambda m: []),
    nn.AlphaDropout: (_identity, lambda m: []),
    nn.Flatten: (_flatten_module, lambda m: []),
    nn.MaxPool1d: (_pool_module("max"), lambda m: []),
    nn.MaxPool2d: (_pool_module("max"), lambda m: []),
    nn.MaxPool3d: (_pool_module("max"), lambda m: []),
    nn.AvgPool1d: (_pool_module("avg"), lambda m: []),
    nn.AvgPool2d: (_pool_module("avg"), lambda m: []),
    nn.AvgPool3d: (_pool_module("avg"), lambda m: []),
    nn.AdaptiveMaxPool1d: (_pool_module("adaptive_max"), lambda m: []),
    nn.AdaptiveMaxPool2d: (_pool_module("adaptive_max"), lambda m: []),
    nn.AdaptiveMaxPool3d: (_pool_module("adaptive_max"), lambda m: []),
    nn.AdaptiveAvgPool1d: (_pool_module("adaptive_avg"), lambda m: []),
    nn.AdaptiveAvgPool2d: (_pool_module("adaptive_avg"), lambda m: []),
    nn.AdaptiveAvgPool3d: (_pool_module("adaptive_avg"), lambda m: []),
    nn.ReLU: (_act(lambda m, t: F.relu(t)), lambda m: []),
    nn.ReLU6: (_act(lambda m, t: F.relu6(t)), lambda m: []),
    nn.Hardtanh: (_act(lambda m, t: F.hardtanh(t, m.min_val, m.max_val)), lambda m: []),
    nn.LeakyReLU: (_act(lambda m, t: F.leaky_relu(t, m.negative_slope), rel=2), lambda m: []),
    nn.Sigmoid: (_act(lambda m, t: torch.sigmoid(t), rel=16), lambda m: []),
    nn.Tanh: (_act(lambda m, t: torch.tanh(t), rel=16), lambda m: []),
    nn.ELU: (lambda m, get, args, kwargs: _f_elu([args[0], m.alpha], {}), lambda m: []),
    nn.GELU: (lambda m, get, args, kwargs: _gelu(as_interval(args[0]), m.approximate), lambda m: []),
    nn.SiLU: (lambda m, get, args, kwargs: _silu(as_interval(args[0])), lambda m: []),
}


def _bind(args, kwargs, names, defaults):
    """Positional and keyword arguments of a functional call as a dict."""
    out = dict(defaults)
    for name, v in zip(names, args):
        out[name] = v
    for k, v in kwargs.items():
        if k not in names:
            raise UnsupportedLayer("call", f"unknown argument {k!r}")
        out[k] = v
    return out


def _f_linear(args, kwargs):
    a = _bind(args, kwargs, ["input", "weight", "bias"], {"bias": None})
    b = a["bias"]
    return linear(as_interval(a["input"]), as_interval(a["weight"]), None if b is None else as_interval(b))


def _f_conv(dim):
    def rule(args, kwargs):
        a = _bind(args, kwargs, ["input", "weight", "bias", "stride", "padding", "dilation", "groups"],
                  {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1})
        b = a["bias"]
        return conv(dim, as_interval(a["input"]), as_interval(a["weight"]), None if b is None else as_interval(b),
                    a["stride"], a["padding"], a["dilation"], a["groups"])
    return rule


def _f_max_pool(fn, name):
    def rule(args, kwargs):
        a = _bind(args, kwargs, ["input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                                 "return_indices"], {"stride": None, "padding": 0, "dilation": 1,
                                                     "ceil_mode": False, "return_indices": False})
        if a["return_indices"]:
            raise UnsupportedLayer(name, "return_indices=True")
        x = as_interval(a.pop("input"))
        a.pop("return_indices")
        return x.map(lambda t: fn(t, **a))
    return rule


def _f_avg_pool(fn, name):
    def rule(args, kwargs):
        names = ["input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"]
        defaults = {"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True}
        if name != "avg_pool1d":
            names.append("divisor_override")
            defaults["divisor_override"] = None
        a = _bind(args, kwargs, names, defaults)
        x = as_interval(a.pop("input"))
        return _avg_pool(x, fn, a, name)
    return rule


def _f_adaptive_avg(fn):
    def rule(args, kwargs):
        a = _bind(args, kwargs, ["input", "output_size"], {})
        return _adaptive_avg(as_interval(a["input"]), fn, a["output_size"])
    return rule


def _f_interpolate(args, kwargs):
    a = _bind(args, kwargs, ["input", "size", "scale_factor", "mode", "align_corners", "recompute_scale_factor",
                             "antialias"], {"size": None, "scale_factor": None, "mode": "nearest",
                                            "align_corners": None, "recompute_scale_factor": None,
                                            "antialias": False})
    x = as_interval(a.pop("input"))
    mode = a["mode"]
    f = lambda t: F.interpolate(t, **a)
    if mode in ("nearest", "nearest-exact"):
        return x.map(f)
    if mode in ("linear", "bilinear", "trilinear") and not a["antialias"]:
        return interpolate_linear(x, f, x.lo.dim() - 2, list(x.shape[2:]))
    raise UnsupportedLayer("interpolate", f"mode={mode!r}" + (" with antialias" if a["antialias"] else "")
                           + " (nearest, linear, bilinear and trilinear without antialias are supported)")


def _f_dropout(args, kwargs):
    a = _bind(args, kwargs, ["input", "p", "training", "inplace"], {"p": 0.5, "training": True, "inplace": False})
    if a["training"]:
        raise UnsupportedLayer("dropout", "training=True (random; trace the model in eval mode)")
    return a["input"]


def _f_act(f, **err):
    def rule(args, kwargs):
        return monotone(as_interval(args[0]), lambda t: f(t, *args[1:], **{k: v for k, v in kwargs.items()
                                                                          if k != "inplace"}), **err)
    return rule


def _relu_like(f):
    def rule(args, kwargs):
        return as_interval(args[0]).map(lambda t: f(t))
    return rule


def _f_gelu(args, kwargs):
    a = _bind(args, kwargs, ["input", "approximate"], {"approximate": "none"})
    return _gelu(as_interval(a["input"]), a["approximate"])


def _f_elu(args, kwargs):
    a = _bind(args, kwargs, ["input", "alpha", "inplace"], {"alpha": 1.0, "inplace": False})
    if a["alpha"] < 0:
        raise UnsupportedLayer("elu", "alpha < 0 (not monotone)")
    return monotone(as_interval(a["input"]), lambda t: F.elu(t, a["alpha"]), rel=16, abs_c=8 * a["alpha"])


def _f_silu(args, kwargs):
    return _silu(as_interval(args[0]))


def _f_embedding(args, kwargs):
    a = _bind(args, kwargs, ["input", "weight", "padding_idx", "max_norm", "norm_type", "scale_grad_by_freq",
                             "sparse"], {"padding_idx": None, "max_norm": None, "norm_type": 2.0,
                                         "scale_grad_by_freq": False, "sparse": False})
    if a["max_norm"] is not None:
        raise UnsupportedLayer("embedding", "max_norm renormalizes the weights in place")
    return _embedding(a["input"], as_interval(a["weight"]))


def _f_batch_norm(args, kwargs):
    a = _bind(args, kwargs, ["input", "running_mean", "running_var", "weight", "bias", "training", "momentum",
                             "eps"], {"weight": None, "bias": None, "training": False, "momentum": 0.1, "eps": 1e-5})
    if a["training"] or a["running_mean"] is None:
        raise UnsupportedLayer("batch_norm", "with batch statistics (training=True or no running stats)")
    w, b = a["weight"], a["bias"]
    return batch_norm(as_interval(a["input"]), as_interval(a["running_mean"]), as_interval(a["running_var"]),
                      None if w is None else as_interval(w), None if b is None else as_interval(b), a["eps"])


def _arith(op):
    def rule(args, kwargs):
        if kwargs.get("alpha", 1) != 1:
            raise UnsupportedLayer(op, "alpha != 1")
        x, y = args[0], args[1]
        if op in ("add", "sub"):
            return add(as_interval(x), as_interval(y), 1.0 if op == "add" else -1.0)
        if op == "mul":
            return mul(as_interval(x), as_interval(y))
        if op == "truediv":
            if isinstance(y, (int, float)):
                return div_scalar(as_interval(x), float(y))
            raise UnsupportedLayer("division", "only by a constant number")
        if op == "matmul":
            a, b = as_interval(x), as_interval(y)
            return bilinear(torch.matmul, a, b, n=a.shape[-1])
        raise UnsupportedLayer(op)
    return rule


def _f_neg(args, kwargs):
    return neg(as_interval(args[0]))


def _structural(fn):
    """Shape-only ops (view, reshape, permute, indexing, ...): applied to both ends exactly."""
    def rule(args, kwargs):
        x = args[0]
        if not isinstance(x, Interval):
            return fn(*args, **kwargs)
        return x.map(lambda t: fn(t, *args[1:], **kwargs))
    return rule


def _f_cat(fn):
    def rule(args, kwargs):
        seq = list(args[0])
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        if not any(isinstance(v, Interval) for v in seq):
            return fn(seq, dim)
        ivs = [as_interval(v) for v in seq]
        if all(v.exact for v in ivs):
            return Interval(fn([v.lo for v in ivs], dim))
        return Interval(fn([v.lo for v in ivs], dim), fn([v.hi for v in ivs], dim))
    return rule


def _f_getattr(args, kwargs):
    obj, name = args[0], args[1]
    if isinstance(obj, Interval):
        if name in ("shape", "ndim", "device"):
            return getattr(obj.lo, name)
        if name == "dtype":
            return torch.float32
        raise UnsupportedLayer(f"getattr(.{name})")
    return getattr(obj, name)


def _f_flatten(args, kwargs):
    return _structural(torch.flatten)(args, kwargs)


_FUNCTION_RULES: dict[Any, Callable] = {
    F.linear: _f_linear,
    F.conv1d: _f_conv(1), F.conv2d: _f_conv(2), F.conv3d: _f_conv(3),
    F.max_pool1d: _f_max_pool(F.max_pool1d, "max_pool1d"),
    F.max_pool2d: _f_max_pool(F.max_pool2d, "max_pool2d"),
    F.max_pool3d: _f_max_pool(F.max_pool3d, "max_pool3d"),
    F.avg_pool1d: _f_avg_pool(F.avg_pool1d, "avg_pool1d"),
    F.avg_pool2d: _f_avg_pool(F.avg_pool2d, "avg_pool2d"),
    F.avg_pool3d: _f_avg_pool(F.avg_pool3d, "avg_pool3d"),
    F.adaptive_avg_pool1d: _f_adaptive_avg(F.adaptive_avg_pool1d),
    F.adaptive_avg_pool2d: _f_adaptive_avg(F.adaptive_avg_pool2d),
    F.adaptive_avg_pool3d: _f_adaptive_avg(F.adaptive_avg_pool3d),
    F.interpolate: _f_interpolate,
    F.dropout: _f_dropout, F.dropout1d: _f_dropout, F.dropout2d: _f_dropout, F.dropout3d: _f_dropout,
    F.alpha_dropout: _f_dropout,
    F.relu: _relu_like(F.relu), torch.relu: _relu_like(torch.relu),
    F.relu6: _relu_like(F.relu6),
    F.hardtanh: _f_act(F.hardtanh),
    F.leaky_relu: _f_act(F.leaky_relu, rel=2),
    torch.sigmoid: _f_act(torch.sigmoid, rel=16), F.sigmoid: _f_act(torch.sigmoid, rel=16),
    torch.tanh: _f_act(torch.tanh, rel=16), F.tanh: _f_act(torch.tanh, rel=16),
    F.gelu: _f_gelu, F.silu: _f_silu, F.elu: _f_elu,
    F.embedding: _f_embedding,
    F.batch_norm: _f_batch_norm,
    operator.add: _arith("add"), torch.add: _arith("add"), operator.iadd: _arith("add"),
    operator.sub: _arith("sub"), torch.sub: _arith("sub"), operator.isub: _arith("sub"),
    operator.mul: _arith("mul"), torch.mul: _arith("mul"),
    operator.truediv: _arith("truediv"),
    operator.matmul: _arith("matmul"), torch.matmul: _arith("matmul"),
    operator.neg: _f_neg, torch.neg: _f_neg,
    operator.getitem: _structural(operator.getitem),
    torch.flatten: _f_flatten,
    torch.reshape: _structural(torch.reshape),
    torch.permute: _structural(torch.permute),
    torch.transpose: _structural(torch.transpose),
    torch.squeeze: _structural(torch.squeeze),
    torch.unsqueeze: _structural(torch.unsqueeze),
    torch.cat: _f_cat(torch.cat), torch.concat: _f_cat(torch.cat),
    getattr: _f_getattr,
}

# F.max_pool2d & co. are boolean_dispatch wrappers: fx records the wrapper.
_FUNCTION_NAMES: dict[str, Callable] = {
    "max_pool1d": _FUNCTION_RULES[F.max_pool1d],
    "max_pool2d": _FUNCTION_RULES[F.max_pool2d],
    "max_pool3d": _FUNCTION_RULES[F.max_pool3d],
}

_STRUCTURAL_METHODS = {"view", "reshape", "flatten", "permute", "transpose", "contiguous", "squeeze", "unsqueeze",
                       "__getitem__", "view_as", "reshape_as", "t"}


def _method_rule(name: str) -> Callable | None:
    if name in _STRUCTURAL_METHODS:
        def rule(args, kwargs):
            x = args[0]
            rest = [a.lo if isinstance(a, Interval) else a for a in args[1:]]   # view_as(other): its shape
            return x.map(lambda t: getattr(t, name)(*rest, **kwargs))
        return rule
    if name in ("size", "dim"):
        return lambda args, kwargs: getattr(args[0].lo, name)(*args[1:], **kwargs)
    if name in ("relu", "relu_"):
        return lambda args, kwargs: args[0].map(F.relu)
    if name in ("sigmoid", "tanh"):
        fn = getattr(torch, name)
        return lambda args, kwargs: monotone(args[0], fn, rel=16)
    if name in ("add", "sub", "mul", "matmul"):
        return _arith(name)
    if name == "div":
        return _arith("truediv")
    if name == "neg":
        return _f_neg
    if name in ("float", "to", "type_as"):
        def rule(args, kwargs):
            x = args[0]
            target = [a for a in list(args[1:]) + list(kwargs.values()) if isinstance(a, torch.dtype)]
            if name == "float" or (name == "to" and target == [torch.float32]) or (name == "to" and not target
                                                                                   and not args[1:]):
                return x
            raise UnsupportedLayer(f"Tensor.{name}", "only to float32")
        return rule
    return None


def _function_rule(target) -> Callable | None:
    rule = _FUNCTION_RULES.get(target)
    if rule is None:
        name = getattr(target, "__name__", "")
        if name == "fn" and getattr(target, "__qualname__", "").startswith("boolean_dispatch"):
            # F.max_poolNd: find which one by identity
            for fname in ("max_pool1d", "max_pool2d", "max_pool3d"):
                if getattr(F, fname) is target:
                    return _FUNCTION_NAMES[fname]
        return None
    return rule


def _op_name(node: fx.Node, modules: dict) -> str:
    if node.op == "call_module":
        return f"module {type(modules[node.target]).__name__} ({node.target})"
    if node.op == "call_method":
        return f"method Tensor.{node.target} ({node.name})"
    t = node.target
    return f"function {getattr(t, '__module__', '') or ''}.{getattr(t, '__name__', repr(t))} ({node.name})"


class IntervalNet:
    """A traced model whose forward pass runs on intervals.

    ``needed``: the state names (as in ``model.state_dict()``) the forward pass
    reads. ``forward(x, params)`` with ``params`` mapping each of them to an
    Interval returns the output's Interval and a per-sample mask of samples
    whose bounds went non-finite or beyond float32 range (undecidable).
    """

    def __init__(self, model: nn.Module):
        model.eval()
        self.model = model
        try:
            self.gm = fx.symbolic_trace(model)
        except Exception as e:  # noqa: BLE001 - fx raises many kinds
            raise UnsupportedLayer(f"model {type(model).__name__}",
                                   f"torch.fx cannot trace it ({type(e).__name__}: {e})") from None
        self.modules = dict(self.gm.named_modules())
        self.nodes = list(self.gm.graph.nodes)
        self.needed: list[str] = []
        self._plan()

    def _plan(self) -> None:
        seen = set()
        state = self.model.state_dict(keep_vars=True)

        def need(name):
            if name not in seen:
                seen.add(name)
                self.needed.append(name)

        if sum(n.op == "placeholder" for n in self.nodes) != 1:
            raise UnsupportedLayer("forward()", "the model must take exactly one input tensor")
        outputs = [n for n in self.nodes if n.op == "output"]
        if len(outputs) != 1 or not isinstance(outputs[0].args[0], fx.Node):
            raise UnsupportedLayer("output", "the model must return one tensor")
        for node in self.nodes:
            if node.op == "call_module":
                m = self.modules[node.target]
                entry = _MODULE_RULES.get(type(m))
                if entry is None:
                    raise UnsupportedLayer(_op_name(node, self.modules))
                for p in entry[1](m):
                    need(f"{node.target}.{p}")
            elif node.op == "call_function":
                if _function_rule(node.target) is None:
                    raise UnsupportedLayer(_op_name(node, self.modules))
                if node.target in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout):
                    _f_dropout(node.args, node.kwargs)   # training=True is known at trace time
            elif node.op == "call_method":
                if _method_rule(node.target) is None:
                    raise UnsupportedLayer(_op_name(node, self.modules))
            elif node.op == "get_attr":
                if node.target not in state:
                    raise UnsupportedLayer(f"attribute {node.target}", "not a parameter or buffer of the model")
                need(node.target)
        for name in self.needed:
            t = state[name]
            if t.is_floating_point() and t.dtype != torch.float32:
                raise ModelMismatch(f"{name}: the model holds {t.dtype}; interval evaluation bounds a float32 "
                                    "model (convert it with model.float())")

    def forward(self, x: torch.Tensor, params: dict[str, Interval]) -> tuple[Interval, torch.Tensor]:
        n = x.shape[0]
        bad = torch.zeros(n, dtype=torch.bool)
        env: dict[str, Any] = {}

        def load(a):
            return fx.node.map_arg(a, lambda nd: env[nd.name])

        def check(v):
            if not isinstance(v, Interval):
                return
            lo, hi = v.lo, v.hi
            ok = (lo.abs() <= HUGE) if v.exact else ((lo.abs() <= HUGE) & (hi.abs() <= HUGE))
            if lo.dim() >= 1 and lo.shape[0] == n:
                bad.logical_or_(~ok.reshape(n, -1).all(1))
            elif not bool(ok.all()):
                bad.fill_(True)

        out = None
        for node in self.nodes:
            if node.op == "placeholder":
                if node.name in env:
                    continue
                if x.is_floating_point():
                    v = Interval.point(x)
                else:
                    v = x
                env[node.name] = v
                check(v)
                continue
            if node.op == "get_attr":
                env[node.name] = params[node.target]
                continue
            if node.op == "output":
                out = load(node.args[0])
                break
            args, kwargs = load(node.args), load(node.kwargs)
            if node.op == "call_module":
                m = self.modules[node.target]
                rule = _MODULE_RULES[type(m)][0]
                prefix = node.target
                v = rule(m, lambda p, _pre=prefix: params[f"{_pre}.{p}"], args, kwargs)
            elif node.op == "call_function":
                if not _has_interval(args, kwargs) and node.target is not getattr:
                    v = node.target(*args, **kwargs)   # exact values only (shapes, integer inputs)
                else:
                    v = _function_rule(node.target)(args, kwargs)
            else:
                if not isinstance(args[0], Interval):
                    v = getattr(args[0], node.target)(*args[1:], **kwargs)
                else:
                    v = _method_rule(node.target)(args, kwargs)
            env[node.name] = v
            check(v)
        if not isinstance(out, Interval):
            raise UnsupportedLayer("output", "the model's output does not depend on its weights or input floats")
        return out, bad


def _has_interval(args, kwargs) -> bool:
    found = False

    def visit(a):
        nonlocal found
        if isinstance(a, Interval):
            found = True
        elif isinstance(a, (list, tuple)):
            for b in a:
                visit(b)
        elif isinstance(a, dict):
            for b in a.values():
                visit(b)
    visit(args)
    visit(kwargs)
    return found
