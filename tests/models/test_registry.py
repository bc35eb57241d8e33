"""Model registry and the output contract of every registered model."""
import pytest
import torch

from ferlib.models import ModelOutput, create_model, list_models


def test_baseline_registered_and_pattern():
    assert "baseline" in list_models()
    assert list_models("base*") == ["baseline"]


def test_unknown_model_lists_registered():
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        create_model("nope")


def test_baseline_output_contract_and_backward():
    m = create_model("baseline", num_classes=8, width=16)
    out = m(torch.randn(2, 3, 64, 64))
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (2, 8) and out.features.shape == (2, 128)
    out.logits.sum().backward()
    assert all(p.grad is not None for p in m.parameters())
