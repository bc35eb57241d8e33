"""MFER: ConvNeXt-B with DS attention and a multiscale classifier (Xu et al., TAFFC 2024).

As the released model code builds it (XuJ1E/MFER @ 6d041d5: ``model.py``, ``model/attention.py``,
``model/multiscale.py``), with its state-dict layout (``backbone.*``, ``msc.{0,1,2}.*``):

    x [B,3,224,224] → ConvNeXt-B stages [3,3,27,3] / [128,256,512,1024], a DS attention appended to
    stages 2 and 3 (``stages.2.27``, ``stages.3.3``) → GAP → LayerNorm → feature f [B,1024]
    head i = MLP(f[:, :512 + 256·i]) for i = 0, 1, 2 (the paper's "Msc")   → [B,C] each
    logits = head0 + head1 + head2

The multiscale inputs are prefixes of one pooled vector (the code), not features of different
stages. ``dims`` / ``depths`` allow a narrower copy for CPU smoke runs only; the heads then read
2/4, 3/4 and 4/4 of the feature, as they do at full width. ``stem="resnet"`` (ResNet's 7×7/2 conv,
BatchNorm, ReLU and max-pool instead of the 4×4 patchify stem) exists for the synthetic CPU demo only.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ferlib.weights.converters import register_converter

from .backbones.convnext import CONVNEXT_BASE, ConvNeXt
from .layers.ds_attention import DSAttention
from .registry import ModelOutput, register_model


class MultiscaleHead(nn.Module):
    """Upstream ``classifier``: ``fc1`` Linear(n, n) → GELU → ``fc2`` Linear(n, C) on f[:, :n]. [B, ≥n] → [B, C]."""

    def __init__(self, in_features: int, num_classes: int = 7):
        super().__init__()
        self.in_features = in_features
        self.fc1 = nn.Linear(in_features, in_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(in_features, num_classes)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(feature[:, : self.in_features])))


class MFER(nn.Module):
    """MFER model. [B, 3, H, W] (H, W multiples of 32; 224 in the paper) →
    ``ModelOutput(logits [B,C] = Σ heads, features [B, dims[-1]], extras={"heads": [3 × [B,C]]})``.
    """

    def __init__(
        self,
        num_classes: int = 7,
        depths: Sequence[int] = CONVNEXT_BASE["depths"],
        dims: Sequence[int] = CONVNEXT_BASE["dims"],
        drop_path_rate: float = 0.25,
        layer_scale_init_value: float = 1e-6,
        attention_stages: Sequence[int] = (2, 3),
        stem: str = "patchify",
    ):
        super().__init__()
        if dims[-1] % 4:
            raise ValueError(f"the multiscale heads split the last width in quarters; dims[-1]={dims[-1]}")
        stages = set(attention_stages)
        self.backbone = ConvNeXt(
            depths=depths,
            dims=dims,
            drop_path_rate=drop_path_rate,
            layer_scale_init_value=layer_scale_init_value,
            stage_tail=lambda s, d: DSAttention(d) if s in stages else None,
            stem=stem,
        )
        quarter = dims[-1] // 4
        # Upstream classifier(dim=256, step=k) reads k·256 channels, k = 2, 3, 4.
        # The heads keep PyTorch's default Linear init, as upstream (only the backbone is trunc-normal).
        self.msc = nn.ModuleList(MultiscaleHead(k * quarter, num_classes) for k in (2, 3, 4))

    def forward(self, x: torch.Tensor) -> ModelOutput:
        feature = self.backbone(x)
        heads = [head(feature) for head in self.msc]
        return ModelOutput(heads[0] + heads[1] + heads[2], feature, {"heads": heads})


@register_model
def mfer(num_classes: int = 7, drop_path_rate: float = 0.25, **kwargs) -> MFER:
    """MFER as released: ConvNeXt-B + DS attention + Msc, 155,357,013 parameters at 7 classes.

    ``drop_path_rate`` 0.25 is train.py's; ``dims`` / ``depths`` / ``stem`` override ConvNeXt-B
    (CPU smoke runs only).
    """
    return MFER(num_classes=num_classes, drop_path_rate=drop_path_rate, **kwargs)


_BACKBONE_PREFIXES = ("downsample_layers.", "stages.", "norm.")


@register_converter("mfer")
def convert_mfer(state: dict) -> dict:
    """Upstream MFER state → ferlib keys.

    The reference container (``backbone.*`` + ``msc.*``) is already ferlib's layout. train.py's
    checkpoints hold ``model_state_dict`` of the bare ConvNeXt (no ``backbone.`` prefix, heads not
    saved); those keys get the prefix (and any DataParallel ``module.`` is dropped), so they load
    with ``strict=False`` and fresh heads.
    """
    out = {}
    for key, value in state.items():
        if key.startswith("module."):
            key = key[len("module."):]
        if key.startswith(_BACKBONE_PREFIXES):
            key = "backbone." + key
        out[key] = value
    return out
