"""Datasets: readers for the official formats, label sets, the synthetic generator."""

from .base import FERDataset, SkipReport, SkipWarning, require_usable
from .errors import DataNotFoundError, DatasetFormatError, EmptySplitError
from .labels import CANONICAL, LABEL_SETS, LabelSet
from .registry import (DatasetInfo, SyntheticFormat, dataset_info, dataset_root, list_datasets,
                       list_synthetic_formats, load_dataset, load_splits, register_dataset)

# Every module of ferlib/data/readers registers its dataset on import (one file per dataset).
from . import readers  # noqa: E402,F401

__all__ = ["CANONICAL", "DataNotFoundError", "DatasetFormatError", "DatasetInfo", "EmptySplitError", "FERDataset",
           "LABEL_SETS", "LabelSet", "SkipReport", "SkipWarning", "SyntheticFormat", "dataset_info", "dataset_root", "list_datasets",
           "list_synthetic_formats", "load_dataset", "load_splits", "register_dataset",
           "require_usable"]
