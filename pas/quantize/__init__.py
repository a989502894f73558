"""Opt-in lossy float schemes (ModelHub §IV-B float schemes; issue 7).

pas stores every tensor bit-exact unless a scheme is asked for
(`pas archive --scheme`, `Repository.archive(..., scheme=...)`). Then the
snapshot is transformed *before* it is archived: each chosen float tensor
is replaced by its stored representation (float16/bfloat16 values, fixed
point integers, or one-byte codes), which the repository stores like any
tensor (planes, chunks, dedup, deltas unchanged), under a content address
of its own lossy domain (docs/format.md §2: variant byte >= 128), so it
never shares an address with exact data. The manifest entry of such a tensor
carries a ``"lossy"`` object (scheme, parameters, original dtype, side data,
measured error) and the manifest a top-level ``"lossy"`` summary; retrieval
decodes back to the original dtype and shape (`decode`).

Which tensors (the ``--scheme`` grammar, docs/cli.md)::

    --scheme SCHEME            the default: every float tensor with at least 2
                               dimensions and MIN_ELEMENTS (1024) elements
    --scheme 'GLOB=SCHEME'     tensors whose name matches GLOB (fnmatch), whatever
                               their size; the first matching GLOB wins
    --keep-exact GLOB          same as 'GLOB=exact', and checked before any other rule

Integer, bool and float8 tensors, and tensors a scheme cannot represent
(NaN/inf under fixed point or quantisation, values overflowing float16),
always stay exact; those a rule named are listed with the reason in the
manifest summary's ``"exact"``.

No torch here: numpy only (pas's import path stays light).
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field

import numpy as np

from .. import dtypes
from ..errors import BadInput, IntegrityError
from ..snapshot import Snapshot, Tensor
from .schemes import (FLOAT_DTYPES, SCHEME_NAMES, BFloat16, Encoded, FixedPoint, Float16,  # noqa: F401
                      Quantized, Refused, Scheme, bf16_bits, from_values, measure, parse_scheme, values)

MIN_ELEMENTS = 1024
from ..records import LOSSY_VARIANT  # noqa: E402,F401  (address variants >= it: lossy representations)


@dataclass(frozen=True)
class Rule:
    pattern: str | None          # fnmatch glob on tensor names; None: the default rule
    scheme: Scheme | None        # None: keep exact

    @property
    def text(self) -> str:
        return (f"{self.pattern}=" if self.pattern is not None else "") + (self.scheme.name if self.scheme else "exact")


class SchemeSpec:
    """Which scheme each tensor of a snapshot gets: rules in order, the default last."""

    def __init__(self, rules: list[Rule], min_elements: int = MIN_ELEMENTS):
        self.rules = rules
        self.min_elements = min_elements

    @classmethod
    def parse(cls, schemes=None, keep_exact=(), min_elements: int = MIN_ELEMENTS) -> "SchemeSpec | None":
        """Rules from ``--scheme`` values (a string or a list: ``SCHEME`` or ``GLOB=SCHEME``)
        and ``--keep-exact`` globs; None when nothing lossy is asked for. `BadInput` on a bad name."""
        if isinstance(schemes, SchemeSpec):
            return schemes
        items = [schemes] if isinstance(schemes, str) else list(schemes or [])
        if isinstance(keep_exact, str):
            keep_exact = [keep_exact]
        rules: list[Rule] = []
        for glob in keep_exact or ():
            if not isinstance(glob, str) or not glob:
                raise BadInput(f"--keep-exact needs a non-empty glob, got {glob!r}")
            rules.append(Rule(glob, None))
        default: Rule | None = None
        for item in items:
            if not isinstance(item, str):
                raise BadInput(f"a scheme must be a string, got {type(item).__name__}")
            pattern, sep, name = item.rpartition("=")
            if sep and not pattern:
                raise BadInput(f"scheme {item!r}: empty tensor glob before '='")
            scheme = parse_scheme(name)
            if sep:
                rules.append(Rule(pattern, scheme))
            elif default is not None:
                raise BadInput(f"two default schemes ({default.text}, {item}): give others as GLOB=SCHEME")
            else:
                default = Rule(None, scheme)
        if default is not None:
            rules.append(default)
        if type(min_elements) is not int or min_elements < 0:
            raise BadInput(f"min_elements must be a non-negative integer, got {min_elements!r}")
        if not any(r.scheme is not None for r in rules):
            return None
        return cls(rules, min_elements)

    def rule(self, name: str) -> Rule | None:
        for r in self.rules:
            if r.pattern is None or fnmatch.fnmatchcase(name, r.pattern):
                return r
        return None

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.rules]


@dataclass
class LossyResult:
    """A snapshot turned into what is stored, and what the manifest records about it."""

    snapshot: Snapshot                                  # lossy tensors replaced by their stored representation
    entries: dict[str, dict] = field(default_factory=dict)   # tensor name -> its entry's "lossy" object
    exact: dict[str, str] = field(default_factory=dict)      # tensor a rule named, kept exact -> why
    summary: dict | None = None                         # the manifest's "lossy" (None: nothing was made lossy)
    logical_bytes: int = 0                              # bytes of the source snapshot (what retrieval returns)


def apply(snapshot: Snapshot, spec: SchemeSpec) -> LossyResult:
    """Encode the tensors ``spec`` chooses; measure each one's error on its decoded values."""
    out = Snapshot(metadata=dict(snapshot.metadata), files=snapshot.files, format=snapshot.format,
                   layout=snapshot.layout)
    res = LossyResult(out, logical_bytes=snapshot.nbytes)
    sq = norm = 0.0
    max_abs = 0.0
    used: set[str] = set()
    for key, t in snapshot.tensors.items():
        rule = spec.rule(t.name)
        scheme = rule.scheme if rule is not None else None
        if scheme is None:
            out.tensors[key] = t
            continue
        dt = dtypes.get(t.dtype)
        n = int(np.prod(t.shape, dtype=np.int64))
        if rule.pattern is None and (len(t.shape) < 2 or n < spec.min_elements):
            out.tensors[key] = t       # the default rule: matrices of min_elements or more only
            continue
        try:
            if not dt.is_float:
                raise Refused(f"{t.dtype} is not a float dtype")
            scheme.check(t.dtype)
            enc = scheme.encode(t.data, t.dtype)
            back = scheme.decode(enc.stored, enc.side, t.dtype)
            err = measure(t.data, back, t.dtype)
        except Refused as exc:
            res.exact[t.name] = str(exc)
            out.tensors[key] = t
            continue
        stored = Tensor.from_array(t.name, np.ascontiguousarray(enc.stored).reshape(t.shape), enc.stored_dtype)
        out.tensors[key] = stored
        res.entries[t.name] = {"scheme": scheme.name, "params": scheme.params, "dtype": t.dtype,
                               "nbytes": t.nbytes, **enc.side,
                               "max_abs_error": err["max_abs_error"], "rel_l2_error": err["rel_l2_error"]}
        used.add(scheme.name)
        sq += err["sq_error"]
        norm += err["sq_norm"]
        max_abs = max(max_abs, err["max_abs_error"])
    if res.entries:
        res.summary = {"schemes": sorted(used), "rules": spec.texts, "min_elements": spec.min_elements,
                       "tensors": len(res.entries), "max_abs_error": max_abs,
                       "rel_l2_error": math.sqrt(sq / norm) if norm > 0 else 0.0}
        if res.exact:
            res.summary["exact"] = dict(res.exact)
    return res


def scheme_of(info: dict) -> Scheme:
    """The scheme a manifest entry's ``lossy`` object names (IntegrityError if it is malformed)."""
    if type(info) is not dict or type(info.get("scheme")) is not str:
        raise IntegrityError("a lossy entry names no scheme")
    try:
        scheme = parse_scheme(info["scheme"])
    except BadInput as exc:
        raise IntegrityError(f"a lossy entry names an unknown scheme: {exc}") from None
    if scheme is None or scheme.name != info["scheme"]:
        raise IntegrityError(f"a lossy entry's scheme {info['scheme']!r} is not a canonical scheme name")
    return scheme


def decode(info: dict, stored: np.ndarray, stored_dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """A lossy tensor's values in its original dtype and shape from its stored representation
    (``stored``, of dtype ``stored_dtype``, as the manifest entry names it)."""
    scheme = scheme_of(info)
    dtype = info.get("dtype")
    if dtype not in FLOAT_DTYPES:
        raise IntegrityError(f"lossy entry: original dtype {dtype!r} is not a float dtype")
    if scheme.stored_dtype(dtype) != stored_dtype:
        raise IntegrityError(f"lossy entry: {scheme.name} of {dtype} is stored as "
                             f"{scheme.stored_dtype(dtype)}, not {stored_dtype}")
    out = scheme.decode(stored, info, dtype)
    return np.ascontiguousarray(out).view(dtypes.get(dtype).np_dtype).reshape(shape)


def label(summary: dict | None) -> str:
    """'lossy (quant-kmeans:4)' for a version's manifest summary; '' for an exact version."""
    if not summary:
        return ""
    schemes = summary.get("schemes") if type(summary) is dict else None
    return f"lossy ({', '.join(map(str, schemes))})" if isinstance(schemes, list) and schemes else "lossy"
