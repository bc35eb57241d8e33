"""GReFEL and its predecessor ARBEx: ``create_model("grefel", variant="grefel"|"arbex")``.

Modules: :mod:`.model` (container, variants, factory), :mod:`.poster` (window cross-attention
ViT), :mod:`.arbex_backbones` (IR-50 / MobileFaceNet under ARBEx keys), :mod:`.heads`
(classifier, anchors, self-attention), :mod:`.reliability` (reliability balancing),
:mod:`.convert` (upstream checkpoints → ferlib keys). ``docs/papers/grefel.md``.
"""
from . import convert  # noqa: F401  (registers the "grefel" converter)
from .model import GReFEL, grefel

__all__ = ["GReFEL", "grefel"]
