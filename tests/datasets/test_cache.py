"""The uint8 tensor cache: same pixels as decoding, skip reports kept, reuse when valid, rebuild when stale,
atomic writes, and the ``python -m ferlib prepare`` entry point."""
import json
import os
import pickle
import re
import warnings

import cv2
import numpy as np
import pytest
import torch

from ferlib.data import SkipWarning, load_dataset
from ferlib.data import cache as cache_mod
from ferlib.testing import FIXTURES_DIR

RAF = FIXTURES_DIR / "rafdb" / "basic"


def test_cache_matches_decoded_pixels(tmp_path):
    plain = load_dataset("rafdb", RAF, "test")
    c = load_dataset("rafdb", RAF, "test", cache=tmp_path, progress=False)
    assert type(c).__name__ == "CachedDataset" and len(c) == len(plain) and c.images.shape == (len(plain), 3, 100, 100)
    for i in (0, 5, len(c) - 1):
        assert torch.equal(c[i][0], plain[i][0]) and c[i][1] == plain[i][1]
    assert [str(p) for p in c.samples] == [str(p) for p in plain.samples]
    assert c.classes == plain.classes and c.label_set == plain.label_set


def test_resize_and_skip_report_once(tmp_path):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        c = load_dataset("rafdb", RAF, "train", cache=tmp_path, cache_size=64, progress=False)
    skip_warnings = [x for x in w if issubclass(x.category, SkipWarning)]
    assert len(skip_warnings) == 1 and "1 unreadable" in str(skip_warnings[0].message)
    assert "train_00002_aligned.jpg" in str(skip_warnings[0].message)
    assert len(c) == 23 and c.images.shape == (23, 3, 64, 64)
    assert dict(c.skip_report.counts) == {"unreadable": 1}
    plain = load_dataset("rafdb", RAF, "train")
    want = cv2.resize(plain[0][0].permute(1, 2, 0).numpy(), (64, 64), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(c[0][0].permute(1, 2, 0).numpy(), want)
    assert c.targets == plain.targets


def test_reused_when_valid_rebuilt_when_stale(tmp_path, monkeypatch):
    import shutil

    root = tmp_path / "raf"
    shutil.copytree(RAF, root)
    c1 = load_dataset("rafdb", root, "test", cache=tmp_path / "c", progress=False)
    built = []
    real = cache_mod.build_cache
    monkeypatch.setattr(cache_mod, "build_cache", lambda *a, **k: built.append(1) or real(*a, **k))
    c2 = load_dataset("rafdb", root, "test", cache=tmp_path / "c", progress=False)
    assert not built and c2.path == c1.path
    img = next((root / "Image" / "aligned").glob("test_*"))
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 10**9))
    c3 = load_dataset("rafdb", root, "test", cache=tmp_path / "c", progress=False)
    assert built == [1] and c3.path == c1.path and c3.index["key"] != c1.index["key"]
    c4 = load_dataset("rafdb", root, "test", cache=tmp_path / "c", cache_size=50, progress=False)
    assert c4.path != c1.path and c4.images.shape[-1] == 50
    assert not [p for p in (tmp_path / "c").iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_interrupted_build_leaves_no_cache(tmp_path, monkeypatch):
    calls = []

    def boom(ds, i, size, align, aligner):
        calls.append(i)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return np.zeros((size, size, 3), np.uint8)

    monkeypatch.setattr(cache_mod, "_prepare_one", boom)
    with pytest.raises(KeyboardInterrupt):
        load_dataset("rafdb", RAF, "test", cache=tmp_path, progress=False)
    assert not [p for p in tmp_path.iterdir() if (p / "index.json").exists()]


def test_ferplus_soft_targets_and_pickle(tmp_path):
    c = load_dataset("ferplus", FIXTURES_DIR / "ferplus", "train", label_mode="crossentropy", cache=tmp_path,
                     progress=False)
    plain = load_dataset("ferplus", FIXTURES_DIR / "ferplus", "train", label_mode="crossentropy")
    assert len(c) == len(plain) == 30
    for i in range(len(c)):
        assert torch.allclose(c[i][1], plain[i][1])
    c2 = pickle.loads(pickle.dumps(c))
    assert torch.equal(c2[3][0], c[3][0])
    assert c.batch([0, 2, 4]).shape == (3, 3, 48, 48)


def test_label_mode_changes_cache_folder(tmp_path):
    a = load_dataset("ferplus", FIXTURES_DIR / "ferplus", "train", label_mode="majority", cache=tmp_path,
                     progress=False)
    b = load_dataset("ferplus", FIXTURES_DIR / "ferplus", "train", label_mode="multi_target", cache=tmp_path,
                     progress=False)
    assert a.path != b.path and len(a) == 29 and len(b) == 30


def test_affectnet_crop_cached(tmp_path):
    c = load_dataset("affectnet8", FIXTURES_DIR / "affectnet", "val", cache=tmp_path, cache_size=56, progress=False)
    assert len(c) == 27 and c.skip_report.counts["missing"] == 1
    assert c.skip_report.counts["code 8-10 (none/uncertain/non-face)"] == 3


def test_prepare_cli(tmp_path, capsys):
    from ferlib.cli.prepare import main

    args = ["fer2013", "--root", str(FIXTURES_DIR / "fer2013"), "--size", "40", "--cache-dir", str(tmp_path), "--quiet"]
    assert main(args + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"train", "val", "test"} and out["train"]["n"] == 23 and out["val"]["shape"] == [3, 40, 40]
    # without --json: the class table (stderr) and a table of the caches, no JSON dump
    assert main(args) == 0
    printed = capsys.readouterr()
    assert "{" not in printed.out and '"n"' not in printed.out and "{" not in printed.err
    assert re.search(r"^train\s+23\s+3×40×40\s", printed.out, re.M), printed.out
    assert printed.out.splitlines()[0].split() == ["split", "images", "shape", "skipped", "cache"]
    assert re.search(r"^total\s", printed.err, re.M), printed.err  # the per-class counts, a total row
    rc = main(["rafdb", "--root", str(tmp_path / "missing"), "--quiet"])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_align_requires_cache():
    with pytest.raises(ValueError, match="cache=True"):
        load_dataset("rafdb", RAF, "train", align=True)


def test_parallel_build_equals_serial(tmp_path):
    a = load_dataset("rafdb", RAF, "train", cache=tmp_path / "a", cache_size=48, progress=False)
    b = load_dataset("rafdb", RAF, "train", cache=tmp_path / "b", cache_size=48, progress=False, cache_workers=2)
    assert np.array_equal(np.asarray(a.images), np.asarray(b.images)) and a.targets == b.targets
    assert dict(b.skip_report.counts) == {"unreadable": 1}


def _load_after(barrier, cache_root, done_file):
    barrier.wait(timeout=60)
    c = load_dataset("rafdb", RAF, "test", cache=cache_root, progress=False)
    with open(done_file, "a") as f:
        f.write(f"{len(c)}\n")


def test_processes_needing_one_cache_build_it_once(tmp_path, monkeypatch):
    """Two processes (notebooks run side by side) asking for the same missing cache at once: one builds it, the
    other waits on the folder's build lock and reads it; neither fails on the other's renames."""
    import multiprocessing
    import time

    builds = tmp_path / "builds.txt"
    real = cache_mod.build_cache

    def slow_build(*a, **k):  # long enough that the second process asks while the first still builds
        with open(builds, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(1.0)
        return real(*a, **k)

    monkeypatch.setattr(cache_mod, "build_cache", slow_build)
    ctx = multiprocessing.get_context("fork")  # the children keep the patched build_cache
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_load_after, args=(barrier, tmp_path / "c", tmp_path / "done.txt")) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(builds.read_text().split()) == 1
    n = len(load_dataset("rafdb", RAF, "test"))
    assert (tmp_path / "done.txt").read_text().split() == [str(n), str(n)]
