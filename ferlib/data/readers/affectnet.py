"""AffectNet, manually annotated part (docs/datasets.md §2): ``affectnet`` (7 classes) and ``affectnet8``.

Layouts (auto-detected from ``root``; ``layout=`` forces one):

- ``csv`` — official ``Manually_Annotated_file_lists/{training,validation}.csv`` + ``Manually_Annotated_Images/``;
  the face box is cropped on load (``crop_margin`` enlarges it), codes 8–10 (none / uncertain / non-face) are
  skipped and counted, code 7 (contempt) is filtered out for 7 classes. Native code order.
- ``alpha`` — FERMam's 8-class ImageFolder ``train/``, ``valid/`` with folders named by emotion, indexed
  alphabetically (0 anger … 7 surprise); 7 classes use the alphabetical order without contempt.
- ``numeric`` — ImageFolder with folders ``0..7`` = native codes.
- ``fermam7`` — FERMam's ``train_set/train_annotations_7class.txt`` (+ ``valid_set/…``), ``<file> <code>``.
- ``list`` — EMO-Net's ``val8.txt`` / ``val7_origin.txt``: ``<subdir>/<file> <label>`` relative to
  ``Manually_Annotated_Images/`` (``list_file=`` required). val7 uses AffectNet's native codes; val8 relabels
  the same images into RAF-DB order + contempt (``LABEL_SETS["emonet_affectnet8"]``), the order of the
  released 8-class checkpoint (docs/papers/emonet.md §7, verified there against the native labels; docs/datasets.md §2's
  reading of val8 as native is the unverified alternative, with the same val8→val7 code map).

``val`` and ``test`` both mean the validation set (papers report on it).
"""
from __future__ import annotations

from pathlib import Path

from ferlib.labels import LABEL_SETS

from ..base import (CroppedDataset, FERDataset, SkipReport, decodable_indices, empty_split_error, read_csv_rows,
                   read_text)
from ..errors import DatasetFormatError
from .imagefolder import build_imagefolder, find_split_dir
from ..registry import SyntheticFormat, register_dataset
from ..synthetic_writers import write_affectnet

LISTS = "Manually_Annotated_file_lists"
IMAGES = "Manually_Annotated_Images"
CSV_COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
               "expression", "valence", "arousal")
EXPRESSION_CODES = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt", "none",
                    "uncertain", "non-face")
LAYOUTS = ("csv", "alpha", "numeric", "fermam7", "list")
_FIX = "use the official Manually_Annotated_file_lists/*.csv of AffectNet (header " + ",".join(CSV_COLUMNS) + ")."
SKIP_CODES = "code 8-10 (none/uncertain/non-face)"
SKIP_CONTEMPT = "contempt (not in 7 classes)"


def detect_layout(root: Path) -> str:
    if (root / LISTS).is_dir():
        return "csv"
    if (root / "train_set").is_dir() or (root / "valid_set").is_dir():
        return "fermam7"
    for split in ("train", "valid", "val"):
        d = root / split
        if d.is_dir():
            names = [x.name for x in d.iterdir() if x.is_dir()]
            if names:
                return "numeric" if all(n.isdigit() for n in names) else "alpha"
    raise DatasetFormatError(
        f"not an AffectNet folder: found neither {LISTS}/ (official), train_set/ (FERMam 7-class) nor "
        "train/<class>/ (ImageFolder).", path=root,
        fix=f"point root at the folder holding {LISTS}/ and {IMAGES}/, or pass layout=.")


def _csv(root: Path, split: str, num_classes: int, check: str, transform, crop_margin: float, crop: bool):
    name = "training.csv" if split == "train" else "validation.csv"
    path = root / LISTS / name
    rows = read_csv_rows(path, CSV_COLUMNS, what="AffectNet list", fix=_FIX)
    if not rows:
        raise DatasetFormatError(f"no data rows (empty split {split!r}).", path=path, fix=_FIX)
    report = SkipReport()
    paths, targets, boxes, landmarks = [], [], [], []
    for line, r in rows:
        try:
            code = int(r["expression"])
            box = [float(r[k]) for k in ("face_x", "face_y", "face_width", "face_height")]
        except ValueError:
            raise DatasetFormatError(f"expression {r['expression']!r} / face box is not a number.", path=path,
                                     line=line, fix=_FIX) from None
        if not 0 <= code <= 10:
            raise DatasetFormatError(f"expression code {code} is outside 0..10.", path=path, line=line, fix=_FIX)
        rel = r["subDirectory_filePath"]
        if code >= 8:
            report.add(SKIP_CODES, rel)
            continue
        if code >= num_classes:
            report.add(SKIP_CONTEMPT, rel)
            continue
        paths.append(root / IMAGES / rel)
        targets.append(code)
        boxes.append(box)
        landmarks.append(r["facial_landmarks"])
    keep = decodable_indices(paths, report, check)
    if not keep:
        raise empty_split_error(split, report, root / IMAGES,
                                missing_fix=f"extract {IMAGES}/ next to {LISTS}/ under {root}.")
    ds = CroppedDataset([paths[i] for i in keep], [targets[i] for i in keep],
                        LABEL_SETS["affectnet8" if num_classes == 8 else "affectnet"], root, split,
                        [boxes[i] for i in keep], report, transform, margin=crop_margin, crop=crop,
                        landmarks=[landmarks[i] for i in keep], source_files=[path])
    ds.report_skips()
    return ds


def _read_pairs(lst: Path, split: str, n_codes: int, form: str, fix: str) -> list[tuple[str, int]]:
    """``[(name, code)]`` from a space-separated ``<name> <code>`` list; codes must lie in 0..n_codes-1."""
    rows = []
    for n, line in enumerate(read_text(lst, "AffectNet list", fix).splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit():
            raise DatasetFormatError(f"expected {form}, got {line!r}.", path=lst, line=n, fix=fix)
        code = int(parts[1])
        if code >= n_codes:
            raise DatasetFormatError(f"code {code} is outside 0..{n_codes - 1}.", path=lst, line=n, fix=fix)
        rows.append((parts[0], code))
    if not rows:
        raise DatasetFormatError(f"empty split {split!r}.", path=lst, fix=fix)
    return rows


def _fermam7(root: Path, split: str, check: str, transform):
    folder = root / ("train_set" if split == "train" else "valid_set")
    lst = folder / ("train_annotations_7class.txt" if split == "train" else "valid_annotations_7class.txt")
    fix = "FERMam's 7-class list holds '<file name> <code 0..6>' per line."
    if not lst.is_file():
        raise DatasetFormatError("FERMam 7-class annotation list not found.", path=lst, fix=fix)
    rows = _read_pairs(lst, split, 7, "'<file> <code>'", fix)
    paths, targets = [folder / "images" / name for name, _ in rows], [code for _, code in rows]
    report = SkipReport()
    keep = decodable_indices(paths, report, check)
    ds = FERDataset([paths[i] for i in keep], [targets[i] for i in keep], LABEL_SETS["affectnet"], root, split,
                    report, transform, source_files=[lst])
    ds.report_skips()
    return ds


def _list(root: Path, split: str, list_file, num_classes: int, check: str, transform):
    """EMO-Net-style list of ``<subdir>/<file> <label>`` lines (images uncropped, as its loader reads them)."""
    lst = Path(list_file)
    fix = "an EMO-Net AffectNet list holds '<subdir>/<file> <label>' per line."
    if not lst.is_file():
        raise DatasetFormatError("AffectNet list file not found.", path=lst, fix=fix)
    rows = _read_pairs(lst, split, num_classes, "'<subdir>/<file> <label>'", fix)
    paths, targets = [root / IMAGES / name for name, _ in rows], [code for _, code in rows]
    report = SkipReport()
    keep = decodable_indices(paths, report, check)
    ls = LABEL_SETS["emonet_affectnet8" if num_classes == 8 else "affectnet"]
    ds = FERDataset([paths[i] for i in keep], [targets[i] for i in keep], ls, root, split, report, transform,
                    source_files=[lst])
    ds.report_skips()
    return ds


def load_affectnet_any(root, split: str, num_classes: int, layout: str | None = None, check: str = "decode",
                       transform=None, crop_margin: float = 0.0, crop: bool = True, list_file=None):
    root = Path(root)
    if list_file is not None:
        layout = layout or "list"
    layout = layout or detect_layout(root)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    split = "train" if split == "train" else "val"
    if layout == "csv":
        return _csv(root, split, num_classes, check, transform, crop_margin, crop)
    if layout == "list":
        if list_file is None:
            raise ValueError("layout='list' needs list_file= (e.g. EMO-Net's datasets/val8.txt)")
        return _list(root, split, list_file, num_classes, check, transform)
    if layout == "fermam7":
        if num_classes != 7:
            raise DatasetFormatError("the FERMam 7-class layout has no contempt images.", path=root,
                                     fix="use load_dataset('affectnet', ...) for this layout.")
        return _fermam7(root, split, check, transform)
    if layout == "alpha":
        ls = LABEL_SETS["affectnet8_alpha" if num_classes == 8 else "affectnet7_alpha"]
        folders, ignore = list(ls.names), () if num_classes == 8 else ("contempt",)
    else:
        ls = LABEL_SETS["affectnet8" if num_classes == 8 else "affectnet"]
        folders, ignore = [str(i) for i in range(num_classes)], () if num_classes == 8 else ("7",)
    find_split_dir(root, split, fallback=("test",) if split == "val" else ())
    return build_imagefolder(root, split, folders, ls, check=check, transform=transform, ignore=ignore,
                             fallback=("test",) if split == "val" else (), dataset_name="AffectNet")


@register_dataset("affectnet", splits=("train", "val"), eval_split="val", label_set="affectnet", face_crop="box",
                  detect_layout=detect_layout, synthetic_format=SyntheticFormat(write_affectnet))
def load_affectnet(root, split: str = "train", layout: str | None = None, check: str = "decode", transform=None,
                   crop_margin: float = 0.0, crop: bool = True, list_file=None, **_):
    """AffectNet-7 (native codes 0 neutral … 6 anger; contempt filtered). See the module docstring."""
    return load_affectnet_any(root, split, 7, layout, check, transform, crop_margin, crop, list_file)


@register_dataset("affectnet8", splits=("train", "val"), eval_split="val", folder="affectnet",
                  label_set="affectnet8", face_crop="box", detect_layout=detect_layout,
                  synthetic_format=SyntheticFormat(write_affectnet, num_classes=8))
def load_affectnet8(root, split: str = "train", layout: str | None = None, check: str = "decode", transform=None,
                    crop_margin: float = 0.0, crop: bool = True, list_file=None, **_):
    """AffectNet-8 (native codes 0..7; alphabetical order for the ``alpha`` layout)."""
    return load_affectnet_any(root, split, 8, layout, check, transform, crop_margin, crop, list_file)
