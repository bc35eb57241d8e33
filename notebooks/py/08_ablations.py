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
# # 08 — Ablations: λ sweeps, loss variants and code-vs-paper switches
#
# Each ablation is a *sweep*: one paper's recipe card for `dataset` with a few overrides (`model_kwargs`, `loss_kwargs` or any recipe field), trained once per seed through `ferlib.engine.train`. Each paper's sweeps live in its card's `ablations:` section (`ferlib/recipes/<paper>.yaml`: name, group, axis, description and the variants' label, value, note and overrides); a new card's sweeps join the grid without any other edit. The presets reproduce the papers' ablations — EMO-Net's fusion weight λ (README: λ 0.5 / 0.6 checkpoints, 0.8 as coded), FERMam's label-smoothing term (CE + w·LSCE(ε), train.py), MMFRM's RFLoss (paper ablation: with / without; ours: off / as coded / intended, specs/mmfrm.md §5), GReFEL's loss terms (L_cls, +L_anchor, +L_center, all; anchors per class, paper §3), MFER's feature loss (none / LGM / DSF, README t-SNE figures) — and the switches between each upstream code's behaviour and the paper's apparent intent (`grid="code_vs_paper"`).
#
# A finished run (its `summary.json` shows the expected epochs or `max_steps` steps) is skipped; an interrupted one resumes. The defaults (EMO-Net λ on the synthetic set, 30 steps per run, one seed) take about five minutes on two busy CPU cores (a whole epoch per run: `-p max_steps None`, about two minutes per run); such short runs only show that the machinery works. `-p grid all -p dataset rafdb -p epochs None -p max_steps None -p seeds '[0, 1, 2]'` is the full study (GPU).

# %% tags=["parameters"]
from typing import Optional, Union

dataset: str = "synthetic"  # synthetic, rafdb, affectnet, affectnet8, ferplus or fer2013
grid: Union[str, dict, list] = "emonet_lambda"  # a preset, "papers", "code_vs_paper", "all", or {"paper": ..., "variants": {label: overrides}}
epochs: Optional[int] = 1  # None: the card's value
max_steps: Optional[int] = 30  # steps per run; None: whole epochs
seeds: list = [0]  # one run per seed and variant
data_root: Optional[str] = None  # None: data/<dataset>
val_fraction: Optional[float] = None  # hold out a validation split and select on it instead of the test split
dataset_kwargs: Optional[dict] = None  # e.g. {"n_train": 96, "n_test": 48} for a tiny synthetic set
runs_dir: Optional[str] = None  # None: results/runs; runs go to <runs_dir>/ablations/<dataset>/<sweep>/
tables_dir: Optional[str] = None  # None: results/tables
figures_dir: Optional[str] = None  # None: results/figures

# %% [markdown]
# ## The grid
# Every (variant, seed) entry the grid expands to on this dataset. Each variant's recipe, model (on the meta device, no memory) and loss are built first: an override the recipe, model or loss does not take stops here with an `AblationError` naming the variant, before anything trains. A variant whose paper has no recipe for the dataset is left out with a note.

# %%
import dataclasses

import pandas as pd
from IPython.display import Image, display

from ferlib.ablations import GROUPS, PRESETS, expand, run_grid

print("presets:", ", ".join(PRESETS), "| groups:", ", ".join(GROUPS))
entries, skipped = expand(grid, dataset, seeds)
print("\n".join(f"left out: {s}" for s in skipped) or "every variant can run")
pd.DataFrame([dataclasses.asdict(e) for e in entries])

# %% [markdown]
# ## Run the grid
# One engine call per entry (skipped when already complete). The table has one row per (sweep, variant): mean ± standard deviation over seeds of the last-epoch accuracy and of the best epoch's accuracy — selected on the test split as the authors' code does (`selected_on = test_selected`), or on the held-out validation split when `val_fraction` is set (then `accuracy_test_at_val_selected` is the honest number).

# %%
res = run_grid(dataset, grid, epochs=epochs, max_steps=max_steps, seeds=seeds, data_root=data_root,
               runs_dir=runs_dir, tables_dir=tables_dir, figures_dir=figures_dir, val_fraction=val_fraction,
               dataset_kwargs=dataset_kwargs)
res.table[[c for c in res.table.columns if not c.endswith(("_mean", "_std"))]]

# %% [markdown]
# ## Per-run results
# Every run with its status (`ran`, `resumed` or `skipped` because complete) and run directory.

# %%
res.runs[["sweep", "variant", "seed", "status", "epochs_run", "steps", "selected_on", "accuracy_last",
          "accuracy_selected", "accuracy_test_at_val_selected", "run_dir"]]

# %% [markdown]
# ## One plot per sweep
# Bars: mean accuracy over seeds (error bars: standard deviation), dots: single seeds. Saved as PNG and SVG next to the CSV tables.

# %%
for path in res.files:
    print(path)
for path in [p for p in res.files if p.suffix == ".png"]:
    display(Image(filename=str(path)))
