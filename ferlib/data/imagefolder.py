"""Generic ``root/<split>/<class>/*`` trees (torchvision ImageFolder layout), with an explicit class order.

torchvision indexes classes by sorted folder name; re-packaged FER sets rely on that order (AffectNet
alphabetical / numeric, FERPlus by emotion name, EMO-Net's RAF-DB folders 0..6). ``classes=`` states the
order instead of relying on sorting, so a checkpoint's index order is explicit.
"""
from __future__ import annotations

from pathlib import Path

from .base import FERDataset, SkipReport, decodable_indices
from .errors import DatasetFormatError
from .labels import LabelSet, canonical_name, CANONICAL
from .registry import register_dataset

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")

#: Folder names accepted for each split, in the order they are looked for.
SPLIT_DIRS = {"train": ("train", "training", "train_set"), "val": ("val", "valid", "validation", "valid_set"),
              "test": ("test", "testing", "test_set")}


def find_split_dir(root: Path, split: str, aliases: dict | None = None, fallback: tuple = ()) -> Path:
    """The folder of ``split`` under ``root`` (first existing alias; ``fallback`` splits are tried next)."""
    aliases = aliases or SPLIT_DIRS
    tried = []
    for s in (split,) + tuple(fallback):
        for name in aliases.get(s, (s,)):
            tried.append(name)
            if (root / name).is_dir():
                return root / name
    raise DatasetFormatError(f"no folder for split {split!r} (looked for {tried}).", path=root,
                             fix=f"put the {split} images under {root}/<{'|'.join(tried)}>/<class>/.")


def scan_tree(split_dir: Path, folders, report: SkipReport, extensions=IMG_EXTENSIONS, strict: bool = True,
              ignore=()):
    """``(paths, targets)`` for class folders ``folders`` (index = position) under ``split_dir``.

    Files are listed in sorted order. With ``strict``, a sub-folder not in ``folders`` (nor ``ignore``)
    raises, so an unexpected class can never be silently dropped or mislabelled.
    """
    present = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    unknown = [d for d in present if d not in folders and d not in ignore]
    if strict and unknown:
        raise DatasetFormatError(f"class folder(s) {unknown} are not in the class list {list(folders)}.",
                                 path=split_dir, fix="pass classes=[...] naming every folder in index order.")
    paths, targets = [], []
    for idx, name in enumerate(folders):
        d = split_dir / str(name)
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            if f.is_file() and f.suffix.lower() in extensions:
                paths.append(f)
                targets.append(idx)
    for name in ignore:
        d = split_dir / str(name)
        if d.is_dir():
            for f in sorted(d.iterdir()):
                if f.is_file() and f.suffix.lower() in extensions:
                    report.add(f"class {name!r} left out", f)
    return paths, targets


def label_set_for(names, name: str = "imagefolder") -> LabelSet:
    """A LabelSet for folder names; names that are not emotions are kept as they are."""
    return LabelSet(name, tuple(str(n) for n in names))


def build_imagefolder(root: Path, split: str, folders, label_set: LabelSet, *, check: str = "decode",
                      transform=None, ignore=(), aliases=None, fallback=(), dataset_name: str = "imagefolder"):
    """Shared by every ImageFolder-style layout: scan, skip unreadable files, refuse an empty split."""
    split_dir = find_split_dir(Path(root), split, aliases, fallback)
    report = SkipReport()
    paths, targets = scan_tree(split_dir, folders, report, ignore=ignore)
    if not paths:
        raise DatasetFormatError(f"no images in the class folders {list(folders)} (empty split {split!r}).",
                                 path=split_dir, fix=f"put {dataset_name} images under {split_dir}/<class>/.")
    keep = decodable_indices(paths, report, check)
    if not keep:
        raise DatasetFormatError(f"none of the {len(paths)} images of split {split!r} can be decoded.",
                                 path=split_dir, fix="check the image files (they may be truncated).")
    ds = FERDataset([paths[i] for i in keep], [targets[i] for i in keep], label_set, root, split, report, transform)
    ds.report_skips()
    return ds


@register_dataset("imagefolder")
def load_imagefolder(root, split: str = "train", classes=None, check: str = "decode", transform=None,
                     label_set: LabelSet | None = None, **_):
    """Any ``root/<split>/<class>/*`` tree. ``classes`` = folder names in index order (default: sorted
    folder names, torchvision's order). Split folders: train|training, val|valid|validation, test."""
    root = Path(root)
    if classes is None:
        split_dir = find_split_dir(root, split)
        classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
        if not classes:
            raise DatasetFormatError("no class folders.", path=split_dir,
                                     fix="an ImageFolder tree is <root>/<split>/<class>/<image>.")
    classes = [str(c) for c in classes]
    if label_set is None:
        emotions = all(canonical_name(c) in CANONICAL for c in classes)
        label_set = label_set_for(classes, "imagefolder" if emotions else "imagefolder_custom")
    return build_imagefolder(root, split, classes, label_set, check=check, transform=transform)
