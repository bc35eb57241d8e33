"""Row-normalised confusion matrices (seaborn heatmap) with counts, in any class order; a class without samples
is drawn as such."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from sklearn.metrics import confusion_matrix

from ferlib.metrics import hard_targets
from ferlib.run_dir import RunDir

from .io import save_figure


def confusion(y_true, y_pred, n_classes: int, order: list[int] | None = None, normalize: bool = True) -> np.ndarray:
    """Confusion matrix [C, C] (rows = true class), rows reordered by ``order`` (native indices)."""
    cm = confusion_matrix(y_true, y_pred, labels=list(range(n_classes))).astype(np.float64)
    if normalize:
        cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    if order is not None:
        cm = cm[np.ix_(order, order)]
    return cm


def plot_confusion(run_dir=None, *, logits=None, targets=None, classes=None, order=None, normalize: bool = True,
                   title: str | None = None, save_to=None, ax=None, caption: str | None = None):
    """Confusion-matrix figure from a run directory (or arrays): each cell the row-normalised rate and, under it,
    the count; each row label the class's number of samples; a class without samples is drawn as "no samples"
    (hatched), not as a row of zeros.

    ``order`` lists class *names* (or native indices) in the order to draw, e.g. a paper's figure order.
    ``caption``: a line under the title (default for a run directory: :func:`ferlib.viz.captions.run_caption`,
    the data, seed, smoke/complete and selection rule). Saved as PNG+SVG to ``save_to`` (default
    ``<run_dir>/confusion``).
    """
    from matplotlib.patches import Rectangle

    from .captions import run_caption, wrap

    if run_dir is not None:
        p = RunDir(run_dir).predictions()
        logits, targets, classes = p["logits"], p["targets"], [str(c) for c in p["classes"]]
        caption = run_caption(run_dir) if caption is None else caption
    classes = list(classes)
    targets = np.asarray(targets)
    y_true = hard_targets(targets)
    idx = None
    if order is not None:
        idx = [classes.index(o) if isinstance(o, str) else int(o) for o in order]
    counts = confusion(y_true, np.asarray(logits).argmax(1), len(classes), idx, normalize=False)
    n = counts.sum(1)
    rates = counts / np.maximum(n, 1)[:, None]
    shown = np.where(n[:, None] > 0, rates if normalize else counts, np.nan)  # empty rows: no colour, no numbers
    annot = [[("" if n[i] == 0 else f"{rates[i, j]:.2f}\n{int(counts[i, j])}" if normalize else f"{int(counts[i, j])}")
              for j in range(len(n))] for i in range(len(n))]
    names = [classes[i] for i in idx] if idx is not None else classes
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.6 + 0.85 * len(names), 1.2 + 0.75 * len(names)))
    else:
        fig = ax.figure
    sns.heatmap(shown, annot=np.array(annot, dtype=object), fmt="", cmap="Blues", xticklabels=names,
                yticklabels=[f"{c} (n={int(k)})" for c, k in zip(names, n)], vmin=0,
                vmax=1 if normalize else None, cbar=False, ax=ax, square=True, annot_kws={"fontsize": 8})
    for i in np.flatnonzero(n == 0):
        ax.add_patch(Rectangle((0, i), len(names), 1, fill=False, hatch="//", edgecolor="0.75", lw=0))
        ax.text(len(names) / 2, i + 0.5, "no samples", ha="center", va="center", fontsize=9, style="italic",
                color="0.3", bbox=dict(facecolor="white", edgecolor="none", pad=1.5))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (test images of the class)")
    acc = float((np.asarray(logits).argmax(1) == y_true).mean())
    what = "rate of the row, count under it" if normalize else "counts"
    head = title or f"accuracy {acc:.3f} on {len(y_true)} images ({what})"
    ax.set_title(head + (f"\n{wrap(caption, 70)}" if caption else ""), fontsize=9)
    fig.tight_layout()
    if save_to is not None or run_dir is not None:
        save_figure(fig, save_to if save_to is not None else f"{run_dir}/confusion")
    return fig
