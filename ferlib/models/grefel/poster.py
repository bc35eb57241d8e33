"""The multi-scale window cross-attention ViT of ARBEx / GReFEL (``arbex/models/poster.py``, ``vit.py``).

``docs/papers/grefel.md`` §1 and §2.3; GReFEL pipeline step 1 (docs/papers/grefel.md §9.1:
landmark-guided multi-scale window cross-attention ViT, the POSTER++ design). Key names are ARBEx's
(``vit.*`` inside the GReFEL container).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ferlib.models.layers.window_attention import (FeedForward, GlobalWindowAttention, Window,
                                                   to_query)

from .arbex_backbones import ArbexIR50, ArbexMobileFaceNet, nearest_resize


class PatchEmbed(nn.Module):
    """1×1 conv d→E then tokens: [B, d, H, W] → [B, H·W, E] (key ``proj``)."""

    def __init__(self, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class SEBlock(nn.Module):
    """Squeeze-excitation gate on a vector: x · sigmoid(linear2(relu(linear1(x)))), [B, E] → [B, E]."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear1 = nn.Linear(dim, dim)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(dim, dim)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.linear2(self.relu(self.linear1(x))))


class Attention(nn.Module):
    """Multi-head self-attention (timm ViT layout: ``qkv`` with bias, ``proj``), [B, N, E] → [B, N, E]."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """fc1 → GELU → fc2 (dropouts 0)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)); LayerNorm eps 1e-6.

    **[quirk]** ``conv`` (Conv1d tokens→tokens, 1×1) is registered upstream but never called.
    """

    def __init__(self, dim: int, num_heads: int, num_tokens: int, mlp_ratio: float = 4.0, layer_norm: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6) if layer_norm else nn.Identity()
        self.conv = nn.Conv1d(num_tokens, num_tokens, kernel_size=1)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6) if layer_norm else nn.Identity()
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


#: :class:`VisionTransformer` readouts: ARBEx's cls token, the mean of the N token outputs, or one Linear over
#: all of them flattened (N·E → E, which keeps each token's position).
POOLS = ("token", "avg", "flat")


class VisionTransformer(nn.Module):
    """The 2-block ViT over the fused tokens, with cls token and SE gate (ARBEx ``vit.py``).

    ``forward(tokens)`` [B, N, E] (N = 147) → SE(norm(blocks(cat(cls, tokens) + pos_embed))[:, 0])
    [B, E]. ``global_pool`` ``"avg"`` (the mean of the N token outputs) or ``"flat"`` (``flat``, one Linear
    over the N token outputs flattened) replaces the cls token, and ``layer_norm=False`` drops the blocks' and
    the final LayerNorms; ``depth=0`` leaves the blocks out. None is ARBEx's: they make the CPU demo's readout
    (the synthetic card entry), which learns from random-init backbones where the cls token behind
    LayerNorms stays on one class (issue 24). **[quirk]** ``patch_embed``, ``CON1``,
    ``IRLinear1``, ``IRLinear2`` and each block's ``conv`` are registered but unused (1,619,016 params at
    E = 768): kept for strict loading.
    """

    def __init__(self, num_tokens: int = 147, embed_dim: int = 768, depth: int = 2, num_heads: int = 8,
                 mlp_ratio: float = 4.0, in_chans: int = 256, global_pool: str = "token", layer_norm: bool = True):
        super().__init__()
        if global_pool not in POOLS:
            raise ValueError(f"global_pool must be one of {POOLS} ('token' is ARBEx's cls token), got {global_pool!r}")
        self.global_pool = global_pool
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens + 1, embed_dim))
        self.se_block = SEBlock(embed_dim)
        self.patch_embed = PatchEmbed(in_chans, embed_dim)
        self.CON1 = nn.Conv2d(in_chans, embed_dim, kernel_size=1, bias=False)
        self.IRLinear1 = nn.Linear(1024, embed_dim)
        self.IRLinear2 = nn.Linear(embed_dim, 512)
        self.blocks = nn.Sequential(*(Block(embed_dim, num_heads, num_tokens + 1, mlp_ratio, layer_norm)
                                      for _ in range(depth)))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6) if layer_norm else nn.Identity()
        if global_pool == "flat":
            self.flat = nn.Linear(num_tokens * embed_dim, embed_dim)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_vit_weights)
        # The unused modules are frozen: DDP needs a gradient for every trainable parameter, and the
        # authors' optimiser never updated them (no gradient), so freezing changes no number.
        for unused in (self.patch_embed, self.CON1, self.IRLinear1, self.IRLinear2, *(b.conv for b in self.blocks)):
            unused.requires_grad_(False)
        if depth == 0 and global_pool != "token":
            self.cls_token.requires_grad_(False)  # nothing reads it

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        if self.global_pool == "token":
            return self.se_block(x[:, 0])
        tokens = x[:, 1:]
        return self.se_block(tokens.mean(dim=1) if self.global_pool == "avg" else self.flat(tokens.flatten(1)))


def _init_vit_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.01)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class PosterV2(nn.Module):
    """IR-50 + MobileFaceNet features fused by window cross-attention at 3 scales, then the ViT.

    ``PosterV2(windows=(28,14,7), heads=(2,4,8), dims=(64,128,256), dim_emb=768, depth=2,
    num_heads=8)``; ``forward(x)`` x [B,3,H,W] (ImageNet-normalised; resized to 112 for both
    backbones) → embedding [B, dim_emb]. 45,367,574 params at the defaults.

    Args:
        freeze_backbones: ``requires_grad=False`` on ``landmark`` and ``ir`` (ARBEx train.py; their
            BatchNorms still follow the module's train/eval mode, as upstream).
        drop_path: DropPath rates of the three ``ffns``.
        ir_units: IR-50 units per stage (default (3, 4, 14)); fewer make the shallower image branch of
            the CPU demo (the synthetic card entry; not the paper's network).
        backbone_size: the side both backbones see (default 112, ARBEx's); 64 (the CPU demo only, not the
            paper's network) gives 32/16/8 maps, windows (16, 8, 4) and 48 ViT tokens, a third of the compute.
        windows: the three window sides; None = backbone_size / 4, / 8, / 16 ((28, 14, 7) at 112).
        vit_global_pool, vit_layer_norm: the ViT's readout, see :class:`VisionTransformer` (defaults
            ARBEx's: ``"token"``, ``True``; ``"avg"`` / ``"flat"`` and ``False`` are CPU-demo options).
    """

    def __init__(self, windows: Sequence[int] | None = None, heads: Sequence[int] = (2, 4, 8),
                 dims: Sequence[int] = (64, 128, 256), dim_emb: int = 768, depth: int = 2, num_heads: int = 8,
                 drop_path: Sequence[float] = (0.0, 0.125, 0.25), freeze_backbones: bool = True,
                 ir_units: Sequence[int] | None = None, backbone_size: int = 112,
                 vit_global_pool: str = "token", vit_layer_norm: bool = True):
        super().__init__()
        if backbone_size % 16 or backbone_size < 64:
            raise ValueError(f"backbone_size must be a multiple of 16 of at least 64, got {backbone_size}")
        windows = tuple(windows) if windows is not None else (backbone_size // 4, backbone_size // 8, backbone_size // 16)
        self.heads, self.backbone_size = tuple(heads), backbone_size
        self.landmark = ArbexMobileFaceNet()
        self.ir = ArbexIR50(units=ir_units, input_size=backbone_size)
        self.conv = nn.Conv2d(512, dims[2], kernel_size=3, padding=1)
        self.convs = nn.ModuleList(nn.Conv2d(d, d, kernel_size=3, stride=2, padding=1) for d in dims)
        self.window_module = nn.ModuleList(Window(d, w) for d, w in zip(dims, windows))
        self.attns = nn.ModuleList(GlobalWindowAttention(d, h, w) for d, h, w in zip(dims, heads, windows))
        self.ffns = nn.ModuleList(FeedForward(d, w, drop_path=p) for d, w, p in zip(dims, windows, drop_path))
        self.embs = nn.ModuleList([
            nn.Sequential(nn.Conv2d(dims[0], dim_emb, 3, 2, 1), nn.Conv2d(dim_emb, dim_emb, 3, 2, 1)),
            nn.Conv2d(dims[1], dim_emb, 3, 2, 1),
            PatchEmbed(dims[2], dim_emb),
        ])
        n_tokens = sum((w // 4 if i == 0 else w // 2 if i == 1 else w) ** 2 for i, w in enumerate(windows))
        self.vit = VisionTransformer(n_tokens, dim_emb, depth, num_heads, in_chans=dims[2],
                                     global_pool=vit_global_pool, layer_norm=vit_layer_norm)
        if freeze_backbones:
            for p in [*self.landmark.parameters(), *self.ir.parameters()]:
                p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1, f2, f3 = self.landmark(nearest_resize(x, self.backbone_size))
        queries = (f1, f2, self.conv(f3))
        maps = self.ir(x)
        tokens = []
        for i in range(3):
            xi = self.convs[i](maps[i])
            win, shortcut = self.window_module[i](xi)
            att = self.attns[i](win, to_query(queries[i], self.heads[i]))
            out = self.ffns[i](att, shortcut).permute(0, 3, 1, 2)
            emb = self.embs[i](out)
            tokens.append(emb if emb.dim() == 3 else emb.flatten(2).transpose(1, 2))
        return self.vit(torch.cat(tokens, dim=1))
