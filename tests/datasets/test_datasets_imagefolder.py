"""Generic ImageFolder reader with an explicit class order (FERPlus emotion folders)."""
import json

import pytest

from ferlib.data import DatasetFormatError, load_dataset
from ferlib.testing import FIXTURES_DIR

F = FIXTURES_DIR / "ferplus" / "imagefolder"
EXP = json.loads((FIXTURES_DIR / "expected.json").read_text())["ferplus"]["imagefolder"]


@pytest.mark.parametrize("split,folder", [("train", "train"), ("val", "valid"), ("test", "test")])
def test_default_order_is_sorted(split, folder):
    ds = load_dataset("imagefolder", F, split)
    assert ds.classes == sorted(EXP[folder])
    assert dict(zip(ds.classes, ds.class_counts())) == EXP[folder]


def test_explicit_order():
    order = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]
    ds = load_dataset("imagefolder", F, "train", classes=order)
    assert ds.classes == order
    assert all(p.parent.name == order[t] for p, t in zip(ds.samples, ds.targets))
    assert ds.label_set.to_canonical == (0, 1, 3, 2, 6, 5, 4, 7)


def test_unlisted_folder_raises():
    with pytest.raises(DatasetFormatError, match=r"class folder\(s\) \['surprise'\]"):
        load_dataset("imagefolder", F, "train", classes=["anger", "contempt", "disgust", "fear", "happiness",
                                                         "neutral", "sadness"])


def test_empty_split_and_missing_split(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DatasetFormatError, match="empty split 'train'"):
        load_dataset("imagefolder", tmp_path, "train")
    with pytest.raises(DatasetFormatError, match="no folder for split 'test'"):
        load_dataset("imagefolder", tmp_path, "test")


def test_corrupt_file_skipped(tmp_path):
    import shutil

    shutil.copytree(F / "train", tmp_path / "train")
    bad = next((tmp_path / "train" / "anger").iterdir())
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.warns(UserWarning, match="unreadable"):
        ds = load_dataset("imagefolder", tmp_path, "train")
    assert ds.skip_report.counts["unreadable"] == 1 and bad not in ds.samples


def test_a_missing_folder_of_your_own_says_no_such_folder_not_download(tmp_path, capsys):
    """imagefolder is your own data: a root that does not exist is "no such folder" (issue 24), while a published
    dataset's missing root still says to download it."""
    from ferlib.cli.prepare import main as prepare_main

    missing = tmp_path / "my_faces"
    with pytest.raises(DatasetFormatError) as err:
        load_dataset("imagefolder", missing, "train")
    assert str(err.value).startswith(f"{missing}: no such folder (imagefolder).") and "download" not in str(err.value)
    assert prepare_main(["imagefolder", "--root", str(missing), "--quiet"]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"error: {missing}: no such folder") and "download" not in line and "\n" not in line
    with pytest.raises(DatasetFormatError, match="download rafdb"):
        load_dataset("rafdb", tmp_path / "raf", "train")
