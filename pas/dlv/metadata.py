"""Metadata M of a model version: hyper-parameters and the training log.

Hyper-parameters come from a JSON or YAML config (a mapping). The training
log comes from a CSV file (our own ``iteration,loss,accuracy,lr`` columns, a
PyTorch Lightning ``metrics.csv``, or a TensorBoard ``Wall time,Step,Value``
export) or JSON lines; it is normalised to one record per iteration:
``{"iteration": i, "<metric>": value, ...}`` with the canonical names
``loss``, ``accuracy`` and ``lr`` where the source spells them otherwise.

Stored forms (docs/dlv.md): ``.dlv/hyperparams.json`` (canonical JSON) and
``.dlv/log.jsonl`` (one canonical JSON object per iteration, sorted by
iteration). Non-finite values are written as the strings ``"nan"``,
``"inf"`` and ``"-inf"`` so that every stored file is strict JSON.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from ..errors import BadInput, NotFound

#: Column spellings mapped to the canonical metric names (lower-cased match).
ALIASES = {
    "iteration": ("iteration", "iter", "step", "global_step", "it", "batch"),
    "loss": ("loss", "train_loss", "training_loss", "train/loss", "loss/train"),
    "accuracy": ("accuracy", "acc", "train_acc", "train_accuracy", "train/acc", "train/accuracy"),
    "lr": ("lr", "learning_rate", "learning-rate", "lr-sgd", "lr-adam", "lr-adamw"),
}
_CANON = {alias: name for name, aliases in ALIASES.items() for alias in aliases}
MAX_LOG_BYTES = 64 << 20   # a training log bigger than this is not a log


# --------------------------------------------------------------- JSON values
def _encode_value(v: Any) -> Any:
    """Strict-JSON form of a metadata value (non-finite floats as strings)."""
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {str(k): _encode_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_encode_value(x) for x in v]
    return v


def _decode_metric(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        s = v.strip().lower()
        if s in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity"):
            return float(s.replace("infinity", "inf"))
    return None


def canonical_json(obj: Any) -> bytes:
    """The stored bytes of a JSON document: sorted keys, compact, strict (same content -> same bytes)."""
    return json.dumps(_encode_value(obj), sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


# ------------------------------------------------------------ hyper-parameters
def load_mapping(data: bytes, name: str) -> dict:
    """A JSON or YAML document that must be a mapping (YAML only if PyYAML is installed)."""
    text = _text(data, name)
    if name.lower().endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise BadInput(f"{name}: reading YAML needs PyYAML (pip install pyyaml), or give the file as JSON") from None
        try:
            obj = _yaml_numbers(yaml.safe_load(text))
        except yaml.YAMLError as exc:
            raise BadInput(f"{name}: not valid YAML: {str(exc)[:300]}") from None
    else:
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise BadInput(f"{name}: not valid JSON: {exc}") from None
    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        raise BadInput(f"{name}: expected a mapping of names to values, got {type(obj).__name__}")
    return obj


_EXP_FLOAT = None


def _yaml_numbers(obj: Any) -> Any:
    """PyYAML (YAML 1.1) reads ``1e-3`` as a string; YAML 1.2 and every config
    author mean a number: such strings become floats."""
    global _EXP_FLOAT
    if _EXP_FLOAT is None:
        import re
        _EXP_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
    if isinstance(obj, str) and _EXP_FLOAT.fullmatch(obj):
        return float(obj)
    if isinstance(obj, dict):
        return {k: _yaml_numbers(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_yaml_numbers(v) for v in obj]
    return obj


def parse_hyperparams(data: bytes, name: str) -> dict:
    """Hyper-parameters from a JSON/YAML config, made JSON-safe (dates etc. as strings)."""
    obj = load_mapping(data, name)
    return json.loads(json.dumps(_encode_value(obj), default=str, allow_nan=False))


def _text(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadInput(f"{name}: not UTF-8 text") from None


# ----------------------------------------------------------------- training log
def parse_log(data: bytes, name: str, metric_name: str | None = None) -> list[dict]:
    """A training log as records ``{"iteration": int, metric: float, ...}``, sorted by iteration.

    Rows with the same iteration are merged (Lightning writes train and
    validation metrics on separate rows); a later value of a metric at the
    same iteration wins. Empty cells are skipped. ``metric_name`` names the
    value of a TensorBoard export (default: the file's stem)."""
    if len(data) > MAX_LOG_BYTES:
        raise BadInput(f"{name}: {len(data)} bytes is too big for a training log (max {MAX_LOG_BYTES})")
    text = _text(data, name)
    lower = name.lower()
    if lower.endswith((".jsonl", ".ndjson")) or (lower.endswith(".json") and text.lstrip().startswith("{")):
        rows = _jsonl_rows(text, name)
    elif lower.endswith((".csv", ".tsv", ".txt")):
        rows = _csv_rows(text, name, "\t" if lower.endswith(".tsv") else ",", metric_name or Path(name).stem)
    elif lower.endswith(".json"):
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise BadInput(f"{name}: not valid JSON: {exc}") from None
        if not isinstance(obj, list):
            raise BadInput(f"{name}: a JSON training log is a list of objects (or JSON lines)")
        rows = obj
    else:
        raise BadInput(f"{name}: unknown training log format (use .csv, .tsv, .jsonl or .json)")
    return _normalise(rows, name)


def _jsonl_rows(text: str, name: str) -> list:
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as exc:
            raise BadInput(f"{name}: line {i} is not JSON: {exc}") from None
    return rows


def _csv_rows(text: str, name: str, delimiter: str, metric_name: str) -> list[dict]:
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    if not reader.fieldnames:
        raise BadInput(f"{name}: empty CSV (no header)")
    fields = [f.strip() if f else f for f in reader.fieldnames]
    tensorboard = {f.lower() for f in fields if f} == {"wall time", "step", "value"}
    rows = []
    for row in reader:
        clean = {(k.strip() if k else k): v for k, v in row.items() if k is not None}
        if tensorboard:
            clean = {"step": clean.get("Step") or clean.get("step"),
                     metric_name: clean.get("Value") or clean.get("value")}
        rows.append(clean)
    return rows


def _normalise(rows: list, name: str) -> list[dict]:
    by_iter: dict[int, dict] = {}
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise BadInput(f"{name}: record {n} is not an object")
        it = None
        metrics: dict[str, float] = {}
        for key, raw in row.items():
            if key is None or raw is None or (isinstance(raw, str) and not raw.strip()):
                continue
            low = str(key).strip().lower()
            canon = _CANON.get(low, str(key).strip())
            if canon == "iteration":
                it = _iteration(raw, name, n)
                continue
            if low in ("epoch", "wall time", "time", "timestamp", "created_at"):
                value = _number(raw)
                if value is not None and low == "epoch":
                    metrics["epoch"] = value
                continue
            value = _number(raw)
            if value is None:
                continue   # a text column (a run name): not a metric
            metrics[canon] = value
        if it is None and "epoch" in metrics:   # an epoch-level log: epochs are its iterations
            it = _iteration(metrics["epoch"], name, n)
        if it is None:
            raise BadInput(f"{name}: record {n} has no iteration (a column iteration, step or epoch)")
        by_iter.setdefault(it, {}).update(metrics)
    if not by_iter:
        raise BadInput(f"{name}: the training log has no records")
    return [{"iteration": it, **by_iter[it]} for it in sorted(by_iter)]


def _number(raw) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, (int, float)):
        return float(raw)
    if isinstance(raw, str):
        try:
            return float(raw.strip())
        except ValueError:
            return _decode_metric(raw)
    return None


def _iteration(raw, name: str, n: int) -> int:
    v = _number(raw)
    if v is None or not math.isfinite(v) or v != int(v) or v < 0:
        raise BadInput(f"{name}: record {n} has a bad iteration {str(raw)[:40]!r} (a non-negative integer)")
    return int(v)


def encode_log(records: list[dict]) -> bytes:
    """The stored ``.dlv/log.jsonl``: one canonical object per iteration."""
    return b"".join(canonical_json(r) + b"\n" for r in records)


def decode_log(data: bytes, what: str = "training log") -> list[dict]:
    out = []
    for line in data.decode("utf-8").splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if not isinstance(rec, dict) or not isinstance(rec.get("iteration"), int):
            raise BadInput(f"{what}: a record has no integer iteration")
        out.append({k: (v if k == "iteration" else _decode_metric(v)) for k, v in rec.items()})
    return out


# ------------------------------------------------------------------ queries
def series(log: list[dict], name: str) -> list[tuple[int, float]]:
    """(iteration, value) of metric ``name`` at every iteration that has it, in order."""
    return [(r["iteration"], r[name]) for r in log if r.get(name) is not None]


def value_at(log: list[dict], name: str, iteration: int | None = None) -> float:
    """Metric ``name`` at ``iteration`` (None: at the last iteration that has it)."""
    points = series(log, name)
    if not points:
        known = sorted({k for r in log for k in r if k != "iteration"})
        raise NotFound(f"no metric {name!r} in the training log (metrics: {', '.join(known) or 'none'})")
    if iteration is None:
        return points[-1][1]
    for it, v in points:
        if it == iteration:
            return v
    raise NotFound(f"metric {name!r} has no value at iteration {iteration}")


def summary(log: list[dict]) -> dict:
    """Per metric: first and last iteration and value, min and max, count (for desc)."""
    out = {}
    for name in sorted({k for r in log for k in r if k != "iteration"}):
        pts = series(log, name)
        finite = [v for _, v in pts if math.isfinite(v)]
        out[name] = {"count": len(pts), "first": {"iteration": pts[0][0], "value": pts[0][1]},
                     "last": {"iteration": pts[-1][0], "value": pts[-1][1]},
                     "min": min(finite) if finite else None, "max": max(finite) if finite else None}
    return out


def json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats as strings (for --json output)."""
    return _encode_value(obj)
