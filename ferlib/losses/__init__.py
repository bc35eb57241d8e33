"""Losses, one class per loss, behind a small registry used by the recipes.

Contract: a loss is an ``nn.Module`` called as ``loss(output, target)`` with ``output`` the model's
:class:`~ferlib.models.ModelOutput` and ``target`` class indices [B] (or soft targets [B, C]); it
returns a scalar. A loss with parameters (centres, anchors) is optimised with the model; a loss whose
behaviour depends on the epoch implements ``set_epoch(epoch)``, which the engine calls; one that depends on
how far the run has got implements ``set_progress(fraction)`` (optimiser updates done / planned, 0 → 1),
called before every training step and recomputed on resume.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import nn

_LOSSES: Dict[str, Callable[..., nn.Module]] = {}


def register_loss(name: str):
    def deco(cls):
        if name in _LOSSES and _LOSSES[name] is not cls:
            raise ValueError(f"loss {name!r} is registered twice")
        _LOSSES[name] = cls
        return cls

    return deco


def list_losses() -> list[str]:
    return sorted(_LOSSES)


def loss_class(name: str) -> Callable[..., nn.Module]:
    """The registered class of loss ``name`` (KeyError listing the registered names otherwise)."""
    if name not in _LOSSES:
        raise KeyError(f"unknown loss {name!r}; registered: {list_losses()}")
    return _LOSSES[name]


def create_loss(name: str, **kwargs) -> nn.Module:
    return loss_class(name)(**kwargs)


@register_loss("cross_entropy")
class CrossEntropy(nn.Module):
    """Cross-entropy on ``output.logits``; soft targets [B, C] are accepted (FERPlus crossentropy mode)."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, output, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output.logits, target, label_smoothing=self.label_smoothing)


# Every loss module registers its losses on import (a new paper's loss is a new file); they need
# ``register_loss`` above, hence the discovery here.
from ferlib.discover import import_submodules  # noqa: E402

import_submodules(__name__, __path__)
