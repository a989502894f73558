"""Interval and progressive evaluation of torch models on archived weights
(docs/progressive.md). Imports torch: never imported by `pas` itself."""
from .errors import BadModelSpec, ModelMismatch, UnsupportedLayer
from .evaluate import (
           EvalResult,
           PlaneStep,
           decide,
           evaluate,
           exact_top,
           load_npz,
           reference_predictions,
)
from .interval import Interval, IntervalNet
from .models import LeNetBN, load_model

__all__ = [
           "BadModelSpec",
           "EvalResult",
           "Interval",
           "IntervalNet",
           "LeNetBN",
           "ModelMismatch",
           "PlaneStep",
           "UnsupportedLayer",
           "decide",
           "evaluate",
           "exact_top",
           "load_model",
           "load_npz",
           "reference_predictions",
]
