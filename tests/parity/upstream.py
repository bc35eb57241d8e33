"""The authors' repositories for the live parity tests, extracted from a local bare-git mirror.

A mirror is ``$FERLIB_UPSTREAM_MIRRORS/<owner>+<name>/repo`` (default ``/work/.mirror``, where the
project's development machines keep them). Without it the live tests skip, saying so: CI has no mirror
and replays the recordings in ``tests/data/parity`` instead.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

MIRRORS = Path(os.environ.get("FERLIB_UPSTREAM_MIRRORS", "/work/.mirror"))


def checkout(repo: str, dest: Path, paths: tuple[str, ...] = (), suffix: str = "") -> Path:
    """Extract ``repo`` ("owner/name") at HEAD into ``dest``, or skip the test when its mirror is absent.

    ``paths`` limits it to those folders or files, ``suffix`` to the files ending so (a mirror may lack the
    blobs of large weight files, which ``git archive`` would stop on)."""
    mirror = MIRRORS / repo.replace("/", "+") / "repo"
    if not mirror.is_dir():
        pytest.skip(f"no mirror of {repo} at {mirror} (as in CI): the live parity runs where it is; "
                    "the replay tests cover ferlib's side")
    git = ["git", f"--git-dir={mirror}"]
    names = subprocess.run(git + ["ls-tree", "-r", "--name-only", "HEAD", "--", *paths], check=True,
                           capture_output=True, text=True).stdout.split("\n")
    for name in (n for n in names if n and n.endswith(suffix)):
        out = dest / name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(subprocess.run(git + ["show", f"HEAD:{name}"], check=True, capture_output=True).stdout)
    return dest


def edit(path: Path, old: str, new: str) -> None:
    """Replace the one occurrence of ``old`` in the authors' file ``path`` (a deliberate change)."""
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not once in {path.name}: the upstream file changed"
    path.write_text(text.replace(old, new))
