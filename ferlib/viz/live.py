"""Live training curves in a notebook: a callback for :func:`ferlib.engine.fit` / :func:`ferlib.engine.train`.

``fit`` calls ``callback(row, result)`` after every epoch with the row it appended to ``metrics.jsonl``
(``epoch``, ``train_loss``, ``train_accuracy``, ``eval_accuracy``, ...) and the evaluation result.
:class:`LivePlot` redraws one loss / accuracy figure in place (an IPython display handle), so a training
cell shows the tqdm bar and one updating picture instead of a growing list of figures::

    from ferlib.viz.live import LivePlot
    run = train("baseline", "synthetic", callbacks=[LivePlot()])

Outside a notebook nothing is displayed; ``save_to`` writes the figure after every epoch in any case.
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

#: (metric key in the metrics row, label, panel): panel 0 = loss, 1 = accuracy.
SERIES = (("train_loss", "train loss", 0), ("train_accuracy", "train", 1), ("eval_accuracy", "eval", 1),
          ("eval_mean_class_accuracy", "eval mean-class", 1))


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    ip = shell.get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


class LivePlot:
    """Per-epoch loss and accuracy curves, redrawn in one notebook output after each epoch.

    ``title``: text above the curves; ``save_to``: a PNG path rewritten after each epoch (None = none);
    ``figsize``: inches. ``rows`` keeps every metrics row received.
    """

    def __init__(self, title: str | None = None, save_to=None, figsize=(8.0, 3.0)):
        self.title = title
        self.save_to = Path(save_to) if save_to is not None else None
        self.figsize = figsize
        self.rows: list[dict] = []
        self._handle = None
        if _in_notebook():
            from IPython.display import display

            self._handle = display({"text/plain": "live curves: waiting for the end of the first epoch"},
                                   raw=True, display_id=True)

    def __call__(self, row: dict, result: dict | None = None) -> None:
        self.rows.append(dict(row))
        fig = self.figure()
        png = self.png(fig)
        if self.save_to is not None:
            self.save_to.parent.mkdir(parents=True, exist_ok=True)
            self.save_to.write_bytes(png)
        if self._handle is not None:
            self._handle.update({"image/png": png, "text/plain": self.summary()}, raw=True)

    def summary(self) -> str:
        """One line about the latest epoch (the text form of the display)."""
        if not self.rows:
            return "no epoch finished yet"
        r = self.rows[-1]
        return (f"epoch {r.get('epoch')}: train loss {r.get('train_loss', float('nan')):.4f}, "
                f"train acc {r.get('train_accuracy', float('nan')):.3f}, eval acc {r.get('eval_accuracy', float('nan')):.3f}")

    def figure(self) -> Figure:
        """A new matplotlib Figure (not registered with pyplot, so the notebook does not show it twice)."""
        fig = Figure(figsize=self.figsize)
        axes = fig.subplots(1, 2)
        epochs = [r.get("epoch") for r in self.rows]
        for key, label, panel in SERIES:
            if not any(key in r for r in self.rows):
                continue
            axes[panel].plot(epochs, [r.get(key, float("nan")) for r in self.rows], marker="o", label=label)
        axes[0].set_ylabel("loss")
        axes[1].set_ylabel("accuracy")
        axes[1].set_ylim(0, 1)
        axes[1].legend(loc="lower right", fontsize=8)
        for ax in axes:
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
            ax.set_xlim(0.5, max(epochs, default=1) + 0.5)
            ax.grid(alpha=0.3)
        fig.suptitle(f"{self.title + ' — ' if self.title else ''}{self.summary()}", fontsize=9)
        fig.tight_layout()
        return fig

    @staticmethod
    def png(fig: Figure) -> bytes:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        return buf.getvalue()
