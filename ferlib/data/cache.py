"""A uint8 tensor cache: decode (and optionally align) every image once, resize, store as a memmap (docs/design.md §5).

Layout of one cache folder (``<cache_root>/<dataset>-<split>-s<size>[-aligned]-<options hash>/``):
``images.u8`` (raw uint8 [N,3,S,S], C-order), ``index.json`` (samples, targets, classes, label set, the skip
report, the source fingerprint, the shape). The folder is written under a temporary name and renamed, so a
crash never leaves a half-written cache behind. A cache is *valid* when its fingerprint — sizes and mtimes
of every source image and annotation file, plus the reader options — equals the dataset's; otherwise it is
rebuilt in place. Processes that need the same folder at once take turns building it (a lock named after the
folder, in the temporary folder).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from ferlib.labels import LABEL_SETS, LabelSet

from .base import DECODE_ERRORS, FERDataset, SkipReport, show_progress, skip_reason

VERSION = 2  # 2: aligned crops fill the warped border with a constant (1 mirrored it)
#: reader options that do not change the cached pixels or targets
_IGNORED_OPTS = {"check", "transform", "progress"}


def default_cache_root() -> Path:
    from ferlib.paths import data_dir

    return data_dir() / "cache"


def _jsonable(v):
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)


def fingerprint(ds: FERDataset) -> str:
    """sha1 over (path, size, mtime) of every sample file and every annotation file of ``ds``."""
    h = hashlib.sha1()
    files = list(ds.source_files) + [s for s in ds.samples if isinstance(s, (str, Path))]
    for f in files:
        try:
            st = os.stat(f)
            h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{f}|missing\n".encode())
    h.update(f"n={len(ds)}".encode())
    return h.hexdigest()


def options_hash(name: str, root, split: str, opts: dict, size: int, align: bool) -> str:
    o = {k: _jsonable(v) for k, v in sorted(opts.items()) if k not in _IGNORED_OPTS}
    blob = json.dumps({"name": name, "root": str(Path(root).resolve()) if root else None, "split": split,
                       "opts": o, "size": size, "align": align, "v": VERSION}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def cache_dir(name: str, root, split: str, opts: dict, size: int, align: bool, cache_root=None) -> Path:
    cache_root = Path(cache_root) if cache_root else default_cache_root()
    tag = f"{name}-{split}-s{size}" + ("-aligned" if align else "")
    return cache_root / f"{tag}-{options_hash(name, root, split, opts, size, align)}"


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H,W,3] → [size,size,3]: area averaging when shrinking, bicubic when enlarging."""
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    import cv2  # here, not at the top: importing ferlib.data must not need OpenCV

    interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_CUBIC
    return cv2.resize(img, (size, size), interpolation=interp)


def _prepare_one(ds: FERDataset, i: int, size: int, align: bool, aligner) -> np.ndarray:
    if align:
        lm = ds.landmarks(i) if hasattr(ds, "landmarks") and callable(ds.landmarks) else None
        full = ds.load_full(i) if hasattr(ds, "load_full") else ds.load(i).permute(1, 2, 0).numpy()
        out = aligner(np.ascontiguousarray(full), lm)
        if out is not None:
            return out
        raise LookupError("no face found")
    img = ds.load(i).permute(1, 2, 0).numpy()
    return resize_square(img, size)


_WORKER: dict = {}


def _init_worker(ds: FERDataset, size: int, align: bool, detector) -> None:
    """Child-process initializer: the dataset (pickled once per worker, not per chunk) and one aligner."""
    aligner = None
    if align:
        from .align import FaceAligner

        aligner = FaceAligner(size, detector=detector)
    _WORKER.update(ds=ds, size=size, align=align, aligner=aligner)


def _prepare_chunk(idx: range):
    """Worker: ``[(i, uint8 [S,S,3] | reason)]`` for a chunk of indices (runs in a child process)."""
    w = _WORKER
    out = []
    for i in idx:
        try:
            out.append((i, _prepare_one(w["ds"], i, w["size"], w["align"], w["aligner"])))
        except DECODE_ERRORS as err:
            out.append((i, skip_reason(err)))
        except LookupError:
            out.append((i, "no face detected"))
    return out


def _results(ds, size, align, detector, workers: int):
    """``(i, image | reason)`` in index order, decoded by ``workers`` processes in chunks of 256."""
    from concurrent.futures import ProcessPoolExecutor

    chunks = [range(s, min(len(ds), s + 256)) for s in range(0, len(ds), 256)]
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(ds, size, align, detector)) as pool:
        for part in pool.map(_prepare_chunk, chunks):
            yield from part


def _serial(ds, size, align, aligner):
    for i in range(len(ds)):
        try:
            yield i, _prepare_one(ds, i, size, align, aligner)
        except DECODE_ERRORS as err:
            yield i, skip_reason(err)
        except LookupError:
            yield i, "no face detected"


def build_cache(ds: FERDataset, out: Path, size: int | None = None, align: bool = False, key: str = "",
                progress: bool = True, detector=None, workers: int = 0) -> "CachedDataset":
    """Decode every item of ``ds`` once into ``out`` (atomic); unreadable images are skipped and counted.

    ``workers`` > 0 decodes in that many processes (the dataset and detector must pickle)."""
    out = Path(out)
    size = size or first_size(ds)
    aligner = None
    if align:
        from .align import FaceAligner

        aligner = FaceAligner(size, detector=detector)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        return _build(ds, out, tmp, size, align, key, progress, detector, workers, aligner)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed or interrupted build leaves no half-written folder
        raise


def _build(ds, out: Path, tmp: Path, size: int, align: bool, key: str, progress: bool, detector, workers: int,
           aligner) -> "CachedDataset":
    from tqdm.auto import tqdm

    tmp.mkdir(parents=True)
    report = SkipReport(counts=ds.skip_report.counts.copy(),
                        examples={k: list(v) for k, v in ds.skip_report.examples.items()})
    mm = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(len(ds), 3, size, size))
    keep = []
    results = _serial(ds, size, align, aligner) if workers <= 0 else _results(ds, size, align, detector, workers)
    for i, img in tqdm(results, total=len(ds), desc=f"cache {out.name}", disable=not show_progress(progress),
                       leave=False):
        if isinstance(img, str):
            report.add(img, ds.samples[i])
            continue
        mm[len(keep)] = img.transpose(2, 0, 1)
        keep.append(i)
    mm.flush()
    del mm
    n = len(keep)
    _truncate_npy(tmp / "images.npy", n, size)
    index = {
        "version": VERSION, "key": key, "size": size, "aligned": align, "n": n,
        "dataset": type(ds).__name__, "root": str(ds.root), "split": ds.split,
        "label_set": {"name": ds.label_set.name, "names": list(ds.label_set.names)},
        "label_mode": getattr(ds, "label_mode", None),
        "samples": [str(ds.samples[i]) for i in keep], "targets": [_jsonable(ds.targets[i]) for i in keep],
        "skip_report": report.as_dict(),
    }
    (tmp / "index.json").write_text(json.dumps(index))
    with open(tmp / "index.json", "rb") as f:
        os.fsync(f.fileno())
    if out.exists():
        old = out.with_name(out.name + f".old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    ds_out = CachedDataset(out, transform=ds.transform)
    ds_out.report_skips()
    return ds_out


def _truncate_npy(path: Path, n: int, size: int) -> None:
    """Rewrite the .npy header for ``n`` rows and cut the file (rows skipped at the end are dropped)."""
    arr = np.load(path, mmap_mode="r")
    if arr.shape[0] == n:
        return
    tmp = path.with_suffix(".part")
    new = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, 3, size, size))
    for s in range(0, n, 1024):
        e = min(n, s + 1024)
        new[s:e] = arr[s:e]
    new.flush()
    del new, arr
    os.replace(tmp, path)


def read_index(path: Path) -> dict | None:
    try:
        return json.loads((Path(path) / "index.json").read_text())
    except (OSError, ValueError):
        return None


class CachedDataset(FERDataset):
    """A dataset read from a cache folder: items are uint8 [3,S,S] views of the memmap.

    ``images`` (the whole memmap, opened lazily so the object pickles to DataLoader workers) lets the
    training loop gather batches without per-item Python work.
    """

    def __init__(self, path, transform=None):
        path = Path(path)
        index = read_index(path)
        if index is None:
            raise FileNotFoundError(f"no cache index in {path}")
        ls = index["label_set"]
        label_set = LABEL_SETS.get(ls["name"])
        if label_set is None or list(label_set.names) != ls["names"]:
            label_set = LabelSet(ls["name"], tuple(ls["names"]))
        report = SkipReport()
        for reason, n in index["skip_report"]["counts"].items():
            report.counts[reason] = n
        report.examples = {k: list(v) for k, v in index["skip_report"]["examples"].items()}
        samples = [Path(s) if "/" in s or os.sep in s else (int(s) if s.isdigit() else s) for s in index["samples"]]
        super().__init__(samples, index["targets"], label_set, index["root"], index["split"], report, transform)
        self.path, self.index, self.size = path, index, index["size"]
        self.label_mode = index.get("label_mode")
        self._images = None

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = np.load(self.path / "images.npy", mmap_mode="r")
        return self._images

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_images"] = None
        return state

    def load(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.images[i]))

    def batch(self, indices) -> torch.Tensor:
        """uint8 [B,3,S,S] for ``indices`` (sorted reads from the memmap)."""
        idx = np.asarray(indices)
        return torch.from_numpy(self.images[idx])

    def target(self, i: int):
        t = self.targets[i]
        if t is None:
            return -1
        if isinstance(t, list):
            if self.label_mode == "probability":
                return int(torch.multinomial(torch.as_tensor(t, dtype=torch.float64), 1))
            return torch.as_tensor(t, dtype=torch.float32)
        return int(t)


class CacheSpaceError(OSError):
    """The disk holding the cache folder has too little free space for a new cache."""


class CacheUnwritableError(CacheSpaceError):
    """The cache folder cannot be written (read-only disk or no permission); like a full disk, the engine's
    ``cache="auto"`` then reads the image files instead."""


#: what a write into a folder one may not write raises
_UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
#: what a write onto a full disk (or past a quota) raises
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def check_free_space(out: Path, n: int, size: int) -> None:
    """Raise :class:`CacheSpaceError` unless the disk of ``out`` has room for n×3×size×size bytes (+5 %)."""
    need = int(n * 3 * size * size * 1.05) + (64 << 20)
    probe = Path(out)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need > free:
        raise CacheSpaceError(
            f"the uint8 cache for {n:,} images at {size}x{size} needs {need / 2**30:.1f} GiB in {out.parent}, "
            f"which has {free / 2**30:.1f} GiB free: pass cache=<a folder on a larger disk>, a smaller size, "
            f"or cache=False to read the image files every epoch")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a process of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers(folder, pattern: str) -> list[Path]:
    """Delete the entries of ``folder`` whose name matches ``pattern`` (a regex with a ``pid`` group) and
    whose process is no longer alive: the temp files and folders of a killed or failed write. Returns them."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = re.fullmatch(pattern, entry.name)
        if m is None or int(m["pid"]) == os.getpid() or pid_alive(int(m["pid"])):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue
        removed.append(entry)
    return removed


#: the temp and old folders :func:`build_cache` writes next to a cache (``<name>.tmp-PID``, ``<name>.old-PID``)
LEFTOVER_PATTERN = r".+\.(tmp|old)-(?P<pid>\d+)"


def first_size(ds: FERDataset, default: int = 112) -> int:
    """The side of the first image of ``ds`` that decodes (``default`` when none does)."""
    for i in range(len(ds)):
        try:
            return int(ds.load(i).shape[-1])
        except DECODE_ERRORS:
            continue
    return default


def _is_valid(out: Path, key: str) -> bool:
    index = read_index(out)
    return index is not None and index.get("key") == key and index.get("version") == VERSION \
        and (out / "images.npy").is_file()


def _open_valid(out: Path, ds: FERDataset) -> CachedDataset:
    c = CachedDataset(out, transform=ds.transform)
    c.report_skips()
    return c


def _build_lock(out: Path):
    """An OS lock (``filelock.FileLock``: released when its process ends, however it ends) named after the cache
    folder's absolute path, in the temporary folder: processes on this machine that need the same cache take
    turns, and the cache folder holds nothing but caches."""
    import tempfile

    from filelock import FileLock

    digest = hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:16]
    return FileLock(Path(tempfile.gettempdir()) / f"ferlib-cache-{digest}.lock")


def cached(ds: FERDataset, name: str, root, split: str, opts: dict, cache=True, size: int | None = None,
           align: bool = False, progress: bool = True, rebuild: bool = False, detector=None,
           workers: int = 0) -> CachedDataset:
    """A valid cache of ``ds`` (built or rebuilt when missing or stale). ``cache`` = True (default root under
    ``data/cache``) or a folder to hold the caches.

    Leftovers of killed builds in that folder are removed first. A folder that cannot be written raises
    :class:`CacheUnwritableError`, a disk without room :class:`CacheSpaceError` (both ``CacheSpaceError``)."""
    size = size or first_size(ds)
    cache_root = None if cache is True else Path(cache)
    out = cache_dir(name, root, split, opts, size, align, cache_root)
    remove_leftovers(out.parent, LEFTOVER_PATTERN)
    key = fingerprint(ds)
    if not rebuild and _is_valid(out, key):
        return _open_valid(out, ds)
    try:
        # One builder per cache folder: processes that need the same cache at once (notebooks run side by side by
        # ``notebooks run-all --jobs``) wait here, and the later ones find it built instead of racing renames.
        with _build_lock(out):
            if not rebuild and _is_valid(out, key):
                return _open_valid(out, ds)
            check_free_space(out, len(ds), size)
            return build_cache(ds, out, size, align, key, progress, detector, workers)
    except CacheSpaceError:
        raise
    except OSError as err:
        if err.errno in _UNWRITABLE:
            raise CacheUnwritableError(
                f"the cache folder {out.parent} cannot be written ({err.strerror}: {err.filename}): "
                "pass cache=<a writable folder> (prepare: --cache-dir), or cache=False to read the image files "
                "every epoch") from err
        if err.errno in _NO_SPACE:
            raise CacheSpaceError(
                f"the disk of {out.parent} filled up while the cache was written: pass "
                "cache=<a folder on a larger disk>, or cache=False to read the image files every epoch") from err
        raise
