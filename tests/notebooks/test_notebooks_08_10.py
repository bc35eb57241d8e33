"""Notebooks 08 (ablations), 09 (figures) and 10 (results) under papermill with tiny runs: the files
each notebook promises exist, images are real PNG/SVG files, tables have the expected rows."""
from pathlib import Path

import pandas as pd
import pytest

NB = Path(__file__).resolve().parents[2] / "notebooks"
TINY = {"n_train": 96, "n_test": 48, "progress": False}
PNG = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.slow


def execute(name, tmp, **parameters):
    papermill = pytest.importorskip("papermill")
    out = tmp / f"executed_{name}.ipynb"
    papermill.execute_notebook(str(NB / f"{name}.ipynb"), str(out), parameters=parameters, kernel_name="python3",
                               cwd=str(tmp), progress_bar=False)
    return out


def assert_image(path: Path):
    assert path.stat().st_size > 1000, path
    assert path.read_bytes()[:8] == PNG, path
    assert path.with_suffix(".svg").read_text().lstrip().startswith("<?xml"), path.with_suffix(".svg")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nb0810")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FERLIB_DATA", str(tmp / "data"))
        mp.setenv("FERLIB_RESULTS", str(tmp / "results"))
        yield tmp


def test_08_ablations(env):
    grid = {"paper": "baseline", "name": "ls", "axis": "label smoothing",
            "variants": {"ls=0": {"loss_kwargs": {"label_smoothing": 0.0}},
                         "ls=0.1": {"loss_kwargs": {"label_smoothing": 0.1}}}}
    execute("08_ablations", env, dataset="synthetic", grid=grid, variants=None, epochs=1, max_steps=1, seeds=[0, 1],
            dataset_kwargs=TINY)
    table = pd.read_csv(env / "results" / "tables" / "ablation_ls_synthetic.csv")
    assert list(table["variant"]) == ["ls=0", "ls=0.1"] and list(table["n_seeds"]) == [2, 2]
    assert table["accuracy_selected_mean"].between(0, 1).all()
    runs = pd.read_csv(env / "results" / "tables" / "ablation_ls_synthetic_runs.csv")
    assert len(runs) == 4 and set(runs["seed"]) == {0, 1}
    assert_image(env / "results" / "figures" / "ablation_ls_synthetic.png")


@pytest.fixture(scope="module")
def runs09(env):
    """Notebook 09 trains its figures grid once; 10 reads the same runs (no test depends on another's order)."""
    runs_dir = env / "runs09"
    execute("09_figures", env, runs_dir=str(runs_dir), max_steps=1, dataset_kwargs=TINY, max_points=200)
    return runs_dir


def test_09_figures_trains_the_figures_grid(env, runs09):
    runs_dir = runs09
    runs = sorted(str(p.parent.relative_to(runs_dir)) for p in runs_dir.glob("ablations/synthetic/*/*/summary.json"))
    assert runs == [f"ablations/synthetic/{r}" for r in (      # the baseline card + MFER's figure: true sweep
        "baseline_card/card__s0", "mfer_feature_loss/dsf__s0", "mfer_feature_loss/lgm__s0", "mfer_feature_loss/none__s0")]
    figs = env / "results" / "figures"
    assert_image(figs / "tsne_mfer_feature_loss_synthetic.png")
    assert_image(figs / "per_class_accuracy_synthetic.png")
    for paper, run in (("baseline", "card__s0"), ("mfer", "lgm__s0")):
        assert_image(figs / f"confusion_{paper}_synthetic__{run}.png")
        assert_image(figs / f"curves_{paper}_synthetic__{run}.png")
    assert_image(figs / "tsne_mfer_synthetic__none__s0.png")


def test_10_results_tables(env, runs09):
    runs_dir = runs09
    target = {"trained_on": "synthetic", "dataset": "synthetic", "fmt": "affectnet8", **TINY}
    execute("10_results", env, runs_dir=str(runs_dir), complexity_papers=["emonet"], cross_dataset=[target], max_steps=1)
    tables = env / "results" / "tables"
    runs = pd.read_csv(tables / "runs_all.csv")
    assert len(runs) == 4 and set(runs["paper"]) == {"baseline", "mfer"}
    summary = pd.read_csv(tables / "summary_mean_std_over_seeds.csv")
    assert len(summary) == 4                                 # baseline card + MFER card, LGM, DSF
    comparison = pd.read_csv(tables / "ours_vs_reported.csv")
    emonet = comparison[(comparison.paper == "emonet") & (comparison.dataset == "rafdb")]
    assert emonet["reported_accuracy"].item() == pytest.approx(0.913) and emonet["n_seeds"].item() == 0
    assert (comparison["dataset"] == "synthetic").sum() == 4
    complexity = pd.read_csv(tables / "complexity_params_gmacs.csv")
    assert list(complexity["paper"]) == ["emonet"] and complexity["params_m"].item() == pytest.approx(2.31, abs=0.02)
    per_class = pd.read_csv(tables / "per_class_accuracy.csv")
    assert len(per_class) == 2 * 7                          # one run per paper, 7 classes
    cross = pd.read_csv(tables / "cross_dataset.csv")
    assert set(cross["paper"]) == {"baseline", "mfer"}
    assert (cross["dropped_target_classes"] == "contempt").all() and cross["accuracy"].between(0, 1).all()
