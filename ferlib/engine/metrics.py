"""Classification metrics (scikit-learn): accuracy, mean per-class accuracy, macro F1, confusion matrix."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score


def hard_targets(targets: np.ndarray) -> np.ndarray:
    """Class indices from index targets [N] or soft/multi-hot targets [N, C] (argmax)."""
    targets = np.asarray(targets)
    return targets.argmax(1) if targets.ndim == 2 else targets.astype(np.int64)


def classification_metrics(logits: np.ndarray, targets: np.ndarray, classes: list[str]) -> dict:
    y_true = hard_targets(targets)
    y_pred = np.asarray(logits).argmax(1)
    labels = list(range(len(classes)))
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    support = cm.sum(1)
    per_class = np.divide(np.diag(cm), support, out=np.zeros(len(labels)), where=support > 0)
    present = support > 0
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "mean_class_accuracy": float(per_class[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "per_class_accuracy": {c: float(a) for c, a in zip(classes, per_class)},
        "confusion_matrix": cm.tolist(),
        "n": int(len(y_true)),
    }


def per_class_report(logits: np.ndarray, targets: np.ndarray, classes: list[str]) -> str:
    return classification_report(hard_targets(targets), np.asarray(logits).argmax(1),
                                 labels=list(range(len(classes))), target_names=classes, zero_division=0)
