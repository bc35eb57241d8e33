"""Batched recipe transforms: output contract, colour order, normalisation, each augmentation step."""
import math

import pytest
import torch

from ferlib.data.transforms import BasicAug, GaussianNoise, build_batch_transform
from ferlib.recipes import Recipe


def recipe(**kw):
    base = dict(paper="t", dataset="synthetic", model="baseline", input_size=32, train_transforms=())
    base.update(kw)
    return Recipe(**base)


def batch(b=4, h=40, w=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=g)


def test_eval_resizes_and_normalises():
    r = recipe(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    x = batch(h=32, w=32)
    y = build_batch_transform(r, train=False)(x)
    assert y.dtype == torch.float32 and y.shape == (4, 3, 32, 32)
    torch.testing.assert_close(y, (x.float() / 255 - 0.5) / 0.25)
    assert build_batch_transform(r, train=False)(batch(h=50, w=50)).shape == (4, 3, 32, 32)


def test_colour_order_bgr_swaps_channels():
    x = batch(h=32, w=32)
    rgb = build_batch_transform(recipe(mean=(0, 0, 0), std=(1, 1, 1)), train=False)(x)
    bgr = build_batch_transform(recipe(mean=(0, 0, 0), std=(1, 1, 1), color_order="BGR"), train=False)(x)
    torch.testing.assert_close(bgr, rgb.flip(1))
    torch.testing.assert_close(bgr[:, 0], x[:, 2].float() / 255)
    # BGR applies before normalisation: channel 0 of the output is normalised with mean[0]
    b2 = build_batch_transform(recipe(mean=(0.1, 0.2, 0.3), std=(1, 1, 1), color_order="bgr"), train=False)(x)
    torch.testing.assert_close(b2[:, 0], x[:, 2].float() / 255 - 0.1)
    with pytest.raises(ValueError, match="color_order"):
        build_batch_transform(recipe(color_order="HSV"), train=False)


def test_train_augments_per_sample():
    torch.manual_seed(0)
    x = batch(b=1, h=32, w=32).repeat(16, 1, 1, 1)
    y = build_batch_transform(recipe(train_transforms=("random_crop", "hflip")), train=True)(x)
    assert y.shape == (16, 3, 32, 32)
    assert len({tuple(t.flatten()[:64].tolist()) for t in y}) > 4  # different draws within one batch


@pytest.mark.parametrize("steps,kw", [
    (("resize", "random_crop"), {"resize_to": 36, "crop_padding": 0}),
    (("random_resized_crop", "hflip"), {}),
    (("rotation", "affine", "perspective", "color_jitter"), {"jitter": [0.4, 0.4, 0.4, 0.1]}),
    (("basic_aug", "random_erasing"), {"erasing": {"scale": [0.02, 0.1]}}),
    (("vflip", "gaussian_noise", "center_crop"), {"noise_std": 3.0}),
])
def test_every_step_runs_and_keeps_shape(steps, kw):
    y = build_batch_transform(recipe(train_transforms=steps, transform_kwargs=kw), train=True)(batch())
    assert y.shape == (4, 3, 32, 32) and torch.isfinite(y).all()


def test_unknown_step():
    with pytest.raises(ValueError, match="unknown train transform 'blur'"):
        build_batch_transform(recipe(train_transforms=("blur",)), train=True)


def test_resize_center_crop_eval():
    r = recipe(input_size=28, test_transforms=("resize_center_crop",), transform_kwargs={"eval_resize": 32})
    x = batch(h=32, w=32)
    y = build_batch_transform(r, train=False)(x)
    torch.testing.assert_close(y, build_batch_transform(recipe(input_size=28, mean=r.mean, std=r.std),
                                                         train=False)(x[..., 2:30, 2:30]))


def test_gaussian_noise_statistics():
    torch.manual_seed(0)
    x = torch.full((3, 64, 64), 128, dtype=torch.uint8)
    y = GaussianNoise()(x)
    assert y.dtype == torch.uint8
    assert abs(y.float().std().item() - math.sqrt(30)) < 0.3 and abs(y.float().mean().item() - 127.5) < 0.3  # astype(uint8) truncates, as upstream


def test_basic_aug_probabilities():
    """p(flip) = 0.25, p(noise) = 0.25, p(unchanged) = 0.5 (docs/papers/fermam.md §12 combined with no other flip)."""
    torch.manual_seed(0)
    x = torch.arange(3 * 8 * 8, dtype=torch.uint8).view(3, 8, 8) + 50
    aug = BasicAug()
    kinds = {"same": 0, "flip": 0, "noise": 0}
    for _ in range(4000):
        y = aug(x)
        kinds["same" if torch.equal(y, x) else "flip" if torch.equal(y, x.flip(-1)) else "noise"] += 1
    assert abs(kinds["same"] / 4000 - 0.5) < 0.03
    assert abs(kinds["flip"] / 4000 - 0.25) < 0.03 and abs(kinds["noise"] / 4000 - 0.25) < 0.03


def test_batched_random_crop_is_a_crop_of_the_padded_image():
    from ferlib.data.transforms import BatchedRandomCrop

    torch.manual_seed(1)
    x = batch(b=8, h=32, w=32)
    y = BatchedRandomCrop(32, padding=4)(x)
    xp = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for b in range(8):
        hits = [(i, j) for i in range(9) for j in range(9) if torch.equal(xp[b, :, i:i + 32, j:j + 32], y[b])]
        assert hits
    same = BatchedRandomCrop(32, padding=4)(x[:1].repeat(16, 1, 1, 1))
    assert len({tuple(t.flatten().tolist()) for t in same}) > 8  # offsets drawn per image


def test_batched_flip_is_per_image():
    from ferlib.data.transforms import BatchedHFlip

    torch.manual_seed(0)
    x = batch(b=200, h=8, w=8)
    y = BatchedHFlip()(x)
    flipped = [torch.equal(y[b], x[b].flip(-1)) for b in range(200)]
    same = [torch.equal(y[b], x[b]) for b in range(200)]
    assert all(f or s for f, s in zip(flipped, same)) and 70 < sum(flipped) < 130
