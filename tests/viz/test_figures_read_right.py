"""Figures that read right (issue 24 point 3) and their gallery (point 4), on run directories written here by
hand (config.yaml, summary.json, metrics.jsonl, predictions.npz: what ferlib.engine.train writes), no training:

- a class without test images is drawn as "no samples", not as a row of zeros; counts beside the rates;
- the t-SNE title gives its number of points and the silhouette score (scikit-learn) of the features;
- MFER's feature-loss runs side by side on shared axes, a silhouette score in each panel's title;
- every title says the data (synthetic or real), the seed, smoke or complete, and the selection rule;
- make_figures writes results/figures/index.html with every figure, its caption, runs and their summaries.
"""
import json
import re
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import yaml

from ferlib.recipes import load_recipe
from ferlib.run_dir import RunDir

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RAF = ["surprise", "fear", "disgust", "happy", "sad", "anger", "neutral"]


def write_run(run_dir: Path, paper="emonet", dataset="synthetic", seed=0, n_per_class=50, absent=(), spread=3.0,
              complete=False, loss_kwargs=None, classes=RAF, max_steps=20):
    """A finished run directory as the engine writes it: features clustered by class (``spread`` apart), the
    logits a noisy copy of the labels, no test image of the classes in ``absent``."""
    rng = np.random.default_rng(seed)
    recipe = load_recipe(paper, dataset)
    if loss_kwargs:
        recipe = recipe.replace(loss_kwargs={**recipe.loss_kwargs, **loss_kwargs})
    y = np.array([c for c in range(len(classes)) if classes[c] not in absent for _ in range(n_per_class)])
    centres = rng.normal(size=(len(classes), 16)) * spread
    features = (centres[y] + rng.normal(size=(len(y), 16))).astype(np.float32)
    logits = np.eye(len(classes))[y] * 2 + rng.normal(size=(len(y), len(classes)))
    rd = RunDir(run_dir)
    fit = {"seed": seed, "max_steps": None if complete else max_steps, "selected_on": "test_selected"}
    rd.write_config({"recipe": recipe.to_dict(), "fit": fit, "plan": {"start": []},
                     "data": {"train": {"n": 999, "classes": classes}, "eval": {"n": len(y), "split": "test",
                                                                                "selected_on": "test_selected"}}})
    rd.start_metrics()
    for e in (1, 2):
        rd.append_metrics({"epoch": e, "step": 10 * e, "train_loss": 2.0 / e, "train_accuracy": 0.3 * e,
                           "eval_accuracy": 0.35 * e, "eval_mean_class_accuracy": 0.3 * e, "eval_macro_f1": 0.3})
    acc = float((logits.argmax(1) == y).mean())
    sel = {"accuracy": acc, "mean_class_accuracy": acc, "macro_f1": acc}
    rd.write_summary({"epochs_run": 2, "steps": 20, "selected_on": "test_selected", "selected_epoch": 2,
                      "last": sel, "selected": sel, "test_selected": sel, "complete": complete,
                      "limited_by": [] if complete else ["max_steps"], "steps_run": 20,
                      "steps_planned": 20 if complete else 375, "epochs_planned": 2, "max_steps": fit["max_steps"],
                      "precision": "fp32"})
    rd.save_predictions({"logits": logits.astype(np.float32), "targets": y, "features": features}, classes)
    return run_dir


def flat(text: str) -> str:
    """A title as read, without the line breaks that keep it inside the figure."""
    return " ".join(text.split())


def texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts] + [ax.get_title() for ax in fig.axes] + [
        fig._suptitle.get_text() if fig._suptitle else ""]


def test_a_class_without_test_images_is_drawn_as_no_samples_with_counts_beside_the_rates(tmp_path):
    from ferlib.viz import plot_confusion

    run = write_run(tmp_path / "run", absent=("fear",), n_per_class=20)
    fig = plot_confusion(run)
    ax = fig.axes[0]
    shown = texts(fig)
    assert shown.count("no samples") == 1
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert "fear (n=0)" in rows and "happy (n=20)" in rows
    # the fear row holds no number at all (not 0.00 six times); every other cell a rate and its count
    fear = rows.index("fear (n=0)")
    cell_texts = [t for t in ax.texts if t.get_text() != "no samples"]
    assert all(abs(t.get_position()[1] - (fear + 0.5)) > 0.01 for t in cell_texts)
    assert len(cell_texts) == 6 * 7
    p = RunDir(run).predictions()
    happy = RAF.index("happy")
    right = int(((p["targets"] == happy) & (p["logits"].argmax(1) == happy)).sum())
    assert f"{right / 20:.2f}\n{right}" in shown
    title = flat(ax.get_title())
    assert "synthetic data (synthetic)" in title and "seed 0" in title and "smoke run (max_steps: 20 of 375 steps)" in title
    assert "selected on the test split" in title and "120 test images" in title
    plt.close(fig)


def test_the_old_confusion_drew_zeros_for_an_absent_class(tmp_path):
    """The check above can fail: the matrix itself still has the row of zeros that must not be drawn as rates."""
    from ferlib.viz.confusion import confusion

    run = write_run(tmp_path / "run", absent=("fear",), n_per_class=20)
    p = RunDir(run).predictions()
    cm = confusion(p["targets"], p["logits"].argmax(1), 7)
    assert cm[RAF.index("fear")].tolist() == [0.0] * 7


def test_tsne_title_gives_points_and_silhouette_and_warns_below_300(tmp_path):
    from sklearn.metrics import silhouette_score

    from ferlib.viz import plot_tsne

    run = write_run(tmp_path / "run", n_per_class=50)  # 350 points
    fig = plot_tsne(run)
    p = RunDir(run).predictions()
    expected = silhouette_score(p["features"], p["targets"], random_state=0)
    title = flat(fig.axes[0].get_title())
    assert f"silhouette {expected:.3f}" in title and "350 points" in title and "too few" not in title
    plt.close(fig)
    small = write_run(tmp_path / "small", n_per_class=6)
    fig = plot_tsne(small)
    assert "only 42 points, too few to read much into (≥ 300 wanted)" in flat(fig.axes[0].get_title())
    plt.close(fig)


def test_mfer_feature_losses_side_by_side_on_shared_axes_with_a_silhouette_each(tmp_path):
    from ferlib.viz.figures import mfer_feature_loss_runs, tsne_panels

    runs = tmp_path / "runs"
    write_run(runs / "none", paper="mfer", spread=0.5, seed=0, n_per_class=20)
    write_run(runs / "lgm", paper="mfer", spread=4.0, seed=0, loss_kwargs={"feature_loss": "lgm"}, n_per_class=20)
    write_run(runs / "none_s1", paper="mfer", spread=0.5, seed=1)
    write_run(runs / "other_budget", paper="mfer", spread=4.0, seed=0, loss_kwargs={"feature_loss": "dsf"},
              max_steps=999)
    panels = mfer_feature_loss_runs(runs, "synthetic")
    # one sweep (same budget), lowest seed: the dsf run trained with another budget is not mixed in
    assert panels == {"without feature loss": runs / "none", "with LGM loss": runs / "lgm"}
    fig, files = tsne_panels(panels, tmp_path / "fig.png", title="MFER")
    a, b = fig.axes[:2]
    assert a.get_shared_x_axes().joined(a, b) and a.get_shared_y_axes().joined(a, b)
    scores = [float(re.search(r"silhouette (-?\d\.\d{3})", ax.get_title()).group(1)) for ax in (a, b)]
    assert scores[1] > scores[0] + 0.2  # the better separated features score higher
    for ax in (a, b):
        assert "seed 0" in flat(ax.get_title()) and "smoke run" in flat(ax.get_title())
    assert all(f.exists() for f in files)
    plt.close(fig)


def test_make_figures_writes_a_gallery_with_every_figure_caption_and_run_summary(tmp_path, monkeypatch):
    from ferlib.viz import tsne
    from ferlib.viz.figures import make_figures

    monkeypatch.setattr(tsne, "tsne_embedding", lambda f, seed=0, max_points=5000: (np.asarray(f)[:, :2],
                                                                                   np.arange(len(f))))  # fast

    runs = tmp_path / "runs"
    write_run(runs / "emonet_synthetic", paper="emonet", seed=0, n_per_class=8)
    write_run(runs / "mfer_synthetic", paper="mfer", seed=2, complete=True, n_per_class=8)
    out = tmp_path / "figures"
    table = make_figures(runs, out, max_points=400)
    page = (out / "index.html").read_text()
    assert set(table["kind"]) == {"confusion", "curves", "tsne", "tsne_mfer_feature_loss", "per_class_accuracy"}
    for row in table.itertuples():
        png, svg = Path(row.png), Path(row.svg)
        assert f'src="{png.name}"' in page and f'href="{svg.name}"' in page
        assert json.loads(png.with_suffix(".caption.json").read_text())["caption"] == row.caption
    assert "seed 2, complete run" in page and "seed 0, smoke run (max_steps: 20 of 375 steps)" in page
    assert 'href="../runs/mfer_synthetic/summary.json"' in page  # relative: opens from the file system
    assert "http://" not in page and "<script" not in page
    summary = RunDir(runs / "mfer_synthetic").summary()
    assert f"{summary['selected']['accuracy']:.4f}" in page


@pytest.mark.parametrize("dataset, expected", [("synthetic", "synthetic data"), ("rafdb", "real data"),
                                               ("imagefolder", "your own data")])
def test_data_kind(dataset, expected):
    from ferlib.viz.captions import data_kind

    assert data_kind(dataset) == expected


def test_config_written_by_hand_reads_like_the_engines(tmp_path):
    """The runs above carry what the captions read from an engine's run (no key the engine does not write)."""
    run = write_run(tmp_path / "run")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert set(cfg["fit"]) <= {"seed", "max_steps", "selected_on"} | set(_fit_fields())


def _fit_fields():
    import dataclasses

    from ferlib.engine.loop import FitOptions

    return [f.name for f in dataclasses.fields(FitOptions)]
