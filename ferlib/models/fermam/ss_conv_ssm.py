"""``SS_Conv_SSM`` (FERMam ``models/IR_MambaBackbone.py``; docs/papers/fermam.md §4): conv half ∥ SS2D half."""
from __future__ import annotations

import torch
from torch import nn

from .ss2d import SS2D

MODES = ("conv_ssm", "conv_only", "ssm_only")


class SSConvSSM(nn.Module):
    """Input and output [B, H, W, hidden_dim] (channels last); upstream ``SS_Conv_SSM(hidden_dim=512)``.

    Channels 0…C/2−1 go through ``conv_branch`` (NCHW: BN → 3×3 conv → BN → ReLU → 3×3 conv →
    BN → ReLU → 1×1 conv → ReLU, convs with bias), channels C/2…C−1 through ``ln`` → ``ss2d``
    (:class:`SS2D` with d_model = C/2). The halves are concatenated and channel-shuffled with two
    groups (output channel 2i+g = input channel g·C/2+i).

    ``shuffled_residual=False`` (default, upstream [quirk]): the *unshuffled* input is added to the
    shuffled output. True adds the input shuffled the same way (channel orders then agree).
    ``mode`` "conv_only" / "ssm_only" (upstream's ablations) pass the disabled half through.
    ``drop_path`` is built as upstream (Identity) and, as upstream, never applied.
    """

    def __init__(
        self,
        hidden_dim: int = 512,
        d_state: int = 16,
        mode: str = "conv_ssm",
        shuffled_residual: bool = False,
        **ss2d_kwargs,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        half = hidden_dim // 2
        self.mode, self.shuffled_residual = mode, shuffled_residual
        self.conv_branch = nn.Sequential(
            nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 3, padding=1),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 3, padding=1),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 1),
            nn.ReLU(inplace=True),
        )
        self.ln = nn.LayerNorm(half)
        self.ss2d = SS2D(d_model=half, d_state=d_state, **ss2d_kwargs)
        self.drop_path = nn.Identity()
        # The Conv-SSM ablation's disabled half never reaches the output: frozen (keys kept), so DDP runs it.
        if mode == "conv_only":
            for unused in (self.ln, self.ss2d):
                unused.requires_grad_(False)
        elif mode == "ssm_only":
            self.conv_branch.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right = x.chunk(2, dim=-1)
        if self.mode != "ssm_only":
            left = self.conv_branch(left.permute(0, 3, 1, 2).contiguous()).permute(0, 2, 3, 1)
        if self.mode != "conv_only":
            right = self.ss2d(self.ln(right))
        out = channel_shuffle(torch.cat([left, right], dim=-1), groups=2)
        return out + (channel_shuffle(x, 2) if self.shuffled_residual else x)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Channels-last shuffle: [..., C] with channel g·(C/groups)+i moved to i·groups+g."""
    *lead, c = x.shape
    return x.reshape(*lead, groups, c // groups).transpose(-1, -2).reshape(*lead, c)
