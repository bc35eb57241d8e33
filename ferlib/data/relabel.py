"""Relabelling a dataset's targets into another label set's class order (docs/datasets.md §5); the label sets
themselves are :mod:`ferlib.labels`' (a leaf without data)."""
from __future__ import annotations

import numpy as np

from ferlib.labels import LabelSet


def relabel_dataset(ds, dest: LabelSet):
    """Re-index ``ds``'s targets (ints or [C] vectors; None stays) into ``dest``'s class order, in place.

    Every class of the dataset must exist in ``dest`` (ValueError naming the missing ones). Returns ``ds``
    with ``label_set`` and ``classes`` set to ``dest``'s, so a model trained on it indexes its outputs in
    ``dest``'s order (e.g. EMO-Net's 8-class checkpoint: RAF-DB order + contempt).
    """
    source = ds.label_set
    m = source.map_to(dest)
    missing = [n for i, n in enumerate(source.names) if i not in m]
    if missing:
        raise ValueError(f"cannot relabel {source.name} into {dest.name}: {dest.name} has no {missing}")
    out = []
    for t in ds.targets:
        if t is None:
            out.append(None)
        elif isinstance(t, (list, tuple, np.ndarray)):
            v = np.zeros(len(dest.names), dtype=np.asarray(t).dtype)
            for i, x in enumerate(np.asarray(t)):
                v[m[i]] = x
            out.append(v)
        else:
            out.append(m[int(t)])
    ds.targets, ds.label_set, ds.classes = out, dest, list(dest.names)
    return ds


def remap(targets, source: LabelSet, dest: LabelSet) -> list[int]:
    """Integer targets from ``source``'s native order to ``dest``'s; raises KeyError for a class ``dest`` lacks."""
    m = source.map_to(dest)
    out = []
    for t in targets:
        if int(t) not in m:
            raise KeyError(f"class {source.names[int(t)]!r} of {source.name} has no index in {dest.name}")
        out.append(m[int(t)])
    return out
