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
# # 03 — FERMam: dual-source, multi-scale Mamba fusion
#
# *FERMam: A Lightweight Dual-Source and Multi-Scale Fusion Framework for Facial Expression Recognition* (Scientific Reports 2026, DOI 10.1038/s41598-026-44396-6; code `jxcsglr/FERMam@88cc097`). An IR-50 image branch (3 stages) and a frozen MobileFaceNet landmark branch give two sets of 49 tokens; the image tokens pass a Conv-SSM block (convolution ∥ 4-direction selective scan); a pyramid fusion runs ASFR state-space blocks at 7×7, 3×3 and 1×1; an SE gate and a linear layer classify the first fused token. Training: CE + 2·label-smoothing CE (ε = 0.2), SAM around Adam (lr 4e-5, ρ 0.05), exponential decay 0.98 per epoch.
#
# `create_model("fermam")` reproduces the authors' outputs (tests/models/test_fermam.py) with every quirk of their code by default; the selective scan runs in pure PyTorch on any device, or through mamba_ssm's CUDA kernel when it is installed.
#
# The defaults make a CPU smoke run of the **full** model (40.0 M parameters) on the synthetic set: both backbones always run at 112×112, so the synthetic card entry's CPU budget (6 optimiser steps) bounds the run to a few minutes on 2 CPU cores. On a GPU, `-p dataset rafdb` (or affectnet, affectnet8, ferplus) is the paper's run: the card's 260 epochs from the MS-Celeb IR-50 and the landmark MobileFaceNet, in fp32, evaluated on the whole test split; `-p dry_run True` shows that plan first.

# %% tags=["parameters"]
from typing import Optional, Union

dataset: str = "synthetic"  # synthetic (CPU smoke run), rafdb, affectnet, affectnet8, ferplus; or imagefolder for your own train/<class>/ and test/<class>/ folders
data_root: Optional[str] = None  # the dataset's folder as distributed; None means data/<dataset>
base_recipe: Optional[str] = None  # imagefolder only: the card entry whose recipe to use; None means rafdb
epochs: Optional[int] = None  # None: the card's
batch_size: Optional[int] = None  # None: the card's
pretrained: Union[bool, str] = "card"  # card or True: the MS-Celeb IR-50 and the landmark MobileFaceNet; False: random init; or a ferlib.weights entry / a file
precision: Optional[str] = None  # None: the card's (fp32, as the authors); bf16 is the fast GPU switch
max_steps: Optional[int] = None  # None: the card's, a CPU smoke budget on synthetic and the full recipe on real data
dry_run: bool = False  # True: print the plan and write plan.json without training
resume: bool = False  # continue the run in run_name from its last.pt
overwrite: bool = False  # replace a previous run in run_name that has other settings (without it such a run refuses)
reuse: bool = True  # a finished run in run_name with the same settings is shown again, not retrained (False: never reuse)
threads: Optional[int] = None  # torch CPU threads; None: OMP_NUM_THREADS or one per core
device: str = "auto"  # auto, cpu or cuda
run_name: str = "fermam_{dataset}"  # the run directory under results/runs
seed: int = 0  # one seed for Python, NumPy, torch and the samplers
scan_backend: str = "auto"  # auto, torch, cuda or reference


# %% [markdown]
# The parameters are checked first (types and ranges), so a mistyped value stops here, before anything on disk is touched.

# %%
from ferlib.notebooks import check_parameters

check_parameters(globals())

# %% [markdown]
# ## The recipe
# The card `ferlib/recipes/fermam.yaml` holds the authors' settings per dataset (docs/papers/fermam.md §10): batch 300 (RAF-DB, AffectNet) or 200 (FERPlus), 260 / 200 / 260 epochs, basic_aug + horizontal flip + random erasing, no sampler, RAF-DB fed as BGR as the authors' loader does, FERPlus on majority-vote labels (the published FERPlus script cannot run on its soft labels).

# %%
from ferlib.engine import train
from ferlib.models import create_model
from ferlib.notebooks import train_options
from ferlib.viz.live import LivePlot
from ferlib.viz.report import report_run

options = train_options(globals(), model_kwargs={"scan_backend": scan_backend})
plan = train("fermam", dataset, dry_run=True, **options)

# %% [markdown]
# ## The model
# 40,011,687 parameters as the authors build it; 12.8 M of them (the IR-50 output layer) and the landmark net's GDC head are never used in the forward pass, and the landmark branch is frozen (paper §3; docs/papers/fermam.md §13).

# %%
model = create_model("fermam", num_classes=plan["num_classes"], **plan["model_kwargs"])
total = sum(p.numel() for p in model.parameters())
trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
print(f"{total:,} parameters, {trainable:,} trainable")
del model

# %% [markdown]
# ## Train
# One engine call: the card's recipe, SAM's two passes per batch, evaluation on the test split after every epoch (the authors select the best epoch on it).

# %%
run = plan if dry_run else train("fermam", dataset, callbacks=[LivePlot(title="fermam")], **options)
run

# %% [markdown]
# ## Results
# Curves, then the row-normalised confusion matrix on the evaluation split, drawn in the class order of the authors' code for this dataset (RAF-DB: Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral; AffectNet-8: alphabetical).

# %%
report_run(run)
