"""The engine's run-directory contract, checkpoint reload, resume, errors (CPU, tiny synthetic runs)."""
import json

import numpy as np
import pytest
import torch
import yaml

from ferlib.engine import DataNotFoundError, classification_metrics, load_run, predict, train
from ferlib.engine.checkpoint import load_checkpoint, save_checkpoint

TINY = dict(dataset_kwargs={"n_train": 48, "n_test": 24, "progress": False}, batch_size=16,
            model_kwargs={"width": 8}, input_size=32, progress=False)


@pytest.fixture(scope="module")
def syn_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def test_run_dir_holds_every_file_of_the_contract(syn_root, tmp_path):
    run = train("baseline", "synthetic", data_root=syn_root, run_dir=tmp_path / "r", epochs=2, **TINY)
    d = run.run_dir
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "predictions.npz", "summary.json"):
        assert (d / name).is_file(), name
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    assert cfg["recipe"]["paper"] == "baseline" and cfg["environment"]["torch"] == torch.__version__
    rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["step"] == 6
    with np.load(d / "predictions.npz") as z:
        assert z["logits"].shape == (24, 7) and z["features"].shape == (24, 64) and z["targets"].shape == (24,)
        assert list(z["classes"]) == ["surprise", "fear", "disgust", "happy", "sad", "anger", "neutral"]
    assert run.summary["selected_on"] == "test_selected"


def test_checkpoint_reloads_to_the_same_predictions(syn_root, tmp_path):
    run = train("baseline", "synthetic", data_root=syn_root, run_dir=tmp_path / "r", epochs=1, **TINY)
    model, recipe = load_run(run.run_dir)
    from ferlib.data import load_dataset

    test = load_dataset("synthetic", syn_root, "test", n_train=48, n_test=24, progress=False)
    pred = predict(model, test, recipe, "cpu", progress=False)
    with np.load(run.run_dir / "predictions.npz") as z:
        np.testing.assert_allclose(pred["logits"], z["logits"], rtol=1e-5, atol=1e-6)


def test_resume_equals_uninterrupted(syn_root, tmp_path):
    full = train("baseline", "synthetic", data_root=syn_root, run_dir=tmp_path / "full", epochs=2, **TINY)
    train("baseline", "synthetic", data_root=syn_root, run_dir=tmp_path / "part", epochs=1, **TINY)
    part = train("baseline", "synthetic", data_root=syn_root, run_dir=tmp_path / "part", epochs=2, **TINY)
    a = load_checkpoint(full.run_dir / "last.pt")["model"]
    b = load_checkpoint(part.run_dir / "last.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert len((part.run_dir / "metrics.jsonl").read_text().splitlines()) == 2


def test_validation_holdout_is_labelled(syn_root, tmp_path):
    run = train("baseline", "synthetic", data_root=syn_root, run_dir=tmp_path / "v", epochs=1,
                val_fraction=0.25, **TINY)
    assert run.summary["selected_on"] == "val"
    assert run.summary["test_at_val_selected"]["n"] == 24


def test_nan_loss_names_the_step(syn_root, tmp_path):
    with pytest.raises(FloatingPointError, match=r"loss is nan at epoch 1, step 0"):
        # std 0 turns the normalised pixels into inf - inf = nan (torch's optimisers refuse lr=nan)
        train("baseline", "synthetic", data_root=syn_root, run_dir=tmp_path / "n", epochs=1, std=(0.0, 0.0, 0.0),
              **{**TINY, "batch_size": 48})


def test_missing_real_dataset_points_at_notebook_01(tmp_path):
    with pytest.raises(DataNotFoundError, match="01_prepare_data"):
        train("baseline", "rafdb", data_root=tmp_path / "RAF-DB", epochs=1)


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path):
    p = tmp_path / "last.pt"
    save_checkpoint({"v": torch.tensor(1)}, p)
    save_checkpoint({"v": torch.tensor(2)}, p)
    p.write_bytes(p.read_bytes()[:20])
    with pytest.warns(UserWarning, match="unreadable"):
        assert int(load_checkpoint(p)["v"]) == 1


def test_metrics_against_hand_computed():
    logits = np.eye(3)[[0, 1, 1, 2, 0, 0]]
    targets = np.array([0, 1, 2, 2, 0, 1])
    m = classification_metrics(logits, targets, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["mean_class_accuracy"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert m["confusion_matrix"] == [[2, 0, 0], [1, 1, 0], [0, 1, 1]]
    # F1 per class: a 2/(2+1)*... precision a=2/3 recall 1 -> 0.8; b p=.5 r=.5 -> .5; c p=1 r=.5 -> 2/3
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
