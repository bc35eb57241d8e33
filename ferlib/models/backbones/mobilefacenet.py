"""MobileFaceNet: the face-landmark network of pytorch_face_landmark, as FERMam and MMFRM use it.

Upstream: ``models/mobilefacenet.py`` of cunjian/pytorch_face_landmark (copied by POSTER and
jxcsglr/FERMam) and ``mobilefacenet.py`` of hutianhan/MMFRM; ``docs/papers/fermam.md`` §2 and
``docs/papers/mmfrm.md`` §3. Three variants, one trunk, upstream keys:

- :class:`MobileFaceNet` ``(embedding_size=136)``: the released landmark regressor (68 points ×
  2), the layout of ``mobilefacenet_model_best.pth.tar['state_dict']``.
- :class:`MobileFaceNet` ``(embedding_size=512)``: FERMam's ``face_landback`` (only the
  ``conv_6_sep`` map is used; the 512-d GDC head is computed and discarded).
- :class:`MMFRMMobileFaceNet`: MMFRM's landmark net (512-d GDC + ``alpha`` + ``fc``), returning
  the three tapped maps.

The trunk (input 112×112; the callers resize):

| module | op | output |
|---|---|---|
| conv1 | Conv_block 3→64, 3×3, s2 | [B,64,56,56] |
| conv2_dw | Conv_block 64→64, 3×3, depthwise | [B,64,56,56] |
| conv_23 | Depth_Wise 64→64, W=128, s2 | [B,64,28,28] |
| conv_3 | Residual 64 × 4, W=128 | [B,64,28,28] |
| conv_34 | Depth_Wise 64→128, W=256, s2 | [B,128,14,14] |
| conv_4 | Residual 128 × 6, W=256 | [B,128,14,14] |
| conv_45 | Depth_Wise 128→128, W=512, s2 | [B,128,7,7] |
| conv_5 | Residual 128 × 2, W=256 | [B,128,7,7] |
| conv_6_sep | Conv_block 128→512, 1×1 | [B,512,7,7] |
| output_layer | GDC: 7×7 depthwise Linear_block → Linear 512→E (no bias) → BN1d | [B,E] |
"""
from __future__ import annotations

import torch
from torch import nn

#: The maps the paper models tap, by upstream module name.
TAPS = ("conv_3", "conv_4", "conv_6_sep")


class ConvBlock(nn.Module):
    """Upstream ``Conv_block``: conv (no bias) → BN → PReLU (per channel)."""

    def __init__(self, in_c: int, out_c: int, kernel=1, stride=1, padding=0, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_c)
        self.prelu = nn.PReLU(out_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.bn(self.conv(x)))


class LinearBlock(nn.Module):
    """Upstream ``Linear_block``: conv (no bias) → BN, no activation."""

    def __init__(self, in_c: int, out_c: int, kernel=1, stride=1, padding=0, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class DepthWise(nn.Module):
    """Upstream ``Depth_Wise``: 1×1 in→W, k×k depthwise W→W (stride), 1×1 linear W→out; + x if ``residual``.

    ``width`` is upstream's ``groups`` argument (the expansion width W).
    """

    def __init__(self, in_c: int, out_c: int, residual: bool = False, kernel=3, stride=2, padding=1, width: int = 1):
        super().__init__()
        self.conv = ConvBlock(in_c, width)
        self.conv_dw = ConvBlock(width, width, kernel, stride, padding, groups=width)
        self.project = LinearBlock(width, out_c)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.conv_dw(self.conv(x)))
        return x + out if self.residual else out


class Residual(nn.Module):
    """Upstream ``Residual``: ``num_block`` residual stride-1 :class:`DepthWise` blocks (key ``model.<i>``)."""

    def __init__(self, c: int, num_block: int, width: int, kernel=3, stride=1, padding=1):
        super().__init__()
        self.model = nn.Sequential(
            *(DepthWise(c, c, True, kernel, stride, padding, width) for _ in range(num_block))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class GDC(nn.Module):
    """Global depthwise conv head: 7×7 depthwise Linear_block → flatten → Linear 512→E (no bias) → BN1d."""

    def __init__(self, embedding_size: int):
        super().__init__()
        self.conv_6_dw = LinearBlock(512, 512, kernel=7, groups=512)
        self.conv_6_flatten = nn.Flatten()
        self.linear = nn.Linear(512, embedding_size, bias=False)
        self.bn = nn.BatchNorm1d(embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.linear(self.conv_6_flatten(self.conv_6_dw(x))))


class MobileFaceNet(nn.Module):
    """pytorch_face_landmark ``MobileFaceNet(input_size, embedding_size, output_name="GDC")``.

    Args:
        input_size: (H, W); upstream asserts H == 112 (the GDC kernel is 7×7).
        embedding_size: 136 for the released landmark regressor, 512 in FERMam and MMFRM.

    ``forward(x)`` [B,3,112,112] → ``(out [B,E], conv_features [B,512,7,7])`` as upstream
    (``out`` holds the 68 (x, y) landmarks when E = 136). ``forward_taps(x)`` → dict of the
    ``conv_3`` [B,64,28,28], ``conv_4`` [B,128,14,14] and ``conv_6_sep`` [B,512,7,7] maps.
    """

    def __init__(self, input_size=(112, 112), embedding_size: int = 136, output_name: str = "GDC"):
        super().__init__()
        if tuple(input_size)[0] != 112:
            raise ValueError(f"MobileFaceNet needs 112×112 input (7×7 GDC kernel), got {input_size}")
        if output_name != "GDC":
            raise ValueError(f"only the GDC head is used by the papers, got output_name={output_name!r}")
        self.embedding_size = embedding_size
        self.conv1 = ConvBlock(3, 64, kernel=3, stride=2, padding=1)
        self.conv2_dw = ConvBlock(64, 64, kernel=3, stride=1, padding=1, groups=64)
        self.conv_23 = DepthWise(64, 64, kernel=3, stride=2, padding=1, width=128)
        self.conv_3 = Residual(64, num_block=4, width=128)
        self.conv_34 = DepthWise(64, 128, kernel=3, stride=2, padding=1, width=256)
        self.conv_4 = Residual(128, num_block=6, width=256)
        self.conv_45 = DepthWise(128, 128, kernel=3, stride=2, padding=1, width=512)
        self.conv_5 = Residual(128, num_block=2, width=256)
        self.conv_6_sep = ConvBlock(128, 512)
        self.output_layer = GDC(embedding_size)
        self._init_weights()

    def _init_weights(self) -> None:
        # Upstream init; irrelevant once weights are loaded.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """[B,3,112,112] → {"conv_3", "conv_4", "conv_6_sep"} maps (see the class docstring)."""
        x = self.conv2_dw(self.conv1(x))
        f1 = self.conv_3(self.conv_23(x))
        f2 = self.conv_4(self.conv_34(f1))
        f3 = self.conv_6_sep(self.conv_5(self.conv_45(f2)))
        return {"conv_3": f1, "conv_4": f2, "conv_6_sep": f3}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B,3,112,112] → the ``conv_6_sep`` map [B,512,7,7] (FERMam's landmark tokens)."""
        return self.forward_taps(x)["conv_6_sep"]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        conv_features = self.forward_features(x)
        return self.output_layer(conv_features), conv_features


class MMFRMMobileFaceNet(MobileFaceNet):
    """MMFRM's landmark net (``mobilefacenet.py`` of hutianhan/MMFRM; docs/papers/mmfrm.md §3).

    The 512-d GDC trunk plus ``alpha`` = Sequential(Linear 512→1, Sigmoid) and ``fc`` = Linear
    512→``num_classes``, created after the init (PyTorch defaults, as upstream). Keys:
    ``ref/mmfrm_mobilefacenet_keys.txt`` (337 entries).

    ``forward(x)`` [B,3,112,112] → ``(feature1 [B,64,28,28], feature2 [B,128,14,14],
    feature3 [B,512,7,7], attention [B,1], out [B,num_classes])`` with feature1/2/3 the outputs
    of ``conv_3`` / ``conv_4`` / ``conv_6_sep``, attention = alpha(GDC(feature3)) and
    out = attention · fc(GDC(feature3)). MMFRM uses only the three maps.
    """

    def __init__(self, input_size=(112, 112), embedding_size: int = 512, num_classes: int = 7):
        super().__init__(input_size, embedding_size)
        self.alpha = nn.Sequential(nn.Linear(embedding_size, 1), nn.Sigmoid())
        self.fc = nn.Linear(embedding_size, num_classes)

    def forward(self, x: torch.Tensor):
        taps = self.forward_taps(x)
        emb = self.output_layer(taps["conv_6_sep"])
        attention = self.alpha(emb)
        return taps["conv_3"], taps["conv_4"], taps["conv_6_sep"], attention, attention * self.fc(emb)


class MobileFaceNetBackbone(MobileFaceNet):
    """:class:`MobileFaceNet` behind the ``create_model`` contract (``create_model("mobilefacenet")``).

    ``forward`` returns ``ModelOutput(logits=None, features=GDC output [B,E] (the 136 landmark
    coordinates for E=136), extras={"conv_3", "conv_4", "conv_6_sep"})``. Same keys as
    :class:`MobileFaceNet`.
    """

    def forward(self, x: torch.Tensor):
        from ferlib.models.registry import ModelOutput

        taps = self.forward_taps(x)
        return ModelOutput(None, self.output_layer(taps["conv_6_sep"]), taps)
