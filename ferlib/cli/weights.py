"""``python -m ferlib weights sha256 FILE...``: print each file's sha256 and size, and whether it matches
the registry entry of the same file name.

A user compares the printed hash with the one the authors publish (or that a colleague printed), and
learns at once whether a file ferlib knows is the released one, a truncated download or another file
under the same name. Exit status: 0 when every file exists and none differs from its entry, 1 when one
differs, 2 when one is missing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ferlib.weights.load import sha256_of
from ferlib.weights.registry import README_SECTION, WeightsEntry, entry_for_filename


def compare(digest: str, size: int, entry: WeightsEntry | None) -> tuple[bool, str]:
    """``(matches, one line)`` comparing a file's hash and size with the registry entry of its name."""
    if entry is None:
        return True, "no registry entry has this file name: compare the sha256 with the one its authors publish"
    what = f"registry entry {entry.name!r} ({entry.filename})"
    if entry.size is not None and size != entry.size:
        return False, (f"DIFFERS from {what}: {size:,} bytes, the released file has {entry.size:,} "
                       f"({'truncated download?' if size < entry.size else 'another file'}); see {README_SECTION}")
    if entry.sha256 is None:
        return True, (f"{what} records no sha256 (size {'matches' if entry.size else 'unknown'}): compare with "
                      f"the authors' ({entry.source})")
    if digest != entry.sha256:
        return False, (f"DIFFERS from {what}, whose sha256 is {entry.sha256}: corrupted, tampered or not the "
                       f"released file; see {README_SECTION}")
    return True, f"matches {what}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ferlib weights", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sha256", help="print sha256 and size of checkpoint files, checked against the registry")
    s.add_argument("files", nargs="+", type=Path, metavar="FILE")
    a = p.parse_args(argv)
    status = 0
    for path in a.files:
        if not path.is_file():
            print(f"error: {path} does not exist or is not a file", file=sys.stderr)
            status = 2
            continue
        digest, size = sha256_of(path), path.stat().st_size
        ok, line = compare(digest, size, entry_for_filename(path.name))
        print(f"{digest}  {path}  ({size:,} bytes)\n  {line}")
        if not ok:
            status = max(status, 1)
    return status


if __name__ == "__main__":
    sys.exit(main())
