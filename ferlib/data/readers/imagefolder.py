"""Generic ``root/<split>/<class>/*`` trees (torchvision ImageFolder layout), with an explicit class order.

torchvision indexes classes by sorted folder name; re-packaged FER sets rely on that order (AffectNet
alphabetical / numeric, FERPlus by emotion name, EMO-Net's RAF-DB folders 0..6). ``classes=`` states the
order instead of relying on sorting, so a checkpoint's index order is explicit.
"""
from __future__ import annotations

from pathlib import Path

from ferlib.labels import CANONICAL, LabelSet, canonical_name

from ..base import FERDataset, SkipReport, decodable_indices
from ..errors import DatasetFormatError
from ..registry import SyntheticFormat, register_dataset
from ..synthetic_writers import write_imagefolder

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


@register_dataset("imagefolder", splits=("train", "test"), eval_split="test", label_set=None, face_crop="aligned",
                  synthetic_format=SyntheticFormat(write_imagefolder))
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


# --- making a train/test split for a folder that ships without one ----------------------------------

#: The file written next to the data by :func:`make_split`: seed, fraction, regex and every file's side.
SPLIT_RECORD = "ferlib_split.json"


def _class_folders(root: Path) -> list[str]:
    """Class folders directly under ``root`` (split folders such as ``train/`` left out), sorted."""
    splits = {n for names in SPLIT_DIRS.values() for n in names}
    return sorted(d.name for d in root.iterdir() if d.is_dir() and d.name not in splits and not d.name.startswith("."))


def _group_of(name: str, pattern) -> str | None:
    """The first capture group of ``pattern`` searched in ``name`` (the whole match without groups)."""
    m = pattern.search(name)
    if m is None:
        return None
    return m.group(1) if m.re.groups else m.group(0)


def make_split(root, fraction: float = 0.2, group_by: str | None = None, seed: int = 0, link: str = "symlink",
               overwrite: bool = False) -> dict:
    """Split ``root/<class>/<image>`` into ``root/train/<class>/`` and ``root/test/<class>/`` made of links.

    Args:
        root: the folder whose sub-folders are the classes (one per expression, images inside).
        fraction: share of the images (or of the groups) that goes to ``test/``, in (0, 1).
        group_by: a regular expression searched in each file name; its first capture group (the whole match
            when it has none) names the group — a subject or a sequence, e.g. ``r"^(S\\d+)_"`` for CK+ — and
            a group never lands on both sides. A file the regex does not match is an error.
        seed: the random seed; the same seed and files give the same split.
        link: ``"symlink"`` (relative symbolic links) or ``"hardlink"``; images are never copied.
        overwrite: replace ``train/`` and ``test/`` written by an earlier call (refused without it).

    Without ``group_by`` the split is scikit-learn's ``train_test_split(stratify=class)``, exact per class
    (a class with a single image stays in train). With ``group_by`` it is one fold of
    ``StratifiedGroupKFold(n_splits=round(1/fraction))``: class shares are kept as well as whole groups
    allow, and the test share is about 1/n_splits (the fold closest to ``fraction`` is taken).

    Returns the record also written to ``root/ferlib_split.json``: ``seed``, ``fraction``, ``group_by``,
    ``link``, ``classes``, ``counts`` ``{split: {class: n}}``, ``test_fraction`` (achieved) and ``files``
    ``{"<class>/<file>": "train" | "test"}``.
    """
    import json
    import os
    import re
    import shutil

    import numpy as np

    root = Path(root).expanduser()
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    if link not in ("symlink", "hardlink"):
        raise ValueError(f"link must be 'symlink' or 'hardlink', got {link!r}")
    if not root.is_dir():
        raise DatasetFormatError("the folder to split does not exist.", path=root,
                                 fix="pass the folder holding one sub-folder of images per class.")
    classes = _class_folders(root)
    files, targets = [], []
    for idx, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            if f.is_file() and f.suffix.lower() in IMG_EXTENSIONS:
                files.append(f)
                targets.append(idx)
    if not files:
        raise DatasetFormatError("no images in class folders to split.", path=root,
                                 fix="a folder to split holds <root>/<class>/<image> (then train/ and test/ are "
                                     "written next to the class folders).")
    for split in ("train", "test"):
        if (root / split).exists():
            if not (overwrite and (root / SPLIT_RECORD).is_file()):
                raise DatasetFormatError(f"{root / split} already exists.", path=root,
                                         fix="remove it, or pass overwrite=True (--overwrite) to replace a split "
                                             f"that ferlib made (it has {SPLIT_RECORD}).")
    y = np.asarray(targets)
    test_mask = np.zeros(len(files), dtype=bool)
    groups = None
    if group_by:
        from sklearn.model_selection import StratifiedGroupKFold

        try:
            pattern = re.compile(group_by)
        except re.error as e:
            raise DatasetFormatError(f"--group-by {group_by!r} is not a regular expression ({e}).", path=root,
                                     fix=r"e.g. '^(S\d+)_' (the first group names the subject).") from None
        groups = [_group_of(f.name, pattern) for f in files]
        unmatched = [f"{f.parent.name}/{f.name}" for f, g in zip(files, groups) if g is None]
        if unmatched:
            raise DatasetFormatError(f"{len(unmatched)} file name(s) do not match --group-by {group_by!r}, e.g. "
                                     f"{unmatched[:3]}.", path=root,
                                     fix="use a regular expression whose first group names the subject or "
                                         r"sequence in every file name, e.g. '^(S\d+)_'.")
        n_groups = len(set(groups))
        n_splits = min(max(2, int(round(1 / fraction))), n_groups)
        if n_splits < 2:
            raise DatasetFormatError(f"--group-by {group_by!r} finds a single group; nothing can be held out.",
                                     path=root, fix="use a regular expression that separates subjects.")
        # StratifiedGroupKFold needs each class at least n_splits times only for a warning; silence it
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            folds = list(StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
                         .split(np.zeros(len(y)), y, groups))
        best = min(folds, key=lambda f: abs(len(f[1]) / len(y) - fraction))
        test_mask[best[1]] = True
    else:
        from sklearn.model_selection import train_test_split

        counts = np.bincount(y, minlength=len(classes))
        several = np.flatnonzero(counts[y] >= 2)  # a class with one image cannot be stratified: it stays in train
        if len(several) >= 2:
            try:
                _, test_idx = train_test_split(several, test_size=fraction, random_state=seed, stratify=y[several])
            except ValueError as e:  # e.g. fewer test images than classes
                raise DatasetFormatError(f"cannot split {len(files)} images of {len(classes)} classes by "
                                         f"{fraction}: {e}", path=root, fix="add images or raise the fraction.") from None
            test_mask[test_idx] = True
    if not test_mask.any() or test_mask.all():
        raise DatasetFormatError(f"the split leaves one side empty ({int(test_mask.sum())} test images of "
                                 f"{len(files)}).", path=root, fix="add images or change the fraction / groups.")
    for split in ("train", "test"):
        shutil.rmtree(root / split, ignore_errors=True)
    record = {"created_by": "ferlib.data.readers.imagefolder.make_split", "seed": seed, "fraction": fraction,
              "group_by": group_by, "link": link, "classes": classes,
              "test_fraction": round(float(test_mask.mean()), 4),
              "counts": {s: {c: int(((y == i) & (test_mask == (s == "test"))).sum()) for i, c in enumerate(classes)}
                         for s in ("train", "test")},
              "files": {}}
    if groups is not None:
        record["groups"] = {s: sorted({g for g, t in zip(groups, test_mask) if t == (s == "test")})
                            for s in ("train", "test")}
    for f, is_test in zip(files, test_mask):
        split = "test" if is_test else "train"
        dest = root / split / f.parent.name / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if link == "symlink":
            os.symlink(os.path.relpath(f, dest.parent), dest)
        else:
            os.link(f, dest)
        record["files"][f"{f.parent.name}/{f.name}"] = split
    (root / SPLIT_RECORD).write_text(json.dumps(record, indent=1))
    return record


def class_counts(root, splits=("train", "val", "test")) -> dict:
    """``{split: {class: n images}}`` of an ImageFolder tree, counted from the folders (nothing decoded).

    Splits without a folder are left out."""
    root = Path(root).expanduser()
    out = {}
    for split in splits:
        try:
            d = find_split_dir(root, split)
        except DatasetFormatError:
            continue
        out[split] = {c.name: sum(1 for f in c.iterdir() if f.is_file() and f.suffix.lower() in IMG_EXTENSIONS)
                      for c in sorted(d.iterdir()) if c.is_dir()}
    return out
