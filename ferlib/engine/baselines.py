"""Non-deep baselines that calibrate a dataset's difficulty (e.g. the synthetic set must not be trivial)."""
from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF


def _pixels(dataset, size: int) -> tuple[np.ndarray, np.ndarray]:
    from ferlib.metrics import hard_targets

    x = np.stack([TF.resize(dataset[i][0], [size, size], antialias=True).float().flatten().numpy() / 255.0
                  for i in range(len(dataset))])
    y = hard_targets(np.array([np.asarray(t) for t in dataset.targets]))
    return x, y


def pixel_logistic_regression(train, test, size: int = 24, max_iter: int = 1000) -> float:
    """Test accuracy of a logistic regression on raw (resized, standardised) pixels.

    ``max_iter``: lbfgs iterations allowed. On the default synthetic set (2400 × 1728 standardised pixels, C 0.1)
    lbfgs converges after about 400; 200 stopped it short (scikit-learn's ConvergenceWarning)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xtr, ytr = _pixels(train, size)
    xte, yte = _pixels(test, size)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=0.1))
    with torch.no_grad():
        clf.fit(xtr, ytr)
    return float((clf.predict(xte) == yte).mean())
