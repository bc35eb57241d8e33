"""One optimiser update from one or more micro-batches: accumulation, SAM, clipping, fp16 scaling, EMA.

Gradient accumulation (``accumulate = K``) gives the update of one batch of K·B images: micro-batch i
(n_i images, mean loss L_i) back-propagates L_i · n_i / (K·B); if the group is cut short (end of the
epoch) the summed gradient is rescaled by K·B / Σn_i. Either way the gradient is the mean over all the
images of the group, as with one big batch. (BatchNorm still sees micro-batches of B: its statistics are
not those of a K·B batch.)

SAM with accumulation (``recipe.sam``): the ascent direction is the accumulated gradient of the whole
group at w; every micro-batch of the group is then run again at w + e and its gradient accumulated the
same way; the base optimiser steps once with that. This is SAM on a K·B batch, exactly (micro-batches
are kept until the update; they are uint8-derived float tensors already on the device).

Gradient clipping (``recipe.grad_clip``, global L2 norm) applies to the gradient the base optimiser
uses: for SAM the one taken at w + e (clipping the ascent gradient would not change e = ρ·g/‖g‖).
"""
from __future__ import annotations

import contextlib

import torch

from .distributed import average_gradients


def resolve_precision(device: torch.device, precision: str) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision not in ("fp32", "tf32", "bf16", "fp16"):
        raise ValueError(f"precision must be auto, fp32, tf32, bf16 or fp16, got {precision!r}")
    return precision


def autocast(device: torch.device, precision: str):
    precision = resolve_precision(device, precision)
    if precision in ("fp32", "tf32"):  # tf32: float32 tensors, TF32 products (ferlib.engine.env.backend_flags)
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device.type, dtype=dtype)


class Stepper:
    """Feeds micro-batches (:meth:`micro`) and updates the weights at group boundaries.

    ``net`` is what runs forward (maybe DDP / compiled), ``loss`` the paper's loss module, ``params``
    everything the optimiser updates, ``loss_params`` those DDP does not synchronise (averaged here).
    """

    def __init__(self, net, loss, optimizer, params, loss_params, device, precision: str = "auto",
                 accumulate: int = 1, batch_size: int = 1, grad_clip: float | None = None, ema=None,
                 ema_model=None):
        self.net, self.loss, self.optimizer = net, loss, optimizer
        self.params, self.loss_params = list(params), list(loss_params)
        self.device, self.precision = device, resolve_precision(device, precision)
        self.k, self.full = max(1, int(accumulate)), max(1, int(accumulate)) * batch_size
        self.grad_clip, self.ema, self.ema_model = grad_clip, ema, ema_model
        self.sam = hasattr(optimizer, "first_step")
        if self.sam and self.precision == "fp16":
            raise ValueError("SAM with fp16 loss scaling is not supported; use precision bf16 or fp32")
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")
        self.pending: list[tuple[torch.Tensor, torch.Tensor, int]] = []
        self.count = 0  # images in the current group

    def _sync(self, last: bool):
        """DDP all-reduces gradients only on the group's last backward."""
        if last or not hasattr(self.net, "no_sync"):
            return contextlib.nullcontext()
        return self.net.no_sync()

    def micro(self, x: torch.Tensor, y: torch.Tensor, boundary: bool):
        """Forward + backward of one micro-batch; updates when ``boundary`` (group full or epoch over).

        Returns ``(loss tensor (detached), model output, updated: bool)``.
        """
        n = int(y.shape[0])
        with self._sync(boundary):
            with autocast(self.device, self.precision):
                out = self.net(x)
                value = self.loss(out, y)
            self.scaler.scale(value * (n / self.full) if self.k > 1 else value).backward()
        self.count += n
        if self.sam:
            self.pending.append((x, y, n))
        if not boundary:
            return value.detach(), out, False
        self._update()
        return value.detach(), out, True

    def _clip(self) -> None:
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)

    def _update(self) -> None:
        if self.k > 1 and self.count != self.full:  # a short last group: gradient = mean over the images it had
            for p in self.params:
                if p.grad is not None:
                    p.grad.mul_(self.full / self.count)
        average_gradients(self.loss_params)
        if self.sam:
            self.optimizer.first_step(zero_grad=True)
            for i, (x, y, n) in enumerate(self.pending):
                with self._sync(i == len(self.pending) - 1):
                    with autocast(self.device, self.precision):
                        value = self.loss(self.net(x), y)
                    (value * (n / self.count) if self.k > 1 else value).backward()
            average_gradients(self.loss_params)
            self._clip()
            self.optimizer.second_step(zero_grad=True)
        else:
            self.scaler.unscale_(self.optimizer)
            self._clip()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update_parameters(self.ema_model)
        self.pending.clear()
        self.count = 0
