"""Atomic checkpoints: written to a temp file, fsynced, renamed; a corrupt file falls back to the previous one."""
from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import torch


def atomic_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` so that a reader never sees a partial file, even after SIGKILL."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
    except OSError:
        pass


def save_checkpoint(state: dict, path: str | os.PathLike, keep_previous: bool = True) -> None:
    """Save; the file it replaces is kept as ``<name>.prev`` so a later corruption can fall back to it."""
    path = Path(path)
    if keep_previous and path.exists():
        os.replace(path, path.with_name(path.name + ".prev"))
    atomic_save(state, path)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict | None:
    """Load ``path`` (``weights_only=True``); if it is corrupt or partial, warn and load ``<name>.prev``."""
    path = Path(path)
    for cand in (path, path.with_name(path.name + ".prev")):
        if not cand.exists():
            continue
        try:
            return torch.load(cand, map_location=map_location, weights_only=True)
        except (RuntimeError, EOFError, pickle.UnpicklingError, OSError, ValueError) as e:
            warnings.warn(f"checkpoint {cand} is unreadable ({type(e).__name__}: {e}); trying the previous one")
    return None
