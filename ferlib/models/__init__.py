"""Models: backbones, layers, the five paper models and a small baseline, behind one registry."""
import importlib
import importlib.util

from .registry import ModelOutput, create_model, list_models, register_model

# Modules that register models on import.
_MODEL_MODULES = ("baseline", "backbones", "fermam", "mmfrm", "emonet", "grefel", "mfer")
for _name in _MODEL_MODULES:
    if importlib.util.find_spec(f"{__name__}.{_name}") is not None:
        importlib.import_module(f"{__name__}.{_name}")

__all__ = ["ModelOutput", "create_model", "list_models", "register_model"]
