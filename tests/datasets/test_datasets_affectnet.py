"""AffectNet: official CSV (codes 8–10, contempt, missing file, CRLF, BOM) and the three re-packagings."""
import json

import numpy as np
import pytest

from ferlib.data import DatasetFormatError, load_dataset
from ferlib.data.readers.affectnet import SKIP_CODES, SKIP_CONTEMPT

F = None
from ferlib.testing import FIXTURES_DIR  # noqa: E402

F = FIXTURES_DIR / "affectnet"
EXP = json.loads((FIXTURES_DIR / "expected.json").read_text())["affectnet"]
CSVS = {"train": "training", "val": "validation", "test": "validation"}


def counts(ds, keys=None):
    keys = keys or [str(i) for i in range(len(ds.classes))]
    return {k: n for k, n in zip(keys, ds.class_counts()) if n}


@pytest.mark.parametrize("split", ["train", "val", "test"])
@pytest.mark.parametrize("name,n", [("affectnet", 7), ("affectnet8", 8)])
def test_official_csv(name, n, split):
    e = EXP["csv"][CSVS[split]]
    ds = load_dataset(name, F, split)
    assert len(ds) == e[f"affectnet{n}_total"]
    assert counts(ds) == e[f"affectnet{n}_loaded_by_code"]
    assert ds.skip_report.counts[SKIP_CODES] == e["skip_report"]["codes_8_10"]
    assert ds.skip_report.counts["missing"] == e["skip_report"]["missing_image"]
    skipped = {r["subDirectory_filePath"] for r in e["rows_with_codes_8_9_10"]}
    assert set(ds.skip_report.examples[SKIP_CODES]) == skipped
    missing = e["missing_image_rows"][0]["subDirectory_filePath"]
    assert ds.skip_report.examples["missing"][0].endswith(missing)
    assert ds.skip_report.counts[SKIP_CONTEMPT] == (e["rows_by_expression_code"]["7"] if n == 7 else 0)
    assert list(ds.classes) == ["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt"][:n]


def test_csv_crop_and_landmarks():
    ds = load_dataset("affectnet8", F, "train")
    img, _ = ds[0]
    x, y, w, h = ds.boxes[0]
    assert img.shape == (3, int(round(y + h)) - int(round(y)), int(round(x + w)) - int(round(x)))
    lm = ds.landmarks(0)
    assert lm.shape == (68, 2) and np.isfinite(lm).all()
    full = ds.load_full(0)
    assert full.shape[0] >= img.shape[1] and full.shape[1] >= img.shape[2]
    uncropped = load_dataset("affectnet8", F, "train", crop=False)[0][0]
    assert uncropped.shape[1:] == full.shape[:2]


def test_csv_mixed_case_extensions_used_as_written():
    ds = load_dataset("affectnet8", F, "train")
    exts = {p.suffix for p in ds.samples}
    assert {".jpg", ".png"} <= exts and any(s in exts for s in (".JPG", ".jpeg"))


def test_csv_bom_crlf_header_parsed():
    from ferlib.data.readers.affectnet import CSV_COLUMNS
    from ferlib.data.base import read_csv_rows

    for f in ("training", "validation"):
        rows = read_csv_rows(F / "Manually_Annotated_file_lists" / f"{f}.csv", CSV_COLUMNS, what="x", fix="y")
        assert len(rows) == EXP["csv"][f]["data_rows"]
        assert all("\r" not in r["arousal"] for _, r in rows)


@pytest.mark.parametrize("split,folder", [("train", "train"), ("val", "valid"), ("test", "valid")])
def test_imagefolder_alpha(split, folder):
    ds = load_dataset("affectnet8", F / "imagefolder_alpha", split)
    assert ds.classes == ["anger", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    assert dict(zip(ds.classes, ds.class_counts())) == EXP["imagefolder_alpha"][folder]
    ds7 = load_dataset("affectnet", F / "imagefolder_alpha", split)
    assert ds7.classes == ["anger", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    assert ds7.skip_report.counts["class 'contempt' left out"] == EXP["imagefolder_alpha"][folder]["contempt"]
    assert len(ds7) == len(ds) - EXP["imagefolder_alpha"][folder]["contempt"]


@pytest.mark.parametrize("split,folder", [("train", "train"), ("val", "val")])
def test_imagefolder_numeric(split, folder):
    ds = load_dataset("affectnet8", F / "imagefolder_numeric", split)
    assert counts(ds) == EXP["imagefolder_numeric"][folder]
    assert all(int(p.parent.name) == t for p, t in zip(ds.samples, ds.targets))


@pytest.mark.parametrize("split,folder", [("train", "train_set"), ("val", "valid_set")])
def test_fermam7_lists(split, folder):
    ds = load_dataset("affectnet", F / "fermam7", split)
    assert counts(ds) == EXP["fermam7_lists"][folder]
    with pytest.raises(DatasetFormatError, match="no contempt"):
        load_dataset("affectnet8", F / "fermam7", split)


def test_layouts_agree_on_labels():
    """The same image has the same class name in every layout."""
    csv = load_dataset("affectnet8", F, "train")
    alpha = load_dataset("affectnet8", F / "imagefolder_alpha", "train")
    by_file = {p.name.split(".")[0]: csv.classes[t] for p, t in zip(csv.samples, csv.targets)}
    for p, t in zip(alpha.samples, alpha.targets):
        assert by_file[p.name.split(".")[0]] == alpha.classes[t]


def _write_csv(tmp_path, body):
    d = tmp_path / "Manually_Annotated_file_lists"
    d.mkdir()
    (tmp_path / "Manually_Annotated_Images").mkdir()
    (d / "training.csv").write_text(body)


def test_wrong_columns_raise(tmp_path):
    _write_csv(tmp_path, "path,x,y,w,h,lm,label\n1/a.jpg,0,0,1,1,,1\n")
    with pytest.raises(DatasetFormatError, match=r"missing column\(s\).*subDirectory_filePath") as e:
        load_dataset("affectnet", tmp_path, "train")
    assert e.value.line == 1 and "training.csv" in str(e.value)


def test_code_out_of_range_raises(tmp_path):
    from ferlib.data.readers.affectnet import CSV_COLUMNS

    _write_csv(tmp_path, ",".join(CSV_COLUMNS) + "\n1/a.jpg,0,0,1,1,,3,0,0\n1/b.jpg,0,0,1,1,,11,0,0\n")
    with pytest.raises(DatasetFormatError, match="outside 0..10") as e:
        load_dataset("affectnet", tmp_path, "train")
    assert e.value.line == 3


def test_unknown_layout_hint(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(DatasetFormatError, match="Manually_Annotated_file_lists"):
        load_dataset("affectnet", tmp_path, "train")


def test_emonet_lists_val8_and_val7(tmp_path):
    """EMO-Net's val7_origin.txt (AffectNet's native codes) and val8.txt (RAF-DB order + contempt, docs/papers/emonet.md §7)
    name the same images with the same emotions."""
    from ferlib.labels import LABEL_SETS

    csv = load_dataset("affectnet8", F, "val", check="none")
    rel = [str(p.relative_to(F / "Manually_Annotated_Images")) for p in csv.samples]
    to_val8 = {0: 6, 1: 3, 2: 4, 3: 0, 4: 1, 5: 2, 6: 5, 7: 7}      # docs/papers/emonet.md §7: native 0→6, 1→3, … (+ contempt)
    (tmp_path / "val8.txt").write_text("".join(f"{r} {to_val8[t]}\n" for r, t in zip(rel, csv.targets)))
    (tmp_path / "val7_origin.txt").write_text("".join(f"{r} {t}\n" for r, t in zip(rel, csv.targets) if t < 7))
    v8 = load_dataset("affectnet8", F, "val", list_file=tmp_path / "val8.txt")
    v7 = load_dataset("affectnet", F, "val", list_file=tmp_path / "val7_origin.txt")
    assert len(v8) == 27 and len(v7) == 23 and v8.skip_report.counts["missing"] == 1  # the file missing from the fixture
    assert v7.classes == ["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger"]
    assert v8.classes == ["surprise", "fear", "disgust", "happy", "sad", "anger", "neutral", "contempt"]
    native = {p: csv.classes[t] for p, t in zip(csv.samples, csv.targets)}
    assert all(native[p] == v8.classes[t] for p, t in zip(v8.samples, v8.targets))
    assert LABEL_SETS["emonet_affectnet8"].names == tuple(v8.classes)
    by_path = {p: v8.classes[t] for p, t in zip(v8.samples, v8.targets)}
    assert all(by_path[p] == v7.classes[t] for p, t in zip(v7.samples, v7.targets))
    (tmp_path / "bad.txt").write_text(f"{rel[0]} 9\n")
    with pytest.raises(DatasetFormatError, match="outside 0..6") as e:
        load_dataset("affectnet", F, "val", list_file=tmp_path / "bad.txt")
    assert e.value.line == 1


def test_empty_csv_is_an_empty_split(tmp_path):
    from ferlib.data.readers.affectnet import CSV_COLUMNS

    _write_csv(tmp_path, ",".join(CSV_COLUMNS) + "\r\n\r\n")
    with pytest.raises(DatasetFormatError, match="empty split 'train'"):
        load_dataset("affectnet", tmp_path, "train")


@pytest.mark.parametrize("cache", [False, True])
def test_relabel_into_emonet_order(tmp_path, cache):
    """EMO-Net's AffectNet-8 card reads the official CSV in RAF-DB order + contempt (its checkpoint's order)."""
    from ferlib.labels import LABEL_SETS
    from ferlib.engine.training import load_split
    from ferlib.recipes import load_recipe

    kw = dict(cache=tmp_path / "c", cache_size=32) if cache else {}
    native = load_dataset("affectnet8", F, "val", check="none")
    ours = load_dataset("affectnet8", F, "val", check="none", relabel="emonet_affectnet8", **kw)
    assert ours.classes == ["surprise", "fear", "disgust", "happy", "sad", "anger", "neutral", "contempt"]
    by_path = {str(p): native.classes[t] for p, t in zip(native.samples, native.targets)}
    assert len(ours) >= len(native) - 2                   # the cache also drops the fixture's unreadable files
    assert all(by_path[str(p)] == ours.classes[t] for p, t in zip(ours.samples, ours.targets))
    assert len(set(ours.targets)) == 8
    recipe = load_recipe("emonet", "affectnet8")
    assert recipe.dataset_kwargs == {"relabel": "emonet_affectnet8"}
    via_card = load_split(recipe, "val", F, progress=False, cache=False)
    assert via_card.classes == list(LABEL_SETS["emonet_affectnet8"].names)
    with pytest.raises(ValueError, match="has no \\['contempt'\\]"):
        load_dataset("affectnet8", F, "val", check="none", relabel="rafdb")
    with pytest.raises(KeyError, match="unknown label set"):
        load_dataset("affectnet8", F, "val", check="none", relabel="nope")
