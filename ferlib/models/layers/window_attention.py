"""Window-based cross-attention of POSTER++ (POSTER V2), as ARBEx / GReFEL re-write it.

``docs/papers/grefel.md`` §2.3 (GReFEL pipeline, docs/papers/grefel.md §9.1: "multi-scale window-based cross-attention ViT").
At every scale the image-branch map (IR-50) gives keys and values, and the landmark-branch map
(MobileFaceNet) of the same scale is the query, without a projection. The window equals the
whole map in GReFEL (28, 14, 7), so there is one window per image.

Three modules per scale, with the upstream key names:

- :class:`Window` (``window_module.<i>``): NCHW → LayerNorm over channels → tokens.
- :class:`GlobalWindowAttention` (``attns.<i>``): softmax((q·scale) kᵀ + relative bias) v → Linear.
- :class:`FeedForward` (``ffns.<i>``): layer-scaled residual + MLP, back to NHWC.
"""
from __future__ import annotations

import torch
from torch import nn


def relative_position_index(window: int) -> torch.Tensor:
    """Swin relative-position index [w², w²] (int64) into a table of (2w−1)² rows.

    Entry (i, j) = (dy + w − 1)·(2w − 1) + (dx + w − 1) with (dy, dx) the offset of token i
    from token j, tokens in row-major order.
    """
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # [2, w²]
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)  # [2, w², w²]
    return rel[0] * (2 * window - 1) + rel[1]


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability ``p`` (train only), rescale the rest."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Window(nn.Module):
    """LayerNorm the map and cut it into one window of ``window × window`` tokens.

    ``forward(x)`` x [B, d, H, W] (H = W = window) → (tokens [B, H·W, d], shortcut [B, H, W, d]).
    **[quirk]** ``shortcut`` is the *normalised* map, so the later residual adds LN(x), not x.
    """

    def __init__(self, dim: int, window: int):
        super().__init__()
        self.window = window
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, d, h, w = x.shape
        if h != self.window or w != self.window:
            raise ValueError(f"Window({self.window}) expects a {self.window}×{self.window} map, got {h}×{w}")
        xn = self.norm(x.permute(0, 2, 3, 1))
        return xn.reshape(b, h * w, d), xn


class GlobalWindowAttention(nn.Module):
    """Cross-attention with an external (landmark) query and a relative-position bias.

    Args:
        dim: channels d of the keys/values (and of the query).
        num_heads: heads; ``head_dim = dim // num_heads`` (32 at every GReFEL scale).
        window: side w of the window (the whole map); HW = w².

    ``forward(x, query)``: x [B, HW, d] tokens giving K and V through ``qkv`` (d → 2d, split as
    [2, heads, head_dim]); query [B, heads, HW, head_dim] (see :func:`to_query`). Output
    [B, HW, d] = ``linear``(softmax(q·scale·kᵀ + B_rel) v), heads concatenated.

    ``index_relative`` is a persistent buffer (it is in the authors' state dict): it is the Swin
    index at construction, and whatever a loaded state holds afterwards.
    """

    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.window = dim, num_heads, window
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("index_relative", relative_position_index(window))
        self.qkv = nn.Linear(dim, 2 * dim)
        self.linear = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.table, std=0.02)

    def relative_bias(self) -> torch.Tensor:
        """[heads, HW, HW] bias looked up from ``table`` through ``index_relative``."""
        n = self.window * self.window
        return self.table[self.index_relative.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        kv = self.qkv(x).reshape(b, n, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]  # [B, heads, HW, head_dim]
        q = query.reshape(b, self.num_heads, n, self.head_dim) * self.scale
        attn = (q @ k.transpose(-2, -1) + self.relative_bias().unsqueeze(0)).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, d)
        return self.linear(out)


def to_query(feature: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Landmark map [B, d, H, W] → query [B, heads, H·W, d/heads], channels split into heads contiguously."""
    b, d, h, w = feature.shape
    return feature.permute(0, 2, 3, 1).reshape(b, h * w, num_heads, d // num_heads).transpose(1, 2)


class FeedForward(nn.Module):
    """Layer-scaled residual around the attention output, then a residual MLP (POSTER V2 ``feedforward``).

    ``forward(attn_out, shortcut)``: attn_out [B, HW, d], shortcut [B, H, W, d] →
    x = shortcut + drop_path(γ1·attn_out); x = x + drop_path(γ2·MLP(LN(x))) → [B, H, W, d].
    The MLP is ``mlp.0`` Linear d→4d, GELU, Dropout, ``mlp.3`` Linear 4d→d, Dropout.
    **[quirk]** One DropPath module serves both residuals (same rate).
    """

    def __init__(self, dim: int, window: int, mlp_ratio: float = 4.0, drop: float = 0.0,
                 drop_path: float = 0.0, layer_scale: float = 1e-5):
        super().__init__()
        self.window = window
        self.gamma_1 = nn.Parameter(layer_scale * torch.ones(dim))
        self.gamma_2 = nn.Parameter(layer_scale * torch.ones(dim))
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(drop),
                                 nn.Linear(hidden, dim), nn.Dropout(drop))
        self.norm = nn.LayerNorm(dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, attn_out: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        x = shortcut + self.drop_path(self.gamma_1 * attn_out.reshape(shortcut.shape))
        return x + self.drop_path(self.gamma_2 * self.mlp(self.norm(x)))
