"""Optimisers: the recipe's optimiser and LR schedule (:mod:`.factory`), and SAM (:mod:`.sam`, FERMam, POSTER),
which is not in torch.optim."""
from .factory import apply_schedule, build_optimizer, build_scheduler
from .sam import SAM

__all__ = ["SAM", "apply_schedule", "build_optimizer", "build_scheduler"]
