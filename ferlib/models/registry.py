"""Model registry (timm-style): ``@register_model`` factories, ``create_model``, ``list_models``.

Every model returns :class:`ModelOutput` from ``forward``: ``logits`` [B, C], ``features`` [B, D]
(the embedding the paper classifies, used for t-SNE) and ``extras`` (a dict of anything else).
"""
from __future__ import annotations

import fnmatch
from typing import Callable, Dict, NamedTuple

import torch
from torch import nn

from ferlib.weights.start import load_start, resolve_start


class ModelOutput(NamedTuple):
    """What every ferlib model's ``forward`` returns (docs/design.md §3)."""

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


def create_model(name: str, num_classes: int | None = None, weights=False, **kwargs) -> nn.Module:
    """Build a registered model, optionally from starting weights (``ferlib.weights.start``).

    ``weights``: False (random init), True (the model's one released entry), a ``ferlib.weights``
    entry name, a file path, or a list of starting-weights items (entry → submodule). (``pretrained`` is the
    word of cards, ``train()``, the CLI and notebooks: the card's starting weights; ``ferlib.weights.start``.) Like
    torchvision's builders, a whole-model entry supplies the arguments its file needs
    (``model_kwargs``: e.g. EMO-Net's ``lam``; ``num_classes`` from its categories) unless given here.
    """
    if name not in _MODELS:
        close = fnmatch.filter(_MODELS, f"*{name}*")
        hint = f" Did you mean {close}?" if close else ""
        raise KeyError(f"unknown model {name!r}; registered: {list_models()}.{hint}")
    items = ()
    if weights is not False and weights is not None:
        items = resolve_start(name if weights is True else weights, (), model=name)
        for item in items:
            entry = item.entry
            if entry is not None and not item.into and entry.model == name:
                for key, value in entry.model_kwargs.items():
                    if key == "num_classes":
                        num_classes = value if num_classes is None else num_classes
                    else:
                        kwargs.setdefault(key, value)
    model = _MODELS[name](num_classes=7 if num_classes is None else num_classes, **kwargs)
    if items:
        load_start(model, items)
    return model


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The registered factory of ``name`` (KeyError listing the registered names otherwise)."""
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; registered: {list_models()}")
    return _MODELS[name]
