"""``load_dataset("synthetic", root, split, fmt="rafdb")``: generate on first use, read like the real thing.

``fmt`` is any format of :mod:`ferlib.data.synthetic_formats` plus ``rafdb`` (default) and ``affectnet8``
(AffectNet format with contempt, read with 8 classes).
"""
from __future__ import annotations

from pathlib import Path

from .registry import load_dataset, register_dataset
from .synthetic import SyntheticConfig, generate

#: fmt -> (format generate() writes, reader, forced num_classes)
FORMATS = {"rafdb": ("rafdb", "rafdb", 7), "affectnet": ("affectnet", "affectnet", None),
           "affectnet8": ("affectnet", "affectnet8", 8), "ferplus": ("ferplus", "ferplus", 8),
           "fer2013": ("fer2013", "fer2013", 7), "imagefolder": ("imagefolder", "imagefolder", None)}


def default_root() -> Path:
    """Where the synthetic set lives by default (``$FERLIB_DATA/synthetic`` or ``./data/synthetic``)."""
    from ferlib.paths import data_dir

    return data_dir() / "synthetic"


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


@register_dataset("synthetic")
def load_synthetic(root=None, split: str = "train", fmt: str = "rafdb", config: SyntheticConfig | None = None,
                   progress: bool = True, cache=None, cache_size: int | None = None, align: bool = False,
                   cache_workers: int = 0, **opts):
    """The synthetic set in format ``fmt`` (generated under ``root/fmt`` if missing), read by that format's reader.

    ``cache`` / ``cache_size`` / ``align`` as for :func:`ferlib.data.load_dataset`; RAF-DB-format faces are
    aligned from the generator's own landmarks (no detector needed).
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {sorted(FORMATS)}, got {fmt!r}")
    written, reader, ncls = FORMATS[fmt]
    root = Path(root) if root is not None else default_root()
    kw = {k: opts.pop(k) for k in list(opts) if k in SyntheticConfig.__dataclass_fields__}
    if ncls is not None and config is None:
        kw["num_classes"] = ncls
    cfg = config or SyntheticConfig(**kw)
    ds_root = generate(root / fmt, fmt=written, cfg=cfg, progress=progress)
    if split == "val" and reader in ("rafdb", "imagefolder"):
        split = "test"
    if not cache:
        if align:
            raise ValueError("align=True works on the cache: pass cache=True (or a folder) as well")
        return load_dataset(reader, ds_root, split, **opts)
    import warnings

    from .base import SkipWarning
    from .cache import cached

    opts.setdefault("check", "exists")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkipWarning)
        ds = load_dataset(reader, ds_root, split, **opts)
    if written == "rafdb" and (ds_root / "synthetic_landmarks.npz").is_file():
        ds.landmarks = SyntheticLandmarks(ds_root / "synthetic_landmarks.npz", ds.samples)
    return cached(ds, reader, ds_root, split, opts, cache, cache_size, align, progress, workers=cache_workers)
