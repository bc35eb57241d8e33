"""Sample grids: a few images per class from any ferlib dataset."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .io import save_figure


def plot_samples(dataset, per_class: int = 6, seed: int = 0, save_to=None):
    """A grid with one row per class and ``per_class`` random images of it (uint8 items of the dataset)."""
    from ferlib.metrics import hard_targets

    y = hard_targets(np.array([np.asarray(t) for t in dataset.targets]))
    rng = np.random.default_rng(seed)
    classes = list(dataset.classes)
    fig, axes = plt.subplots(len(classes), per_class, figsize=(1.3 * per_class, 1.35 * len(classes)), squeeze=False)
    for c, name in enumerate(classes):
        idx = np.flatnonzero(y == c)
        pick = rng.choice(idx, min(per_class, len(idx)), replace=False) if len(idx) else []
        for j, ax in enumerate(axes[c]):
            ax.axis("off")
            if j < len(pick):
                img = dataset[int(pick[j])][0]
                ax.imshow(img.permute(1, 2, 0).numpy())
        axes[c][0].set_title(name, fontsize=9, loc="left")
    fig.tight_layout()
    if save_to is not None:
        save_figure(fig, save_to)
    return fig
