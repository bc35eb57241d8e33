"""Every registered model keeps the output contract of docs/design.md §3 (timm's every-model test, STYLE.md):
``create_model(name)`` builds it, ``forward`` returns a ``ModelOutput`` whose ``logits`` are [B, C] (None
for a backbone registered alone) and whose ``features`` are [B, D] or the backbone's map / tokens, and
a backward pass from the outputs reaches the trainable parameters.

Each model is built as small as its factory allows and fed the smallest input it accepts, so the whole
file runs in seconds on one CPU thread; the paper-sized models are tested against the authors' code in
their own test files.
"""
from __future__ import annotations

import pytest
import torch

from ferlib.models import ModelOutput, create_model, list_models

NUM_CLASSES = 5
BATCH = 2

#: name → (small factory keywords, input side). Omitted names use their defaults at 32×32.
#: The IR-50 and MobileFaceNet backbones take 112×112 only (their heads fix the map size); the paper
#: models that embed them resize the input themselves.
SMALL = {
    "baseline": ({"width": 8}, 32),
    "emonet": ({"alpha": 0.25}, 32),
    "fermam": ({}, 32),
    "grefel": ({"dim_emb": 32, "depth": 1, "num_heads": 2, "head_hidden": (16, 8), "num_anchors": 2}, 32),
    "mmfrm": ({}, 32),
    "mfer": ({"dims": (16, 32, 64, 128), "depths": (1, 1, 2, 1)}, 64),
    "convnext_base": ({"dims": (8, 16, 32, 64), "depths": (1, 1, 1, 1)}, 32),
    "convnext_tiny": ({"dims": (8, 16, 32, 64), "depths": (1, 1, 1, 1)}, 32),
    "ir50": ({}, 112),
    "ir50_full": ({}, 112),
    "mobilefacenet": ({}, 112),
    "mobilefacenet_512": ({}, 112),
    "mobilefacenet_mmfrm": ({}, 112),
}


def test_every_registered_model_has_a_small_configuration():
    assert sorted(SMALL) == list_models()


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_and_output_contract(name):
    kwargs, side = SMALL.get(name, ({}, 32))
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES, **kwargs).train()
    out = model(torch.randn(BATCH, 3, side, side))

    assert isinstance(out, ModelOutput)
    assert isinstance(out.extras, dict)
    assert out.features.shape[0] == BATCH and out.features.dim() >= 2
    if out.logits is None:  # a backbone registered alone: its features are all it has
        target = out.features
    else:
        assert out.logits.shape == (BATCH, NUM_CLASSES)
        assert out.features.dim() == 2, "a paper model's features are the [B, D] embedding it classifies"
        target = out.logits
    assert torch.isfinite(target).all()

    target.float().square().mean().backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable, f"{name} has no trainable parameter"
    reached = [p for p in trainable if p.grad is not None]
    assert reached, f"no gradient reaches {name}'s parameters"
    assert all(torch.isfinite(p.grad).all() for p in reached)
