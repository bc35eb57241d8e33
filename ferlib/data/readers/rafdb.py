"""RAF-DB basic emotions (docs/datasets.md §1): ``EmoLabel/list_patition_label.txt`` + ``Image/aligned``.

Labels 1..7 in the file → 0..6 in RAF order (surprise, fear, disgust, happy, sad, anger, neutral).
The split comes from the name prefix ``train_`` / ``test_``, never from the row position.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from ferlib.labels import LABEL_SETS

from ..base import FERDataset, SkipReport, empty_split_error, keep_decodable, read_text
from ..errors import DatasetFormatError
from ..registry import SyntheticFormat, register_dataset
from ..synthetic_writers import write_rafdb

LIST_FILE = Path("EmoLabel") / "list_patition_label.txt"


def read_list_file(path: Path) -> list[tuple[str, int, int]]:
    """``[(name, label 0..6, line number)]`` from the list file (CRLF, BOM and blank lines tolerated).

    A name listed twice with the same label is kept once, with a warning giving the count and the first
    names; with different labels it is an error naming both lines."""
    if not path.is_file():
        raise DatasetFormatError("RAF-DB list file not found.", path=path,
                                 fix="point root at RAF-DB's basic/ folder (it holds EmoLabel/ and Image/).")
    fix = "use the official list_patition_label.txt of RAF-DB basic."
    rows, first_line, repeats = [], {}, []
    for n, line in enumerate(read_text(path, "RAF-DB list file", fix).splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DatasetFormatError(f"expected '<name>.jpg <label 1..7>', got {line!r}.", path=path, line=n,
                                     fix=fix)
        label = int(parts[1])
        if not 1 <= label <= 7:
            raise DatasetFormatError(f"label {label} is outside 1..7.", path=path, line=n,
                                     fix="RAF-DB basic labels are 1..7; compound-emotion lists are not supported.")
        name = parts[0]
        if name in first_line:
            m = first_line[name]
            if rows[m][1] != label - 1:
                raise DatasetFormatError(f"{name} is listed again with label {label}; line {rows[m][2]} gives it "
                                         f"label {rows[m][1] + 1}.", path=path, line=n, fix=fix)
            repeats.append(f"{name} (lines {rows[m][2]}, {n})")
            continue
        first_line[name] = len(rows)
        rows.append((name, label - 1, n))
    if repeats:
        warnings.warn(f"{path}: {len(repeats)} duplicate row(s) ignored, each image is used once: "
                      f"{', '.join(repeats[:3])}{', …' if len(repeats) > 3 else ''}", UserWarning, stacklevel=3)
    return rows


def _split_prefix(split: str) -> str:
    if split == "train":
        return "train_"
    if split in ("test", "val"):
        return "test_"
    raise ValueError(split)


LAYOUTS = ("list", "imagefolder", "mfer")


def detect_layout(root: Path) -> str:
    """``list`` (official EmoLabel + Image/), ``imagefolder`` (EMO-Net: train/0..6) or ``mfer``
    (flat train/ and valid/ folders of ``*_aligned.jpg``, labels from the list file)."""
    if (root / LIST_FILE).is_file() and (root / "Image").is_dir():
        return "list"
    if (root / "train" / "0").is_dir() or (root / "test" / "0").is_dir():
        return "imagefolder"
    if (root / "train").is_dir() and (root / "valid").is_dir():
        return "mfer"
    if (root / LIST_FILE).is_file():  # list without images: the reader then says which folder is missing
        return "list"
    raise DatasetFormatError(
        "not a RAF-DB folder: found neither EmoLabel/list_patition_label.txt + Image/, nor train/0..6 "
        "(EMO-Net), nor train/ + valid/ (MFER).", path=root,
        fix="point root at RAF-DB's basic/ folder (it holds EmoLabel/ and Image/aligned/), or pass layout=.")


def _finish(paths, targets, root, split, img_dir, check, transform, n_rows, sources=()):
    report = SkipReport()
    paths, targets = keep_decodable(paths, targets, report, check)
    if not paths:
        raise empty_split_error(split, report, img_dir, missing_fix=f"extract RAF-DB's images into {img_dir}.")
    ds = FERDataset(paths, targets, LABEL_SETS["rafdb"], root, split, report, transform, source_files=sources)
    ds.report_skips()
    return ds


def _split_rows(root: Path, split: str, list_file: Path):
    rows = read_list_file(list_file)
    prefix = _split_prefix(split)
    rows = [r for r in rows if r[0].startswith(prefix)]
    if not rows:
        raise DatasetFormatError(f"no rows named {prefix}* in the list file (empty split {split!r}).",
                                 path=list_file, fix="check that the file is RAF-DB's basic list.")
    return rows


@register_dataset("rafdb", splits=("train", "test"), eval_split="test", label_set="rafdb", face_crop="aligned",
                  detect_layout=detect_layout, synthetic_format=SyntheticFormat(write_rafdb, num_classes=7))
def load_rafdb(root, split: str = "train", variant: str = "aligned", check: str = "decode", transform=None,
               layout: str | None = None, list_file=None, **_):
    """RAF-DB basic (docs/datasets.md §1), RAF order (surprise, fear, disgust, happy, sad, anger, neutral).

    Layouts (auto-detected, ``layout=`` forces one): ``list`` — official list + ``Image/<variant>``
    (``variant`` = ``"aligned"``, 100×100 crops, default, or ``"original"``); ``imagefolder`` — EMO-Net's
    ``train/0..6``, ``test/0..6`` (folder = file label − 1); ``mfer`` — MFER's flat ``train/``, ``valid/``
    of ``*_aligned.jpg`` with labels from the list file (``list_file=``, default ``EmoLabel/…``).
    ``val`` is accepted and means the test split (RAF-DB has no validation set; papers report on test).
    """
    root = Path(root)
    layout = layout or detect_layout(root)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "imagefolder":
        from .imagefolder import build_imagefolder

        return build_imagefolder(root, "test" if split == "val" else split, [str(i) for i in range(7)],
                                 LABEL_SETS["rafdb"], check=check, transform=transform, dataset_name="RAF-DB")
    lf = Path(list_file) if list_file else root / LIST_FILE
    rows = _split_rows(root, split, lf)
    if layout == "mfer":
        img_dir = root / ("train" if split == "train" else "valid")
        paths = [img_dir / name.replace(".jpg", "_aligned.jpg") for name, _, _ in rows]
        return _finish(paths, [t for _, t, _ in rows], root, split, img_dir, check, transform, len(rows), [lf])
    img_dir = root / "Image" / variant
    if variant == "aligned":
        paths = [img_dir / name.replace(".jpg", "_aligned.jpg") for name, _, _ in rows]
    elif variant == "original":
        paths = [img_dir / name for name, _, _ in rows]
    else:
        raise ValueError(f"variant must be 'aligned' or 'original', got {variant!r}")
    return _finish(paths, [t for _, t, _ in rows], root, split, img_dir, check, transform, len(rows), [lf])
