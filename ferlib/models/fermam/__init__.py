"""FERMam: model, its blocks, and the ``fermam`` registry entry (spec ``specs/fermam.md``).

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
def fermam(num_classes: int = 7, pretrained_backbones: bool = False, **kwargs) -> FERMam:
    """FERMam as the authors coded it; keyword options in :class:`FERMam` (paper-intent switches off).

    ``pretrained_backbones=True`` loads the MS-Celeb-1M IR-50 and the landmark MobileFaceNet
    (``ferlib.weights`` entries ``ir50_ms1m`` and ``mobilefacenet_landmark``), as upstream training does.
    """
    model = FERMam(num_classes=num_classes, **kwargs)
    if pretrained_backbones:
        model.load_backbones()
    return model
