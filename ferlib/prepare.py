"""``python -m ferlib.prepare DATASET --root … [--split …] [--align] [--size N]``: build the tensor cache.

Reads the dataset's official files, decodes every image once (optionally aligning faces to the 5-point
template), resizes to ``--size`` and writes a uint8 memmap + index + skip report under ``data/cache/``
(``--cache-dir`` to change), atomically (DESIGN §5). ``ferlib.engine.train`` reads the cache by default
(``cache="auto"``) at the recipe's ``stored_size`` (else its ``input_size``): prepare with that ``--size``
and training finds this cache instead of building its own; ``load_dataset(name, root, split, cache=True,
cache_size=N)`` finds it too.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ferlib.data import DEFAULT_SPLITS, DatasetFormatError, load_dataset

#: what each layout detector recognises, for :func:`check_layout`
_DETECTORS = {"rafdb": "ferlib.data.rafdb", "affectnet": "ferlib.data.affectnet",
              "affectnet8": "ferlib.data.affectnet", "ferplus": "ferlib.data.ferplus", "fer2013": "ferlib.data.fer2013"}


def check_layout(dataset: str, root) -> str:
    """One line naming the layout found under ``root``; raises DatasetFormatError with the fix if none."""
    import importlib

    if dataset in ("synthetic",):
        return f"synthetic set under {root or 'data/synthetic'} (generated on first use)"
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetFormatError(f"dataset root does not exist ({dataset}).", path=root,
                                 fix=f"download {dataset} and point data_root at it; data/README.md says where "
                                     "each dataset is expected.")
    if dataset not in _DETECTORS:
        return f"{dataset} at {root}"
    found = importlib.import_module(_DETECTORS[dataset]).detect_layout(root)
    if isinstance(found, tuple):
        found = f"{found[0]} ({found[1]})"
    return f"{dataset}: layout '{found}' found at {root}"


def prepare(dataset: str, root=None, splits=None, size: int | None = None, align: bool = False, cache_dir=None,
            progress: bool = True, workers: int = 0, **opts) -> dict:
    """Build (or validate) the cache of every split; returns ``{split: CachedDataset}``.

    ``workers`` > 0 decodes in that many processes (worth it for AffectNet's 290k images)."""
    splits = splits or DEFAULT_SPLITS.get(dataset, ("train", "test"))
    out = {}
    for split in splits:
        out[split] = load_dataset(dataset, root, split, cache=cache_dir or True, cache_size=size, align=align,
                                  progress=progress, cache_workers=workers, **opts)
    return out


def summary(caches: dict) -> dict:
    """JSON-able summary: per split the cache folder, item count, image shape and the skip report."""
    return {split: {"cache": str(ds.path), "n": len(ds), "shape": list(ds.images.shape[1:]),
                    "classes": ds.classes, "class_counts": ds.class_counts(),
                    "skipped": ds.skip_report.as_dict()} for split, ds in caches.items()}


def _parse_value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(v.lower(), v)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ferlib.prepare", description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", help="rafdb, affectnet, affectnet8, ferplus, fer2013, imagefolder or synthetic")
    p.add_argument("--root", default=None, help="the dataset folder as distributed (see data/README.md)")
    p.add_argument("--split", action="append", help="split(s) to cache (default: all the dataset has)")
    p.add_argument("--size", type=int, default=None, help="side of the stored images (default: first image's)")
    p.add_argument("--align", action="store_true", help="align faces to the 5-point template (needs landmarks "
                                                        "or facenet-pytorch)")
    p.add_argument("--cache-dir", default=None, help="where caches live (default: data/cache)")
    p.add_argument("--workers", type=int, default=0, help="decode in this many processes (default: 0 = here)")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="reader option, e.g. --opt layout=mfer --opt label_mode=crossentropy")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    opts = dict(o.split("=", 1) for o in a.opt)
    opts = {k: _parse_value(v) for k, v in opts.items()}
    try:
        if a.dataset != "synthetic" or a.root:
            print(check_layout(a.dataset, a.root), file=sys.stderr)
        caches = prepare(a.dataset, a.root, a.split, a.size, a.align, a.cache_dir, progress=not a.quiet,
                         workers=a.workers, **opts)
    except DatasetFormatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary(caches), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
