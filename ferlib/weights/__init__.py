"""Pretrained weights: key converters from the authors' layouts (registry and loading come with it).

``convert_upstream(name, state)`` maps an upstream state dict (already unwrapped from
``state_dict`` / ``module.``) to ferlib keys. Models register a converter with
``@register_converter("name")``; without one the mapping is the identity, because ferlib keeps the
authors' keys wherever it can.
"""
from __future__ import annotations

from typing import Callable, Dict

_CONVERTERS: Dict[str, Callable] = {}


def register_converter(name: str):
    def deco(fn):
        _CONVERTERS[name] = fn
        return fn

    return deco


def convert_upstream(name: str, state):
    """Upstream state dict (or, for joined models, a dict of them) → ferlib state dict."""
    import ferlib.models  # noqa: F401  (registers the converters)

    fn = _CONVERTERS.get(name)
    return dict(state) if fn is None else fn(state)
