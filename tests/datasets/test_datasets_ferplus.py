"""FERPlus: vote processing per label mode (docs/datasets.md §3) and every trap row of the fixture."""
import json

import numpy as np
import pytest
import torch

from ferlib.data import DatasetFormatError, load_dataset
from ferlib.data.readers.ferplus import SKIP_LABEL, SKIP_NO_IMAGE, process_votes
from ferlib.testing import FIXTURES_DIR

F = FIXTURES_DIR / "ferplus"
EXP = json.loads((FIXTURES_DIR / "expected.json").read_text())["ferplus"]
USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
MODES = ["majority", "probability", "crossentropy", "multi_target"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_counts_per_mode(split, mode):
    e = EXP["splits"][USAGE[split]] if "splits" in EXP else EXP[USAGE[split]]
    ds = load_dataset("ferplus", F, split, label_mode=mode, eval_mode=None)
    m = e["modes"][mode]
    assert len(ds) == m["kept_total"]
    assert dict(zip(ds.classes, ds.class_counts())) == m["kept_by_argmax_class"]
    assert ds.skip_report.counts[SKIP_LABEL] == m["dropped"]
    assert ds.skip_report.counts[SKIP_NO_IMAGE] == e["rows_with_empty_image_name"]
    assert ds.classes == ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]


@pytest.mark.parametrize("mode", MODES)
def test_eval_splits_use_majority(mode):
    ds = load_dataset("ferplus", F, "val", label_mode=mode)
    assert ds.label_mode == "majority" and all(isinstance(t, int) for t in ds.targets)


def _trap_rows():
    splits = EXP["splits"] if "splits" in EXP else {k: v for k, v in EXP.items() if isinstance(v, dict) and "trap_rows" in v}
    for usage, e in splits.items():
        for row in e["trap_rows"]:
            yield pytest.param(row, id=f"{usage}-{row['kind']}")


@pytest.mark.parametrize("row", list(_trap_rows()))
def test_trap_rows(row):
    votes = row["votes"]
    for mode, key in (("majority", "majority"), ("crossentropy", "crossentropy"), ("probability", "crossentropy"),
                      ("multi_target", "multi_target")):
        got = process_votes(votes, mode)
        if row[key] is None:
            assert got is None, (mode, votes)
        else:
            np.testing.assert_allclose(got, row[key], atol=1e-12)


@pytest.mark.parametrize("row", list(_trap_rows()))
def test_trap_rows_in_datasets(row):
    """Named trap rows are present with the expected target or listed in the skip report."""
    if not row["image_name"]:
        return
    for mode, key in (("majority", "majority"), ("crossentropy", "crossentropy"), ("multi_target", "multi_target")):
        found = None
        for split in ("train", "val", "test"):
            ds = load_dataset("ferplus", F, split, label_mode=mode, eval_mode=None)
            names = {p.name: t for p, t in zip(ds.samples, ds.targets)}
            if row["image_name"] in names:
                found = names[row["image_name"]]
                break
            if row["image_name"] in ds.skip_report.examples.get(SKIP_LABEL, []):
                found = "skipped"
                break
        if row[key] is None:
            assert found == "skipped"
        elif mode == "majority":
            assert found == int(np.argmax(row[key]))
        else:
            np.testing.assert_allclose(found, row[key])


def test_soft_targets_are_vectors_and_probability_samples():
    ce = load_dataset("ferplus", F, "train", label_mode="crossentropy")
    _, t = ce[0]
    assert t.dtype == torch.float32 and t.shape == (8,) and abs(float(t.sum()) - 1) < 1e-6
    pr = load_dataset("ferplus", F, "train", label_mode="probability")
    i = next(k for k, p in enumerate(pr.samples) if p.name == "fer0000014.png")
    torch.manual_seed(0)
    draws = [pr[i][1] for _ in range(300)]
    assert set(draws) == {0, 3, 4}  # votes [4,0,0,3,3] → neutral/sadness/anger
    freq = np.bincount(draws, minlength=8) / 300
    np.testing.assert_allclose(freq[[0, 3, 4]], [0.4, 0.3, 0.3], atol=0.08)


def test_crlf_row_read(tmp_path):
    ds = load_dataset("ferplus", F, "val", label_mode="majority")
    names = [p.name for p in ds.samples]
    assert "fer0000055.png" in names and all(not n.endswith("\r") for n in names)


def test_label_csv_without_fer2013new(tmp_path):
    """Votes from each folder's label.csv (also the older format with a quoted box field)."""
    import shutil

    shutil.copytree(F / "FER2013Train", tmp_path / "FER2013Train")
    lines = (tmp_path / "FER2013Train" / "label.csv").read_text().splitlines()
    name, *votes = lines[0].split(",")
    lines[0] = f'{name},"(0, 0, 48, 48)",' + ",".join(votes)
    (tmp_path / "FER2013Train" / "label.csv").write_text("\n".join(lines) + "\n")
    ds = load_dataset("ferplus", tmp_path, "train")
    ref = load_dataset("ferplus", F, "train")
    assert [p.name for p in ds.samples] == [p.name for p in ref.samples] and ds.targets == ref.targets


def test_pixels_layout_matches_png_folders(tmp_path):
    """Row i of fer2013new.csv ↔ row i of fer2013.csv: write the PNG pixels into a fer2013.csv and compare."""
    import csv as _csv

    from ferlib.data.base import decode_image

    rows = list(_csv.reader(open(F / "fer2013new.csv", newline="", encoding="utf-8")))[1:]
    rows = [r for r in rows if r]
    folders = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}
    out = ["emotion,pixels,Usage"]
    for r in rows:
        px = np.zeros((48, 48), np.uint8)
        if r[1].strip():
            px = decode_image(F / folders[r[0]] / r[1].strip())[..., 0]
        out.append(f"0,{' '.join(map(str, px.ravel()))},{r[0]}")
    (tmp_path / "fer2013.csv").write_text("\n".join(out) + "\n")
    (tmp_path / "fer2013new.csv").write_bytes((F / "fer2013new.csv").read_bytes())
    a = load_dataset("ferplus", tmp_path, "train", label_mode="crossentropy")
    b = load_dataset("ferplus", F, "train", label_mode="crossentropy")
    assert len(a) == len(b)
    for i in range(len(a)):
        assert torch.equal(a[i][0], b[i][0])
        assert torch.equal(a[i][1], b[i][1])


def test_fermam_modes():
    t = process_votes([4, 0, 0, 3, 3, 0, 0, 0, 5, 0], "fermam_soft")
    np.testing.assert_allclose(t, [0.4, 0, 0, 0.3, 0.3, 0, 0, 0])
    assert process_votes([0] * 8 + [10, 0], "fermam_majority") is None
    np.testing.assert_allclose(process_votes([1, 1, 0, 0, 0, 0, 0, 0, 0, 0], "fermam_majority"), np.eye(8)[0])


def test_missing_fer2013new_and_images(tmp_path):
    with pytest.raises(DatasetFormatError, match="no FERPlus images"):
        load_dataset("ferplus", tmp_path, "train")
    (tmp_path / "fer2013new.csv").write_text("Usage,Image name,neutral\nTraining,fer0.png,1\n")
    (tmp_path / "FER2013Train").mkdir()
    with pytest.raises(DatasetFormatError, match=r"missing column\(s\)"):
        load_dataset("ferplus", tmp_path, "train")


def test_fermam_flat_folder(tmp_path):
    """FERMam: the three PNG folders flattened into one, votes from fer2013new.csv."""
    import shutil

    for d in ("FER2013Train", "FER2013Valid", "FER2013Test"):
        for f in (F / d).glob("*.png"):
            shutil.copy(f, tmp_path / f.name)
    for split in ("train", "val", "test"):
        a = load_dataset("ferplus", F, split, image_dir=tmp_path, label_mode="fermam_soft", eval_mode=None)
        b = load_dataset("ferplus", F, split)
        assert all(p.parent == tmp_path for p in a.samples)
        assert set(p.name for p in b.samples) <= set(p.name for p in a.samples)
        assert all(abs(float(np.sum(t)) - 1) < 1e-9 for t in a.targets)
