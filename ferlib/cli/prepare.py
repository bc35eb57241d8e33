"""``python -m ferlib prepare DATASET --root … [--split …] [--align] [--size N]``: check a dataset's layout,
count its classes and build its tensor cache; ``--make-split`` first splits an ImageFolder
(:mod:`ferlib.prepare` does the work; its docstring says what is written where)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ferlib.data import dataset_info, list_datasets
from ferlib.cli import int_at_least
from ferlib.prepare import format_summary, layout_report, prepare, summary


def _parse_value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(v.lower(), v)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ferlib prepare", description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", help=", ".join(list_datasets()))
    p.add_argument("--root", default=None, help="the dataset folder as distributed (see data/README.md)")
    p.add_argument("--split", action="append", help="split(s) to cache (default: all the dataset has)")
    p.add_argument("--size", type=int_at_least(8), default=None, help="side of the stored images (default: first image's)")
    p.add_argument("--align", action="store_true", help="align faces to the 5-point template (needs landmarks "
                                                        "or facenet-pytorch)")
    p.add_argument("--cache-dir", default=None, help="where caches live (default: data/cache)")
    p.add_argument("--workers", type=int_at_least(0), default=None,
                   help="decode / align in this many processes (default: the spare cores, up to 8; 0 = here)")
    p.add_argument("--make-split", type=float, default=None, metavar="FRACTION",
                   help="imagefolder: first split ROOT/<class>/* into ROOT/train and ROOT/test (links), this "
                        "fraction to test, stratified by class")
    p.add_argument("--group-by", default=None, metavar="REGEX",
                   help=r"with --make-split: a regex whose first group names the subject / sequence in a file "
                        r"name (e.g. '^(S\d+)_' for CK+); a group never lands on both sides")
    p.add_argument("--seed", type=int, default=0, help="with --make-split: the split's random seed")
    p.add_argument("--link", default="symlink", choices=("symlink", "hardlink"), help="with --make-split")
    p.add_argument("--overwrite", action="store_true", help="with --make-split: replace an earlier split")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="reader option, e.g. --opt layout=mfer --opt label_mode=crossentropy")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true", help="print the caches' summary as JSON (for scripts) instead of "
                                                      "the table")
    a = p.parse_args(argv)
    opts = dict(o.split("=", 1) for o in a.opt)
    opts = {k: _parse_value(v) for k, v in opts.items()}
    try:
        if a.make_split is not None:
            if a.dataset != "imagefolder" or not a.root:
                p.error("--make-split works on an imagefolder --root")
            if not 0 < a.make_split < 1:
                p.error(f"--make-split takes the test fraction, between 0 and 1 (got {a.make_split})")
            from ferlib.data.readers.imagefolder import SPLIT_RECORD, make_split

            rec = make_split(a.root, a.make_split, a.group_by, a.seed, a.link, a.overwrite)
            groups = f", {sum(len(g) for g in rec['groups'].values())} groups" if "groups" in rec else ""
            print(f"split {len(rec['files'])} images{groups}: {rec['test_fraction']:.1%} to test "
                  f"(seed {a.seed}); recorded in {Path(a.root) / SPLIT_RECORD}", file=sys.stderr)
        if not dataset_info(a.dataset).generated or a.root:
            print(layout_report(a.dataset, a.root), file=sys.stderr)
        caches = prepare(a.dataset, a.root, a.split, a.size, a.align, a.cache_dir, progress=not a.quiet,
                         workers=a.workers, **opts)
    except Exception as e:  # noqa: BLE001 - re-raised unless it is a user's error
        from ferlib.error_report import report

        if not report(e):
            raise
        return 2
    print(json.dumps(summary(caches), indent=1) if a.json else format_summary(caches))
    return 0


if __name__ == "__main__":
    sys.exit(main())
