"""Registry of released checkpoints and ``load_pretrained`` on checkpoints written in the upstream layouts."""
import dataclasses
from collections import OrderedDict

import pytest
import torch
from torch import nn

import ferlib.weights.registry as registry
from ferlib.models import create_model
from ferlib.models.backbones import IR50, MMFRMMobileFaceNet, MobileFaceNet
from ferlib.testing import REF_DIR, load_ref, read_keys, reference_state
from ferlib.weights import (
    DroppedKeysWarning,
    KeyMismatchError,
    PretrainedWeightsError,
    UnsafeCheckpointError,
    WeightsIntegrityError,
    WeightsNotFoundError,
    get_weights,
    list_weights,
    load_pretrained,
    weights_table_markdown,
)
from ferlib.weights.load import sha256_of

TOL = dict(rtol=1e-4, atol=1e-5)
IR50_SHA = "f696a1d2216439c05dec042b42249a1c835f4a2106b91e14fbf09ed0fbd8acfa"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty ``$FERLIB_HOME`` whose ``pretrained/`` folder the loader searches."""
    monkeypatch.setenv("FERLIB_HOME", str(tmp_path))
    monkeypatch.delenv("FERLIB_DATA", raising=False)
    (tmp_path / "pretrained").mkdir()
    return tmp_path


def _register_for(monkeypatch, name, path):
    """Re-register entry ``name`` with the size and sha256 of the file the test wrote."""
    entry = dataclasses.replace(get_weights(name), size=path.stat().st_size, sha256=sha256_of(path))
    monkeypatch.setitem(registry._WEIGHTS, name, entry)
    return entry


@pytest.fixture(scope="module")
def ir50_full_file(tmp_path_factory):
    """The MS-Celeb ``ir50.pth`` layout (4 stages, 349 entries, plain state dict) with recipe weights."""
    state = reference_state("ir50_full_checkpoint_keys.txt", model="ir50")
    path = tmp_path_factory.mktemp("ckpt") / "ir50.pth"
    torch.save(state, path)
    return path, state


def _place(home, src, name=None):
    dst = home / "pretrained" / (name or src.name)
    dst.write_bytes(src.read_bytes())
    return dst


# --- the registry ---------------------------------------------------------------------------------


def test_registry_lists_the_released_files():
    names = list_weights()
    for name in ("ir50_ms1m", "mobilefacenet_landmark", "emonet_rafdb_lam0.5", "emonet_rafdb_lam0.6",
                 "emonet_affectnet7_lam0.6", "emonet_affectnet8_lam0.6"):
        assert name in names and get_weights(name).released
    ir = get_weights("ir50_ms1m")
    assert (ir.filename, ir.size, ir.sha256) == ("ir50.pth", 174_472_765, IR50_SHA)
    assert {get_weights(n).filename for n in list_weights("emonet_*")} == {
        "RAFDB_a_0.5_0.913.pth", "rafdb_a_0.6_0.915.pth", "affectNet7_a_0.6_0.65457.pth", "affectNet8_a_0.6_0.6208.pth"}
    assert not get_weights("mmfrm_landmark").released and not get_weights("mfer_convnext_msceleb").released


def test_entries_carry_what_a_user_must_not_get_wrong():
    a8 = get_weights("emonet_affectnet8_lam0.6")
    assert a8.categories == ("surprise", "fear", "disgust", "happy", "sad", "anger", "neutral", "contempt")
    assert a8.model_kwargs == {"num_classes": 8, "lam": 0.6} and a8.num_classes == 8
    assert get_weights("emonet_affectnet7_lam0.6").categories[0] == "neutral"  # AffectNet native order
    r5 = get_weights("emonet_rafdb_lam0.5")
    assert r5.metrics == {"rafdb": 91.30} and r5.input_size == 224 and r5.colour == "RGB"
    assert r5.mean == (0.485, 0.456, 0.406) and r5.std == (0.229, 0.224, 0.225)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r5.filename = "x.pth"
    with pytest.raises(TypeError):
        r5.metrics["rafdb"] = 99.0


def test_weights_table_markdown_renders_every_entry():
    table = weights_table_markdown()
    lines = table.strip().splitlines()
    assert lines[0].startswith("| weights | file |") and len(lines) == 2 + len(list_weights())
    assert "`ir50.pth`" in table and "174,472,765 B" in table and IR50_SHA[:12] in table
    assert "**not released**" in table and "rafdb 91.52" in table


# --- missing, truncated, tampered, unsafe ---------------------------------------------------------


def test_missing_file_names_file_hash_and_readme_section(home):
    with pytest.raises(WeightsNotFoundError) as err:
        load_pretrained(IR50(num_stages=3), "ir50_ms1m")
    msg = str(err.value)
    assert "ir50.pth" in msg and IR50_SHA in msg and "174,472,765" in msg
    assert 'section "Pretrained weights"' in msg and str(home / "pretrained" / "ir50.pth") in msg


def test_unreleased_entry_says_so(home):
    with pytest.raises(WeightsNotFoundError, match="NOT released"):
        load_pretrained(MMFRMMobileFaceNet(), "mmfrm_landmark")


def test_unknown_name_lists_the_registry(home):
    with pytest.raises(KeyError, match="ir50_ms1m"):
        load_pretrained(IR50(num_stages=3), "no_such_weights")


def test_truncated_file_fails_the_size_check(home, monkeypatch, ir50_full_file):
    src, _ = ir50_full_file
    dst = _place(home, src)
    _register_for(monkeypatch, "ir50_ms1m", dst)
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(WeightsIntegrityError, match="truncated"):
        load_pretrained(IR50(num_stages=3), "ir50_ms1m")


def test_truncated_file_without_known_size_is_unreadable(tmp_path):
    state = reference_state("mobilefacenet_keys.txt", model="mobilefacenet")
    path = tmp_path / "mine.pth"
    torch.save(state, path)
    path.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(PretrainedWeightsError, match="cannot read .*truncated"):
        load_pretrained(MobileFaceNet((112, 112), 136), path)


def test_tampered_file_fails_the_hash_check(home, monkeypatch):
    state = reference_state("mobilefacenet_keys.txt", model="mobilefacenet")
    dst = home / "pretrained" / "mobilefacenet_model_best.pth.tar"
    torch.save({"state_dict": state}, dst)
    entry = _register_for(monkeypatch, "mobilefacenet_landmark", dst)
    state["conv1.conv.weight"][0, 0, 0, 0] += 1.0
    torch.save({"state_dict": state}, dst)
    assert dst.stat().st_size == entry.size
    with pytest.raises(WeightsIntegrityError, match="sha256 .*tampered"):
        load_pretrained(MobileFaceNet((112, 112), 136), "mobilefacenet_landmark")


class _TrainingArgs:
    """A custom object as training scripts pickle into checkpoints."""

    def __init__(self):
        self.lr = 1e-3


def test_pickled_custom_object_is_refused(tmp_path):
    path = tmp_path / "with_args.pth"
    torch.save({"state_dict": IR50(num_stages=3).state_dict(), "args": _TrainingArgs()}, path)
    with pytest.raises(UnsafeCheckpointError, match="pickled Python objects"):
        load_pretrained(IR50(num_stages=3), path)


# --- layouts ---------------------------------------------------------------------------------------


def test_full_ir50_into_three_stages_reports_dropped_keys(home, monkeypatch, ir50_full_file):
    src, state = ir50_full_file
    _register_for(monkeypatch, "ir50_ms1m", _place(home, src))
    model = IR50(num_stages=3)
    with pytest.warns(DroppedKeysWarning, match=r"dropped 45 declared-unused .*body\.21\.shortcut_layer\.0\.weight"):
        report = load_pretrained(model, "ir50_ms1m")
    stage4 = [k for k, *_ in read_keys(REF_DIR / "ir50_full_checkpoint_keys.txt")
              if k.startswith(("body.21.", "body.22.", "body.23."))]
    assert report.dropped == stage4 and len(stage4) == 45
    assert len(report.loaded) == 304 and report.left_at_init == []
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)
    assert model.pretrained_entry.name == "ir50_ms1m"


def test_full_ir50_loads_completely_into_four_stages_via_create_model(home, monkeypatch, ir50_full_file, recwarn):
    src, state = ir50_full_file
    _register_for(monkeypatch, "ir50_ms1m", _place(home, src))
    model = create_model("ir50_full", weights="ir50_ms1m")
    assert not [w for w in recwarn if issubclass(w.category, DroppedKeysWarning)]
    torch.testing.assert_close(model.state_dict()["body.23.res_layer.4.running_var"], state["body.23.res_layer.4.running_var"])


def test_create_model_weights_true_finds_the_models_single_entry(home, monkeypatch, ir50_full_file):
    src, _ = ir50_full_file
    _register_for(monkeypatch, "ir50_ms1m", _place(home, src))
    with pytest.warns(DroppedKeysWarning):
        model = create_model("ir50", weights=True)
    assert model.pretrained_entry.name == "ir50_ms1m"


def test_state_dict_container_layout_reproduces_reference(home, monkeypatch):
    """``mobilefacenet_model_best.pth.tar`` = ``{'state_dict': …}``; outputs equal the authors'."""
    dst = home / "pretrained" / "mobilefacenet_model_best.pth.tar"
    torch.save({"epoch": 120, "state_dict": reference_state("mobilefacenet_keys.txt", model="mobilefacenet")}, dst)
    _register_for(monkeypatch, "mobilefacenet_landmark", dst)
    model = MobileFaceNet((112, 112), 136)
    report = load_pretrained(model, "mobilefacenet_landmark")
    assert len(report.loaded) == 333 and not report.dropped
    with torch.no_grad():
        out, conv_features = model.eval()(load_ref("mobilefacenet_input.pt"))
    ref = load_ref("mobilefacenet_output.pt")
    torch.testing.assert_close(out, ref["out"], **TOL)
    torch.testing.assert_close(conv_features, ref["conv_features"], **TOL)


def test_landmark_checkpoint_into_512d_and_mmfrm_variants(home, monkeypatch):
    state = reference_state("mobilefacenet_keys.txt", model="mobilefacenet")
    dst = home / "pretrained" / "mobilefacenet_model_best.pth.tar"
    torch.save({"state_dict": state}, dst)
    _register_for(monkeypatch, "mobilefacenet_landmark", dst)
    with pytest.warns(DroppedKeysWarning, match="dropped 5"):
        report = load_pretrained(MobileFaceNet((112, 112), 512), "mobilefacenet_landmark")
    assert report.dropped == ["output_layer.linear.weight", "output_layer.bn.weight", "output_layer.bn.bias",
                              "output_layer.bn.running_mean", "output_layer.bn.running_var"]
    mm = MMFRMMobileFaceNet()
    with pytest.warns(DroppedKeysWarning, match="keep their init"):
        report = load_pretrained(mm, "mobilefacenet_landmark")
    assert report.left_at_init == ["alpha.0.weight", "alpha.0.bias", "fc.weight", "fc.bias"]
    torch.testing.assert_close(mm.conv_6_sep.prelu.weight.detach(), state["conv_6_sep.prelu.weight"])


def _emonet_state():
    return reference_state("emonet_keys.txt", model="emonet")


def test_module_prefixed_checkpoint_in_a_container(home, monkeypatch):
    """DataParallel ``module.`` keys inside ``model_state_dict``; EMO-Net λ=0.5 gives the authors' logits."""
    dst = home / "pretrained" / "RAFDB_a_0.5_0.913.pth"
    wrapped = OrderedDict(("module." + k, v) for k, v in _emonet_state().items())
    torch.save({"epoch": 18, "model_state_dict": wrapped, "optimizer_state_dict": {}}, dst)
    _register_for(monkeypatch, "emonet_rafdb_lam0.5", dst)
    model = create_model("emonet", num_classes=7, lam=0.5, weights="emonet_rafdb_lam0.5")
    with torch.no_grad():
        out = model.eval()(load_ref("emonet_input.pt"))
    torch.testing.assert_close(out.logits, load_ref("emonet_output.pt")["logits_lambda_0.5"], **TOL)
    assert model.pretrained_entry.categories[0] == "surprise"


def test_model_built_with_other_constructor_arguments_is_flagged(home, monkeypatch):
    dst = home / "pretrained" / "rafdb_a_0.6_0.915.pth"
    torch.save(_emonet_state(), dst)
    _register_for(monkeypatch, "emonet_rafdb_lam0.6", dst)
    with pytest.warns(UserWarning, match="lam=0.6 but the model has lam=0.8"):
        load_pretrained(create_model("emonet"), "emonet_rafdb_lam0.6")
    dst8 = home / "pretrained" / "affectNet8_a_0.6_0.6208.pth"
    state8 = _emonet_state()
    state8["classifier.1.weight"] = torch.zeros(8, 1280)
    state8["classifier.1.bias"] = torch.zeros(8)
    torch.save(state8, dst8)
    _register_for(monkeypatch, "emonet_affectnet8_lam0.6", dst8)
    with pytest.raises(KeyMismatchError, match=r"classifier\.1\.weight \(8, 1280\) vs model \(7, 1280\).*num_classes=8"):
        load_pretrained(create_model("emonet", lam=0.6), "emonet_affectnet8_lam0.6")


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state = IR50(num_stages=3).state_dict()
    del state["body.5.res_layer.1.weight"]
    state["head.weight"] = torch.zeros(3)
    path = tmp_path / "edited.pth"
    torch.save(state, path)
    with pytest.raises(KeyMismatchError, match=r"missing in the checkpoint: body\.5\.res_layer\.1\.weight.*unexpected in the checkpoint: head\.weight"):
        load_pretrained(IR50(num_stages=3), path)
    report = load_pretrained(IR50(num_stages=3), path, strict=False)
    assert len(report.loaded) == 303


def test_checkpoint_of_a_submodule_loads_with_prefix(tmp_path):
    class Container(nn.Module):
        def __init__(self):
            super().__init__()
            self.ir_back = IR50(num_stages=3)
            self.head = nn.Linear(4, 2)

    src = IR50(num_stages=3)
    path = tmp_path / "backbone.pth"
    torch.save(src.state_dict(), path)
    with pytest.raises(KeyMismatchError, match=r"prefix='ir_back\.'"):
        load_pretrained(Container(), path)
    model = Container()
    load_pretrained(model, path, prefix="ir_back")
    torch.testing.assert_close(model.ir_back.body[7].res_layer[1].weight, src.body[7].res_layer[1].weight)


def test_nothing_matching_fails_loudly(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(MobileFaceNet((112, 112), 136).state_dict(), path)
    with pytest.raises(KeyMismatchError, match="no key of the checkpoint matches"):
        load_pretrained(IR50(num_stages=3), path, strict=False)


def test_readme_weights_table_is_the_generated_one():
    """data/README.md carries the registry's table verbatim: regenerate it when the registry changes."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "data" / "README.md").read_text()
    assert weights_table_markdown().strip() in readme


def test_torchvision_mobilenet_v2_starts_emonet(home, monkeypatch):
    """docs/papers/emonet.md §5 reconstruction: torchvision's ImageNet MobileNetV2 file fills every shared EMO-Net layer;
    the fusion branch, ECA and the classifier keep their init; the card's pretrained names this entry."""
    import torchvision

    from ferlib.recipes import load_recipe
    from ferlib.weights.start import resolve_start

    torch.manual_seed(3)
    tv = torchvision.models.mobilenet_v2(weights=None).state_dict()   # the file's exact layout, other values
    dst = home / "pretrained" / "mobilenet_v2-b0353104.pth"
    torch.save(tv, dst)
    _register_for(monkeypatch, "mobilenet_v2_imagenet", dst)
    recipe = load_recipe("emonet", "rafdb")
    (item,) = resolve_start(True, recipe.pretrained, "emonet")
    assert (item.weights, item.into) == ("mobilenet_v2_imagenet", "")
    assert resolve_start(False, recipe.pretrained) == () and resolve_start("x.pth", recipe.pretrained)[0].weights == "x.pth"
    assert resolve_start("card", load_recipe("emonet", "synthetic").pretrained) == ()
    model = create_model("emonet", num_classes=7, lam=0.5)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(DroppedKeysWarning):
        report = load_pretrained(model, item.weights)
    assert sorted(report.dropped) == ["classifier.1.bias", "classifier.1.weight"]
    assert len(report.loaded) == len(tv) - 2
    own = model.state_dict()
    for k in ("features.0.0.weight", "features.7.conv.1.0.weight", "features.18.1.running_var"):
        torch.testing.assert_close(own[k], tv[k])
    kept = [k for k in report.left_at_init]
    assert kept and all(".dowmSample." in k or ".channel." in k or k.startswith("classifier.") for k in kept)
    torch.testing.assert_close(own["features.3.channel.conv1.weight"], fresh["features.3.channel.conv1.weight"])
