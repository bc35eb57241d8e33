"""Efficient Channel Attention (ECA-Net, Wang et al. 2020) as EMO-Net uses it.

EMO-Net's "local attention block" (docs/papers/emonet.md §2.2) is an ECA module that returns the
channel *gate* rather than the gated tensor; the caller multiplies.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def eca_kernel_size(channels: int, b: int = 1, gamma: int = 2) -> int:
    """ECA's adaptive kernel size: ``t = int(|(log2(C) + b) / gamma|)``, made odd by adding 1.

    For EMO-Net's widths: 16, 24, 32, 64, 96 → 3; 160, 320 → 5.
    """
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class EfficientChannelAttention(nn.Module):
    """Channel gate ``sigmoid(conv1d(GAP(x)))`` [B, C, 1, 1] for x [B, C, H, W].

    The C pooled values are treated as a 1-channel sequence of length C and filtered by a
    bias-free Conv1d of kernel ``eca_kernel_size(C)`` (padding k // 2). Key: ``conv1.weight`` [1, 1, k].
    """

    def __init__(self, channels: int, b: int = 1, gamma: int = 2):
        super().__init__()
        k = eca_kernel_size(channels, b, gamma)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv1 = nn.Conv1d(1, 1, kernel_size=k, padding=k // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.avg_pool(x)                                   # [B, C, 1, 1]
        seq = pooled.squeeze(-1).transpose(-1, -2)                  # [B, 1, C]
        gate = self.conv1(seq).transpose(-1, -2).unsqueeze(-1)      # [B, C, 1, 1]
        return torch.sigmoid(gate)
