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
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import struct
from pathlib import Path

import numpy as np

from . import tensorio


def dir_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (what the scheme occupies on disk)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


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

    def close(self) -> None:
        pass

    def reopen(self) -> None:
        pass


class RawFiles(Scheme):
    """The files as they are: archive = copy; retrieve = read the bytes and parse."""

    name = "raw"
    label = "raw files"
    description = ("files copied as they are; retrieve reads the file bytes and parses them "
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


class Blosc2PerTensor(Scheme):
    """Each tensor compressed with blosc2 SHUFFLE + zstd clevel 1, typesize = itemsize, 2 threads.

    One file per version: ``<u64 index length><JSON index><frames>``; the index
    gives every tensor's dtype, shape and frame offsets (tensors over 1 GiB are
    split into 1 GiB frames: blosc2's ``compress2`` takes < 2 GB).
    """

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
        hb = json.dumps(index, separators=(",", ":")).encode()
        p = self.root / f"{vid}.b2"
        with open(p, "wb") as f:
            f.write(struct.pack("<Q", len(hb)))
            f.write(hb)
            for c in frames:
                f.write(c)
        self.added[vid] = p.stat().st_size
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

    def retrieve(self, id):
        p = self.root / f"{id}.b2"
        buf = bytearray(p.stat().st_size)
        with open(p, "rb") as f:
            f.readinto(buf)
        mv = memoryview(buf)
        (hlen,) = struct.unpack("<Q", mv[:8])
        index = json.loads(bytes(mv[8:8 + hlen]))
        return {n: self._decode(info, mv, 8 + hlen) for n, info in index.items()}

    def retrieve_one(self, id, name):
        with open(self.root / f"{id}.b2", "rb") as f:
            (hlen,) = struct.unpack("<Q", f.read(8))
            info = json.loads(f.read(hlen))[name]
            f.seek(8 + hlen + info["offset"])
            buf = f.read(sum(info["frames"]))
        return self._decode(dict(info, offset=0), memoryview(buf), 0)


class Pas(Scheme):
    """pas through its Python API (``pas.repo.Repository``)."""

    name = "pas"
    label = "pas"
    description = "pas.repo.Repository.archive / retrieve (RocksDB store), default configuration"

    @classmethod
    def available(cls):
        try:
            if importlib.util.find_spec("pas.repo") is None:
                return "pas.repo is not available yet"
            from pas.repo import Repository  # noqa: F401
        except Exception as e:  # a half-written core must not stop the baselines
            return f"pas.repo does not import: {type(e).__name__}: {e}"
        return None

    def __init__(self, root):
        super().__init__(root)
        from pas.repo import Repository
        self._Repository = Repository
        self.repo = Repository.init(self.root / "repo")
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

    def close(self):
        if self.repo is not None:
            self.repo.close()
            self.repo = None

    def reopen(self):
        self.close()
        self.repo = self._Repository.open(self.root / "repo")


SCHEMES: dict[str, type[Scheme]] = {c.name: c for c in (RawFiles, ZstdPerFile, Blosc2PerTensor, Pas)}
