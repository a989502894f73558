"""Errors of progressive evaluation (no torch import here)."""
from __future__ import annotations

from ..errors import BadInput


class UnsupportedLayer(BadInput):
    """A node of the traced model has no interval rule (or uses an option the rule does not cover)."""

    def __init__(self, op: str, detail: str = ""):
        self.op = op
        super().__init__(f"no interval rule for {op}" + (f": {detail}" if detail else "")
                         + " (docs/progressive.md lists the supported layers)")


class ModelMismatch(BadInput):
    """The model's parameters do not match the version's tensors (missing name, shape, dtype)."""


class BadModelSpec(BadInput):
    """`--model module:attr` does not name an importable nn.Module class or factory."""
