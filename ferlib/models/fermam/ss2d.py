"""4-direction SS2D (VMamba / MedMamba style) as FERMam's ``models/ss2d.py`` codes it (docs/papers/fermam.md §5).

Used once, inside ``ir_ssm`` (:class:`~ferlib.models.fermam.ss_conv_ssm.SSConvSSM`), with
``d_model=256``: ``d_inner = 512``, ``dt_rank = 16``, ``d_state = 16``, four scan directions.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ferlib.ops import selective_scan

#: How the four direction outputs are merged: "upstream" sums them in their own scan order
#: (FERMam's code, §5.6 [quirk]); "vmamba" flips / transposes them back first (the intent).
MERGES = ("upstream", "vmamba")
#: dt bias initialisation: "upstream" clamps the wrong term (bias = dt + 1e-4, §5 [quirk]);
#: "mamba" stores softplus⁻¹(dt) as Mamba does.
DT_INITS = ("upstream", "mamba")


class SS2D(nn.Module):
    """Input [B, H, W, d_model] → output [B, H, W, d_model] (channels last).

    Forward: ``in_proj`` → x, z (``d_inner`` each); x → depthwise 3×3 conv → SiLU; four sequences
    of length L = H·W (row-major, column-major, and both reversed); per direction a projection to
    (dt, B, C); one selective scan over the 4·``d_inner`` channels (B/C grouped per direction, delta
    bias + softplus, D skip); merge (see ``merge``) → ``out_norm`` → ⊙ SiLU(z) → ``out_proj``.

    Parameters keep upstream names: ``x_proj_weight`` [4, dt_rank+2N, d_inner],
    ``dt_projs_weight`` [4, d_inner, dt_rank], ``dt_projs_bias`` [4, d_inner], ``A_logs``
    [4·d_inner, N], ``Ds`` [4·d_inner], then ``in_proj``, ``conv2d``, ``out_norm``, ``out_proj``.

    Args:
        merge: "upstream" (default, the authors' sum without undoing flips/transpose) or "vmamba".
        dt_init: "upstream" (default) or "mamba"; only matters when training from scratch.
        scan_backend: ``ferlib.ops.selective_scan`` backend ("auto", "cuda", "torch", "reference").
    """

    directions = 4

    def __init__(
        self,
        d_model: int = 256,
        d_state: int = 16,
        d_conv: int = 3,
        expand: int = 2,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        merge: str = "upstream",
        dt_init: str = "upstream",
        scan_backend: str = "auto",
    ):
        super().__init__()
        if merge not in MERGES:
            raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
        if dt_init not in DT_INITS:
            raise ValueError(f"dt_init must be one of {DT_INITS}, got {dt_init!r}")
        self.d_model, self.d_state = d_model, d_state
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16)
        self.merge, self.scan_backend = merge, scan_backend
        k, d_inner, rank = self.directions, self.d_inner, self.dt_rank
        # Bare parameters first: upstream's state_dict lists them before the submodules.
        self.x_proj_weight = nn.Parameter(torch.empty(k, rank + 2 * d_state, d_inner))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, rank))
        self.dt_projs_bias = nn.Parameter(torch.empty(k, d_inner))
        self.A_logs = nn.Parameter(torch.empty(k * d_inner, d_state))
        self.Ds = nn.Parameter(torch.empty(k * d_inner))
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner, bias=True)
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        self._init_ssm(dt_min, dt_max, dt_init_floor, dt_init)

    @torch.no_grad()
    def _init_ssm(self, dt_min, dt_max, floor, dt_init) -> None:
        # Each upstream x_proj is an nn.Linear(d_inner, dt_rank+2N) whose weights are stacked.
        for w in self.x_proj_weight:
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        nn.init.uniform_(self.dt_projs_weight, -self.dt_rank**-0.5, self.dt_rank**-0.5)
        dt = torch.exp(
            torch.rand(self.directions, self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        )
        if dt_init == "upstream":
            # [quirk] the clamp lands on log(-expm1(-dt)) < 0, so the bias is dt + floor.
            self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)).clamp(min=floor))
        else:
            dt = dt.clamp(min=floor)
            self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.A_logs.copy_(torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).repeat(len(self.Ds), 1))
        self.Ds.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        x, z = self.in_proj(x).chunk(2, dim=-1)
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2).contiguous()))  # [B, d_inner, H, W]
        y = self._scan_directions(x)  # [B, 4, d_inner, L]
        y = self._merge(y, h, w)  # [B, d_inner, L]
        y = y.transpose(1, 2).reshape(b, h, w, self.d_inner)
        y = self.out_norm(y) * F.silu(z)
        return self.out_proj(y)

    def _scan_directions(self, x: torch.Tensor) -> torch.Tensor:
        """[B, d_inner, H, W] → the four scan outputs [B, 4, d_inner, L], each in its own scan order."""
        b, d, h, w = x.shape
        length = h * w
        rows = x.reshape(b, d, length)
        cols = x.transpose(2, 3).reshape(b, d, length)
        xs = torch.stack([rows, cols, rows.flip(-1), cols.flip(-1)], dim=1)  # [B, 4, d, L]
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)
        dts, Bs, Cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)
        y = selective_scan(
            xs.float().reshape(b, -1, length),
            dts.float().reshape(b, -1, length),
            -torch.exp(self.A_logs.float()),
            Bs.float(),
            Cs.float(),
            self.Ds.float(),
            delta_bias=self.dt_projs_bias.float().reshape(-1),
            delta_softplus=True,
            backend=self.scan_backend,
        )
        return y.reshape(b, self.directions, d, length)

    def _merge(self, y: torch.Tensor, h: int, w: int) -> torch.Tensor:
        if self.merge == "upstream":
            # [quirk, essential] summed in scan order: output index l adds row-major step l,
            # column-major step l, and the reversed scans' step l (pixel L-1-l) — §5.6.
            return y[:, 0] + y[:, 1] + y[:, 2] + y[:, 3]
        b, _, d, length = y.shape
        back = y[:, 2:4].flip(-1)

        def col_to_row(t):
            return t.reshape(b, d, w, h).transpose(2, 3).reshape(b, d, length)

        return y[:, 0] + back[:, 0] + col_to_row(y[:, 1]) + col_to_row(back[:, 1])
