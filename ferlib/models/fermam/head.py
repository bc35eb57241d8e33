"""FERMam's classifier: SE gate on the fused token, then a linear head (``models/emotion_hyp.py``; §8)."""
from __future__ import annotations

import torch
from torch import nn


class SEBlock(nn.Module):
    """[B, C] → v ⊙ sigmoid(linear2(ReLU(linear1(v)))) with both linears C → C (upstream ``SE_block``)."""

    def __init__(self, input_dim: int = 512):
        super().__init__()
        self.linear1 = nn.Linear(input_dim, input_dim)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(input_dim, input_dim)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.linear2(self.relu(self.linear1(x))))


class ClassificationHead(nn.Module):
    """[B, C] → logits [B, num_classes] (upstream ``ClassificationHead``, key ``head.linear``)."""

    def __init__(self, input_dim: int = 512, num_classes: int = 7):
        super().__init__()
        self.linear = nn.Linear(input_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)
