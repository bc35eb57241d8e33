"""The options the cards' synthetic (CPU demo) entries use (issue 24.1): a shallower IR-50, a random subset per
epoch, an optimizer switch that does not inherit the other optimizer's arguments."""
import pytest
import torch

from ferlib.data.samplers import RandomSubsetSampler, build_sampler
from ferlib.models.backbones.ir50 import IR50
from ferlib.recipes import load_recipe


def test_ir50_units_keep_the_map_sizes_and_drop_units():
    full, short = IR50(num_stages=3), IR50(num_stages=3, units=(1, 1, 2))
    assert len(full.body) == 3 + 4 + 14 and len(short.body) == 1 + 1 + 2
    x = torch.randn(2, 3, 112, 112)
    short.eval()
    shapes = [tuple(m.shape) for m in short.forward_stages(x)]
    assert shapes == [(2, 64, 56, 56), (2, 128, 28, 28), (2, 256, 14, 14)]
    assert tuple(short(x).shape) == (2, 49, 1024)
    with pytest.raises(ValueError, match=r"units must give one count >= 1 per stage \(3\), got \(1, 1\)"):
        IR50(num_stages=3, units=(1, 1))


def test_fermam_and_grefel_take_ir_units():
    from ferlib.models import create_model

    with torch.device("meta"):
        fermam = create_model("fermam", num_classes=7, ir_units=[1, 1, 1])
        grefel = create_model("grefel", num_classes=7, ir_units=[1, 1, 1])
    assert len(fermam.ir_back.body) == 3 and len(grefel.vit.ir.body) == 3


def test_subset_sampler_draws_without_replacement_anew_each_epoch():
    targets = [i % 7 for i in range(100)]
    s = build_sampler("subset", type("D", (), {"targets": targets})(), seed=3, num_samples=30)
    assert isinstance(s, RandomSubsetSampler) and len(s) == 30
    first = list(s)
    assert len(set(first)) == 30 and all(0 <= i < 100 for i in first)
    s.set_epoch(1)
    second = list(s)
    assert set(second) != set(first) and len(set(second)) == 30
    s.set_epoch(0)
    assert list(s) == first
    whole = RandomSubsetSampler(targets, 500)  # a split smaller than the budget is used whole
    assert len(whole) == 100 and sorted(whole) == list(range(100))
    with pytest.raises(ValueError, match=r"num_samples must be at least 1, got 0"):
        RandomSubsetSampler(targets, 0)


def test_another_optimizer_does_not_inherit_the_defaults_arguments():
    # EMO-Net's card: SGD with momentum 0.9 by default; Adam has no momentum argument
    assert load_recipe("emonet", "rafdb").optimizer_kwargs == {"momentum": 0.9}
    assert load_recipe("emonet", "rafdb", optimizer="adam").optimizer_kwargs == {}
    assert load_recipe("emonet", "rafdb", optimizer="adam", optimizer_kwargs={"eps": 1e-6}).optimizer_kwargs == {"eps": 1e-6}
    # the same optimizer keeps merging key by key
    assert load_recipe("mmfrm", "rafdb", optimizer_kwargs={"eps": 1e-6}).optimizer_kwargs == \
        {"betas": [0.9, 0.999], "eps": 1e-6}
