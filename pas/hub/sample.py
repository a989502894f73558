"""A small sample repository of model versions, for the hub's tests, load test and screenshots.

Two models with lineage, built through dlv's own verbs (add, commit, copy):
``digits`` (a small CNN: network definition, hyper-parameters, a training log
per version) with two versions, and ``digits-ft`` copied from it and
fine-tuned (its classifier changed, a lower learning rate, its own log).
Weights are random but deterministic (``seed``)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

NETWORK = {"class": "DigitsCNN", "nodes": [
    {"id": "conv1", "type": "Conv2d", "params": {"in_channels": 1, "out_channels": 8, "kernel_size": 3}},
    {"id": "relu1", "type": "ReLU"},
    {"id": "pool", "type": "MaxPool2d", "params": {"kernel_size": 2}},
    {"id": "flatten", "type": "Flatten"},
    {"id": "fc1", "type": "Linear", "params": {"in_features": 200, "out_features": 32}},
    {"id": "relu2", "type": "ReLU"},
    {"id": "fc2", "type": "Linear", "params": {"in_features": 32, "out_features": 10}}]}


def _weights(rng, scale: float = 1.0) -> dict[str, np.ndarray]:
    return {"conv1.weight": (rng.standard_normal((8, 1, 3, 3)) * 0.3 * scale).astype(np.float32),
            "conv1.bias": np.zeros(8, np.float32),
            "fc1.weight": (rng.standard_normal((32, 200)) * 0.07).astype(np.float32),
            "fc1.bias": np.zeros(32, np.float32),
            "fc2.weight": (rng.standard_normal((10, 32)) * 0.18).astype(np.float32),
            "fc2.bias": np.zeros(10, np.float32)}


def _log(path: Path, start: int, stop: int, lr: float, acc0: float) -> None:
    rows = ["iteration,loss,accuracy,lr"]
    for it in range(start, stop, 5):
        t = (it - start + 5) / (stop - start)
        rows.append(f"{it},{2.3 * (1 - 0.8 * t) + 0.05 * np.sin(it):.4f},{acc0 + (0.95 - acc0) * t ** 0.5:.4f},{lr}")
    path.write_text("\n".join(rows) + "\n")


def build(path: str | Path, seed: int = 0) -> dict:
    """Create a repository at ``path`` with the sample models; returns their version ids."""
    import os

    from ..dlv import model
    from ..repo import Repository
    path = Path(path)
    work = path.parent / (path.name + "-src")
    work.mkdir(parents=True, exist_ok=True)
    Repository.init(path).close()
    root = path / ".pas"
    rng = np.random.default_rng(seed)
    w = _weights(rng)
    (work / "net.json").write_text(json.dumps(NETWORK))
    (work / "hp.json").write_text(json.dumps({"lr": 0.1, "batch_size": 32, "optimizer": "sgd", "epochs": 4}))
    np.savez(work / "w1.npz", **w)
    _log(work / "log1.csv", 0, 40, 0.1, 0.2)
    ids = {}
    cwd = os.getcwd()
    os.chdir(work)     # dlv names side files relative to the current directory
    try:
        with Repository.open(path, write=True) as repo:
            model.add(root, [work / "w1.npz", work / "net.json", work / "hp.json", work / "log1.csv"], model="digits")
            ids["digits@1"] = model.commit(repo, root, "40 iterations")["version_id"]
            w2 = dict(w)
            for k in ("fc1.weight", "fc2.weight", "conv1.bias"):
                w2[k] = w[k] + (rng.standard_normal(w[k].shape) * 0.01).astype(np.float32)
            np.savez(work / "w2.npz", **w2)
            _log(work / "log2.csv", 40, 80, 0.1, 0.7)
            model.add(root, [work / "w2.npz", work / "log2.csv"])
            ids["digits@2"] = model.commit(repo, root, "80 iterations")["version_id"]
            ids["digits-ft@0"] = model.copy(repo, "digits", "digits-ft")["version_id"]
            w3 = dict(w2)
            w3["fc2.weight"] = w2["fc2.weight"] + (rng.standard_normal((10, 32)) * 0.05).astype(np.float32)
            np.savez(work / "w3.npz", **w3)
            (work / "hp_ft.json").write_text(json.dumps({"lr": 0.02, "batch_size": 32, "optimizer": "sgd",
                                                         "epochs": 2, "frozen": ["conv1", "fc1"]}))
            _log(work / "log3.csv", 0, 30, 0.02, 0.85)
            (work / "README.md").write_text("Fine-tuned classifier head.\n")
            model.add(root, [work / "w3.npz", work / "hp_ft.json", work / "log3.csv", work / "README.md"],
                      model="digits-ft")
            ids["digits-ft@1"] = model.commit(repo, root, "fine-tune the classifier")["version_id"]
    finally:
        os.chdir(cwd)
    return ids


class Server:
    """The hub on a free loopback port in a thread of this process (tests, load test).

        with Server(cfg) as url: ...      # url = "http://127.0.0.1:PORT"
    """

    def __init__(self, cfg, host: str = "127.0.0.1"):
        self.cfg, self.host = cfg, host

    def __enter__(self) -> str:
        import socket
        import threading
        import time

        import uvicorn

        from .app import create_app
        with socket.socket() as s:
            s.bind((self.host, 0))
            port = s.getsockname()[1]
        config = uvicorn.Config(create_app(self.cfg), host=self.host, port=port, log_level="warning",
                                limit_concurrency=256)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the hub did not start")
            time.sleep(0.02)
        self.url = f"http://{self.host}:{port}"
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
