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
# # 07 — MFER: ConvNeXt with DS attention and a multiscale classifier
#
# *Multiscale Facial Expression Recognition Based on Dynamic Global and Static Local Attention* (Xu et al., IEEE TAFFC 2024); code `XuJ1E/MFER@6d041d5` (model code only: the training script was never runnable). A ConvNeXt-B backbone with a DS attention module (dynamic global key × static local 7×7-conv query, softmax over positions) appended to the last two ConvNeXt stages (paper Fig. 2), a LayerNorm-ed 1024-d pooled feature, and three MLP heads on its first 512 / 768 / 1024 channels whose logits are summed (the multiscale classifier, Msc). 155.4 M parameters.
#
# The defaults train the card's `synthetic` entry on CPU in a few minutes. **On `synthetic` the model is a reduced-width copy** (dims 16/32/64/128, depths 1/1/3/1, 1.4 M parameters, same structure): the full model takes about a minute per training step on a 2-core CPU, so it cannot take a few steps in a minute. `-p dataset rafdb` (or affectnet, affectnet8, ferplus) runs the full model with the paper's recipe (GPU).

# %% tags=["parameters"]
from typing import Optional, Union

dataset: str = "synthetic"  # synthetic (CPU demo), rafdb, affectnet, affectnet8, ferplus; or imagefolder for your own train/<class>/ and test/<class>/ folders
data_root: Optional[str] = None  # the dataset's folder as distributed; None means data/<dataset>
base_recipe: Optional[str] = None  # imagefolder only: the card entry whose recipe to use; None means rafdb
epochs: Optional[int] = None  # None: the card's
batch_size: Optional[int] = None  # None: the card's
pretrained: Union[bool, str] = "card"  # card or True: none released (random init; see the card); False: random init; or a ferlib.weights entry / a file
precision: Optional[str] = None  # None: the card's (fp32, as the authors); bf16 is the fast GPU switch
max_steps: Optional[int] = None  # None: the card's, a CPU smoke budget on synthetic and the full recipe on real data
dry_run: bool = False  # True: print the plan and write plan.json without training
resume: bool = False  # continue the run in run_name from its last.pt
overwrite: bool = False  # replace a previous run in run_name that has other settings (without it such a run refuses)
reuse: bool = True  # a finished run in run_name with the same settings is shown again, not retrained (False: never reuse)
threads: Optional[int] = None  # torch CPU threads; None: OMP_NUM_THREADS or one per core
device: str = "auto"  # auto, cpu or cuda
run_name: str = "mfer_{dataset}_{feature_loss}"  # the run directory under results/runs
seed: int = 0  # one seed for Python, NumPy, torch and the samplers
feature_loss: Optional[str] = None  # None, lgm or dsf; dsf is OUR reconstruction, the paper's is unreleased
feature_loss_weight: Optional[float] = None  # None: the card's 1.0, unweighted as train.py adds it


# %% [markdown]
# The parameters are checked first (types and ranges), so a mistyped value stops here, before anything on disk is touched.

# %%
from ferlib.notebooks import check_parameters

check_parameters(globals())

# %% [markdown]
# ## The recipe
# From `train.py`'s intent (docs/papers/mfer.md §5): AdamW lr 1e-3 (weight decay 0.01), ExponentialLR γ 0.95 per epoch, batch 32, 100 epochs, Resize(224) and ImageNet normalisation with no augmentation, drop path 0.25. Loss: label-smoothed cross-entropy (ε 0.1) on each head, summed, plus an optional feature loss on the 1024-d feature — LGM (Wan et al., CVPR 2018) or our DSF reconstruction (the README's t-SNE figures compare no feature loss, LGM and DSF). The card marks every value as from the code, the paper, or our choice.

# %%
from ferlib.engine import train
from ferlib.models import create_model
from ferlib.notebooks import train_options
from ferlib.viz.live import LivePlot
from ferlib.viz.report import report_run

options = train_options(globals(), loss_kwargs={"feature_loss": feature_loss,
                                                "feature_loss_weight": feature_loss_weight})
plan = train("mfer", dataset, dry_run=True, **options)

# %% [markdown]
# ## The model
# Keys equal the authors' (`backbone.*`, `msc.{0,1,2}.*`); the tests check outputs and intermediates against the authors' code. On `synthetic` this is the reduced-width copy described above.

# %%
model = create_model("mfer", num_classes=plan["num_classes"], **plan["model_kwargs"])
print(f"{sum(p.numel() for p in model.parameters()):,} parameters; feature width {model.backbone.num_features}; "
      f"heads read {[h.in_features for h in model.msc]} channels")
del model

# %% [markdown]
# ## Train
# One engine call with the card's recipe and the chosen feature loss.

# %%
run = plan if dry_run else train("mfer", dataset, callbacks=[LivePlot(title="mfer")], **options)
run

# %% [markdown]
# ## Results
# Curves, the row-normalised confusion matrix on the evaluation split (the README reports confusion matrices), and a t-SNE of the 1024-d features (the README's figures: without feature loss, with LGM, with DSF — rerun with `-p feature_loss lgm` / `dsf` to compare).

# %%
report_run(run, tsne=True, tsne_title=f"MFER features, feature loss: {feature_loss or 'none'}")
