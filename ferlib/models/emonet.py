"""EMO-Net (xiayu-cell/EMO-Net @ 9d4d6a3, ``model/emoNet.py``): MobileNetV2 with ECA and a fusion branch.

Every inverted-residual block gates its main branch with ECA (the paper's "local attention
block") and adds a shortcut on *every* block: identity where shapes match, otherwise a 1×1
conv + BN projection (the "feature fusion branch", upstream attribute ``dowmSample`` [sic]).
The shortcut is weighted by λ: upstream hard-codes 0.8, while the released checkpoints are
labelled λ = 0.5 / 0.6 (docs/papers/emonet.md §2.3, §9). State-dict keys equal ``emonet_keys.txt``.

Data flow for a 224×224 input (docs/papers/emonet.md §1)::

    x [B,3,224,224] → features.0 (ConvBNReLU 3→32, s2) → features.1–17 (blocks) [B,320,7,7]
      → features.18 (1×1 ConvBNReLU 320→1280) → global avg pool [B,1280]
      → Dropout(0.2) → Linear(1280→C) → logits [B,C]
"""
from __future__ import annotations

import torch
from torch import nn

from .layers.eca import EfficientChannelAttention
from .registry import ModelOutput, register_model

#: (expand ratio t, output channels c, repeats n, first stride s), docs/papers/emonet.md §11.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
#: Shortcut weight in the published forward.
LAMBDA_AS_CODED = 0.8


def _make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a width to a multiple of ``divisor`` without going below 90 % of it (MobileNetV2 rule)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNReLU(nn.Sequential):
    """Bias-free conv (padding (k−1)//2) [.0] → BatchNorm2d [.1] → ReLU6 [.2]."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """EMO-Net block: ``main ⊙ ECA(main) + λ · shortcut(x)`` (docs/papers/emonet.md §2.3), no activation after the sum.

    main = [1×1 expand ConvBNReLU if t ≠ 1] → 3×3 depthwise ConvBNReLU (stride) → 1×1 conv → BN.
    shortcut = x when stride 1 and in == out, else ``dowmSample`` (1×1 conv, stride, no bias → BN).
    x [B, in, H, W] → [B, out, H/stride, W/stride].
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int, lam: float = LAMBDA_AS_CODED):
        super().__init__()
        self.lam = lam
        hidden = in_ch * expand_ratio
        # Attribute order fixes the state-dict order: dowmSample, conv, channel (as upstream).
        if stride == 1 and in_ch == out_ch:
            self.dowmSample = None
        else:
            self.dowmSample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(in_ch, hidden, kernel_size=1))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)
        self.channel = EfficientChannelAttention(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.conv(x)
        main = main * self.channel(main)
        shortcut = x if self.dowmSample is None else self.dowmSample(x)
        return self.lam * shortcut + main


class EmoNet(nn.Module):
    """EMO-Net (upstream class ``MobileNetV2``): x [B,3,H,W] → ModelOutput(logits [B,C], pooled [B,1280]).

    Args:
        num_classes: 7 (RAF-DB, AffectNet-7) or 8 (AffectNet-8).
        lam: shortcut weight λ of every block; 0.8 as coded, 0.5 / 0.6 for the released checkpoints.
        alpha: width multiplier (1.0 upstream); round_nearest: channel rounding (8).
        drop_rate: dropout before the classifier (0.2 upstream).
    """

    def __init__(self, num_classes: int = 7, lam: float = LAMBDA_AS_CODED, alpha: float = 1.0,
                 round_nearest: int = 8, drop_rate: float = 0.2):
        super().__init__()
        in_ch = _make_divisible(32 * alpha, round_nearest)
        last_ch = _make_divisible(1280 * alpha, round_nearest)
        features: list[nn.Module] = [ConvBNReLU(3, in_ch, stride=2)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            out_ch = _make_divisible(c * alpha, round_nearest)
            for i in range(n):
                features.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t, lam))
                in_ch = out_ch
        features.append(ConvBNReLU(in_ch, last_ch, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(last_ch, num_classes))
        self.num_features = last_ch
        self._init_weights()

    def _init_weights(self) -> None:
        # Upstream's loop matches Conv2d, BatchNorm2d and Linear only: the ECA Conv1d keeps
        # PyTorch's default init (docs/papers/emonet.md §2.6).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @property
    def lam(self) -> float:
        """The shortcut weight λ shared by all blocks; assigning it updates every block."""
        return self.features[1].lam

    @lam.setter
    def lam(self, value: float) -> None:
        for m in self.features:
            if isinstance(m, InvertedResidual):
                m.lam = float(value)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        pooled = torch.flatten(self.avgpool(self.features(x)), 1)
        return ModelOutput(self.classifier(pooled), pooled, {})


@register_model
def emonet(num_classes: int = 7, lam: float = LAMBDA_AS_CODED, **kwargs) -> EmoNet:
    """EMO-Net; ``lam`` is the fusion-branch weight λ (0.8 as coded)."""
    return EmoNet(num_classes=num_classes, lam=lam, **kwargs)
