"""The recipe's optimiser and per-epoch LR schedule (Adam, AdamW, SGD; SAM as a wrapper), which the engine builds."""
from __future__ import annotations

import math

import torch

from .sam import SAM

_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def build_optimizer(params, recipe) -> torch.optim.Optimizer:
    """The recipe's optimiser over ``params`` (tensors already on the training device).

    The fused implementation (one kernel over all parameters) is used on CPU and CUDA unless the
    recipe's ``optimizer_kwargs`` set ``fused`` / ``foreach``: the same update as the authors'
    per-parameter loop up to float rounding, and for EMO-Net 20 → 6 ms per CPU step.
    """
    name = recipe.optimizer.lower()
    if name not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {recipe.optimizer!r} in recipe {recipe.paper}; use one of {sorted(_OPTIMIZERS)}")
    params = list(params)
    kw = {"lr": recipe.lr, "weight_decay": recipe.weight_decay, **(recipe.optimizer_kwargs or {})}
    if "fused" not in kw and "foreach" not in kw and params and all(
            p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params):
        kw["fused"] = True
    if "betas" in kw:
        kw["betas"] = tuple(kw["betas"])
    if recipe.sam:
        return SAM(params, _OPTIMIZERS[name], rho=recipe.sam_rho, **kw)
    return _OPTIMIZERS[name](params, **kw)


def build_scheduler(optimizer, recipe, epochs: int):
    """A per-epoch LR schedule (stepped once per epoch), with optional linear warm-up epochs."""
    kind, kw = recipe.schedule, dict(recipe.schedule_kwargs or {})
    warm = int(recipe.warmup_epochs or 0)
    if kind is None:
        main = lambda e: 1.0  # noqa: E731
    elif kind == "exponential":
        gamma = kw.get("gamma", 0.98)
        main = lambda e: gamma ** e  # noqa: E731
    elif kind == "step":
        step, gamma = kw.get("step_size", 10), kw.get("gamma", 0.1)
        main = lambda e: gamma ** (e // step)  # noqa: E731
    elif kind == "multistep":
        miles, gamma = kw.get("milestones", []), kw.get("gamma", 0.1)
        main = lambda e: gamma ** sum(e >= m for m in miles)  # noqa: E731
    elif kind == "cosine":
        span, floor = max(1, epochs - warm), kw.get("eta_min_ratio", 0.0)
        main = lambda e: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(e, span) / span))  # noqa: E731
    else:
        raise ValueError(f"unknown schedule {kind!r} in recipe {recipe.paper}")

    def factor(epoch: int) -> float:
        if epoch < warm:
            return (epoch + 1) / (warm + 1)
        return main(epoch - warm)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def apply_schedule(scheduler) -> None:
    """Set every group's lr to this schedule's value at ``scheduler.last_epoch``.

    After ``load_state_dict`` the optimiser holds the lr the *saved* run computed; when the resumed run
    has another length (e.g. ``epochs`` raised from 1 to 2 with a cosine schedule) its own schedule wins.
    """
    e = scheduler.last_epoch
    for group, base, fn in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * fn(e)
    scheduler._last_lr = [g["lr"] for g in scheduler.optimizer.param_groups]
