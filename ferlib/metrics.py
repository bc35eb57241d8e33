"""Classification metrics on arrays (NumPy and scikit-learn; no torch, nothing of ferlib but the labels).

A leaf: the engine scores epochs with it, viz draws with it, results tabulates with it, and none
of them needs another to compute an accuracy.

- :func:`hard_targets`: class indices from index, soft or multi-hot targets.
- :func:`classification_metrics`, :func:`per_class_report`, :func:`per_class_accuracy`: one model
  on one label set (accuracy, mean per-class accuracy, macro F1, confusion matrix).
- :func:`class_mapping`, :func:`cross_dataset_accuracy`: a model trained on one label set scored on
  another, through the canonical order of :mod:`ferlib.labels`.
- :func:`format_mean_std`: the ``"0.8125 ± 0.0442"`` text of every mean-over-seeds table.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from ferlib.labels import LabelSet


def hard_targets(targets: np.ndarray) -> np.ndarray:
    """Class indices from index targets [N] or soft/multi-hot targets [N, C] (argmax)."""
    targets = np.asarray(targets)
    return targets.argmax(1) if targets.ndim == 2 else targets.astype(np.int64)


def classification_metrics(logits: np.ndarray, targets: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, mean class accuracy (over classes present), macro F1, per-class accuracy, confusion matrix, n."""
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
    """scikit-learn's text report (precision, recall, F1, support per class)."""
    return classification_report(hard_targets(targets), np.asarray(logits).argmax(1),
                                 labels=list(range(len(classes))), target_names=classes, zero_division=0)


def per_class_accuracy(logits, targets, classes):
    """Accuracy and support per class as a pandas DataFrame (rows in ``classes`` order; NaN for an absent class)."""
    import pandas as pd

    y = hard_targets(np.asarray(targets))
    pred = np.asarray(logits).argmax(1)
    rows = []
    for i, c in enumerate(classes):
        m = y == i
        rows.append({"class": str(c), "n": int(m.sum()), "accuracy": float((pred[m] == i).mean()) if m.any() else np.nan})
    return pd.DataFrame(rows)


def class_mapping(source_classes, target_classes) -> dict:
    """source index → target index for the classes both name (synonyms via the canonical order)."""
    return LabelSet("source", tuple(map(str, source_classes))).map_to(LabelSet("target", tuple(map(str, target_classes))))


def cross_dataset_accuracy(logits, targets, source_classes, target_classes) -> dict:
    """Accuracy of a model trained on ``source_classes`` on samples labelled in ``target_classes``.

    Target samples of a class the source lacks are dropped; the source's outputs for classes the
    target lacks are dropped before the argmax (the model chooses among the shared classes only).
    ``logits`` [N, len(source_classes)]; ``targets`` [N] target indices (or [N, C_target] soft).
    Returns accuracy, mean class accuracy, n (kept), n_dropped and the shared/dropped class names.
    """
    logits = np.asarray(logits)
    y = hard_targets(np.asarray(targets))
    mapping = class_mapping(source_classes, target_classes)       # source → target
    if not mapping:
        raise ValueError(f"no class in common between {list(source_classes)} and {list(target_classes)}")
    src_idx = np.array(sorted(mapping))
    tgt_of = np.array([mapping[i] for i in src_idx])
    keep = np.isin(y, tgt_of)
    pred = tgt_of[logits[keep][:, src_idx].argmax(1)] if keep.any() else np.zeros(0, dtype=int)
    yk = y[keep]
    per_class = {str(target_classes[t]): float((pred[yk == t] == t).mean()) for t in tgt_of if (yk == t).any()}
    return {
        "accuracy": float((pred == yk).mean()) if keep.any() else float("nan"),
        "mean_class_accuracy": float(np.mean(list(per_class.values()))) if per_class else float("nan"),
        "n": int(keep.sum()), "n_dropped": int((~keep).sum()),
        "shared_classes": [str(target_classes[t]) for t in sorted(tgt_of)],
        "dropped_target_classes": [str(c) for i, c in enumerate(target_classes) if i not in set(tgt_of)],
        "dropped_source_classes": [str(c) for i, c in enumerate(source_classes) if i not in mapping],
        "per_class_accuracy": per_class,
    }


def format_mean_std(mean: float, std: float, digits: int = 4) -> str:
    """``"0.8125 ± 0.0442"``; the mean alone when ``std`` is NaN (one seed); ``"–"`` without a mean."""
    if mean is None or not np.isfinite(mean):
        return "–"
    if std is None or not np.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
