"""FERMam: model, its blocks, and the ``fermam`` registry entry (``docs/papers/fermam.md``).

``create_model("fermam", num_classes=7 | 8, scan_backend="auto", ...)``; the state-dict keys are the
authors' (``ref/fermam_keys.txt``), so ``convert_upstream("fermam", sd)`` is the identity.
"""
from ferlib.models.registry import register_model

from .asfr import ASFRSS2D
from .head import ClassificationHead, SEBlock
from .model import FERMam
from .pyramid_fusion import PyramidMambaFusionBlock
from .ss2d import SS2D
from .ss_conv_ssm import SSConvSSM, channel_shuffle

__all__ = [
    "ASFRSS2D", "ClassificationHead", "FERMam", "PyramidMambaFusionBlock", "SEBlock", "SS2D", "SSConvSSM",
    "channel_shuffle", "fermam",
]


@register_model
def fermam(num_classes: int = 7, **kwargs) -> FERMam:
    """FERMam as the authors coded it; keyword options in :class:`FERMam` (paper-intent switches off).

    Its training starts from the MS-Celeb-1M IR-50 (``ir_back``) and the landmark MobileFaceNet
    (``face_landback``): the card's ``pretrained`` items, loaded by ``train()`` or by
    ``create_model("fermam", weights=[{"weights": "ir50_ms1m", "into": "ir_back"}, ...])``.
    """
    return FERMam(num_classes=num_classes, **kwargs)
