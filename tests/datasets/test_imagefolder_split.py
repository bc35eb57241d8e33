"""``make_split`` / ``prepare imagefolder --make-split``: stratified, grouped, seeded, links not copies, recorded."""
import json
import os
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from ferlib.data import DatasetFormatError, load_dataset
from ferlib.data.readers.imagefolder import SPLIT_RECORD, class_counts, make_split
from ferlib.cli.prepare import main as prepare_main

CLASSES = ("anger", "happy", "neutral")


def write_tree(root, subjects=12, frames=3, seed=0):
    """root/<class>/S<subject>_<seq>_<frame>.png: each subject has one or two sequences of ``frames`` frames
    (CK+-like: the frames of a sequence share its class); returns {file name: class}."""
    rng = np.random.default_rng(seed)
    made = {}
    for s in range(subjects):
        for q in range(1 + s % 2):
            cls = CLASSES[(s + q) % len(CLASSES)]
            (root / cls).mkdir(parents=True, exist_ok=True)
            for f in range(frames):
                name = f"S{s:03d}_{q:03d}_{f:08d}.png"
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / cls / name)
                made[name] = cls
    return made


def sides(root):
    return {split: {p.name: p.parent.name for p in (root / split).glob("*/*")} for split in ("train", "test")}


def test_grouped_split_never_puts_a_subject_on_both_sides(tmp_path):
    made = write_tree(tmp_path)
    rec = make_split(tmp_path, 0.25, group_by=r"^(S\d+)_", seed=3)
    got = sides(tmp_path)
    subj = {s: {re.match(r"^(S\d+)_", n).group(1) for n in got[s]} for s in got}
    assert subj["train"] and subj["test"] and not subj["train"] & subj["test"]
    assert set(got["train"]) | set(got["test"]) == set(made)
    assert not set(got["train"]) & set(got["test"])
    for s in got:  # every file is filed under its own class
        assert all(made[n] == c for n, c in got[s].items())
    assert set(rec["groups"]["train"]).isdisjoint(rec["groups"]["test"])
    assert 0.1 < rec["test_fraction"] < 0.45


def test_ungrouped_split_is_stratified_exact_and_seeded(tmp_path):
    write_tree(tmp_path, subjects=20, frames=5)
    rec = make_split(tmp_path, 0.2, seed=1)
    n = Counter(p.parent.name for p in tmp_path.glob("[!t]*/*.png"))  # the class folders, not train/test
    for c in CLASSES:
        assert rec["counts"]["test"][c] == round(0.2 * n[c]), (c, rec["counts"], n)
        assert rec["counts"]["train"][c] + rec["counts"]["test"][c] == n[c]
    first = sides(tmp_path)
    make_split(tmp_path, 0.2, seed=1, overwrite=True)
    assert sides(tmp_path) == first
    make_split(tmp_path, 0.2, seed=2, overwrite=True)
    assert sides(tmp_path)["test"] != first["test"]


def test_links_not_copies_and_the_record_names_every_file(tmp_path):
    made = write_tree(tmp_path, subjects=6)
    rec = make_split(tmp_path, 0.3, seed=0)
    links = list((tmp_path / "train").glob("*/*")) + list((tmp_path / "test").glob("*/*"))
    assert links and all(p.is_symlink() for p in links)
    assert all(p.resolve().parent.parent == tmp_path.resolve() for p in links)
    saved = json.loads((tmp_path / SPLIT_RECORD).read_text())
    assert saved["seed"] == 0 and saved["fraction"] == 0.3 and saved["group_by"] is None
    assert {k.split("/")[1] for k in saved["files"]} == set(made) and saved["files"] == rec["files"]
    # hard links: same inode as the original
    make_split(tmp_path, 0.3, seed=0, link="hardlink", overwrite=True)
    one = next((tmp_path / "test").glob("*/*"))
    assert not one.is_symlink() and os.stat(one).st_ino == os.stat(tmp_path / one.parent.name / one.name).st_ino
    # the reader takes the split as an ImageFolder tree
    ds = load_dataset("imagefolder", tmp_path, "test")
    assert len(ds) == sum(rec["counts"]["test"].values()) and ds.classes == list(CLASSES)


def test_refuses_unmatched_names_and_an_existing_split(tmp_path):
    write_tree(tmp_path, subjects=4)
    with pytest.raises(DatasetFormatError, match="do not match"):
        make_split(tmp_path, 0.2, group_by=r"^(P\d+)_")
    with pytest.raises(DatasetFormatError, match="not a regular expression"):
        make_split(tmp_path, 0.2, group_by=r"^(S\d+_")
    make_split(tmp_path, 0.2)
    with pytest.raises(DatasetFormatError, match="already exists"):
        make_split(tmp_path, 0.2)


def test_prepare_cli_makes_the_split_and_prints_counts_per_split(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FERLIB_DATA", str(tmp_path / "data"))
    write_tree(tmp_path / "ck", subjects=10)
    rc = prepare_main(["imagefolder", "--root", str(tmp_path / "ck"), "--make-split", "0.2", "--group-by",
                       r"^(S\d+)_", "--seed", "5", "--cache-dir", str(tmp_path / "cache"), "--quiet",
                       "--workers", "0"])
    assert rc == 0
    err = capsys.readouterr().err
    counts = class_counts(tmp_path / "ck")
    assert set(counts) == {"train", "test"}
    assert SPLIT_RECORD in err and "class" in err and "train" in err and "test" in err
    for c in CLASSES:  # one table row per class: its train and test counts
        assert re.search(rf"^{c}\s+{counts['train'][c]}\s+{counts['test'][c]}$", err, re.M), err
    assert re.search(rf"^total\s+{sum(counts['train'].values())}\s+{sum(counts['test'].values())}$", err, re.M)


def test_prepare_cli_error_is_one_line(tmp_path, capsys):
    write_tree(tmp_path, subjects=3)
    rc = prepare_main(["imagefolder", "--root", str(tmp_path), "--make-split", "0.2", "--group-by", "^(X)"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and "do not match" in err[0]
