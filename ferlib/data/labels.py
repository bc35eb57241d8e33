"""Label sets: every dataset's native class order, and maps to one canonical order (datasets.md §5).

Canonical order = AffectNet's native codes: 0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear,
5 disgust, 6 anger, 7 contempt (the 7-class set is the prefix 0..6).
"""
from __future__ import annotations

from dataclasses import dataclass

CANONICAL = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")

_SYNONYMS = {"happiness": "happy", "sadness": "sad", "angry": "anger"}


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


LABEL_SETS: dict[str, LabelSet] = {
    ls.name: ls
    for ls in (
        LabelSet("rafdb", ("surprise", "fear", "disgust", "happy", "sad", "anger", "neutral")),
        LabelSet("affectnet", CANONICAL[:7]),
        LabelSet("affectnet8", CANONICAL),
        LabelSet("affectnet8_alpha", ("anger", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise")),
        LabelSet("affectnet7_alpha", ("anger", "disgust", "fear", "happy", "neutral", "sad", "surprise")),
        LabelSet("ferplus", ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")),
        LabelSet("ferplus_alpha", ("anger", "contempt", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")),
        LabelSet("fer2013", ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")),
    )
}
