"""``load_dataset(name, root, split, **opts)``: one entry point over every reader."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Dict

from .base import SkipWarning, require_usable
from .errors import DatasetFormatError

_READERS: Dict[str, Callable] = {}
SPLITS = ("train", "val", "test")


def register_dataset(name: str):
    def deco(fn):
        if name in _READERS and _READERS[name] is not fn:
            raise ValueError(f"dataset {name!r} is registered twice")
        _READERS[name] = fn
        return fn

    return deco


def list_datasets() -> list[str]:
    return sorted(_READERS)


def load_dataset(name: str, root=None, split: str = "train", *, cache=None, cache_size: int | None = None,
                 align: bool = False, progress: bool = True, cache_workers: int = 0, relabel: str | None = None,
                 **opts):
    """Read ``split`` of dataset ``name`` from ``root`` (the folder as distributed; see DESIGN §3).

    ``cache=True`` (or a folder) reads a uint8 tensor cache (:mod:`ferlib.data.cache`) built on first use
    and rebuilt when the sources or options change; ``cache_size`` is its side (default: the first image's
    size), ``align=True`` aligns faces to the 5-point template while building it, ``cache_workers`` decodes
    in that many processes. ``relabel`` names a ``LABEL_SETS`` entry whose class order the targets are
    re-indexed into (e.g. ``"emonet_affectnet8"``); by default targets keep the dataset's native order.

    A split with no usable image (every file missing or unreadable) raises :class:`EmptySplitError` with
    the skip report, on the cached path as on the file path.
    """
    ds = _load(name, root, split, cache, cache_size, align, progress, cache_workers, opts)
    if relabel is not None:
        from .labels import LABEL_SETS, relabel_dataset

        if relabel not in LABEL_SETS:
            raise KeyError(f"relabel: unknown label set {relabel!r}; available: {sorted(LABEL_SETS)}")
        relabel_dataset(ds, LABEL_SETS[relabel])
    return require_usable(ds, split)


def _load(name, root, split, cache, cache_size, align, progress, cache_workers, opts):
    if name not in _READERS:
        raise KeyError(f"unknown dataset {name!r}; available: {list_datasets()}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if root is not None and name != "synthetic":
        root = Path(root).expanduser()
        if not root.exists():
            raise DatasetFormatError(
                f"dataset root does not exist ({name}).", path=root,
                fix=f"download {name} and point root at it; data/README.md says where each dataset is expected.")
    if name == "synthetic":  # generates, then calls load_dataset again with the real reader
        return _READERS[name](root, split, progress=progress, cache=cache, cache_size=cache_size, align=align,
                              cache_workers=cache_workers, **opts)
    if align and not cache:
        raise ValueError("align=True works on the cache: pass cache=True (or a folder) as well")
    if not cache:
        return _READERS[name](root, split, **opts)
    from .cache import cached

    opts.setdefault("check", "exists")  # images are decoded once, by the cache step
    with warnings.catch_warnings():  # the cached dataset reports the reader's skips with its own, once
        warnings.simplefilter("ignore", SkipWarning)
        ds = _READERS[name](root, split, **opts)
    return cached(ds, name, root, split, opts, cache, cache_size, align, progress, workers=cache_workers)


#: The splits each dataset has (RAF-DB: val is test; AffectNet: test is val).
DEFAULT_SPLITS = {"rafdb": ("train", "test"), "affectnet": ("train", "val"), "affectnet8": ("train", "val"),
                  "ferplus": ("train", "val", "test"), "fer2013": ("train", "val", "test"),
                  "imagefolder": ("train", "test"), "synthetic": ("train", "test")}


def load_splits(name: str, root=None, splits=None, **opts) -> dict:
    """``{split: dataset}`` for every split the dataset has (or ``splits``)."""
    return {s: load_dataset(name, root, s, **opts) for s in (splits or DEFAULT_SPLITS.get(name, ("train", "test")))}
