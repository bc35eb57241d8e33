"""GReFEL parity (issue 23): ferlib's GReFEL (variant 'arbex', arbex_loss) against takihasan/ARBEx's own code.

ARBEx is GReFEL's predecessor (no GReFEL code exists). The tests run ARBEx from a checkout extracted from the
local mirror, unchanged and with one deliberate change each; they skip where the mirror is absent (CI).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from ferlib.parity import ParityOptions, grefel

import upstream



# Spawns processes or trains end to end: the slow tier, so that make test-fast stays quick.
pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]


def checkout(dest: Path, edit: tuple[str, str, str] | None = None) -> Path:
    """The authors' repository extracted into ``dest``; ``edit`` = (file, old, new) changes one line of it."""
    upstream.checkout("takihasan/ARBEx", dest)
    if edit:
        name, old, new = edit
        upstream.edit(dest / "arbex" / name, old, new)
    return dest


def rows(report, stage):
    return {c.name: c for c in report.checks if c.stage == stage}


def test_live_parity_every_stage_with_a_fresh_seed(tmp_path):
    report = grefel.run(ParityOptions(upstream=checkout(tmp_path / "ARBEx"), seed=11))
    assert report.ok, report.table()
    data, model, train = rows(report, "data"), rows(report, "model"), rows(report, "train")
    assert data["labels by class name, 26 test images"].value == "0 of 26 differ"
    assert model["converted state (round trip)"].value.startswith("754/754")
    assert {"embedding [B,768]", "logits [B,7]", "anchor distances [B,7,1]"} <= set(model)
    assert train["per-step lr"].ok and train["class weights of the CE"].ok
    assert train["loss at iteration 0 (weighted CE at trust 0)"].ok


def test_live_parity_fails_in_augment_with_another_flip_rate(tmp_path):
    up = checkout(tmp_path / "ARBEx", ("data.py", "            transforms.RandomHorizontalFlip(0.5),\n            transforms.ToTensor()",
                                       "            transforms.RandomHorizontalFlip(0.2),\n            transforms.ToTensor()"))
    report = grefel.run(ParityOptions(upstream=up), stages=("augment",))
    assert report.failed_stages() == ["augment"], report.table()
    assert not rows(report, "augment")["flip rate"].ok


def test_live_parity_fails_in_train_with_another_ce_weight(tmp_path):
    up = checkout(tmp_path / "ARBEx", ("train.py", "'--hyperparam-lambda-ce',\n            type=float,\n            default=1.0,",
                                       "'--hyperparam-lambda-ce',\n            type=float,\n            default=0.5,"))
    report = grefel.run(ParityOptions(upstream=up), stages=("train",))
    assert report.failed_stages() == ["train"], report.table()
    assert not rows(report, "train")["loss at iteration 0 (weighted CE at trust 0)"].ok
