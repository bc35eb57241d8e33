"""Recipe transforms applied to whole uint8 batches on the training device (torchvision.transforms.v2).

``build_batch_transform(recipe, train)`` returns a callable ``uint8 [B,3,H,W] → float [B,3,S,S]``
(S = ``recipe.input_size``): augmentations (train only), colour order, scaling to [0,1] and
normalisation with the recipe's mean/std. Running it on the GPU batch avoids per-sample CPU work.
"""
from __future__ import annotations

import torch
from torchvision.transforms import v2


def _augmentations(recipe) -> list:
    kw = recipe.transform_kwargs or {}
    size = recipe.input_size
    out = []
    for name in recipe.train_transforms:
        if name == "hflip":
            out.append(v2.RandomHorizontalFlip())
        elif name == "random_crop":
            out.append(v2.RandomCrop(size, padding=kw.get("crop_padding", 4)))
        elif name == "random_resized_crop":
            out.append(v2.RandomResizedCrop(size, scale=tuple(kw.get("crop_scale", (0.8, 1.0))), antialias=True))
        elif name == "rotation":
            out.append(v2.RandomRotation(kw.get("degrees", 10)))
        elif name == "color_jitter":
            out.append(v2.ColorJitter(*kw.get("jitter", (0.2, 0.2, 0.2, 0.0))))
        elif name == "random_erasing":
            continue  # applied after normalisation, below
        else:
            raise ValueError(f"unknown train transform {name!r} in recipe {recipe.paper}/{recipe.dataset}")
    return out


class BatchTransform(torch.nn.Module):
    """Per-sample random augmentations on a batch, then colour order and normalisation."""

    def __init__(self, recipe, train: bool):
        super().__init__()
        self.size = recipe.input_size
        self.bgr = recipe.color_order.upper() == "BGR"
        self.augment = v2.Compose(_augmentations(recipe)) if train else None
        self.erasing = v2.RandomErasing(**(recipe.transform_kwargs or {}).get("erasing", {})) \
            if train and "random_erasing" in recipe.train_transforms else None
        self.register_buffer("mean", torch.tensor(recipe.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(recipe.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = v2.functional.resize(x, [self.size, self.size], antialias=True)
        if self.augment is not None:  # v2 draws one set of parameters per call: loop for per-sample randomness
            x = torch.stack([self.augment(xi) for xi in x])
        if self.bgr:
            x = x.flip(1)
        x = (x.float() / 255.0 - self.mean.to(x.device)) / self.std.to(x.device)
        if self.erasing is not None:
            x = torch.stack([self.erasing(xi) for xi in x])
        return x


def build_batch_transform(recipe, train: bool) -> BatchTransform:
    return BatchTransform(recipe, train)
