"""Starting weights: the one meaning of ``pretrained`` for cards, ``train()``, the CLI and notebooks (where a
training starts; ``True`` = the card's items), and the values ``create_model(weights=…)`` loads (``True`` there =
the model's own released entry).

A paper's card says where its training starts (``pretrained:`` in ``ferlib/recipes/<paper>.yaml``)
as a list of :class:`StartItem` — which registry entry (or file) loads into which submodule, with
which key converter. ``pretrained`` everywhere accepts:

- ``True`` or ``"card"``: the card's items (the paper's starting weights);
- ``False`` / ``None`` / ``"none"``: from scratch (random init);
- a registry entry name: that entry — into the submodule the card names for it, else the whole model;
- a file path: a whole-model state dict (any layout :func:`~ferlib.weights.load_pretrained` unwraps);
- a list of items (mappings with ``weights``, ``into``, ``converter``, ``unused``).

:func:`resolve_start` turns that into items, :func:`plan_start` describes them without raising
(the dry run), :func:`require_start_files` raises one error listing every missing file, and
:func:`load_start` loads them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from .registry import README_SECTION, WeightsEntry, find_file, get_weights, list_weights

#: How a user opts out of the starting weights, in each front end.
OPT_OUT = "-p pretrained False (notebooks), --pretrained false (python -m ferlib train), pretrained=False (train())"

_OFF = {"false", "none", "no", "off", "0", "scratch", ""}
_CARD = {"true", "card", "yes", "on", "1"}


@dataclass(frozen=True)
class StartItem:
    """One file loaded into one submodule: ``weights`` (registry entry or path) → ``into`` ('' = the model)."""

    weights: str
    into: str = ""
    converter: str | None = None
    unused: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec) -> "StartItem":
        if isinstance(spec, StartItem):
            return spec
        if isinstance(spec, (str, os.PathLike)):
            return cls(str(spec))
        if isinstance(spec, Mapping):
            unknown = set(spec) - {"weights", "into", "converter", "unused"}
            if unknown or "weights" not in spec:
                raise ValueError(f"a starting-weights item needs 'weights' (and optionally into, converter, unused); "
                                 f"got {dict(spec)}")
            return cls(str(spec["weights"]), str(spec.get("into") or ""), spec.get("converter"),
                       tuple(spec.get("unused") or ()))
        raise TypeError(f"cannot read a starting-weights item from {type(spec).__name__}: {spec!r}")

    @property
    def entry(self) -> WeightsEntry | None:
        """The registry entry (by name, or by the file name of a path), or None."""
        if self.weights in list_weights():
            return get_weights(self.weights)
        from .registry import entry_for_filename

        return entry_for_filename(Path(self.weights).name) if self.is_path else None

    @property
    def is_path(self) -> bool:
        w = self.weights
        return "/" in w or os.sep in w or Path(w).suffix in (".pth", ".pt", ".tar", ".bin", ".ckpt")

    def file(self) -> Path | None:
        """Where the file is on this machine, or None."""
        if self.is_path:
            p = Path(self.weights).expanduser()
            return p if p.is_file() else None
        return find_file(get_weights(self.weights))

    def to_dict(self) -> dict:
        """The card / config form: ``{weights, into, unused}`` and ``converter`` when there is one."""
        out = {"weights": self.weights, "into": self.into, "unused": list(self.unused)}
        return {**out, "converter": self.converter} if self.converter else out


def card_items(spec) -> tuple[StartItem, ...]:
    """A card's ``pretrained:`` value (None, a name, or a list of items) as items."""
    if spec in (None, False, "", ()):
        return ()
    if isinstance(spec, (str, os.PathLike, Mapping, StartItem)):
        spec = [spec]
    return tuple(StartItem.parse(s) for s in spec)


def is_off(pretrained) -> bool:
    """``pretrained`` means random init (False, None, "false", "none", …)."""
    return pretrained is None or pretrained is False or (isinstance(pretrained, str) and pretrained.lower() in _OFF)


def is_card(pretrained) -> bool:
    """``pretrained`` means the card's starting weights (True, "card", "true", …)."""
    return pretrained is True or (isinstance(pretrained, str) and pretrained.lower() in _CARD)


def resolve_start(pretrained, card=(), model: str | None = None) -> tuple[StartItem, ...]:
    """``pretrained`` (see the module docstring) → the items to load; ``card`` = the card's items."""
    card = card_items(card)
    if is_off(pretrained):
        return ()
    if is_card(pretrained):
        return card
    if isinstance(pretrained, (list, tuple)):
        return tuple(StartItem.parse(s) for s in pretrained)
    item = StartItem.parse(pretrained)
    for c in card:  # an entry the card names keeps the card's target submodule
        if c.weights == item.weights:
            return (c,)
    if not item.is_path and item.weights not in list_weights():
        if model is not None and item.weights == model:
            named = list_weights(model=model, released=True)
            if len(named) == 1:
                return (StartItem(named[0]),)
        raise KeyError(f"unknown pretrained weights {item.weights!r}: give True / 'card', False, a registered "
                       f"entry ({', '.join(list_weights())}) or a file path")
    return (item,)


def describe(item: StartItem, check_hash: bool = True) -> dict:
    """One row of the dry run: ``{entry, file, found, target, size, sha256_ok, released, source}`` (never raises)."""
    from .load import sha256_of

    entry = item.entry
    path = item.file()
    row = {"entry": entry.name if entry else None, "file": str(path) if path else (
        item.weights if item.is_path else str(entry.search_paths()[0]) if entry else item.weights),
        "found": path is not None, "target": item.into or "(whole model)", "converter": item.converter,
        "size": path.stat().st_size if path else None,
        "expected_size": entry.size if entry else None, "sha256": entry.sha256 if entry else None,
        "sha256_ok": None, "released": entry.released if entry else None,
        "source": entry.source if entry else "your file"}
    if path is not None and entry is not None:
        if entry.size is not None and row["size"] != entry.size:
            row["sha256_ok"] = False
        elif entry.sha256 is not None and check_hash:
            row["sha256_ok"] = sha256_of(path) == entry.sha256
    return row


def plan_start(items: Iterable[StartItem], check_hash: bool = True) -> list[dict]:
    return [describe(i, check_hash) for i in items]


def missing_message(items: Iterable[StartItem], what: str = "this run", training: bool = True) -> str | None:
    """The one message naming every missing file (name, size, sha256, where its authors publish it, README
    section), or None. ``training``: a training run, which may start from random init instead (said so); a
    model built to predict or evaluate (``training=False``) cannot, so the message only says where to get it."""
    lines = []
    for item in items:
        if item.file() is not None:
            continue
        entry = item.entry
        target = item.into or "the whole model"
        if entry is None:
            lines.append(f"  - {item.weights} (your file, for {target}): not found")
            continue
        size = f"{entry.size:,} bytes" if entry.size else "size unknown"
        digest = f"sha256 {entry.sha256}" if entry.sha256 else "sha256 unknown"
        where = " or ".join(str(p) for p in entry.search_paths())
        status = " NOT released by its authors;" if not entry.released else ""
        lines.append(f"  - {entry.filename} (entry {entry.name}, for {target}; {size}, {digest}):{status} "
                     f"put it at {where}. Where to get it: {entry.source}")
    if not lines:
        return None
    if not training:
        return (f"{what} needs weights that are not on this machine:\n" + "\n".join(lines)
                + f"\nSee {README_SECTION}; nothing is downloaded at run time.")
    return (f"{what} starts from pretrained weights that are not on this machine:\n" + "\n".join(lines)
            + f"\nSee {README_SECTION}; nothing is downloaded at run time. To train from random init instead "
              f"(the paper's number is then not expected): {OPT_OUT}.")


def require_start_files(items: Iterable[StartItem], what: str = "this run", training: bool = True) -> None:
    """Raise one :class:`~ferlib.weights.WeightsNotFoundError` listing every missing file (see :func:`missing_message`)."""
    from .load import WeightsNotFoundError

    msg = missing_message(list(items), what, training)
    if msg:
        raise WeightsNotFoundError(msg)


def load_start(model, items: Iterable[StartItem], verify: bool = True) -> list:
    """Load every item into ``model`` (missing files are reported together first); returns the LoadReports."""
    from .load import load_pretrained

    items = list(items)
    require_start_files(items, f"{type(model).__name__}", training=False)  # train() checked its own files first
    reports = []
    for item in items:
        target = item.entry if item.entry is not None and not item.is_path else item.weights
        reports.append(load_pretrained(model, target, prefix=item.into, converter=item.converter,
                                       unused=item.unused, verify=verify))
    model.starting_weights = tuple(items)
    return reports
