"""RAF-DB basic emotions (datasets.md §1): ``EmoLabel/list_patition_label.txt`` + ``Image/aligned``.

Labels 1..7 in the file → 0..6 in RAF order (surprise, fear, disgust, happy, sad, anger, neutral).
The split comes from the name prefix ``train_`` / ``test_``, never from the row position.
"""
from __future__ import annotations

from pathlib import Path

from .base import FERDataset, SkipReport, keep_decodable
from .errors import DatasetFormatError
from .labels import LABEL_SETS
from .registry import register_dataset

LIST_FILE = Path("EmoLabel") / "list_patition_label.txt"


def read_list_file(path: Path) -> list[tuple[str, int, int]]:
    """``[(name, label 0..6, line number)]`` from the list file (CRLF, BOM and blank lines tolerated)."""
    if not path.is_file():
        raise DatasetFormatError("RAF-DB list file not found.", path=path,
                                 fix="point root at RAF-DB's basic/ folder (it holds EmoLabel/ and Image/).")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DatasetFormatError(f"expected '<name>.jpg <label 1..7>', got {line!r}.", path=path, line=n,
                                     fix="use the official list_patition_label.txt of RAF-DB basic.")
        label = int(parts[1])
        if not 1 <= label <= 7:
            raise DatasetFormatError(f"label {label} is outside 1..7.", path=path, line=n,
                                     fix="RAF-DB basic labels are 1..7; compound-emotion lists are not supported.")
        rows.append((parts[0], label - 1, n))
    return rows


def _split_prefix(split: str) -> str:
    if split == "train":
        return "train_"
    if split in ("test", "val"):
        return "test_"
    raise ValueError(split)


@register_dataset("rafdb")
def load_rafdb(root, split: str = "train", variant: str = "aligned", check: str = "decode", transform=None, **_):
    """RAF-DB basic. ``variant`` = ``"aligned"`` (100×100 crops, default) or ``"original"``.

    ``val`` is accepted and means the test split (RAF-DB has no validation set; papers report on test).
    """
    root = Path(root)
    rows = read_list_file(root / LIST_FILE)
    prefix = _split_prefix(split)
    rows = [r for r in rows if r[0].startswith(prefix)]
    if not rows:
        raise DatasetFormatError(f"no rows named {prefix}* in the list file (empty split {split!r}).",
                                 path=root / LIST_FILE, fix="check that the file is RAF-DB's basic list.")
    img_dir = root / "Image" / variant
    if variant == "aligned":
        paths = [img_dir / name.replace(".jpg", "_aligned.jpg") for name, _, _ in rows]
    elif variant == "original":
        paths = [img_dir / name for name, _, _ in rows]
    else:
        raise ValueError(f"variant must be 'aligned' or 'original', got {variant!r}")
    report = SkipReport()
    paths, targets = keep_decodable(paths, [t for _, t, _ in rows], report, check)
    if not paths:
        raise DatasetFormatError(f"none of the {len(rows)} images of split {split!r} exist.", path=img_dir,
                                 fix=f"extract RAF-DB's Image/{variant} folder under {root}.")
    ds = FERDataset(paths, targets, LABEL_SETS["rafdb"], root, split, report, transform)
    ds.report_skips()
    return ds
