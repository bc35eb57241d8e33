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
# # 00 — Quickstart
#
# Generate the synthetic face-expression set (FACS action units drive brows, lids, nose and mouth; RAF-DB's class imbalance), train a small model on it, and look at the confusion matrix and the t-SNE of its features. On 2 CPU cores this takes a few minutes. The same calls train every paper's recipe: see notebooks 03–07.

# %% tags=["parameters"]
from typing import Optional

dataset: str = "synthetic"  # the quickstart trains on the embedded synthetic set
model: str = "baseline"  # a recipe card in ferlib/recipes: baseline, fermam, mmfrm, emonet, grefel, mfer
epochs: Optional[int] = None  # None: the card's value
batch_size: Optional[int] = None  # None: the card's value
device: str = "auto"  # auto, cpu or cuda
max_steps: Optional[int] = None  # a number makes a smoke run
seed: int = 0  # the random seed of the run
run_name: str = "quickstart"  # the run directory's name under results/runs
overwrite: bool = True  # the quickstart is a demo: a run with other settings replaces the previous quickstart run (False keeps it)
reuse: bool = True  # a finished quickstart run with the same settings is shown again, not retrained (False: train anew)
data_root: Optional[str] = None  # None: data/<dataset>

# %% [markdown]
# ## The data
# The synthetic set is written in RAF-DB's official layout (`EmoLabel/list_patition_label.txt`, `Image/aligned/*_aligned.jpg`) and read by the RAF-DB reader, so the real dataset drops in unchanged.

# %%
import ferlib
from ferlib.data import load_dataset
from ferlib.engine import RunDirOptions, train
from ferlib.engine.baselines import pixel_logistic_regression
from ferlib.viz import plot_confusion, plot_curves, plot_samples, plot_tsne
from ferlib.viz.live import LivePlot

train_ds = load_dataset(dataset, data_root, "train")
test_ds = load_dataset(dataset, data_root, "test")
print(train_ds)
print("train images per class:", dict(zip(train_ds.classes, train_ds.class_counts())))

# %%
plot_samples(train_ds, per_class=8);

# %% [markdown]
# ## How hard is it?
# A logistic regression on raw pixels sets the floor a CNN must clear by far (chance is about 1/7; the majority class, happy, is about 39%).

# %%
pixel_acc = pixel_logistic_regression(train_ds, test_ds)
print(f"logistic regression on raw pixels: {pixel_acc:.3f} test accuracy")

# %% [markdown]
# ## Train
# One engine for every paper: the recipe card says what to train, the engine how. The progress bar and the curves (loss, accuracy per epoch) update while it trains.

# %%
run = train(model, dataset, run=RunDirOptions(run_name=run_name, resume=False, overwrite=overwrite, reuse=reuse),
            data=data_root, epochs=epochs, batch_size=batch_size, device=device, max_steps=max_steps, seed=seed,
            callbacks=[LivePlot(title=model)])
run

# %% [markdown]
# ## Results
# Curves, the row-normalised confusion matrix and a t-SNE of the test features, all drawn from the run directory (saved there as PNG and SVG).

# %%
plot_curves(run.run_dir);

# %%
plot_confusion(run.run_dir);

# %%
plot_tsne(run.run_dir);

# %%
print(f"CNN test accuracy {run.metrics['accuracy']:.3f} vs pixels {pixel_acc:.3f}")
print("run directory:", run.run_dir)
