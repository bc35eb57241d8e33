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
# *GReFEL: Geometry-Aware Reliable Facial Expression Learning under Bias and Imbalanced Data Distribution* (arXiv 2410.15927). No official code exists; ferlib builds GReFEL on its predecessor's released code, ARBEx (`takihasan/ARBEx@b85c37b`), whose outputs `create_model("grefel", variant="arbex")` reproduces. IR-50 and MobileFaceNet features are fused by a window cross-attention ViT at three scales (28/14/7; spec §9.1); 10 learnable anchors per class and a self-attention corrector re-balance the classifier's distribution by their confidences (spec §9.3–9.4); the loss is cross-entropy with label smoothing 0.11 + anchor loss + centre loss, λ = 1 each (spec §9.5). The paper's section numbers could not be checked: the spec follows its abstract and pipeline.
#
# The defaults make a CPU smoke run of the **full** model on the synthetic set: both backbones always run at 112×112, so the cost per image is fixed (about 1 s per training image on 2 busy CPU cores), and `max_steps = 12` bounds the run to a few minutes. No reduced-width model is needed for that. On a GPU: `-p dataset rafdb -p max_steps None` (or ferplus, fer2013).

# %% tags=["parameters"]
dataset = "synthetic"  # type: str  (synthetic, rafdb, ferplus, fer2013)
data_root = None  # type: Optional[str]  (None = data/<dataset>)
epochs = None  # type: Optional[int]  (None = the card's value)
batch_size = None  # type: Optional[int]  (None = the card's value)
pretrained = False  # type: Union[bool, str]  (a GReFEL state file, e.g. from ferlib.models.grefel.convert.export_with_backbones)
device = "auto"  # type: str  (auto, cpu, cuda)
run_name = "grefel_{dataset}"  # type: str
max_steps = 12  # type: Optional[int]  (12 = CPU smoke run; None = the full recipe)
seed = 0  # type: int
lambda_anchor = 1.0  # type: float  (weight of the anchor loss; 0 = off)
lambda_center = 1.0  # type: float  (weight of the centre loss; 0 = off)
num_anchors = 10  # type: int  (anchors per class)


# %% [markdown]
# ## The recipe
# The card `ferlib/recipes/grefel.yaml`: FERPlus batch 32, Adam lr 1e-4, weight decay 0.01, 100 epochs; RAF-DB and FER2013 with a class-balanced sampler (500 images per class per epoch), Adam lr 3e-4, exponential decay 0.995, 1000 epochs. These settings and the reported accuracies come from a third-party re-implementation's README, not from the paper (see the card's `source`). The loss weights below override the card.

# %%
from ferlib.engine import train
from ferlib.models import create_model
from ferlib.recipes import load_recipe
from ferlib.viz.live import LivePlot
from ferlib.viz import plot_confusion, plot_curves

model_kwargs = {"num_anchors": num_anchors}
loss_kwargs = {"lambda_anchor": lambda_anchor, "lambda_center": lambda_center}
recipe = load_recipe("grefel", dataset, model_kwargs=model_kwargs, loss_kwargs=loss_kwargs)
print("model", recipe.model_kwargs, "classes", recipe.num_classes, "sampler", recipe.sampler, recipe.sampler_kwargs)
print("loss", recipe.loss, recipe.loss_kwargs)
print(recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.schedule, recipe.schedule_kwargs)
print("input", recipe.input_size, "epochs", recipe.epochs, "batch", recipe.batch_size)

# %% [markdown]
# ## The model
# `variant="grefel"` (paper, default): 10 anchors per class initialised at random, per-sample self-attention, prediction = the reliability-balanced distribution. IR-50 (17.6 M) and MobileFaceNet (0.9 M) are frozen, as in ARBEx's training script; 45.8 M parameters in all, 1.6 M of them registered upstream but unused.

# %%
model = create_model("grefel", num_classes=recipe.num_classes, **recipe.model_kwargs)
total = sum(p.numel() for p in model.parameters())
trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
print(f"{model.variant}: {total:,} parameters, {trainable:,} trainable, anchors {tuple(model.anchors.anchors.shape)}")

# %% [markdown]
# ## Train
# One engine call with the card's recipe, the chosen loss weights and number of anchors.

# %%
run = train("grefel", dataset, callbacks=[LivePlot(title="grefel")], data_root=data_root, run_name=run_name.format(dataset=dataset), epochs=epochs,
            batch_size=batch_size, device=device, max_steps=max_steps, seed=seed, pretrained=pretrained,
            resume=False, model_kwargs=model_kwargs, loss_kwargs=loss_kwargs)
run

# %% [markdown]
# ## Results
# Curves and the row-normalised confusion matrix on the evaluation split, from the run directory.

# %%
plot_curves(run.run_dir);

# %%
plot_confusion(run.run_dir);

# %%
print(f"accuracy {run.metrics['accuracy']:.4f}; reported: {recipe.reported or 'none for this dataset'}")
print("run directory:", run.run_dir)
