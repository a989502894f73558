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
import subprocess
import zlib
from pathlib import Path

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
        for c in frames:
            f.write(c)
    return path.stat().st_size


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

    def retrieve_top(self, id, k: int):
        """Lossy: every tensor rebuilt from its top ``k`` byte planes (``top_bytes=k``)."""
        snap = self.repo.retrieve(id, top_bytes=k)
        return {n: t.data for n, t in snap.tensors.items()}

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

    def retrieve(self, id):
        cur: dict[str, np.ndarray] = {}
        for vid in self._chain(id):
            _, items = self._read(vid)
            cur = {n: self._decode(info, buf, cur.get(n)) for n, (info, buf) in items.items()}
        return cur

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
        self.added[vid] = dir_bytes(d)
        self._src[vid] = src
        return vid

    def _index(self, id):
        return json.loads((self.root / id / "index.json").read_text())

    def _materialize(self, id) -> dict[str, Path]:
        """Decompress the chain up to ``id`` into temporary files: {rel: path}."""
        chain = [id]
        while (p := self._index(chain[-1])["parent"]) is not None:
            chain.append(p)
        prev: dict[str, tuple[Path, int]] = {}
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
            for ref, _ in prev.values():
                ref.unlink(missing_ok=True)
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
                                                   PaperSubPlanesZlib, ZstdPatchFrom, Pas)}
