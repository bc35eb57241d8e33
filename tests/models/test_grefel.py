"""GReFEL / ARBEx: reference equivalence (variant="arbex"), parameter counts, losses, converter,
the GReFEL variant training, recipe card and notebook (docs/papers/grefel.md)."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from ferlib.losses import create_loss
from ferlib.losses.grefel_losses import anchor_loss_arbex, anchor_loss_margin
from ferlib.models import ModelOutput, create_model
from ferlib.models.grefel import reliability
from ferlib.models.grefel.arbex_backbones import ArbexIR50, ArbexMobileFaceNet
from ferlib.models.layers.window_attention import (FeedForward, GlobalWindowAttention, Window,
                                                   relative_position_index, to_query)
from ferlib.testing import REF_DIR, load_ref, read_keys, reference_state
from ferlib.testing import assert_matches_ref
from ferlib.weights import convert_upstream

RTOL, ATOL = 1e-4, 1e-5
MANIFEST = json.loads((REF_DIR / "manifest.json").read_text())["grefel"]


def close(a, b, rtol=RTOL, atol=ATOL):
    assert_matches_ref(a, b, rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def ref_state():
    return reference_state("grefel_keys.txt", model="grefel")


@pytest.fixture(scope="module")
def arbex(ref_state):
    """ARBEx variant with the reference weights, eval mode, trust 0.5 (the reference setting)."""
    model = create_model("grefel", num_classes=7, variant="arbex", trust=0.5)
    model.load_state_dict(convert_upstream("grefel", ref_state), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def arbex_out(arbex):
    with torch.no_grad():
        return arbex(load_ref("grefel_input.pt"))


def _sub(state, prefix):
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


# ---------------------------------------------------------------- structure and sizes

def test_state_dict_keys_shapes_and_order_equal_reference():
    model = create_model("grefel", variant="arbex")
    rows = read_keys(REF_DIR / "grefel_keys.txt")
    sd = model.state_dict()
    assert list(sd) == [k for k, *_ in rows]
    for key, shape, dtype, _ in rows:
        assert tuple(sd[key].shape) == shape and str(sd[key].dtype) == f"torch.{dtype}", key


def test_parameter_counts_equal_manifest():
    model = create_model("grefel", variant="arbex")
    table = MANIFEST["params"]
    named = dict(model.named_modules())
    for name, expected in table.items():
        if name.startswith("<"):
            continue
        assert sum(p.numel() for p in named[name].parameters()) == expected, name
    assert sum(p.numel() for p in model.parameters()) == table["<total>"] == 45_827_474
    assert sum(b.numel() for b in model.buffers()) == table["<buffers>"] == 692_881
    unused = MANIFEST["params_registered_but_unused_in_forward"]
    vit = model.vit.vit
    counted = {
        "vit.vit.CON1": vit.CON1, "vit.vit.IRLinear1": vit.IRLinear1, "vit.vit.IRLinear2": vit.IRLinear2,
        "vit.vit.patch_embed": vit.patch_embed,
    }
    for name, module in counted.items():
        assert sum(p.numel() for p in module.parameters()) == unused[name], name
    assert sum(p.numel() for b in vit.blocks for p in b.conv.parameters()) == unused["vit.vit.blocks.*.conv"]
    counted_params = {k: unused[k] for k in (*counted, "vit.vit.blocks.*.conv")}
    # frozen backbones: trainable = total − IR-50 − MobileFaceNet (docs/papers/grefel.md §3, ≈ 27.3 M), less the unused ViT
    # modules above (frozen, so DDP needs no find_unused_parameters)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 45_827_474 - 17_611_968 - 911_232 - sum(counted_params.values()) == 27_304_274 - 1_619_016


# ---------------------------------------------------------------- reference outputs (arbex variant)

def test_arbex_outputs_match_reference(arbex_out):
    ref = load_ref("grefel_output.pt")
    ex = arbex_out.extras
    close(arbex_out.logits, ref["logits"])
    close(arbex_out.features, ref["embedding"])
    for key in ("embedding", "distances", "prob", "confidence", "similarities", "confidence_geometric",
                "attention", "confidence_attention", "correction", "corrected"):
        close(ex[key], ref[key])
    assert isinstance(arbex_out, ModelOutput)


def test_arbex_outputs_at_delta_005(arbex, arbex_out):
    ref = load_ref("grefel_output.pt")
    with torch.no_grad():
        h = arbex.heads(arbex_out.extras["embedding"], delta=0.05, trust=0.5)
    for key in ("similarities", "confidence_geometric", "correction", "corrected"):
        close(h[key], ref[f"{key}_delta_0.05"])


def test_attention_is_batch_coupled_as_coded_and_per_sample_on_request(arbex, arbex_out):
    ref = load_ref("grefel_output.pt")
    e = arbex_out.extras["embedding"]
    with torch.no_grad():
        per_sample = arbex.self_attn(e, batch_coupled=False)
        alone = torch.cat([arbex.self_attn(e[i:i + 1]) for i in range(2)])
    close(per_sample, ref["attention_per_sample"])
    close(alone, ref["attention_per_sample"])  # a batch of one is not coupled
    gap = (arbex_out.extras["attention"] - per_sample).abs().max().item()
    assert gap == pytest.approx(MANIFEST["attention_batch_coupling_maxdiff"], rel=1e-3)


def test_arbex_loss_matches_reference(arbex_out):
    ref = load_ref("grefel_loss_ref.pt")
    assert float(ref["temperature"]) == float(ref["delta"]) == 1.0
    loss = create_loss("arbex_loss", num_classes=7, class_weights=ref["class_weights"], trust=float(ref["trust"]))
    with torch.no_grad():
        total = loss(arbex_out, ref["labels"])
    for mine, theirs in (("ce", "loss_ce"), ("anchor", "loss_anchor"), ("center", "loss_center")):
        assert float(loss.last[mine]) == pytest.approx(float(ref[theirs]), abs=1e-5), mine
    assert float(total) == pytest.approx(float(ref["loss_total"]), abs=1e-5)


def test_index_relative_is_loaded_from_state_and_swin_by_default(arbex):
    # the reference state holds zeros (integer buffers), and the outputs above depend on them
    assert int(arbex.vit.attns[0].index_relative.abs().sum()) == 0
    fresh = create_model("grefel", variant="arbex")
    idx = fresh.vit.attns[2].index_relative
    assert idx.shape == (49, 49) and int(idx.min()) == 0 and int(idx.max()) == 13 * 13 - 1
    assert torch.equal(idx.diagonal(), torch.full((49,), 6 * 13 + 6))
    assert relative_position_index(2).tolist() == [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]


# ---------------------------------------------------------------- per-module intermediates

@pytest.fixture(scope="module")
def intermediates():
    from ferlib.testing import shared_ref_dir

    d = shared_ref_dir()
    if d is None:
        pytest.skip("../shared/ref with *_intermediates.pt is absent (set FERLIB_SHARED_REF); CI has it")
    return torch.load(d / "grefel_intermediates.pt", map_location="cpu", weights_only=True)


def test_backbone_intermediates(ref_state, intermediates):
    ir = ArbexIR50()
    ir.load_state_dict(_sub(ref_state, "vit.ir."), strict=True)
    landmark = ArbexMobileFaceNet()
    landmark.load_state_dict(_sub(ref_state, "vit.landmark."), strict=True)
    with torch.no_grad():
        for got, want in zip(ir.eval()(intermediates["vit.ir"]["in"]), intermediates["vit.ir"]["out"]):
            close(got, want)
        for got, want in zip(landmark.eval()(intermediates["vit.landmark"]["in"]), intermediates["vit.landmark"]["out"]):
            close(got, want)


def test_fusion_intermediates(arbex, intermediates):
    v, im = arbex.vit, intermediates
    lm = im["vit.landmark"]["out"]
    with torch.no_grad():
        close(v.conv(im["vit.conv"]["in"]), im["vit.conv"]["out"])
        queries = (lm[0], lm[1], im["vit.conv"]["out"])
        for i in range(3):
            close(v.convs[i](im[f"vit.convs.{i}"]["in"]), im[f"vit.convs.{i}"]["out"])
            tokens, shortcut = v.window_module[i](im[f"vit.window_module.{i}"]["in"])
            close(tokens, im[f"vit.window_module.{i}"]["out"][0])
            close(shortcut, im[f"vit.window_module.{i}"]["out"][1])
            att = v.attns[i](im[f"vit.attns.{i}"]["in"], to_query(queries[i], v.heads[i]))
            close(att, im[f"vit.attns.{i}"]["out"])
            close(v.ffns[i](im[f"vit.ffns.{i}"]["in"], im[f"vit.window_module.{i}"]["out"][1]), im[f"vit.ffns.{i}"]["out"])
            close(v.embs[i](im[f"vit.embs.{i}"]["in"]), im[f"vit.embs.{i}"]["out"])
        close(v.vit(im["vit.vit"]["in"]), im["vit.vit"]["out"])
        for name in ("blocks.0", "blocks.1", "norm", "se_block"):
            module = dict(v.vit.named_modules())[name]
            close(module(im[f"vit.vit.{name}"]["in"]), im[f"vit.vit.{name}"]["out"])


def test_window_layers_standalone_match_intermediates(ref_state, intermediates):
    """The layers of ferlib.models.layers.window_attention on their own, scale 1 (14×14, 4 heads)."""
    win, att, ffn = Window(128, 14), GlobalWindowAttention(128, 4, 14), FeedForward(128, 14)
    win.load_state_dict(_sub(ref_state, "vit.window_module.1."))
    att.load_state_dict(_sub(ref_state, "vit.attns.1."))
    ffn.load_state_dict(_sub(ref_state, "vit.ffns.1."))
    im = intermediates
    with torch.no_grad():
        _, shortcut = win(im["vit.window_module.1"]["in"])
        out = att(im["vit.attns.1"]["in"], to_query(im["vit.landmark"]["out"][1], 4))
        close(out, im["vit.attns.1"]["out"])
        close(ffn.eval()(out, shortcut), im["vit.ffns.1"]["out"])
    with pytest.raises(ValueError, match="expects a 14×14 map"):
        win(torch.zeros(1, 128, 7, 7))


# ---------------------------------------------------------------- converter (pretrained keymap)

def _keymap():
    rows = [line.split("\t") for line in (REF_DIR / "grefel_pretrained_keymap.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    return dict(rows)


def test_converter_maps_standard_backbone_checkpoints_as_the_keymap():
    keymap = _keymap()
    assert len(keymap) == 613
    ir50 = reference_state("ir50_full_checkpoint_keys.txt", gain=0.6)
    mfn = reference_state("mobilefacenet_keys.txt", gain=0.8)
    state = convert_upstream("grefel", {"ir50": ir50, "mobilefacenet": mfn})
    expected = {new: (ir50 if k in ir50 else mfn)[k] for k, new in keymap.items()}
    assert set(state) == set(expected)
    assert all(state[k] is expected[k] for k in expected)
    assert sum(k.startswith("vit.ir.") for k in state) == 292
    assert sum(k.startswith("vit.landmark.") for k in state) == 321
    # dropped: IR-50 stage 4 + output_layer, the MobileFaceNet GDC head
    assert not any(k.startswith(("vit.ir.body", "vit.ir.output_layer", "vit.landmark.output_layer")) for k in state)
    model = create_model("grefel", variant="arbex")
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert unexpected == [] and not any(k.startswith(("vit.ir.", "vit.landmark.")) for k in missing)


def test_converter_accepts_arbex_separate_files(ref_state):
    parts = {p: _sub(ref_state, p + ".") for p in ("vit", "classifier", "anchors")}
    parts["vit"] = {"module." + k: v for k, v in parts["vit"].items()}  # DataParallel prefix
    state = convert_upstream("grefel", parts)
    assert set(state) == {k for k in ref_state if not k.startswith("self_attn.")}
    with pytest.raises(KeyError, match="expected parts"):
        convert_upstream("grefel", {"vit": parts["vit"], "head": {}})


def test_card_starting_weights_load_the_standard_backbone_files(tmp_path, monkeypatch):
    """ARBEx's get_poster: the standard IR-50 and MobileFaceNet files load through the card's items (with
    the ARBEx key converters) into ``vit.ir`` / ``vit.landmark``; what GReFEL does not use is dropped by name."""
    from ferlib.recipes import load_recipe
    from ferlib.testing import install_weights
    from ferlib.weights.start import load_start, resolve_start

    monkeypatch.setenv("FERLIB_HOME", str(tmp_path))
    monkeypatch.delenv("FERLIB_DATA", raising=False)
    ir50 = install_weights(monkeypatch, tmp_path, "ir50_ms1m", reference_state("ir50_full_checkpoint_keys.txt", gain=0.6))
    mfn = install_weights(monkeypatch, tmp_path, "mobilefacenet_landmark",
                          reference_state("mobilefacenet_keys.txt", gain=0.8), wrap=True)
    model = create_model("grefel", num_anchors=2)
    with pytest.warns(Warning, match="dropped") as caught:  # stage 4, output layers, GDC head: named
        ir_report, mfn_report = load_start(model, resolve_start("card", load_recipe("grefel", "rafdb").pretrained))
    assert len([w for w in caught if "dropped" in str(w.message)]) == 2
    assert len(ir_report.loaded) == 292 and len(mfn_report.loaded) == 321
    assert "body.21.res_layer.1.weight" in ir_report.dropped and "output_layer.linear.weight" in mfn_report.dropped
    sd = model.state_dict()
    assert torch.equal(sd["vit.ir.net_3.net.13.res.3.weight"], ir50["body.20.res_layer.3.weight"])
    assert torch.equal(sd["vit.landmark.path_3.2.net.1.running_var"], mfn["conv_6_sep.bn.running_var"])
    assert all(not p.requires_grad for p in model.vit.ir.parameters())          # frozen, as ARBEx
    # a whole GReFEL state saved by ferlib loads back as a file
    torch.save(model.state_dict(), tmp_path / "grefel_start.pt")
    again = create_model("grefel", num_anchors=2, weights=str(tmp_path / "grefel_start.pt"))
    assert torch.equal(again.state_dict()["vit.ir.input_layer.0.weight"], ir50["input_layer.0.weight"])


# ---------------------------------------------------------------- reliability balancing and losses

def test_confidence_and_correction_formulas():
    p = torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    close(reliability.confidence(p), torch.tensor([[1.0], [0.0]]))
    d = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    s = reliability.anchor_similarities(d, delta=1.0)
    w = torch.exp(-torch.tensor([0.0, 1.0, 2.0, 3.0]))
    close(s, torch.stack([w[:2].sum(), w[2:].sum()])[None] / w.sum())
    prob, conf, corr = torch.tensor([[0.6, 0.4]]), torch.tensor([[0.5]]), torch.tensor([[0.2, 0.8]])
    close(reliability.corrected(prob, conf, corr, 1.0), torch.tensor([[0.4, 0.6]]))
    close(reliability.corrected(prob, conf, corr, 0.0), prob)


def test_anchor_losses_by_hand():
    a = torch.zeros(2, 1, 4)
    a[1, 0, 0] = 2.0  # one pair at distance 2, counted in both orders
    assert float(anchor_loss_arbex(a)) == pytest.approx(-2 * 4.0 / 1 / 2.0)
    assert float(anchor_loss_margin(a, margin=0.5)) == pytest.approx(0.0)  # gap 2/√4 = 1 ≥ 0.5
    assert float(anchor_loss_margin(a, margin=1.5)) == pytest.approx(0.25)
    assert float(anchor_loss_margin(torch.zeros(3, 2, 4), margin=0.5)) == pytest.approx(0.25)


def _fake_output(b=4, c=7, k=3, e=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, generator=g)
    prob = logits.softmax(-1)
    sims = torch.randn(b, c, generator=g).softmax(-1)
    att = torch.randn(b, c, generator=g).softmax(-1)
    ex = {"prob": prob, "confidence": reliability.confidence(prob), "distances": torch.rand(b, c, k, generator=g) * 5,
          "anchors": torch.randn(c, k, e, generator=g)}
    ex.update(reliability.correction(sims, att))
    return ModelOutput(logits, torch.zeros(b, e), ex)


def test_grefel_loss_weights_switch_terms():
    out, y = _fake_output(), torch.tensor([0, 3, 6, 2])
    ce_only = create_loss("grefel_loss", num_classes=7, lambda_anchor=0, lambda_center=0, label_smoothing=0.0, trust=0.0)
    # t = 0: p̂ = p, so CE-only is the plain cross-entropy of the classifier
    assert float(ce_only(out, y)) == pytest.approx(float(F.cross_entropy(out.logits, y)), abs=1e-5)
    full = create_loss("grefel_loss", num_classes=7, trust=1.0, anchor_margin=10.0)
    total = float(full(out, y))
    parts = full.last
    center = out.extras["distances"][torch.arange(4), y].min(-1).values.mean() / math.sqrt(8)
    assert float(parts["center"]) == pytest.approx(float(center), abs=1e-6)
    assert float(parts["anchor"]) > 0
    assert total == pytest.approx(float(parts["ce"] + parts["anchor"] + parts["center"]), abs=1e-5)
    half = create_loss("grefel_loss", num_classes=7, trust=1.0, anchor_margin=10.0, lambda_anchor=0.5, lambda_center=2.0)
    assert float(half(out, y)) == pytest.approx(float(parts["ce"] + 0.5 * parts["anchor"] + 2 * parts["center"]), abs=1e-5)


def test_grefel_loss_trust_ramp_counts_training_steps():
    out, y = _fake_output(), torch.tensor([0, 1, 2, 3])
    loss = create_loss("grefel_loss", num_classes=7, trust_steps=4)
    seen = []
    for _ in range(6):
        loss(out, y)
        seen.append(loss.last["trust"])
    assert seen == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    with torch.no_grad():
        loss(out, y)
    assert loss.steps == 6
    with pytest.raises(KeyError, match="extras\\['prob'\\]"):
        loss(ModelOutput(out.logits, out.features, {}), y)


# ---------------------------------------------------------------- GReFEL variant

def test_grefel_variant_options_and_errors():
    with pytest.raises(ValueError, match="variant must be one of"):
        create_model("grefel", variant="poster")
    with pytest.raises(ValueError, match="no reduction layer"):
        create_model("grefel", variant="arbex", reduction_dim=256)
    with pytest.raises(ValueError, match="must divide"):
        create_model("grefel", attn_heads=2)
    m = create_model("grefel", reduction_dim=256, num_anchors=4, delta=0.1)
    assert m.delta == 0.1 and not m.self_attn.batch_coupled and m.balanced_prediction
    assert m.anchors.anchors.shape == (7, 4, 256) and m.anchors.anchors.std() > 0.1  # not the ARBEx zeros
    assert "reduction.weight" in m.state_dict()
    e = torch.randn(3, 256)
    with torch.no_grad():
        h = m.eval().heads(e)
        # per-sample attention: a sample's distribution does not depend on the rest of the batch
        close(h["attention"][:1], m.heads(e[:1])["attention"])
    assert h["distances"].shape == (3, 7, 4)
    close(h["corrected"].sum(-1), torch.ones(3))
    assert create_model("grefel", variant="arbex", temperature=2.0).delta == 2.0  # ARBEx: δ = T


@pytest.mark.slow  # trains both variants
def test_grefel_variant_trains():
    torch.manual_seed(0)
    model = create_model("grefel", num_classes=7).train()
    for m in model.modules():  # deterministic steps: the loss values are then comparable
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    loss = create_loss("grefel_loss", num_classes=7, trust=0.5)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    x, y = torch.randn(4, 3, 112, 112), torch.tensor([0, 1, 2, 3])
    values = []
    for _ in range(5):
        out = model(x)
        assert out.logits.shape == (4, 7) and out.features.shape == (4, 768)
        value = loss(out, y)
        opt.zero_grad()
        value.backward()
        opt.step()
        values.append(float(value.detach()))
    assert all(math.isfinite(v) for v in values)
    assert values[-1] < values[0] - 0.1, values
    assert model.anchors.anchors.grad is not None and model.self_attn.V.weight.grad is not None
    # frozen backbones, and the parameters ARBEx registers but never calls, get no gradient
    vit = model.vit.vit
    for m in (model.vit.ir, model.vit.landmark, vit.CON1, vit.IRLinear1, vit.IRLinear2, vit.patch_embed,
              vit.blocks[0].conv):
        assert all(p.grad is None for p in m.parameters())
    assert model.vit.embs[2].proj.weight.grad is not None


# ---------------------------------------------------------------- recipe card and notebook

def test_recipe_card():
    from ferlib.data.samplers import build_sampler
    from ferlib.recipes import load_recipe

    class Targets:
        def __init__(self, targets):
            self.targets = targets

    ferplus = load_recipe("grefel", "ferplus")
    assert (ferplus.batch_size, ferplus.lr, ferplus.weight_decay, ferplus.epochs) == (32, 1e-4, 0.01, 100)
    assert (ferplus.input_size, ferplus.stored_size, ferplus.reported["accuracy"]) == (224, 256, 89.2)
    for name, acc in (("rafdb", 88.7), ("fer2013", 75.1)):
        r = load_recipe("grefel", name)
        assert r.sampler == "class_balanced" and r.sampler_kwargs == {"n_per_class": 500}
        sampler = build_sampler(r.sampler, Targets([0] * 900 + [1] * 30 + [2] * 600), seed=1, **r.sampler_kwargs)
        assert len(list(iter(sampler))) == 1500
        assert (r.lr, r.schedule, r.schedule_kwargs["gamma"], r.epochs) == (3e-4, "exponential", 0.995, 1000)
        assert r.reported["accuracy"] == acc and r.source
    syn = load_recipe("grefel", "synthetic")
    assert syn.loss == "grefel_loss" and syn.loss_kwargs["label_smoothing"] == 0.11
    # the CPU demo ([ours, synthetic]): trainable one-unit IR-50 stages at 64×64, the fused tokens read by one
    # Linear, cross-entropy on the classifier alone
    assert syn.model_kwargs == {"variant": "grefel", "num_anchors": 10, "depth": 0, "dim_emb": 192,
                                "freeze_backbones": False, "ir_units": [1, 1, 1], "backbone_size": 64,
                                "vit_global_pool": "flat", "vit_layer_norm": False, "head_hidden": [],
                                "balanced_prediction": False}
    loss = create_loss(syn.loss, num_classes=7, **syn.loss_kwargs)
    assert (loss.lambda_ce, loss.lambda_anchor, loss.lambda_center, loss.current_trust()) == (1.0, 0.0, 0.0, 0.0)
    # the real datasets keep the paper's loss
    loss = create_loss("grefel_loss", num_classes=7, **load_recipe("grefel", "rafdb").loss_kwargs)
    assert (loss.lambda_ce, loss.lambda_anchor, loss.lambda_center, loss.trust) == (1.0, 1.0, 1.0, None)


@pytest.mark.slow
def test_notebook_06_runs_with_loss_parameters(tmp_path, monkeypatch):
    pytest.importorskip("papermill")
    import yaml

    from ferlib.notebooks import execute

    monkeypatch.setenv("FERLIB_RESULTS", str(tmp_path / "results"))
    execute("06_train_grefel", dict(max_steps=2, run_name="nb06", lambda_center=0.5, num_anchors=4), output_dir=tmp_path)
    run_dir = tmp_path / "results" / "runs" / "nb06"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["recipe"]["model_kwargs"]["num_anchors"] == 4
    assert config["recipe"]["loss_kwargs"]["lambda_center"] == 0.5
    assert config["recipe"]["loss_kwargs"]["label_smoothing"] == 0.11
    assert (run_dir / "confusion.png").exists() and (run_dir / "predictions.npz").exists()


def test_ferplus_card_augmentations_follow_the_spec():
    """docs/papers/grefel.md §9.6: Resize 256 → RandomCrop 224, rotation ±30°, shear ±15°, perspective 0.3,
    ColorJitter 0.4, flip; every step is a real transform (no approximation)."""
    from torchvision.transforms import v2

    from ferlib.data.batched_aug import BatchedAffine, BatchedColorJitter, BatchedPerspective, BatchedRotation
    from ferlib.data.transforms import _pipeline, build_batch_transform
    from ferlib.recipes import load_recipe

    r = load_recipe("grefel", "ferplus")
    assert r.train_transforms == ("resize", "random_crop", "rotation", "affine", "perspective", "color_jitter", "hflip")
    steps = [m for _, m in _pipeline(r)]  # whole-batch ops with torchvision's parameters (ferlib.data.batched_aug)
    resize = next(t for t in steps if isinstance(t, v2.Resize))
    affine = next(t for t in steps if isinstance(t, BatchedAffine))
    rotation = next(t for t in steps if isinstance(t, BatchedRotation))
    perspective = next(t for t in steps if isinstance(t, BatchedPerspective))
    jitter = next(t for t in steps if isinstance(t, BatchedColorJitter))
    assert resize.size == [256] and list(rotation.degrees) == [-30.0, 30.0]
    assert list(affine.shear) == [-15.0, 15.0] and list(affine.degrees) == [0.0, 0.0]
    assert perspective.distortion_scale == 0.3 and jitter.brightness == (0.6, 1.4)
    t = build_batch_transform(r, train=True)
    assert not t.pre_resize                               # the 256 stored image is not squashed to 224 first
    out = t(torch.randint(0, 256, (2, 3, 256, 256), dtype=torch.uint8))
    assert out.shape == (2, 3, 224, 224)


def test_grefel_trust_follows_the_run_progress_under_the_engine(tmp_path):
    """docs/papers/grefel.md §4: t = n_iter / num_iters, linear 0 → 1 over the whole run — also across a resume."""
    from torch import nn

    from ferlib.data import load_dataset
    from ferlib.engine import fit
    from ferlib.losses import create_loss
    from ferlib.models.registry import ModelOutput
    from ferlib.recipes import load_recipe

    loss = create_loss("grefel_loss", num_classes=7)
    loss.set_progress(0.25)
    assert loss.current_trust() == 0.25

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.seen = []

        def set_progress(self, fraction):
            self.seen.append(fraction)

        def forward(self, out, y):
            return nn.functional.cross_entropy(out.logits, y)

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3 * 8 * 8, 7)

        def forward(self, x):
            return ModelOutput(self.fc(x.flatten(1)), x.flatten(1), {})

    ds = load_dataset("synthetic", tmp_path / "syn", "train", n_train=40, n_test=8, progress=False)
    recipe = load_recipe("baseline", "synthetic", input_size=8, batch_size=10, epochs=2, train_transforms=())
    rec = Recorder()
    fit(Tiny(), rec, recipe, ds, ds, tmp_path / "run", progress=False, stop_after_steps=3)
    fit(Tiny(), rec, recipe, ds, ds, tmp_path / "run", progress=False)         # resumed from step 3
    assert rec.seen == [i / 8 for i in range(8)]                               # 2 epochs × 4 updates
