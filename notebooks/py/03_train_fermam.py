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
# `create_model("fermam")` reproduces the authors' outputs (tests/test_fermam.py) with every quirk of their code by default; the selective scan runs in pure PyTorch on any device, or through mamba_ssm's CUDA kernel when it is installed.
#
# The defaults make a CPU smoke run of the **full** model (40.0 M parameters) on the synthetic set: both backbones always run at 112×112, so `max_steps = 6` bounds the run to a few minutes on 2 CPU cores. On a GPU: `-p dataset rafdb -p pretrained True -p max_steps None` (or affectnet, affectnet8, ferplus).

# %% tags=["parameters"]
dataset = "synthetic"  # type: str  (synthetic, rafdb, affectnet, affectnet8, ferplus)
data_root = None  # type: Optional[str]  (None = data/<dataset>)
epochs = None  # type: Optional[int]  (None = the card's value)
batch_size = None  # type: Optional[int]  (None = the card's value)
pretrained = False  # type: Union[bool, str]  (True = MS-Celeb IR-50 + landmark MobileFaceNet backbones; a path = a FERMam state file)
device = "auto"  # type: str  (auto, cpu, cuda)
run_name = "fermam_{dataset}"  # type: str
max_steps = 6  # type: Optional[int]  (6 = CPU smoke run; None = the full recipe)
seed = 0  # type: int
scan_backend = "auto"  # type: str  (auto, torch, cuda, reference)

# %% [markdown]
# ## The recipe
# The card `ferlib/recipes/fermam.yaml` holds the authors' settings per dataset (spec §10): batch 300 (RAF-DB, AffectNet) or 200 (FERPlus), 260 / 200 / 260 epochs, basic_aug + horizontal flip + random erasing, no sampler, RAF-DB fed as BGR as the authors' loader does, FERPlus on majority-vote labels (the published FERPlus script cannot run on its soft labels).

# %%
from ferlib.data.labels import paper_order
from ferlib.engine import train
from ferlib.models import create_model
from ferlib.recipes import load_recipe
from ferlib.viz.live import LivePlot
from ferlib.viz import plot_confusion, plot_curves

model_kwargs = {"scan_backend": scan_backend, "pretrained_backbones": pretrained is True}
recipe = load_recipe("fermam", dataset, model_kwargs=model_kwargs)
print("loss", recipe.loss, recipe.loss_kwargs, "| SAM", recipe.sam, "rho", recipe.sam_rho)
print(recipe.optimizer, recipe.lr, recipe.schedule, recipe.schedule_kwargs, "| epochs", recipe.epochs, "batch", recipe.batch_size)
print("input", recipe.input_size, "colour", recipe.color_order, "transforms", recipe.train_transforms)

# %% [markdown]
# ## The model
# 40,011,687 parameters as the authors build it; 12.8 M of them (the IR-50 output layer) and the landmark net's GDC head are never used in the forward pass, and the landmark branch is frozen (paper §3; spec §13).

# %%
model = create_model("fermam", num_classes=recipe.num_classes, scan_backend=scan_backend)
total = sum(p.numel() for p in model.parameters())
trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
print(f"{total:,} parameters, {trainable:,} trainable")
del model

# %% [markdown]
# ## Train
# One engine call: the card's recipe, SAM's two passes per batch, evaluation on the test split after every epoch (the authors select the best epoch on it).

# %%
run = train("fermam", dataset, callbacks=[LivePlot(title="fermam")], data_root=data_root, run_name=run_name.format(dataset=dataset), epochs=epochs,
            batch_size=batch_size, device=device, max_steps=max_steps, seed=seed,
            pretrained=pretrained if isinstance(pretrained, str) else False, resume=False, model_kwargs=model_kwargs)
run

# %% [markdown]
# ## Results
# Curves, then the row-normalised confusion matrix on the evaluation split, drawn in the class order of the authors' code for this dataset (RAF-DB: Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral; AffectNet-8: alphabetical).

# %%
plot_curves(run.run_dir);

# %%
plot_confusion(run.run_dir, order=paper_order("fermam", dataset));

# %%
print(f"accuracy {run.metrics['accuracy']:.4f}; reported: {recipe.reported or 'none recorded for this dataset (see the card)'}")
print("run directory:", run.run_dir)
