"""EMO-Net parity (issue 23): ferlib replayed against the recording of the authors' numbers, and, where the
authors' repository is mirrored, the live comparison against their code and against deliberately changed copies."""
import shutil
from pathlib import Path

import pytest
import torch

import ferlib.parity.emonet as emonet
from ferlib.cli.parity import main as parity_main
from ferlib.parity import ParityOptions, run_parity
from ferlib.parity.core import load_record

import upstream

# Spawns processes or trains end to end: the slow tier, so that make test-fast stays quick.
pytestmark = pytest.mark.slow

RECORDING = Path(__file__).parents[1] / "data" / "parity" / "emonet.pt"


def test_the_recording_is_small_and_complete():
    rec = load_record(RECORDING)
    assert RECORDING.stat().st_size < 2_000_000
    assert rec["paper"] == "emonet" and rec["steps"] == 3 and len(rec["their_losses"]) == 3
    assert sum(len(e) for e in rec["epochs"]) == 3 and len(rec["epochs"]) == 3  # 8 images: one batch per epoch
    assert len(rec["their_final"]) == 373  # every parameter and buffer of the model


def test_replay_matches_the_authors_recorded_training():
    report = emonet.replay(RECORDING)
    print(report.table())
    assert report.ok, report.table()
    names = {c.name for c in report.checks}
    assert {"per-step loss (recorded)", "per-step lr (recorded)", "parameters and buffers after K steps (recorded)",
            "logits after epoch 1 (recorded)", "eval input vs their recorded input"} <= names
    assert {c.stage for c in report.checks} == {"data", "train", "eval"}


@pytest.mark.parametrize("change, failing", [
    ({"lr": 0.002}, {"per-step lr (recorded)", "per-step loss (recorded)"}),
    ({"weight_decay": 1e-3}, {"parameters and buffers after K steps (recorded)"}),
    ({"loss_kwargs": {"label_smoothing": 0.1}}, {"per-step loss (recorded)"}),
])
def test_replay_fails_when_ferlib_trains_differently(monkeypatch, change, failing):
    card = emonet.parity_recipe
    monkeypatch.setattr(emonet, "parity_recipe", lambda: card().replace(**change))
    report = emonet.replay(RECORDING, stages=("train", "eval"))
    assert not report.ok and "train" in report.failed_stages() and set(report.failed_stages()) <= {"train", "eval"}
    assert failing <= {c.name for c in report.failed}


def test_replay_fails_when_ferlib_reads_bgr(monkeypatch):
    card = emonet.parity_recipe
    monkeypatch.setattr(emonet, "parity_recipe", lambda: card().replace(color_order="BGR"))
    report = emonet.replay(RECORDING, stages=("data",))
    assert {c.name for c in report.failed} == {"eval input vs their recorded input",
                                               "train input (whole-image crop, no flip) vs their recorded input"}


# --- live: the authors' code from a checkout ---------------------------------------------------------------


@pytest.fixture
def checkout(tmp_path):
    """The authors' code (train.py, dataset.py, model/) extracted from the mirror into a temporary folder."""
    return upstream.checkout("xiayu-cell/EMO-Net", tmp_path / "EMO-Net", ("train.py", "dataset.py", "model"))


def test_cli_parity_passes_against_the_authors_code(checkout, capsys):
    assert parity_main(["emonet", "--upstream", str(checkout), "--seed", "11"]) == 0
    out = capsys.readouterr().out
    print(out)
    assert out.rstrip().endswith("parity emonet: PARITY OK (27 checks)")
    for row in ("eval input (decode, cache, Resize 256, CenterCrop 224)", "per-step loss (3 steps)",
                "parameters and buffers after 3 steps", "accuracy from their logits (epoch 1)", "crop area fraction"):
        assert row in out


def test_cli_parity_reports_a_missing_checkout(tmp_path, capsys):
    assert parity_main(["emonet", "--upstream", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: the authors' checkout {tmp_path / 'none'} does not exist; fix: git clone "
                   f"https://github.com/xiayu-cell/EMO-Net {tmp_path / 'none'}")


@pytest.mark.slow
@pytest.mark.parametrize("file, old, new, stage, names", [
    ("train.py", "lr=0.001, momentum=0.9, weight_decay=0.00001) \n", "lr=0.002, momentum=0.9, weight_decay=0.00001)\n",
     "train", {"optimiser", "per-step lr", "per-step loss (3 steps)"}),
    ("train.py", "momentum=0.9, weight_decay=0.00001) \n", "momentum=0.5, weight_decay=0.00001)\n",
     "train", {"optimiser", "parameters and buffers after 3 steps"}),
    ("train.py", "nn.CrossEntropyLoss()", "nn.CrossEntropyLoss(label_smoothing=0.1)",
     "train", {"per-step loss (3 steps)"}),
    ("dataset.py", "return Image.open(path).convert('RGB')",
     "return Image.merge('RGB', Image.open(path).convert('RGB').split()[::-1])",
     "data", {"eval input (decode, cache, Resize 256, CenterCrop 224)"}),
    ("train.py", "transforms.RandomResizedCrop(224)", "transforms.RandomResizedCrop(224, scale=(0.3, 1.0))",
     "augment", {"RandomResizedCrop size/scale/ratio/interpolation", "crop area fraction"}),
])
def test_parity_fails_and_names_the_stage_when_their_code_changes(checkout, file, old, new, stage, names):
    upstream.edit(checkout / file, old, new)
    report = run_parity("emonet", ParityOptions(upstream=checkout, seed=3, n_images=8, steps=3))
    print(report.table())
    assert stage in report.failed_stages() and not report.ok
    assert names <= {c.name for c in report.failed}


@pytest.mark.slow
def test_parity_record_replays(checkout, tmp_path):
    out = tmp_path / "emonet.pt"
    assert run_parity("emonet", ParityOptions(upstream=checkout, seed=5, n_images=8, steps=3, record=out)).ok
    assert emonet.replay(out).ok
    assert not torch.equal(load_record(out)["their_losses"], load_record(RECORDING)["their_losses"])  # seed 5 ≠ 0
    shutil.rmtree(checkout)
