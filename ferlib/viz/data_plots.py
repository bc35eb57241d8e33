"""Figures and tables for looking at a dataset before training (notebooks 01 and 02).

- :func:`class_balance` / :func:`plot_class_balance` — images per class and split (seaborn bars).
- :func:`skip_table` — what each split's reader or cache skipped, by reason, with the first paths.
- :func:`cache_table` — per split: cache folder, item count, stored shape.
- :func:`image_browser` — an ipywidgets browser (split / class dropdowns, image slider, label and file name
  under the image). It always draws a static figure of the first selection first, so an executed notebook
  (papermill, nbconvert) keeps a picture even where widgets cannot render.
"""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .io import save_figure


def _hard(t) -> int | None:
    if t is None:
        return None
    return int(np.argmax(t)) if isinstance(t, (list, tuple, np.ndarray)) else int(t)


def class_balance(datasets: dict):
    """pandas DataFrame: rows = classes (each dataset's native order), columns = splits, values = counts."""
    import pandas as pd

    cols = {}
    classes = None
    for split, ds in datasets.items():
        classes = classes or list(ds.classes)
        cols[split] = ds.class_counts()
    df = pd.DataFrame(cols, index=classes)
    df.index.name = "class"
    df.loc["total"] = df.sum()
    return df


def plot_class_balance(datasets: dict, title: str | None = None, save_to=None):
    """Grouped bars of images per class for every split (seaborn); returns the Figure."""
    import pandas as pd
    import seaborn as sns

    df = class_balance(datasets).drop(index="total")
    long = df.reset_index().melt(id_vars="class", var_name="split", value_name="images")
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(df), 3.4))
    sns.barplot(data=long, x="class", y="images", hue="split", ax=ax)
    for cont in ax.containers:
        ax.bar_label(cont, fontsize=7)
    ax.set_xlabel("")
    ax.set_title(title or "images per class")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    if save_to is not None:
        save_figure(fig, save_to)
    _ = pd  # pandas is seaborn's input format
    return fig


def skip_table(datasets: dict):
    """pandas DataFrame with one row per (split, reason): count and the first skipped paths."""
    import pandas as pd

    rows = []
    for split, ds in datasets.items():
        rep = ds.skip_report
        for reason, n in rep.counts.items():
            rows.append({"split": split, "reason": reason, "count": n,
                         "first paths": ", ".join(Path(str(p)).name for p in rep.examples.get(reason, [])[:3])})
        if not rep:
            rows.append({"split": split, "reason": "(nothing skipped)", "count": 0, "first paths": ""})
    return pd.DataFrame(rows, columns=["split", "reason", "count", "first paths"])


def cache_table(datasets: dict):
    """pandas DataFrame: per split, the cache folder, the number of images and the stored image shape."""
    import pandas as pd

    rows = []
    for split, ds in datasets.items():
        shape = tuple(ds.images.shape[1:]) if hasattr(ds, "images") else tuple(ds[0][0].shape)
        rows.append({"split": split, "images": len(ds), "shape": "×".join(map(str, shape)),
                     "cache": str(getattr(ds, "path", "(not cached)"))})
    return pd.DataFrame(rows)


def _items(ds, cls: int | None):
    idx = [i for i, t in enumerate(ds.targets) if cls is None or _hard(t) == cls]
    return idx


def _caption(ds, i: int) -> str:
    t = _hard(ds.targets[i])
    name = ds.classes[t] if t is not None else "(no label)"
    sample = ds.samples[i]
    fname = Path(sample).name if isinstance(sample, (str, Path)) else f"row {sample}"
    return f"{name} — {fname}"


def show_item(ds, i: int, ax=None, scale: float = 2.2):
    """Draw item ``i`` with its label and file name under it; returns the Figure."""
    img = ds[i][0] if ds.transform is None else ds.load(i)
    arr = img.permute(1, 2, 0).numpy()
    if ax is None:
        fig, ax = plt.subplots(figsize=(scale, scale + 0.4))
    else:
        fig = ax.figure
    ax.imshow(arr)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(_caption(ds, i), fontsize=8)
    return fig


def image_browser(datasets: dict, static: bool = True):
    """Browse images: split and class dropdowns, an image slider, label + file name under the image.

    Displays a static figure of the first image of the first split first (``static=True``), then the widget
    (when ipywidgets is importable). Returns the widget, or None without ipywidgets.
    """
    from IPython.display import display

    first_split = next(iter(datasets))
    if static:
        fig = show_item(datasets[first_split], 0)
        display(fig)
        plt.close(fig)
    try:
        import ipywidgets as w
    except ImportError:
        return None
    split_dd = w.Dropdown(options=list(datasets), value=first_split, description="split")
    class_dd = w.Dropdown(description="class")
    slider = w.IntSlider(min=0, max=0, value=0, description="image", continuous_update=False)
    image = w.Image(format="png", width=224, height=224)
    caption = w.Label()

    def class_options():
        ds = datasets[split_dd.value]
        counts = ds.class_counts()
        return [("all", -1)] + [(f"{n} ({c})", k) for k, (n, c) in enumerate(zip(ds.classes, counts))]

    def render(*_):
        ds = datasets[split_dd.value]
        cls = None if class_dd.value in (None, -1) else class_dd.value
        idx = _items(ds, cls)
        slider.max = max(0, len(idx) - 1)
        if not idx:
            caption.value = "no images of this class in this split"
            return
        i = idx[min(slider.value, len(idx) - 1)]
        img = ds.load(i).permute(1, 2, 0).numpy()
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG")
        image.value = buf.getvalue()
        caption.value = f"{_caption(ds, i)}   [{slider.value + 1}/{len(idx)}]"

    def on_split(*_):
        class_dd.options = class_options()
        class_dd.value = -1
        slider.value = 0
        render()

    class_dd.options = class_options()
    class_dd.value = -1
    split_dd.observe(on_split, names="value")
    class_dd.observe(lambda *_: (setattr(slider, "value", 0), render()), names="value")
    slider.observe(render, names="value")
    render()
    box = w.VBox([w.HBox([split_dd, class_dd]), slider, image, caption])
    display(box)
    return box
