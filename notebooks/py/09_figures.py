# ---
# jupyter:
#   jupytext:
#     notebook_metadata_filter: kernelspec,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 09 — Figures from run directories
#
# Every figure is drawn from what the runs saved (`predictions.npz`, `metrics.jsonl`, `config.yaml`), so it can be redrawn at any time without training: row-normalised confusion matrices in each paper's class order (each card's `class_order`), training curves, t-SNE of the best model's test features — one per paper, and MFER's three panels without feature loss / with LGM / with DSF (README figures; DSF is our reconstruction) — and per-class accuracy bars. Files go to `results/figures/` as PNG and SVG, named after what they show.
#
# When `runs_dir` holds no run yet, the notebook first trains the few it needs on the synthetic set: the `figures` grid of `ferlib.ablations.run_grid` — each paper's card run, or the sweep its card marks `figure: true` (MFER: no feature loss, LGM, DSF) — one epoch bounded by `max_steps` per run, in `<runs_dir>/ablations/<dataset>/<sweep>/`.

# %% tags=["parameters"]
from typing import Optional

runs_dir: Optional[str] = None  # None: results/runs
figures_dir: Optional[str] = None  # None: results/figures
dataset: str = "synthetic"  # dataset of the figure runs, trained only when runs_dir is empty
max_steps: Optional[int] = 20  # steps of each figure run
minimal_papers: list = ["baseline", "mfer"]  # papers of the figure runs; MFER trains one run per feature loss
dataset_kwargs: Optional[dict] = None  # e.g. {"n_train": 96, "n_test": 48} for a tiny synthetic set
tsne: bool = True  # draw the t-SNE figures (the slowest part)
max_points: int = 2000  # t-SNE points per panel

# %% [markdown]
# ## The runs
# Existing runs, or the figures grid trained now.

# %%
from pathlib import Path

from IPython.display import Image, display

from ferlib.ablations import figure_sweeps, run_grid
from ferlib.paths import results_dir
from ferlib.run_dir import find_runs
from ferlib.tables import runs_table
from ferlib.viz.figures import make_figures

runs_dir = runs_dir or str(results_dir() / "runs")
if not find_runs(runs_dir):
    run_grid(dataset, figure_sweeps(minimal_papers), epochs=1, max_steps=max_steps, runs_dir=runs_dir,
             dataset_kwargs=dataset_kwargs, plot=False)
runs = runs_table(runs_dir)
runs[["run", "paper", "dataset", "variant", "seed", "epochs_run", "selected_on", "accuracy_test_selected", "accuracy_val_selected"]]

# %% [markdown]
# ## Draw everything
# One confusion matrix and one curve figure per (paper, dataset, variant) — the lowest seed — one t-SNE per paper (its card run), MFER's feature-loss triple, per-class accuracy per dataset.

# %%
figures = make_figures(runs_dir, figures_dir, tsne=tsne, max_points=max_points)
print("the gallery of every figure, with captions and run summaries (opens in a browser, no server):",
      (Path(figures_dir) if figures_dir else results_dir() / "figures") / "index.html")
figures

# %% [markdown]
# ## MFER: test features without feature loss, with LGM, with DSF (approx.)
# The README compares these three t-SNE plots; with short runs the clusters are not expected to separate.

# %%
for png in figures.loc[figures["kind"] == "tsne_mfer_feature_loss", "png"]:
    display(Image(filename=png))

# %% [markdown]
# ## Confusion matrices (paper class order) and per-class accuracy

# %%
for png in figures.loc[figures["kind"].isin(["confusion", "per_class_accuracy"]), "png"].head(6):
    display(Image(filename=png))
