"""Datasets: readers for the official formats, relabelling, the synthetic generator (label sets: :mod:`ferlib.labels`)."""

from .base import FERDataset, SkipReport, SkipWarning, require_usable
from .errors import DataNotFoundError, DatasetFormatError, EmptySplitError
from .registry import (DatasetInfo, SyntheticFormat, dataset_info, dataset_root, list_datasets,
                       list_synthetic_formats, load_dataset, load_splits, register_dataset)

# Every module of ferlib/data/readers registers its dataset on import (one file per dataset).
from . import readers  # noqa: E402,F401

__all__ = ["DataNotFoundError", "DatasetFormatError", "DatasetInfo", "EmptySplitError", "FERDataset",
           "SkipReport", "SkipWarning", "SyntheticFormat", "dataset_info", "dataset_root", "list_datasets",
           "list_synthetic_formats", "load_dataset", "load_splits", "register_dataset",
           "require_usable"]
