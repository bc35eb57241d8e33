"""Issue 19, data side: nothing trained on nothing, no silent wrong pixels, one clear error per damaged file.

Each test builds the damaged input the issue describes (zero-byte images, a UTF-16 list file, a
14000×14000 PNG, a 16-bit grey PNG, a read-only cache folder, leftovers of a killed build, …) in a copy of
the official-format fixtures and asserts the clear outcome.
"""
import errno
import os
import shutil
import struct
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from ferlib.data import DatasetFormatError, EmptySplitError, SkipWarning, load_dataset, require_usable
from ferlib.data import cache as cache_mod
from ferlib.testing import FIXTURES_DIR

RAF = FIXTURES_DIR / "rafdb" / "basic"
LIST = "EmoLabel/list_patition_label.txt"


@pytest.fixture
def raf(tmp_path):
    """A writable copy of the RAF-DB fixture (24 train, 26 test images; train_00002 is corrupt)."""
    root = tmp_path / "raf"
    shutil.copytree(RAF, root)
    return root


def empty_train_images(root):
    """Truncate every train image to zero bytes, as a clone without git-lfs leaves them."""
    for f in (root / "Image" / "aligned").glob("train_*"):
        f.write_bytes(b"")


# --- item 2: a split with no usable image is an error naming the split and the skip report -----------------

@pytest.mark.parametrize("cache", [False, True], ids=["files", "cache"])
def test_split_of_zero_byte_images_is_an_error_naming_split_and_skips(raf, tmp_path, cache):
    empty_train_images(raf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkipWarning)
        with pytest.raises(EmptySplitError) as err:
            load_dataset("rafdb", raf, "train", cache=tmp_path / "cache" if cache else False, progress=False)
    msg = str(err.value)
    assert "split 'train' has no usable image" in msg
    assert "24 listed images exist but are unreadable" in msg and "none exist" not in msg
    assert "Skip report: skipped 24: 24 unreadable" in msg and "train_00001_aligned.jpg" in msg
    assert isinstance(err.value, DatasetFormatError)
    assert len(load_dataset("rafdb", raf, "test", cache=tmp_path / "cache" if cache else False, progress=False)) == 26


def test_split_whose_images_are_absent_says_none_exist(raf):
    for f in (raf / "Image" / "aligned").glob("train_*"):
        f.unlink()
    with pytest.raises(EmptySplitError, match="none of the 24 listed images exist") as err:
        load_dataset("rafdb", raf, "train")
    assert "unreadable" not in str(err.value) and "extract RAF-DB's images" in str(err.value)


def test_require_usable_counts_fewer_than_needed(raf):
    ds = load_dataset("rafdb", raf, "test")
    assert require_usable(ds, "test", min_items=26) is ds
    with pytest.raises(EmptySplitError, match=r"split 'test' has only 26 usable image\(s\), fewer than the 64"):
        require_usable(ds, "test", min_items=64)


def test_prepare_exits_nonzero_for_an_empty_train_split(raf, tmp_path):
    empty_train_images(raf)
    proc = subprocess.run([sys.executable, "-m", "ferlib.prepare", "rafdb", "--root", str(raf), "--cache-dir",
                           str(tmp_path / "cache"), "--quiet"], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stdout
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "split 'train' has no usable image" in last and "Skip report" in last
    assert "Traceback" not in proc.stderr and '"n": 0' not in proc.stdout
