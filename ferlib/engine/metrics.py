"""The engine's metrics, kept at their old import path: they live in the leaf :mod:`ferlib.metrics`
(NumPy / scikit-learn only), so that viz and results compute accuracies without importing the engine."""
from ferlib.metrics import classification_metrics, hard_targets, per_class_report

__all__ = ["classification_metrics", "hard_targets", "per_class_report"]
