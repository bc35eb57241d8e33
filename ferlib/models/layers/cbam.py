"""CBAM (Woo et al. 2018) as MMFRM's ``CBAM.py`` builds it (docs/papers/mmfrm.md §2.3).

Channel gate first (average- and max-pooled descriptors through one shared bias-free MLP of
1×1 convs, summed, sigmoid), then spatial gate (7×7 conv with bias over [channel mean, channel
max], sigmoid). Key names follow upstream: ``channel_attention.shared_MLP.{0,2}.weight``,
``spatial_attention.conv2d.{weight,bias}``.
"""
from __future__ import annotations

import torch
from torch import nn


class ChannelAttentionModule(nn.Module):
    """Channel gate [B, C, 1, 1] for x [B, C, H, W]; hidden width ``C // ratio``."""

    def __init__(self, channels: int, ratio: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.shared_MLP = nn.Sequential(
            nn.Conv2d(channels, channels // ratio, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // ratio, channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.shared_MLP(self.avg_pool(x)) + self.shared_MLP(self.max_pool(x)))


class SpatialAttentionModule(nn.Module):
    """Spatial gate [B, 1, H, W]: 7×7 conv (with bias) on concat(mean_c(x), max_c(x))."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv2d = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        peak = x.amax(dim=1, keepdim=True)
        return torch.sigmoid(self.conv2d(torch.cat([mean, peak], dim=1)))


class CBAM(nn.Module):
    """x ← x · channel_gate(x); x ← x · spatial_gate(x). Shape preserved [B, C, H, W]."""

    def __init__(self, channels: int, ratio: int = 16):
        super().__init__()
        self.channel_attention = ChannelAttentionModule(channels, ratio)
        self.spatial_attention = SpatialAttentionModule()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel_attention(x)
        return x * self.spatial_attention(x)
