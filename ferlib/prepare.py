"""Check a dataset's layout, count its classes, build its tensor cache (``python -m ferlib prepare DATASET --root …``).

``python -m ferlib prepare imagefolder --root R --make-split 0.2 [--group-by REGEX] [--seed S]`` first splits
a folder of ``R/<class>/<image>`` into ``R/train/`` and ``R/test/`` (links, stratified by class, grouped by
subject when the regex names one; recorded in ``R/ferlib_split.json``), see
:func:`ferlib.data.readers.imagefolder.make_split`.

Reads the dataset's official files, decodes every image once (optionally aligning faces to the 5-point
template), resizes to ``--size`` and writes a uint8 memmap + index + skip report under ``data/cache/``
(``--cache-dir`` to change), atomically (docs/design.md §5). ``ferlib.engine.train`` reads the cache by default
(``cache="auto"``) at the recipe's ``stored_size`` (else its ``input_size``): prepare with that ``--size``
and training finds this cache instead of building its own; ``load_dataset(name, root, split, cache=True,
cache_size=N)`` finds it too.
"""
from __future__ import annotations

from pathlib import Path

from ferlib.data import DatasetFormatError, dataset_info, load_dataset


def check_layout(dataset: str, root) -> str:
    """One line naming the layout found under ``root`` (the record's ``detect_layout``); raises DatasetFormatError
    with the fix if none."""
    info = dataset_info(dataset)
    if info.generated:
        return f"{dataset} set under {root or 'data/' + info.folder} (generated on first use)"
    root = Path(root).expanduser()
    if not root.exists():
        from ferlib.data.registry import missing_root_error

        raise missing_root_error(info, root)
    if info.detect_layout is None:
        return f"{dataset} at {root}"
    found = info.detect_layout(root)
    if isinstance(found, tuple):
        found = f"{found[0]} ({found[1]})"
    return f"{dataset}: layout '{found}' found at {root}"


def class_counts_by_split(dataset: str, root=None, splits=None) -> dict:
    """``{split: {class: n}}`` for every split of ``dataset`` under ``root`` (classes in native order).

    ImageFolder trees are counted from their folders; the other formats are read with ``check="exists"``
    (label files parsed, images not decoded). A split the layout lacks is left out."""
    if dataset == "imagefolder":
        from ferlib.data.readers.imagefolder import class_counts

        return class_counts(root, splits or ("train", "val", "test"))
    import warnings

    from ferlib.data.base import SkipWarning

    out = {}
    for split in splits or dataset_info(dataset).splits:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SkipWarning)
                opts = {"progress": False} if dataset_info(dataset).generated else {"check": "exists"}
                ds = load_dataset(dataset, root, split, **opts)
        except DatasetFormatError:
            continue
        out[split] = dict(zip((str(c) for c in ds.classes), (int(n) for n in ds.class_counts())))
    return out


def counts_table(counts: dict) -> str:
    """``{split: {class: n}}`` as a plain-text table: one row per class, one column per split, a total row."""
    splits = list(counts)
    classes = list(dict.fromkeys(c for s in splits for c in counts[s]))
    if not classes:
        return "(no classes found)"
    rows = [[c] + [str(counts[s].get(c, 0)) for s in splits] for c in classes]
    rows.append(["total"] + [str(sum(counts[s].values())) for s in splits])
    head = ["class"] + splits
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    fmt = lambda r: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(head)] + [fmt(r) for r in rows])


def layout_report(dataset: str, root=None) -> str:
    """The layout line of :func:`check_layout`, then the classes with their image counts per split."""
    line = check_layout(dataset, root)
    counts = class_counts_by_split(dataset, root)
    if not counts:
        raise DatasetFormatError(f"{dataset}: no split found under the layout.", path=root,
                                 fix="see data/README.md for the expected folders.")
    return line + "\n" + counts_table(counts)


def prepare(dataset: str, root=None, splits=None, size: int | None = None, align: bool = False, cache_dir=None,
            progress: bool = True, workers: int | None = None, **opts) -> dict:
    """Build (or validate) the cache of every split; returns ``{split: CachedDataset}``.

    ``workers``: processes that decode (and align) the images; None = the spare cores (up to 8, one left
    free, none on ≤ 2 cores: ``ferlib.engine.training.default_cache_workers``), 0 = this process. With ``align``
    on a dataset without landmarks, a sample of images is first checked for faces that already fill the
    image (:func:`ferlib.data.align.warn_if_already_cropped`)."""
    from ferlib.engine.training import default_cache_workers

    splits = splits or dataset_info(dataset).splits
    workers = default_cache_workers() if workers is None else workers
    if align:
        _check_not_cropped(dataset, root, splits[0], opts)
    out = {}
    for split in splits:
        out[split] = load_dataset(dataset, root, split, cache=cache_dir or True, cache_size=size, align=align,
                                  progress=progress, cache_workers=workers, **opts)
    return out


def _check_not_cropped(dataset, root, split, opts) -> None:
    """Warn before aligning when the detector finds faces that fill most images (already-cropped input)."""
    import warnings

    from ferlib.data.base import SkipWarning

    if dataset_info(dataset).generated:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkipWarning)
        ds = load_dataset(dataset, root, split, **{**opts, "check": "exists"})
    if hasattr(ds, "landmarks") and callable(ds.landmarks) and len(ds) and ds.landmarks(0) is not None:
        return  # aligned from the dataset's own landmarks: no detector
    from ferlib.data.align import warn_if_already_cropped

    warn_if_already_cropped(ds)


def summary(caches: dict) -> dict:
    """JSON-able summary: per split the cache folder, item count, image shape and the skip report."""
    return {split: {"cache": str(ds.path), "n": len(ds), "shape": list(ds.images.shape[1:]),
                    "classes": ds.classes, "class_counts": ds.class_counts(),
                    "skipped": ds.skip_report.as_dict()} for split, ds in caches.items()}


def format_summary(caches: dict) -> str:
    """:func:`summary` as a plain-text table: per split the images cached, their stored shape, what was skipped
    (by reason) and the cache folder."""
    rows = []
    for split, d in summary(caches).items():
        skipped = ", ".join(f"{n} {reason}" for reason, n in (d["skipped"].get("counts") or {}).items()) or "none"
        rows.append([split, str(d["n"]), "×".join(map(str, d["shape"])), skipped, d["cache"]])
    head = ["split", "images", "shape", "skipped", "cache"]
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in [head] + rows)
