"""Every synthetic format round-trips through its reader: same images (up to JPEG / 48×48 grey) and labels."""
import numpy as np
import pytest

from ferlib.data import load_dataset
from ferlib.data.synthetic_faces import SyntheticConfig, generate, make_sample
from ferlib.data.synthetic_writers import grey48, votes_for
from ferlib.labels import CANONICAL

N_TRAIN, N_TEST = 24, 10


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic_formats")


def load(root, fmt, split, **kw):
    return load_dataset("synthetic", root, split, fmt=fmt, n_train=N_TRAIN, n_test=N_TEST, progress=False, **kw)


def canonical(ds, t):
    return ds.label_set.to_canonical[int(np.argmax(t)) if not isinstance(t, int) else t]


@pytest.mark.parametrize("fmt,ncls", [("affectnet", 7), ("affectnet8", 8), ("imagefolder", 7), ("rafdb", 7)])
def test_image_formats_round_trip(root, fmt, ncls):
    cfg = SyntheticConfig(n_train=N_TRAIN, n_test=N_TEST, num_classes=ncls)
    for split, gen_split in (("train", "train"), ("val", "test")):
        ds = load(root, fmt, split)
        n = N_TRAIN if split == "train" else N_TEST
        labels = [make_sample(cfg, gen_split, i)[3] for i in range(n)]
        if fmt == "affectnet":
            labels = [lab for lab in labels if lab < 7]
        assert sorted(canonical(ds, t) for t in ds.targets) == sorted(labels)
        assert ds.classes == (sorted(CANONICAL[:ncls]) if fmt == "imagefolder" else ds.classes)
        for k in range(3):
            img = ds[k][0].permute(1, 2, 0).numpy().astype(float)
            i = _index_of(ds, k, fmt)
            want, _, _, lab, _ = make_sample(cfg, gen_split, i)
            assert img.shape == want.shape
            assert _smooth_diff(img, want) < 4.0  # JPEG q92 removes some pixel noise; a wrong image is > 20
            assert canonical(ds, ds.targets[k]) == lab


def _smooth_diff(a, b):
    import cv2

    return float(np.abs(cv2.blur(np.asarray(a, np.float32), (5, 5)) - cv2.blur(np.asarray(b, np.float32), (5, 5))).mean())


def test_smooth_diff_separates_images():
    cfg = SyntheticConfig()
    assert _smooth_diff(make_sample(cfg, "train", 0)[0], make_sample(cfg, "train", 1)[0]) > 20


def _index_of(ds, k, fmt):
    p = ds.samples[k]
    if fmt == "rafdb":
        return int(p.name.split("_")[1]) - 1
    if fmt == "imagefolder":
        return int(p.stem.split("_")[1])
    # affectnet: find by name
    from ferlib.data.synthetic_writers import hex_name

    split = "train" if ds.split == "train" else "test"
    return next(i for i in range(N_TRAIN) if hex_name(split, i, 0) == p.stem)


def test_affectnet_boxes_and_landmarks(root):
    cfg = SyntheticConfig(n_train=N_TRAIN, n_test=N_TEST, num_classes=8)
    ds = load(root, "affectnet8", "train")
    full = ds.load_full(0)
    assert full.shape[0] > 100 and full.shape[1] > 100
    i = _index_of(ds, 0, "affectnet")
    _, lm, _, _, _ = make_sample(cfg, "train", i)
    x, y, w, h = ds.boxes[0]
    np.testing.assert_allclose(ds.landmarks(0) - [x, y], lm, atol=0.01)


@pytest.mark.parametrize("fmt", ["ferplus", "fer2013"])
def test_csv_formats_round_trip(root, fmt):
    ncls = 8 if fmt == "ferplus" else 7
    cfg = SyntheticConfig(n_train=N_TRAIN, n_test=N_TEST, num_classes=ncls)
    half = N_TEST // 2
    for split, gen_split, idx in (("train", "train", range(N_TRAIN)), ("val", "test", range(half)),
                                  ("test", "test", range(half, N_TEST))):
        ds = load(root, fmt, split)
        assert len(ds) == len(idx) and not ds.skip_report
        for k, i in enumerate(idx):
            img, _, _, lab, _ = make_sample(cfg, gen_split, i)
            assert canonical(ds, ds.targets[k]) == lab
            np.testing.assert_array_equal(ds[k][0][0].numpy(), grey48(img))
    if fmt == "ferplus":
        soft = load(root, fmt, "train", label_mode="crossentropy")
        for k in range(5):
            v = np.array(votes_for(make_sample(cfg, "train", k)[3], "train", k, cfg), float)
            v[v <= 1] = 0
            assert int(np.argmax(soft.targets[k])) == int(np.argmax(v[:8]))


def test_generate_is_deterministic_and_idempotent(tmp_path):
    cfg = SyntheticConfig(n_train=6, n_test=4)
    a = generate(tmp_path / "a", fmt="affectnet", cfg=cfg, progress=False)
    b = generate(tmp_path / "b", fmt="affectnet", cfg=cfg, progress=False)
    for f in ("Manually_Annotated_file_lists/training.csv", "Manually_Annotated_file_lists/validation.csv"):
        assert (a / f).read_text() == (b / f).read_text()
    mtime = (a / "synthetic.json").stat().st_mtime_ns
    generate(tmp_path / "a", fmt="affectnet", cfg=cfg, progress=False)
    assert (a / "synthetic.json").stat().st_mtime_ns == mtime


def test_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="fmt must be one of"):
        load_dataset("synthetic", tmp_path, "train", fmt="nope")
    with pytest.raises(ValueError, match="FER2013 has 7 classes"):
        generate(tmp_path / "x", fmt="fer2013", cfg=SyntheticConfig(n_train=2, n_test=2, num_classes=8))
