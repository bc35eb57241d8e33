"""``load_dataset("synthetic", root, split, fmt="rafdb")``: generate on first use, read like the real thing.

``fmt`` is any dataset whose record names a synthetic writer (``ferlib.data.list_synthetic_formats()``:
``rafdb`` by default, ``affectnet``, ``affectnet8`` (AffectNet's format with contempt, read with 8 classes),
``ferplus``, ``fer2013``, ``imagefolder``); the set is written by that writer and read by that dataset's reader.
The faces come from :mod:`ferlib.data.synthetic_faces` (the renderer), the files from
:mod:`ferlib.data.synthetic_writers` (one writer per official layout); this module is the dataset's reader.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import DataNotFoundError
from ..registry import dataset_info, list_synthetic_formats, load_dataset, register_dataset
from ..synthetic_faces import SyntheticConfig, generate


def default_root() -> Path:
    """Where the synthetic set lives by default (``$FERLIB_DATA/synthetic`` or ``./data/synthetic``: its record's
    folder)."""
    return dataset_info("synthetic").default_root()


class SyntheticLandmarks:
    """``landmarks(i)`` → the generator's 68 landmarks [68,2] of sample ``i`` (RAF-DB format, from the
    ``synthetic_landmarks.npz`` written beside the images), so alignment needs no detector."""

    def __init__(self, npz_path: Path, samples):
        self.npz_path = Path(npz_path)
        self.stems = [Path(s).name.replace("_aligned", "").rsplit(".", 1)[0] for s in samples]
        self._data = None

    def __call__(self, i: int):
        if self._data is None:
            import numpy as np

            self._data = dict(np.load(self.npz_path))
        return self._data[self.stems[i]]

    def __getstate__(self):
        return {**self.__dict__, "_data": None}


def check_root(root: Path) -> None:
    """Refuse a folder holding other data: ferlib writes the synthetic set only into an empty or new folder, or
    one holding a synthetic set (``synthetic.json``, here or one level down)."""
    if root.is_dir() and any(root.iterdir()) \
            and not ((root / "synthetic.json").exists() or any(root.glob("*/synthetic.json"))):
        raise DataNotFoundError(
            f"synthetic: {root} is not a ferlib synthetic set (no synthetic.json) and ferlib never writes into "
            f"a folder holding other data; pass an empty or new folder, or none (data/synthetic)")


@register_dataset("synthetic", splits=("train", "test"), eval_split="test", label_set="rafdb", face_crop="aligned",
                  generated=True)
def load_synthetic(root=None, split: str = "train", fmt: str = "rafdb", config: SyntheticConfig | None = None,
                   progress: bool = True, cache=None, cache_size: int | None = None, align: bool = False,
                   cache_workers: int = 0, **opts):
    """The synthetic set in format ``fmt`` (generated under ``root/fmt`` if missing), read by that format's reader.

    ``cache`` / ``cache_size`` / ``align`` as for :func:`ferlib.data.load_dataset`; faces written with the
    generator's landmarks (RAF-DB format) are aligned from them (no detector needed). A ``root`` given that
    holds other data raises :class:`DataNotFoundError` (:func:`check_root`).
    """
    formats = list_synthetic_formats()
    if fmt not in formats:
        raise ValueError(f"fmt must be one of {formats}, got {fmt!r}")
    info = dataset_info(fmt)
    if root is not None:
        check_root(Path(root))
    root = Path(root) if root is not None else default_root()
    kw = {k: opts.pop(k) for k in list(opts) if k in SyntheticConfig.__dataclass_fields__}
    if info.synthetic_format.num_classes is not None and config is None:
        kw["num_classes"] = info.synthetic_format.num_classes
    cfg = config or SyntheticConfig(**kw)
    ds_root = generate(root / fmt, fmt=fmt, cfg=cfg, progress=progress)
    if split == "val" and "val" not in info.splits:  # a format without a validation split: its test split
        split = "test"
    if not cache:
        if align:
            raise ValueError("align=True works on the cache: pass cache=True (or a folder) as well")
        return load_dataset(fmt, ds_root, split, **opts)
    import warnings

    from ..base import SkipWarning
    from ..cache import cached

    opts.setdefault("check", "exists")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkipWarning)
        ds = load_dataset(fmt, ds_root, split, **opts)
    if (ds_root / "synthetic_landmarks.npz").is_file():  # written beside RAF-DB-format faces
        ds.landmarks = SyntheticLandmarks(ds_root / "synthetic_landmarks.npz", ds.samples)
    return cached(ds, fmt, ds_root, split, opts, cache, cache_size, align, progress, workers=cache_workers)
