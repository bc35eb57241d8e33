"""IR-50 and MobileFaceNet against the authors' outputs (ref/README.md), keys and parameter counts."""
import json

import pytest
import torch

from ferlib.models import create_model
from ferlib.models.backbones import IR50, MMFRMMobileFaceNet, MobileFaceNet, split_stage4
from ferlib.testing import assert_matches_ref, REF_DIR, load_ref, read_keys, reference_state
from ferlib.weights import convert_upstream

TOL = dict(rtol=1e-4, atol=1e-5)  # for the negative check; matches use assert_matches_ref (scale-aware atol)
MANIFEST = json.loads((REF_DIR / "manifest.json").read_text())


def _keys(keys_file, prefix=""):
    return [(k[len(prefix):], tuple(s)) for k, s, _, _ in read_keys(REF_DIR / keys_file) if k.startswith(prefix)]


def _state_keys(model):
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def _loaded(model, keys_file, manifest_entry, upstream_name):
    state = convert_upstream(upstream_name, reference_state(keys_file, model=manifest_entry))
    model.load_state_dict(state, strict=True)
    return model.eval()


def _record(model, names):
    """Forward hooks storing the outputs of the named submodules."""
    out, modules = {}, dict(model.named_modules())
    for n in names:
        modules[n].register_forward_hook(lambda m, i, o, n=n: out.__setitem__(n, o))
    return out


# --- keys and sizes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory, keys_file, prefix",
    [
        (lambda: IR50(num_stages=3), "ir50_keys.txt", ""),
        (lambda: IR50(num_stages=4), "ir50_full_checkpoint_keys.txt", ""),
        (lambda: MobileFaceNet((112, 112), 136), "mobilefacenet_keys.txt", ""),
        (lambda: MobileFaceNet((112, 112), 512), "fermam_keys.txt", "face_landback."),
        (lambda: MMFRMMobileFaceNet(), "mmfrm_mobilefacenet_keys.txt", ""),
    ],
)
def test_state_dict_keys_equal_upstream(factory, keys_file, prefix):
    assert _state_keys(factory()) == _keys(keys_file, prefix)


def test_parameter_counts_match_manifest():
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    ir = IR50(num_stages=3)
    p = MANIFEST["ir50"]["params"]
    assert n(ir) == p["<total>"] == 30_459_584
    assert n(ir.body) == p["body"] and n(ir.input_layer) == p["input_layer"] and n(ir.output_layer) == p["output_layer"]
    assert sum(b.numel() for b in ir.buffers()) == p["<buffers>"]
    assert n(IR50(num_stages=4)) == MANIFEST["ir50"]["full_checkpoint"]["params"] == 43_574_976
    mfn = MobileFaceNet((112, 112), 136)
    for name, count in MANIFEST["mobilefacenet"]["params"].items():
        if not name.startswith("<"):
            assert n(getattr(mfn, name)) == count, name
    assert n(mfn) == MANIFEST["mobilefacenet"]["params"]["<total>"] == 1_007_248
    assert n(MobileFaceNet((112, 112), 512)) == 1_200_512  # docs/papers/fermam.md §13 face_landback
    mm = MMFRMMobileFaceNet()
    assert n(mm) == 1_204_616 and n(mm.alpha) == 513 and n(mm.fc) == 3_591  # docs/papers/mmfrm.md §8


# --- IR-50 --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ir50_model():
    return _loaded(IR50(num_stages=3), "ir50_keys.txt", "ir50", "ir50")


def test_ir50_tokens_match_reference(ir50_model):
    x = load_ref("ir50_input.pt")
    with torch.no_grad():
        tokens = ir50_model(x)
    ref = load_ref("ir50_output.pt")["tokens"]
    assert tokens.shape == (2, 49, 1024)
    assert_matches_ref(tokens, ref)


def test_ir50_tokens_are_a_raw_view_not_spatial(ir50_model):
    """docs/papers/fermam.md §3.3: token t = flat elements t·1024 … of the NCHW map, not a spatial position."""
    x = load_ref("ir50_input.pt")
    with torch.no_grad():
        fmap = ir50_model.forward_features(x)
        tokens = ir50_model(x)
    assert fmap.shape == (2, 256, 14, 14)
    torch.testing.assert_close(tokens[:, 1], fmap.flatten(1)[:, 1024:2048], rtol=0, atol=0)
    spatial = fmap.flatten(2).transpose(1, 2).reshape(2, 49, 1024)
    assert not torch.allclose(tokens, spatial, **TOL)


def test_ir50_stage_outputs_match_intermediates(ir50_model, shared_ref):
    inter = torch.load(shared_ref / "ir50_intermediates.pt", map_location="cpu", weights_only=True)
    x = load_ref("ir50_input.pt")
    seen = _record(ir50_model, list(inter))
    with torch.no_grad():
        stages = ir50_model.forward_stages(x)
    assert set(inter) == {"body.2", "body.6", "body.20"}
    for name, ref in inter.items():
        assert_matches_ref(seen[name], ref)
    for got, name in zip(stages, ("body.2", "body.6", "body.20")):
        assert_matches_ref(got, inter[name])


def test_ir50_resizes_224_input_by_nearest(ir50_model):
    x = load_ref("ir50_input.pt")
    big = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest picks (2i, 2j)
    with torch.no_grad():
        torch.testing.assert_close(ir50_model(big), ir50_model(x), rtol=0, atol=0)


def test_ir50_registered_model_contract():
    model = _loaded(create_model("ir50"), "ir50_keys.txt", "ir50", "ir50")
    with torch.no_grad():
        out = model(load_ref("ir50_input.pt"))
    assert out.logits is None
    assert_matches_ref(out.features, load_ref("ir50_output.pt")["tokens"])
    assert [tuple(s.shape) for s in out.extras["stages"]] == [(2, 64, 56, 56), (2, 128, 28, 28), (2, 256, 14, 14)]


def test_ir50_full_checkpoint_into_three_stages_drops_stage4_by_name():
    full = reference_state("ir50_full_checkpoint_keys.txt", model="ir50")
    model = IR50(num_stages=3)
    with pytest.warns(UserWarning, match=r"dropped 45 stage-4 entries .*body\.21\.shortcut_layer\.0\.weight"):
        dropped = model.load_upstream(full)
    first = MANIFEST["ir50"]["full_checkpoint"]["first_dropped"]
    last = MANIFEST["ir50"]["full_checkpoint"]["last_dropped"]
    assert len(dropped) == 45 and dropped[:3] == first and dropped[-3:] == last
    assert all(k.startswith(("body.21.", "body.22.", "body.23.")) for k in dropped)
    torch.testing.assert_close(model.state_dict()["body.20.res_layer.1.weight"], full["body.20.res_layer.1.weight"])
    kept, _ = split_stage4(full, 4)
    assert len(kept) == 349


def test_ir50_full_forward_shapes():
    model = _loaded(IR50(num_stages=4), "ir50_full_checkpoint_keys.txt", "ir50", "ir50")
    x = load_ref("ir50_input.pt")
    with torch.no_grad():
        emb = model(x)
        stages = model.forward_stages(x)
    assert emb.shape == (2, 512) and torch.isfinite(emb).all()
    assert stages[-1].shape == (2, 512, 7, 7)


def test_ir50_rejects_other_depths():
    with pytest.raises(ValueError, match="3 .* or 4"):
        IR50(num_stages=2)


# --- MobileFaceNet ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def landmark_model():
    return _loaded(MobileFaceNet((112, 112), 136), "mobilefacenet_keys.txt", "mobilefacenet", "mobilefacenet")


def test_mobilefacenet_outputs_match_reference(landmark_model):
    ref = load_ref("mobilefacenet_output.pt")
    with torch.no_grad():
        out, conv_features = landmark_model(load_ref("mobilefacenet_input.pt"))
    assert out.shape == (2, 136) and conv_features.shape == (2, 512, 7, 7)
    assert_matches_ref(out, ref["out"])
    assert_matches_ref(conv_features, ref["conv_features"])


def test_mobilefacenet_intermediates(landmark_model, shared_ref):
    inter = torch.load(shared_ref / "mobilefacenet_intermediates.pt", map_location="cpu", weights_only=True)
    assert set(inter) == {"conv_23", "conv_3", "conv_34", "conv_4", "conv_45", "conv_5", "conv_6_sep"}
    seen = _record(landmark_model, list(inter))
    with torch.no_grad():
        taps = landmark_model.forward_taps(load_ref("mobilefacenet_input.pt"))
    for name, ref in inter.items():
        assert_matches_ref(seen[name], ref)
    for name in ("conv_3", "conv_4", "conv_6_sep"):
        assert_matches_ref(taps[name], inter[name])


def test_mobilefacenet_registered_model_contract(landmark_model):
    model = create_model("mobilefacenet")
    model.load_state_dict(landmark_model.state_dict())
    with torch.no_grad():
        out = model.eval()(load_ref("mobilefacenet_input.pt"))
    ref = load_ref("mobilefacenet_output.pt")
    assert out.logits is None
    assert_matches_ref(out.features, ref["out"])
    assert_matches_ref(out.extras["conv_6_sep"], ref["conv_features"])


def test_mmfrm_landmark_net_matches_reference():
    model = _loaded(MMFRMMobileFaceNet(), "mmfrm_mobilefacenet_keys.txt", "mmfrm", "mobilefacenet_mmfrm")
    ref = load_ref("mmfrm_output.pt")["landmark"]
    with torch.no_grad():
        f1, f2, f3, attention, out = model(load_ref("mmfrm_input.pt"))
    assert_matches_ref(f1, ref["feature1"])
    assert_matches_ref(f2, ref["feature2"])
    assert_matches_ref(f3, ref["feature3"])
    assert_matches_ref(attention, ref["attention_weights"])
    assert_matches_ref(out, ref["out"])


def test_mmfrm_landmark_intermediates(shared_ref):
    inter = torch.load(shared_ref / "mmfrm_intermediates.pt", map_location="cpu", weights_only=True)
    model = _loaded(MMFRMMobileFaceNet(), "mmfrm_mobilefacenet_keys.txt", "mmfrm", "mobilefacenet_mmfrm")
    names = [k[len("landmark."):] for k in inter if k.startswith("landmark.")]
    assert sorted(names) == ["conv_3", "conv_4", "conv_6_sep", "output_layer"]
    seen = _record(model, names)
    with torch.no_grad():
        model(load_ref("mmfrm_input.pt"))
    for name in names:
        assert_matches_ref(seen[name], inter["landmark." + name])


def test_mobilefacenet_rejects_other_input_sizes():
    with pytest.raises(ValueError, match="112"):
        MobileFaceNet((96, 96), 136)
