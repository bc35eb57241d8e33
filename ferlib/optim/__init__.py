"""Optimizers that are not in torch.optim: SAM (FERMam, POSTER)."""
from .sam import SAM

__all__ = ["SAM"]
