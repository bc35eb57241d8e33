"""Alignment never mirrors a crop into its border, and warns when the input is already cropped."""
import warnings

import numpy as np
import pytest

from ferlib.data.align import (CROPPED_COVERAGE, AlreadyCroppedWarning, Face, FaceAligner, align_face,
                               box_coverage, similarity_transform, template, warn_if_already_cropped)


def tight_crop(size=48, seed=0):
    """A 'face crop' filling the whole image: a textured face (noise, never constant) with 5 points."""
    rng = np.random.default_rng(seed)
    img = rng.integers(40, 230, (size, size, 3), dtype=np.uint8)
    s = size / 112.0  # the template's points, scaled up so the face fills the image (zooming out to align)
    pts = (template(112) - 56) * 1.6 * s + size / 2
    return img, pts


def outside_mask(points5, src_shape, size):
    """Output pixels of the warp whose source lies outside the source image (by more than a pixel)."""
    M = similarity_transform(points5, template(size))
    A, t = M[:, :2], M[:, 2]
    ys, xs = np.mgrid[0:size, 0:size]
    dst = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    src = (dst - t) @ np.linalg.inv(A).T
    h, w = src_shape[:2]
    out = (src[:, 0] < -1) | (src[:, 1] < -1) | (src[:, 0] > w) | (src[:, 1] > h)
    return out.reshape(size, size)


@pytest.mark.parametrize("fill", [0, 127])
def test_border_of_an_aligned_tight_crop_is_constant(fill):
    img, pts = tight_crop()
    out = align_face(img, pts, 112, fill=fill)
    border = outside_mask(pts, img.shape, 112)
    assert border.sum() > 1000  # the warp zooms out: a wide border really comes from outside the crop
    assert np.all(out[border] == fill), np.unique(out[border])
    inside = ~outside_mask(pts, img.shape, 112) & (out.std(-1) > 0)
    assert inside.sum() > 500  # the face itself is still there


def test_the_check_catches_a_mirrored_border():
    """The same check on a BORDER_REFLECT_101 warp (the old behaviour) fails: mirrored texture in the border."""
    import cv2

    img, pts = tight_crop()
    M = similarity_transform(pts, template(112))
    mirrored = cv2.warpAffine(img, M, (112, 112), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    border = outside_mask(pts, img.shape, 112)
    assert len(np.unique(mirrored[border])) > 10


def test_replicate_border_repeats_edges_not_mirrors():
    img, pts = tight_crop()
    img[:] = 90
    img[:, -1] = 200  # only the right-most column is bright: replicated, the right border is bright ...
    img[:, :3] = 10   # ... and the left one dark (mirroring would bring the bright texture back inside out)
    out = align_face(img, pts, 112, border="replicate")
    border = outside_mask(pts, img.shape, 112)
    left, right = border.copy(), border.copy()
    left[:, 56:], right[:, :56] = False, False
    rows = np.arange(112)[:, None].repeat(112, 1)
    band = (rows > 40) & (rows < 70)  # rows level with the face, where the border is left / right of it
    assert out[left & band].max() <= 12 and out[right & band].min() >= 195


class FakeDetector:
    """Returns a face with the given box (x1, y1, x2, y2 as a share of the image) and the template's points."""

    def __init__(self, box_share):
        self.box_share, self.last_coverage = box_share, None

    def detect(self, img):
        h, w = img.shape[:2]
        x1, y1, x2, y2 = self.box_share
        pts = template(112) * (w / 112.0)
        return [Face(np.array([x1 * w, y1 * h, x2 * w, y2 * h]), 0.99, pts)]

    def __call__(self, img):
        f = self.detect(img)[0]
        self.last_coverage = box_coverage(f.box, img.shape)
        return f.points


class Images:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def load_full(self, i):
        return np.full((48, 48, 3), i, np.uint8)


def test_box_coverage():
    assert box_coverage((0, 0, 48, 48), (48, 48, 3)) == 1.0
    assert box_coverage((-10, -10, 60, 60), (48, 48, 3)) == 1.0  # clipped to the image
    assert box_coverage((0, 0, 24, 24), (48, 48)) == 0.25


def test_warns_when_faces_fill_the_images():
    with pytest.warns(AlreadyCroppedWarning, match="face crops already"):
        share = warn_if_already_cropped(Images(20), detector=FakeDetector((0.02, 0.0, 0.98, 1.0)))
    assert share == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", AlreadyCroppedWarning)
        assert warn_if_already_cropped(Images(20), detector=FakeDetector((0.3, 0.3, 0.7, 0.7))) == 0.0
    assert CROPPED_COVERAGE > 0.5


def test_aligner_warns_once_after_enough_tight_faces():
    aligner = FaceAligner(112, detector=FakeDetector((0.0, 0.0, 1.0, 1.0)), check_after=4)
    img = np.zeros((48, 48, 3), np.uint8)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for _ in range(10):
            assert aligner(img).shape == (112, 112, 3)
    assert sum(issubclass(w.category, AlreadyCroppedWarning) for w in rec) == 1


def test_prepare_aligns_on_the_spare_cores(monkeypatch):
    """prepare(workers=None) hands the cache the engine's worker count (min(8, cores-1); 0 on <= 2 cores)."""
    import ferlib.engine.training as training
    import ferlib.prepare as prep

    seen = {}
    monkeypatch.setattr(training, "default_cache_workers", lambda: 5)
    monkeypatch.setattr(prep, "load_dataset", lambda *a, **kw: seen.setdefault(a[2], kw["cache_workers"]))
    prep.prepare("synthetic", None, align=True)
    assert seen == {"train": 5, "test": 5}
    got = []
    monkeypatch.setattr(prep, "load_dataset", lambda *a, **kw: got.append(kw["cache_workers"]))
    prep.prepare("synthetic", None, splits=("train",), workers=0)
    assert got == [0]
