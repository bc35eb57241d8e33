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


@pytest.mark.slow  # a CLI process
def test_prepare_exits_nonzero_for_an_empty_train_split(raf, tmp_path):
    empty_train_images(raf)
    proc = subprocess.run([sys.executable, "-m", "ferlib", "prepare", "rafdb", "--root", str(raf), "--cache-dir",
                           str(tmp_path / "cache"), "--quiet"], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stdout
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "split 'train' has no usable image" in last and "Skip report" in last
    assert "Traceback" not in proc.stderr and '"n": 0' not in proc.stdout


# --- item 8: list files in another encoding, oversized images, read-only cache folder -----------------------

def reencode(path, encoding: str, insert: str = "") -> None:
    """Rewrite the text file ``path`` in ``encoding``; ``insert`` replaces the start of its second line."""
    lines = path.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    if insert:
        lines[1] = insert + lines[1][len(insert):]
    path.write_bytes("".join(lines).encode(encoding))


@pytest.mark.parametrize("dataset, fixture, rel, encoding, insert, found", [
    ("rafdb", "rafdb/basic", LIST, "utf-16", "", "UTF-16LE"),
    ("rafdb", "rafdb/basic", LIST, "latin-1", "train_é", "latin-1 / Windows-1252"),
    ("affectnet", "affectnet", "Manually_Annotated_file_lists/training.csv", "latin-1", "245/café", "latin-1"),
    ("ferplus", "ferplus", "fer2013new.csv", "utf-16-be", "", "UTF-16BE"),
    ("ferplus", "ferplus", "FER2013Train/label.csv", "utf-16-le", "", "UTF-16LE"),
    ("fer2013", "fer2013", "fer2013.csv", "utf-16", "", "UTF-16LE"),
])
def test_list_file_in_another_encoding_names_file_and_encoding(tmp_path, dataset, fixture, rel, encoding, insert,
                                                                found):
    root = tmp_path / "data"
    shutil.copytree(FIXTURES_DIR / fixture, root)
    if rel == "FER2013Train/label.csv":
        (root / "fer2013new.csv").unlink()  # the reader then reads the older per-folder label.csv
    reencode(root / rel, encoding, insert)
    with pytest.raises(DatasetFormatError) as err:
        load_dataset(dataset, root, "train", check="none")
    msg = str(err.value)
    assert msg.startswith(str(root / rel)) and "is not UTF-8 text" in msg and f"looks like {found}" in msg
    assert "iconv -f" in msg
    assert err.value.__context__ is None or err.value.__suppress_context__  # no UnicodeDecodeError traceback
    line = 2 if insert else 1
    assert f", line {line}:" in msg


def bomb_png(path, side: int = 14000) -> None:
    """A PNG whose header declares side×side grey pixels (over PIL's decompression-bomb limit) in 200 bytes."""
    Image.new("L", (8, 8), 128).save(path, format="PNG")
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", side, side)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("cache", [False, True], ids=["files", "cache"])
def test_oversized_image_is_skipped_and_counted(raf, tmp_path, cache):
    victim = raf / "Image" / "aligned" / "test_0001_aligned.jpg"
    bomb_png(victim)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(victim)
    with pytest.warns(SkipWarning, match="1 too large"):
        ds = load_dataset("rafdb", raf, "test", cache=tmp_path / "c" if cache else False, progress=False)
    assert len(ds) == 25 and dict(ds.skip_report.counts) == {"too large": 1}
    assert ds.skip_report.examples["too large"] == [str(victim)]


@pytest.fixture
def unwritable(monkeypatch):
    """``unwritable(folder)`` makes ``folder`` read-only: chmod, and, as root ignores the mode bits, a
    mkdir/open-for-writing inside it then fails with EACCES as the kernel does for other users."""
    import builtins
    import stat

    real_mkdir, real_open, folders = os.mkdir, builtins.open, []

    def inside(p) -> bool:
        return any(os.path.abspath(os.fspath(p)).startswith(os.fspath(f) + os.sep) for f in folders)

    def mkdir(p, *a, **k):
        if inside(p):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(p))
        return real_mkdir(p, *a, **k)

    def open_(p, mode="r", *a, **k):
        if isinstance(p, (str, os.PathLike)) and inside(p) and any(c in mode for c in "wax+"):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(p))
        return real_open(p, mode, *a, **k)

    def make(folder):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
        folders.append(folder.resolve())
        if os.geteuid() == 0:
            monkeypatch.setattr(os, "mkdir", mkdir)
            monkeypatch.setattr(builtins, "open", open_)
        return folder

    yield make
    for f in folders:
        f.chmod(0o755)


def test_read_only_cache_folder_is_a_cache_space_error(raf, tmp_path, unwritable):
    ro = unwritable(tmp_path / "ro-cache")
    with pytest.raises(cache_mod.CacheUnwritableError, match="cannot be written.*cache=False") as err:
        load_dataset("rafdb", raf, "test", cache=ro, progress=False)
    assert isinstance(err.value, cache_mod.CacheSpaceError)  # what the engine's cache="auto" falls back on
    assert list(ro.iterdir()) == []


def test_training_with_a_read_only_cache_reads_the_files(raf, tmp_path, unwritable, monkeypatch):
    from ferlib.engine.training import load_split
    from ferlib.recipes import load_recipe

    ro = unwritable(tmp_path / "ro-cache")
    monkeypatch.setattr(cache_mod, "default_cache_root", lambda: ro)
    recipe = load_recipe("baseline", dataset="rafdb")
    with pytest.warns(UserWarning, match="cannot be written.*reading the image files instead"):
        ds = load_split(recipe, "test", raf, progress=False)
    assert type(ds).__name__ == "FERDataset" and len(ds) == 26


# --- item 9: 16-bit grey PNGs --------------------------------------------------------------------------------

def test_16bit_grey_png_is_scaled_not_clipped(tmp_path):
    from ferlib.data.base import decode_image

    ramp = np.linspace(0, 65535, 256).round().astype(np.uint16)[None].repeat(8, 0)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    assert np.asarray(Image.open(tmp_path / "g16.png").convert("RGB")).mean() > 250  # PIL alone: white
    img = decode_image(tmp_path / "g16.png")
    assert img.dtype == np.uint8 and img.shape == (8, 256, 3)
    np.testing.assert_array_equal(img[0, :, 0], np.arange(256))
    assert (img[..., 0] == img[..., 2]).all() and abs(img.mean() - 127.5) < 0.01


def test_16bit_png_in_a_split_decodes_like_its_8bit_twin(raf):
    victim = raf / "Image" / "aligned" / "test_0001_aligned.jpg"
    grey8 = np.asarray(Image.open(victim).convert("L"))
    Image.fromarray(grey8.astype(np.uint16) * 257).save(victim, format="PNG")
    ds = load_dataset("rafdb", raf, "test")
    i = [str(s) for s in ds.samples].index(str(victim))
    np.testing.assert_array_equal(ds[i][0][0].numpy(), grey8)


# --- item 10: leftovers, short messages, duplicate rows, progress bars ----------------------------------------

def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


def test_cache_folders_of_killed_builds_are_removed_on_the_next_load(raf, tmp_path):
    c = tmp_path / "c"
    load_dataset("rafdb", raf, "test", cache=c, progress=False)
    (built,) = c.iterdir()
    gone = [c / f"{built.name}.tmp-{dead_pid()}", c / f"other-train-s64-abc.old-{dead_pid()}"]
    kept = c / f"{built.name}.tmp-{os.getppid()}"  # a build still running in a live process
    for d in gone + [kept]:
        d.mkdir()
        (d / "images.npy").write_bytes(b"\0" * 4096)
    load_dataset("rafdb", raf, "test", cache=c, progress=False)
    assert sorted(p.name for p in c.iterdir()) == sorted([built.name, kept.name])


def test_failed_cache_build_leaves_no_temp_folder(raf, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_mod, "_truncate_npy", boom)
    with pytest.raises(KeyboardInterrupt):
        load_dataset("rafdb", raf, "test", cache=tmp_path / "c", progress=False)
    assert list((tmp_path / "c").iterdir()) == []


def test_fer2013_without_header_does_not_print_the_pixels(tmp_path):
    src = (FIXTURES_DIR / "fer2013" / "fer2013.csv").read_text()
    (tmp_path / "fer2013.csv").write_text(src.split("\n", 1)[1])
    with pytest.raises(DatasetFormatError, match="missing column") as err:
        load_dataset("fer2013", tmp_path, "train")
    msg = str(err.value)
    assert len(msg) < 600, msg
    assert "(9," in msg or "characters)" in msg
    assert "is the header row missing?" in msg


def test_duplicate_rows_in_the_rafdb_list_warn_and_count_once(raf):
    lf = raf / LIST
    lines = lf.read_text().splitlines()
    train = [x for x in lines if x.startswith("train_")]
    lf.write_text("\n".join(lines + train[:5]) + "\n")
    with pytest.warns(UserWarning, match=r"5 duplicate row\(s\) ignored") as rec:
        ds = load_dataset("rafdb", raf, "train", check="exists")
    msg = next(str(w.message) for w in rec if "duplicate" in str(w.message))
    assert train[0].split()[0] in msg and "…" in msg
    assert len(ds) == 24
    lf.write_text("\n".join(lines + [train[0].split()[0] + " " + ("1" if train[0].split()[1] != "1" else "2")]))
    with pytest.raises(DatasetFormatError, match="listed again with label"):
        load_dataset("rafdb", raf, "train", check="exists")


def test_synthetic_generator_draws_no_bar_into_a_log(tmp_path):
    script = ("from ferlib.data.synthetic_faces import generate\n"
              f"generate({str(tmp_path / 'syn')!r}, n_train=30, n_test=10)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "synthetic train" not in proc.stderr and "it/s" not in proc.stderr and "\r" not in proc.stderr
