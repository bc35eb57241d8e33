"""FER2013: the three CSV flavours, splits by Usage, and the broken files."""
import json

import pytest
import torch

from ferlib.data import DatasetFormatError, load_dataset
from ferlib.testing import FIXTURES_DIR

F = FIXTURES_DIR / "fer2013"
EXP = json.loads((FIXTURES_DIR / "expected.json").read_text())["fer2013"]
USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}


def counts(ds):
    return {str(i): n for i, n in enumerate(ds.class_counts()) if n}


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_fer2013_csv(split):
    ds = load_dataset("fer2013", F, split)
    assert counts(ds) == EXP["fer2013_csv"]["counts"][USAGE[split]]
    img, t = ds[0]
    assert img.shape == (3, 48, 48) and img.dtype == torch.uint8
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])
    assert ds.classes == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def test_fer2013_crlf_and_blank_line():
    total = sum(len(load_dataset("fer2013", F, s)) for s in USAGE)
    assert total == EXP["fer2013_csv"]["data_rows"]


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_icml_leading_space_headers(split):
    ds = load_dataset("fer2013", F, split, layout="icml")
    assert counts(ds) == EXP["icml_face_data_csv"]["counts"][USAGE[split]]


def test_kaggle_train_and_unlabelled_test():
    tr = load_dataset("fer2013", F / "kaggle", "train")
    assert len(tr) == EXP["kaggle"]["train_csv_rows"] and counts(tr) == EXP["kaggle"]["train_counts"]
    te = load_dataset("fer2013", F / "kaggle", "test")
    assert len(te) == EXP["kaggle"]["test_csv_rows"] and not te.has_labels
    assert all(t is None for t in te.targets) and te[0][1] == -1
    with pytest.raises(DatasetFormatError, match="no validation rows"):
        load_dataset("fer2013", F / "kaggle", "val")


def test_torchvision_subfolder(tmp_path):
    (tmp_path / "fer2013").mkdir()
    (tmp_path / "fer2013" / "fer2013.csv").write_bytes((F / "fer2013.csv").read_bytes())
    assert len(load_dataset("fer2013", tmp_path, "train")) == sum(EXP["fer2013_csv"]["counts"]["Training"].values())


def test_wrong_pixel_count():
    b = EXP["broken"]["pixels_wrong_length/fer2013.csv"]
    with pytest.raises(DatasetFormatError) as e:
        load_dataset("fer2013", F / "broken" / "pixels_wrong_length", "train")
    assert e.value.line == b["line_number"] and f"{b['values']} values" in str(e.value) and "2304" in str(e.value)
    assert "pixels_wrong_length/fer2013.csv" in str(e.value) and e.value.fix


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_label_out_of_range_any_split(split):
    b = EXP["broken"]["label_out_of_range/fer2013.csv"]
    with pytest.raises(DatasetFormatError) as e:
        load_dataset("fer2013", F / "broken" / "label_out_of_range", split)
    assert e.value.line == b["line_number"] and "emotion 7" in str(e.value)
    assert "label_out_of_range/fer2013.csv" in str(e.value)


def test_wrong_columns_named():
    with pytest.raises(DatasetFormatError) as e:
        load_dataset("fer2013", F / "broken" / "wrong_columns", "train")
    for col in ("emotion", "pixels", "Usage"):
        assert repr(col) in str(e.value)
    assert "label" in str(e.value)


def test_missing_files_hint(tmp_path):
    with pytest.raises(DatasetFormatError, match="fer2013.csv"):
        load_dataset("fer2013", tmp_path, "train")


@pytest.mark.parametrize("last,msg", [("x", "not an integer"), ("5.5", "not an integer"), ("300", "0..255")])
def test_bad_pixel_values(last, msg):
    from ferlib.data.readers.fer2013 import parse_pixels

    with pytest.raises(DatasetFormatError, match=msg) as e:
        parse_pixels(" ".join(["5"] * 2303 + [last]), "f.csv", 7)
    assert e.value.line == 7
    assert parse_pixels(" ".join(["5"] * 2304), "f.csv", 1).shape == (48, 48)
