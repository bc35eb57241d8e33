"""Model registry (timm-style): ``@register_model`` factories, ``create_model``, ``list_models``.

Every model returns :class:`ModelOutput` from ``forward``: ``logits`` [B, C], ``features`` [B, D]
(the embedding the paper classifies, used for t-SNE) and ``extras`` (a dict of anything else).
"""
from __future__ import annotations

import fnmatch
from typing import Callable, Dict, NamedTuple

import torch
from torch import nn


class ModelOutput(NamedTuple):
    """What every ferlib model's ``forward`` returns (DESIGN §3)."""

    logits: torch.Tensor
    features: torch.Tensor
    extras: dict = {}


_MODELS: Dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a factory under its function name; ``create_model(name)`` then calls it."""
    name = fn.__name__
    if name in _MODELS and _MODELS[name] is not fn:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered models matching a shell pattern, e.g. ``"*ir50*"``."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def create_model(name: str, num_classes: int = 7, pretrained: bool | str = False, **kwargs) -> nn.Module:
    """Build a registered model; ``pretrained`` is an entry of ``ferlib.weights`` or a file path."""
    if name not in _MODELS:
        close = fnmatch.filter(_MODELS, f"*{name}*")
        hint = f" Did you mean {close}?" if close else ""
        raise KeyError(f"unknown model {name!r}; registered: {list_models()}.{hint}")
    model = _MODELS[name](num_classes=num_classes, **kwargs)
    if pretrained:
        from ferlib.weights import load_pretrained

        load_pretrained(model, pretrained if isinstance(pretrained, str) else name)
    return model
