"""FERPlus (docs/datasets.md §3): ``fer2013new.csv`` vote counts + images, 8 classes in vote-column order.

Images come from the ``FER2013Train/``, ``FER2013Valid/``, ``FER2013Test/`` PNG folders written by
microsoft/FERPlus ``generate_training_data.py`` (``layout="folders"``), from one flat folder (FERMam,
``layout="flat"``, ``image_dir=``) or from the pixels of ``fer2013.csv`` (row i ↔ row i, ``layout="pixels"``).
Without ``fer2013new.csv`` the votes are read from each folder's header-less ``label.csv``.

Label modes (FER+ paper, arXiv 1608.01041 §3, as in ``ferplus.py``): ``majority``, ``probability``,
``crossentropy``, ``multi_target`` — see :func:`process_votes`. Validation and test use ``majority``
(``eval_mode=None`` keeps the training mode on every split). FERMam's loader: ``fermam_majority`` /
``fermam_soft`` (no outlier removal, unknown/NF ignored, rows without emotion votes skipped).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from ferlib.labels import LABEL_SETS

from ..base import (ArrayDataset, FERDataset, SkipReport, check_utf8_start, decodable_indices, empty_split_error,
                   read_csv_rows, text_decode_error)
from ..errors import DatasetFormatError
from ..registry import SyntheticFormat, register_dataset
from ..synthetic_writers import write_ferplus

VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF")
CSV_COLUMNS = ("Usage", "Image name") + VOTE_COLUMNS
USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
FOLDERS = {"train": "FER2013Train", "val": "FER2013Valid", "test": "FER2013Test"}
MODES = ("majority", "probability", "crossentropy", "multi_target", "fermam_majority", "fermam_soft")
UNKNOWN, NF = 8, 9
SKIP_NO_IMAGE = "no image (empty name)"
SKIP_LABEL = "unknown/NF or ambiguous votes"
_FIX = "use microsoft/FERPlus's fer2013new.csv (header " + ",".join(CSV_COLUMNS) + ")."


def process_votes(votes, mode: str = "majority"):
    """Target for one image from its 10 vote counts, or ``None`` when the image is dropped.

    Returns float64 [8] (emotion columns, sums to 1). Steps (docs/datasets.md §3): outlier removal (counts ≤ 1
    → 0); the mode's rule; drop when the processed target's argmax is unknown / NF; cut to 8 and renormalise.
    """
    raw = np.asarray(votes, dtype=np.float64)
    if raw.shape != (10,):
        raise ValueError(f"expected 10 vote counts, got {raw.shape}")
    if mode.startswith("fermam"):
        emo = raw[:8]
        if emo.sum() <= 0:
            return None
        if mode == "fermam_majority":
            return np.eye(8)[int(np.argmax(emo))]
        return emo / emo.sum()
    v = np.where(raw <= 1, 0.0, raw)
    s = v.sum()
    out = np.zeros(10)
    if mode == "majority":
        if s > 0 and v.max() > 0.5 * s:
            out[int(np.argmax(v))] = v.max()
        else:
            return None
    elif mode in ("probability", "crossentropy"):
        rest, taken_sum, count = v.copy(), 0.0, 0
        valid = True
        while s > 0 and taken_sum < 0.75 * s and count < 3 and valid:
            level = rest.max()
            if level <= 0:
                break
            for i in range(10):
                if rest[i] == level:
                    out[i] = level
                    rest[i] = 0
                    taken_sum += level
                    count += 1
                    if i >= UNKNOWN:  # unknown / NF reached: stop, and leave it out if an emotion came first
                        valid = False
                        if out.sum() > level:
                            out[i] = 0
                            count -= 1
                        break
        if s <= 0 or out.sum() <= 0.5 * s or count > 3:
            return None
    elif mode == "multi_target":
        out = np.where(v >= 0.3 * s, v, 0.0) if s > 0 else out
        if s <= 0 or out.sum() <= 0.5 * s:
            return None
    else:
        raise ValueError(f"label_mode must be one of {MODES}, got {mode!r}")
    if int(np.argmax(out)) >= UNKNOWN:
        return None
    emo = out[:8]
    return emo / emo.sum()


class FERPlusMixin:
    """Items of a FERPlus dataset: ``probability`` mode draws one class from the target each time."""

    label_mode = "majority"

    def target(self, i: int):
        t = self.targets[i]
        if self.label_mode == "majority" or self.label_mode == "fermam_majority":
            return int(t)
        if self.label_mode == "probability":
            return int(torch.multinomial(torch.as_tensor(t, dtype=torch.float64), 1))
        return torch.as_tensor(t, dtype=torch.float32)


class FERPlusDataset(FERPlusMixin, FERDataset):
    pass


class FERPlusArrayDataset(FERPlusMixin, ArrayDataset):
    pass


def _read_fer2013new(path: Path, split: str):
    rows = read_csv_rows(path, CSV_COLUMNS, what="FERPlus fer2013new.csv", fix=_FIX)
    out = []
    for i, (line, r) in enumerate(rows):
        if r["Usage"] not in USAGE.values():
            raise DatasetFormatError(f"Usage {r['Usage']!r} is not one of {list(USAGE.values())}.", path=path,
                                     line=line, fix=_FIX)
        if r["Usage"] != USAGE[split]:
            continue
        out.append((i, line, r["Image name"], _votes(r, path, line)))
    return out


def _votes(r: dict, path, line):
    try:
        v = [int(float(r[c])) for c in VOTE_COLUMNS]
    except ValueError:
        raise DatasetFormatError("vote counts are not numbers.", path=path, line=line, fix=_FIX) from None
    if min(v) < 0:
        raise DatasetFormatError(f"negative vote count in {v}.", path=path, line=line, fix=_FIX)
    return v


def _read_label_csv(path: Path):
    """Header-less ``<name>,<10 votes>``; the older file's extra quoted box field is accepted."""
    fix = "FERPlus label.csv lines are '<name>,<10 vote counts>'."
    if not path.is_file():
        raise DatasetFormatError("FERPlus label.csv not found (and no fer2013new.csv).", path=path, fix=fix)
    check_utf8_start(path, "FERPlus label.csv", fix)
    try:
        return _label_rows(path, fix)
    except UnicodeDecodeError as err:
        raise text_decode_error(path, "FERPlus label.csv", fix) or err from None


def _label_rows(path: Path, fix: str):
    out = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        for r in reader:
            if not any(c.strip() for c in r):
                continue
            if len(r) == 12:  # name, "(x, y, w, h)", votes
                r = [r[0]] + r[2:]
            if len(r) != 11:
                raise DatasetFormatError(f"{len(r)} fields, expected 11 (or 12 with a box).", path=path,
                                         line=reader.line_num, fix=fix)
            out.append((len(out), reader.line_num, r[0].strip(),
                        _votes(dict(zip(VOTE_COLUMNS, r[1:])), path, reader.line_num)))
    return out


def detect_layout(root: Path) -> str:
    if any((root / f).is_dir() for f in FOLDERS.values()):
        return "folders"
    if (root / "fer2013.csv").is_file():
        return "pixels"
    raise DatasetFormatError(
        "no FERPlus images: found neither FER2013Train/ FER2013Valid/ FER2013Test/ nor fer2013.csv.", path=root,
        fix="run microsoft/FERPlus generate_training_data.py into this folder, or copy fer2013.csv next to "
            "fer2013new.csv (layout='pixels'), or pass layout='flat', image_dir=… .")


@register_dataset("ferplus", splits=("train", "val", "test"), eval_split="test", label_set="ferplus",
                  face_crop="grey48", detect_layout=detect_layout,
                  synthetic_format=SyntheticFormat(write_ferplus, num_classes=8))
def load_ferplus(root, split: str = "train", label_mode: str = "majority", eval_mode: str | None = "majority",
                 layout: str | None = None, image_dir=None, pixels_csv=None, check: str = "decode", transform=None,
                 **_):
    """FERPlus ``split`` with targets per ``label_mode`` (ints for majority, float [8] vectors otherwise)."""
    root = Path(root)
    if label_mode not in MODES:
        raise ValueError(f"label_mode must be one of {MODES}, got {label_mode!r}")
    mode = label_mode if split == "train" or eval_mode is None else eval_mode
    layout = layout or ("flat" if image_dir else detect_layout(root))
    new_csv = root / "fer2013new.csv"
    if new_csv.is_file():
        rows, sources = _read_fer2013new(new_csv, split), [new_csv]
    elif layout == "folders":
        rows, sources = _read_label_csv(root / FOLDERS[split] / "label.csv"), [root / FOLDERS[split] / "label.csv"]
    else:
        raise DatasetFormatError("fer2013new.csv not found.", path=new_csv,
                                 fix="download fer2013new.csv from microsoft/FERPlus into the dataset folder.")
    if not rows:
        raise DatasetFormatError(f"no rows for split {split!r} (Usage {USAGE[split]}).", path=sources[0], fix=_FIX)
    report = SkipReport()
    kept = []
    for row_id, line, name, votes in rows:
        if not name:
            report.add(SKIP_NO_IMAGE, f"{sources[0].name} line {line}")
            continue
        t = process_votes(votes, mode)
        if t is None:
            report.add(SKIP_LABEL, name)
            continue
        kept.append((row_id, name, t if mode not in ("majority", "fermam_majority") else int(np.argmax(t))))
    ls = LABEL_SETS["ferplus"]
    if layout == "pixels":
        from .fer2013 import read_pixels_csv

        pix_path = Path(pixels_csv) if pixels_csv else root / "fer2013.csv"
        images = read_pixels_csv(pix_path, rows_wanted=[k[0] for k in kept])
        ds = FERPlusArrayDataset(images, [k[0] for k in kept], [k[2] for k in kept], ls, root, split, report,
                                 transform, source_files=sources + [pix_path])
    else:
        folder = Path(image_dir) if layout == "flat" else root / FOLDERS[split]
        paths = [folder / k[1] for k in kept]
        keep = decodable_indices(paths, report, check)
        if not keep:
            raise empty_split_error(split, report, folder, missing_fix="generate the PNG folders with "
                                    "microsoft/FERPlus generate_training_data.py.")
        ds = FERPlusDataset([paths[i] for i in keep], [kept[i][2] for i in keep], ls, root, split, report,
                            transform, source_files=sources)
    ds.label_mode = mode
    ds.report_skips()
    return ds
