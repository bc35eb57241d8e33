"""MFER's DS attention: dynamic global + static local attention (Xu et al., TAFFC 2024, Fig. 2).

As coded upstream (XuJ1E/MFER ``model/attention.py``), which differs from Fig. 2 in two places:
the query path is Conv → GELU → LayerNorm (the figure draws Conv → LN → GELU) and the module adds
its input back (the figure has no residual). The 7×7 convolution is dense, not depthwise.
"""
from __future__ import annotations

import torch
from torch import nn


class DSAttention(nn.Module):
    """[B, d, H, W] → [B, d, H, W].

    With p the input in NHWC:
      value = Linear_v(p); key = MLP_k(p) ⊙ p (dynamic global; MLP d → d/8 → d with GELU);
      query = LN(GELU(Conv7×7(x))) (static local);
      out = softmax over the H·W positions of (query + key), ⊙ value, back to NCHW, + x.
    State-dict keys: ``key.0``, ``key.2``, ``value``, ``attn`` (the conv), ``norm`` (eps 1e-5).
    """

    def __init__(self, dim: int, kernel_size: int = 7, reduction: int = 8):
        super().__init__()
        self.key = nn.Sequential(nn.Linear(dim, dim // reduction), nn.GELU(), nn.Linear(dim // reduction, dim))
        self.value = nn.Linear(dim, dim)
        self.attn = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=kernel_size // 2)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = x.permute(0, 2, 3, 1)
        value = self.value(p).reshape(b, h * w, c)
        key = (self.key(p) * p).reshape(b, h * w, c)
        query = self.norm(self.act(self.attn(x)).permute(0, 2, 3, 1)).reshape(b, h * w, c)
        out = torch.softmax(query + key, dim=1) * value
        return out.reshape(b, h, w, c).permute(0, 3, 1, 2) + x
