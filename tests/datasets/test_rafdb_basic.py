"""RAF-DB basic reader on the official-format fixture (counts and traps from expected.json)."""
import json

import pytest
import torch

from ferlib.data import DatasetFormatError, load_dataset
from ferlib.testing import FIXTURES_DIR

ROOT = FIXTURES_DIR / "rafdb" / "basic"
EXPECTED = json.loads((FIXTURES_DIR / "expected.json").read_text())["rafdb"]


@pytest.mark.parametrize("split", ["train", "test"])
def test_counts_aligned(split):
    ds = load_dataset("rafdb", ROOT, split)
    assert len(ds) == EXPECTED["loadable_aligned"][split]
    assert ds.classes == ["surprise", "fear", "disgust", "happy", "sad", "anger", "neutral"]
    img, target = ds[0]
    assert img.dtype == torch.uint8 and img.shape == (3, 100, 100)
    assert 0 <= target <= 6


def test_corrupt_jpeg_is_skipped_and_counted():
    ds = load_dataset("rafdb", ROOT, "train")
    assert ds.skip_report.counts["unreadable"] == 1
    assert "train_00002_aligned.jpg" in ds.skip_report.examples["unreadable"][0]
    assert all("train_00002" not in str(p) for p in ds.samples)


def test_labels_match_file_minus_one():
    ds = load_dataset("rafdb", ROOT, "test")
    rows = dict(line.split() for line in (ROOT / "EmoLabel" / "list_patition_label.txt").read_text().split("\n") if line.strip())
    for p, t in zip(ds.samples, ds.targets):
        assert int(rows[p.name.replace("_aligned", "")]) - 1 == t
    counts = ds.class_counts()
    assert counts == [EXPECTED["counts_by_file_label"]["test"][str(i)] for i in range(1, 8)]


def test_missing_root_names_the_fix(tmp_path):
    with pytest.raises(DatasetFormatError, match="does not exist.*data/README.md"):
        load_dataset("rafdb", tmp_path / "nope", "train")


def test_label_out_of_range_names_file_and_line(tmp_path):
    (tmp_path / "EmoLabel").mkdir()
    (tmp_path / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 3\ntrain_00002.jpg 9\n")
    with pytest.raises(DatasetFormatError, match=r"list_patition_label.txt, line 2: label 9 is outside 1..7"):
        load_dataset("rafdb", tmp_path, "train")
