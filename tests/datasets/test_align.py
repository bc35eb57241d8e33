"""5-point similarity alignment, tested from known landmarks (no detector needed), plus the MTCNN wrapper."""
import importlib.util
import math
import sys

import cv2
import numpy as np
import pytest

from ferlib.data import load_dataset
from ferlib.data.align import (ARCFACE_112, FaceAligner, MTCNNDetector, align_face, five_points,
                               similarity_transform, template)
from ferlib.data.synthetic_faces import SyntheticConfig, make_sample
from ferlib.testing import FIXTURES_DIR


def _sim(theta, s, tx, ty):
    c, si = math.cos(theta), math.sin(theta)
    return np.array([[s * c, -s * si, tx], [s * si, s * c, ty]])


def _apply(M, pts):
    return np.asarray(pts, float) @ M[:, :2].T + M[:, 2]


def test_similarity_recovers_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    M = _sim(0.3, 1.7, 12.0, -5.0)
    np.testing.assert_allclose(similarity_transform(src, _apply(M, src)), M, atol=1e-10)


def test_similarity_never_reflects():
    src = ARCFACE_112.copy()
    mirrored = src * [-1, 1] + [112, 0]
    M = similarity_transform(src, mirrored)
    assert np.linalg.det(M[:, :2]) > 0


def test_template_sizes():
    np.testing.assert_allclose(template(112), ARCFACE_112)
    np.testing.assert_allclose(template(100), ARCFACE_112 * 100 / 112)


def test_five_points_from_68():
    lm = np.arange(136, dtype=float).reshape(68, 2)
    p = five_points(lm)
    np.testing.assert_allclose(p[0], lm[36:42].mean(0))
    np.testing.assert_allclose(p[1], lm[42:48].mean(0))
    np.testing.assert_allclose(p[2:], lm[[30, 48, 54]])


def test_align_undoes_a_known_pose():
    """Rotate/scale/shift a synthetic face and its landmarks; both align to (nearly) the same crop."""
    img, lm, *_ = make_sample(SyntheticConfig(size=160), "train", 3)
    M = _sim(math.radians(25), 0.8, 30, -10)
    moved = cv2.warpAffine(img, M, (160, 160), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    a = align_face(img, five_points(lm), 112).astype(np.float32)
    b = align_face(moved, five_points(_apply(M, lm)), 112).astype(np.float32)
    centre = (slice(20, 92), slice(20, 92))
    assert np.abs(cv2.blur(a, (3, 3)) - cv2.blur(b, (3, 3)))[centre].mean() < 6.0
    # the eyes land on the template: residual of the fit is small for this face
    Ma = similarity_transform(five_points(lm), template(112))
    assert np.abs(_apply(Ma, five_points(lm))[:2] - template(112)[:2]).max() < 8.0


def test_cache_aligns_affectnet_from_its_landmarks(tmp_path):
    def no_detector(img):
        raise AssertionError("landmarks are given: the detector must not run")

    from ferlib.data.cache import cached
    from ferlib.data import dataset_info

    ds = dataset_info("affectnet8").reader(FIXTURES_DIR / "affectnet", "train", check="exists")
    c = cached(ds, "affectnet8", FIXTURES_DIR / "affectnet", "train", {}, tmp_path, 112, align=True,
               progress=False, detector=no_detector)
    assert c.images.shape == (27, 3, 112, 112) and c.index["aligned"]
    i = 4
    want = align_face(ds.load_full(i), five_points(ds.landmarks(i)), 112)
    np.testing.assert_array_equal(c[i][0].permute(1, 2, 0).numpy(), want)


def test_missing_detector_package_has_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)
    with pytest.raises(ImportError, match="pip install --no-deps facenet-pytorch"):
        MTCNNDetector()
    with pytest.raises(ImportError, match="facenet-pytorch"):
        FaceAligner(112)(np.zeros((50, 50, 3), np.uint8))


def test_no_face_is_counted_not_fatal(tmp_path):
    from ferlib.data.cache import cached
    from ferlib.data import dataset_info

    ds = dataset_info("rafdb").reader(FIXTURES_DIR / "rafdb" / "basic", "test", check="exists")
    c = cached(ds, "rafdb", FIXTURES_DIR / "rafdb" / "basic", "test", {}, tmp_path, 100, align=True,
               progress=False, detector=lambda img: None)
    assert len(c) == 0 or c.skip_report.counts["no face detected"] == 26 - len(c)
    assert c.skip_report.counts["no face detected"] == 26


@pytest.mark.skipif(importlib.util.find_spec("facenet_pytorch") is None, reason="facenet-pytorch not installed")
def test_mtcnn_points_match_generator_landmarks():
    det = MTCNNDetector()
    img, lm, *_ = make_sample(SyntheticConfig(size=160), "train", 0)
    pts = det(img)
    assert pts is not None and pts.shape == (5, 2) and pts.dtype == np.float64
    assert np.abs(pts - five_points(lm)).max() < 6.0
    assert det(np.zeros((100, 100, 3), np.uint8)) is None


def test_synthetic_rafdb_aligns_from_generator_landmarks(tmp_path, monkeypatch):
    """No detector: the synthetic RAF-DB set carries its landmarks, the cache aligns with them."""
    import ferlib.data.align as align_mod

    monkeypatch.setattr(align_mod, "MTCNNDetector", lambda *a, **k: pytest.fail("detector must not be used"))
    kw = dict(fmt="rafdb", n_train=6, n_test=4, progress=False, cache=tmp_path / "cache", cache_size=112, align=True)
    c = load_dataset("synthetic", tmp_path / "syn", "train", **kw)
    assert c.images.shape == (6, 3, 112, 112) and c.index["aligned"]
    img, lm, *_ = make_sample(SyntheticConfig(n_train=6, n_test=4), "train", 0)
    k = [str(p).endswith("train_00001_aligned.jpg") for p in c.samples].index(True)
    from ferlib.data.base import decode_image

    want = align_face(decode_image(c.samples[k]), five_points(lm), 112)
    np.testing.assert_array_equal(c[k][0].permute(1, 2, 0).numpy(), want)
    plain = load_dataset("synthetic", tmp_path / "syn", "train", fmt="rafdb", n_train=6, n_test=4, progress=False,
                         cache=tmp_path / "cache", cache_size=112)
    assert plain.path != c.path
