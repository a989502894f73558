"""Storage schemes compared by ``bench.core``: one small adapter class each.

Every scheme stores versions in its own folder and offers::

    archive(version_path, parent_id, name=...) -> id   # store one version
    physical_bytes() -> int                            # bytes the stored data costs
    retrieve(id) -> dict[str, np.ndarray]              # every tensor of a version
    retrieve_one(id, name) -> np.ndarray               # one tensor
    close(); reopen() (read-only, for the retrieval phase)

``added[id]`` holds the physical bytes each archive call added. Arrays come
back in pas's dtype convention (see ``tensorio``), so they compare as bytes
with the source.

pas configurations worth comparing are data, not code: every entry of
``pas_configs.toml`` becomes one scheme (a `Pas` subclass with that entry's
Repository config overrides), registered in ``SCHEMES`` under its name. They
are opt-in (``--schemes pas-xor,...``); ``DEFAULT_SCHEMES`` is what the
harness runs without ``--schemes``. See README.md, "Adding a scheme".
"""
from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import types
import zlib
from pathlib import Path
from typing import ClassVar

import numpy as np

from . import tensorio


def dir_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (what the scheme occupies on disk)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_indexed(path: Path, index: dict, frames: list[bytes]) -> int:
    """One file: ``<u64 index length><JSON index><frames>``; returns its size."""
    hb = json.dumps(index, separators=(",", ":")).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        f.writelines(frames)
    _sync_tree(path)
    return path.stat().st_size


def read_indexed(path: Path) -> tuple[dict, memoryview, int]:
    """A `write_indexed` file read whole: (index, its bytes, offset of the frames)."""
    buf = bytearray(path.stat().st_size)
    with open(path, "rb") as f:
        f.readinto(buf)
    mv = memoryview(buf)
    (hlen,) = struct.unpack("<Q", mv[:8])
    return json.loads(bytes(mv[8:8 + hlen])), mv, 8 + hlen


def read_indexed_one(path: Path, name: str, frames_key: str = "frames") -> tuple[dict, memoryview]:
    """One entry of a `write_indexed` file: its index record (offset 0) and only its frames' bytes."""
    with open(path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        info = json.loads(f.read(hlen))[name]
        f.seek(8 + hlen + info["offset"])
        return dict(info, offset=0), memoryview(f.read(sum(info[frames_key])))


class IndexedPerTensor:
    """Retrieval for schemes that keep one `write_indexed` file per version
    (``<id><suffix>``) and decode each tensor with ``_decode(info, buf, base)``."""
    suffix = ""

    def retrieve(self, id):
        index, mv, base = read_indexed(self.root / f"{id}{self.suffix}")
        return {n: self._decode(info, mv, base) for n, info in index.items()}

    def retrieve_one(self, id, name):
        info, buf = read_indexed_one(self.root / f"{id}{self.suffix}", name)
        return self._decode(info, buf, 0)


class Scheme:
    name = "?"
    label = "?"
    description = ""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.added: dict[str, int] = {}
        self._n = 0

    @classmethod
    def available(cls) -> str | None:
        """None when usable, else why not."""
        return None

    def _new_id(self) -> str:
        self._n += 1
        return f"{self._n:06d}"

    def archive(self, version_path: Path, parent_id: str | None, name: str = "") -> str:
        raise NotImplementedError

    def physical_bytes(self) -> int:
        return sum(self.added.values())

    def retrieve(self, id: str) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def retrieve_one(self, id: str, name: str) -> np.ndarray:
        raise NotImplementedError

    def retrieve_lineage(self, ids: list[str]) -> list[dict[str, np.ndarray]]:
        """Every version of ``ids`` (parents before children) in one call, in
        that order. Schemes that store deltas decode each stored version once
        here, where `retrieve` of each rebuilds its chain."""
        return [self.retrieve(i) for i in ids]

    def close(self) -> None:
        pass

    def reopen(self) -> None:
        pass


def _sync_tree(path: Path) -> None:
    """fsync every file under ``path`` (or ``path`` itself), then the directories
    holding them and ``path``'s own: every scheme's archive ends with this (pas's
    with a synced write batch), as a store that reports a version saved must."""
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    dirs = {p.parent for p in files} | {path.parent} | ({path} if path.is_dir() else set())
    for p in files:
        with open(p, "rb+") as f:
            os.fsync(f.fileno())
    for d in dirs:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class RawFiles(Scheme):
    """The files as they are: archive = copy + fsync; retrieve = read the bytes and parse."""

    name = "raw"
    label = "raw files"
    description = ("files copied as they are and synced (fsync of every file and its directory, as "
                   "a store that reports a version saved must); retrieve reads the file bytes and parses them "
                   "(safetensors: zero-copy views; PyTorch: torch.load); one tensor: header + seek "
                   "for safetensors, torch.load(mmap=True) for PyTorch files")

    def archive(self, version_path, parent_id, name=""):
        vid = self._new_id()
        src = Path(version_path)
        dst = self.root / vid / src.name
        dst.parent.mkdir(parents=True)
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copyfile(src, dst)
        _sync_tree(dst)
        self.added[vid] = dir_bytes(dst)
        return vid

    def _path(self, id):
        return next((self.root / id).iterdir())

    def retrieve(self, id):
        return tensorio.load(self._path(id))

    def retrieve_one(self, id, name):
        return tensorio.load_one(self._path(id), name)


class ZstdPerFile(Scheme):
    """Each file compressed whole with zstd level 3 (python-zstandard, threads=0)."""

    name = "zstd3"
    label = "zstd-3 per file"
    description = ("every file compressed whole with zstd level 3 (python-zstandard, threads=0, "
                   "single-threaded); retrieve = decompress + parse; one tensor needs the whole "
                   "file decompressed")

    def __init__(self, root, level: int = 3):
        super().__init__(root)
        import zstandard
        self._c = zstandard.ZstdCompressor(level=level)
        self._d = zstandard.ZstdDecompressor()

    def archive(self, version_path, parent_id, name=""):
        vid = self._new_id()
        src = Path(version_path)
        files = [p for p in src.rglob("*") if p.is_file()] if src.is_dir() else [src]
        d = self.root / vid
        d.mkdir(parents=True)
        index = []
        for i, f in enumerate(sorted(files)):
            rel = f.relative_to(src).as_posix() if src.is_dir() else f.name
            (d / f"{i}.zst").write_bytes(self._c.compress(f.read_bytes()))
            index.append(rel)
        (d / "index.json").write_text(json.dumps(index))
        _sync_tree(d)
        self.added[vid] = dir_bytes(d)
        return vid

    def _files(self, id):
        d = self.root / id
        for i, rel in enumerate(json.loads((d / "index.json").read_text())):
            if tensorio.is_safetensors(rel) or rel.endswith(tensorio.TORCH_SUFFIXES):
                yield rel, d / f"{i}.zst"

    def retrieve(self, id):
        out = {}
        for rel, p in self._files(id):
            out.update(tensorio.parse_bytes(self._d.decompress(p.read_bytes()), rel))
        return out

    def retrieve_one(self, id, name):
        for rel, p in self._files(id):
            t = tensorio.parse_bytes(self._d.decompress(p.read_bytes()), rel)
            if name in t:
                return t[name]
        raise KeyError(name)


class Blosc2PerTensor(IndexedPerTensor, Scheme):
    """Each tensor compressed with blosc2 SHUFFLE + zstd clevel 1, typesize = itemsize, 2 threads.

    One file per version: ``<u64 index length><JSON index><frames>``; the index
    gives every tensor's dtype, shape and frame offsets (tensors over 1 GiB are
    split into 1 GiB frames: blosc2's ``compress2`` takes < 2 GB).
    """

    suffix = ".b2"
    name = "blosc2"
    label = "blosc2 shuffle+zstd1 per tensor"
    description = ("every tensor compressed with blosc2 compress2, SHUFFLE filter, zstd codec "
                   "clevel 1, typesize = itemsize, nthreads = 2; one file per version with a JSON "
                   "index; retrieve decompresses each tensor into a fresh numpy array")
    FRAME = 1 << 30

    def __init__(self, root, nthreads: int = 2, clevel: int = 1):
        super().__init__(root)
        import blosc2
        self._b = blosc2
        self.nthreads = nthreads
        self.cparams = dict(codec=blosc2.Codec.ZSTD, clevel=clevel, filters=[blosc2.Filter.SHUFFLE],
                            filters_meta=[0], nthreads=nthreads)

    def archive(self, version_path, parent_id, name=""):
        vid = self._new_id()
        tensors = tensorio.load(Path(version_path))
        index, frames, off = {}, [], 0
        for tname, a in tensors.items():
            a = tensorio.c_order(a)
            flat = a.reshape(-1).view(np.uint8)
            lens = []
            for s in range(0, flat.size, self.FRAME):
                c = self._b.compress2(flat[s:s + self.FRAME], typesize=a.dtype.itemsize, **self.cparams)
                frames.append(c)
                lens.append(len(c))
            index[tname] = {"dtype": a.dtype.str, "shape": list(a.shape), "offset": off, "frames": lens}
            off += sum(lens)
        p = self.root / f"{vid}.b2"
        self.added[vid] = write_indexed(p, index, frames)
        return vid

    def _decode(self, info, buf, base) -> np.ndarray:
        out = np.empty(info["shape"], dtype=np.dtype(info["dtype"]))
        flat = out.reshape(-1).view(np.uint8)
        pos, dst = base + info["offset"], 0
        for n in info["frames"]:
            size = min(self.FRAME, flat.size - dst)
            if size > 0:
                self._b.decompress2(buf[pos:pos + n], dst=flat[dst:dst + size], nthreads=self.nthreads)
            pos += n
            dst += size
        return out



# ----------------------------------------------------------------------------
# ZipNN (optional: pip install --no-deps zipnn, builds a C extension)
# ----------------------------------------------------------------------------
class _StandIn(types.ModuleType):
    """An import-time stand-in for torch / safetensors: any attribute is another
    stand-in, and called with one function (``@torch.jit.script``) it returns it.
    ZipNN's byte mode never uses them."""

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        sub = _StandIn(f"{self.__name__}.{attr}")
        setattr(self, attr, sub)
        return sub

    def __call__(self, *args, **kwargs):
        return args[0] if len(args) == 1 and callable(args[0]) and not kwargs else self


_ZIPNN: list = []    # [module] once imported


def import_zipnn():
    """The zipnn module. Its ``__init__`` imports torch and safetensors even for
    the bytes API; when they are missing, stand-ins are put in ``sys.modules``
    for the import only (so ``import torch`` elsewhere still fails honestly)."""
    if _ZIPNN:
        return _ZIPNN[0]
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # torch >= 2.9: "torch.jit.script is deprecated"
        try:
            import zipnn
        except ImportError as e:
            if e.name not in ("torch", "safetensors", "safetensors.torch"):
                raise
            saved = {}
            for mod in ("torch", "safetensors", "safetensors.torch"):
                try:
                    importlib.import_module(mod)
                except ImportError:
                    saved[mod] = sys.modules.get(mod, _StandIn)   # _StandIn: "was not there"
                    sys.modules[mod] = _StandIn(mod)
            for m in [m for m in sys.modules if m == "zipnn" or m.startswith("zipnn.")]:
                del sys.modules[m]        # the half-imported package
            try:
                import zipnn
            finally:
                for mod, prev in saved.items():
                    if prev is _StandIn:
                        sys.modules.pop(mod, None)
                    else:
                        sys.modules[mod] = prev
    _ZIPNN.append(zipnn)
    return zipnn


class ZipNNPerTensor(IndexedPerTensor, Scheme):
    """Each tensor compressed with ZipNN's byte mode (``ZipNN(input_format="byte",
    bytearray_dtype=...)``, method AUTO: byte grouping + Huffman/zstd per 256 KiB
    chunk, its 0.95 raw guard), 2 threads; tensors of dtypes ZipNN does not take
    (integers, bool, float64; bf16 inside PyTorch pickles, which arrive as
    uint16 bit views) go through zstd level 3. Same file layout as `Blosc2PerTensor`.
    """

    suffix = ".znn"
    name = "zipnn"
    label = "ZipNN per tensor"
    description = ("every tensor compressed with ZipNN (zipnn package) byte mode, method AUTO, "
                   "bytearray_dtype from the file's dtype (float32, bfloat16, float16, float8), "
                   "threads = 2; other dtypes zstd level 3 (python-zstandard); one file per version "
                   "with a JSON index; retrieve decompresses each tensor")
    FRAME = 1 << 30
    THREADS = 2
    #: safetensors dtype -> ZipNN bytearray_dtype
    ZIPNN_DTYPES: ClassVar[dict[str, str]] = {"F32": "float32", "BF16": "bfloat16", "F16": "float16",
                    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}

    @classmethod
    def available(cls):
        if importlib.util.find_spec("zipnn") is None:
            return ("zipnn is not installed (pip install --no-deps zipnn: it builds a C extension, "
                    "needs a C compiler; without --no-deps it pulls a CUDA torch)")
        try:
            import_zipnn()
        except Exception as e:  # noqa: BLE001 - a broken build must not stop the other schemes
            return f"zipnn does not import: {type(e).__name__}: {e}"
        return None

    def __init__(self, root, threads: int | None = None):
        super().__init__(root)
        import zstandard
        self._zipnn = import_zipnn()
        self.threads = threads or self.THREADS
        self._comp: dict[str, object] = {}        # ZipNN bytearray_dtype -> compressor
        self._dec = self._zipnn.ZipNN(threads=self.threads)   # the frame header says how to decode
        self._zc = zstandard.ZstdCompressor(level=3)
        self._zd = zstandard.ZstdDecompressor()

    @staticmethod
    def _dtype_names(path: Path) -> dict[str, str]:
        """Tensor name -> safetensors dtype name (bf16 and float8 are bit views in numpy)."""
        out = {}
        for f in tensorio.weight_files(path):
            if tensorio.is_safetensors(f):
                header, _ = tensorio.st_read_header_file(f)
                out.update({k: v["dtype"] for k, v in header.items()})
        return out

    def _compressor(self, zdt: str):
        c = self._comp.get(zdt)
        if c is None:
            c = self._comp[zdt] = self._zipnn.ZipNN(input_format="byte", bytearray_dtype=zdt,
                                                    threads=self.threads)
        return c

    def archive(self, version_path, parent_id, name=""):
        vid = self._new_id()
        path = Path(version_path)
        tensors = tensorio.load(path)
        st_names = self._dtype_names(path)
        index, frames, off = {}, [], 0
        for tname, a in tensors.items():
            a = tensorio.c_order(a)
            st = st_names.get(tname) or tensorio.NP_TO_ST.get(a.dtype.str)
            zdt = self.ZIPNN_DTYPES.get(st)
            flat = a.reshape(-1).view(np.uint8)
            lens = []
            for s in range(0, max(flat.size, 1), self.FRAME):
                piece = flat[s:s + self.FRAME].data
                c = self._compressor(zdt).compress(piece) if zdt else self._zc.compress(piece)
                frames.append(c)
                lens.append(len(c))
            index[tname] = {"dtype": a.dtype.str, "shape": list(a.shape), "codec": "zipnn" if zdt else "zstd",
                            "offset": off, "frames": lens}
            off += sum(lens)
        p = self.root / f"{vid}.znn"
        self.added[vid] = write_indexed(p, index, frames)
        return vid

    def _decode(self, info, buf, base) -> np.ndarray:
        dtype = np.dtype(info["dtype"])
        pos, parts = base + info["offset"], []
        for n in info["frames"]:
            c = buf[pos:pos + n]
            parts.append(self._dec.decompress(c) if info["codec"] == "zipnn" else self._zd.decompress(c))
            pos += n
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        return np.frombuffer(data, dtype=dtype).reshape(info["shape"])



class Pas(Scheme):
    """pas through its Python API (``pas.repo.Repository``).

    ``overrides`` (Repository config overrides, see `init_pas_repo`) and
    ``plugin`` (a module imported first, e.g. one registering a codec) are
    empty for the default configuration; ``pas_configs.toml`` entries set them.
    """

    name = "pas"
    label = "pas"
    description = "pas.repo.Repository.archive / retrieve (RocksDB store), default configuration"
    overrides: ClassVar[dict] = {}
    plugin: ClassVar[str | None] = None

    @classmethod
    def available(cls):
        try:
            if importlib.util.find_spec("pas.repo") is None:
                return "pas.repo is not available yet"
            from pas.repo import Repository  # noqa: F401
        except Exception as e:  # a half-written core must not stop the baselines
            return f"pas.repo does not import: {type(e).__name__}: {e}"
        if cls.plugin:
            try:
                importlib.import_module(cls.plugin)
            except ImportError as e:     # e.g. the plug-in's own dependency is not installed
                return f"plug-in {cls.plugin} does not import: {type(e).__name__}: {e}"
        return None

    def __init__(self, root):
        super().__init__(root)
        from pas.repo import Repository
        self._Repository = Repository
        if self.plugin:
            importlib.import_module(self.plugin)   # registers its codec before the repository exists
        self.repo = init_pas_repo(self.root / "repo", self.overrides, self.name)
        self.results: dict[str, dict] = {}

    def archive(self, version_path, parent_id, name=""):
        res = self.repo.archive(str(version_path), name=name or f"v{self._new_id()}", parent=parent_id)
        self.added[res.version_id] = int(res.physical_added)
        self.results[res.version_id] = {"logical_bytes": int(res.logical_bytes)}
        return res.version_id

    def physical_bytes(self):
        return int(self.repo.physical_bytes())

    def retrieve(self, id):
        snap = self.repo.retrieve(id)
        return {n: t.data for n, t in snap.tensors.items()}

    def retrieve_one(self, id, name):
        return self.repo.retrieve(id, names=[name]).tensors[name].data

    def retrieve_lineage(self, ids):
        got = {v.hex: {n: t.data for n, t in snap.tensors.items()} for v, snap in self.repo.retrieve_many(ids)}
        return [got[i] for i in ids]

    def retrieve_top(self, id, k: int):
        """Lossy: every tensor rebuilt from its top ``k`` byte planes (``top_bytes=k``)."""
        snap = self.repo.retrieve(id, top_bytes=k)
        return {n: t.data for n, t in snap.tensors.items()}

    def retrieve_planes(self, id, k: int):
        """The top ``k`` byte planes themselves, decoded (not rebuilt into values),
        of every tensor wider than ``k`` bytes; narrower ones whole. Big tensors
        on the pool, as `Repository.retrieve` reads them."""
        from pas import dtypes
        entries = self.repo.version(id).tensors
        wide = [e for e in entries if dtypes.get(e.dtype).itemsize > k]
        out = {e.name: top for e, (top, _) in zip(wide, self.repo.read_planes_many(wide, k))}
        narrow = [e.name for e in entries if dtypes.get(e.dtype).itemsize <= k]
        if narrow:
            out.update({n: t.data for n, t in self.repo.retrieve(id, names=narrow).tensors.items()})
        return out

    def check_planes(self, id, k: int, src: dict, got: dict) -> list[str]:
        """Every tensor's top k planes are the source's split in the tensor's layout."""
        from pas import dtypes, planes
        errs = []
        for e in self.repo.version(id).tensors:
            dt = dtypes.get(e.dtype)
            words = np.ascontiguousarray(src[e.name]).reshape(-1).view(dt.bits_dtype)
            if dt.itemsize <= k:
                want = words
            else:
                layout = self.repo.reader.parse(e.object).layout
                want = planes.split(words, dt, layout)[:k]
            if np.ascontiguousarray(got[e.name]).tobytes() != want.tobytes():
                errs.append(f"{e.name}: top {k} planes differ from the source's")
        self.repo.reader.clear_cache()
        return errs

    def check_top(self, id, k: int, src: dict, got: dict) -> list[str]:
        """pas's top planes follow each tensor's layout (with planes-exp, plane 0 is
        the exponent and the sign comes with plane 1), so "top k bytes equal" is not
        the contract; the contract is: every source value lies in the exact interval
        pas gives for its top k planes, and so does the rebuilt value."""
        from pas import dtypes
        from pas.reader import float_values
        errs = []
        for e in self.repo.version(id).tensors:
            dt = dtypes.get(e.dtype)
            if dt.itemsize <= k:
                if tensorio.same_bytes(src[e.name], got[e.name]):
                    errs.append(f"{e.name}: not exact")
                continue
            if dt.name not in ("F16", "F32", "F64", "BF16"):
                from pas import planes
                top, layout = self.repo.read_planes(e, k)
                if top.tobytes() != planes.split(src[e.name].view(dt.np_dtype), dt, layout)[:k].tobytes():
                    errs.append(f"{e.name}: top {k} planes differ from the source's")
                continue
            lo, hi = self.repo.read_interval(e, k)
            flat = lambda a: float_values(np.ascontiguousarray(a).reshape(-1).view(dt.bits_dtype), dt)
            true, approx = flat(src[e.name]), flat(got[e.name])
            lo, hi = lo.reshape(-1), hi.reshape(-1)
            known = ~np.isnan(true)
            if not np.all(((lo <= true) & (true <= hi)) | ~known):
                errs.append(f"{e.name}: a source value lies outside its top-{k} interval")
            finite = np.isfinite(lo) & np.isfinite(hi)
            if not np.all(((lo <= approx) & (approx <= hi)) | ~finite):
                errs.append(f"{e.name}: a rebuilt value lies outside its top-{k} interval")
        self.repo.reader.clear_cache()
        return errs

    def close(self):
        if self.repo is not None:
            self.repo.close()
            self.repo = None

    def reopen(self):
        self.close()
        self.repo = self._Repository.open(self.root / "repo")


# ----------------------------------------------------------------------------
# pas configurations as data (pas_configs.toml)
# ----------------------------------------------------------------------------
CONFIGS_FILE = Path(__file__).resolve().parent / "pas_configs.toml"
#: Keys of a pas_configs.toml entry that are not Repository config overrides.
ENTRY_KEYS = ("description", "label", "plugin")


def merge_config(config: dict, overrides: dict) -> dict:
    """``config`` updated in place by ``overrides``: a table without ``id``
    (e.g. ``delta = {ops = ["xor"]}``) updates the table it overrides key by
    key; anything else, a table with ``id`` included (a codec, a chunker),
    replaces the value whole."""
    for k, v in overrides.items():
        if isinstance(v, dict) and "id" not in v and isinstance(config.get(k), dict):
            merge_config(config[k], v)
        else:
            config[k] = copy.deepcopy(v)
    return config


def config_problems(overrides: dict) -> list[str]:
    """Override keys pas does not know (a misspelt key would otherwise be
    silently ignored): every key must exist in ``pas.repo.DEFAULT_CONFIG``,
    and so must the keys of a table that is merged (one without ``id``)."""
    from pas.repo import DEFAULT_CONFIG
    problems = []

    def walk(over, default, where):
        for k, v in over.items():
            if k not in default:
                problems.append(f"unknown config key {where + k!r} (known: {', '.join(sorted(default))})")
            elif isinstance(v, dict) and "id" not in v and isinstance(default[k], dict):
                walk(v, default[k], f"{where}{k}.")

    walk(overrides, {k: v for k, v in DEFAULT_CONFIG.items() if k not in ("format_version", "hash")}, "")
    return problems


def init_pas_repo(path: Path, overrides: dict, name: str = "pas"):
    """A new pas repository at ``path`` with ``DEFAULT_CONFIG`` updated by
    ``overrides`` (`merge_config`), open for writing. Any mistake in the
    overrides raises ValueError naming the configuration.

    ``codec`` and ``layouts`` go through ``Repository.init`` (pas validates
    them); every other key is merged into the new repository's config.json,
    which is then reopened (pas reads its config on open), so a config key pas
    adds later (a planner, a lossy tier) needs no change here.
    """
    from pas.errors import PasError
    from pas.repo import Repository
    overrides = dict(overrides or {})
    problems = config_problems(overrides)
    if problems:
        raise ValueError(f"pas configuration {name!r}: " + "; ".join(problems))
    direct = {k: overrides.pop(k) for k in ("codec", "layouts") if k in overrides}
    try:
        repo = Repository.init(path, **direct)
        if not overrides:
            return repo
        cfg_file = Path(repo.root) / "config.json"
        repo.close()
        config = merge_config(json.loads(cfg_file.read_text()), overrides)
        tmp = cfg_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(config, indent=2, sort_keys=True))
        os.replace(tmp, cfg_file)
        return Repository.open(path, write=True)
    except (PasError, TypeError, ValueError) as e:
        hint = ""
        if "unknown codec" in str(e):
            hint = " (a plug-in codec must be registered first: name its module as the entry's `plugin`)"
        raise ValueError(f"pas configuration {name!r}: {type(e).__name__}: {e}{hint}") from e


def load_pas_configs(path: Path = CONFIGS_FILE) -> dict[str, dict]:
    """The entries of a pas configurations file: {name: entry}. Structure only
    is checked here (a bad entry fails when its scheme is built, not at import)."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        import tomllib
    except ModuleNotFoundError:     # Python 3.10
        import tomli as tomllib
    with open(path, "rb") as f:
        data = tomllib.load(f)
    for name, entry in data.items():
        if not isinstance(entry, dict):
            raise TypeError(f"{path.name}: [{name}] must be a table of config overrides, got {entry!r}")
        for k in ("description", "label", "plugin"):
            if k in entry and not isinstance(entry[k], str):
                raise TypeError(f"{path.name}: [{name}] {k} must be a string")
    return data


def pas_variant(name: str, entry: dict) -> type[Pas]:
    """A `Pas` scheme class for one pas_configs.toml entry."""
    overrides = {k: v for k, v in entry.items() if k not in ENTRY_KEYS}
    desc = entry.get("description", "").strip()
    cfg = json.dumps(overrides, separators=(",", ":"), sort_keys=True)
    attrs = {
        "name": name,
        "label": entry.get("label", name),
        "description": (f"{desc}; " if desc else "") + f"pas config overrides {cfg}"
                       + (f", plug-in {entry['plugin']}" if entry.get("plugin") else ""),
        "overrides": overrides,
        "plugin": entry.get("plugin"),
        "__doc__": f"pas with the {name!r} configuration of pas_configs.toml.",
    }
    return type(f"Pas_{name.replace('-', '_')}", (Pas,), attrs)


# ----------------------------------------------------------------------------
# delta baselines (the "next issue": XOR / SUB against the parent, zstd --patch-from)
# ----------------------------------------------------------------------------
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def to_planes(a: np.ndarray) -> np.ndarray:
    """(itemsize, n) uint8: row j = byte j (little-endian; the last row is the high byte)."""
    a = tensorio.c_order(a)
    k = a.dtype.itemsize
    return np.ascontiguousarray(a.reshape(-1).view(np.uint8).reshape(-1, k).T)


def from_planes(planes: list, dtype: np.dtype, shape) -> np.ndarray:
    dtype = np.dtype(dtype)
    k = dtype.itemsize
    n = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    out = np.empty((n, k), np.uint8)
    for j, pl in enumerate(planes):
        out[:, j] = np.frombuffer(pl, np.uint8, count=n)
    return out.reshape(-1).view(dtype).reshape(shape)


class PlaneDelta(Scheme):
    """Per tensor: delta against the parent's same-named tensor (same dtype and
    shape; else the tensor whole), split into itemsize byte planes, each plane
    compressed separately. One file per version::

        <u64 index length><JSON index {"parent", "tensors": {name: {dtype, shape, mode, offset, planes}}}><frames>

    Retrieval rebuilds the chain from the root (reads every ancestor's file; no
    cache across calls). Archiving needs the parent's tensors: the last few
    archived versions are kept in memory (what a writer that just stored them
    has), else the parent is rebuilt from the store.
    """

    op = "xor"              # "xor" | "sub" (integer subtraction of the bit patterns, wrapping)
    KEEP = 3                # archived versions kept in memory as delta bases

    def __init__(self, root):
        super().__init__(root)
        self._recent: dict[str, dict[str, np.ndarray]] = {}

    # codec -------------------------------------------------------------
    def _compress(self, b) -> bytes:
        raise NotImplementedError

    def _decompress(self, b) -> bytes:
        raise NotImplementedError

    # delta -------------------------------------------------------------
    def _delta(self, a: np.ndarray, base: np.ndarray) -> np.ndarray:
        u = _UINT[a.dtype.itemsize]    # flat: 0-d arrays would turn into numpy scalars
        x, y = tensorio.c_order(a).reshape(-1).view(u), tensorio.c_order(base).reshape(-1).view(u)
        d = (x ^ y) if self.op == "xor" else (x - y)    # unsigned: wraps modulo 2**bits
        return d.reshape(a.shape)

    def _undelta(self, d: np.ndarray, base: np.ndarray) -> np.ndarray:
        u = _UINT[d.dtype.itemsize]
        x, y = d.reshape(-1).view(u), tensorio.c_order(base).reshape(-1).view(u)
        r = (x ^ y) if self.op == "xor" else (x + y)
        return r.view(d.dtype).reshape(d.shape)

    @staticmethod
    def _matches(a: np.ndarray, base) -> bool:
        return (base is not None and base.dtype == a.dtype and base.shape == a.shape
                and a.dtype.itemsize in _UINT)

    # store -------------------------------------------------------------
    def archive(self, version_path, parent_id, name=""):
        vid = self._new_id()
        tensors = tensorio.load(Path(version_path))
        base = None
        if parent_id is not None:
            base = self._recent.get(parent_id)
            if base is None:
                base = self.retrieve(parent_id)
        index, frames, off = {}, [], 0
        for tname, a in tensors.items():
            a = tensorio.c_order(a)
            b = base.get(tname) if base is not None else None
            mode = "whole"
            if self._matches(a, b):
                a, mode = self._delta(a, b), self.op
            lens = []
            for pl in to_planes(a):
                c = self._compress(pl)
                frames.append(c)
                lens.append(len(c))
            index[tname] = {"dtype": tensors[tname].dtype.str, "shape": list(a.shape), "mode": mode,
                            "offset": off, "planes": lens}
            off += sum(lens)
        p = self.root / f"{vid}.pd"
        self.added[vid] = write_indexed(p, {"parent": parent_id, "tensors": index}, frames)
        self._recent[vid] = tensors
        while len(self._recent) > self.KEEP:
            self._recent.pop(next(iter(self._recent)))
        return vid

    def _read(self, id, name=None):
        """(parent, index, {name: (info, bytes of its frames)}) for all tensors or one."""
        with open(self.root / f"{id}.pd", "rb") as f:
            (hlen,) = struct.unpack("<Q", f.read(8))
            h = json.loads(f.read(hlen))
            if name is None:
                buf = f.read()
                return h["parent"], {n: (i, memoryview(buf)[i["offset"]:i["offset"] + sum(i["planes"])])
                                     for n, i in h["tensors"].items()}
            info = h["tensors"][name]
            f.seek(8 + hlen + info["offset"])
            return h["parent"], {name: (info, f.read(sum(info["planes"])))}

    def _decode(self, info, buf, base) -> np.ndarray:
        planes, pos = [], 0
        for n in info["planes"]:
            planes.append(self._decompress(buf[pos:pos + n]))
            pos += n
        a = from_planes(planes, info["dtype"], tuple(info["shape"]))
        if info["mode"] != "whole":
            a = self._undelta(a, base)
        return a

    def _chain(self, id) -> list[str]:
        chain = [id]
        while True:
            with open(self.root / f"{chain[-1]}.pd", "rb") as f:
                (hlen,) = struct.unpack("<Q", f.read(8))
                parent = json.loads(f.read(hlen))["parent"]
            if parent is None:
                return chain[::-1]
            chain.append(parent)

    def retrieve(self, id, decoded: dict | None = None):
        """The version, its chain decoded from the root, or from the nearest
        ancestor in ``decoded`` ({id: tensors}, what `retrieve_lineage` keeps)."""
        decoded = decoded or {}
        chain = self._chain(id)
        start = max((k for k, vid in enumerate(chain) if vid in decoded), default=-1)
        cur: dict[str, np.ndarray] = decoded[chain[start]] if start >= 0 else {}
        for vid in chain[start + 1:]:
            _, items = self._read(vid)
            cur = {n: self._decode(info, buf, cur.get(n)) for n, (info, buf) in items.items()}
        return cur

    def retrieve_lineage(self, ids):
        decoded: dict[str, dict] = {}
        for i in ids:
            decoded[i] = self.retrieve(i, decoded)
        return [decoded[i] for i in ids]

    def retrieve_one(self, id, name):
        # walk up to the nearest ancestor that stores the tensor whole, then apply the deltas down
        steps, vid = [], id
        while True:
            parent, items = self._read(vid, name)
            info, buf = items[name]
            steps.append((info, buf))
            if info["mode"] == "whole":
                break
            vid = parent
        cur = None
        for info, buf in reversed(steps):
            cur = self._decode(info, buf, cur)
        return cur

    def close(self):
        self._recent.clear()

    def reopen(self):
        self._recent.clear()


class XorPlanesZstd(PlaneDelta):
    name = "xor3"
    label = "XOR vs parent + planes + zstd-3"
    description = ("per tensor XOR of the bit patterns against the parent's same-named tensor when dtype "
                   "and shape match (else whole), itemsize byte planes, each plane zstd level 3 "
                   "(python-zstandard, threads=0); retrieve rebuilds the chain from the root")
    op = "xor"

    def __init__(self, root, level: int = 3):
        super().__init__(root)
        import zstandard
        self._c = zstandard.ZstdCompressor(level=level)
        self._d = zstandard.ZstdDecompressor()

    def _compress(self, b):
        return self._c.compress(b)

    def _decompress(self, b):
        return self._d.decompress(b)


class PaperSubPlanesZlib(PlaneDelta):
    name = "paper"
    label = "ModelHub bit-exact: SUB + planes + zlib-6"
    description = ("the ModelHub paper's lossless bytewise scheme made bit-exact: per tensor integer "
                   "subtraction of the bit patterns (wrapping, no zigzag) against the parent's same-named "
                   "tensor when dtype and shape match (else whole), itemsize byte planes (bytewise "
                   "segments), each zlib level 6; retrieve rebuilds the chain from the root")
    op = "sub"

    def _compress(self, b):
        return zlib.compress(memoryview(b), 6)

    def _decompress(self, b):
        return zlib.decompress(b)


class ZstdPatchFrom(Scheme):
    """``zstd -3 --patch-from=PARENT_FILE`` on the raw files (zstd command-line tool).

    Archive: the parent's file (same relative path) is the parent version's
    source file, byte-identical to what the store rebuilds. Retrieve: the chain
    is rebuilt from the root through temporary files (``zstd -d --patch-from``).
    Files over 128 MiB need a larger window: ``--long=W`` (W = log2 of the
    larger of the file and its reference, <= 31) is then passed to compression
    and decompression; the shared corpus (files <= 98 MB) never needs it.
    """

    name = "patch-from"
    label = "zstd -3 --patch-from parent"
    description = ("zstd CLI, `zstd -3 --patch-from=PARENT_FILE` per file against the parent version's file "
                   "of the same relative path (root versions: plain `zstd -3`); `--long=W` only when a file "
                   "or its reference exceeds 128 MiB; retrieve decompresses the chain from the root through "
                   "temporary files and parses the result")
    LEVEL = 3

    @classmethod
    def available(cls):
        if shutil.which("zstd") is None:
            return "the zstd command-line tool is not on PATH (apt-get install -y zstd)"
        return None

    def __init__(self, root):
        super().__init__(root)
        self._src: dict[str, Path] = {}           # version id -> source path (archive phase)
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(exist_ok=True)

    @staticmethod
    def _long(*sizes) -> list[str]:
        w = max(1, *sizes).bit_length()
        return [f"--long={min(w, 31)}"] if max(sizes) > (1 << 27) else []

    @staticmethod
    def _run(args):
        r = subprocess.run(["zstd", "-q", "-f", *args], capture_output=True)
        if r.returncode:
            raise RuntimeError(f"zstd {' '.join(map(str, args))}: {r.stderr.decode(errors='replace')[:300]}")

    def _files(self, src: Path):
        if src.is_dir():
            return sorted((f.relative_to(src).as_posix(), f) for f in src.rglob("*") if f.is_file())
        return [(src.name, src)]

    def archive(self, version_path, parent_id, name=""):
        vid = self._new_id()
        src = Path(version_path)
        d = self.root / vid
        d.mkdir(parents=True)
        pfiles = dict(self._files(self._src[parent_id])) if parent_id else {}
        index = []
        for i, (rel, f) in enumerate(self._files(src)):
            ref_rel = rel if rel in pfiles else None
            if ref_rel is None and not src.is_dir() and len(pfiles) == 1:
                ref_rel = next(iter(pfiles))          # single-file versions: v1.safetensors vs v0.safetensors
            ref = pfiles.get(ref_rel)
            args = [f"-{self.LEVEL}"]
            if ref is not None:
                args += [f"--patch-from={ref}", *self._long(f.stat().st_size, ref.stat().st_size)]
            else:
                args += self._long(f.stat().st_size)
            self._run([*args, str(f), "-o", str(d / f"{i}.zst")])
            index.append({"rel": rel, "ref": ref_rel if ref is not None else None, "size": f.stat().st_size})
        (d / "index.json").write_text(json.dumps({"parent": parent_id, "files": index}))
        _sync_tree(d)
        self.added[vid] = dir_bytes(d)
        self._src[vid] = src
        return vid

    def _index(self, id):
        return json.loads((self.root / id / "index.json").read_text())

    def _materialize(self, id, kept: dict | None = None) -> dict[str, Path]:
        """Decompress the chain up to ``id`` into temporary files: {rel: path}.
        With ``kept`` ({id: {rel: (path, size)}}) the chain starts at the nearest
        version found there, and every version decompressed is added to it
        (its files are then the caller's to remove)."""
        chain = [id]
        while (kept is None or chain[-1] not in kept) and (p := self._index(chain[-1])["parent"]) is not None:
            chain.append(p)
        prev: dict[str, tuple[Path, int]] = {}
        if kept is not None and chain[-1] in kept:
            prev = kept[chain.pop()]
        for vid in reversed(chain):
            cur = {}
            for i, e in enumerate(self._index(vid)["files"]):
                out = self.tmp / f"{vid}.{i}"
                args = ["-d", str(self.root / vid / f"{i}.zst"), "-o", str(out)]
                if e["ref"] is not None:
                    ref, rsize = prev[e["ref"]]
                    args += [f"--patch-from={ref}", *self._long(e["size"], rsize)]
                else:
                    args += self._long(e["size"])
                self._run(args)
                cur[e["rel"]] = (out, e["size"])
            if kept is None:
                for ref, _ in prev.values():
                    ref.unlink(missing_ok=True)
            else:
                kept[vid] = cur
            prev = cur
        return {rel: p for rel, (p, _) in prev.items()}

    def _parse(self, files: dict[str, Path], name=None):
        out = {}
        for rel, p in files.items():
            if tensorio.is_safetensors(rel) or rel.endswith(tensorio.TORCH_SUFFIXES):
                t = tensorio.parse_bytes(p.read_bytes(), rel)
                if name is not None and name in t:
                    return {name: t[name]}
                out.update(t)
        return out

    def retrieve(self, id):
        files = self._materialize(id)
        try:
            return self._parse(files)
        finally:
            for p in files.values():
                p.unlink(missing_ok=True)

    def retrieve_lineage(self, ids):
        kept: dict[str, dict] = {}
        try:
            return [self._parse(self._materialize(i, kept)) for i in ids]
        finally:
            for files in kept.values():
                for p, _ in files.values():
                    p.unlink(missing_ok=True)

    def retrieve_one(self, id, name):
        files = self._materialize(id)
        try:
            return self._parse(files, name)[name]
        finally:
            for p in files.values():
                p.unlink(missing_ok=True)

    def physical_bytes(self):
        return sum(self.added.values())


SCHEMES: dict[str, type[Scheme]] = {c.name: c for c in (RawFiles, ZstdPerFile, Blosc2PerTensor, XorPlanesZstd,
                                                   PaperSubPlanesZlib, ZstdPatchFrom, Pas, ZipNNPerTensor)}
#: What the harness runs without --schemes: the alternatives, pas (default
#: configuration) and ZipNN. The pas_configs.toml variants are opt-in: each is
#: a full extra pass.
DEFAULT_SCHEMES: list[str] = list(SCHEMES)


def register_pas_configs(path: Path = CONFIGS_FILE) -> list[str]:
    """Register one scheme per entry of a pas configurations file; their names."""
    names = []
    for name, entry in load_pas_configs(path).items():
        if name in DEFAULT_SCHEMES:
            raise ValueError(f"{Path(path).name}: [{name}] clashes with the built-in scheme {name!r}")
        SCHEMES[name] = pas_variant(name, entry)
        names.append(name)
    return names


try:
    PAS_CONFIGS: list[str] = register_pas_configs()
except ModuleNotFoundError as _e:      # Python 3.10 without tomli: the variants only are missing
    import warnings
    warnings.warn(f"{CONFIGS_FILE.name} not read ({_e}): pip install tomli", stacklevel=1)
    PAS_CONFIGS = []
