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
# # 01 — Prepare a dataset
#
# Check that a dataset sits where ferlib expects it, then decode every image **once** into a uint8 tensor cache
# (optionally aligning faces), and show what was skipped and why. Training reads the cache, not the JPEGs
# (docs/design.md §5). The defaults prepare the embedded synthetic set; for a real dataset run e.g.
# `papermill 01_prepare_data.ipynb out.ipynb -p dataset rafdb -p data_root /data/RAF-DB/basic`.
# The formats and each project's variant are described in `docs/datasets.md`; `data/README.md` says where to put each dataset.

# %% tags=["parameters"]
from typing import Optional

dataset: str = "synthetic"  # rafdb, affectnet, affectnet8, ferplus, fer2013, imagefolder or synthetic
data_root: Optional[str] = None  # the dataset folder as distributed (None: data/synthetic for synthetic)
align: bool = False  # align faces to the 5-point template (landmarks where the format has them, else MTCNN)
size: int = 112  # side of the stored images (a recipe's stored_size)
cache_dir: Optional[str] = None  # where caches live (None: data/cache)

# %% [markdown]
# ## 1. Check the layout
# The reader detects the layout (official files or one of the projects' re-packagings). A wrong folder gives a
# `DatasetFormatError` naming the file, the line and the fix.

# %%
from ferlib.prepare import layout_report, prepare
from ferlib.viz.data_plots import cache_table, class_balance, skip_table

print(layout_report(dataset, data_root))

# %% [markdown]
# ## 2. Build the cache
# Decode (and align) once, resize to `size`×`size`, write a memmap + index + skip report atomically. Running this
# cell again reuses the cache unless the source files or options changed. Same as
# `python -m ferlib prepare DATASET --root … --size N [--align]`.

# %%
caches = prepare(dataset, data_root, size=size, align=align, cache_dir=cache_dir)
cache_table(caches)

# %% [markdown]
# ## 3. What was skipped
# Skips are counted, never silent: missing files, unreadable images, AffectNet codes 8–10 (none / uncertain /
# non-face), FERPlus rows without an image or with unknown / non-face majorities.

# %%
skip_table(caches)

# %% [markdown]
# ## 4. Images per class
# Counts in the dataset's native class order (the order its released checkpoints use).

# %%
class_balance(caches)
