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
# # 02 — Explore a dataset
#
# Class balance per split, a grid of samples per class and an image browser. Class names are in the
# dataset's native order. Run `01_prepare_data` first for real datasets; here the images are read straight
# from the official files.

# %% tags=["parameters"]
from typing import Optional

dataset: str = "synthetic"  # rafdb, affectnet, affectnet8, ferplus, fer2013, imagefolder or synthetic
data_root: Optional[str] = None  # the dataset folder as distributed (None: data/synthetic for synthetic)
per_class: int = 6  # images per class in the sample grid
seed: int = 0  # which images the grid shows

# %%
from ferlib.data import dataset_root, load_splits
from ferlib.viz import plot_samples
from ferlib.viz.data_plots import class_balance, image_browser, plot_class_balance

splits = load_splits(dataset, dataset_root(dataset, data_root))  # a missing folder: where it goes
splits

# %% [markdown]
# ## Class balance
# FER sets are imbalanced (RAF-DB: happiness ≈ 39 %, fear ≈ 2 %); papers that fight this (GReFEL's
# class-balanced batches, `ferlib.data.samplers`) start from these counts.

# %%
class_balance(splits)

# %%
plot_class_balance(splits, title=f"{dataset}: images per class");

# %% [markdown]
# ## Samples per class
# `per_class` random training images of every class (the uint8 images the model's transform receives).

# %%
plot_samples(splits[next(iter(splits))], per_class=per_class, seed=seed);

# %% [markdown]
# ## Browser
# Pick a split and a class, slide through the images; the label and file name are under each image. Executed
# headless (papermill), the first image is shown as a static figure.

# %%
image_browser(splits);
