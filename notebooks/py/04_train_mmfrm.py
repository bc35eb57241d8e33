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
# # 04 — MMFRM: ResNet + MobileFaceNet fusion with RFLoss
#
# Ding et al., *A Multiscale and Multilevel Fusion Network Based on ResNet and MobileFaceNet for Facial Expression Recognition* (IET CPS, doi:10.1049/cps2.70003); code `hutianhan/MMFRM@74c7e81`. A frozen landmark MobileFaceNet and a ResNet-18-style trunk see the same 112×112 face; three triple-CBAM fusion modules (TCFFM) join their maps at 28², 14² and 7², and a sigmoid gate scales the logits. The defaults train the card's CPU-sized synthetic entry (64×64, SGD instead of Adam, which closes the gate from random init, 7 epochs: about 27 minutes on one core, 0.663 test accuracy); `-p dataset rafdb` runs the authors' recipe; `-p dataset ferplus` applies it to FERPlus, which the paper evaluates but the released code cannot load (our reconstruction, see the card).

# %% tags=["parameters"]
from typing import Optional, Union

dataset: str = "synthetic"  # synthetic (CPU demo), rafdb, ferplus; or imagefolder for your own train/<class>/ and test/<class>/ folders
data_root: Optional[str] = None  # the dataset's folder as distributed; None means data/<dataset>
base_recipe: Optional[str] = None  # imagefolder only: the card entry whose recipe to use; None means rafdb
epochs: Optional[int] = None  # None: the card's
batch_size: Optional[int] = None  # None: the card's
pretrained: Union[bool, str] = "card"  # card or True: the card's landmark MobileFaceNet; False: random init; or a ferlib.weights entry / a file
precision: Optional[str] = None  # None: the card's (fp32, as the authors); bf16 is the fast GPU switch
max_steps: Optional[int] = None  # None: the card's, a CPU smoke budget on synthetic and the full recipe on real data
dry_run: bool = False  # True: print the plan and write plan.json without training
resume: bool = False  # continue the run in run_name from its last.pt
overwrite: bool = False  # replace a previous run in run_name that has other settings (without it such a run refuses)
reuse: bool = True  # a finished run in run_name with the same settings is shown again, not retrained (False: never reuse)
threads: Optional[int] = None  # torch CPU threads; None: OMP_NUM_THREADS or one per core
device: str = "auto"  # auto, cpu or cuda
run_name: str = "mmfrm_{dataset}"  # the run directory under results/runs
seed: int = 0  # one seed for Python, NumPy, torch and the samplers
rfloss: Optional[str] = None  # off, as_coded or intended; None: the card's as_coded


# %% [markdown]
# The parameters are checked first (types and ranges), so a mistyped value stops here, before anything on disk is touched.

# %%
from ferlib.notebooks import check_parameters

check_parameters(globals())

# %% [markdown]
# ## The recipe
# The card holds every hyper-parameter of `train_my.py`: Adam with its default lr 1e-3 (the `--lr` argument is ignored), weight decay 1e-4, ExponentialLR(0.9) per epoch, 200 epochs, batch 32, random init. The loss is cross-entropy for 50 epochs, then 0.9·CE + 0.2·RFLoss (paper: RFLoss). `rfloss` picks the variant: `as_coded` reproduces the authors' code, whose RF term is a gradient-free constant (one aliased list, `math.sqrt` on tensors); `intended` is the differentiable per-class dispersion; `off` is plain CE.

# %%
from ferlib.engine import train
from ferlib.models import create_model
from ferlib.notebooks import train_options
from ferlib.viz.live import LivePlot
from ferlib.viz.report import report_run

options = train_options(globals(), loss_kwargs=None if rfloss is None else {"variant": rfloss})
plan = train("mmfrm", dataset, dry_run=True, **options)

# %% [markdown]
# ## The model
# Two upstream networks in one module: `landmark.*` (MobileFaceNet, not optimised, left in train mode as upstream leaves it) and `network.*` (the expression network, whose keys equal the authors'). Only the expression network is trained. Upstream loads an unreleased landmark checkpoint through a Windows path (on Linux it trains with a random landmark net); the card starts the landmark net from pytorch_face_landmark's `mobilefacenet_model_best.pth.tar` instead (our choice, `data/README.md` says where the file goes); `-p pretrained False` reproduces the Linux run of the published code.

# %%
model = create_model("mmfrm", num_classes=plan["num_classes"], **plan["model_kwargs"])
print(f"expression network {sum(p.numel() for p in model.network.parameters()):,} parameters, "
      f"landmark net {sum(p.numel() for p in model.landmark.parameters()):,}, "
      f"trained {sum(p.numel() for p in model.parameters() if p.requires_grad):,}")
del model

# %% [markdown]
# ## Train
# One engine call; the loss's `set_epoch` switches RFLoss on at the card's epoch.

# %%
run = plan if dry_run else train("mmfrm", dataset, callbacks=[LivePlot(title="mmfrm")], **options)
run

# %% [markdown]
# ## Results
# Curves and the row-normalised confusion matrix on the evaluation split (RAF-DB: the test split, which the authors also select on), drawn from the run directory.

# %%
report_run(run)
