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
# # 11 — Expressions of the faces in a photo
#
# Find the faces in a photo, crop each the way the model's training data was cropped (RAF-DB's aligned crops for a
# RAF-DB model, the detector's box for AffectNet, 48-pixel grey faces for FER2013 / FERPlus), apply the model's own
# evaluation transform and show the probabilities of every class. The same as
# `python -m ferlib predict PHOTO_OR_FOLDER --run DIR` (or `--weights ENTRY`), which also writes an annotated PNG per
# photo and a CSV for a folder.
#
# **With no parameters** it classifies the portrait of Grace Hopper that ships with matplotlib
# (`mpl-data/sample_data/grace_hopper.jpg`: an official U.S. Navy photograph, public domain) with the quickstart's model
# (`results/runs/quickstart`, written by `00_quickstart`; trained here first if it is absent). **That model was trained on
# synthetic faces: it is a demonstration of the pipeline, not a classifier of real expressions** — its answer on a real
# face means nothing. For real predictions pass a run trained on a real dataset (`-p run_dir results/runs/<run>`) or a
# released checkpoint (`-p weights emonet_rafdb_lam0.6`, with the file in `data/pretrained/`).

# %% tags=["parameters"]
from typing import Optional

image: Optional[str] = None  # a photo to classify (None: the Grace Hopper portrait shipped with matplotlib)
run_dir: Optional[str] = None  # a run directory of ferlib.engine.train (None: the quickstart's run, trained here if absent)
weights: Optional[str] = None  # a ferlib.weights entry or checkpoint file to use instead of a run
model: Optional[str] = None  # with weights given as a file the registry does not know: its model name
device: str = "cpu"  # cpu, cuda or auto
max_steps: Optional[int] = None  # only if the quickstart model must be trained here: a smoke run of this many steps

# %% [markdown]
# ## The model
# A run directory gives the model, its recipe (input size, resize / crop, mean / std, colour order) and its class
# names; a registry entry gives the same from the entry and its paper's card.

# %%
import pandas as pd

from ferlib.notebooks import check_parameters
from ferlib.inference import Predictor, demo_photo, draw_predictions, plot_probabilities
from ferlib.quickstart import quickstart_run
from ferlib.widgets import upload_widget

check_parameters(globals())  # a mistyped -p value stops here, naming the parameter
if weights:
    predictor = Predictor.from_weights(weights, model=model, device=device)
else:
    predictor = Predictor.from_run(run_dir or quickstart_run(max_steps=max_steps, device=device), device=device)
if predictor.demonstration_only:
    print("This model was trained on synthetic faces: a demonstration of the pipeline, not a classifier of "
          "real expressions.")
predictor

# %% [markdown]
# ## The photo
# MTCNN (facenet-pytorch, the detector `01_prepare_data` aligns with; its weights ship in the wheel) finds the faces and
# their five landmarks; each box is labelled with its most probable class, with a small bar chart of the top three.

# %%
photo = image or demo_photo()
result = predictor(photo)
print(result)
draw_predictions(result);

# %% [markdown]
# ## Probabilities per face
# Every class, in the model's order, next to the crop the model saw (before its own resize and normalisation).

# %%
plot_probabilities(result);

# %%
pd.DataFrame(result.rows())

# %% [markdown]
# ## Your own photo
# In JupyterLab, upload a photo with the button: its faces are found, classified and drawn below it. (Run headless,
# the button is shown but nothing is uploaded.)

# %%
upload_widget(predictor)
