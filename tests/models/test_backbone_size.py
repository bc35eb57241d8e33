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


def test_vit_readout_options_compute_the_mean_of_the_token_outputs_without_layernorm():
    from ferlib.models.grefel.poster import VisionTransformer
    torch.manual_seed(0)
    vit = VisionTransformer(num_tokens=6, embed_dim=16, depth=1, num_heads=2, global_pool="avg", layer_norm=False).eval()
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in vit.modules())
    tokens = torch.randn(3, 6, 16)
    # by hand: one pre-norm block with its norms gone, then the mean of the 6 token outputs (cls left out), then SE
    block = vit.blocks[0]
    x = torch.cat([vit.cls_token.expand(3, -1, -1), tokens], dim=1) + vit.pos_embed
    x = x + block.attn(x)
    x = x + block.mlp(x)
    pooled = x[:, 1:].sum(dim=1) / 6
    expected = pooled * torch.sigmoid(vit.se_block.linear2(torch.relu(vit.se_block.linear1(pooled))))
    torch.testing.assert_close(vit(tokens), expected)
    # the default is ARBEx's: LayerNorms and the cls token
    arbex = VisionTransformer(num_tokens=6, embed_dim=16, depth=1, num_heads=2).eval()
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in arbex.modules()) == 3
    out = arbex.norm(arbex.blocks(torch.cat([arbex.cls_token.expand(3, -1, -1), tokens], 1) + arbex.pos_embed))[:, 0]
    torch.testing.assert_close(arbex(tokens), arbex.se_block(out))
    with pytest.raises(ValueError, match=r"global_pool must be one of \('token', 'avg', 'flat'\) .*got 'max'"):
        VisionTransformer(num_tokens=6, embed_dim=16, depth=1, num_heads=2, global_pool="max")


def test_vit_flat_readout_is_one_linear_over_the_flattened_token_outputs():
    from ferlib.models.grefel.poster import VisionTransformer
    torch.manual_seed(0)
    vit = VisionTransformer(num_tokens=6, embed_dim=16, depth=0, num_heads=2, global_pool="flat", layer_norm=False)
    assert vit.flat.weight.shape == (16, 6 * 16) and not vit.cls_token.requires_grad  # depth 0: nothing reads it
    tokens = torch.randn(3, 6, 16)
    x = tokens + vit.pos_embed[:, 1:]  # no blocks, no norms
    # by hand: token t's feature e sits at column t·16 + e of the Linear
    w = vit.flat.weight.reshape(16, 6, 16)
    pooled = torch.einsum("bte,ote->bo", x, w) + vit.flat.bias
    expected = pooled * torch.sigmoid(vit.se_block.linear2(torch.relu(vit.se_block.linear1(pooled))))
    torch.testing.assert_close(vit(tokens), expected)
    # the readout keeps positions: swapping two tokens changes the output (the mean would not see it)
    assert not torch.allclose(vit(tokens), vit(tokens[:, [1, 0, 2, 3, 4, 5]]))
    out = vit(tokens).sum()
    out.backward()
    assert vit.flat.weight.grad.abs().sum() > 0 and vit.cls_token.grad is None


def test_grefel_passes_the_readout_options_to_its_vit():
    model = create_model("grefel", num_classes=7, ir_units=[1, 1, 1], dim_emb=32, depth=1, backbone_size=64,
                         vit_global_pool="avg", vit_layer_norm=False)
    assert model.vit.vit.global_pool == "avg" and isinstance(model.vit.vit.norm, torch.nn.Identity)
