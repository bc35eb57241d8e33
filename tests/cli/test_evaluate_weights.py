"""``python -m ferlib evaluate --weights``: a checkpoint file registered under a temporary FERLIB_HOME is evaluated with its
entry's preprocessing and class order, and reproduces the model it was built from; run-dir data errors."""
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torchvision.transforms import v2

from ferlib.cli.evaluate import main
from ferlib.data import DataNotFoundError, load_dataset
from ferlib.evaluation import ClassMismatchError, evaluate_run, evaluate_weights, released_checkpoints_table
from ferlib.labels import RAFDB
from ferlib.models import create_model
from ferlib.recipes import load_recipe
from ferlib.testing import FIXTURES_DIR
from ferlib.weights.registry import get_weights, list_weights

RAF = FIXTURES_DIR / "rafdb" / "basic"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A FERLIB_HOME whose pretrained/ folder is where the registry looks; data and results there too."""
    monkeypatch.setenv("FERLIB_HOME", str(tmp_path))
    monkeypatch.delenv("FERLIB_DATA", raising=False)
    monkeypatch.delenv("FERLIB_RESULTS", raising=False)
    (tmp_path / "pretrained").mkdir()
    return tmp_path


def emonet_file(home, entry_name, seed=0, bias=None):
    """Write a state dict built from EMO-Net's own keys under the entry's file name; returns the model."""
    e = get_weights(entry_name)
    torch.manual_seed(seed)
    model = create_model("emonet", **dict(e.model_kwargs)).eval()
    if bias is not None:  # make one output win everywhere
        with torch.no_grad():
            model.classifier[1].bias[bias] += 100.0
    torch.save(model.state_dict(), home / "pretrained" / e.filename)
    return model


@torch.no_grad()
def authors_logits(model, paths):
    """EMO-Net's eval pipeline written out: PIL RGB -> Resize(256) -> CenterCrop(224) -> ImageNet norm."""
    tf = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224), v2.ToDtype(torch.float32, scale=True),
                     v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    x = torch.stack([tf(v2.functional.pil_to_tensor(Image.open(p).convert("RGB"))) for p in paths])
    return model(x).logits.numpy()


def test_weights_reproduce_the_model_they_were_built_from(home):
    model = emonet_file(home, "emonet_rafdb_lam0.5", seed=1)
    res = evaluate_weights("emonet_rafdb_lam0.5", "rafdb", RAF, device="cpu", progress=False)
    ds = load_dataset("rafdb", RAF, "test")
    expected = authors_logits(model, ds.samples)
    pred = np.load(home / "results" / "released" / "emonet_rafdb_lam0.5_rafdb.npz")
    np.testing.assert_allclose(pred["logits"], expected, rtol=1e-4, atol=1e-4)
    acc = float((expected.argmax(1) == np.array(ds.targets)).mean())
    assert res["accuracy"] == pytest.approx(acc) and res["n"] == len(ds) == 26
    assert res["measured"] == pytest.approx(100 * acc, abs=1e-3) and res["reported"] == 91.30
    saved = json.loads((home / "results" / "released" / "emonet_rafdb_lam0.5_rafdb.json").read_text())
    assert saved["measured"] == res["measured"] and saved["classes"] == list(RAFDB) and saved["input_size"] == 224


def test_class_order_is_matched_by_name(home):
    """AffectNet-7 order (neutral, happy, …): a head that always says 'happy' (output 1) scores RAF-DB's share of
    happy faces (4 of 26), not of output 1's RAF-DB class (fear, 3 of 26)."""
    emonet_file(home, "emonet_affectnet7_lam0.6", bias=1)
    res = evaluate_weights("emonet_affectnet7_lam0.6", "rafdb", RAF, device="cpu", progress=False)
    assert res["classes"][1] == "happy" and res["reported"] is None  # the authors report it on AffectNet only
    assert res["accuracy"] == pytest.approx(4 / 26)


def test_a_file_path_with_model_and_the_cli(home, capsys):
    model = emonet_file(home, "emonet_rafdb_lam0.5", seed=2)
    own = home / "mine.pth"
    torch.save(model.state_dict(), own)
    rc = main(["--weights", str(own), "--model", "emonet", "--dataset", "rafdb", "--data-root", str(RAF),
               "--device", "cpu", "--no-progress", "--threads", "1", "--out", str(home / "mine.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "measured by ferlib" in out and "not reported" in out
    ds = load_dataset("rafdb", RAF, "test")
    acc = float((authors_logits(model.eval(), ds.samples).argmax(1) == np.array(ds.targets)).mean())
    assert json.loads((home / "mine.json").read_text())["accuracy"] == pytest.approx(acc)
    rc = main(["--weights", str(own), "--dataset", "rafdb", "--data-root", str(RAF)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and "--model" in err[0]


def test_unmatched_classes_are_an_error(home, tmp_path):
    emonet_file(home, "emonet_rafdb_lam0.5")
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (tmp_path / "pets" / split / c).mkdir(parents=True)
            Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "pets" / split / c / "a.png")
    with pytest.raises(ClassMismatchError, match="cat"):
        evaluate_weights("emonet_rafdb_lam0.5", "imagefolder", tmp_path / "pets", device="cpu", progress=False)


def fake_run(run_dir, data_root):
    """A run directory as ferlib.train writes it (checkpoint + config.yaml), trained on RAF-DB at ``data_root``."""
    recipe = load_recipe("baseline", "rafdb")
    model = create_model(recipe.model, num_classes=recipe.num_classes, **recipe.model_kwargs)
    run_dir.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "recipe": recipe.to_dict()}, run_dir / "best.pt")
    cfg = {"recipe": recipe.to_dict(), "data": {"train": {"classes": list(RAFDB)},
                                                "source": {"data_root": str(data_root), "cache": False}}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))


def test_run_dir_data_moved_says_where_it_looked_and_how_to_pass_another(tmp_path, capsys):
    gone = tmp_path / "moved_away" / "basic"
    fake_run(tmp_path / "run", gone)
    with pytest.raises(DataNotFoundError) as e:
        evaluate_run(tmp_path / "run", device="cpu", progress=False)
    assert str(gone) in str(e.value) and "--data-root" in str(e.value) and "obtain" not in str(e.value)
    assert main(["--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(gone) in err[0]
    res = evaluate_run(tmp_path / "run", data_root=RAF, device="cpu", progress=False)  # passing another works
    assert res["n"] == 26 and res["classes"] == list(RAFDB)


def test_released_table_reads_measured_json(home, tmp_path):
    (tmp_path / "released").mkdir()
    (tmp_path / "released" / "emonet_rafdb_lam0.6_rafdb.json").write_text(
        json.dumps({"measured": 90.52, "n": 3068, "split": "test", "date": "2026-11-27"}))
    t = released_checkpoints_table(tmp_path)
    assert set(t["weights"]) == set(list_weights(released=True))
    row = t[(t.weights == "emonet_rafdb_lam0.6") & (t.dataset == "rafdb")].iloc[0]
    assert row.reported == 91.52 and row.measured == 90.52 and row.gap == pytest.approx(-1.0) and row.n == 3068
    other = t[t.weights == "emonet_rafdb_lam0.5"].iloc[0]
    assert np.isnan(other.measured) and "absent" in other.note
