"""RAF-DB layouts (official list, EMO-Net ImageFolder, MFER flat folders) against the fixture counts."""
import json

import pytest
import torch

from ferlib.data import DatasetFormatError, load_dataset
from ferlib.testing import FIXTURES_DIR

F = FIXTURES_DIR / "rafdb"
EXP = json.loads((FIXTURES_DIR / "expected.json").read_text())["rafdb"]


def by_file_label(ds):
    """class counts keyed by RAF-DB file label 1..7 (index + 1)."""
    return {str(i + 1): n for i, n in enumerate(ds.class_counts()) if n}


@pytest.mark.parametrize("split", ["train", "test"])
def test_list_layout_aligned_skips_corrupt_jpeg(split):
    with pytest.warns(UserWarning) if split == "train" else _nothing():
        ds = load_dataset("rafdb", F / "basic", split)
    assert len(ds) == EXP["loadable_aligned"][split]
    expected = dict(EXP["counts_by_file_label"][split])
    if split == "train":
        expected["3"] -= 1  # the corrupt image has file label 3
        assert dict(ds.skip_report.counts) == {"unreadable": 1}
        assert ds.skip_report.examples["unreadable"][0].endswith("train_00002_aligned.jpg")
        assert not any(str(p).endswith("train_00002_aligned.jpg") for p in ds.samples)
    assert by_file_label(ds) == expected
    assert all(str(p).split("/")[-1].startswith(split + "_") for p in ds.samples)


def _nothing():
    import contextlib

    return contextlib.nullcontext()


@pytest.mark.parametrize("split", ["train", "test"])
def test_list_layout_original_keeps_intact_twin(split):
    ds = load_dataset("rafdb", F / "basic", split, variant="original")
    assert len(ds) == EXP["loadable_original"][split]
    assert by_file_label(ds) == EXP["counts_by_file_label"][split]
    assert not ds.skip_report


def test_list_file_crlf_and_trailing_blank_line():
    from ferlib.data.readers.rafdb import read_list_file

    rows = read_list_file(F / "basic" / "EmoLabel" / "list_patition_label.txt")
    assert len(rows) == EXP["list_file"]["rows"]
    assert all("\r" not in name for name, _, _ in rows)
    crlf = [r for r in rows if r[2] == EXP["list_file"]["crlf_line_number"]]
    assert len(crlf) == 1 and crlf[0][0].endswith(".jpg") and 0 <= crlf[0][1] <= 6


@pytest.mark.parametrize("split", ["train", "test"])
def test_emonet_imagefolder_layout(split):
    ds = load_dataset("rafdb", F / "emonet_imagefolder", split)
    assert {str(i): n for i, n in enumerate(ds.class_counts()) if n} == EXP["emonet_imagefolder"][split]
    assert ds.classes == ["surprise", "fear", "disgust", "happy", "sad", "anger", "neutral"]
    # folder = label index
    assert all(int(p.parent.name) == t for p, t in zip(ds.samples, ds.targets))


@pytest.mark.parametrize("split,folder", [("train", "train"), ("test", "valid"), ("val", "valid")])
def test_mfer_layout_labels_from_list(split, folder):
    ds = load_dataset("rafdb", F / "mfer_layout", split)
    assert len(ds) == EXP["mfer_layout"][folder]
    assert all(p.parent.name == folder for p in ds.samples)
    ref = load_dataset("rafdb", F / "basic", "train" if split == "train" else "test", variant="original")
    names = {p.name.replace("_aligned", ""): t for p, t in zip(ds.samples, ds.targets)}
    assert names == {p.name: t for p, t in zip(ref.samples, ref.targets)}


def test_layout_is_forced_and_detected():
    with pytest.raises(DatasetFormatError, match="not a RAF-DB folder"):
        load_dataset("rafdb", F, "train")
    with pytest.raises(DatasetFormatError, match="list file not found"):
        load_dataset("rafdb", F / "emonet_imagefolder", "train", layout="list")


def test_items_are_uint8_chw():
    ds = load_dataset("rafdb", F / "basic", "test")
    img, t = ds[0]
    assert img.dtype == torch.uint8 and img.shape == (3, 100, 100) and isinstance(t, int)


def test_bad_label_raises_with_line(tmp_path):
    (tmp_path / "EmoLabel").mkdir()
    (tmp_path / "Image" / "aligned").mkdir(parents=True)
    (tmp_path / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 5\ntrain_00002.jpg 8\n")
    with pytest.raises(DatasetFormatError) as e:
        load_dataset("rafdb", tmp_path, "train")
    assert e.value.line == 2 and "outside 1..7" in str(e.value) and "list_patition_label.txt" in str(e.value)


def test_empty_split_raises(tmp_path):
    (tmp_path / "EmoLabel").mkdir()
    (tmp_path / "Image" / "aligned").mkdir(parents=True)
    (tmp_path / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 5\n")
    with pytest.raises(DatasetFormatError, match="empty split 'test'"):
        load_dataset("rafdb", tmp_path, "test")


def test_nonexistent_root_says_where(tmp_path):
    with pytest.raises(DatasetFormatError) as e:
        load_dataset("rafdb", tmp_path / "nope", "train")
    assert "does not exist" in str(e.value) and "data/README.md" in str(e.value)
    assert str(tmp_path / "nope") in str(e.value)
