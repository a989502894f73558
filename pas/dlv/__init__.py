"""dlv: ModelHub's versioning layer over pas (issue 8; docs/dlv.md).

A model version is ``(name, id, N, W, M, F)``: weights W are a pas version's
tensors, the network N, metadata M (hyper-parameters, training log) and
files F ride in the same version as side files (``.dlv/`` records), lineage
is the version's parent. The Python API (what DQL builds on)::

    from pas.dlv import open_version, metric
    mv = open_version(repo, "lenet")          # repo: an open pas.repo.Repository
    mv.network, mv.hyperparams, mv.log, mv.files
    metric(repo, "lenet", "accuracy")          # last logged value; iteration=N for one step

Modules are imported on first use: nothing here imports numpy or torch.
"""
from __future__ import annotations

__all__ = ["ModelVersion", "describe", "diff", "lineage", "metric", "open_version", "search", "tree"]


def __getattr__(name):
    if name in ("open_version", "metric", "describe", "tree", "search", "lineage", "ModelVersion"):
        from . import model
        return getattr(model, name)
    if name == "diff":
        from .diff import diff_many
        return diff_many
    raise AttributeError(name)
