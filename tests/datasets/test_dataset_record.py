"""One record per dataset name (issue 18): ``register_dataset(name, splits=..., eval_split=..., folder=...,
label_set=..., face_crop=..., detect_layout=..., synthetic_format=...)`` beside the reader is all ferlib knows
of a dataset, and a new dataset registered in one place works everywhere a name is looked up."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ferlib.data.registry as registry
from ferlib.data import (DataNotFoundError, DatasetFormatError, FERDataset, SkipReport,
                         SyntheticFormat, dataset_info, dataset_root, list_datasets, list_synthetic_formats,
                         load_dataset, load_splits, register_dataset)
from ferlib.data.registry import FACE_CROPS
from ferlib.labels import LABEL_SETS, LabelSet
from ferlib.recipes import Recipe

#: The values of the tables the records replace (registry.DEFAULT_SPLITS, engine.training.EVAL_SPLIT / DEFAULT_FOLDER,
#: labels._DATASET_DEFAULT, engine.loop.FACE_CROP, prepare._DETECTORS, synthetic_reader.FORMATS), written out:
#: name -> (splits, eval split, folder, label set, face crop, layout detector module, synthetic class count).
NO_WRITER = "no synthetic writer"
EXPECTED = {
    "rafdb": (("train", "test"), "test", "rafdb", "rafdb", "aligned", "ferlib.data.readers.rafdb", 7),
    "affectnet": (("train", "val"), "val", "affectnet", "affectnet", "box", "ferlib.data.readers.affectnet", None),
    "affectnet8": (("train", "val"), "val", "affectnet", "affectnet8", "box", "ferlib.data.readers.affectnet", 8),
    "ferplus": (("train", "val", "test"), "test", "ferplus", "ferplus", "grey48", "ferlib.data.readers.ferplus", 8),
    "fer2013": (("train", "val", "test"), "test", "fer2013", "fer2013", "grey48", "ferlib.data.readers.fer2013", 7),
    "imagefolder": (("train", "test"), "test", "imagefolder", None, "aligned", None, None),
    "synthetic": (("train", "test"), "test", "synthetic", "rafdb", "aligned", None, NO_WRITER),
}


@pytest.fixture
def restored_registry():
    """Whatever a test registers is gone afterwards."""
    saved = dict(registry._DATASETS)
    yield
    registry._DATASETS.clear()
    registry._DATASETS.update(saved)


def test_every_registered_dataset_has_a_complete_record():
    assert list_datasets() == sorted(EXPECTED)
    for name in list_datasets():
        info = dataset_info(name)
        assert info.name == name and callable(info.reader), name
        assert info.splits and set(info.splits) <= {"train", "val", "test"} and info.eval_split in info.splits, name
        assert isinstance(info.folder, str) and info.folder, name
        assert info.face_crop in FACE_CROPS, name
        assert info.label_set is None or isinstance(info.label_set, LabelSet), name
        assert info.detect_layout is None or callable(info.detect_layout), name
        assert info.synthetic_format is None or callable(info.synthetic_format.write), name
    with pytest.raises(KeyError, match="unknown dataset 'sfew'"):
        dataset_info("sfew")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_records_hold_what_the_old_tables_held(name):
    import importlib

    splits, eval_split, folder, label_set, crop, detector, n_synthetic = EXPECTED[name]
    info = dataset_info(name)
    assert (info.splits, info.eval_split, info.folder, info.face_crop) == (splits, eval_split, folder, crop)
    assert info.label_set == (LABEL_SETS[label_set] if label_set else None)
    assert info.detect_layout is (importlib.import_module(detector).detect_layout if detector else None)
    if n_synthetic == NO_WRITER:
        assert info.synthetic_format is None
    else:
        assert info.synthetic_format.num_classes == n_synthetic
    assert info.generated == (name == "synthetic")


def test_what_reads_the_records():
    from ferlib.data import synthetic_writers
    from ferlib.engine.loop import preprocessing
    from ferlib.engine.training import default_data_root, eval_split
    from ferlib.evaluation import head_classes
    from ferlib.labels import RAFDB
    from ferlib.recipes import paper_order
    from ferlib.paths import data_dir
    from ferlib.recipes import load_recipe

    assert default_data_root("affectnet8") == data_dir() / "affectnet"
    assert default_data_root("rafdb") == data_dir() / "rafdb"
    assert [eval_split(load_recipe("baseline", d)) for d in ("rafdb", "affectnet", "affectnet8", "ferplus")] == \
        ["test", "val", "val", "test"]
    assert list_synthetic_formats() == ["affectnet", "affectnet8", "fer2013", "ferplus", "imagefolder", "rafdb"]
    # affectnet8 is written by AffectNet's writer and drawn with 8 classes
    assert dataset_info("affectnet8").synthetic_format.write is synthetic_writers.write_affectnet
    assert dataset_info("affectnet").synthetic_format.write is synthetic_writers.write_affectnet
    assert preprocessing(Recipe(paper="baseline", dataset="fer2013", model="baseline"))["face_crop"] == "grey48"
    assert preprocessing(Recipe(paper="baseline", dataset="imagefolder", model="baseline",
                                base_recipe="affectnet"))["face_crop"] == "box"
    assert preprocessing(Recipe(paper="baseline", dataset="not_registered", model="baseline"))["face_crop"] == "aligned"
    # the synthetic set's classes are RAF-DB's: the record says so, labels.py keeps no dataset table
    assert head_classes(None, "synthetic") == list(RAFDB)
    assert paper_order("baseline", "synthetic", dataset_info("synthetic").label_set.names) == RAFDB
    assert paper_order("baseline", "fer2013") == LABEL_SETS["fer2013"].names
    with pytest.raises(KeyError, match="native="):
        paper_order("baseline", "synthetic")


def test_a_name_registered_again_with_another_record_is_refused(restored_registry):
    rafdb = dataset_info("rafdb")
    same = dict(splits=rafdb.splits, eval_split=rafdb.eval_split, label_set="rafdb", face_crop=rafdb.face_crop,
                detect_layout=rafdb.detect_layout, synthetic_format=rafdb.synthetic_format)
    register_dataset("rafdb", **same)(rafdb.reader)  # the same record again (a module imported twice): no change
    assert dataset_info("rafdb") == rafdb
    with pytest.raises(ValueError, match="registered twice"):
        register_dataset("rafdb", **{**same, "eval_split": "train"})(rafdb.reader)
    with pytest.raises(ValueError, match="registered twice"):
        register_dataset("rafdb", **same)(lambda root, split="train", **_: None)
    assert dataset_info("rafdb") == rafdb
    with pytest.raises(ValueError, match="eval_split 'val' is not one of"):
        register_dataset("x", splits=("train", "test"), eval_split="val", label_set=None, face_crop="aligned")
    with pytest.raises(ValueError, match="face_crop"):
        register_dataset("x", splits=("train", "test"), eval_split="test", label_set=None, face_crop="tight")
    with pytest.raises(ValueError, match="unknown label set"):
        register_dataset("x", splits=("train", "test"), eval_split="test", label_set="sfew", face_crop="box")
    assert "x" not in list_datasets()


# ---------------------------------------------------------------------------------------------
# A new dataset in one place: an SFEW-like reader with its own layout check and synthetic writer
# ---------------------------------------------------------------------------------------------

TOY_CLASSES = LabelSet("sfew_toy", ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"))
TOY_FOLDERS = {"train": "Train", "val": "Val"}


def _write_toy(root: Path, per_class: dict) -> Path:
    """``root/{Train,Val}/<Class>/<i>.png`` with ``per_class[split]`` images per class."""
    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        for name in TOY_CLASSES.names:
            d = root / TOY_FOLDERS[split] / name.capitalize()
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def _register_toy():
    def detect_layout(root: Path) -> str:
        if (root / "Train").is_dir() or (root / "Val").is_dir():
            return "sfew"
        raise DatasetFormatError("not an SFEW folder: no Train/ nor Val/.", path=root, fix="point root at SFEW 2.0.")

    def write_toy(root: Path, cfg, samples) -> dict:  # the synthetic faces in this layout
        from ferlib.labels import CANONICAL

        truth = {}
        for split, folder in (("train", "Train"), ("test", "Val")):
            for i, img, _lm, true, label, _aus in samples(split, f"toy {split}"):
                d = root / folder / CANONICAL[label].capitalize()
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(d / f"{i}.png")
                truth[f"{folder}/{d.name}/{i}.png"] = true
        return truth

    @register_dataset("sfew_toy", splits=("train", "val"), eval_split="val", label_set=TOY_CLASSES, face_crop="box",
                      detect_layout=detect_layout, synthetic_format=SyntheticFormat(write_toy, num_classes=7))
    def load_sfew_toy(root, split="train", check="decode", transform=None, **_):
        detect_layout(Path(root))
        folder = Path(root) / TOY_FOLDERS["val" if split == "test" else split]
        paths, targets = [], []
        for k, name in enumerate(TOY_CLASSES.names):
            for p in sorted((folder / name.capitalize()).glob("*.png")) if (folder / name.capitalize()).is_dir() else ():
                paths.append(p)
                targets.append(k)
        return FERDataset(paths, targets, TOY_CLASSES, root, split, SkipReport(), transform)


def test_a_new_dataset_is_one_registration(restored_registry, tmp_path, monkeypatch):
    from ferlib.engine.loop import preprocessing
    from ferlib.engine.training import default_data_root, eval_split, load_split
    from ferlib.evaluation import head_classes
    from ferlib.prepare import check_layout, class_counts_by_split

    monkeypatch.setenv("FERLIB_DATA", str(tmp_path / "data"))
    _register_toy()
    root = _write_toy(tmp_path / "data" / "sfew_toy", {"train": 3, "val": 2})

    info = dataset_info("sfew_toy")
    assert "sfew_toy" in list_datasets() and (info.folder, info.eval_split) == ("sfew_toy", "val")
    train = load_dataset("sfew_toy", root, "train")
    assert len(train) == 21 and train.classes == list(TOY_CLASSES.names) and train[0][0].shape == (3, 20, 20)
    assert {s: len(d) for s, d in load_splits("sfew_toy", root).items()} == {"train": 21, "val": 14}
    assert dataset_root("sfew_toy") == root  # data/<folder> of its record
    cached = load_dataset("sfew_toy", root, "val", cache=tmp_path / "cache", cache_size=16, progress=False)
    assert len(cached) == 14 and tuple(cached[0][0].shape) == (3, 16, 16)

    # ferlib.prepare: the record's layout check, splits and default folder
    assert check_layout("sfew_toy", root) == f"sfew_toy: layout 'sfew' found at {root}"
    with pytest.raises(DatasetFormatError, match="not an SFEW folder"):
        check_layout("sfew_toy", tmp_path)
    assert class_counts_by_split("sfew_toy", root) == {"train": dict.fromkeys(TOY_CLASSES.names, 3),
                                                       "val": dict.fromkeys(TOY_CLASSES.names, 2)}

    # the engine: default folder, evaluation split, reading a split, the face crop a checkpoint records
    recipe = Recipe(paper="baseline", dataset="sfew_toy", model="baseline", input_size=16)
    assert default_data_root("sfew_toy") == root and eval_split(recipe) == "val"
    assert len(load_split(recipe, eval_split(recipe), cache=False, progress=False)) == 14
    assert preprocessing(recipe)["face_crop"] == "box"
    assert head_classes(None, "sfew_toy") == list(TOY_CLASSES.names)

    # the synthetic generator offers it as a format, written by its own writer, read by its own reader
    assert "sfew_toy" in list_synthetic_formats()
    syn = load_dataset("synthetic", tmp_path / "syn", "val", fmt="sfew_toy", n_train=14, n_test=7, size=24,
                       progress=False)
    assert syn.classes == list(TOY_CLASSES.names) and len(syn) == 7 and syn.root == tmp_path / "syn" / "sfew_toy"

    # a missing folder says where the dataset goes
    monkeypatch.setenv("FERLIB_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(DataNotFoundError, match=r"sfew_toy: no data at .*elsewhere.*sfew_toy"):
        dataset_root("sfew_toy")


def test_a_missing_folder_says_where_the_data_goes_in_one_message(tmp_path, monkeypatch):
    """dataset_root is the one place that says a dataset's folder is missing; training reads a split through it."""
    from ferlib.engine.training import load_split
    from ferlib.recipes import load_recipe

    monkeypatch.setenv("FERLIB_DATA", str(tmp_path))
    with pytest.raises(DataNotFoundError) as err:
        dataset_root("rafdb")
    where = tmp_path / "rafdb"
    assert str(err.value) == (
        f"rafdb: no data at {where}. The licensed datasets cannot ship with ferlib: obtain rafdb (data/README.md "
        f"says from where), put it at {where} or pass data_root=..., then check it with "
        f"notebooks/01_prepare_data.ipynb (-p dataset rafdb -p data_root <folder>).")
    with pytest.raises(DataNotFoundError) as by_training:
        load_split(load_recipe("baseline", "rafdb"), "test", cache=False)
    assert str(by_training.value) == str(err.value)
    with pytest.raises(DataNotFoundError, match=rf"^imagefolder: no data at {re.escape(str(tmp_path / 'mine'))}\. Pass"):
        dataset_root("imagefolder", tmp_path / "mine")
    (tmp_path / "affectnet").mkdir()
    assert dataset_root("affectnet8") == tmp_path / "affectnet"  # the record's folder
    assert dataset_root("synthetic") is None and dataset_root("synthetic", "~/syn") == Path.home() / "syn"


def test_the_toy_dataset_is_gone_after_its_test():
    assert "sfew_toy" not in list_datasets()
