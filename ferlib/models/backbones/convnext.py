"""ConvNeXt (Liu et al., "A ConvNet for the 2020s", CVPR 2022) in Meta's original layout.

The parameter names follow facebookresearch/ConvNeXt (``downsample_layers.{i}``, ``stages.{s}.{j}``
with ``dwconv / norm / pwconv1 / pwconv2 / gamma``, final ``norm``), which is the layout MFER
(XuJ1E/MFER ``model.py``) copies; timm renames every key (``stem``, ``stages.{s}.blocks.{j}.conv_dw``,
…), so it is not used here. MFER's variant has no classification head and may append one extra
module at the end of a stage (its DS attention): pass ``stage_tail`` for that.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ferlib.models.registry import ModelOutput, register_model


class LayerNorm(nn.Module):
    """LayerNorm over channels for NHWC (``channels_last``) or NCHW (``channels_first``) tensors.

    ``channels_first`` normalises over C with the biased variance (as ConvNeXt's own class does);
    parameters are ``weight`` / ``bias`` [C].
    """

    def __init__(self, num_channels: int, eps: float = 1e-6, data_format: str = "channels_last"):
        super().__init__()
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(f"data_format must be 'channels_last' or 'channels_first', got {data_format!r}")
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps
        self.data_format = data_format

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.data_format == "channels_last":
            return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, data_format={self.data_format}"


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero the whole residual branch of a sample with probability ``p``, rescale the rest."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p:.4f}"


class Block(nn.Module):
    """ConvNeXt block: dwconv 7×7 → NHWC → LN → Linear(d, 4d) → GELU → Linear(4d, d) → ×gamma → NCHW, + input.

    [B, d, H, W] → [B, d, H, W]. ``gamma`` (layer scale) is omitted when ``layer_scale_init_value`` ≤ 0.
    """

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale_init_value: float = 1e-6):
        super().__init__()
        if layer_scale_init_value > 0:
            # Registered first so that, as upstream, ``gamma`` leads the block's state-dict entries.
            self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
        else:
            self.gamma = None
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        if self.gamma is not None:
            y = self.gamma * y
        return x + self.drop_path(y.permute(0, 3, 1, 2))


STEMS = ("patchify", "resnet")


class ConvNeXt(nn.Module):
    """ConvNeXt trunk without a classifier: image [B, 3, H, W] → LN(GAP(last stage)) [B, dims[-1]].

    Args:
        depths, dims: blocks and channels per stage (ConvNeXt-B: [3, 3, 27, 3], [128, 256, 512, 1024]).
        drop_path_rate: stochastic depth, linear in the block index from 0 to this value over the
            ``sum(depths)`` ConvNeXt blocks (modules added by ``stage_tail`` get none).
        layer_scale_init_value: initial ``gamma`` (1e-6).
        stage_tail: ``stage_tail(stage_index, dim)`` → a module appended after the stage's blocks, or
            None. MFER appends its DS attention to stages 2 and 3 (keys ``stages.2.27``, ``stages.3.3``).
        stem: ``"patchify"`` (ConvNeXt's 4×4 stride-4 conv + channels-first LayerNorm) or ``"resnet"``
            (7×7 stride-2 conv → BatchNorm → ReLU → 3×3 stride-2 max-pool, ResNet's stem; also stride 4).
            ``"resnet"`` is not ConvNeXt: MFER's synthetic CPU demo uses it because a narrow
            ConvNeXt with the patchify stem did not learn the synthetic faces from scratch
            (recipes/mfer.yaml).
    Input sides must be multiples of 32 (stride 4 stem, three stride-2 downsamplings).
    """

    def __init__(
        self,
        in_chans: int = 3,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        stage_tail: Callable[[int, int], nn.Module | None] | None = None,
        stem: str = "patchify",
    ):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"ConvNeXt needs 4 stages; got depths={list(depths)}, dims={list(dims)}")
        self.depths, self.dims = list(depths), list(dims)
        self.num_features = dims[-1]
        self.downsample_layers = nn.ModuleList()
        if stem == "patchify":
            first = [nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4), LayerNorm(dims[0], 1e-6, "channels_first")]
        else:
            first = [nn.Conv2d(in_chans, dims[0], kernel_size=7, stride=2, padding=3), nn.BatchNorm2d(dims[0]),
                     nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=3, stride=2, padding=1)]
        self.downsample_layers.append(nn.Sequential(*first))
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(LayerNorm(dims[i], 1e-6, "channels_first"), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2))
            )
        # on the CPU explicitly, so that the model also builds under ``torch.device("meta")`` (ablations check it)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.stages = nn.ModuleList()
        cur = 0
        for s in range(4):
            mods = [Block(dims[s], rates[cur + j], layer_scale_init_value) for j in range(depths[s])]
            tail = stage_tail(s, dims[s]) if stage_tail is not None else None
            if tail is not None:
                mods.append(tail)
            self.stages.append(nn.Sequential(*mods))
            cur += depths[s]
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.apply(_init_weights)

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] → last stage map [B, dims[-1], H/32, W/32]."""
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] → pooled, normalised feature [B, dims[-1]]."""
        return self.norm(self.forward_maps(x).mean((-2, -1)))


def _init_weights(m: nn.Module) -> None:
    # ConvNeXt init: truncated normal (std 0.02, cut at ±2) for conv / linear weights, zero bias.
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(m.weight, std=0.02, a=-2.0, b=2.0)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class ConvNeXtBackbone(ConvNeXt):
    """The trunk behind ``create_model``: ``ModelOutput(logits=None, features=[B, C], extras={"feature_map"})``."""

    def forward(self, x: torch.Tensor) -> ModelOutput:
        fmap = self.forward_maps(x)
        return ModelOutput(None, self.norm(fmap.mean((-2, -1))), {"feature_map": fmap})


CONVNEXT_BASE = {"depths": (3, 3, 27, 3), "dims": (128, 256, 512, 1024)}
CONVNEXT_TINY = {"depths": (3, 3, 9, 3), "dims": (96, 192, 384, 768)}


@register_model
def convnext_base(num_classes=None, **kwargs) -> ConvNeXtBackbone:
    """ConvNeXt-B trunk, no head: [3, 3, 27, 3] / [128, 256, 512, 1024], 87,566,464 parameters."""
    return ConvNeXtBackbone(**{**CONVNEXT_BASE, **kwargs})


@register_model
def convnext_tiny(num_classes=None, **kwargs) -> ConvNeXtBackbone:
    """ConvNeXt-T trunk, no head: [3, 3, 9, 3] / [96, 192, 384, 768]."""
    return ConvNeXtBackbone(**{**CONVNEXT_TINY, **kwargs})
