"""Whole-batch random augmentations (ferlib.data.batched_aug, issue 27.7): torchvision's output for the
same parameters, torchvision's parameter distributions (two-sample KS tests over many draws), and no host
synchronisation in the batch transform or in a training step that runs it."""
import pytest
import torch
from scipy.stats import ks_2samp
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ferlib.data.batched_aug import (BatchedAffine, BatchedColorJitter, BatchedPerspective, BatchedRandomErasing,
                                     BatchedRandomResizedCrop, BatchedRotation)
from ferlib.data.transforms import BatchedBasicAug, BatchedHFlip, build_batch_transform
from ferlib.recipes import load_recipe

N = 3000            # draws per side in the distribution tests
ALPHA = 1e-3        # the same draw is rejected only when p < ALPHA (seeded: the outcome is fixed)


def images(b=6, h=40, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=g)


def grey_diff(a, b):
    d = (a.int() - b.int()).abs()
    return int(d.max()), float((d > 0).float().mean())


# ------------------------------------------------------------------ same parameters → torchvision's output

def test_rotation_and_affine_equal_torchvision_for_the_same_draw():
    torch.manual_seed(0)
    x = images()
    rot = BatchedRotation(30)
    p = rot.sample(6, 40, 48)
    ref = torch.stack([TF.rotate(x[i], float(p["angle"][i])) for i in range(6)])
    assert torch.equal(rot.apply(x, p), ref)
    aff = BatchedAffine(degrees=20, translate=(0.1, 0.2), scale=(0.8, 1.2), shear=(-15, 15, -10, 10))
    p = aff.sample(6, 40, 48)
    ref = torch.stack([TF.affine(x[i], angle=float(p["angle"][i]), translate=[int(p["tx"][i]), int(p["ty"][i])],
                                 scale=float(p["scale"][i]), shear=[float(p["shear_x"][i]), float(p["shear_y"][i])])
                       for i in range(6)])
    assert torch.equal(aff.apply(x, p), ref)


def test_perspective_equals_torchvision_for_the_same_corners():
    torch.manual_seed(1)
    x = images()
    op = BatchedPerspective(0.5, p=1.0)
    p = op.sample(6, 40, 48)
    start = [[0, 0], [47, 0], [47, 39], [0, 39]]
    ref = torch.stack([TF.perspective(x[i], start, p["endpoints"][i].tolist(), fill=0) for i in range(6)])
    worst, frac = grey_diff(op.apply(x, p), ref)
    assert worst <= 1 and frac < 1e-3  # float summation order of the grid: a rare rounding step
    off = {"apply": torch.zeros(6, dtype=torch.bool), "endpoints": p["endpoints"]}
    assert torch.equal(op.apply(x, off), x)
    ours = op.coefficients(p["endpoints"], 40, 48)
    theirs = torch.tensor([TF._geometry._get_perspective_coeffs(start, e.tolist()) for e in p["endpoints"]])
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_colour_jitter_equals_torchvision_for_the_same_factors_and_order():
    torch.manual_seed(2)
    x = images()
    op = BatchedColorJitter(0.4, 0.4, 0.4, 0.1)
    p = op.sample(6)
    fns = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    keys = ["brightness", "contrast", "saturation", "hue"]

    def one(i):
        img = x[i]
        for f in p["order"][i].tolist():
            img = fns[f](img, float(p[keys[f]][i]))
        return img

    assert torch.equal(op.apply(x, p), torch.stack([one(i) for i in range(6)]))


def test_random_resized_crop_within_one_grey_level_of_torchvision():
    torch.manual_seed(3)
    x = images()
    op = BatchedRandomResizedCrop(64, scale=(0.08, 1.0))
    p = op.sample(6, 40, 48)
    ref = torch.stack([TF.resized_crop(x[i], int(p["top"][i]), int(p["left"][i]), int(p["h"][i]), int(p["w"][i]),
                                       [64, 64], antialias=True) for i in range(6)])
    assert grey_diff(op.apply(x, p), ref)[0] <= 1  # torchvision's uint8 kernel rounds in fixed point
    big = images(h=80, w=80)  # shrinking crops: torchvision's antialiased resize per image
    p = op.sample(6, 80, 80)
    ref = torch.stack([TF.resized_crop(big[i], int(p["top"][i]), int(p["left"][i]), int(p["h"][i]), int(p["w"][i]),
                                       [64, 64], antialias=True) for i in range(6)])
    assert torch.equal(op.apply(big, p), ref)


def test_erasing_and_flip_equal_torchvision_for_the_same_draw():
    torch.manual_seed(4)
    xf = torch.randn(6, 3, 40, 48)
    op = BatchedRandomErasing(p=0.5, scale=(0.02, 0.33), value=0.5)
    p = op.sample(6, 40, 48)
    ref = torch.stack([TF.erase(xf[i], int(p["top"][i]), int(p["left"][i]), int(p["h"][i]), int(p["w"][i]),
                                torch.tensor(0.5)) if p["erase"][i] else xf[i] for i in range(6)])
    assert torch.equal(op.apply(xf, p), ref) and not torch.equal(op.apply(xf, p), xf)
    x = images()
    f = BatchedHFlip().sample(6)
    assert torch.equal(BatchedHFlip().apply(x, f), torch.stack([x[i].flip(-1) if f["flip"][i] else x[i]
                                                               for i in range(6)]))


# ------------------------------------------------------------------ distributions: KS against torchvision

def torchvision_draws(t, shape, n=N, seed=0):
    torch.manual_seed(seed)
    img = torch.zeros(shape)
    return [t.make_params([img]) for _ in range(n)]


def ks(a, b, decimals: int = 6) -> float:
    """Two-sample KS p-value. Values are rounded to ``decimals`` first: the same atom computed in float32 on
    one side and float64 (or by another solver, 1e-16 off) on the other must compare equal."""
    def arr(v):
        return torch.as_tensor(v, dtype=torch.float64).round(decimals=decimals).numpy()

    return ks_2samp(arr(a), arr(b), method="asymp").pvalue


@pytest.mark.parametrize("scale,ratio", [((0.02, 0.1), (0.3, 3.3)), ((0.02, 0.33), (0.3, 3.3)), ((0.1, 0.6), (0.5, 2))])
def test_erasing_box_distribution_matches_torchvision(scale, ratio):
    """Area fraction, aspect h/w, position and erase probability (10 tries, then no erase, as torchvision)."""
    H, W = 28, 36
    ref = v2.RandomErasing(p=0.5, scale=scale, ratio=ratio)
    theirs = torchvision_draws(ref, (3, H, W))
    torch.manual_seed(1)
    ours = BatchedRandomErasing(p=0.5, scale=scale, ratio=ratio).sample(N, H, W)
    # torchvision decides p in forward (torch.rand(1) < p), the box in make_params; "no box fits" is v None
    torch.manual_seed(2)
    their_erase = [bool(torch.rand(1) < 0.5) and d["v"] is not None for d in theirs]
    fits = [d for d in theirs if d["v"] is not None]
    found = (ours["h"] < H) & (ours["w"] < W)  # the image's box fitted within 10 tries
    h, w = ours["h"][found], ours["w"][found]
    assert ks([d["h"] * d["w"] / (H * W) for d in fits], (h * w).double() / (H * W)) > ALPHA
    assert ks([d["h"] / d["w"] for d in fits], h.double() / w.double()) > ALPHA
    assert ks([d["i"] for d in fits], ours["top"][found]) > ALPHA
    assert ks([d["j"] for d in fits], ours["left"][found]) > ALPHA
    assert ks(their_erase, ours["erase"].double()) > ALPHA


def test_erasing_fallback_after_ten_tries_and_the_test_has_power():
    """Boxes that rarely fit (scale up to 0.99 of a 6×6 image): the no-erase rate matches torchvision's; a
    wrong scale is rejected by the same KS test."""
    ref = v2.RandomErasing(p=1.0, scale=(0.5, 0.99), ratio=(0.3, 3.3))
    theirs = torchvision_draws(ref, (3, 6, 6))
    torch.manual_seed(3)
    ours = BatchedRandomErasing(p=1.0, scale=(0.5, 0.99), ratio=(0.3, 3.3)).sample(N, 6, 6)
    assert ks([d["v"] is not None for d in theirs], ours["erase"].double()) > ALPHA
    wrong = BatchedRandomErasing(p=1.0, scale=(0.02, 0.2)).sample(N, 28, 36)
    right = torchvision_draws(v2.RandomErasing(p=1.0, scale=(0.02, 0.33)), (3, 28, 36))
    assert ks([d["h"] * d["w"] for d in right if d["v"] is not None], wrong["h"] * wrong["w"]) < 1e-6


def test_geometric_parameter_distributions_match_torchvision():
    H, W = 56, 64
    torch.manual_seed(4)
    ours = BatchedRotation(30).sample(N, H, W)
    assert ks([d["angle"] for d in torchvision_draws(v2.RandomRotation(30), (3, H, W))], ours["angle"]) > ALPHA
    aff = dict(degrees=10, translate=(0.1, 0.2), scale=(0.9, 1.1), shear=15)
    theirs = torchvision_draws(v2.RandomAffine(**aff), (3, H, W))
    ours = BatchedAffine(**aff).sample(N, H, W)
    assert ks([d["angle"] for d in theirs], ours["angle"]) > ALPHA
    assert ks([d["translate"][0] for d in theirs], ours["tx"]) > ALPHA
    assert ks([d["translate"][1] for d in theirs], ours["ty"]) > ALPHA
    assert ks([d["scale"] for d in theirs], ours["scale"]) > ALPHA
    assert ks([d["shear"][0] for d in theirs], ours["shear_x"]) > ALPHA
    assert set(ours["shear_y"].tolist()) == {0.0} == {d["shear"][1] for d in theirs}
    theirs = torchvision_draws(v2.RandomPerspective(0.3, p=1.0), (3, H, W))
    op = BatchedPerspective(0.3, p=1.0)
    coef = op.coefficients(op.sample(N, H, W)["endpoints"], H, W)
    for k in range(8):  # every homography coefficient
        assert ks([d["coefficients"][k] for d in theirs], coef[:, k]) > ALPHA, k
    crop = v2.RandomResizedCrop(32, scale=(0.08, 1.0))
    theirs = torchvision_draws(crop, (3, H, W))
    ours = BatchedRandomResizedCrop(32, scale=(0.08, 1.0)).sample(N, H, W)
    for k, name in (("height", "h"), ("width", "w"), ("top", "top"), ("left", "left")):
        assert ks([d[k] for d in theirs], ours[name]) > ALPHA, k


def test_colour_jitter_parameter_distributions_match_torchvision():
    theirs = torchvision_draws(v2.ColorJitter(0.4, 0.3, 0.2, 0.1), (3, 8, 8))
    torch.manual_seed(5)
    ours = BatchedColorJitter(0.4, 0.3, 0.2, 0.1).sample(N)
    for k in ("brightness", "contrast", "saturation", "hue"):
        assert ks([d[f"{k}_factor"] for d in theirs], ours[k]) > ALPHA, k
    for op in range(4):  # the position of each adjustment in the random order
        assert ks([d["fn_idx"].tolist().index(op) for d in theirs], (ours["order"] == op).long().argmax(1)) > ALPHA


def test_basic_aug_and_flip_rates():
    torch.manual_seed(6)
    kind = BatchedBasicAug().sample(40000)["kind"]
    assert [abs(float((kind == k).float().mean()) - p) < 0.01 for k, p in ((0, 0.5), (1, 0.25), (2, 0.25))] == [True] * 3
    assert abs(float(BatchedHFlip().sample(40000)["flip"].float().mean()) - 0.5) < 0.01


# ------------------------------------------------------------------ no host synchronisation

SYNC_OPS = ("aten::item", "aten::_local_scalar_dense", "aten::nonzero", "aten::is_nonzero", "aten::masked_select",
            "aten::equal")


def sync_ops(fn, inside: str | None = None) -> dict:
    """Host-synchronising aten ops run by ``fn()`` (only those under record_function ``inside`` if given)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    counts: dict = {}
    for e in prof.events():
        if e.name not in SYNC_OPS:
            continue
        parent = e.cpu_parent
        while inside is not None and parent is not None and parent.name != inside:
            parent = parent.cpu_parent
        if inside is None or parent is not None:
            counts[e.name] = counts.get(e.name, 0) + 1
    return counts


def test_the_counter_sees_a_host_sync():
    x = torch.rand(8)
    assert sync_ops(lambda: bool((x > 0.5).any()))["aten::is_nonzero"] == 1
    assert sync_ops(lambda: x[x > 0.5])["aten::nonzero"] == 1


@pytest.mark.parametrize("paper", ["fermam", "mmfrm", "emonet", "grefel", "mfer"])
def test_paper_train_transform_has_no_host_sync(paper):
    r = load_recipe(paper, "rafdb")
    tf = build_batch_transform(r, train=True)
    x = images(b=4, h=r.stored_size or r.input_size, w=r.stored_size or r.input_size)
    assert sync_ops(lambda: tf(x)) == {}
    assert tf(x).shape == (4, 3, r.input_size, r.input_size)


def test_one_training_step_gets_no_host_sync_from_its_transforms():
    """The engine's order (transform on the device batch, then Stepper.micro): every sync op of the step
    comes from the optimiser, none from the transforms (FERMam's and GReFEL's full augmentation)."""
    from ferlib.engine.step import Stepper
    from ferlib.losses import create_loss
    from ferlib.models.registry import ModelOutput

    class Tiny(torch.nn.Module):  # a ferlib model's contract at the smallest size: the step is what is tested
        def __init__(self):
            super().__init__()
            self.conv, self.fc = torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 7)

        def forward(self, x):
            f = self.conv(x).mean(dim=(2, 3))
            return ModelOutput(self.fc(f), f)

    torch.manual_seed(0)
    model = Tiny()
    loss = create_loss("cross_entropy")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    stepper = Stepper(model, loss, opt, model.parameters(), [], torch.device("cpu"), "fp32", batch_size=4)
    y = torch.tensor([0, 1, 2, 3])
    for paper, size in (("fermam", 100), ("grefel", 64)):
        r = load_recipe(paper, "rafdb")
        tf = build_batch_transform(r, train=True)
        x = images(b=4, h=size, w=size)

        def step():
            with torch.profiler.record_function("ferlib_transform"):
                batch = tf(x)
            stepper.micro(batch[..., :32, :32].contiguous(), y, boundary=True)

        assert sync_ops(step, inside="ferlib_transform") == {}, paper
        assert sync_ops(step) == sync_ops(lambda: stepper.micro(torch.rand(4, 3, 32, 32), y, boundary=True)), paper


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA's sync debug mode needs a GPU")
def test_train_transforms_do_not_sync_on_cuda():
    for paper in ("fermam", "mmfrm", "emonet", "grefel"):
        r = load_recipe(paper, "rafdb")
        tf = build_batch_transform(r, train=True).cuda()
        x = images(b=8, h=r.stored_size or r.input_size, w=r.stored_size or r.input_size).cuda()
        tf(x)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            tf(x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
