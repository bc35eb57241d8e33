"""Models: backbones, layers, the five paper models and a small baseline, behind one registry.

Importing this package imports every module in it (:func:`ferlib.discover.import_submodules`); each
registers its models (``@register_model``) and the key converters of its checkpoints
(``@register_converter``, :mod:`ferlib.weights.converters`).
"""
from ferlib.discover import import_submodules

from .registry import ModelOutput, create_model, list_models, model_entrypoint, register_model

import_submodules(__name__, __path__)  # every model module registers its models: a new paper is a new file

__all__ = ["ModelOutput", "create_model", "list_models", "model_entrypoint", "register_model"]
