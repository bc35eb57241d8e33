"""Datasets: readers for the official formats, label sets, the synthetic generator."""

from .base import FERDataset, SkipReport, SkipWarning, require_usable
from .errors import DatasetFormatError, EmptySplitError
from .labels import CANONICAL, LABEL_SETS, LabelSet
from .registry import DEFAULT_SPLITS, list_datasets, load_dataset, load_splits, register_dataset

# Reader modules register themselves on import (a missing module is an ImportError, never a silent gap).
from . import affectnet, fer2013, ferplus, imagefolder, rafdb, synthetic_reader  # noqa: E402,F401

__all__ = ["CANONICAL", "DatasetFormatError", "EmptySplitError", "FERDataset", "LABEL_SETS", "LabelSet", "SkipReport",
           "SkipWarning", "DEFAULT_SPLITS", "list_datasets", "load_dataset", "load_splits", "register_dataset",
           "require_usable"]
