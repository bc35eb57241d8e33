"""FER2013 (docs/datasets.md §4): 48×48 grayscale faces stored as pixel strings in a CSV, held in memory.

Files (in ``root`` or ``root/fer2013/``, auto-detected in this order; ``layout=`` forces one):
``fer2013.csv`` (``emotion,pixels,Usage``), ``icml_face_data.csv`` (``emotion, Usage, pixels``, names
matched after stripping), Kaggle ``train.csv`` (``emotion,pixels``) + ``test.csv`` (``pixels`` only:
targets are ``None``, items return −1). Splits: train = Training, val = PublicTest, test = PrivateTest.
``samples`` are data-row indices (0-based) in the file. Classes: 0 angry … 6 neutral.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ferlib.labels import LABEL_SETS

from ..base import ArrayDataset, SkipReport, read_csv_rows
from ..errors import DatasetFormatError
from ..registry import SyntheticFormat, register_dataset
from ..synthetic_writers import write_fer2013

N_PIXELS = 48 * 48
USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
FILES = {"fer2013": "fer2013.csv", "icml": "icml_face_data.csv", "kaggle": "train.csv"}
_FIX = "use Kaggle's fer2013.csv (header emotion,pixels,Usage) or icml_face_data.csv, unmodified."


def parse_pixels(text: str, path, line: int) -> np.ndarray:
    """One ``pixels`` field → uint8 [48,48]; raises naming file and line on a wrong count or value."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # older numpy warns on a bad token
            fast = np.fromstring(text, dtype=np.int32, sep=" ")  # 3× faster than split(); same on valid rows
    except ValueError:  # numpy ≥ 2.3 raises on a bad token: the slow path below says which problem
        fast = np.empty(0, np.int32)
    if fast.size == N_PIXELS and text.count(" ") + 1 >= N_PIXELS and fast.min() >= 0 and fast.max() <= 255:
        return fast.astype(np.uint8).reshape(48, 48)
    vals = text.split()
    if len(vals) != N_PIXELS:
        raise DatasetFormatError(f"pixels has {len(vals)} values, expected {N_PIXELS} (48×48).", path=path,
                                 line=line, fix=_FIX)
    try:
        arr = np.array(vals, dtype=np.int32)
    except ValueError:
        raise DatasetFormatError("pixels holds a value that is not an integer.", path=path, line=line,
                                 fix=_FIX) from None
    if arr.min() < 0 or arr.max() > 255:
        raise DatasetFormatError("pixel values must be 0..255.", path=path, line=line, fix=_FIX)
    return arr.astype(np.uint8).reshape(48, 48)


def _label(text: str, path, line: int) -> int:
    try:
        e = int(text)
    except ValueError:
        raise DatasetFormatError(f"emotion {text!r} is not an integer.", path=path, line=line, fix=_FIX) from None
    if not 0 <= e <= 6:
        raise DatasetFormatError(f"emotion {e} is outside 0..6.", path=path, line=line, fix=_FIX)
    return e


def read_pixels_csv(path: Path, rows_wanted=None) -> np.ndarray:
    """uint8 [N,48,48] for the data rows ``rows_wanted`` (0-based; all rows when None) of a pixels CSV."""
    rows = read_csv_rows(path, ("pixels",), what="FER2013 pixels file", fix=_FIX)
    idx = range(len(rows)) if rows_wanted is None else rows_wanted
    out = np.empty((len(idx), 48, 48), np.uint8)
    for k, i in enumerate(idx):
        if i >= len(rows):
            raise DatasetFormatError(f"has {len(rows)} data rows, row {i} was asked for (row i of fer2013new.csv "
                                     "describes row i of fer2013.csv).", path=path,
                                     fix="use the fer2013.csv that fer2013new.csv was made from.")
        line, r = rows[i]
        out[k] = parse_pixels(r["pixels"], path, line)
    return out


def detect_layout(root: Path) -> tuple[str, Path]:
    for base in (root, root / "fer2013"):
        for layout in ("fer2013", "icml", "kaggle"):
            if (base / FILES[layout]).is_file():
                return layout, base
    raise DatasetFormatError("no fer2013.csv, icml_face_data.csv or train.csv/test.csv.", path=root,
                             fix="put Kaggle's fer2013.csv in this folder (torchvision's root/fer2013/ works too).")


@register_dataset("fer2013", splits=("train", "val", "test"), eval_split="test", label_set="fer2013",
                  face_crop="grey48", detect_layout=detect_layout,
                  synthetic_format=SyntheticFormat(write_fer2013, num_classes=7))
def load_fer2013(root, split: str = "train", layout: str | None = None, transform=None, **_):
    root = Path(root)
    if layout is None:
        layout, base = detect_layout(root)
    else:
        base = root / "fer2013" if not (root / FILES.get(layout, "")).is_file() and (root / "fer2013").is_dir() \
            else root
    if layout == "kaggle":
        if split == "val":
            raise DatasetFormatError("Kaggle's train.csv/test.csv have no validation rows (empty split 'val').",
                                     path=base, fix="use fer2013.csv or icml_face_data.csv for PublicTest/PrivateTest.")
        path = base / ("train.csv" if split == "train" else "test.csv")
        cols = ("emotion", "pixels") if split == "train" else ("pixels",)
        rows = read_csv_rows(path, cols, what="Kaggle FER2013 file", fix=_FIX)
        selected = list(enumerate(rows))
    elif layout in ("fer2013", "icml"):
        path = base / FILES[layout]
        rows = read_csv_rows(path, ("emotion", "pixels", "Usage"), what="FER2013 file", fix=_FIX)
        for line, r in rows:
            if r["Usage"] not in USAGE.values():
                raise DatasetFormatError(f"Usage {r['Usage']!r} is not one of {list(USAGE.values())}.", path=path,
                                         line=line, fix=_FIX)
            _label(r["emotion"], path, line)  # every row, so a bad label is found whichever split is read
        selected = [(i, (line, r)) for i, (line, r) in enumerate(rows) if r["Usage"] == USAGE[split]]
    else:
        raise ValueError(f"layout must be fer2013, icml or kaggle, got {layout!r}")
    if not selected:
        raise DatasetFormatError(f"no rows for split {split!r}.", path=path, fix=_FIX)
    images = np.empty((len(selected), 48, 48), np.uint8)
    targets = []
    for k, (i, (line, r)) in enumerate(selected):
        targets.append(_label(r["emotion"], path, line) if "emotion" in r else None)
        images[k] = parse_pixels(r["pixels"], path, line)
    ds = ArrayDataset(images, [i for i, _ in selected], targets, LABEL_SETS["fer2013"], root, split, SkipReport(),
                      transform, source_files=[path])
    ds.has_labels = targets[0] is not None
    return ds
