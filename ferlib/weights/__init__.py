"""Pretrained weights: the registry of released checkpoints, their safe loading, and key converters.

``convert_upstream(name, state)`` maps an upstream state dict (already unwrapped from
``state_dict`` / ``module.``) to ferlib keys. Models register a converter with
``@register_converter("name")`` (:mod:`ferlib.weights.converters`, a leaf) where they are defined;
without one the mapping is the identity, because ferlib keeps the authors' keys wherever it can.
This package never imports :mod:`ferlib.models`: the models import it.
"""
from __future__ import annotations

from .converters import convert_upstream, register_converter
from .registry import (
    README_SECTION,
    WeightsEntry,
    find_file,
    get_weights,
    list_weights,
    pretrained_dirs,
    register_weights,
    weights_table_markdown,
)
from .load import (
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
