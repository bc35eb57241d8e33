"""ConvNeXt trunk in Meta's layout (ferlib/models/backbones/convnext.py), checked against timm's ConvNeXt."""
import re

import pytest
import torch
import torch.nn.functional as F

from ferlib.models import ModelOutput, create_model
from ferlib.models.backbones.convnext import ConvNeXt, LayerNorm, drop_path

TINY = dict(depths=(1, 2, 1, 1), dims=(8, 16, 32, 64))


def _timm_to_meta(key: str) -> str:
    """timm ConvNeXt key → facebookresearch/ConvNeXt key (the layout ferlib keeps)."""
    key = re.sub(r"^stem\.", "downsample_layers.0.", key)
    key = re.sub(r"^stages\.(\d)\.downsample\.", r"downsample_layers.\1.", key)
    key = re.sub(r"^stages\.(\d)\.blocks\.(\d+)\.", r"stages.\1.\2.", key)
    key = key.replace("conv_dw", "dwconv").replace("mlp.fc1", "pwconv1").replace("mlp.fc2", "pwconv2")
    return key.replace("head.norm.", "norm.")


def test_matches_timm_convnext_with_the_same_weights():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.models.convnext.ConvNeXt(num_classes=0, ls_init_value=1e-6, **TINY).eval()
    with torch.no_grad():  # random everything, so layer scale and norms matter
        for p in ref.parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim > 1 else 1.0))
    ours = ConvNeXt(**TINY).eval()
    ours.load_state_dict({_timm_to_meta(k): v for k, v in ref.state_dict().items()}, strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = ref(x)
        got = ours(x)
    assert got.shape == (2, 64)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_channels_first_layernorm_equals_layer_norm_over_channels():
    ln = LayerNorm(6, eps=1e-6, data_format="channels_first")
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = torch.randn(2, 6, 5, 4) * 3 + 1
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (6,), ln.weight, ln.bias, 1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(ln(x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="data_format"):
        LayerNorm(6, data_format="nchw")


def test_convnext_base_layout_and_size():
    model = create_model("convnext_base")
    keys = list(model.state_dict())
    assert keys[:4] == [f"downsample_layers.0.{i}.{p}" for i in (0, 1) for p in ("weight", "bias")]
    assert keys[-2:] == ["norm.weight", "norm.bias"]
    assert "stages.2.26.pwconv2.bias" in keys and "stages.2.27.gamma" not in keys
    assert keys[keys.index("stages.0.0.dwconv.weight") - 1] == "stages.0.0.gamma"
    assert sum(p.numel() for p in model.parameters()) == 87_566_464
    # stochastic depth is linear over the 36 blocks
    model = create_model("convnext_base", drop_path_rate=0.35)
    assert model.stages[0][0].drop_path.__class__.__name__ == "Identity"
    assert model.stages[3][2].drop_path.p == pytest.approx(0.35)
    assert model.stages[2][0].drop_path.p == pytest.approx(0.35 * 6 / 35)


def test_backbone_output_contract():
    model = create_model("convnext_tiny").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert isinstance(out, ModelOutput) and out.logits is None
    assert out.features.shape == (1, 768)
    assert out.extras["feature_map"].shape == (1, 768, 2, 2)


def test_drop_path_keeps_expectation_and_is_off_in_eval():
    torch.manual_seed(0)
    x = torch.ones(4000, 3)
    y = drop_path(x, 0.25, training=True)
    kept = (y[:, 0] != 0).float().mean().item()
    assert 0.72 < kept < 0.78
    assert torch.all((y == 0) | ((y - 1 / 0.75).abs() < 1e-6))
    assert torch.equal(drop_path(x, 0.25, training=False), x)


def test_rejects_wrong_number_of_stages():
    with pytest.raises(ValueError, match="4 stages"):
        ConvNeXt(depths=(1, 1, 1), dims=(8, 16, 32))
