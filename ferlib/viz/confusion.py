"""Row-normalised confusion matrices (seaborn heatmap), in any class order."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from sklearn.metrics import confusion_matrix

from ferlib.metrics import hard_targets

from .io import load_predictions, save_figure


def confusion(y_true, y_pred, n_classes: int, order: list[int] | None = None, normalize: bool = True) -> np.ndarray:
    """Confusion matrix [C, C] (rows = true class), rows reordered by ``order`` (native indices)."""
    cm = confusion_matrix(y_true, y_pred, labels=list(range(n_classes))).astype(np.float64)
    if normalize:
        cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    if order is not None:
        cm = cm[np.ix_(order, order)]
    return cm


def plot_confusion(run_dir=None, *, logits=None, targets=None, classes=None, order=None, normalize: bool = True,
                   title: str | None = None, save_to=None, ax=None):
    """Confusion-matrix figure from a run directory (or arrays).

    ``order`` lists class *names* (or native indices) in the order to draw, e.g. a paper's figure order.
    Saved as PNG+SVG to ``save_to`` (default ``<run_dir>/confusion``).
    """
    if run_dir is not None:
        p = load_predictions(run_dir)
        logits, targets, classes = p["logits"], p["targets"], [str(c) for c in p["classes"]]
    classes = list(classes)
    targets = np.asarray(targets)
    y_true = hard_targets(targets)
    idx = None
    if order is not None:
        idx = [classes.index(o) if isinstance(o, str) else int(o) for o in order]
    cm = confusion(y_true, np.asarray(logits).argmax(1), len(classes), idx, normalize)
    names = [classes[i] for i in idx] if idx is not None else classes
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(names), 0.8 + 0.65 * len(names)))
    else:
        fig = ax.figure
    sns.heatmap(cm, annot=True, fmt=".2f" if normalize else "g", cmap="Blues", xticklabels=names,
                yticklabels=names, vmin=0, vmax=1 if normalize else None, cbar=False, ax=ax, square=True)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = float((np.asarray(logits).argmax(1) == y_true).mean())
    ax.set_title(title or f"accuracy {acc:.3f}")
    fig.tight_layout()
    if save_to is not None or run_dir is not None:
        save_figure(fig, save_to if save_to is not None else f"{run_dir}/confusion")
    return fig
