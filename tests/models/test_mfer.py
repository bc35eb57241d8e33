"""MFER against the authors' reference tensors (docs/papers/mfer.md, ref/mfer_*) and its losses by hand."""
import json
import math

import pytest
import torch

from ferlib.losses import create_loss
from ferlib.losses.mfer_losses import DSFLossApprox, LGMLoss, label_smoothing_ce
from ferlib.models import ModelOutput, create_model
from ferlib.models.layers.ds_attention import DSAttention
from ferlib.testing import REF_DIR, load_ref, read_keys, reference_state
from ferlib.weights import convert_upstream

MANIFEST = json.loads((REF_DIR / "manifest.json").read_text())["mfer"]
SMALL = dict(dims=(16, 32, 64, 128), depths=(1, 1, 2, 1))


@pytest.fixture(scope="module")
def ref_model():
    model = create_model("mfer")
    model.load_state_dict(convert_upstream("mfer", reference_state("mfer_keys.txt", model="mfer")), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def ref_output(ref_model):
    with torch.no_grad():
        return ref_model(load_ref("mfer_input.pt"))


def test_state_dict_keys_and_shapes_match_upstream(ref_model):
    expected = [(k, s) for k, s, _, _ in read_keys(REF_DIR / "mfer_keys.txt")]
    got = [(k, tuple(v.shape)) for k, v in ref_model.state_dict().items()]
    assert len(got) == MANIFEST["n_keys"] == 374
    assert got == expected


def test_parameter_counts_match_manifest(ref_model):
    params = MANIFEST["params"]
    assert sum(p.numel() for p in ref_model.parameters()) == params["<total>"] == 155_357_013
    assert sum(b.numel() for b in ref_model.buffers()) == params["<buffers>"] == 0
    for name, count in {**params, **MANIFEST["ds_attention_params"]}.items():
        if not name.startswith("<"):
            assert sum(p.numel() for p in ref_model.get_submodule(name).parameters()) == count, name


def test_outputs_match_reference(ref_output):
    ref = load_ref("mfer_output.pt")
    assert isinstance(ref_output, ModelOutput)
    torch.testing.assert_close(ref_output.features, ref["feature"], rtol=1e-4, atol=1e-5)
    for i, head in enumerate(ref_output.extras["heads"]):
        torch.testing.assert_close(head, ref[f"head{i}"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ref_output.logits, ref["logits"], rtol=1e-4, atol=1e-5)


def test_intermediates_match_reference(ref_model, shared_ref):
    inter = torch.load(shared_ref / "mfer_intermediates.pt", map_location="cpu", weights_only=True)
    assert set(inter) == set(MANIFEST["intermediate_shapes"])
    for name, io in inter.items():
        module = ref_model.get_submodule(name)
        with torch.no_grad():
            out = module(io["in"])
        torch.testing.assert_close(out, io["out"], rtol=1e-4, atol=1e-5, msg=name)


def test_ds_attention_modules_sit_where_upstream_puts_them(ref_model):
    stages = ref_model.backbone.stages
    assert [type(stages[s][-1]).__name__ for s in range(4)] == ["Block", "Block", "DSAttention", "DSAttention"]
    assert len(stages[2]) == 28 and len(stages[3]) == 4
    # the attention conv is dense, not depthwise
    assert stages[3][3].attn.groups == 1 and stages[3][3].attn.weight.shape == (1024, 1024, 7, 7)


def test_drop_path_over_the_36_blocks_only(ref_model):
    full = ref_model  # create_model("mfer") defaults to train.py's drop_path_rate 0.25
    assert full.backbone.stages[3][2].drop_path.p == pytest.approx(0.25)
    assert full.backbone.stages[2][26].drop_path.p == pytest.approx(0.25 * 32 / 35)
    assert not hasattr(full.backbone.stages[2][27], "drop_path")


def test_ds_attention_softmax_is_over_positions():
    torch.manual_seed(0)
    att = DSAttention(16).eval()
    x = torch.randn(2, 16, 5, 5)
    with torch.no_grad():
        att.value.weight.copy_(torch.eye(16))
        att.value.bias.zero_()
        out = att(x) - x  # = softmax_HW(q + k) ⊙ x
        p = x.permute(0, 2, 3, 1)
        weights = (out.permute(0, 2, 3, 1) / p).reshape(2, 25, 16)
    # the attention weights of each channel sum to one over the 25 positions
    torch.testing.assert_close(weights.sum(1), torch.ones(2, 16), rtol=1e-4, atol=1e-4)


def test_loss_matches_reference(ref_output):
    ref = load_ref("mfer_loss_ref.pt")
    loss = create_loss("mfer_loss", smoothing=float(ref["smoothing"]))
    per_head = [label_smoothing_ce(h, ref["labels"], 0.1) for h in ref_output.extras["heads"]]
    torch.testing.assert_close(torch.stack(per_head), ref["per_head"], rtol=0, atol=1e-6)
    torch.testing.assert_close(loss(ref_output, ref["labels"]), ref["total"], rtol=0, atol=1e-6)
    assert ref["total"].item() == pytest.approx(MANIFEST["loss_ref"]["total"], abs=1e-6)


def test_label_smoothing_ce_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    logp = torch.log_softmax(logits, 1)[0]
    expected = 0.9 * -logp[1] + 0.1 * -logp.mean()
    assert label_smoothing_ce(logits, torch.tensor([1]), 0.1).item() == pytest.approx(expected.item(), abs=1e-6)


def _lgm_2d(alpha, lambda_=0.01):
    loss = LGMLoss(num_classes=2, feat_dim=2, alpha=alpha, lambda_=lambda_)
    with torch.no_grad():
        loss.means.copy_(torch.tensor([[0.0, 0.0], [2.0, 0.0]]))
    return loss


def test_lgm_loss_by_hand_and_margin_effect():
    f = torch.tensor([[1.0, 0.0]])  # equidistant: d = [0.5, 0.5]
    y = torch.tensor([0])
    # α = 0: posterior 1/2, likelihood term λ·0.5
    assert _lgm_2d(0.0)(f, y).item() == pytest.approx(math.log(2) + 0.01 * 0.5, abs=1e-6)
    # α = 0.1: true-class logit −0.5·1.1 → CE = log(1 + e^{0.05})
    assert _lgm_2d(0.1)(f, y).item() == pytest.approx(math.log(1 + math.exp(0.05)) + 0.005, abs=1e-6)
    # the margin costs more the farther the sample is from its mean
    f2 = torch.tensor([[0.5, 0.0]])  # d = [0.125, 1.125]
    expected = math.log(1 + math.exp(-1.125 + 0.125 * 1.1)) + 0.01 * 0.125
    assert _lgm_2d(0.1)(f2, y).item() == pytest.approx(expected, abs=1e-6)
    torch.testing.assert_close(_lgm_2d(0.1).logits(f2), torch.tensor([[-0.125, -1.125]]))


def test_lgm_gradients_reach_the_means():
    loss = _lgm_2d(0.1, lambda_=1.0)
    f = torch.tensor([[0.5, 1.0]], requires_grad=True)
    loss(f, torch.tensor([0])).backward()
    assert loss.means.grad is not None and loss.means.grad.abs().sum() > 0
    # gradient descent moves the true mean towards the sample and the other mean away
    step = -loss.means.grad
    assert torch.dot(step[0], torch.tensor([0.5, 1.0]) - torch.tensor([0.0, 0.0])) > 0
    assert torch.dot(step[1], torch.tensor([0.5, 1.0]) - torch.tensor([2.0, 0.0])) < 0
    assert f.grad is not None


def test_dsf_approx_by_hand():
    loss = DSFLossApprox(num_classes=2, feat_dim=2, smoothing=0.1, lambda_=0.01)
    with torch.no_grad():
        loss.centers.copy_(torch.tensor([[0.0, 0.0], [2.0, 0.0]]))
    # f at centre 0: d = [0, 2]; logits [0, −2]
    z = math.log(1 + math.exp(-2))
    lp0, lp1 = -z, -2 - z
    expected = 0.9 * -lp0 + 0.1 * -(lp0 + lp1) / 2 + 0.0
    assert loss(torch.tensor([[0.0, 0.0]]), torch.tensor([0])).item() == pytest.approx(expected, abs=1e-6)
    # label 1 from the same point: the centre pull adds λ·½·2²
    expected = 0.9 * -lp1 + 0.1 * -(lp0 + lp1) / 2 + 0.01 * 2.0
    assert loss(torch.tensor([[0.0, 0.0]]), torch.tensor([1])).item() == pytest.approx(expected, abs=1e-6)


def test_mfer_loss_adds_the_weighted_feature_loss():
    torch.manual_seed(0)
    heads = [torch.randn(4, 7) for _ in range(3)]
    out = ModelOutput(sum(heads), torch.randn(4, 16), {"heads": heads})
    y = torch.tensor([0, 3, 6, 2])
    base = create_loss("mfer_loss", num_classes=7)(out, y)
    assert base.item() == pytest.approx(sum(label_smoothing_ce(h, y, 0.1) for h in heads).item(), abs=1e-6)
    for name, cls in (("lgm", LGMLoss), ("dsf", DSFLossApprox)):
        torch.manual_seed(1)
        combined = create_loss("mfer_loss", num_classes=7, feature_loss=name, feature_loss_weight=0.5, feat_dim=16)
        assert isinstance(combined.feature_loss, cls)
        assert len(list(combined.parameters())) == 1  # the means / centres are optimised with the model
        expected = base + 0.5 * combined.feature_loss(out.features, y)
        assert combined(out, y).item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="feat_dim=1024 but the model's features are 16-d"):
        create_loss("mfer_loss", feature_loss="lgm")(out, y)
    with pytest.raises(ValueError, match="'lgm' or 'dsf'"):
        create_loss("mfer_loss", feature_loss="center")


def test_small_model_trains_one_step():
    torch.manual_seed(0)
    model = create_model("mfer", num_classes=8, **SMALL)
    loss_fn = create_loss("mfer_loss", num_classes=8, feature_loss="lgm", feat_dim=128)
    out = model(torch.randn(2, 3, 64, 64))
    assert out.logits.shape == (2, 8) and out.features.shape == (2, 128)
    assert [h.shape for h in out.extras["heads"]] == [(2, 8)] * 3
    assert [head.in_features for head in model.msc] == [64, 96, 128]
    torch.testing.assert_close(out.logits, sum(out.extras["heads"]))
    loss_fn(out, torch.tensor([1, 7])).backward()
    att = model.backbone.stages[3][-1]
    assert isinstance(att, DSAttention)
    assert att.attn.weight.grad.abs().sum() > 0 and att.key[0].weight.grad.abs().sum() > 0
    assert loss_fn.feature_loss.means.grad.abs().sum() > 0


def test_resnet_stem_is_a_stride_4_conv_bn_relu_pool_and_the_default_is_patchify():
    from torch import nn

    default = create_model("mfer", **SMALL)
    assert [type(m).__name__ for m in default.backbone.downsample_layers[0]] == ["Conv2d", "LayerNorm"]
    model = create_model("mfer", stem="resnet", **SMALL)
    conv, bn, relu, pool = model.backbone.downsample_layers[0]
    assert (conv.kernel_size, conv.stride, conv.padding, conv.out_channels) == ((7, 7), (2, 2), (3, 3), 16)
    assert isinstance(bn, nn.BatchNorm2d) and isinstance(relu, nn.ReLU)
    assert (pool.kernel_size, pool.stride, pool.padding) == (3, 2, 1)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model.backbone.downsample_layers[0](x), pool(relu(bn(conv(x)))))
    assert model.backbone.forward_maps(x).shape == default.backbone.forward_maps(x).shape == (2, 128, 2, 2)
    # every other key is the patchify model's: only the stem's differ
    differ = set(model.state_dict()) ^ set(default.state_dict())
    assert differ and all(k.startswith("backbone.downsample_layers.0.") for k in differ)
    with pytest.raises(ValueError, match="stem must be one of"):
        create_model("mfer", stem="conv", **SMALL)


def test_converter_prefixes_bare_train_py_checkpoints():
    bare = {"module.stages.0.0.gamma": torch.zeros(1), "norm.weight": torch.zeros(1), "msc.0.fc1.bias": torch.zeros(1)}
    assert sorted(convert_upstream("mfer", bare)) == ["backbone.norm.weight", "backbone.stages.0.0.gamma", "msc.0.fc1.bias"]


def test_recipe_card_states_the_paper_numbers_and_builds():
    from ferlib.recipes import load_recipe

    reported = {"rafdb": 0.9208, "affectnet8": 0.6315, "affectnet": 0.6706, "ferplus": 0.9109}
    for dataset, acc in reported.items():
        recipe = load_recipe("mfer", dataset)
        assert recipe.reported["accuracy"] == acc and "README" in recipe.source
        assert (recipe.optimizer, recipe.lr, recipe.schedule, recipe.schedule_kwargs["gamma"]) == ("adamw", 1e-3, "exponential", 0.95)
        assert (recipe.epochs, recipe.batch_size, recipe.input_size, recipe.train_transforms) == (100, 32, 224, ())
    smoke = load_recipe("mfer", "synthetic", loss_kwargs={"feature_loss": "dsf"})
    model = create_model(smoke.model, num_classes=smoke.num_classes, **smoke.model_kwargs)
    loss = create_loss(smoke.loss, num_classes=smoke.num_classes, **smoke.loss_kwargs)
    out = model(torch.randn(2, 3, smoke.input_size, smoke.input_size))
    assert torch.isfinite(loss(out, torch.tensor([0, 1])))


@pytest.mark.slow
def test_notebook_07_runs_with_a_feature_loss(tmp_path, monkeypatch):
    pytest.importorskip("papermill")
    import yaml

    from ferlib.notebooks import execute

    monkeypatch.setenv("FERLIB_RESULTS", str(tmp_path / "results"))
    execute("07_train_mfer", dict(max_steps=2, feature_loss="lgm", feature_loss_weight=0.1, run_name="nb07"), output_dir=tmp_path)
    run_dir = tmp_path / "results" / "runs" / "nb07"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["recipe"]["loss_kwargs"]["feature_loss"] == "lgm"
    assert config["recipe"]["loss_kwargs"]["feature_loss_weight"] == 0.1
    assert (run_dir / "confusion.png").exists() and (run_dir / "predictions.npz").exists()
