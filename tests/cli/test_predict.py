"""``ferlib.inference``: faces found in a real photo (matplotlib's sample photo of Grace Hopper), probabilities over
the model's class names, annotated PNG and CSV from the command line."""
import csv

import matplotlib
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ferlib.labels import RAFDB
from ferlib.models import create_model
from ferlib.cli.predict import main
from ferlib.inference import Predictor, crop_face, read_photo
from ferlib.recipes import load_recipe
from ferlib.weights.registry import get_weights

pytest.importorskip("facenet_pytorch")
PHOTO = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)  # US Navy photo, public domain


def synthetic_run(run_dir, seed=0):
    """A run directory as ferlib.engine.train writes it for the quickstart's recipe (random weights)."""
    recipe = load_recipe("baseline", "synthetic")
    torch.manual_seed(seed)
    model = create_model(recipe.model, num_classes=recipe.num_classes, **recipe.model_kwargs)
    run_dir.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "recipe": recipe.to_dict()}, run_dir / "best.pt")
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"recipe": recipe.to_dict(),
                                                         "data": {"train": {"classes": list(RAFDB)}}}))
    return run_dir


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return Predictor.from_run(synthetic_run(tmp_path_factory.mktemp("p") / "run"), device="cpu")


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory):
    """The photo and its mirror image side by side: two faces, one in each half."""
    img = read_photo(PHOTO)
    path = tmp_path_factory.mktemp("photos") / "pair.png"
    Image.fromarray(np.concatenate([img, img[:, ::-1]], axis=1)).save(path)
    return path


def test_finds_the_face_in_a_real_photo(predictor):
    res = predictor(PHOTO)
    assert len(res) == 1
    f = res[0]
    x1, y1, x2, y2 = f.box
    h, w = res.image.shape[:2]
    assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and 100 < x2 - x1 < 300  # a face, not the whole photo
    assert np.all((f.landmarks[:, 0] > x1) & (f.landmarks[:, 0] < x2) & (f.landmarks[:, 1] > y1)
                  & (f.landmarks[:, 1] < y2))
    assert f.landmarks[0, 0] < f.landmarks[1, 0] and f.landmarks[2, 1] < f.landmarks[3, 1]  # eyes, nose above mouth
    assert list(f.probs) == list(RAFDB) and sum(f.probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert f.label in RAFDB and f.crop.shape == (100, 100, 3)  # the synthetic set is drawn like RAF-DB's crops


def test_two_faces_and_probabilities_are_the_model_on_the_crop(predictor, two_faces):
    res = predictor(two_faces)
    assert len(res) == 2
    w = res.image.shape[1]
    assert sorted(f.box[0] < w / 2 for f in res) == [False, True]  # one face per half
    x = torch.from_numpy(np.stack([f.crop for f in res])).permute(0, 3, 1, 2)
    with torch.no_grad():
        p = torch.softmax(predictor.model(predictor.transform(x)).logits, 1).numpy()
    np.testing.assert_allclose(np.array([list(f.probs.values()) for f in res]), p, atol=1e-6)


def test_no_face_gives_an_empty_result(predictor):
    res = predictor(np.full((120, 160, 3), 128, np.uint8))
    assert len(res) == 0 and res.rows() == []


def test_crop_styles():
    img = read_photo(PHOTO)
    box, pts = (174, 120, 356, 340), np.array([[230, 190], [310, 190], [270, 235], [240, 270], [300, 270.]])
    grey = crop_face(img, box, pts, "grey48")
    assert grey.shape == (48, 48, 3) and np.array_equal(grey[..., 0], grey[..., 2])
    boxed = crop_face(img, box, pts, "box", size=64)
    assert boxed.shape == (64, 64, 3) and boxed.std() > 10
    with pytest.raises(ValueError):
        crop_face(img, box, pts, "nope")


def test_from_weights_uses_the_entry_classes(tmp_path, monkeypatch):
    monkeypatch.setenv("FERLIB_HOME", str(tmp_path))
    e = get_weights("emonet_affectnet7_lam0.6")
    (tmp_path / "pretrained").mkdir()
    torch.save(create_model("emonet", **dict(e.model_kwargs)).state_dict(), tmp_path / "pretrained" / e.filename)
    pred = Predictor.from_weights("emonet_affectnet7_lam0.6")
    assert pred.classes == list(e.categories) and pred.crop == "box" and pred.recipe.input_size == 224
    res = pred(PHOTO)
    assert len(res) == 1 and list(res[0].probs) == list(e.categories)


def test_cli_folder_png_and_csv(tmp_path, two_faces, capsys):
    run = synthetic_run(tmp_path / "run")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "hopper.jpg").symlink_to(PHOTO)
    (folder / "pair.png").symlink_to(two_faces)
    rc = main([str(folder), "--run", str(run), "--out", str(tmp_path / "out"), "--threads", "1", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "top class" in out and "neutral" in out
    for stem in ("hopper", "pair"):
        png = tmp_path / "out" / f"{stem}_expressions.png"
        assert png.stat().st_size > 10_000 and Image.open(png).size[0] > 300
    rows = list(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))
    assert [r["photo"].rsplit("/", 1)[1] for r in rows] == ["hopper.jpg", "pair.png", "pair.png"]
    assert all(abs(sum(float(r[c]) for c in RAFDB) - 1) < 1e-3 for r in rows)


def test_cli_skips_unreadable_files_lists_them_and_predicts_the_rest(tmp_path, capsys):
    """A zero-byte PNG and a web page saved as .jpg are skipped (as the dataset readers skip them), listed with the
    reason in the table and the CSV; the readable photo is still predicted (issue 24)."""
    run = synthetic_run(tmp_path / "run")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "hopper.jpg").symlink_to(PHOTO)
    (folder / "empty.png").write_bytes(b"")
    (folder / "page.jpg").write_text("<!DOCTYPE html><html><body>Sign in to view this photo</body></html>")
    rc = main([str(folder), "--run", str(run), "--out", str(tmp_path / "out"), "--threads", "1", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    table = {line.split()[0]: line for line in captured.out.splitlines()[1:] if line.strip()}
    assert "skipped: unreadable" in table["empty.png"] and "skipped: unreadable" in table["page.jpg"]
    assert "skipped" not in table["hopper.jpg"] and "neutral" in captured.out
    assert "skipped 2 unreadable file(s): empty.png (unreadable); page.jpg (unreadable)" in captured.err
    rows = {r["photo"].rsplit("/", 1)[1]: r for r in csv.DictReader(open(tmp_path / "out" / "predictions.csv"))}
    assert rows["empty.png"]["skipped"].startswith("unreadable") and rows["page.jpg"]["skipped"].startswith("unreadable")
    assert rows["hopper.jpg"]["skipped"] == "" and abs(sum(float(rows["hopper.jpg"][c]) for c in RAFDB) - 1) < 1e-3
    assert (tmp_path / "out" / "hopper_expressions.png").exists() and not (tmp_path / "out" / "page_expressions.png").exists()
    # nothing readable at all: exit 2, after the table
    assert main([str(folder / "empty.png"), "--run", str(run), "--out", str(tmp_path / "o2"), "--no-progress"]) == 2
    assert "error: no photo could be read (1 skipped)" in capsys.readouterr().err


def test_annotated_photo_never_puts_a_face_label_under_a_probability_panel():
    """A face at the bottom edge (its panel has to go above the box) and one above it: every label's box is clear
    of every panel (issue 24: the label used to sit under the panel)."""
    from ferlib.inference import FacePrediction, PhotoPrediction, draw_predictions

    img = read_photo(PHOTO)
    h = img.shape[0]
    probs = dict(zip(RAFDB, [0.05, 0.05, 0.05, 0.6, 0.1, 0.05, 0.1]))
    face = lambda box: FacePrediction(box, np.full((5, 2), box[0] + 10.0), 0.99, probs)  # noqa: E731
    res = PhotoPrediction(img, [face((150.0, h - 180.0, 330.0, h - 5.0)), face((160.0, 30.0, 330.0, 200.0))],
                          list(RAFDB), "x.jpg")
    fig = draw_predictions(res)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    labels = [t for t in ax.texts if (t.get_gid() or "").startswith("face-label")]
    assert [t.get_text() for t in labels] == ["0: happy 60%", "1: happy 60%"]
    panels = [a.get_window_extent(renderer) for a in ax.child_axes]
    assert len(panels) == 2
    for t in labels:
        box = t.get_bbox_patch().get_window_extent(renderer)
        assert not any(box.overlaps(p) for p in panels), t.get_text()
    matplotlib.pyplot.close(fig)


def test_missing_weights_say_where_the_authors_publish_them_not_to_train(tmp_path, monkeypatch, capsys):
    """predict / evaluate cannot train: their missing-weights message names the authors' repository and file, and
    gives no random-init advice (issue 24)."""
    monkeypatch.setenv("FERLIB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("FERLIB_HOME", str(tmp_path / "home"))
    assert main([PHOTO, "--weights", "emonet_rafdb_lam0.6", "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: EmoNet needs weights that are not on this machine")
    assert "https://github.com/xiayu-cell/EMO-Net, checkpoint/rafdb_a_0.6_0.915.pth" in err
    assert "random init" not in err and "pretrained False" not in err and "snapshot" not in err
    from ferlib.weights.start import StartItem, missing_message

    training = missing_message([StartItem("emonet_rafdb_lam0.6")], "emonet on rafdb")
    assert "To train from random init instead" in training  # a training run may still opt out


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing.jpg"), "--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "missing.jpg" in err[0]
    (tmp_path / "a.jpg").symlink_to(PHOTO)
    assert main([str(tmp_path / "a.jpg"), "--run", str(tmp_path / "not_a_run")]) == 2
    assert "not_a_run" in capsys.readouterr().err


def test_a_run_trained_on_your_own_folder_predicts_its_folder_classes(tmp_path, monkeypatch):
    """make_split on a folder of class sub-folders, a 1-step run on it, then the photo: probabilities over the
    folder names (in the run's recorded order), and evaluate_run reads the same classes."""
    from ferlib.data.readers.imagefolder import make_split
    from ferlib.engine import RunDirOptions, train
    from ferlib.evaluation import evaluate_run

    monkeypatch.setenv("FERLIB_RESULTS", str(tmp_path / "results"))
    rng = np.random.default_rng(0)
    for k, cls in enumerate(("calm", "grin", "scowl")):
        (tmp_path / "faces" / cls).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
                tmp_path / "faces" / cls / f"P{i:02d}_{k}.png")
    make_split(tmp_path / "faces", 0.25, group_by=r"^(P\d+)_")
    run = train("baseline", "imagefolder", data=str(tmp_path / "faces"), max_steps=1, device="cpu",
                run=RunDirOptions(run_name="own"), progress=False, epochs=1)
    res = Predictor.from_run(run.run_dir)(PHOTO)
    assert len(res) == 1 and list(res[0].probs) == ["calm", "grin", "scowl"]
    assert sum(res[0].probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert evaluate_run(run.run_dir, device="cpu", progress=False)["classes"] == ["calm", "grin", "scowl"]


def test_checkpoint_keys_win_over_the_config(tmp_path):
    """A checkpoint carrying ``classes`` and ``preprocessing.face_crop`` is used without its config.yaml."""
    run = synthetic_run(tmp_path / "run")
    ckpt = torch.load(run / "best.pt", weights_only=True)
    names = ["a", "b", "c", "d", "e", "f", "g"]
    torch.save({**ckpt, "classes": names, "preprocessing": {"face_crop": "grey48"}}, run / "best.pt")
    (run / "config.yaml").unlink()
    pred = Predictor.from_run(run)
    assert pred.classes == names and pred.crop == "grey48"
    assert list(pred(PHOTO)[0].probs) == names
