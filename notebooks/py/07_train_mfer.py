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
dataset = "synthetic"  # type: str  (synthetic, rafdb, affectnet, affectnet8, ferplus)
data_root = None  # type: Optional[str]  (None = data/<dataset>)
epochs = None  # type: Optional[int]  (None = the card's value)
batch_size = None  # type: Optional[int]  (None = the card's value)
pretrained = False  # type: Union[bool, str]  (a checkpoint path; no MFER weights are released)
device = "auto"  # type: str  (auto, cpu, cuda)
run_name = "mfer_{dataset}_{feature_loss}"  # type: str
max_steps = None  # type: Optional[int]  (a number makes a smoke run)
seed = 0  # type: int
feature_loss = None  # type: Optional[str]  (None, "lgm" or "dsf"; dsf is OUR reconstruction, the paper's is unreleased)
feature_loss_weight = None  # type: Optional[float]  (None = the card's 1.0, unweighted as train.py adds it)


# %% [markdown]
# ## The recipe
# From `train.py`'s intent (specs/mfer.md §5): AdamW lr 1e-3 (weight decay 0.01), ExponentialLR γ 0.95 per epoch, batch 32, 100 epochs, Resize(224) and ImageNet normalisation with no augmentation, drop path 0.25. Loss: label-smoothed cross-entropy (ε 0.1) on each head, summed, plus an optional feature loss on the 1024-d feature — LGM (Wan et al., CVPR 2018) or our DSF reconstruction (the README's t-SNE figures compare no feature loss, LGM and DSF). The card marks every value as from the code, the paper, or our choice.

# %%
from ferlib.engine import train
from ferlib.models import create_model
from ferlib.recipes import load_recipe
from ferlib.viz.live import LivePlot
from ferlib.viz import plot_confusion, plot_curves, plot_tsne

loss_kwargs = {k: v for k, v in {"feature_loss": feature_loss, "feature_loss_weight": feature_loss_weight}.items() if v is not None}
recipe = load_recipe("mfer", dataset, loss_kwargs=loss_kwargs)
print("model", recipe.model_kwargs, "classes", recipe.num_classes)
print("loss", recipe.loss, recipe.loss_kwargs)
print(recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.schedule, recipe.schedule_kwargs)
print("input", recipe.input_size, "epochs", recipe.epochs, "batch", recipe.batch_size)

# %% [markdown]
# ## The model
# Keys equal the authors' (`backbone.*`, `msc.{0,1,2}.*`); the tests check outputs and intermediates against the authors' code. On `synthetic` this is the reduced-width copy described above.

# %%
model = create_model("mfer", num_classes=recipe.num_classes, **recipe.model_kwargs)
print(f"{sum(p.numel() for p in model.parameters()):,} parameters; feature width {model.backbone.num_features}; "
      f"heads read {[h.in_features for h in model.msc]} channels")

# %% [markdown]
# ## Train
# One engine call with the card's recipe and the chosen feature loss.

# %%
run = train("mfer", dataset, callbacks=[LivePlot(title="mfer")], data_root=data_root, run_name=run_name.format(dataset=dataset, feature_loss=feature_loss or "none"),
            epochs=epochs, batch_size=batch_size, device=device, max_steps=max_steps, seed=seed,
            pretrained=pretrained, resume=False, loss_kwargs=loss_kwargs)
run

# %% [markdown]
# ## Results
# Curves, the row-normalised confusion matrix on the evaluation split (the README reports confusion matrices), and a t-SNE of the 1024-d features (the README's figures: without feature loss, with LGM, with DSF — rerun with `-p feature_loss lgm` / `dsf` to compare).

# %%
plot_curves(run.run_dir);

# %%
plot_confusion(run.run_dir);

# %%
plot_tsne(run.run_dir, title=f"MFER features, feature loss: {feature_loss or 'none'}");

# %%
print(f"accuracy {run.metrics['accuracy']:.4f}; reported: {recipe.reported or 'none for this dataset'}")
print("run directory:", run.run_dir)
