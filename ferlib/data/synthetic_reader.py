"""``load_dataset("synthetic", root, split, fmt="rafdb")``: generate on first use, read like the real thing."""
from __future__ import annotations

from pathlib import Path

from .registry import load_dataset, register_dataset
from .synthetic import SyntheticConfig, generate

def default_root() -> Path:
    """Where the synthetic set lives by default: ``<data dir>/synthetic`` (see :mod:`ferlib.paths`)."""
    from ferlib.paths import data_dir

    return data_dir() / "synthetic"


@register_dataset("synthetic")
def load_synthetic(root=None, split: str = "train", fmt: str = "rafdb", config: SyntheticConfig | None = None,
                   progress: bool = True, **opts):
    """The synthetic set in format ``fmt`` (generated under ``root/fmt`` if missing), read by that format's reader."""
    root = Path(root) if root is not None else default_root()
    cfg = config or SyntheticConfig(**{k: opts.pop(k) for k in list(opts) if k in SyntheticConfig.__dataclass_fields__})
    ds_root = generate(root / fmt, fmt=fmt, cfg=cfg, progress=progress)
    reader = {"rafdb": "rafdb"}.get(fmt, fmt)
    return load_dataset(reader, ds_root, split, **opts)
