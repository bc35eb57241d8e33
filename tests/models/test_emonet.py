"""EMO-Net against the authors' reference tensors (docs/papers/emonet.md, ref/emonet_*)."""
import json
import math

import pytest
import torch

from ferlib.models import ModelOutput, create_model
from ferlib.models.emonet import InvertedResidual
from ferlib.models.layers.eca import EfficientChannelAttention, eca_kernel_size
from ferlib.testing import REF_DIR, load_ref, read_keys, reference_state
from ferlib.weights import convert_upstream

MANIFEST = json.loads((REF_DIR / "manifest.json").read_text())["emonet"]


@pytest.fixture(scope="module")
def ref_model():
    model = create_model("emonet")
    state = convert_upstream("emonet", reference_state("emonet_keys.txt", model="emonet"))
    model.load_state_dict(state, strict=True)
    return model.eval()


def test_state_dict_keys_and_shapes_match_upstream():
    model = create_model("emonet")
    expected = [(k, s) for k, s, _, _ in read_keys(REF_DIR / "emonet_keys.txt")]
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == expected


def test_parameter_counts_match_manifest():
    model = create_model("emonet")
    params = MANIFEST["params"]
    assert sum(p.numel() for p in model.parameters()) == params["<total>"] == 2_310_738
    assert sum(b.numel() for b in model.buffers()) == params["<buffers>"]
    for name, count in params.items():
        if not name.startswith("<"):
            module = model.get_submodule(name)
            assert sum(p.numel() for p in module.parameters()) == count, name


def test_blocks_follow_manifest_table():
    model = create_model("emonet")
    for row in MANIFEST["blocks"]:
        block = model.get_submodule(row["name"])
        assert isinstance(block, InvertedResidual)
        assert (block.dowmSample is not None) == row["projection_shortcut"], row["name"]
        assert block.channel.conv1.kernel_size[0] == row["eca_k"], row["name"]
    for channels, k in MANIFEST["eca_kernel_by_channels"].items():
        assert eca_kernel_size(int(channels)) == k


@pytest.mark.parametrize("lam,key", [(0.8, "logits"), (0.5, "logits_lambda_0.5"), (0.6, "logits_lambda_0.6")])
def test_logits_match_reference(ref_model, lam, key):
    x = load_ref("emonet_input.pt")
    ref = load_ref("emonet_output.pt")
    ref_model.lam = lam
    try:
        with torch.no_grad():
            out = ref_model(x)
    finally:
        ref_model.lam = 0.8
    assert isinstance(out, ModelOutput)
    torch.testing.assert_close(out.logits, ref[key], rtol=1e-4, atol=1e-5)
    if lam == 0.8:
        torch.testing.assert_close(out.features, ref["pooled"], rtol=1e-4, atol=1e-5)


def test_lambda_changes_the_function(ref_model):
    ref = load_ref("emonet_output.pt")
    assert not torch.allclose(ref["logits"], ref["logits_lambda_0.5"], atol=1e-3)
    model = create_model("emonet", lam=0.5)
    assert model.lam == 0.5 and all(b.lam == 0.5 for b in model.features if isinstance(b, InvertedResidual))
    assert create_model("emonet").lam == 0.8
    with pytest.raises(TypeError, match="unexpected keyword argument 'shortcut_weight'"):  # lam has no alias
        create_model("emonet", shortcut_weight=0.6)


def test_intermediates_match_reference(ref_model, shared_ref):
    inter = torch.load(shared_ref / "emonet_intermediates.pt", map_location="cpu", weights_only=True)
    assert len(inter) == 10
    with torch.no_grad():
        for name, io in inter.items():
            out = ref_model.get_submodule(name)(io["in"])
            torch.testing.assert_close(out, io["out"], rtol=1e-4, atol=1e-5, msg=name)


def test_eca_returns_gate():
    eca = EfficientChannelAttention(24)
    x = torch.randn(2, 24, 5, 5)
    gate = eca(x)
    assert gate.shape == (2, 24, 1, 1)
    pooled = x.mean((2, 3))
    w = eca.conv1.weight.view(3)
    padded = torch.nn.functional.pad(pooled, (1, 1))
    manual = torch.sigmoid(w[0] * padded[:, :-2] + w[1] * padded[:, 1:-1] + w[2] * padded[:, 2:])
    torch.testing.assert_close(gate.view(2, 24), manual)


def test_eca_conv_keeps_pytorch_default_init():
    torch.manual_seed(0)
    model = create_model("emonet")
    for m in model.modules():
        if isinstance(m, EfficientChannelAttention):
            k = m.conv1.weight.numel()
            assert m.conv1.weight.abs().max() <= 1 / math.sqrt(k)   # kaiming-uniform(a=√5) bound
    assert torch.all(model.classifier[1].bias == 0)


def test_eight_classes_forward_backward():
    model = create_model("emonet", num_classes=8)
    assert model.classifier[1].weight.shape == (8, 1280)
    out = model(torch.randn(2, 3, 64, 64))
    assert out.logits.shape == (2, 8) and out.features.shape == (2, 1280)
    out.logits.sum().backward()
    assert model.features[1].dowmSample[0].weight.grad is not None


@pytest.mark.slow
def test_notebook_05_runs_with_lam_parameter(tmp_path, monkeypatch):
    pytest.importorskip("papermill")
    import yaml

    from ferlib.notebooks import execute

    monkeypatch.setenv("FERLIB_RESULTS", str(tmp_path / "results"))
    execute("05_train_emonet", dict(max_steps=2, lam=0.6, run_name="nb05"), output_dir=tmp_path)
    run_dir = tmp_path / "results" / "runs" / "nb05"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["recipe"]["model_kwargs"]["lam"] == 0.6
    assert (run_dir / "confusion.png").exists() and (run_dir / "predictions.npz").exists()


def test_recipe_card_follows_the_code():
    """Spec docs/papers/emonet.md §5–§6: SGD lr 1e-3 (momentum 0.9, wd 1e-5), batch 16, 100 epochs, no scheduler;
    RandomResizedCrop 224 + flip; evaluation Resize(256) → CenterCrop(224); λ of each reported number."""
    from ferlib.data.transforms import build_batch_transform
    from ferlib.recipes import load_recipe

    r = load_recipe("emonet", "rafdb")
    assert (r.optimizer, r.lr, r.weight_decay, r.optimizer_kwargs, r.schedule) == (
        "sgd", 1e-3, 1e-5, {"momentum": 0.9}, None)
    assert (r.batch_size, r.epochs, r.input_size, r.loss) == (16, 100, 224, "cross_entropy")
    assert r.train_transforms == ("random_resized_crop", "hflip") and r.test_transforms == ("resize_center_crop",)
    assert r.model_kwargs["lam"] == 0.5 and load_recipe("emonet", "affectnet").model_kwargs["lam"] == 0.6
    # a 100×120 image: shorter side → 256 (256×307), centre 224×224 — not a squash to 224×224
    x = torch.zeros(1, 3, 120, 100, dtype=torch.uint8)
    x[..., :10, :] = 255                                   # a top band the centre crop must cut away
    out = build_batch_transform(r, train=False)(x)
    assert out.shape == (1, 3, 224, 224)
    assert out[0, 0, 0].max() < 0                            # first row is black after normalisation
