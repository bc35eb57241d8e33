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
# # 10 — Results: our runs against the papers
#
# Tables from run directories and the recipe cards alone, saved as CSV under `results/tables/`:
#
# - every run, and mean ± standard deviation over seeds per (paper, dataset, variant, epochs);
# - ours next to each paper's reported accuracy (the cards' `reported:` fields, with their source) and the gap in percentage points, with the selection honestly labelled: **last epoch**, **best epoch selected on the test split** (`test_selected`, what the authors' code reports) and **test accuracy at the epoch selected on a held-out validation split** (`val_selected`, when a run held one out);
# - parameters and GMACs per image measured by ferlib (`torch.utils.flop_counter`, MACs = FLOPs / 2) next to the papers' numbers;
# - per-class accuracy in each paper's class order;
# - cross-dataset accuracy: a run's best model on another dataset's evaluation split, classes matched through the canonical label order (`ferlib.labels`), classes one side lacks dropped.
#
# A run cut short (`max_steps`, a stop, fewer epochs than its card: `complete: false` in its `summary.json`) has `status` `smoke`: its numbers are a smoke test, never averaged with complete runs nor compared with a paper's number (no gap is computed). Each row states its training precision.

# %% tags=["parameters"]
from typing import Optional

runs_dir: Optional[str] = None  # run directories to tabulate (None: results/runs)
tables_dir: Optional[str] = None  # where the CSV tables go (None: results/tables)
complexity_papers: Optional[list] = None  # paper cards to measure (None: every card; [] skips the measurement)
complexity_dataset: str = "rafdb"  # whose card settings: input size, classes
cross_dataset: list = [{"trained_on": "synthetic", "dataset": "synthetic", "fmt": "affectnet8"}]  # targets: trained_on, dataset, data_root, reader options
max_steps: Optional[int] = None  # limits the evaluation batches of the cross-dataset runs

# %% [markdown]
# ## Every run

# %%
import pandas as pd

from ferlib import tables
from ferlib.paths import results_dir

pd.set_option("display.max_colwidth", 60)
runs_dir = runs_dir or str(results_dir() / "runs")
runs = tables.runs_table(runs_dir)
tables.save_table(runs, "runs_all", tables_dir)
runs.drop(columns=["run_dir"], errors="ignore")

# %% [markdown]
# ## Mean ± std over seeds

# %%
summary = tables.summary_table(runs)
tables.save_table(summary, "summary_mean_std_over_seeds", tables_dir)
summary[[c for c in summary.columns if not c.endswith(("_mean", "_std"))]]

# %% [markdown]
# ## Ours against the reported numbers
# Reported accuracies from the recipe cards (GReFEL's are a third-party re-implementation's, not the paper's table; MMFRM and FERMam have none reachable, see the cards' `source`). Gaps are ours − reported, in percentage points; rows with `n_seeds` 0 were not run here.

# %%
reported = tables.reported_table()
tables.save_table(reported, "reported_by_cards", tables_dir)
comparison = tables.compare_to_reported(summary, reported)
tables.save_table(comparison, "ours_vs_reported", tables_dir)
comparison[[c for c in comparison.columns if not c.endswith(("_mean", "_std")) and c != "source"]]

# %% [markdown]
# ## Parameters and GMACs
# Measured at each card's input size with batch 1 (multiply-accumulates of convolutions, matrix products and attention; element-wise work is not counted), next to the papers' stated numbers.

# %%
complexity = tables.complexity_table(complexity_papers, complexity_dataset) if complexity_papers != [] else pd.DataFrame()
tables.save_table(complexity, "complexity_params_gmacs", tables_dir)
complexity

# %% [markdown]
# ## Per-class accuracy
# The best model of one run per (paper, dataset), classes in the paper's order.

# %%
per_class = tables.per_class_table(tables.one_run_per_paper(runs))
tables.save_table(per_class, "per_class_accuracy", tables_dir)
per_class.pivot_table(index=["paper", "dataset", "run"], columns="class", values="accuracy", sort=False) if len(per_class) else per_class

# %% [markdown]
# ## Cross-dataset evaluation
# For each target, one run per paper trained on `trained_on` is evaluated on the target's evaluation split. On the synthetic set the demo reads the same generator in AffectNet-8 format: another label order and an extra class (contempt), which is dropped.

# %%
cross = pd.concat([tables.cross_dataset_table(tables.one_run_per_paper(runs, t["trained_on"]),
                                               [{k: v for k, v in t.items() if k != "trained_on"}], max_batches=max_steps)
                   for t in cross_dataset], ignore_index=True) if len(runs) and cross_dataset else pd.DataFrame()
tables.save_table(cross, "cross_dataset", tables_dir)
cross

# %% [markdown]
# ## Released checkpoints: reported vs measured by ferlib
# Every released file of the weights registry, with the accuracy its authors report and the one ferlib measures with
# `python -m ferlib evaluate --weights ENTRY --dataset DATASET --data-root FOLDER` (the entry's preprocessing and class
# order; written to `results/released/<entry>_<dataset>.json`). Empty cells say why in `note`: the file is absent (the
# checkpoints are not redistributed; `data/README.md` says where to get them) or not evaluated yet.

# %%
from ferlib.evaluation import released_checkpoints_table

released = released_checkpoints_table()
tables.save_table(released, "released_checkpoints", tables_dir)
released
