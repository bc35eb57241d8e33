"""t-SNE of test features (scikit-learn), coloured by class."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from ferlib.metrics import hard_targets
from ferlib.run_dir import RunDir

from .io import save_figure


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


#: Below this many points a t-SNE picture says little (issue 24 asks for at least 300 test points).
MIN_POINTS = 300


def silhouette(features: np.ndarray, y: np.ndarray, seed: int = 0, max_points: int = 3000) -> float:
    """Silhouette score of the features [N, D] grouped by true class (scikit-learn, Euclidean; −1…1, higher = the
    classes are better separated); NaN with fewer than two classes. At most ``max_points`` points (seeded sample)."""
    from sklearn.metrics import silhouette_score

    y = np.asarray(y)
    if len(np.unique(y)) < 2 or len(y) < 3:
        return float("nan")
    x = np.asarray(features, dtype=np.float32).reshape(len(y), -1)
    return float(silhouette_score(x, y, sample_size=min(max_points, len(y)), random_state=seed))


def plot_tsne(run_dir=None, *, features=None, targets=None, classes=None, title: str | None = None,
              save_to=None, ax=None, seed: int = 0, max_points: int = 5000, caption: str | None = None,
              normalise: bool = False):
    """t-SNE scatter of the features in a run's ``predictions.npz`` (or given arrays). The title gives the number
    of points and the silhouette score of the features by class (:func:`silhouette`), and warns under
    :data:`MIN_POINTS`; ``caption`` (default for a run: :func:`ferlib.viz.captions.run_caption`) goes under it.
    ``normalise``: centre the embedding and scale it to a unit standard deviation (panels drawn on shared axes)."""
    from .captions import run_caption, wrap

    if run_dir is not None:
        p = RunDir(run_dir).predictions()
        features, targets, classes = p["features"], p["targets"], [str(c) for c in p["classes"]]
        caption = run_caption(run_dir) if caption is None else caption
    targets = np.asarray(targets)
    y = hard_targets(targets)
    emb, idx = tsne_embedding(features, seed, max_points)
    if normalise:
        emb = (emb - emb.mean(0)) / max(float(emb.std()), 1e-12)
    score = silhouette(np.asarray(features)[idx], y[idx], seed)
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 5))
    else:
        fig = ax.figure
    names = np.array(list(classes))[y[idx]]
    sns.scatterplot(x=emb[:, 0], y=emb[:, 1], hue=names, hue_order=list(classes), s=10, linewidth=0,
                    palette="tab10", ax=ax)
    ax.set_xticks([])
    ax.set_yticks([])
    lines = [title or "t-SNE of test features", f"silhouette {score:.3f} (features by true class), {len(idx)} points"]
    if len(idx) < MIN_POINTS:
        lines.append(f"only {len(idx)} points, too few to read much into (≥ {MIN_POINTS} wanted)")
    ax.set_title("\n".join(wrap(line, 62) for line in lines + ([caption] if caption else [])), fontsize=9)
    ax.legend(markerscale=2, fontsize=8, loc="best")
    fig.tight_layout()
    if save_to is not None or run_dir is not None:
        save_figure(fig, save_to if save_to is not None else f"{run_dir}/tsne")
    return fig
