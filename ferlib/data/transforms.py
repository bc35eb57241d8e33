"""Recipe transforms applied to whole uint8 batches on the training device (torchvision.transforms.v2).

``build_batch_transform(recipe, train)`` returns a callable ``uint8 [B,3,H,W] → float [B,3,S,S]``
(S = ``recipe.input_size``): augmentations (train only, random per sample), colour order, scaling to
[0,1] and normalisation with the recipe's mean/std. Every random step draws its parameters per image as
torchvision's transform does and applies them to the whole batch (:mod:`ferlib.data.batched_aug`): no
per-sample Python work and no host synchronisation, so on a GPU the transform runs asynchronously.

Step names for ``recipe.train_transforms`` (options from ``recipe.transform_kwargs``):

=====================  ==========================================================================
``resize``             shorter side → ``resize_to`` (default S), e.g. GReFEL's 246 before a crop
``random_crop``        S×S crop, ``crop_padding`` (default 4) zero padding
``random_resized_crop``  ``crop_scale`` (default (0.8, 1)), ``crop_ratio`` (default (3/4, 4/3))
``center_crop``        S×S centre crop
``hflip`` / ``vflip``  p = 0.5
``rotation``           ± ``degrees`` (default 10)
``affine``             ``degrees`` (default 0), ``shear`` (default 15), ``translate`` (default None)
``perspective``        ``perspective`` distortion (default 0.3), p = 0.5
``color_jitter``       ``jitter`` = (brightness, contrast, saturation, hue), default (0.2, 0.2, 0.2, 0)
``gaussian_noise``     additive N(0, ``noise_std``²) on 0..255 values, clipped (default std √30)
``basic_aug``          FERMam/MMFRM dataset aug: with p = 0.5, a flip or Gaussian noise (std √30), 50/50
``random_erasing``     after normalisation, ``erasing`` = RandomErasing kwargs (e.g. {scale: [0.02, 0.1]})
=====================  ==========================================================================

``recipe.test_transforms`` accepts ``resize_center_crop`` (shorter side → ``eval_resize``, default
⌊S·8/7⌋, then centre crop; EMO-Net's Resize 256 → CenterCrop 224); by default evaluation resizes to S×S.
``transform_kwargs.augment_at_stored_size`` = true runs the train steps on the stored image and resizes to
S×S after them (MMFRM: basic_aug on RAF-DB's 100×100 crop, as the authors' data.py does before its resize).
``recipe.color_order`` = ``"BGR"`` swaps channels after augmentation (FERMam's cv2-read RAF-DB, docs/papers/fermam.md §12).
"""
from __future__ import annotations

import math

import torch
from torchvision.transforms import v2

from .batched_aug import (BatchedAffine, BatchedColorJitter, BatchedPerspective, BatchedRandomErasing,
                          BatchedRandomResizedCrop, BatchedRotation)

NOISE_STD = math.sqrt(30.0)  # FERMam / MMFRM basic_aug: variance 30
_SELF_SIZED = ("resize", "random_resized_crop")


class GaussianNoise(torch.nn.Module):
    """Additive Gaussian noise on a uint8 image [3,H,W] (0..255 scale), clipped and cast back to uint8."""

    def __init__(self, std: float = NOISE_STD):
        super().__init__()
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noisy = x.float() + torch.randn(x.shape, device=x.device) * self.std
        return noisy.clamp_(0, 255).to(x.dtype) if x.dtype == torch.uint8 else noisy.clamp_(0, 255)


class BasicAug(torch.nn.Module):
    """FERMam / MMFRM ``basic_aug``: with probability 0.5, either a horizontal flip or Gaussian noise (50/50)."""

    def __init__(self, std: float = NOISE_STD):
        super().__init__()
        self.noise = GaussianNoise(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.rand(()) > 0.5:
            return x.flip(-1) if torch.rand(()) < 0.5 else self.noise(x)
        return x


class BatchedHFlip(torch.nn.Module):
    """Flip each image of a batch [B,C,H,W] along ``dim`` with probability ``p`` (one draw per image).

    One ``gather`` with per-image indices (reversed for the flipped images): no host sync, no mask indexing."""

    def __init__(self, p: float = 0.5, dim: int = -1):
        super().__init__()
        self.p, self.dim = p, dim

    def sample(self, B: int, H: int = 0, W: int = 0, device=None) -> dict:
        """``{"flip": bool [B]}``."""
        return {"flip": torch.rand(B, device=device) < self.p}

    def apply(self, x: torch.Tensor, prm: dict) -> torch.Tensor:
        # one gather with per-image indices along ``dim`` (reversed where flipped): a single new tensor
        n, dim = x.shape[self.dim], self.dim % x.dim()
        ar = torch.arange(n, device=x.device)
        idx = torch.where(prm["flip"][:, None], n - 1 - ar, ar)  # [B, n]
        shape = [x.shape[0]] + [n if d == dim else 1 for d in range(1, x.dim())]
        return x.gather(dim, idx.view(shape).expand(x.shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x, self.sample(x.shape[0], device=x.device))


class BatchedRandomCrop(torch.nn.Module):
    """Zero-pad by ``padding`` then take an independent random ``size``×``size`` crop of each image."""

    def __init__(self, size: int, padding: int = 0):
        super().__init__()
        self.size, self.padding = size, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, s = self.padding, self.size
        if p:
            x = torch.nn.functional.pad(x, (p, p, p, p))
        B, C, H, W = x.shape
        if H < s or W < s:
            x = torch.nn.functional.pad(x, (0, max(0, s - W), 0, max(0, s - H)))
            B, C, H, W = x.shape
        oy = torch.randint(0, H - s + 1, (B,), device=x.device)
        ox = torch.randint(0, W - s + 1, (B,), device=x.device)
        ar = torch.arange(s, device=x.device)
        # two gathers with per-image offsets (rows, then columns); the index tensors are broadcast views
        rows = (oy[:, None] + ar).view(B, 1, s, 1).expand(B, C, s, W)
        cols = (ox[:, None] + ar).view(B, 1, 1, s).expand(B, C, s, s)
        return x.gather(2, rows).gather(3, cols)


class BatchedNoise(torch.nn.Module):
    """Gaussian noise on a whole uint8 batch, applied to each image with probability ``p``."""

    def __init__(self, std: float = NOISE_STD, p: float = 1.0):
        super().__init__()
        self.std, self.p = std, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noisy = (x.float() + torch.randn(x.shape, device=x.device) * self.std).clamp_(0, 255).to(x.dtype)
        if self.p >= 1:
            return noisy
        m = (torch.rand(x.shape[0], device=x.device) < self.p).view(-1, 1, 1, 1)
        return torch.where(m, noisy, x)


class BatchedBasicAug(torch.nn.Module):
    """:class:`BasicAug` on a batch: per image, unchanged (p 0.5), flipped (0.25) or noisy (0.25)."""

    def __init__(self, std: float = NOISE_STD):
        super().__init__()
        self.std = std

    def sample(self, B: int, H: int = 0, W: int = 0, device=None) -> dict:
        """``{"kind": int64 [B]}``: 0 unchanged (p 0.5), 1 flipped (0.25), 2 noisy (0.25)."""
        u = torch.rand(B, device=device)
        return {"kind": torch.where(u < 0.25, 1, torch.where(u < 0.5, 2, 0))}

    def apply(self, x: torch.Tensor, prm: dict) -> torch.Tensor:
        kind = prm["kind"]
        noisy = torch.randn(x.shape, device=x.device).mul_(self.std).add_(x).clamp_(0, 255).to(x.dtype)
        flipped = BatchedHFlip().apply(x, {"flip": kind == 1})
        return torch.where((kind == 2).view(-1, 1, 1, 1), noisy, flipped)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x, self.sample(x.shape[0], device=x.device))


def _erasing_kwargs(recipe) -> dict:
    erasing = dict((recipe.transform_kwargs or {}).get("erasing", {}))
    for k in ("scale", "ratio"):
        if k in erasing:
            erasing[k] = tuple(erasing[k])
    return erasing


def _batched_step(name: str, recipe):
    """The whole-batch module of one step: one draw per image, no Python loop over images, no host sync
    (None for random_erasing, which runs after normalisation). Same options as :func:`_v2_step`."""
    kw = recipe.transform_kwargs or {}
    size = recipe.input_size
    if name == "resize":  # deterministic: torchvision's resize of the whole batch
        return v2.Resize(kw.get("resize_to", size), antialias=True)
    if name == "center_crop":
        return v2.CenterCrop(size)
    if name == "hflip":
        return BatchedHFlip(0.5, -1)
    if name == "vflip":
        return BatchedHFlip(0.5, -2)
    if name == "random_crop":
        return BatchedRandomCrop(size, kw.get("crop_padding", 4))
    if name == "random_resized_crop":
        return BatchedRandomResizedCrop(size, scale=kw.get("crop_scale", (0.8, 1.0)),
                                        ratio=kw.get("crop_ratio", (3 / 4, 4 / 3)))
    if name == "rotation":
        return BatchedRotation(kw.get("degrees", 10))
    if name == "affine":
        return BatchedAffine(degrees=kw.get("affine_degrees", 0), shear=kw.get("shear", 15),
                             translate=kw.get("translate"))
    if name == "perspective":
        return BatchedPerspective(distortion_scale=kw.get("perspective", 0.3))
    if name == "color_jitter":
        return BatchedColorJitter(*kw.get("jitter", (0.2, 0.2, 0.2, 0.0)))
    if name == "gaussian_noise":
        return BatchedNoise(kw.get("noise_std", NOISE_STD))
    if name == "basic_aug":
        return BatchedBasicAug(kw.get("noise_std", NOISE_STD))
    return None


def _pipeline(recipe) -> list:
    """``[(True, module)]`` for the recipe's train steps before normalisation, in order: every step runs
    on the whole batch (the flag stays for callers that unpacked it when some steps ran per image)."""
    out = []
    for name in recipe.train_transforms:
        if _v2_step(name, recipe) is None:  # validates the name
            continue
        out.append((True, _batched_step(name, recipe)))
    return out


def _v2_step(name: str, recipe):
    """torchvision's per-image v2 module of one step: the reference each batched step reproduces (parity
    checks, distribution tests). None for random_erasing, which runs after normalisation
    (``v2.RandomErasing(**_erasing_kwargs(recipe))``)."""
    kw = recipe.transform_kwargs or {}
    size = recipe.input_size
    if name == "resize":
        return v2.Resize(kw.get("resize_to", size), antialias=True)
    if name == "hflip":
        return v2.RandomHorizontalFlip()
    if name == "vflip":
        return v2.RandomVerticalFlip()
    if name == "random_crop":
        return v2.RandomCrop(size, padding=kw.get("crop_padding", 4), pad_if_needed=True)
    if name == "center_crop":
        return v2.CenterCrop(size)
    if name == "random_resized_crop":
        return v2.RandomResizedCrop(size, scale=tuple(kw.get("crop_scale", (0.8, 1.0))),
                                    ratio=tuple(kw.get("crop_ratio", (3 / 4, 4 / 3))), antialias=True)
    if name == "rotation":
        return v2.RandomRotation(kw.get("degrees", 10))
    if name == "affine":
        return v2.RandomAffine(degrees=kw.get("affine_degrees", 0), shear=kw.get("shear", 15),
                               translate=kw.get("translate"))
    if name == "perspective":
        return v2.RandomPerspective(distortion_scale=kw.get("perspective", 0.3))
    if name == "color_jitter":
        return v2.ColorJitter(*kw.get("jitter", (0.2, 0.2, 0.2, 0.0)))
    if name == "gaussian_noise":
        return GaussianNoise(kw.get("noise_std", NOISE_STD))
    if name == "basic_aug":
        return BasicAug(kw.get("noise_std", NOISE_STD))
    if name == "random_erasing":
        return None
    raise ValueError(f"unknown train transform {name!r} in recipe {recipe.paper}/{recipe.dataset}")


class BatchTransform(torch.nn.Module):
    """Per-sample random augmentations on a batch, then colour order and normalisation.

    Every step is a whole-batch tensor op (:func:`_batched_step`, :mod:`ferlib.data.batched_aug`): the
    transform never synchronises with the host, so on a GPU it queues behind the previous step's kernels."""

    def __init__(self, recipe, train: bool):
        super().__init__()
        self.size = recipe.input_size
        kw = recipe.transform_kwargs or {}
        self.bgr = recipe.color_order.upper() == "BGR"
        if recipe.color_order.upper() not in ("RGB", "BGR"):
            raise ValueError(f"color_order must be RGB or BGR, got {recipe.color_order!r}")
        steps = list(recipe.train_transforms) if train else []
        self.augment = torch.nn.ModuleList([m for _, m in _pipeline(recipe)]) if train and steps else None
        self.batched = [b for b, _ in _pipeline(recipe)] if train and steps else []
        # resize to S×S first unless the first step sets the size itself
        # or the card augments the image as stored (``augment_at_stored_size``: MMFRM's basic_aug adds its noise
        # to the 100×100 crop before the authors' Resize((112,112)); resizing first would smooth the noise)
        self.pre_resize = not (steps and (steps[0] in _SELF_SIZED or kw.get("augment_at_stored_size", False)))
        self.eval_crop = None
        if not train and "resize_center_crop" in (recipe.test_transforms or ()):
            self.pre_resize = False
            self.eval_crop = v2.Compose([v2.Resize(kw.get("eval_resize", self.size * 8 // 7), antialias=True),
                                         v2.CenterCrop(self.size)])
        # in place: it erases the freshly normalised batch, which nothing else holds
        self.erasing = (BatchedRandomErasing(**_erasing_kwargs(recipe), inplace=True)
                        if train and "random_erasing" in steps else None)
        self.register_buffer("mean", torch.tensor(recipe.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(recipe.std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_resize and (x.shape[-1] != self.size or x.shape[-2] != self.size):
            x = v2.functional.resize(x, [self.size, self.size], antialias=True)
        if self.eval_crop is not None:
            x = self.eval_crop(x)
        if self.augment is not None:
            for step in self.augment:
                x = step(x)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = v2.functional.resize(x, [self.size, self.size], antialias=True)
        if self.bgr:  # the channel swap and the float conversion in one pass into the new batch
            out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
            for c in range(3):
                out[:, c].copy_(x[:, 2 - c])
            x = out
        else:
            x = x.to(torch.float32, copy=True)
        # (x/255 - mean)/std as an in-place multiply and add (broadcast addcmul is far slower on CPU)
        x = x.mul_((1.0 / (255.0 * self.std)).to(x.device)).add_((-self.mean / self.std).to(x.device))
        if self.erasing is not None:
            x = self.erasing(x)
        return x


def build_batch_transform(recipe, train: bool) -> BatchTransform:
    return BatchTransform(recipe, train)
