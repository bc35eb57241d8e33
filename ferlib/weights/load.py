"""``load_pretrained``: find, verify, safely read, unwrap, convert and load a checkpoint.

Steps (each failure raises a :class:`PretrainedWeightsError` subclass whose message says what to
do): resolve a registry entry or a path → check size and sha256 where the registry knows them →
``torch.load(weights_only=True)`` (pickled Python objects are refused) → unwrap ``state_dict`` /
``model_state_dict`` / ``model`` containers and DataParallel ``module.`` prefixes → map the
authors' keys with ``convert_upstream(entry.model, state)`` → load, strictly except for the keys
the entry declares unused, which are reported by name (:class:`DroppedKeysWarning`), never
silently.
"""
from __future__ import annotations

import fnmatch
import hashlib
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from .converters import convert_upstream
from .registry import README_SECTION, WeightsEntry, entry_for_filename, find_file, get_weights, list_weights

#: Containers the authors' scripts save around a state dict, unwrapped in this order.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "state")


class PretrainedWeightsError(RuntimeError):
    """Base class of every loading failure."""


class WeightsNotFoundError(PretrainedWeightsError, FileNotFoundError):
    """The file is not where ferlib looks for it (the message says where to get it)."""


class WeightsIntegrityError(PretrainedWeightsError):
    """Size or sha256 differs from the registry: truncated download or a different / tampered file."""


class UnsafeCheckpointError(PretrainedWeightsError):
    """The file holds pickled Python objects that ``weights_only=True`` refuses to run."""


class KeyMismatchError(PretrainedWeightsError):
    """Checkpoint and model keys or shapes differ outside the declared unused keys."""


class DroppedKeysWarning(UserWarning):
    """Declared-unused keys were dropped or left at their initial values while loading."""


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did: the file, its entry and every key by fate."""

    path: Path
    entry: WeightsEntry | None
    loaded: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    left_at_init: list[str] = field(default_factory=list)


# --- finding and checking the file ---------------------------------------------------------------


def _not_found(entry: WeightsEntry) -> WeightsNotFoundError:
    where = ", ".join(str(p) for p in entry.search_paths())
    size = f"{entry.size:,} bytes" if entry.size else "size unknown"
    digest = f"sha256 {entry.sha256}" if entry.sha256 else "sha256 unknown"
    status = "" if entry.released else " It was NOT released by its authors."
    return WeightsNotFoundError(
        f"pretrained weights {entry.name!r} need the file {entry.filename} ({size}, {digest}); it is not in "
        f"{where}.{status} Where to get it: {entry.source}. See {README_SECTION} for how to obtain it; nothing is "
        f"downloaded at run time."
    )


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def verify_file(path: str | os.PathLike, entry: WeightsEntry) -> None:
    """Check size, then sha256, against the entry (each only where known)."""
    path = Path(path)
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        what = "truncated (incomplete download?)" if size < entry.size else "larger than the released file"
        raise WeightsIntegrityError(
            f"{path} is {size:,} bytes but {entry.name!r} ({entry.filename}) is {entry.size:,} bytes: the file is "
            f"{what}. Obtain it again ({entry.source}; {README_SECTION})."
        )
    if entry.sha256 is not None:
        digest = sha256_of(path)
        if digest != entry.sha256:
            raise WeightsIntegrityError(
                f"{path} has sha256 {digest} but {entry.name!r} ({entry.filename}) has sha256 {entry.sha256}: the "
                f"file is corrupted or not the released one (tampered or a different checkpoint under the same "
                f"name). Obtain it again ({entry.source}; {README_SECTION}), or pass verify=False for your own file."
            )


def _text_kind(path) -> str | None:
    """What a text file saved under a checkpoint's name is ("an HTML page", "a git-lfs pointer", "a text
    file"), or None when the file starts like binary data (a checkpoint)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError:
        return None
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if not text:
        return None
    lower = text[:200].lower()
    if lower.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or b"<html" in lower:
        return "an HTML page"
    if text.startswith(b"version https://git-lfs"):
        return "a git-lfs pointer"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "a text file"
    return None


def read_checkpoint(path: str | os.PathLike) -> object:
    """``torch.load(path, weights_only=True)`` on CPU, with readable errors (an HTML page or a git-lfs
    pointer saved under the checkpoint's name is named as such, not as pickled objects)."""
    kind = _text_kind(path)
    if kind is not None:
        hint = {"an HTML page": "a failed download? A browser or wget saved the site's page",
                "a git-lfs pointer": "the repository was cloned without git-lfs: run `git lfs pull`"}.get(
            kind, "not a torch checkpoint")
        raise PretrainedWeightsError(
            f"{path} is {kind}, not a checkpoint ({hint}). Obtain the file itself; see {README_SECTION}.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"{path} contains pickled Python objects, which ferlib refuses to load (torch.load weights_only=True; "
            f"unpickling can run arbitrary code). If you trust the file, re-save only its tensors: "
            f"torch.save(obj['state_dict'] or obj.state_dict(), 'clean.pth'). Detail: {str(err).splitlines()[0]}"
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise PretrainedWeightsError(
            f"cannot read {path} as a torch checkpoint (truncated download or not a .pth file): {err}"
        ) from err


# --- unwrapping -----------------------------------------------------------------------------------


def _is_state(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _strip_module(state: Mapping) -> dict:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def unwrap_state(obj) -> dict:
    """Take the state dict out of the authors' containers and drop DataParallel's ``module.``.

    A dict of several states (e.g. MMFRM's ``{"network": …, "landmark": …}``) keeps its layout,
    with each part unwrapped, for the model's converter.
    """
    while isinstance(obj, Mapping) and not _is_state(obj):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise PretrainedWeightsError(f"expected a state dict (a mapping of tensors), got {type(obj).__name__}")
    if _is_state(obj):
        return _strip_module(obj)
    return {k: unwrap_state(v) if isinstance(v, Mapping) else v for k, v in obj.items()}


# --- matching -------------------------------------------------------------------------------------


def _names(keys: list[str], n: int = 8) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", … ({len(keys)} in all)" if len(keys) > n else "")


def _prefix_hint(unexpected: list[str], model_keys) -> str:
    for k in unexpected[:20]:
        for mk in model_keys:
            if mk.endswith("." + k):
                prefix = mk[: -len(k)]
                return f" The checkpoint seems to belong to the submodule {prefix!r}: pass prefix={prefix!r}."
    return ""


def _resolve(name_or_path) -> tuple[Path, WeightsEntry | None]:
    if isinstance(name_or_path, WeightsEntry):
        entry = name_or_path
    elif isinstance(name_or_path, os.PathLike) or (
        isinstance(name_or_path, str) and (os.sep in name_or_path or "/" in name_or_path or Path(name_or_path).is_file())
    ):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"no checkpoint file {path}")
        return path, entry_for_filename(path.name)
    else:
        name = str(name_or_path)
        candidates = [name] if name in list_weights() else list_weights(model=name, released=True)
        if not candidates:
            raise KeyError(f"unknown pretrained weights {name!r}; registered: {list_weights()} (or give a file path)")
        if len(candidates) > 1:
            raise KeyError(f"model {name!r} has several pretrained weights, choose one: {candidates}")
        entry = get_weights(candidates[0])
    path = find_file(entry)
    if path is None:
        raise _not_found(entry)
    return path, entry


def load_pretrained(
    model: nn.Module,
    name_or_path,
    *,
    prefix: str = "",
    unused: tuple[str, ...] = (),
    converter: str | None = None,
    strict: bool = True,
    verify: bool = True,
) -> LoadReport:
    """Load a registered checkpoint (entry name, or a model name with one entry) or a file into ``model``.

    Args:
        prefix: load into ``model.get_submodule(prefix)`` (e.g. ``"ir_back"`` in FERMam).
        unused: extra fnmatch patterns of keys that may be dropped / left at init.
        converter: ``convert_upstream`` name; default the entry's ``model`` (identity without entry).
        strict: raise :class:`KeyMismatchError` on any other missing, unexpected or misshaped key.
        verify: check size and sha256 against the registry.

    Returns a :class:`LoadReport`; sets ``pretrained_entry`` on the target module.
    """
    path, entry = _resolve(name_or_path)
    if verify and entry is not None:
        verify_file(path, entry)
    state = unwrap_state(read_checkpoint(path))
    name = converter or (entry.model if entry is not None else None)
    state = convert_upstream(name, state) if name else dict(state)

    target = model.get_submodule(prefix.rstrip(".")) if prefix else model
    own = target.state_dict()
    patterns = tuple(entry.unused_keys if entry is not None else ()) + tuple(unused)
    declared = lambda k: any(fnmatch.fnmatchcase(k, p) for p in patterns)  # noqa: E731

    report = LoadReport(path, entry)
    to_load, unexpected, misshaped = {}, [], []
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise PretrainedWeightsError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor (converter {name!r}?)")
        if k in own and tuple(v.shape) == tuple(own[k].shape):
            to_load[k] = v
        elif declared(k):
            report.dropped.append(k)
        elif k in own:
            misshaped.append(f"{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}")
        else:
            unexpected.append(k)
    absent = [k for k in own if k not in to_load and k not in state]
    missing = [k for k in absent if not declared(k)]
    report.left_at_init = [k for k in absent if declared(k)]
    report.loaded = list(to_load)

    label = entry.name if entry is not None else str(path)
    if not to_load:
        raise KeyMismatchError(
            f"{label}: no key of the checkpoint matches the model ({type(target).__name__}); checkpoint keys "
            f"start with {_names(list(state), 3)}, model keys with {_names(list(own), 3)}."
            + _prefix_hint(list(state), model.state_dict())
        )
    if strict and (unexpected or missing or misshaped):
        parts = []
        if missing:
            parts.append(f"missing in the checkpoint: {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected in the checkpoint: {_names(unexpected)}")
        if misshaped:
            parts.append(f"shape mismatch: {_names(misshaped, 4)}")
        hint = _prefix_hint(unexpected, model.state_dict()) if unexpected else ""
        if entry is not None and entry.model_kwargs:
            kwargs = ", ".join(f"{k}={v!r}" for k, v in entry.model_kwargs.items())
            hint += f" This file needs create_model({entry.model!r}, {kwargs})."
        raise KeyMismatchError(f"{label} does not fit {type(target).__name__}: " + "; ".join(parts) + "." + hint)

    target.load_state_dict(to_load, strict=False)
    if report.dropped or report.left_at_init:
        msg = f"{label} → {type(target).__name__}: loaded {len(report.loaded)} entries"
        if report.dropped:
            msg += f"; dropped {len(report.dropped)} declared-unused checkpoint entries ({_names(report.dropped, 3)})"
        if report.left_at_init:
            msg += f"; {len(report.left_at_init)} model entries keep their init ({_names(report.left_at_init, 3)})"
        warnings.warn(msg, DroppedKeysWarning, stacklevel=2)
    if entry is not None:
        _check_model_kwargs(target, entry)
        target.pretrained_entry = entry
    return report


def _check_model_kwargs(model: nn.Module, entry: WeightsEntry) -> None:
    """Warn when a constructor argument the file needs (e.g. EMO-Net's ``lam``) differs on the model."""
    for key, value in entry.model_kwargs.items():
        if key == "num_classes" or not hasattr(model, key):
            continue
        if getattr(model, key) != value:
            warnings.warn(
                f"{entry.name} was trained with {key}={value!r} but the model has {key}={getattr(model, key)!r}; "
                f"outputs will differ from the authors' (create_model({entry.model!r}, {key}={value!r})).",
                UserWarning,
                stacklevel=3,
            )
