"""pas: Parameter Archival Storage for neural-network weights.

The Python API mirrors safetensors' verbs::

    import pas
    weights = pas.load("myrepo", "bert")                 # {name: numpy array}
    with pas.open("myrepo", "bert") as f:
        f.keys(); f.metadata(); f.get_tensor("pooler.dense.weight")

Heavy modules are imported on first use, so `import pas` stays cheap.
"""
from __future__ import annotations

from .errors import (BadInput, BadName, IntegrityError, NotARepository, NotFound,
                     PasError, RepositoryLocked, UnsupportedDType, UnsupportedFormat)

__version__ = "0.1.0"

__all__ = ["load", "load_many", "open", "Repository", "PasError", "BadInput", "BadName", "IntegrityError",
           "NotARepository", "NotFound", "RepositoryLocked", "UnsupportedDType",
           "UnsupportedFormat"]


def __getattr__(name):
    if name == "Repository":
        from .repo import Repository
        return Repository
    raise AttributeError(name)


def load(repo, ref: str, names=None, framework: str = "np") -> dict:
    """All tensors of version ``ref`` (or only ``names``) as numpy arrays, or torch tensors with framework="pt"."""
    from .api import load as _load
    return _load(repo, ref, names=names, framework=framework)


def load_many(repo, refs, framework: str = "np"):
    """Several versions, yielded as (version id hex, {name: array}) with each
    stored delta decoded once: a lineage costs about one decode per version."""
    from .api import load_many as _load_many
    return _load_many(repo, refs, framework=framework)


def open(repo, ref: str, framework: str = "np"):  # noqa: A001 - mirrors safetensors.safe_open
    """A lazy handle on version ``ref``: ``keys()``, ``get_tensor(name)``, ``metadata()``."""
    from .api import VersionHandle
    return VersionHandle(repo, ref, framework=framework)
