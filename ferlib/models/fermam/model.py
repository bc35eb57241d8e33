"""FERMam (``pyramid_trans_expr`` in jxcsglr/FERMam ``models/emotion_hyp.py``; docs/papers/fermam.md §1–§8).

Scientific Reports 2026, DOI 10.1038/s41598-026-44396-6: a frozen MobileFaceNet landmark branch
and an IR-50 image branch (3 stages), an SS_Conv_SSM block on the image tokens, pyramid Mamba
fusion of the two token sets, LayerNorm, and an SE-gated linear head on fused token 0.

Every quirk of the authors' code is the default (each is documented where it sits); the options
below switch to the paper's apparent intent and are off by default:

===================  ==========================  ==============================================
option               default (upstream)          alternative
===================  ==========================  ==============================================
``ir_tokens``        "raw_view" (§3.3)           "spatial": 2×2 patches of the 14×14 map
``ss2d_merge``       "upstream" (§5.6)           "vmamba": undo flips / transpose before the sum
``ss2d_dt_init``     "upstream" (§5 dt bias)     "mamba" (init only)
``asfr_input_gate``  "upstream" (§7)             "delta": Δ ⊙ B
``asfr_skip``        "upstream": d_inner · x     "param": the learned D ⊙ x (see ASFRSS2D)
``shuffled_residual`` False (§4)                 True: add the input shuffled like the output
``cls_pool``         "token0" (§8)               "mean": mean of the fused tokens
``landmark_bn_train`` True (§2)                  False: landmark net always in eval mode
``conv_ssm_mode``    "conv_ssm" (§4)             "conv_only" / "ssm_only": the Conv-SSM ablation
===================  ==========================  ==============================================

Two options are not the paper's network at all and exist for the synthetic CPU demo only: ``ir_units``
(a shallower IR-50) and ``backbone_size`` (both branches see 64×64 instead of 112×112: a 4×4 token grid,
about a third of the compute).

``conv_ssm_mode`` is not a code-vs-paper switch but the paper's own Conv-SSM ablation: the disabled
half of ``ir_ssm`` passes its channels through unchanged, as upstream's ``mode`` argument does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ferlib.models.backbones import IR50, MobileFaceNet
from ferlib.models.registry import ModelOutput

from .head import ClassificationHead, SEBlock
from .pyramid_fusion import PyramidMambaFusionBlock
from .ss_conv_ssm import SSConvSSM

IR_TOKENS = ("raw_view", "spatial")
CLS_POOLS = ("token0", "mean")


class FERMam(nn.Module):
    """x [B, 3, 224, 224] (ImageNet-normalised) → ``ModelOutput(logits [B, C], features [B, 512], extras)``.

    ``features`` is the SE-gated token (upstream's second return value). ``extras`` holds
    ``tokens`` (the fused, normalised tokens [B, 49, 512]).

    Modules (upstream names, state-dict order): ``face_landback`` (MobileFaceNet, 512-d GDC,
    frozen), ``ir_back`` (IR-50, 3 stages), ``ir_layer`` (Linear 1024 → 512), ``ir_ssm``
    (:class:`SSConvSSM`), ``fusion`` (:class:`PyramidMambaFusionBlock`), ``se_block``, ``head``.

    Args:
        num_classes: 7 (RAF-DB, AffectNet-7) or 8 (AffectNet-8, FERPlus).
        scan_backend: selective-scan backend for SS2D and the ASFR scans ("auto", "cuda",
            "torch", "reference"; ``ferlib.ops.selective_scan``).
        img_size, type: accepted and ignored, as upstream.
        ir_units: IR-50 units per stage (default IR-50's (3, 4, 14)); fewer, e.g. (1, 1, 2), make the
            shallower image branch of the CPU demo (the synthetic card entry; not the paper's network).
        backbone_size: the side both backbones see (default 112, the paper's); a multiple of 16 of at
            least 64 gives (backbone_size / 16)² tokens (64: 16 tokens on a 4×4 grid; the CPU demo only).
            Away from 112 the landmark net's discarded GDC head (sized for a 7×7 map) is not run.
        The other options: see the module docstring.
    """

    def __init__(
        self,
        num_classes: int = 7,
        img_size: int = 224,
        type: str = "large",
        scan_backend: str = "auto",
        ir_tokens: str = "raw_view",
        ss2d_merge: str = "upstream",
        ss2d_dt_init: str = "upstream",
        asfr_input_gate: str = "upstream",
        asfr_skip: str = "upstream",
        shuffled_residual: bool = False,
        conv_ssm_mode: str = "conv_ssm",
        cls_pool: str = "token0",
        landmark_bn_train: bool = True,
        dropout: float = 0.1,
        ir_units=None,
        backbone_size: int = 112,
    ):
        super().__init__()
        if backbone_size != 112 and (backbone_size % 16 or backbone_size < 64):
            raise ValueError(f"backbone_size must be 112 or a multiple of 16 of at least 64 (the pyramid pools the "
                             f"token grid by 4), got {backbone_size}")
        self.backbone_size = backbone_size
        if ir_tokens not in IR_TOKENS:
            raise ValueError(f"ir_tokens must be one of {IR_TOKENS}, got {ir_tokens!r}")
        if cls_pool not in CLS_POOLS:
            raise ValueError(f"cls_pool must be one of {CLS_POOLS}, got {cls_pool!r}")
        self.num_classes = num_classes
        self.ir_tokens, self.cls_pool, self.landmark_bn_train = ir_tokens, cls_pool, landmark_bn_train
        self.face_landback = MobileFaceNet([112, 112], embedding_size=512, output_name="GDC")
        for p in self.face_landback.parameters():
            p.requires_grad = False
        self.ir_back = IR50(num_stages=3, drop_ratio=0.0, input_size=backbone_size, units=ir_units)
        self.ir_layer = nn.Linear(1024, 512)
        self.ir_ssm = SSConvSSM(
            hidden_dim=512,
            d_state=16,
            mode=conv_ssm_mode,
            shuffled_residual=shuffled_residual,
            merge=ss2d_merge,
            dt_init=ss2d_dt_init,
            scan_backend=scan_backend,
        )
        self.fusion = PyramidMambaFusionBlock(
            d_model=512, dropout=dropout, input_gate=asfr_input_gate, skip=asfr_skip, scan_backend=scan_backend
        )
        self.se_block = SEBlock(512)
        self.head = ClassificationHead(512, num_classes)

    def set_scan_backend(self, backend: str) -> "FERMam":
        """Switch the selective-scan backend of every scan (SS2D and the three ASFR blocks)."""
        for m in self.modules():
            if hasattr(m, "scan_backend"):
                m.scan_backend = backend
        return self

    def train(self, mode: bool = True) -> "FERMam":
        super().train(mode)
        if not self.landmark_bn_train:
            self.face_landback.eval()
        return self

    def landmark_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,3,H,W] → bilinear resize to backbone_size (112; no antialias) → ``conv_6_sep`` → [B, 49, 512]
        (16 tokens at 64), row-major."""
        x = F.interpolate(x, size=self.backbone_size, mode="bilinear", align_corners=False)
        # Upstream runs the whole MobileFaceNet and discards its GDC output; only the map is used.
        feat = self.face_landback.forward_features(x)
        if self.face_landback.training and feat.shape[0] > 1 and feat.shape[-1] == 7:
            # The discarded GDC head still updates its BatchNorm running statistics in train mode, as
            # upstream's does (ferlib.parity.fermam compares them); a batch of 1 skips it (BN1d fails).
            with torch.no_grad():
                self.face_landback.output_layer(feat)
        return feat.flatten(2).transpose(1, 2)

    def image_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,3,H,W] → IR-50 (nearest resize to backbone_size, 112; 3 stages) → [B, 49, 1024] (16 at 64)."""
        if self.ir_tokens == "raw_view":
            # [quirk, essential] a raw view of the NCHW [B,256,14,14] map: channel chunks (§3.3).
            return self.ir_back(x)
        feat = self.ir_back.forward_features(x)
        b, c, h, w = feat.shape
        patches = feat.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
        return patches.reshape(b, (h // 2) * (w // 2), c * 4)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        x_lm = self.landmark_tokens(x)
        x_ir = self.ir_layer(self.image_tokens(x))  # [B, 49, 512]
        b, n, d = x_ir.shape
        side = int(round(n**0.5))
        x_ir = self.ir_ssm(x_ir.reshape(b, side, side, d)).reshape(b, n, d)
        tokens = self.fusion(x_ir, x_lm)
        # [quirk] the classifier reads grid cell (0, 0) only; there is no class token (§8).
        pooled = tokens[:, 0] if self.cls_pool == "token0" else tokens.mean(dim=1)
        feature = self.se_block(pooled)
        return ModelOutput(self.head(feature), feature, {"tokens": tokens})
