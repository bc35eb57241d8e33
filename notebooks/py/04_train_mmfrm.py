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
# Ding et al., *A Multiscale and Multilevel Fusion Network Based on ResNet and MobileFaceNet for Facial Expression Recognition* (IET CPS, doi:10.1049/cps2.70003); code `hutianhan/MMFRM@74c7e81`. A frozen landmark MobileFaceNet and a ResNet-18-style trunk see the same 112×112 face; three triple-CBAM fusion modules (TCFFM) join their maps at 28², 14² and 7², and a sigmoid gate scales the logits. The defaults train the CPU-sized synthetic entry in minutes; `-p dataset rafdb` runs the authors' recipe; `-p dataset ferplus` applies it to FERPlus, which the paper evaluates but the released code cannot load (our reconstruction, see the card).

# %% tags=["parameters"]
dataset = "synthetic"  # type: str  (synthetic, rafdb, ferplus)
data_root = None  # type: Optional[str]  (None = data/<dataset>)
epochs = None  # type: Optional[int]  (None = the card's value)
batch_size = None  # type: Optional[int]  (None = the card's value)
pretrained = False  # type: Union[bool, str]  (True = landmark trunk from mobilefacenet_model_best.pth.tar; a path = an MMFRM state file)
device = "auto"  # type: str  (auto, cpu, cuda)
run_name = "mmfrm_{dataset}"  # type: str
max_steps = None  # type: Optional[int]  (a number makes a smoke run)
seed = 0  # type: int
rfloss = None  # type: Optional[str]  (off, as_coded, intended; None = the card's as_coded)


# %% [markdown]
# ## The recipe
# The card holds every hyper-parameter of `train_my.py`: Adam with its default lr 1e-3 (the `--lr` argument is ignored), weight decay 1e-4, ExponentialLR(0.9) per epoch, 200 epochs, batch 32, random init. The loss is cross-entropy for 50 epochs, then 0.9·CE + 0.2·RFLoss (paper: RFLoss). `rfloss` picks the variant: `as_coded` reproduces the authors' code, whose RF term is a gradient-free constant (one aliased list, `math.sqrt` on tensors); `intended` is the differentiable per-class dispersion; `off` is plain CE.

# %%
from ferlib.engine import train
from ferlib.models import create_model
from ferlib.recipes import load_recipe
from ferlib.viz.live import LivePlot
from ferlib.viz import plot_confusion, plot_curves

loss_kwargs = None if rfloss is None else {"variant": rfloss}
model_kwargs = {"pretrained_landmark": pretrained is True}
recipe = load_recipe("mmfrm", dataset, loss_kwargs=loss_kwargs, model_kwargs=model_kwargs)
print(recipe.loss, recipe.loss_kwargs)
print(recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.schedule, recipe.schedule_kwargs)
print("input", recipe.input_size, "epochs", recipe.epochs, "batch", recipe.batch_size)

# %% [markdown]
# ## The model
# Two upstream networks in one module: `landmark.*` (MobileFaceNet, not optimised, left in train mode as upstream leaves it) and `network.*` (the expression network, whose keys equal the authors'). Only the expression network is trained. Upstream trains with a random landmark net (its checkpoint path never resolves); `-p pretrained True` loads the landmark trunk from pytorch_face_landmark's `mobilefacenet_model_best.pth.tar` instead (our choice, `data/README.md` says where the file goes).

# %%
model = create_model("mmfrm", num_classes=recipe.num_classes, **recipe.model_kwargs)
print(f"expression network {sum(p.numel() for p in model.network.parameters()):,} parameters, "
      f"landmark net {sum(p.numel() for p in model.landmark.parameters()):,}, "
      f"trained {sum(p.numel() for p in model.parameters() if p.requires_grad):,}")

# %% [markdown]
# ## Train
# One engine call; the loss's `set_epoch` switches RFLoss on at the card's epoch.

# %%
run = train("mmfrm", dataset, callbacks=[LivePlot(title="mmfrm")], data_root=data_root, run_name=run_name.format(dataset=dataset), epochs=epochs,
            batch_size=batch_size, device=device, max_steps=max_steps, seed=seed, pretrained=pretrained if isinstance(pretrained, str) else False,
            resume=False, loss_kwargs=loss_kwargs, model_kwargs=model_kwargs)
run

# %% [markdown]
# ## Results
# Curves and the row-normalised confusion matrix on the evaluation split (RAF-DB: the test split, which the authors also select on), drawn from the run directory.

# %%
plot_curves(run.run_dir);

# %%
plot_confusion(run.run_dir);

# %%
print(f"test accuracy {run.metrics['accuracy']:.4f}; reported: {recipe.reported or 'none in the code release'}")
print("run directory:", run.run_dir)
