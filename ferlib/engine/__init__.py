"""The one training / evaluation engine for all five papers."""
from .checkpoint import atomic_save, load_checkpoint, save_checkpoint
from .loop import FitOptions, evaluate, fit, predict
from .metrics import classification_metrics
from .run import DataNotFoundError, RunResult, load_run, load_splits, train

__all__ = ["DataNotFoundError", "FitOptions", "RunResult", "atomic_save", "classification_metrics", "evaluate",
           "fit", "load_checkpoint", "load_run", "load_splits", "predict", "save_checkpoint", "train"]
