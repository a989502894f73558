"""Synthetic versioned weights at scale: the ModelHub paper's SD shape.

The paper's SD dataset (modelhub-paper.md §6) is simulated fine-tuning of VGG
for faces (1000 -> 100 labels): **54 versions x 10 snapshots x 16 parametric
layers**. This module writes a scaled-down VGG-16 with that shape: every
snapshot is one safetensors file, the versions form a lineage tree, and the
content behaves like training, not like independent noise.

Scale (``scale`` > 0; ``round`` = round half up)::

    versions  V = max(1, round(54 * scale))
    snapshots S = max(2, round(10 * scale))        per version
    layers      = 16 (13 conv + 3 linear, VGG-16 names; a few versions add one),
                  each a weight and a bias tensor; layer shapes do NOT depend on scale
    bytes      ~= V * S * 1.55 MB (float32; half that for bfloat16/float16),
                  plus a little for grown layers

==========  =====  ==  =============  ===========================
scale        V     S   float32 bytes  generation (2 busy cores)
==========  =====  ==  =============  ===========================
0.05         3     2   9.4 MB         0.3 s   (tests)
0.25         14    3   67 MB          0.6 s
0.5          27    5   213 MB         1.6 s
1.0          54    10  877 MB         4.8-5.7 s (the paper's shape;
                                      bf16/f16: 439 MB, ~5.7-6.3 s)
2.0          108   20  ~3.5 GB        (bytes grow as scale**2)
==========  =====  ==  =============  ===========================

Network (input 3x64x64, five 2x2 pools -> 64x2x2 = 256 features): conv
channels 8,8 | 16,16 | 32,32,32 | 64,64,64 | 64,64,64, all 3x3, named
``features.{0,2,5,7,10,12,14,17,19,21,24,26,28}``; linear 256->256
(``classifier.0``), 256->256 (``classifier.3``), 256->100 (``classifier.6``,
100 labels as in SD): 387,852 float32 parameters (1.551 MB) per snapshot,
2.1e8 floats at scale 1 (the paper's SD: 1.96e10, i.e. ~94x more per snapshot).

Content (all float32 master weights; bfloat16/float16 files are the
round-to-nearest-even casts of them, as a mixed-precision run would save):

* **Initialisation** of the root: weights ~ N(0, 1/fan_in) times a per-output-
  channel log-normal scale (sigma 0.25), biases ~ N(0, 0.02^2).
* **Trajectory**: snapshot k (k = 0..S-1) of a version adds
  ``r_k * sigma_layer * (0.6 * D + 0.8 * N_k)`` to every trainable tensor, where
  sigma_layer = 1/sqrt(fan_in), D is a per-version direction (successive updates
  are correlated, like momentum) and N_k fresh noise (both unit Gaussian);
  ``r_k = lr_v * 10**(-k/S) * sqrt(10/S)``: the step decays tenfold over the
  run, and denser checkpointing (larger S) gives smaller steps for the same
  total drift. ``lr_v`` = 2e-3 x log-uniform[0.5, 2] per version (the root:
  x2). So consecutive snapshots differ by ~0.02-0.4 % of the weight scale
  (compression-facts.md: sigma/std 0.5 % gives ~1.5x with XOR deltas).
  Measured at scale 1 (every 7th file vs its parent, byte planes + zstd-3):
  float32 1.17x alone, 2.04x as XOR against the parent (the shared corpus's
  lineage-finetune: 1.19x / 2.19x); bfloat16 1.42x / 7.2x (small steps often
  leave the bf16 rounding unchanged; the corpus's bf16 lineage gives 3.65x).
* **Lineage tree**: version i > 0 fine-tunes the LAST snapshot of its parent
  version: the previous version (55 %), one of the 5 before (30 %) or any
  earlier one (15 %). Its snapshot 0 is one step away from that snapshot.
* **Frozen layers** (~35 % of versions; always v01): a prefix of the layers
  (4, 7, 10 or 13 conv layers, or everything but the head) is bit-identical to
  the parent's last snapshot in every snapshot of the version (whole-tensor
  dedup).
* **Architecture changes** (~8 % of versions; always v02 when V > 2), cycling:
  ``head`` (classifier.6 resized to 80..150 labels: kept rows carried over,
  new rows freshly initialised), ``adapter`` (a new 256x256 layer
  ``adapters.vNN`` before the head: 17+ layers), ``widen`` (classifier.0 gains
  64 output rows and classifier.3 64 input columns, zero-initialised as in
  Net2Net). Descendants inherit the change.

Files and ids: ``ROOT/vVV-sSS.safetensors`` (zero-padded to at least 2
digits), version id ``vVV-sSS``; the parent of ``vVV-s00`` is the last snapshot
of the parent version, the parent of ``vVV-sSS`` (SS > 0) is ``vVV-s(SS-1)``.
``ROOT/manifest.json`` is written last, in the shared-corpus format (so
``bench.datasets.dir_datasets(ROOT)`` reads it too) plus the parameters, per
version the frozen tensors and the architecture change. ``generate`` reuses the
files when the manifest's parameters match and every file has its recorded
size, and regenerates otherwise (deleting ``ROOT/manifest.json`` and
``ROOT/v*-s*.safetensors`` first; other files in ROOT are left alone).

Speed: the noise is drawn by table lookup (inverse normal CDF at 2^16
quantiles, indexed by 16-bit SFC64 output): ~4x faster than
``Generator.standard_normal``; only the root initialisation uses exact
Gaussians. Deterministic from ``seed`` (every version has its own stream).

Command line: ``python -m bench.synthetic ROOT [--scale 1.0] [--seed 0]
[--dtype float32|bfloat16|float16]``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.datasets import Dataset, Version
from bench.tensorio import write_safetensors

GENERATOR_VERSION = 1
PAPER_VERSIONS, PAPER_SNAPSHOTS, PAPER_LAYERS = 54, 10, 16
DTYPES = {"float32": "float32", "f32": "float32", "fp32": "float32",
          "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "f16": "float16", "fp16": "float16"}
DTYPE_SUFFIX = {"float32": "", "bfloat16": "-bf16", "float16": "-f16"}

# VGG-16 at 1/8 width on 64x64 inputs
CONV_NAMES = [f"features.{i}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)]
CONV_CHANNELS = [8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64]
IN_CHANNELS = 3
FLAT_FEATURES = 64 * 2 * 2
HIDDEN = 256
N_CLASSES = 100
FC_NAMES = ["classifier.0", "classifier.3", "classifier.6"]

# content parameters (see the module docstring)
ROW_SCALE_SIGMA = 0.25
BIAS_INIT_STD = 0.02
LR_BASE = 2e-3
ROOT_LR_FACTOR = 2.0
DECAY = 10.0                  # step size falls tenfold over a version's snapshots
DIR_WEIGHT, NOISE_WEIGHT = 0.6, 0.8
P_FREEZE, P_ARCH = 0.35, 0.08
FREEZE_CHOICES = (4, 7, 10, 13, 15)   # layers frozen from the input side (15 = all but the head)
ARCH_KINDS = ("head", "adapter", "widen")
WIDEN_BY = 64


def _round(x: float) -> int:
    return math.floor(x + 0.5)


def shape_for(scale: float) -> tuple[int, int]:
    """(versions, snapshots per version) for ``scale``."""
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    return max(1, _round(PAPER_VERSIONS * scale)), max(2, _round(PAPER_SNAPSHOTS * scale))


def dataset_name(scale: float, dtype: str = "float32") -> str:
    return f"synthetic-sd-x{scale:g}{DTYPE_SUFFIX[DTYPES[dtype]]}"


# ----------------------------------------------------------------------------
# noise
# ----------------------------------------------------------------------------
_TABLE: np.ndarray | None = None


def _normal_table() -> np.ndarray:
    """Standard normal at the 2^16 mid-quantiles, rescaled to unit variance."""
    global _TABLE
    if _TABLE is None:
        from statistics import NormalDist
        inv = NormalDist().inv_cdf
        t = np.array([inv((i + 0.5) / 65536.0) for i in range(65536)])
        _TABLE = (t / np.sqrt(np.mean(t * t))).astype(np.float32)
    return _TABLE


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """n approximately standard-normal float32 (table lookup on 16-bit draws)."""
    idx = rng.bit_generator.random_raw((n + 3) // 4).view(np.uint16)[:n]
    return np.take(_normal_table(), idx)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.SFC64(np.random.SeedSequence([seed, *key])))


# ----------------------------------------------------------------------------
# architecture: an ordered list of layers, stored as one flat float32 vector
# ----------------------------------------------------------------------------
@dataclass
class Layer:
    name: str
    shape: tuple[int, ...]     # weight shape; the bias has shape[0] elements

    @property
    def fan_in(self) -> int:
        return int(np.prod(self.shape[1:]))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) + self.shape[0]


def base_layers() -> list[Layer]:
    out, cin = [], IN_CHANNELS
    for name, c in zip(CONV_NAMES, CONV_CHANNELS):
        out.append(Layer(name, (c, cin, 3, 3)))
        cin = c
    out.append(Layer(FC_NAMES[0], (HIDDEN, FLAT_FEATURES)))
    out.append(Layer(FC_NAMES[1], (HIDDEN, HIDDEN)))
    out.append(Layer(FC_NAMES[2], (N_CLASSES, HIDDEN)))
    return out


@dataclass
class State:
    layers: list[Layer]
    x: np.ndarray                                   # flat float32, layer order, weight then bias

    def offsets(self) -> list[tuple[int, int, int]]:
        """(start, bias start, end) of every layer in x."""
        out, o = [], 0
        for L in self.layers:
            w = int(np.prod(L.shape))
            out.append((o, o + w, o + w + L.shape[0]))
            o += L.size
        return out

    def tensors(self, x: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """name -> view of x (or of a cast of it with the same layout)."""
        x = self.x if x is None else x
        out = {}
        for L, (a, b, e) in zip(self.layers, self.offsets()):
            out[f"{L.name}.weight"] = x[a:b].reshape(L.shape)
            out[f"{L.name}.bias"] = x[b:e]
        return out

    def copy(self) -> State:
        return State([Layer(L.name, L.shape) for L in self.layers], self.x.copy())


def _init_layer(rng: np.random.Generator, L: Layer, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Weight (N(0, 1/fan_in) x per-row log-normal scale) and bias of a fresh layer."""
    n = int(np.prod(L.shape))
    z = rng.standard_normal(n, dtype=np.float32) if exact else _noise(rng, n)
    rows = np.exp(ROW_SCALE_SIGMA * _noise(rng, L.shape[0])).astype(np.float32)
    w = (z.reshape(L.shape[0], -1) * (rows[:, None] / np.float32(math.sqrt(L.fan_in)))).reshape(L.shape)
    bias = _noise(rng, L.shape[0]) * np.float32(BIAS_INIT_STD)
    return w.astype(np.float32, copy=False), bias.astype(np.float32, copy=False)


def init_state(rng: np.random.Generator) -> State:
    layers = base_layers()
    parts = []
    for L in layers:
        w, b = _init_layer(rng, L, exact=True)
        parts += [w.reshape(-1), b]
    return State(layers, np.concatenate(parts))


def change_arch(st: State, kind: str, rng: np.random.Generator, tag: str) -> tuple[State, str]:
    """A new State with one architecture change; returns it and a description."""
    old = st.tensors()
    layers = [Layer(L.name, L.shape) for L in st.layers]
    fresh: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if kind == "head":
        head = layers[-1]
        n_old = head.shape[0]
        n_new = int(rng.integers(80, 151))
        if n_new == n_old:
            n_new += 10
        head.shape = (n_new,) + head.shape[1:]
        w, b = _init_layer(rng, head)
        k = min(n_old, n_new)
        w[:k] = old[f"{head.name}.weight"][:k]
        b[:k] = old[f"{head.name}.bias"][:k]
        fresh[head.name] = (w, b)
        desc = f"head {head.name} resized {n_old}->{n_new} labels"
    elif kind == "adapter":
        d = layers[-1].shape[1]
        new = Layer(f"adapters.{tag}", (d, d))
        layers.insert(len(layers) - 1, new)
        fresh[new.name] = _init_layer(rng, new)
        desc = f"layer {new.name} ({d}x{d}) added before the head"
    elif kind == "widen":
        i0 = next(i for i, L in enumerate(layers) if L.name == FC_NAMES[0])
        i1 = next(i for i, L in enumerate(layers) if L.name == FC_NAMES[1])
        a, b_ = layers[i0], layers[i1]
        h = a.shape[0]
        a.shape = (h + WIDEN_BY,) + a.shape[1:]
        b_.shape = (b_.shape[0], h + WIDEN_BY)
        w, bias = _init_layer(rng, a)
        w[:h] = old[f"{a.name}.weight"]
        bias[:h] = old[f"{a.name}.bias"]
        fresh[a.name] = (w, bias)
        w2 = np.zeros(b_.shape, np.float32)          # new inputs start at zero (Net2Net)
        w2[:, :h] = old[f"{b_.name}.weight"]
        fresh[b_.name] = (w2, old[f"{b_.name}.bias"].copy())
        desc = f"{a.name} widened {h}->{h + WIDEN_BY} outputs, {b_.name} {h}->{h + WIDEN_BY} inputs"
    else:
        raise ValueError(kind)
    parts = []
    for L in layers:
        w, b = fresh.get(L.name) or (old[f"{L.name}.weight"], old[f"{L.name}.bias"])
        parts += [np.asarray(w, np.float32).reshape(-1), np.asarray(b, np.float32)]
    return State(layers, np.concatenate(parts)), desc


# ----------------------------------------------------------------------------
# the plan: lineage tree, learning rates, frozen prefixes, architecture changes
# ----------------------------------------------------------------------------
@dataclass
class VersionPlan:
    index: int
    parent: int | None
    lr: float
    freeze: int = 0                    # number of leading layers frozen
    arch: str | None = None            # None | "head" | "adapter" | "widen"
    children: list[int] = field(default_factory=list)


def make_plan(n_versions: int, seed: int) -> list[VersionPlan]:
    rng = _rng(seed, 0x5D)
    plans, n_arch = [], 0
    for i in range(n_versions):
        lr = LR_BASE * float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        u, parent_pick = rng.random(), rng.integers(0, 1 << 30)
        f_pick, f_u, a_u = rng.integers(0, len(FREEZE_CHOICES)), rng.random(), rng.random()
        if i == 0:
            plans.append(VersionPlan(0, None, lr * ROOT_LR_FACTOR))
            continue
        if u < 0.55 or i == 1:
            parent = i - 1
        elif u < 0.85:
            lo = max(0, i - 5)
            parent = lo + int(parent_pick % (i - lo))
        else:
            parent = int(parent_pick % i)
        arch = None
        if i == 2 or (i > 2 and a_u < P_ARCH):
            arch = ARCH_KINDS[n_arch % len(ARCH_KINDS)]
            n_arch += 1
        freeze = 0
        if i == 1 or (i > 2 and f_u < P_FREEZE):
            freeze = FREEZE_CHOICES[int(f_pick)]
            if arch is not None:               # a changed layer is trained: freeze convs only
                freeze = min(freeze, len(CONV_NAMES))
        plans.append(VersionPlan(i, parent, lr, freeze, arch))
        plans[parent].children.append(i)
    return plans


# ----------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------
def _bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even bfloat16 bit patterns (<u2) of finite float32."""
    u = x.view(np.uint32)
    return ((u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)).astype("<u2")


def _write(path: Path, st: State, dtype: str, meta: dict[str, str]) -> None:
    if dtype == "float32":
        tensors, dt = st.tensors(), None
    elif dtype == "float16":
        tensors, dt = st.tensors(st.x.astype(np.float16)), None
    else:
        tensors = st.tensors(_bf16_bits(st.x))
        dt = {n: "BF16" for n in tensors}
    write_safetensors(path, tensors, dtypes=dt, metadata=meta)


def _ids(n_versions: int, n_snapshots: int):
    wv, ws = max(2, len(str(n_versions - 1))), max(2, len(str(n_snapshots - 1)))
    return lambda v, s: f"v{v:0{wv}d}-s{s:0{ws}d}", lambda v: f"v{v:0{wv}d}"


def _params(scale: float, seed: int, dtype: str) -> dict:
    V, S = shape_for(scale)
    return {"generator": "bench.synthetic", "generator_version": GENERATOR_VERSION,
            "scale": float(scale), "seed": int(seed), "dtype": dtype,
            "versions": V, "snapshots": S, "numpy": np.__version__.split(".")[0]}


def _load_if_current(root: Path, params: dict) -> dict | None:
    mp = root / "manifest.json"
    try:
        m = json.loads(mp.read_text())
    except (OSError, ValueError):
        return None
    if m.get("params") != params:
        return None
    for lin in m.get("lineages", []):
        for v in lin["versions"]:
            p = root / v["path"]
            if not p.is_file() or p.stat().st_size != v.get("bytes"):
                return None
    return m


def _datasets(root: Path, m: dict) -> list[Dataset]:
    out = []
    for lin in m["lineages"]:
        vs = [Version(v["id"], root / v["path"], v.get("parent"), v.get("note", "")) for v in lin["versions"]]
        out.append(Dataset(lin["name"], "synthetic", vs, lin.get("description", ""), str(root)))
    return out


def _clear(root: Path) -> None:
    """Remove a previous generation's manifest and files (ours only, by name)."""
    (root / "manifest.json").unlink(missing_ok=True)
    for p in root.glob("v*-s*.safetensors"):
        p.unlink()


def generate(root: Path, scale: float = 1.0, seed: int = 0, dtype: str = "float32", *,
             log=None) -> list[Dataset]:
    """Write (or reuse) the synthetic SD-shaped dataset under ``root``; one Dataset.

    ``log``: optional callable taking a progress message (only called when
    files are (re)generated)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(set(DTYPES.values()))}, got {dtype!r}")
    dtype = DTYPES[dtype]
    root = Path(root)
    params = _params(scale, seed, dtype)
    m = _load_if_current(root, params)
    if m is not None:
        return _datasets(root, m)

    t0 = time.perf_counter()
    V, S = params["versions"], params["snapshots"]
    name = dataset_name(scale, dtype)
    if log:
        log(f"generating {name}: {V} versions x {S} snapshots into {root} ...")
    root.mkdir(parents=True, exist_ok=True)
    _clear(root)
    sid, vid = _ids(V, S)
    plans = make_plan(V, seed)
    pending: dict[int, tuple[State, int]] = {}     # version -> (last snapshot, children not yet done)
    entries, vinfo, total = [], [], 0
    for p in plans:
        rng = _rng(seed, 1, p.index)
        if p.parent is None:
            st, arch_desc = init_state(rng), None
        else:
            base, left = pending[p.parent]
            st = base.copy() if left > 1 else base   # the last child takes it over
            if left > 1:
                pending[p.parent] = (base, left - 1)
            else:
                del pending[p.parent]
            arch_desc = None
            if p.arch:
                st, arch_desc = change_arch(st, p.arch, rng, vid(p.index))
        offs = st.offsets()
        start = offs[p.freeze - 1][2] if p.freeze else 0           # frozen prefix of x: x[:start]
        frozen = [f"{L.name}.{k}" for L in st.layers[:p.freeze] for k in ("weight", "bias")]
        n = st.x.size - start
        # per-element sigma_layer of the trainable part
        sig = np.empty(n, np.float32)
        for L, (a, b, e) in zip(st.layers, offs):
            if e > start:
                sig[max(a, start) - start:b - start] = 1.0 / math.sqrt(L.fan_in)
                sig[b - start:e - start] = BIAS_INIT_STD
        direction = _noise(rng, n)
        what = "root" if p.parent is None else f"fine-tune of {vid(p.parent)}"
        bits = [what]
        if frozen:
            bits.append(f"frozen {st.layers[0].name}..{st.layers[p.freeze - 1].name} ({p.freeze} layers)")
        if arch_desc:
            bits.append(arch_desc)
        vdesc = "; ".join(bits)
        for k in range(S):
            r = p.lr * DECAY ** (-k / S) * math.sqrt(PAPER_SNAPSHOTS / S)
            step = _noise(rng, n)
            step *= np.float32(NOISE_WEIGHT)
            step += np.float32(DIR_WEIGHT) * direction
            step *= sig
            step *= np.float32(r)
            st.x[start:] += step
            this = sid(p.index, k)
            parent = (sid(p.index, k - 1) if k else
                      sid(p.parent, S - 1) if p.parent is not None else None)
            path = root / f"{this}.safetensors"
            _write(path, st, dtype, {"id": this, "parent": parent or "", "generator": "bench.synthetic"})
            size = path.stat().st_size
            total += size
            entries.append({"id": this, "path": path.name, "parent": parent, "bytes": size,
                            "note": f"snapshot {k + 1}/{S} of {vid(p.index)}: {vdesc}"})
        if p.children:
            pending[p.index] = (st, len(p.children))
        vinfo.append({"version": vid(p.index), "parent": vid(p.parent) if p.parent is not None else None,
                      "lr": p.lr, "frozen": frozen, "arch": arch_desc, "layers": len(st.layers),
                      "params": int(st.x.size)})
    seconds = time.perf_counter() - t0
    desc = (f"synthetic SD shape (ModelHub paper: 54 versions x 10 snapshots x 16 layers) at scale {scale:g}: "
            f"{V} versions x {S} snapshots of a 1/8-width VGG-16 ({dtype}), lineage tree of fine-tunes, "
            f"decaying training steps, frozen layer prefixes, {sum(1 for p in plans if p.arch)} architecture "
            f"changes; seed {seed}")
    m = {"params": params, "total_bytes": total, "generation_s": round(seconds, 3),
         "lineages": [{"name": name, "description": desc, "versions": entries}], "version_info": vinfo}
    tmp = root / "manifest.json.tmp"
    tmp.write_text(json.dumps(m, indent=1) + "\n")
    os.replace(tmp, root / "manifest.json")
    if log:
        log(f"{name}: {len(entries)} files, {total / 1e6:.1f} MB in {seconds:.1f} s")
    return _datasets(root, m)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.synthetic", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    (ds,) = generate(args.root, args.scale, args.seed, args.dtype,
                     log=lambda s: print(s, file=sys.stderr, flush=True))
    m = json.loads((args.root / "manifest.json").read_text())
    print(f"{ds.name}: {len(ds.versions)} files, {ds.file_bytes / 1e6:.1f} MB, "
          f"{time.perf_counter() - t0:.2f} s (generation {m['generation_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
