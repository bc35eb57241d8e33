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


# Registry of released checkpoints and the loader (after the converter API, which models import).
from .registry import (  # noqa: E402
    README_SECTION,
    WeightsEntry,
    find_file,
    get_weights,
    list_weights,
    pretrained_dirs,
    register_weights,
    weights_table_markdown,
)
from .load import (  # noqa: E402
    DroppedKeysWarning,
    KeyMismatchError,
    LoadReport,
    PretrainedWeightsError,
    UnsafeCheckpointError,
    WeightsIntegrityError,
    WeightsNotFoundError,
    load_pretrained,
    read_checkpoint,
    unwrap_state,
    verify_file,
)
