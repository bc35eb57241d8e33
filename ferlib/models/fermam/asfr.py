"""ASFR-SS2D: the single-direction scan block of FERMam's fusion (``models/ASFR.py``; docs/papers/fermam.md §7).

Upstream names the class ``SS2D`` too; here it is :class:`ASFRSS2D` to tell it from the
4-direction :class:`~ferlib.models.fermam.ss2d.SS2D`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ferlib.ops import linear_scan

#: The skip term: "upstream" multiplies x by the integer d_inner, because upstream's scan rebinds
#: the name ``D`` to ``x.shape[-1]`` before using it (the ``D`` parameter is never read) [quirk];
#: "param" uses the learned ``D`` [d_inner], as intended.
SKIPS = ("upstream", "param")
#: How the scan's input matrix is gated: "upstream" uses ``dt_to_N_proj(Δ) ⊙ B`` (the code,
#: [quirk]); "delta" uses Mamba's ``Δ ⊙ B`` per channel (``dt_to_N_proj`` is then unused).
INPUT_GATES = ("upstream", "delta")


class ASFRSS2D(nn.Module):
    """Input [B, H, W, d_model] → [B, H, W, d_model]; one forward row-major scan over L = H·W.

    ``in_proj`` → x, z; x → 3×3 depthwise conv (no bias, **no activation**); ``x_proj`` → dt_raw
    (``dt_rank``), B (N), C (N); ``dt = dt_proj(dt_raw)``; with Δ = softplus(dt) (no extra bias),
    A = −exp(``A_log``) (**one [N] vector shared by all channels**, [quirk]) and
    b_t = ``dt_to_N_proj``(Δ_t) ⊙ B_t ([quirk], shared by all channels)::

        h_t = exp(Δ_t ⊗ A) ⊙ h_{t−1} + x_t ⊗ b_t,     y_t = h_t · C_t + D ⊙ x_t

    then ``out_norm`` → ⊙ SiLU(z) → ``out_proj`` → dropout. Defaults: d_inner 1024, dt_rank 8, N 16.

    [quirk, essential] Upstream's ``selective_scan(self, x, dt, A, B_in, C_in, D)`` begins with
    ``B, L, D = x.shape``, so the skip is ``d_inner · x_t`` (1024 · x_t) and the ``D`` parameter
    is unused (kept for strict loading; it gets no gradient). The recorded reference outputs
    (``fermam_intermediates.pt['fusion.ssm*']``) confirm it: with the parameter they differ by ~8.

    Args:
        input_gate: "upstream" (default) or "delta" (Δ·B, the Mamba form).
        skip: "upstream" (default, d_inner · x) or "param" (D ⊙ x).
        scan_backend: "reference" runs the sequential loop; anything else the fast linear scan.
    """

    def __init__(
        self,
        d_model: int = 512,
        d_state: int = 16,
        expand: int = 2,
        dt_rank: int = 8,
        dropout: float = 0.1,
        input_gate: str = "upstream",
        skip: str = "upstream",
        scan_backend: str = "auto",
    ):
        super().__init__()
        if input_gate not in INPUT_GATES:
            raise ValueError(f"input_gate must be one of {INPUT_GATES}, got {input_gate!r}")
        if skip not in SKIPS:
            raise ValueError(f"skip must be one of {SKIPS}, got {skip!r}")
        d_inner = expand * d_model
        self.d_inner, self.d_state, self.dt_rank = d_inner, d_state, dt_rank
        self.input_gate, self.skip, self.scan_backend = input_gate, skip, scan_backend
        self.A_log = nn.Parameter(torch.empty(d_state))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.depthwise_conv = nn.Conv2d(d_inner, d_inner, 3, padding=1, groups=d_inner, bias=False)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        self.dt_to_N_proj = nn.Linear(d_inner, d_state, bias=True)
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=True)
        self.dropout = nn.Dropout(dropout)
        self._init_upstream()
        # skip="upstream" never reads D: frozen (kept for the authors' keys; see IR50.output_layer).
        self.D.requires_grad_(skip == "param")

    @torch.no_grad()
    def _init_upstream(self) -> None:
        nn.init.constant_(self.dt_proj.bias, 0.1)
        nn.init.uniform_(self.dt_proj.weight, -0.1, 0.1)
        # [quirk] upstream first writes log(1..N) and then overwrites it with N(0, 0.02).
        nn.init.normal_(self.A_log, std=0.02)
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        x, z = self.in_proj(x).chunk(2, dim=-1)
        x = self.depthwise_conv(x.permute(0, 3, 1, 2).contiguous()).permute(0, 2, 3, 1)
        dt_raw, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt_raw)).reshape(b, h * w, self.d_inner)
        x_seq = x.reshape(b, h * w, self.d_inner)
        B = B.reshape(b, h * w, self.d_state)
        C = C.reshape(b, h * w, self.d_state)
        if self.input_gate == "upstream":
            drive = x_seq.unsqueeze(-1) * (self.dt_to_N_proj(delta) * B).unsqueeze(2)  # [B, L, d_inner, N]
        else:
            drive = (delta * x_seq).unsqueeze(-1) * B.unsqueeze(2)
        decay = torch.exp(delta.unsqueeze(-1) * -torch.exp(self.A_log))  # [B, L, d_inner, N]
        skip = self.D if self.skip == "param" else float(self.d_inner)
        y = self._scan(decay, drive, C) + skip * x_seq
        y = self.out_norm(y.reshape(b, h, w, self.d_inner)) * F.silu(z)
        return self.dropout(self.out_proj(y))

    def _scan(self, decay: torch.Tensor, drive: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """h_t = decay_t ⊙ h_{t−1} + drive_t; returns ⟨h_t, C_t⟩ [B, L, d_inner], state in float32."""
        with torch.autocast(device_type=drive.device.type, enabled=False):
            dtype = torch.float64 if drive.dtype == torch.float64 else torch.float32
            return self._scan_fp32(decay.to(dtype), drive.to(dtype), C.to(dtype))

    def _scan_fp32(self, decay: torch.Tensor, drive: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        if self.scan_backend == "reference":
            state = drive.new_zeros(drive.shape[0], drive.shape[2], drive.shape[3])
            ys = []
            for t in range(drive.shape[1]):
                state = decay[:, t] * state + drive[:, t]
                ys.append((state * C[:, t, None, :]).sum(-1))
            return torch.stack(ys, dim=1)
        states = linear_scan(decay.transpose(0, 1), drive.transpose(0, 1))  # [L, B, d_inner, N]
        return torch.matmul(states, C.transpose(0, 1).unsqueeze(-1)).squeeze(-1).transpose(0, 1)
