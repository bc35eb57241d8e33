"""The CPU demo's smaller backbone input (``backbone_size``, FERMam and GReFEL; issue 24): shapes, limits, and that
the paper's default (112) builds the very same network."""
import pytest
import torch

from ferlib.models import create_model
from ferlib.models.backbones import IR50
from ferlib.models.grefel.poster import PosterV2


def test_ir50_token_view_follows_the_input_size():
    x = torch.randn(2, 3, 100, 100)
    assert IR50(num_stages=3, units=[1, 1, 1]).eval()(x).shape == (2, 49, 1024)
    small = IR50(num_stages=3, units=[1, 1, 1], input_size=64).eval()
    assert [m.shape[-1] for m in small.forward_stages(x)] == [32, 16, 8]
    assert small(x).shape == (2, 16, 1024)  # 256 channels × 8 × 8 viewed as 16 tokens of 1024


@pytest.mark.parametrize("kw, message", [
    (dict(num_stages=3, input_size=72), "another input_size needs 3 stages and a multiple of 16 (the token view), got 72"),
    (dict(num_stages=4, input_size=64), "another input_size needs 3 stages and a multiple of 16 (the token view), got 64 with 4"),
])
def test_ir50_refuses_sizes_without_a_token_view(kw, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        IR50(**kw)


def test_fermam_at_64_has_a_4x4_token_grid():
    model = create_model("fermam", num_classes=7, ir_units=[1, 1, 1], backbone_size=64).train()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.logits.shape == (2, 7) and out.extras["tokens"].shape == (2, 16, 512)
    out.logits.sum().backward()
    assert model.ir_back.input_layer[0].weight.grad.abs().sum() > 0
    # the landmark net's GDC head (a 7×7 depthwise conv) is not run on a 4×4 map: its BN statistics stay at init
    gdc_bn = [m for m in model.face_landback.output_layer.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert all(int(m.num_batches_tracked) == 0 for m in gdc_bn)


def test_fermam_refuses_a_grid_the_pyramid_cannot_pool():
    with pytest.raises(ValueError, match="backbone_size must be 112 or a multiple of 16 of at least 64 .*got 48"):
        create_model("fermam", num_classes=7, backbone_size=48)


def test_poster_default_is_the_papers_network():
    big, small = PosterV2(ir_units=[1, 1, 1]), PosterV2(ir_units=[1, 1, 1], backbone_size=64)
    assert [m.window for m in big.window_module] == [28, 14, 7]
    assert [m.window for m in small.window_module] == [16, 8, 4]
    assert big.vit.pos_embed.shape[1] == 1 + 7 * 7 * 3 and small.vit.pos_embed.shape[1] == 1 + 4 * 4 * 3
    # explicit windows are ARBEx's argument and still win
    assert [m.window for m in PosterV2(ir_units=[1, 1, 1], windows=(28, 14, 7)).window_module] == [28, 14, 7]


def test_grefel_at_64_trains():
    model = create_model("grefel", num_classes=7, ir_units=[1, 1, 1], dim_emb=64, depth=1, freeze_backbones=False,
                         backbone_size=64).train()
    out = model(torch.randn(4, 3, 64, 64))
    assert out.logits.shape == (4, 7) and out.features.shape == (4, 64)
    out.logits.sum().backward()
    assert model.vit.ir.input_layer[0].weight.grad.abs().sum() > 0
