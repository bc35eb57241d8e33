"""MMFRM parity (issue 23): ferlib against hutianhan/MMFRM's own data.py / train_my.py.

The replay tests read tests/data/parity/mmfrm.pt (the authors' side, recorded with
``python -m ferlib parity mmfrm --upstream DIR --record tests/data/parity/mmfrm.pt``) and need no checkout.
The live tests run the authors' code from a checkout extracted from the local mirror, unchanged and with
one deliberate change each; they skip where the mirror is absent (CI).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ferlib.parity import ParityOptions, mmfrm

import upstream



# Spawns processes or trains end to end: the slow tier, so that make test-fast stays quick.
pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]


def checkout(dest: Path, edit: tuple[str, str, str] | None = None) -> Path:
    """The authors' repository extracted into ``dest``; ``edit`` = (file, old, new) changes one line of it."""
    upstream.checkout("hutianhan/MMFRM", dest)
    if edit:
        name, old, new = edit
        upstream.edit(dest / name, old, new)
    return dest


def names(report, stage):
    return {c.name: c for c in report.checks if c.stage == stage}


@pytest.fixture(scope="module")
def replayed():
    torch.set_num_threads(1)
    return mmfrm.load_record(mmfrm.RECORDING), mmfrm.replay_recording(compare_fused=False)


def test_replay_matches_the_authors_recording(replayed):
    rec, report = replayed
    assert report.ok, report.table()
    assert set(report.failed_stages()) == set()
    assert [t for t, _, _ in rec["steps"]] == [1, 50, 51]           # before and after RFLoss switches on
    lr = [lr for _, _, lr in rec["steps"]]
    assert lr == pytest.approx([1e-3, 1e-3 * 0.9 ** 49, 1e-3 * 0.9 ** 50], rel=1e-9)   # the script's ExponentialLR
    train = names(report, "train")
    assert train["per-step loss (epochs 1 50 51)"].ok and train["per-step lr (epochs 1 50 51)"].ok
    assert train["parameters the optimiser updates"].value == "148 vs 148 tensors"
    assert any(n.startswith("parameters and buffers") and c.value.startswith("550/550") for n, c in train.items())
    data = names(report, "data")
    assert data["labels, 26 test images"].value == "0 of 26 differ"
    assert {"train transform, flip on", "train transform, one noise tensor"} <= set(data)
    assert len(names(report, "eval")) == 6


def test_replay_fails_in_the_data_stage_when_ferlib_reads_bgr(monkeypatch):
    base = mmfrm._recipe()
    monkeypatch.setattr(mmfrm, "_recipe", lambda batch=mmfrm.BATCH: base.replace(color_order="BGR"))
    report = mmfrm.run(ParityOptions(upstream="."), stages=("data",), replay=mmfrm.load_record(mmfrm.RECORDING))
    assert report.failed_stages() == ["data"]
    assert not names(report, "data")["eval transform, 26 test images"].ok


def test_replay_fails_in_the_train_stage_with_another_decay(monkeypatch):
    base = mmfrm._recipe()
    monkeypatch.setattr(mmfrm, "_recipe", lambda batch=mmfrm.BATCH: base.replace(schedule_kwargs={"gamma": 0.8}))
    report = mmfrm.run(ParityOptions(upstream="."), stages=("train",), replay=mmfrm.load_record(mmfrm.RECORDING),
                       compare_fused=False)
    assert "train" in report.failed_stages()
    assert not names(report, "train")["per-step lr (epochs 1 50 51)"].ok


def test_live_parity_with_a_fresh_seed(tmp_path):
    up = checkout(tmp_path / "MMFRM")
    report = mmfrm.run(ParityOptions(upstream=up, seed=7), stages=("data", "train", "eval"), compare_fused=False)
    assert report.ok, report.table()
    assert "seed 7" in names(report, "train")["what runs"].note


@pytest.mark.parametrize("edit, row", [
    (("train_my.py", "Adam(network.parameters(), weight_decay=1e-4)",
      "Adam(network.parameters(), lr=5e-4, weight_decay=1e-4)"), "optimiser base lr"),
    (("train_my.py", "ExponentialLR(optimizer, gamma=0.9)", "ExponentialLR(optimizer, gamma=0.8)"),
     "per-step lr (epochs 1 50 51)"),
    (("train_my.py", "            if  t>50:", "            if  t>51:"), "per-step loss (epochs 1 50 51)"),
], ids=["lr", "decay", "rfloss_epoch"])
def test_live_parity_fails_in_train_when_their_script_changes(tmp_path, edit, row):
    up = checkout(tmp_path / "MMFRM", edit)
    report = mmfrm.run(ParityOptions(upstream=up), stages=("train",), compare_fused=False)
    assert report.failed_stages()[0] == "train", report.table()   # (the validation logits follow: eval)
    assert not names(report, "train")[row].ok


def test_live_parity_fails_in_data_without_their_bgr_to_rgb(tmp_path):
    up = checkout(tmp_path / "MMFRM", ("data.py", "image = image[:, :, ::-1]  # BGR to RGB", "pass"))
    report = mmfrm.run(ParityOptions(upstream=up), stages=("data",))
    assert report.failed_stages() == ["data"], report.table()
    assert not names(report, "data")["eval transform, 26 test images"].ok


def test_live_parity_fails_in_augment_with_another_erasing_scale(tmp_path):
    up = checkout(tmp_path / "MMFRM", ("data.py", "RandomErasing(scale=(0.02, 0.25))", "RandomErasing(scale=(0.02, 0.1))"))
    report = mmfrm.run(ParityOptions(upstream=up), stages=("augment",))
    assert report.failed_stages() == ["augment"], report.table()
    assert not names(report, "augment")["erasing area (fraction of 112²)"].ok
