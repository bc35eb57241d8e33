"""t-SNE of test features (scikit-learn), coloured by class."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from ferlib.metrics import hard_targets

from .io import load_predictions, save_figure


def tsne_embedding(features: np.ndarray, seed: int = 0, max_points: int = 5000, perplexity: float = 30.0):
    """2-D t-SNE of ``features`` [N, D] (PCA to 50 dims first); returns (embedding [M,2], kept indices)."""
    rng = np.random.default_rng(seed)
    idx = np.arange(len(features))
    if len(idx) > max_points:
        idx = np.sort(rng.choice(idx, max_points, replace=False))
    x = np.asarray(features, dtype=np.float32)[idx]
    if x.shape[1] > 50 and len(x) > 50:
        x = PCA(50, random_state=seed).fit_transform(x)
    perplexity = min(perplexity, max(2.0, (len(x) - 1) / 3))
    emb = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    return emb, idx


def plot_tsne(run_dir=None, *, features=None, targets=None, classes=None, title: str | None = None,
              save_to=None, ax=None, seed: int = 0, max_points: int = 5000):
    """t-SNE scatter of the features in a run's ``predictions.npz`` (or given arrays)."""
    if run_dir is not None:
        p = load_predictions(run_dir)
        features, targets, classes = p["features"], p["targets"], [str(c) for c in p["classes"]]
    targets = np.asarray(targets)
    y = hard_targets(targets)
    emb, idx = tsne_embedding(features, seed, max_points)
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 5))
    else:
        fig = ax.figure
    names = np.array(list(classes))[y[idx]]
    sns.scatterplot(x=emb[:, 0], y=emb[:, 1], hue=names, hue_order=list(classes), s=10, linewidth=0,
                    palette="tab10", ax=ax)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or "t-SNE of test features")
    ax.legend(markerscale=2, fontsize=8, loc="best")
    fig.tight_layout()
    if save_to is not None or run_dir is not None:
        save_figure(fig, save_to if save_to is not None else f"{run_dir}/tsne")
    return fig
