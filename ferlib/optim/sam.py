"""Sharpness-Aware Minimization (Foret et al., ICLR 2021) around any base optimizer.

FERMam (``data_preprocessing/sam.py``, inherited from POSTER; docs/papers/fermam.md §10) trains with
``SAM(model.parameters(), torch.optim.Adam, rho=0.05, adaptive=False, lr=4e-5)`` and two passes
per batch:

1. loss at w, backward; :meth:`SAM.first_step`: g = global L2 norm of all gradients,
   e = ρ · grad / (g + 1e-12) (ASAM when ``adaptive``: e = ρ · w² ⊙ grad / (‖|w| ⊙ grad‖ + 1e-12)),
   w ← w + e;
2. loss at w + e, backward; :meth:`SAM.second_step`: w ← w (restored exactly from a copy, as upstream),
   then the base step with the gradient taken at w + e.

``param_groups`` is the base optimizer's list, so LR schedulers built on the SAM object change
the base optimizer's learning rate. ``state_dict`` holds the base optimizer's state (Adam moments
included, which the upstream SAM does not save).
"""
from __future__ import annotations

from typing import Callable

import torch


class SAM(torch.optim.Optimizer):
    """``SAM(params, base_optimizer_cls, rho=0.05, adaptive=False, **base_kwargs)``."""

    def __init__(self, params, base_optimizer_cls: type, rho: float = 0.05, adaptive: bool = False, **base_kwargs):
        if rho < 0:
            raise ValueError(f"rho must be non-negative, got {rho}")
        super().__init__(params, dict(rho=rho, adaptive=adaptive, **base_kwargs))
        self.base_optimizer = base_optimizer_cls(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Move every parameter with a gradient to the worst-case neighbour w + e (ascent step)."""
        grad_norm = self._grad_norm()
        for group in self.param_groups:
            scale = group["rho"] / (grad_norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                e = p.grad * scale.to(p)
                if group["adaptive"]:
                    e = e * p.pow(2)
                # w is kept, not e: w + e − e differs from w by float rounding (ferlib.parity.fermam)
                self.state[p]["old_p"] = p.detach().clone()
                p.add_(e)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Return to w and take the base optimizer's step with the gradient computed at w + e."""
        for group in self.param_groups:
            for p in group["params"]:
                old = self.state[p].pop("old_p", None)
                if old is not None:
                    p.copy_(old)
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        """Both passes; ``closure`` must run forward + backward (without zeroing) and return the loss."""
        if closure is None:
            raise ValueError("SAM.step needs a closure that recomputes the loss and calls backward()")
        closure = torch.enable_grad()(closure)
        self.first_step(zero_grad=True)
        loss = closure()
        self.second_step()
        return loss

    def _grad_norm(self) -> torch.Tensor:
        grads = [
            ((p.abs() if group["adaptive"] else 1.0) * p.grad).norm(p=2)
            for group in self.param_groups
            for p in group["params"]
            if p.grad is not None
        ]
        if not grads:
            return torch.tensor(0.0)
        device = grads[0].device
        return torch.stack([g.to(device) for g in grads]).norm(p=2)

    def state_dict(self) -> dict:
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups
