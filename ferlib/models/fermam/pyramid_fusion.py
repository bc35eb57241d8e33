"""Pyramid Mamba fusion (FERMam ``models/pyramid_mamba_fusion_block.py``; docs/papers/fermam.md §6)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .asfr import ASFRSS2D


class PyramidMambaFusionBlock(nn.Module):
    """(x_ir [B, N, d], x_lm [B, N, d]) → fused tokens [B, N, d] (d = 512, N = 49).

    concat on channels → ``fusion_proj`` (2d → d) → zero-pad N to the next square and view as a
    grid (token t → cell (t // S, t % S)) → three scales: the S×S map, ``down1`` = AvgPool 2
    (3×3 for S = 7, floor), ``down2`` = AvgPool 4 (1×1) → ``ssm1`` / ``ssm2`` / ``ssm3``
    (:class:`ASFRSS2D`) → bilinear upsampling of the two coarse scales to S×S (align_corners
    False) → sum → drop the padding tokens → LayerNorm ``norm``.

    Under ``torch.use_deterministic_algorithms`` the upsampling runs as two interpolation-matrix products
    (:func:`upsample_bilinear_matmul`: same values, a backward without CUDA's atomic adds).
    """

    upsamples_bilinear = True  # CUDA's bilinear backward adds atomically (ferlib.engine.env.nondeterministic_ops)

    def __init__(self, d_model: int = 512, dropout: float = 0.1, **asfr_kwargs):
        super().__init__()
        self.fusion_proj = nn.Linear(2 * d_model, d_model)
        self.down1 = nn.AvgPool2d(2)
        self.down2 = nn.AvgPool2d(4)
        self.ssm1 = ASFRSS2D(d_model, dropout=dropout, **asfr_kwargs)
        self.ssm2 = ASFRSS2D(d_model, dropout=dropout, **asfr_kwargs)
        self.ssm3 = ASFRSS2D(d_model, dropout=dropout, **asfr_kwargs)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x_ir: torch.Tensor, x_lm: torch.Tensor) -> torch.Tensor:
        x = self.fusion_proj(torch.cat([x_ir, x_lm], dim=-1))
        b, n, d = x.shape
        side = math.ceil(math.sqrt(n))
        if side * side != n:
            x = F.pad(x, (0, 0, 0, side * side - n))
        grid = x.transpose(1, 2).reshape(b, d, side, side)
        out = self._scale(self.ssm1, grid)
        for pool, ssm in ((self.down1, self.ssm2), (self.down2, self.ssm3)):
            coarse = self._scale(ssm, pool(grid))
            if torch.are_deterministic_algorithms_enabled():
                out = out + upsample_bilinear_matmul(coarse, side)
            else:
                out = out + F.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
        return self.norm(out.flatten(2).transpose(1, 2)[:, :n])

    @staticmethod
    def _scale(ssm: nn.Module, grid: torch.Tensor) -> torch.Tensor:
        """NCHW → the ASFR block in NHWC → NCHW."""
        return ssm(grid.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _bilinear_matrix(n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """[n_out, n_in]: 1-D linear interpolation (align_corners False) as a matrix, read off F.interpolate."""
    eye = torch.eye(n_in, dtype=torch.float64, device=like.device).unsqueeze(0)  # [1, n_in (channels), n_in]
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0].t().to(like.dtype)


def upsample_bilinear_matmul(x: torch.Tensor, size: int) -> torch.Tensor:
    """``F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)`` for x [B, C, h, w], written
    as ``R_h · x · R_wᵀ`` (bilinear upsampling is separable): equal up to float rounding, and its backward is two
    matrix products instead of CUDA's atomic scatter (deterministic)."""
    rows = _bilinear_matrix(x.shape[-2], size, x)
    cols = _bilinear_matrix(x.shape[-1], size, x)
    return torch.matmul(torch.matmul(rows, x), cols.t())
