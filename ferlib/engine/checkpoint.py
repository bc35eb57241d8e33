"""Atomic, checksummed checkpoints: written to a temp file, fsynced, renamed; a corrupt file falls back to the
previous one.

:func:`save_checkpoint` stores, next to the state, the sha256 of every tensor and value in it
(:data:`CHECKSUM_KEY`); :func:`read_checkpoint_file` recomputes it on load, so a bit flipped on disk or in a
copy is found instead of training on (or reporting) a weight of −5.7e35. Files written before checksums
existed load as they are.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from pathlib import Path

import torch

from ferlib.data.cache import remove_leftovers

#: the key of the checksum in a checkpoint dict (``"sha256:<hex>"``)
CHECKSUM_KEY = "ferlib_checksum"
#: the temp files :func:`atomic_save` writes (``.<name>.tmp<PID>``); those of dead processes are removed
TEMP_PATTERN = r"\..+\.tmp(?P<pid>\d+)"


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used: unreadable, truncated, refused by ``weights_only`` or corrupt.
    The message names the file and the reason."""


def checksum(obj) -> str:
    """``"sha256:<hex>"`` over every tensor (dtype, shape, bytes) and plain value in ``obj``, with its key path.

    Nested dicts, lists and tuples are walked in order, so the value is the same after a save and a load."""
    h = hashlib.sha256()
    _feed(h, "", obj)
    return "sha256:" + h.hexdigest()


def _feed(h, path: str, obj) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        t = t.to_dense() if t.layout != torch.strided else t
        h.update(f"{path}|tensor|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(f"{path}|dict|{len(obj)}\n".encode())
        for k, v in obj.items():
            _feed(h, f"{path}/{k!r}", v)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{path}|{type(obj).__name__}|{len(obj)}\n".encode())
        for i, v in enumerate(obj):
            _feed(h, f"{path}/{i}", v)
    else:
        h.update(f"{path}|{type(obj).__name__}|{obj!r}\n".encode())


def _write_temp(obj, path: Path) -> Path:
    """``torch.save`` into ``.<name>.tmp<PID>`` next to ``path``, fsynced; temp files left in the folder by a
    killed process (a full checkpoint each) are removed first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path.parent, TEMP_PATTERN)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def _fsync_dir(folder: Path) -> None:
    try:
        dfd = os.open(folder, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
    except OSError:
        pass


def atomic_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` so that a reader never sees a partial file, even after SIGKILL."""
    path = Path(path)
    os.replace(_write_temp(obj, path), path)
    _fsync_dir(path.parent)


def _keep_as_previous(path: Path) -> None:
    """Make ``<name>.prev`` the current ``path`` while ``path`` stays in place (a hard link, renamed over the
    old ``.prev``); where the file system has no hard links, ``path`` is renamed."""
    prev = path.with_name(path.name + ".prev")
    link = path.with_name(f".{prev.name}.tmp{os.getpid()}")
    try:
        link.unlink(missing_ok=True)
        os.link(path, link)
        os.replace(link, prev)
    except OSError:
        os.replace(path, prev)


def save_checkpoint(state: dict, path: str | os.PathLike, keep_previous: bool = True) -> None:
    """Save ``state`` with its :func:`checksum`; the file it replaces is kept as ``<name>.prev`` so a later
    corruption can fall back to it.

    The new file is written in full before anything is renamed, so a kill at any moment leaves ``path``
    (old or new) in place, never only ``.prev``."""
    path = Path(path)
    tmp = _write_temp({**state, CHECKSUM_KEY: checksum(state)}, path)
    if keep_previous and path.exists():
        _keep_as_previous(path)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_checkpoint_file(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load one checkpoint (``weights_only=True``) and verify its checksum; the checksum key is removed.

    Raises :class:`CheckpointError` naming the file when it is missing, unreadable, holds pickled objects
    or no longer matches its checksum."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"checkpoint {path} is refused: it holds pickled Python objects, not only tensors "
                              f"({str(e).splitlines()[0]})") from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e})") from e
    if isinstance(obj, dict) and CHECKSUM_KEY in obj:
        stored = obj.pop(CHECKSUM_KEY)
        actual = checksum(obj)
        if actual != stored:
            raise CheckpointError(
                f"checkpoint {path} is corrupt, hence unreadable: its tensors no longer match the checksum written "
                f"with it ({actual[:19]}… ≠ {str(stored)[:19]}…; a bit changed on disk or in a copy)")
    return obj


def load_checkpoint(path: str | os.PathLike, map_location="cpu", refused: list | None = None) -> dict | None:
    """Load ``path`` (``weights_only=True``, checksum verified); if it is corrupt or partial, warn and load
    ``<name>.prev``. None when neither is usable; ``refused`` (a list) receives a
    :class:`CheckpointError` for every file that exists but was refused."""
    path = Path(path)
    for cand in (path, path.with_name(path.name + ".prev")):
        if not cand.exists():
            continue
        try:
            return read_checkpoint_file(cand, map_location)
        except CheckpointError as e:
            if refused is not None:
                refused.append(e)
            warnings.warn(f"{e}; trying the previous one" if cand == path else str(e))
    return None
