"""Figures from run directories: confusion matrices, t-SNE, curves (PNG + SVG)."""
from .confusion import confusion, plot_confusion
from .curves import plot_curves
from .io import save_figure
from .samples import plot_samples
from .tsne import plot_tsne, tsne_embedding

__all__ = ["confusion", "plot_confusion", "plot_curves", "plot_samples", "plot_tsne",
           "save_figure", "tsne_embedding"]
