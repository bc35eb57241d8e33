"""Models: backbones, layers, the five paper models and a small baseline, behind one registry.

Importing this package imports every model module, which registers its models (``@register_model``)
and the key converters of its checkpoints (``@register_converter``, :mod:`ferlib.weights.converters`).
"""
from . import backbones, baseline, emonet, fermam, grefel, mfer, mmfrm  # noqa: F401  (they register on import)
from .registry import ModelOutput, create_model, list_models, model_entrypoint, register_model

__all__ = ["ModelOutput", "create_model", "list_models", "model_entrypoint", "register_model"]
