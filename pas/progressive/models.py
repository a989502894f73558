"""Model definitions for progressive evaluation, and `--model module:attr` loading."""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path

import torch.nn.functional as F
from torch import nn

from .errors import BadModelSpec


class LeNetBN(nn.Module):
    """The corpus CNN (snapshots-cnn; copied from shared/corpus/make_corpus.py):
    digits 8x8 upsampled to 16x16, three conv+BN+ReLU blocks, two linear layers."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(128)
        self.fc1 = nn.Linear(128 * 4 * 4, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.max_pool2d(F.relu(self.bn3(self.conv3(x))), 2)
        x = F.dropout(F.relu(self.fc1(x.flatten(1))), 0.25, self.training)
        return self.fc2(x)


def load_model(spec: str) -> nn.Module:
    """``module:attr`` (or ``path/to/file.py:attr``): an nn.Module class (built
    with no arguments), a factory returning a module, or a module instance.
    The current directory is on the import path."""
    if ":" not in spec:
        raise BadModelSpec(f"--model {spec!r}: expected module:attr (e.g. mypkg.nets:Net)")
    mod_name, _, attr = spec.rpartition(":")
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name)
            if not path.is_file():
                raise BadModelSpec(f"--model {spec!r}: no file {path}")
            s = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(s)
            s.loader.exec_module(module)
        else:
            cwd = str(Path.cwd())
            if cwd not in sys.path:
                sys.path.insert(0, cwd)
            module = importlib.import_module(mod_name)
    except BadModelSpec:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the user's module raises
        raise BadModelSpec(f"--model {spec!r}: cannot import {mod_name} ({type(e).__name__}: {e})") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise BadModelSpec(f"--model {spec!r}: {mod_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module):
        model = obj
    elif callable(obj):
        try:
            model = obj()
        except Exception as e:  # noqa: BLE001
            kind = "class" if inspect.isclass(obj) else "factory"
            raise BadModelSpec(f"--model {spec!r}: the {kind} cannot be called without arguments "
                               f"({type(e).__name__}: {e})") from None
    else:
        raise BadModelSpec(f"--model {spec!r}: not an nn.Module class, factory or instance")
    if not isinstance(model, nn.Module):
        raise BadModelSpec(f"--model {spec!r}: gave a {type(model).__name__}, not an nn.Module")
    return model
