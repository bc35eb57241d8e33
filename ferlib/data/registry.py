"""One record per dataset name, declared with its reader, and the entry points over every reader.

A reader module states everything ferlib knows about its dataset where it registers the reader::

    @register_dataset("rafdb", splits=("train", "test"), eval_split="test", label_set="rafdb",
                      face_crop="aligned", detect_layout=detect_layout,
                      synthetic_format=SyntheticFormat(write_rafdb, num_classes=7))
    def load_rafdb(root, split="train", **opts): ...

:func:`load_dataset`, :func:`load_splits`, :func:`dataset_root`, ``ferlib.prepare`` (layout check,
splits), the engine (default folder, evaluation split, the face crop a checkpoint records), ``ferlib.inference``
and the synthetic generator all read that record (:func:`dataset_info`): adding a dataset is one reader file.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict

from ferlib.labels import LABEL_SETS, LabelSet
from ferlib.paths import data_dir

from .base import SkipWarning, require_usable
from .errors import DataNotFoundError, DatasetFormatError

SPLITS = ("train", "val", "test")
#: How a dataset's faces were cropped from their photos, which ``ferlib.inference`` reproduces on a new photo:
#: ``aligned`` the 5-point warp (RAF-DB), ``box`` the face box (AffectNet), ``grey48`` the box in grey at 48×48.
FACE_CROPS = ("aligned", "box", "grey48")


@dataclass(frozen=True)
class SyntheticFormat:
    """How the synthetic generator writes a dataset's files: ``write(root, cfg, samples) -> truth`` (the
    protocol of :mod:`ferlib.data.synthetic_writers`), drawing ``num_classes`` expressions (None: the config's)."""

    write: Callable
    num_classes: int | None = None


@dataclass(frozen=True)
class DatasetInfo:
    """What ferlib knows about one dataset name, declared once with its reader by :func:`register_dataset`.

    ``reader(root, split, **opts)`` is what :func:`load_dataset` calls; ``splits`` the splits the dataset has;
    ``eval_split`` the one its papers report on; ``folder`` its default folder under ``data/``; ``label_set``
    its native class order (None: the classes come from the data); ``face_crop`` one of :data:`FACE_CROPS`;
    ``detect_layout(root)`` names the layout found under ``root`` or raises ``DatasetFormatError`` (None: no
    check); ``synthetic_format`` how the synthetic set is written in this format (None: not offered as one);
    ``generated``: the reader makes its data on first use (no folder needs to exist; it builds its own cache).
    """

    name: str
    reader: Callable
    splits: tuple
    eval_split: str
    folder: str
    label_set: LabelSet | None
    face_crop: str
    detect_layout: Callable | None = None
    synthetic_format: SyntheticFormat | None = None
    generated: bool = False

    def default_root(self) -> Path:
        """``data/<folder>`` (``$FERLIB_DATA`` moves ``data/``)."""
        return data_dir() / self.folder


_DATASETS: Dict[str, DatasetInfo] = {}


def register_dataset(name: str, *, splits, eval_split: str, label_set, face_crop: str, folder: str | None = None,
                     detect_layout: Callable | None = None, synthetic_format: SyntheticFormat | None = None,
                     generated: bool = False):
    """Decorator registering a reader under ``name`` with its record (:class:`DatasetInfo`).

    ``label_set`` is a ``LABEL_SETS`` name or a :class:`LabelSet`; ``folder`` defaults to ``name``. Registering
    a name again with a different record raises ValueError."""
    splits = tuple(splits)
    if not splits or any(s not in SPLITS for s in splits):
        raise ValueError(f"{name}: splits must be some of {SPLITS}, got {splits}")
    if eval_split not in splits:
        raise ValueError(f"{name}: eval_split {eval_split!r} is not one of its splits {splits}")
    if face_crop not in FACE_CROPS:
        raise ValueError(f"{name}: face_crop must be one of {FACE_CROPS}, got {face_crop!r}")
    if isinstance(label_set, str):
        if label_set not in LABEL_SETS:
            raise ValueError(f"{name}: unknown label set {label_set!r}; available: {sorted(LABEL_SETS)}")
        label_set = LABEL_SETS[label_set]
    elif label_set is not None and not isinstance(label_set, LabelSet):
        raise TypeError(f"{name}: label_set must be a LABEL_SETS name, a LabelSet or None, got {label_set!r}")

    def deco(fn):
        info = DatasetInfo(name, fn, splits, eval_split, folder or name, label_set, face_crop, detect_layout,
                           synthetic_format, generated)
        if name in _DATASETS and _DATASETS[name] != info:
            raise ValueError(f"dataset {name!r} is registered twice with different records:\n  {_DATASETS[name]}\n"
                             f"  {info}")
        _DATASETS[name] = info
        return fn

    return deco


def dataset_info(name: str) -> DatasetInfo:
    """The record of dataset ``name`` (KeyError naming the registered ones)."""
    if name not in _DATASETS:
        raise KeyError(f"unknown dataset {name!r}; available: {list_datasets()}")
    return _DATASETS[name]


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def list_synthetic_formats() -> list[str]:
    """The dataset names the synthetic set can be written as (``load_dataset("synthetic", fmt=...)``)."""
    return sorted(n for n, info in _DATASETS.items() if info.synthetic_format is not None)


def face_crop(name: str | None) -> str:
    """How ``name``'s faces were cropped (its record's ``face_crop``); ``aligned`` for a name not registered."""
    return _DATASETS[name].face_crop if name in _DATASETS else "aligned"


def load_dataset(name: str, root=None, split: str = "train", *, cache=None, cache_size: int | None = None,
                 align: bool = False, progress: bool = True, cache_workers: int = 0, relabel: str | None = None,
                 **opts):
    """Read ``split`` of dataset ``name`` from ``root`` (the folder as distributed; see docs/design.md §3).

    ``cache=True`` (or a folder) reads a uint8 tensor cache (:mod:`ferlib.data.cache`) built on first use
    and rebuilt when the sources or options change; ``cache_size`` is its side (default: the first image's
    size), ``align=True`` aligns faces to the 5-point template while building it, ``cache_workers`` decodes
    in that many processes. ``relabel`` names a ``LABEL_SETS`` entry whose class order the targets are
    re-indexed into (e.g. ``"emonet_affectnet8"``); by default targets keep the dataset's native order.

    A split with no usable image (every file missing or unreadable) raises :class:`EmptySplitError` with
    the skip report, on the cached path as on the file path.
    """
    ds = _load(dataset_info(name), root, split, cache, cache_size, align, progress, cache_workers, opts)
    if relabel is not None:
        from .relabel import relabel_dataset

        if relabel not in LABEL_SETS:
            raise KeyError(f"relabel: unknown label set {relabel!r}; available: {sorted(LABEL_SETS)}")
        relabel_dataset(ds, LABEL_SETS[relabel])
    return require_usable(ds, split)


def missing_root_error(info: DatasetInfo, root) -> DatasetFormatError:
    """The error for a dataset folder that does not exist: for your own folders (a dataset whose classes come from
    the data, ``imagefolder``) "no such folder", for a published dataset where to get it."""
    if info.label_set is None:
        return DatasetFormatError(f"no such folder ({info.name}).", path=root,
                                  fix="check the path; it should hold train/<class>/ and test/<class>/ folders of "
                                      f"images (python -m ferlib prepare {info.name} --root <folder> --make-split 0.2 "
                                      "makes them from <folder>/<class>/).")
    return DatasetFormatError(f"dataset root does not exist ({info.name}).", path=root,
                              fix=f"download {info.name} and point data_root at it; data/README.md says where each "
                                  "dataset is expected.")


def _load(info: DatasetInfo, root, split, cache, cache_size, align, progress, cache_workers, opts):
    name, reader = info.name, info.reader
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if info.generated:  # makes its data (and its cache), then reads it with a real reader
        return reader(root, split, progress=progress, cache=cache, cache_size=cache_size, align=align,
                      cache_workers=cache_workers, **opts)
    if root is not None:
        root = Path(root).expanduser()
        if not root.exists():
            raise missing_root_error(info, root)
    if align and not cache:
        raise ValueError("align=True works on the cache: pass cache=True (or a folder) as well")
    if not cache:
        return reader(root, split, **opts)
    from .cache import cached

    opts.setdefault("check", "exists")  # images are decoded once, by the cache step
    with warnings.catch_warnings():  # the cached dataset reports the reader's skips with its own, once
        warnings.simplefilter("ignore", SkipWarning)
        ds = reader(root, split, **opts)
    return cached(ds, name, root, split, opts, cache, cache_size, align, progress, workers=cache_workers)


def load_splits(name: str, root=None, splits=None, **opts) -> dict:
    """``{split: dataset}`` for every split the dataset has (its record's ``splits``), or ``splits``."""
    return {s: load_dataset(name, root, s, **opts) for s in (splits or dataset_info(name).splits)}


def dataset_root(name: str, root=None) -> Path | None:
    """The folder dataset ``name`` is read from: ``root``, else ``data/<folder>`` of its record; None for a generated
    set given no ``root`` (it uses its own). A folder that does not exist raises :class:`DataNotFoundError` saying
    where the data goes: for a published dataset, where to obtain it; for your own folders (classes from the data,
    ``imagefolder``), the layout to pass. Training, cross-dataset evaluation and notebook 02 resolve a dataset's
    folder here, so ``load_dataset(name, dataset_root(name, root), split)`` fails the same way everywhere.
    """
    info = dataset_info(name)
    if info.generated:
        return Path(root).expanduser() if root else None
    root = Path(root).expanduser() if root else info.default_root()
    if root.exists():
        return root
    if info.label_set is None:
        raise DataNotFoundError(f"{name}: no data at {root}. Pass your own folder: data_root=<folder> (-p "
                                f"data_root <folder>) holding train/<class>/<image> and test/<class>/<image> "
                                f"(python -m ferlib prepare {name} --root <folder> --make-split 0.2 makes them).")
    raise DataNotFoundError(
        f"{name}: no data at {root}. The licensed datasets cannot ship with ferlib: obtain {name} "
        f"(data/README.md says from where), put it at {root} or pass data_root=..., then check it with "
        f"notebooks/01_prepare_data.ipynb (-p dataset {name} -p data_root <folder>).")
