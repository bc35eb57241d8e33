"""The dataset contract shared by every reader (docs/design.md §3).

A reader parses the official files into ``samples`` (path or row id) and ``targets``, keeps a
:class:`SkipReport` of what it legitimately dropped, and yields ``(image uint8 [3,H,W], target)``.
"""
from __future__ import annotations

import csv
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ferlib.labels import LabelSet


class SkipWarning(UserWarning):
    """The one-line summary of what a reader skipped (counts by reason and the first paths)."""


@dataclass
class SkipReport:
    """Counts of skipped items by reason, with the first few paths of each."""

    counts: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)
    keep: int = 5

    def add(self, reason: str, item) -> None:
        self.counts[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < self.keep:
            ex.append(str(item))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __bool__(self) -> bool:
        return self.total > 0

    def as_dict(self) -> dict:
        return {"counts": dict(self.counts), "examples": self.examples}

    def summary(self) -> str:
        if not self:
            return "nothing skipped"
        parts = [f"{n} {reason} (e.g. {', '.join(self.examples[reason][:3])})" for reason, n in self.counts.items()]
        return f"skipped {self.total}: " + "; ".join(parts)


def show_progress(progress: bool | None) -> bool:
    """Whether to draw a progress bar: when ``progress`` is not False and stderr is a terminal or a notebook
    (a bar redrawn into a log file or a CI transcript is noise)."""
    if progress is False:
        return False
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def decode_image(path: str | Path) -> np.ndarray:
    """Decode an image file fully into uint8 RGB [H,W,3]; raises OSError if unreadable or truncated.

    16-bit greyscale (PNG mode ``I;16``) is scaled 0..65535 → 0..255 (PIL's ``convert`` would clip it to
    white); an image over PIL's pixel limit raises ``DecompressionBombError`` (one of :data:`DECODE_ERRORS`).
    """
    with Image.open(path) as im:
        im.load()  # forces a full decode: truncated files raise here
        if im.mode.startswith("I") or im.mode == "F":
            return _wide_grey_to_rgb(np.asarray(im), im.mode, path)
        return np.asarray(im.convert("RGB"))


def _wide_grey_to_rgb(arr: np.ndarray, mode: str, path) -> np.ndarray:
    """uint8 RGB from a 16-bit (``I;16*``) or 32-bit integer (``I``) grey image holding 0..65535 values."""
    if mode == "F" or arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise ValueError(f"{path}: a {mode} image with values outside 0..65535 has no 8-bit equivalent")
    grey = ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def to_chw_tensor(arr: np.ndarray) -> torch.Tensor:
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


class FERDataset(Dataset):
    """Images on disk with integer (or soft) targets in the dataset's native order.

    Attributes: ``samples`` (paths or row ids), ``targets``, ``classes`` (names, native order),
    ``label_set``, ``skip_report``, ``root``, ``split``. ``transform`` is applied to the uint8 tensor.
    """

    def __init__(self, samples: Sequence, targets: Sequence, label_set: LabelSet, root, split: str,
                 skip_report: SkipReport | None = None, transform: Callable | None = None,
                 loader: Callable[[object], np.ndarray] = decode_image, source_files: Sequence = ()):
        #: annotation files the samples come from (the cache key includes their sizes and mtimes)
        self.source_files = [Path(f) for f in source_files]
        self.samples = list(samples)
        self.targets = list(targets)
        self.label_set = label_set
        self.classes = list(label_set.names)
        self.root = Path(root)
        self.split = split
        self.skip_report = skip_report or SkipReport()
        self.transform = transform
        self.loader = loader

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> torch.Tensor:
        return to_chw_tensor(self.loader(self.samples[i]))

    def __getitem__(self, i: int):
        img = self.load(i)
        if self.transform is not None:
            img = self.transform(img)
        return img, self.target(i)

    def target(self, i: int):
        """Target as returned with the image: an int, a float32 vector, or -1 when the split has no labels."""
        t = self.targets[i]
        if t is None:
            return -1
        return torch.as_tensor(t, dtype=torch.float32) if isinstance(t, (list, tuple, np.ndarray)) else t

    def class_counts(self) -> list[int]:
        c = Counter(int(np.argmax(t)) if isinstance(t, (list, tuple, np.ndarray)) else int(t)
                    for t in self.targets if t is not None)
        return [c.get(i, 0) for i in range(len(self.classes))]

    def report_skips(self) -> None:
        if self.skip_report:
            warnings.warn(f"{type(self).__name__}({self.root}, {self.split!r}): {self.skip_report.summary()}",
                          SkipWarning, stacklevel=3)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, "
                f"classes={self.classes}, skipped={self.skip_report.total})")


#: What a failed decode raises (PIL: OSError for truncated files, UnidentifiedImageError ⊂ OSError,
#: DecompressionBombError for an image over ``Image.MAX_IMAGE_PIXELS``·2).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)

#: skip-report reasons of images that exist but cannot be used
UNDECODABLE = ("unreadable", "too large")


def skip_reason(err: BaseException) -> str:
    """The skip-report reason for a failed decode: ``too large`` for a decompression bomb, else ``unreadable``."""
    return "too large" if isinstance(err, Image.DecompressionBombError) else "unreadable"


def decodable_indices(paths: Sequence, report: SkipReport, check: str = "decode") -> list[int]:
    """Indices of ``paths`` to keep: missing files and (with ``check="decode"``) unreadable images are
    skipped and counted. ``check="exists"`` only stats the files (the cache step decodes later);
    ``check="none"`` keeps everything."""
    if check not in ("decode", "exists", "none"):
        raise ValueError(f"check must be 'decode', 'exists' or 'none', got {check!r}")
    keep = []
    for i, p in enumerate(paths):
        if check != "none" and not Path(p).is_file():
            report.add("missing", p)
            continue
        if check == "decode":
            try:
                decode_image(p)
            except DECODE_ERRORS as err:
                report.add(skip_reason(err), p)
                continue
        keep.append(i)
    return keep


def keep_decodable(paths: Sequence, targets: Sequence, report: SkipReport, check: str = "decode"):
    """Filter ``(path, target)`` pairs with :func:`decodable_indices`; returns ``(paths, targets)``."""
    keep = decodable_indices(paths, report, check)
    return [paths[i] for i in keep], [targets[i] for i in keep]


def empty_split_error(split: str, report: SkipReport, path=None, missing_fix: str | None = None, n: int = 0,
                      min_items: int = 1):
    """The :class:`EmptySplitError` for a split left with ``n`` < ``min_items`` items after ``report``'s skips.

    The message tells missing files ("none exist") from files that exist but cannot be decoded
    ("unreadable", e.g. the zero-byte placeholders a clone without git-lfs leaves), and ends with the
    skip report. ``missing_fix`` is the reader's advice for missing files."""
    from .errors import EmptySplitError

    have = "no usable image" if n == 0 else f"only {n} usable image(s), fewer than the {min_items} needed"
    missing, undecodable = report.counts["missing"], sum(report.counts[r] for r in UNDECODABLE)
    if not report:
        why = "the reader found no items"
    elif missing == report.total:
        why = f"none of the {missing} listed images exist"
    elif undecodable == report.total:
        kinds = ["zero-byte or truncated files, as a clone without git-lfs leaves them"] * bool(
            report.counts["unreadable"]) + ["images over PIL's pixel limit"] * bool(report.counts["too large"])
        why = f"the {undecodable} listed images exist but are unreadable ({' or '.join(kinds)})"
    else:
        why = f"{missing} listed images do not exist and {undecodable} are unreadable"
    fixes = []
    if missing or not report:
        fixes.append(missing_fix or "extract the dataset's images where its list expects them.")
    if undecodable:
        fixes.append("fetch the unreadable image files again (e.g. `git lfs pull`, or re-extract the archive).")
    return EmptySplitError(f"split {split!r} has {have}: {why}. Skip report: {report.summary()}.", path=path,
                           fix=" ".join(fixes))


def require_usable(dataset: FERDataset, split: str | None = None, min_items: int = 1) -> FERDataset:
    """``dataset`` if it holds at least ``min_items`` items, else raise :class:`~ferlib.data.EmptySplitError`
    naming the split and the skip report (so that a run never trains or evaluates on nothing)."""
    if len(dataset) >= min_items:
        return dataset
    raise empty_split_error(split or dataset.split, dataset.skip_report, dataset.root, n=len(dataset),
                            min_items=min_items)


class ArrayDataset(FERDataset):
    """Images held in memory (FER2013 / FERPlus pixels): ``images`` uint8 [N,H,W] or [N,H,W,3],
    ``samples`` = row ids in the source file. Grayscale is repeated to 3 channels on load."""

    def __init__(self, images: np.ndarray, samples, targets, label_set, root, split, skip_report=None,
                 transform=None, source_files=()):
        super().__init__(samples, targets, label_set, root, split, skip_report, transform, source_files=source_files)
        if len(images) != len(self.samples):
            raise ValueError(f"{len(images)} images for {len(self.samples)} samples")
        self.images = images

    def load(self, i: int) -> torch.Tensor:
        return to_chw_tensor(self.images[i])


class CroppedDataset(FERDataset):
    """Files whose face box is cropped on load (AffectNet): ``boxes`` float [N,4] = x, y, w, h in pixels
    of the original image, enlarged by ``margin`` (fraction of the box side) and clamped to the image.
    ``landmarks`` (optional) holds one ``"x0;y0;…"`` string per sample in original-image pixels."""

    def __init__(self, samples, targets, label_set, root, split, boxes, skip_report=None, transform=None,
                 margin: float = 0.0, crop: bool = True, landmarks=None, source_files=()):
        super().__init__(samples, targets, label_set, root, split, skip_report, transform, source_files=source_files)
        self.boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        self.margin, self.crop = margin, crop
        self.landmark_strings = landmarks

    def landmarks(self, i: int) -> np.ndarray | None:
        """68 landmarks float32 [68,2] of sample ``i`` in original-image pixels (None if the format has none)."""
        if not self.landmark_strings:
            return None
        return np.array(self.landmark_strings[i].split(";"), dtype=np.float32).reshape(-1, 2)

    def load_full(self, i: int) -> np.ndarray:
        return decode_image(self.samples[i])

    def load(self, i: int) -> torch.Tensor:
        img = self.load_full(i)
        if self.crop:
            img = crop_box(img, self.boxes[i], self.margin)
        return to_chw_tensor(img)


def crop_box(img: np.ndarray, box, margin: float = 0.0) -> np.ndarray:
    """Crop ``img`` [H,W,C] to ``box`` (x, y, w, h) enlarged by ``margin``·side on every side, clamped;
    an empty or degenerate box returns the whole image."""
    x, y, w, h = (float(v) for v in box)
    H, W = img.shape[:2]
    x0, y0 = int(round(x - margin * w)), int(round(y - margin * h))
    x1, y1 = int(round(x + w + margin * w)), int(round(y + h + margin * h))
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(W, x1), min(H, y1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return img
    return img[y0:y1, x0:x1]


_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32LE"), (b"\x00\x00\xfe\xff", "UTF-32BE"), (b"\xff\xfe", "UTF-16LE"),
         (b"\xfe\xff", "UTF-16BE"))


def guess_encoding(data: bytes) -> str:
    """The iconv name of the (non-UTF-8) encoding of ``data``: UTF-16/32 by byte-order mark or by NUL
    bytes between ASCII characters, else an 8-bit code page (reported as WINDOWS-1252, a superset of latin-1)."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name
    head = data[:4096]
    if head.count(0) > len(head) // 4:
        return "UTF-16LE" if head[1::2].count(0) > head[0::2].count(0) else "UTF-16BE"
    return "WINDOWS-1252"


def _first_non_utf8(data: bytes) -> int | None:
    """Offset of the first byte that is not UTF-8 text (a NUL counts: UTF-16 decodes as UTF-8 with NULs)."""
    if data.startswith(tuple(bom for bom, _ in _BOMS)):
        return 0
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        nul = data.find(0, 0, err.start)
        return nul if nul >= 0 else err.start
    nul = data.find(0)
    return nul if nul >= 0 else None


def text_decode_error(path, what: str, fix: str, data: bytes | None = None):
    """The :class:`DatasetFormatError` for a text file that is not UTF-8, naming the file, the first line
    that fails and the encoding found (None if the file is UTF-8 after all)."""
    from .errors import DatasetFormatError

    data = Path(path).read_bytes() if data is None else data
    at = _first_non_utf8(data)
    if at is None:
        return None
    line = data.count(b"\n", 0, at) + 1
    enc = guess_encoding(data)
    found = "latin-1 / Windows-1252" if enc == "WINDOWS-1252" else enc
    return DatasetFormatError(f"{what} is not UTF-8 text (byte 0x{data[at:at + 1].hex()}); it looks like {found}.",
                              path=path, line=line,
                              fix=f"save it as UTF-8, e.g. `iconv -f {enc} -t UTF-8 old > new`; {fix}")


def check_utf8_start(path, what: str, fix: str) -> None:
    """Raise :func:`text_decode_error` when the first 4 KB of ``path`` show UTF-16/32 (a byte-order mark or
    NUL bytes), which Python's UTF-8 decoder would otherwise read as text with NULs in it."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(tuple(bom for bom, _ in _BOMS)) or 0 in head:
        err = text_decode_error(path, what, fix, head)
        if err is not None:
            raise err


def read_text(path, what: str, fix: str) -> str:
    """The text of ``path`` as UTF-8 (a BOM is dropped); another encoding raises :func:`text_decode_error`."""
    data = Path(path).read_bytes()
    err = text_decode_error(path, what, fix, data)
    if err is not None:
        raise err
    return data.decode("utf-8-sig")


def read_csv_rows(path: Path, required: Sequence[str], *, what: str, fix: str, header: bool = True,
                  delimiter: str = ","):
    """Rows of a CSV as ``(line_number, {column: value})`` with column names stripped of spaces.

    Tolerates a UTF-8 BOM, CRLF/LF mixes and blank lines. Raises :class:`DatasetFormatError`
    naming the missing columns when the header lacks one of ``required`` (given in file order
    for header-less files, ``header=False``), or naming the encoding found when the file is not UTF-8.
    """
    from .errors import DatasetFormatError

    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"{what} not found.", path=path, fix=fix)
    check_utf8_start(path, what, fix)
    try:
        return _csv_rows(path, required, what, fix, header, delimiter)
    except UnicodeDecodeError as err:
        raise text_decode_error(path, what, fix) or err from None


def _short(text: str, keep: int = 40) -> str:
    """``text`` cut to ``keep`` characters, saying how long it was (a pixels field is 9 KB)."""
    return text if len(text) <= keep else f"{text[:keep]}… ({len(text):,} characters)"


def _csv_rows(path: Path, required, what: str, fix: str, header: bool, delimiter: str):
    from .errors import DatasetFormatError

    rows = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delimiter)
        columns = list(required)
        if header:
            first = next((r for r in reader if any(c.strip() for c in r)), None)
            if first is None:
                raise DatasetFormatError(f"{what} is empty.", path=path, fix=fix)
            columns = [c.strip() for c in first]
            missing = [c for c in required if c not in columns]
            if missing:
                shown = [_short(c) for c in columns[:12]] + (["…"] if len(columns) > 12 else [])
                raise DatasetFormatError(
                    f"{what}: missing column(s) {missing}; the header has {shown}, expected {list(required)}"
                    + (" (the first line looks like data: is the header row missing?)."
                       if any(len(c) > 40 or c.isdigit() for c in columns) else "."),
                    path=path, line=reader.line_num, fix=fix)
        for r in reader:
            if not any(c.strip() for c in r):
                continue
            if len(r) < len(columns):
                raise DatasetFormatError(f"{what}: {len(r)} fields, expected {len(columns)} ({columns}).",
                                         path=path, line=reader.line_num, fix=fix)
            rows.append((reader.line_num, {c: v.strip() for c, v in zip(columns, r)}))
    return rows
