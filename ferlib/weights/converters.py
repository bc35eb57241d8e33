"""Key converters from the authors' checkpoint layouts, by name (timm's ``pretrained_filter_fn``).

A leaf: it imports nothing of ferlib. Each model module registers its own converter where the model
is defined (``@register_converter("mfer")`` in ``ferlib/models/mfer.py``), so importing
:mod:`ferlib.models` registers them all and :mod:`ferlib.weights` never imports the models. A name
without a converter maps keys unchanged, because ferlib keeps the authors' keys wherever it can.
"""
from __future__ import annotations

from typing import Callable, Dict

_CONVERTERS: Dict[str, Callable] = {}


def register_converter(name: str):
    """Decorator: ``fn(state) -> state`` converts the upstream checkpoints of ``name``."""

    def deco(fn):
        _CONVERTERS[name] = fn
        return fn

    return deco


def convert_upstream(name: str, state):
    """Upstream state dict (or, for joined models, a dict of them) → ferlib state dict.

    Raises RuntimeError when no converter is registered at all: :mod:`ferlib.models` was not
    imported, and the identity would silently load the authors' keys unconverted.
    """
    if not _CONVERTERS:
        raise RuntimeError(f"no key converter is registered (converting {name!r}): import ferlib.models first, "
                           "whose model modules register them")
    fn = _CONVERTERS.get(name)
    return dict(state) if fn is None else fn(state)
