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
# # 06 — GReFEL: geometry-aware reliable facial expression learning
#
# *GReFEL: Geometry-Aware Reliable Facial Expression Learning under Bias and Imbalanced Data Distribution* (arXiv 2410.15927). No official code exists; ferlib builds GReFEL on its predecessor's released code, ARBEx (`takihasan/ARBEx@b85c37b`), whose outputs `create_model("grefel", variant="arbex")` reproduces. IR-50 and MobileFaceNet features are fused by a window cross-attention ViT at three scales (28/14/7; docs/papers/grefel.md §9.1); 10 learnable anchors per class and a self-attention corrector re-balance the classifier's distribution by their confidences (docs/papers/grefel.md §9.3–9.4); the loss is cross-entropy with label smoothing 0.11 + anchor loss + centre loss, λ = 1 each (docs/papers/grefel.md §9.5). The paper's section numbers could not be checked: the spec follows its abstract and pipeline.
#
# The defaults train the card's CPU-sized synthetic entry (`[ours, synthetic]`, not the paper's network): both backbones at 64×64 from random init with a one-unit-per-stage IR-50, the window cross-attention fusion, then one Linear over the fused tokens instead of the ViT (whose LayerNorms and class token keep a random-init model at the majority class) and cross-entropy on the classifier alone, 4 epochs: about 10 minutes on one core, 0.627 test accuracy. The anchors and the self-attention corrector are still computed (the run's `extras`), but the demo neither trains nor predicts with them; the card's notes give the measurements behind each change. On a GPU, `-p dataset rafdb` (or ferplus, fer2013) is the card's full run from the MS-Celeb IR-50 and the landmark MobileFaceNet (both frozen); `-p dry_run True` shows that plan first.

# %% tags=["parameters"]
from typing import Optional, Union

dataset: str = "synthetic"  # synthetic (CPU demo), rafdb, ferplus, fer2013; or imagefolder for your own train/<class>/ and test/<class>/ folders
data_root: Optional[str] = None  # the dataset's folder as distributed; None means data/<dataset>
base_recipe: Optional[str] = None  # imagefolder only: the card entry whose recipe to use; None means rafdb
epochs: Optional[int] = None  # None: the card's
batch_size: Optional[int] = None  # None: the card's
pretrained: Union[bool, str] = "card"  # card or True: the MS-Celeb IR-50 and the landmark MobileFaceNet (frozen); False: random init; or a ferlib.weights entry / a file
precision: Optional[str] = None  # None: the card's (fp32, as the authors); bf16 is the fast GPU switch
max_steps: Optional[int] = None  # None: the card's, the CPU demo's on synthetic and the full recipe on real data
dry_run: bool = False  # True: print the plan and write plan.json without training
resume: bool = False  # continue the run in run_name from its last.pt
overwrite: bool = False  # replace a previous run in run_name that has other settings (without it such a run refuses)
reuse: bool = True  # a finished run in run_name with the same settings is shown again, not retrained (False: never reuse)
threads: Optional[int] = None  # torch CPU threads; None: OMP_NUM_THREADS or one per core
device: str = "auto"  # auto, cpu or cuda
run_name: str = "grefel_{dataset}"  # the run directory under results/runs
seed: int = 0  # one seed for Python, NumPy, torch and the samplers
lambda_anchor: Optional[float] = None  # weight of the anchor loss, 0 turns it off; None: the card's (1; 0 in the synthetic demo)
lambda_center: Optional[float] = None  # weight of the centre loss, 0 turns it off; None: the card's (1; 0 in the synthetic demo)
num_anchors: int = 10  # anchors per class


# %% [markdown]
# The parameters are checked first (types and ranges), so a mistyped value stops here, before anything on disk is touched.

# %%
from ferlib.notebooks import check_parameters

check_parameters(globals())

# %% [markdown]
# ## The recipe
# The card `ferlib/recipes/grefel.yaml`: FERPlus batch 32, Adam lr 1e-4, weight decay 0.01, 100 epochs; RAF-DB and FER2013 with a class-balanced sampler (500 images per class per epoch), Adam lr 3e-4, exponential decay 0.995, 1000 epochs. These settings and the reported accuracies come from a third-party re-implementation's README, not from the paper (see the card's `source`). The loss weights given as parameters override the card's.

# %%
from ferlib.engine import train
from ferlib.models import create_model
from ferlib.notebooks import train_options
from ferlib.viz.live import LivePlot
from ferlib.viz.report import report_run

options = train_options(globals(), model_kwargs={"num_anchors": num_anchors},
                        loss_kwargs={"lambda_anchor": lambda_anchor, "lambda_center": lambda_center})
plan = train("grefel", dataset, dry_run=True, **options)

# %% [markdown]
# ## The model
# `variant="grefel"` (paper, default): 10 anchors per class initialised at random, per-sample self-attention, prediction = the reliability-balanced distribution. IR-50 (17.6 M) and MobileFaceNet (0.9 M) are frozen, as in ARBEx's training script; 45.8 M parameters in all, 1.6 M of them registered upstream but unused.

# %%
model = create_model("grefel", num_classes=plan["num_classes"], **plan["model_kwargs"])
total = sum(p.numel() for p in model.parameters())
trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
print(f"{model.variant}: {total:,} parameters, {trainable:,} trainable, anchors {tuple(model.anchors.anchors.shape)}")
del model

# %% [markdown]
# ## Train
# One engine call with the card's recipe, the chosen loss weights and number of anchors.

# %%
run = plan if dry_run else train("grefel", dataset, callbacks=[LivePlot(title="grefel")], **options)
run

# %% [markdown]
# ## Results
# Curves and the row-normalised confusion matrix on the evaluation split, from the run directory.

# %%
report_run(run)
