"""The dataset contract shared by every reader (DESIGN §3).

A reader parses the official files into ``samples`` (path or row id) and ``targets``, keeps a
:class:`SkipReport` of what it legitimately dropped, and yields ``(image uint8 [3,H,W], target)``.
"""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .labels import LabelSet


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


def decode_image(path: str | Path) -> np.ndarray:
    """Decode an image file fully into uint8 RGB [H,W,3]; raises OSError if unreadable or truncated."""
    with Image.open(path) as im:
        im.load()  # forces a full decode: truncated files raise here
        return np.asarray(im.convert("RGB"))


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
                 loader: Callable[[object], np.ndarray] = decode_image):
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
        t = self.targets[i]
        return img, (torch.as_tensor(t, dtype=torch.float32) if isinstance(t, (list, tuple, np.ndarray)) else t)

    def class_counts(self) -> list[int]:
        c = Counter(int(np.argmax(t)) if isinstance(t, (list, tuple, np.ndarray)) else int(t) for t in self.targets)
        return [c.get(i, 0) for i in range(len(self.classes))]

    def report_skips(self) -> None:
        if self.skip_report:
            warnings.warn(f"{type(self).__name__}({self.root}, {self.split!r}): {self.skip_report.summary()}", stacklevel=3)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, "
                f"classes={self.classes}, skipped={self.skip_report.total})")


def keep_decodable(paths: Sequence, targets: Sequence, report: SkipReport, check: str = "decode"):
    """Filter ``(path, target)`` pairs: missing files and (with ``check="decode"``) unreadable images are
    skipped and counted. ``check="exists"`` only stats the files (the cache step decodes later)."""
    keep_p, keep_t = [], []
    for p, t in zip(paths, targets):
        if not Path(p).is_file():
            report.add("missing", p)
            continue
        if check == "decode":
            try:
                decode_image(p)
            except (OSError, ValueError, SyntaxError):
                report.add("unreadable", p)
                continue
        keep_p.append(p)
        keep_t.append(t)
    return keep_p, keep_t
