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


@register_dataset("synthetic")
def load_synthetic(root=None, split: str = "train", fmt: str = "rafdb", config: SyntheticConfig | None = None,
                   progress: bool = True, **opts):
    """The synthetic set in format ``fmt`` (generated under ``root/fmt`` if missing), read by that format's reader."""
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
    return load_dataset(reader, ds_root, split, **opts)
