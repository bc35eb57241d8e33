"""``load_dataset(name, root, split, **opts)``: one entry point over every reader."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict

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


def load_dataset(name: str, root=None, split: str = "train", **opts):
    """Read ``split`` of dataset ``name`` from ``root`` (the folder as distributed; see DESIGN §3)."""
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
    return _READERS[name](root, split, **opts)
