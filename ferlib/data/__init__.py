"""Datasets: readers for the official formats, label sets, the synthetic generator."""
import importlib
import importlib.util

from .base import FERDataset, SkipReport, SkipWarning, require_usable
from .errors import DatasetFormatError, EmptySplitError
from .labels import CANONICAL, LABEL_SETS, LabelSet
from .registry import DEFAULT_SPLITS, list_datasets, load_dataset, load_splits, register_dataset

# Reader modules register themselves on import.
for _name in ("rafdb", "synthetic_reader", "affectnet", "ferplus", "fer2013", "imagefolder"):
    if importlib.util.find_spec(f"{__name__}.{_name}") is not None:
        importlib.import_module(f"{__name__}.{_name}")

__all__ = ["CANONICAL", "DatasetFormatError", "EmptySplitError", "FERDataset", "LABEL_SETS", "LabelSet", "SkipReport",
           "SkipWarning", "DEFAULT_SPLITS", "list_datasets", "load_dataset", "load_splits", "register_dataset",
           "require_usable"]
