"""MMFRM (landmark MobileFaceNet + expression network) against the authors' reference tensors."""
import json

import pytest
import torch

from ferlib.models import ModelOutput, create_model
from ferlib.testing import REF_DIR, assert_matches_ref, load_ref, read_keys, reference_state
from ferlib.weights import convert_upstream

MANIFEST = json.loads((REF_DIR / "manifest.json").read_text())["mmfrm"]


def upstream_states():
    return {
        "network": reference_state("mmfrm_keys.txt", model="mmfrm"),
        "landmark": reference_state("mmfrm_mobilefacenet_keys.txt", model="mmfrm"),
    }


@pytest.fixture(scope="module")
def ref_model():
    model = create_model("mmfrm", landmark_mode="follow")
    model.load_state_dict(convert_upstream("mmfrm", upstream_states()), strict=True)
    return model.eval()


def meta_model(**kwargs):
    """Structure only (no memory, no init): enough for keys, shapes, counts and mode flags."""
    with torch.device("meta"):
        return create_model("mmfrm", **kwargs)


def test_state_dict_keys_are_the_two_upstream_layouts():
    model = meta_model()
    state = model.state_dict()
    for prefix, keys_file in (("network", "mmfrm_keys.txt"), ("landmark", "mmfrm_mobilefacenet_keys.txt")):
        expected = [(f"{prefix}.{k}", s) for k, s, _, _ in read_keys(REF_DIR / keys_file)]
        got = [(k, tuple(v.shape)) for k, v in state.items() if k.startswith(prefix + ".")]
        assert got == expected, prefix
    assert len(state) == 219 + 337


def test_parameter_counts_match_manifest():
    model = meta_model()
    for part, table in (("network", MANIFEST["params"]["MMFRM"]), ("landmark", MANIFEST["params"]["MobileFaceNet"])):
        sub = model.get_submodule(part)
        assert sum(p.numel() for p in sub.parameters()) == table["<total>"], part
        assert sum(b.numel() for b in sub.buffers()) == table["<buffers>"], part
        for name, count in table.items():
            if not name.startswith("<"):
                assert sum(p.numel() for p in sub.get_submodule(name).parameters()) == count, f"{part}.{name}"
    assert sum(p.numel() for p in model.parameters()) == 35_191_435
    # trainable: the network without its never-called bn1 (frozen, so DDP needs no find_unused_parameters)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 33_986_819 - 128


@pytest.fixture(scope="module")
def ref_forward(ref_model):
    x = load_ref("mmfrm_input.pt")
    with torch.no_grad():
        return ref_model(x), ref_model.landmark(x)


#: rtol, and atol as a fraction of the reference's largest magnitude (ferlib.testing.assert_matches_ref).
MMFRM_NETWORK_TOL = dict(rtol=1e-3, atol=1e-4)


def test_outputs_match_reference(ref_forward):
    ref = load_ref("mmfrm_output.pt")
    out, (f1, f2, f3, att_l, out_l) = ref_forward
    assert isinstance(out, ModelOutput) and out.features.shape == (2, 512)
    # The expression network amplifies fp32 rounding (TCFMM3 activations reach 203): its logits differ from the
    # reference by up to 2e-4 relative between CPU kernels and thread counts, so they get MMFRM's looser bound.
    assert_matches_ref(out.logits, ref["network"]["logits"], **MMFRM_NETWORK_TOL)
    assert_matches_ref(out.extras["attention_weights"], ref["network"]["attention_weights"], **MMFRM_NETWORK_TOL)
    for got, key in ((f1, "feature1"), (f2, "feature2"), (f3, "feature3"), (att_l, "attention_weights"), (out_l, "out")):
        assert_matches_ref(got, ref["landmark"][key], msg=key)


def test_intermediates_match_reference(ref_model, shared_ref):
    inter = torch.load(shared_ref / "mmfrm_intermediates.pt", map_location="cpu", weights_only=True)
    captured = {}
    handles = [
        ref_model.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: captured.__setitem__(name, o))
        for name in inter if name != "landmark.output_layer"
    ]
    try:
        with torch.no_grad():
            ref_model(load_ref("mmfrm_input.pt"))
            captured["landmark.output_layer"] = ref_model.landmark.output_layer(captured["landmark.conv_6_sep"])
    finally:
        for h in handles:
            h.remove()
    assert set(captured) == set(inter) and len(inter) == 21
    for name, expected in inter.items():
        # TCFMM3's 1024-channel sums (|x| up to 203) differ by 2.3e-2 at one entry between CPU kernels (AMD EPYC
        # AVX-512 vs the reference machine)
        assert_matches_ref(captured[name], expected, msg=name, **MMFRM_NETWORK_TOL)


def test_sigmoid_gate_scales_logits_without_changing_argmax(ref_model, ref_forward):
    out = ref_forward[0]
    with torch.no_grad():
        raw = ref_model.network.fc(out.features)
    torch.testing.assert_close(out.logits, out.extras["attention_weights"] * raw)
    assert torch.equal(out.logits.argmax(1), raw.argmax(1))


def test_landmark_mode_as_coded_keeps_landmark_in_train_mode():
    model = create_model("mmfrm").eval()
    assert not model.network.training and model.landmark.training
    before = model.landmark.conv1.bn.running_mean.clone()
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    assert not torch.equal(before, model.landmark.conv1.bn.running_mean)   # batch statistics, updated
    frozen = meta_model(landmark_mode="eval").train()
    assert frozen.network.training and not frozen.landmark.training
    follow = meta_model(landmark_mode="follow").eval()
    assert not follow.landmark.training
    with pytest.raises(ValueError, match="landmark_mode"):
        create_model("mmfrm", landmark_mode="frozen")


def test_landmark_is_not_trained_by_default():
    model = create_model("mmfrm", num_classes=8)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.logits.shape == (2, 8)
    out.logits.sum().backward()
    assert all(p.grad is None for p in model.landmark.parameters())
    assert model.network.TCFMM1.conv2.weight.grad is not None
    assert model.network.bn1.weight.grad is None          # built but unused upstream
    trainable = meta_model(train_landmark=True)  # the trunk trains; the head never reaches the output
    head = ("output_layer.", "alpha.", "fc.")
    assert all(p.requires_grad for n, p in trainable.landmark.named_parameters() if not n.startswith(head))
    assert not any(p.requires_grad for n, p in trainable.landmark.named_parameters() if n.startswith(head))


def test_converter_rejects_unknown_parts():
    with pytest.raises(KeyError, match="network"):
        convert_upstream("mmfrm", {"model": {}})
    partial = convert_upstream("mmfrm", {"network": {"fc.bias": torch.zeros(7)}})
    assert list(partial) == ["network.fc.bias"]


@pytest.mark.slow
def test_notebook_04_runs_with_rfloss_parameter(tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    import yaml

    from ferlib.notebooks import execute
    from ferlib.testing import FIXTURES_DIR, _REPO

    monkeypatch.setenv("FERLIB_RESULTS", str(tmp_path / "results"))
    execute("04_train_mmfrm", dict(max_steps=2, rfloss="intended", run_name="nb04"), output_dir=tmp_path)
    run_dir = tmp_path / "results" / "runs" / "nb04"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["recipe"]["loss"] == "ce_rfloss"
    assert config["recipe"]["loss_kwargs"]["variant"] == "intended"
    assert config["recipe"]["pretrained"] == [] and config["plan"]["start"] == []   # the smoke entry needs no file
    assert config["resolved"]["precision"] == "fp32" and config["plan"]["complete_planned"] is False
    assert (run_dir / "confusion.png").exists() and (run_dir / "predictions.npz").exists()
    # -p pretrained True without the landmark checkpoint stops before training, naming the file
    monkeypatch.setenv("FERLIB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FERLIB_DATA", raising=False)
    with pytest.raises(papermill.PapermillExecutionError, match="mobilefacenet_model_best.pth.tar"):
        execute(_REPO / "notebooks" / "04_train_mmfrm.ipynb",
                dict(dataset="rafdb", data_root=str(FIXTURES_DIR / "rafdb" / "basic"), run_name="nb04b"),
                output_dir=tmp_path / "b")
    assert not (tmp_path / "results" / "runs" / "nb04b" / "config.yaml").exists()   # stopped before training


def test_pretrained_landmark_loads_the_face_landmark_checkpoint(tmp_path, monkeypatch):
    """docs/papers/mmfrm.md §3: the trunk comes from pytorch_face_landmark's ``mobilefacenet_model_best.pth.tar``
    (a ``{'state_dict': …}`` with a 136-d head); the tapped map then equals the authors' MobileFaceNet."""
    import dataclasses

    import ferlib.weights.registry as registry
    from ferlib.weights import DroppedKeysWarning, WeightsNotFoundError, get_weights
    from ferlib.weights.load import sha256_of

    monkeypatch.setenv("FERLIB_HOME", str(tmp_path))
    monkeypatch.delenv("FERLIB_DATA", raising=False)
    card = [{"weights": "mobilefacenet_landmark", "into": "landmark"}]
    with pytest.raises(WeightsNotFoundError, match="mobilefacenet_model_best.pth.tar"):
        create_model("mmfrm", weights=card)
    state = reference_state("mobilefacenet_keys.txt", model="mobilefacenet")
    path = tmp_path / "pretrained" / "mobilefacenet_model_best.pth.tar"
    path.parent.mkdir()
    torch.save({"epoch": 120, "state_dict": state}, path)
    entry = dataclasses.replace(get_weights("mobilefacenet_landmark"), size=path.stat().st_size, sha256=sha256_of(path))
    monkeypatch.setitem(registry._WEIGHTS, "mobilefacenet_landmark", entry)
    with pytest.warns(DroppedKeysWarning):
        model = create_model("mmfrm", weights=card, landmark_mode="eval")
    torch.testing.assert_close(model.landmark.conv_23.conv.conv.weight, state["conv_23.conv.conv.weight"])
    with torch.no_grad():
        taps = model.landmark.forward_taps(load_ref("mobilefacenet_input.pt"))
    torch.testing.assert_close(taps["conv_6_sep"], load_ref("mobilefacenet_output.pt")["conv_features"],
                               rtol=1e-4, atol=1e-5)
    assert all(not p.requires_grad for p in model.landmark.parameters())


def test_recipe_card_follows_the_code():
    """docs/papers/mmfrm.md §4 / §11.10: Adam (default lr, coupled wd 1e-4), ExponentialLR 0.9, batch 32, 200 epochs,
    basic_aug (flip or noise) + RandomErasing(0.02-0.25) with no other flip, CE → 0.9·CE + 0.2·RF at 51."""
    from ferlib.recipes import load_recipe

    r = load_recipe("mmfrm", "rafdb")
    assert (r.optimizer, r.lr, r.weight_decay, r.schedule, r.schedule_kwargs) == (
        "adam", 1e-3, 1e-4, "exponential", {"gamma": 0.9})
    assert (r.batch_size, r.epochs, r.input_size, r.color_order) == (32, 200, 112, "RGB")
    assert r.train_transforms == ("basic_aug", "random_erasing") and r.test_transforms == ()
    assert r.transform_kwargs["erasing"]["scale"] == [0.02, 0.25]
    assert (r.loss, r.loss_kwargs["start_epoch"], r.loss_kwargs["ce_weight"], r.loss_kwargs["rf_weight"]) == (
        "ce_rfloss", 50, 0.9, 0.2)
    assert r.model_kwargs["landmark_mode"] == "train" and r.precision == "fp32"
    assert r.pretrained == ({"weights": "mobilefacenet_landmark", "into": "landmark", "unused": []},)  # card's choice
    assert "not" in r.pretrained_note and "released" in r.pretrained_note
    plus = load_recipe("mmfrm", "ferplus")     # the paper's second dataset, no upstream path: our reconstruction
    assert (plus.num_classes, plus.label_mode, plus.loss, plus.input_size) == (8, "majority", "ce_rfloss", 112)
    assert plus.reported == {} and "reconstruction" in plus.source
