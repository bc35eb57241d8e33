"""MMFRM (hutianhan/MMFRM @ 74c7e81): ResNet-18-style trunk fused with MobileFaceNet maps.

Ding et al., "A Multiscale and Multilevel Fusion Network Based on ResNet and MobileFaceNet for
Facial Expression Recognition", IET Cyber-Physical Systems: Theory & Applications,
doi:10.1049/cps2.70003 (docs/papers/mmfrm.md). Two upstream networks see the
same normalised 112×112 RGB input; ferlib joins them in one module :class:`MMFRM` with two
submodules whose keys are the upstream ones behind a prefix:

- ``landmark.*``: MMFRM's MobileFaceNet variant (``ferlib.models.backbones.MMFRMMobileFaceNet``,
  ``mmfrm_mobilefacenet_keys.txt``), tapped at ``conv_3`` / ``conv_4`` / ``conv_6_sep``;
- ``network.*``: the expression network (upstream class ``MMFRM``, ``mmfrm_keys.txt``),
  :class:`MMFRMNetwork` here.

Data flow (docs/papers/mmfrm.md §1), x [B,3,112,112]::

    landmark: f1 [B,64,28,28], f2 [B,128,14,14], f3 [B,512,7,7]
    network:  conv1 7×7 s2 (bias; no BN/ReLU/max-pool) [B,64,56,56] → layer1 → layer2 [B,128,28,28]
              → TCFMM1(·, f1) [B,192,28,28] → cov1 [B,128,28,28] → layer3 [B,256,14,14]
              → TCFMM2(·, f2) [B,384,14,14] → cov2 [B,256,14,14] → layer4 [B,512,7,7]
              → TCFMM3(·, f3) [B,1024,7,7] → cov3 [B,512,7,7] → avg pool [B,512]
              → a = sigmoid(Linear 512→1) [B,1]; logits = a · Linear 512→C [B,C]

Upstream quirks kept on purpose: the unused ``bn1`` / ``maxpool`` (their keys exist), biases on
every ResNet conv, the attribute spellings ``TCFMM1-3`` / ``cov1-3`` / ``extra``. The landmark
net is not optimised upstream and never leaves train mode (``landmark_mode``, see :class:`MMFRM`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ferlib.weights.converters import register_converter

from .backbones.mobilefacenet import MMFRMMobileFaceNet
from .layers.cbam import CBAM
from .registry import ModelOutput, register_model

LANDMARK_MODES = ("train", "eval", "follow")


class RestNetBasicBlock(nn.Module):
    """conv3×3 → BN → ReLU → conv3×3 → BN; + x; ReLU. Convs have biases. [B,C,H,W] → [B,C,H,W]."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride, 1)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(x + out)


class RestNetDownBlock(nn.Module):
    """Strided block: main conv3×3 (s=stride[0]) → BN → ReLU → conv3×3 (s=stride[1]) → BN;
    shortcut ``extra`` = 1×1 conv (s=stride[0], bias) → BN; ReLU of the sum. [B,in,H,W] → [B,out,H/2,W/2].
    """

    def __init__(self, in_channels: int, out_channels: int, stride=(2, 1)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride[0], 1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride[1], 1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.extra = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride[0], 0),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(self.extra(x) + out)


class TCFFM(nn.Module):
    """Triple-CBAM feature fusion module (docs/papers/mmfrm.md §2.4); upstream attributes ``TCFMM1-3`` [sic].

    x [B,c1,H,W] (ResNet) and y [B,c2,H,W] (landmark) → cbam3(conv3(cat[cbam1(conv1 x), cbam2(conv2 y)]))
    [B,c1+c2,H,W]; every conv 3×3, pad 1, with bias.
    """

    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c1, c1, 3, 1, 1)
        self.cbam1 = CBAM(c1)
        self.conv2 = nn.Conv2d(c2, c2, 3, 1, 1)
        self.cbam2 = CBAM(c2)
        self.conv3 = nn.Conv2d(c1 + c2, c1 + c2, 3, 1, 1)
        self.cbam3 = CBAM(c1 + c2)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = self.cbam1(self.conv1(x))
        y = self.cbam2(self.conv2(y))
        return self.cbam3(self.conv3(torch.cat([x, y], dim=1)))


class ConvBlock(nn.Module):
    """Upstream ``Conv_Block`` (attributes ``cov1-3`` [sic]): BN → Dropout(0.2) → ReLU → conv3×3 (bias).

    Pre-activation reducer [B,in,H,W] → [B,out,H,W]; key ``conv.{0,3}``.
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.2):
        super().__init__()
        self.conv = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Dropout(dropout),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class MMFRMNetwork(nn.Module):
    """The expression network (upstream class ``MMFRM(num_classes=7, drop_rate=0)``), keys ``mmfrm_keys.txt``.

    ``forward(x, feature1, feature2, feature3)`` → ``(attention [B,1], logits [B,C], pooled [B,512])``;
    upstream returns the first two.
    """

    def __init__(self, num_classes: int = 7, drop_rate: float = 0.0):
        super().__init__()
        self.drop_rate = drop_rate
        # Attribute order fixes the state-dict order of mmfrm_keys.txt.
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3)
        self.bn1 = nn.BatchNorm2d(64)                       # built, never used (docs/papers/mmfrm.md §2.1)
        self.maxpool = nn.MaxPool2d(3, 2, 1)                # built, never used
        self.layer1 = nn.Sequential(RestNetBasicBlock(64, 64), RestNetBasicBlock(64, 64))
        self.layer2 = nn.Sequential(RestNetDownBlock(64, 128), RestNetBasicBlock(128, 128))
        self.layer3 = nn.Sequential(RestNetDownBlock(128, 256), RestNetBasicBlock(256, 256))
        self.layer4 = nn.Sequential(RestNetDownBlock(256, 512), RestNetBasicBlock(512, 512))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        self.alpha = nn.Sequential(nn.Linear(512, 1), nn.Sigmoid())
        self.cov1 = ConvBlock(192, 128)
        self.cov2 = ConvBlock(384, 256)
        self.cov3 = ConvBlock(1024, 512)
        self.TCFMM1 = TCFFM(128, 64)
        self.TCFMM2 = TCFFM(256, 128)
        self.TCFMM3 = TCFFM(512, 512)
        # Never reaches an output: frozen (kept for the keys; the authors' optimiser never updates it either).
        self.bn1.requires_grad_(False)

    def forward(self, x, feature1, feature2, feature3):
        x = self.layer1(self.conv1(x))
        x = self.cov1(self.TCFMM1(self.layer2(x), feature1))
        x = self.cov2(self.TCFMM2(self.layer3(x), feature2))
        x = self.cov3(self.TCFMM3(self.layer4(x), feature3))
        if self.drop_rate > 0:
            x = F.dropout(x, self.drop_rate, self.training)
        pooled = torch.flatten(self.avgpool(x), 1)
        attention = self.alpha(pooled)
        return attention, attention * self.fc(pooled), pooled


class MMFRM(nn.Module):
    """MMFRM = landmark MobileFaceNet + expression network on one input (docs/papers/mmfrm.md §1-§3).

    x [B,3,112,112] (any side divisible by 16 works) → ``ModelOutput(logits [B,C], features =
    pooled [B,512], extras={"attention_weights": [B,1]})``. The logits are already scaled by the
    attention (they feed the cross-entropy as upstream); the argmax equals that of ``network.fc``.

    Args:
        num_classes: width of ``network.fc`` (the landmark net's own unused ``fc`` stays 7 wide).
        drop_rate: dropout before the pool (upstream default 0; ``--drop_rate`` is never passed).
        landmark_mode: ``"train"`` (as coded: the landmark net stays in train mode even under
            ``model.eval()``, so its BatchNorms use batch statistics and keep updating their
            running averages; predictions depend on batch composition), ``"eval"`` (always eval:
            a fixed feature extractor) or ``"follow"`` (follows ``model.train()`` / ``eval()``).
        train_landmark: False (as coded: the landmark net is not in the optimizer; here its
            parameters get ``requires_grad=False``, which leaves its weights unchanged exactly as
            upstream's never-used, never-zeroed gradients do) or True to fine-tune it.

    Only the three tapped maps are computed from the landmark net: its GDC head, ``alpha`` and
    ``fc`` do not reach MMFRM's output, so they are kept for key compatibility but not run.
    """

    def __init__(self, num_classes: int = 7, drop_rate: float = 0.0, landmark_mode: str = "train",
                 train_landmark: bool = False):
        super().__init__()
        if landmark_mode not in LANDMARK_MODES:
            raise ValueError(f"landmark_mode must be one of {LANDMARK_MODES}, got {landmark_mode!r}")
        self.landmark_mode = landmark_mode
        self.landmark = MMFRMMobileFaceNet((112, 112), embedding_size=512, num_classes=7)
        self.network = MMFRMNetwork(num_classes=num_classes, drop_rate=drop_rate)
        self.landmark.requires_grad_(train_landmark)
        # The landmark net's head (GDC, alpha, fc) never reaches MMFRM's output: frozen in either case.
        for head in (self.landmark.output_layer, self.landmark.alpha, self.landmark.fc):
            head.requires_grad_(False)
        self.num_features = 512
        self.train(self.training)

    def train(self, mode: bool = True) -> "MMFRM":
        super().train(mode)
        if self.landmark_mode != "follow":
            self.landmark.train(self.landmark_mode == "train")
        return self

    def forward(self, x: torch.Tensor) -> ModelOutput:
        taps = self.landmark.forward_taps(x)
        attention, logits, pooled = self.network(x, taps["conv_3"], taps["conv_4"], taps["conv_6_sep"])
        return ModelOutput(logits, pooled, {"attention_weights": attention})


@register_model
def mmfrm(num_classes: int = 7, **kwargs) -> MMFRM:
    """MMFRM with the upstream defaults (landmark net frozen and kept in train mode).

    Upstream loads an unreleased ``models\\mobileface.pth`` into the landmark net (a Windows path: on
    Linux it trains with a random one). The card's ``pretrained`` item loads the trunk of
    pytorch_face_landmark's MobileFaceNet (entry ``mobilefacenet_landmark``) into ``landmark`` instead:
    every trunk key is taken, the 136-d ``output_layer`` is dropped and ``alpha``/``fc`` keep their init
    (none of them reaches MMFRM's output).
    """
    return MMFRM(num_classes=num_classes, **kwargs)


@register_converter("mmfrm")
def convert_mmfrm(state: dict) -> dict:
    """``{"network": <MMFRM state>, "landmark": <MobileFaceNet state>}`` → ferlib keys.

    Both upstream states are plain, un-prefixed state dicts (``models\\mypath.pth`` and
    ``models\\mobileface.pth``); either part may be missing (load the result non-strictly then).
    """
    unknown = set(state) - {"network", "landmark"}
    if unknown:
        raise KeyError(f"mmfrm converter expects a dict with 'network' and/or 'landmark' states, got keys {sorted(unknown)[:5]}")
    out = {}
    for part in ("landmark", "network"):
        for key, value in (state.get(part) or {}).items():
            out[f"{part}.{key}"] = value
    return out
