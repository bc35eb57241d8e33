"""Backbones shared by the paper models: IR-50 and MobileFaceNet (ConvNeXt lives beside them).

Design: the classes (:class:`IR50`, :class:`MobileFaceNet`, :class:`MMFRMMobileFaceNet`) return
plain tensors exactly as upstream and are what the paper models embed (``ir_back``,
``face_landback``, …). The registered factories return thin subclasses with the same modules and
keys whose ``forward`` follows the ``create_model`` contract: ``ModelOutput(logits=None,
features, extras)``. A backbone has no classifier; ``num_classes`` is accepted (``create_model``
always passes it) and ignored, except by ``mobilefacenet_mmfrm`` whose ``fc`` has that width.

| name | module | features | extras |
|---|---|---|---|
| ``ir50`` | IR-50, 3 stages (POSTER/FERMam) | tokens [B,49,1024] (raw view) | ``stages``, ``feature_map`` [B,256,14,14] |
| ``ir50_full`` | IR-50, 4 stages (MS-Celeb-1M ``ir50.pth``) | embedding [B,512] | ``stages``, ``feature_map`` [B,512,7,7] |
| ``mobilefacenet`` | landmark net, 136 outputs | landmarks [B,136] | ``conv_3``, ``conv_4``, ``conv_6_sep`` |
| ``mobilefacenet_512`` | FERMam's 512-d GDC variant | GDC embedding [B,512] | same |
| ``mobilefacenet_mmfrm`` | MMFRM's variant (+ alpha, fc) | GDC embedding [B,512] | same |
"""

from ferlib.models.registry import register_model

from .ir50 import IR50, BottleneckIR, IR50Backbone, split_stage4
from .mobilefacenet import MMFRMMobileFaceNet, MobileFaceNet, MobileFaceNetBackbone


class _MMFRMMobileFaceNetBackbone(MMFRMMobileFaceNet):
    def forward(self, x):
        return MobileFaceNetBackbone.forward(self, x)


@register_model
def ir50(num_classes=None, drop_ratio: float = 0.0, **kwargs) -> IR50Backbone:
    """IR-50, 3 stages, as POSTER/FERMam/GReFEL build it (``Backbone(50, 0.0, 'ir')``)."""
    return IR50Backbone(num_stages=3, drop_ratio=drop_ratio, **kwargs)


@register_model
def ir50_full(num_classes=None, drop_ratio: float = 0.0, **kwargs) -> IR50Backbone:
    """IR-50, 4 stages + output layer: the MS-Celeb-1M face-recognition model of ``ir50.pth``."""
    return IR50Backbone(num_stages=4, drop_ratio=drop_ratio, **kwargs)


@register_model
def mobilefacenet(num_classes=None, **kwargs) -> MobileFaceNetBackbone:
    """The pytorch_face_landmark 68-point regressor (``mobilefacenet_model_best.pth.tar``)."""
    return MobileFaceNetBackbone((112, 112), embedding_size=136, **kwargs)


@register_model
def mobilefacenet_512(num_classes=None, **kwargs) -> MobileFaceNetBackbone:
    """FERMam's landmark branch: the same trunk with a 512-d GDC head."""
    return MobileFaceNetBackbone((112, 112), embedding_size=512, **kwargs)


@register_model
def mobilefacenet_mmfrm(num_classes=7, **kwargs) -> MMFRMMobileFaceNet:
    """MMFRM's landmark net: 512-d GDC + ``alpha`` + ``fc`` (``num_classes`` wide)."""
    return _MMFRMMobileFaceNetBackbone((112, 112), embedding_size=512, num_classes=num_classes or 7, **kwargs)


# Backbones owned by other modules in this package register themselves on import.
from . import convnext  # noqa: E402,F401

__all__ = [
    "IR50",
    "IR50Backbone",
    "BottleneckIR",
    "split_stage4",
    "MobileFaceNet",
    "MobileFaceNetBackbone",
    "MMFRMMobileFaceNet",
]
