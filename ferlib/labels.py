"""Label sets without data: every dataset's native class order, the canonical order, synonyms and
each paper's display order for figures (docs/datasets.md §5). Pure Python, no ferlib imports: the
weights registry, metrics and figures use it without loading the dataset readers
(:mod:`ferlib.data.relabel` re-indexes a dataset's targets from one label set into another).

Canonical order = AffectNet's native codes: 0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear,
5 disgust, 6 anger, 7 contempt (the 7-class set is the prefix 0..6).
"""
from __future__ import annotations

from dataclasses import dataclass

CANONICAL = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")

_SYNONYMS = {"happiness": "happy", "sadness": "sad", "angry": "anger", "surprised": "surprise",
             "disgusted": "disgust", "fearful": "fear", "happily": "happy"}


def canonical_name(name: str) -> str:
    n = name.strip().lower()
    return _SYNONYMS.get(n, n)


@dataclass(frozen=True)
class LabelSet:
    """A dataset's native order: ``names[i]`` is the class with index ``i`` in that dataset's files."""

    name: str
    names: tuple

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def to_canonical(self) -> tuple:
        """``to_canonical[native_index]`` = canonical index."""
        return tuple(CANONICAL.index(canonical_name(n)) for n in self.names)

    def map_to(self, other: "LabelSet") -> dict:
        """native index here -> native index in ``other`` (classes missing there are left out)."""
        theirs = [canonical_name(n) for n in other.names]
        return {i: theirs.index(canonical_name(n)) for i, n in enumerate(self.names) if canonical_name(n) in theirs}

    def index(self, name: str) -> int:
        """Native index of a class name (synonyms such as ``happiness``/``happy`` accepted)."""
        mine = [canonical_name(n) for n in self.names]
        return mine.index(canonical_name(name))


#: RAF-DB file labels 1..7 minus one (also EMO-Net's folders 0..6).
RAFDB = ("surprise", "fear", "disgust", "happy", "sad", "anger", "neutral")
#: AffectNet-8 alphabetical folder order (FERMam's 8-class ImageFolder; its checkpoint's indices).
AFFECTNET8_ALPHA = ("anger", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise")
#: FERPlus vote-column order.
FERPLUS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
#: FER2013 emotion codes 0..6.
FER2013 = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
#: EMO-Net's AffectNet-8 lists (val8.txt) and 8-class checkpoint: RAF-DB order + contempt (docs/papers/emonet.md §7).
EMONET_AFFECTNET8 = RAFDB + ("contempt",)

LABEL_SETS: dict[str, LabelSet] = {
    ls.name: ls
    for ls in (
        LabelSet("rafdb", RAFDB),
        LabelSet("affectnet", CANONICAL[:7]),
        LabelSet("affectnet8", CANONICAL),
        LabelSet("affectnet8_alpha", AFFECTNET8_ALPHA),
        LabelSet("affectnet7_alpha", tuple(n for n in AFFECTNET8_ALPHA if n != "contempt")),
        LabelSet("ferplus", FERPLUS),
        LabelSet("ferplus_alpha", tuple(sorted(FERPLUS))),
        LabelSet("fer2013", FER2013),
        LabelSet("emonet_affectnet8", EMONET_AFFECTNET8),
        LabelSet("canonical", CANONICAL),
    )
}
