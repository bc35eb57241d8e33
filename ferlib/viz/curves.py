"""Training curves from ``metrics.jsonl``."""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from ferlib.run_dir import RunDir

from .captions import run_caption, wrap
from .io import save_figure


def plot_curves(run_dir, save_to=None):
    """Loss and accuracy per epoch (train accuracy and evaluation accuracy)."""
    rows = RunDir(run_dir).metrics()
    ep = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.plot(ep, [r["train_loss"] for r in rows], marker="o")
    a.set_xlabel("epoch")
    a.set_ylabel("train loss")
    b.plot(ep, [r["train_accuracy"] for r in rows], marker="o", label="train")
    b.plot(ep, [r["eval_accuracy"] for r in rows], marker="o", label="eval")
    b.set_xlabel("epoch")
    b.set_ylabel("accuracy")
    b.legend()
    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(wrap(run_caption(run_dir), 110), fontsize=8)
    fig.tight_layout()
    save_figure(fig, save_to if save_to is not None else f"{run_dir}/curves")
    return fig
