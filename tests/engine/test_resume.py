"""Resume is exact: a run stopped or killed mid-epoch and resumed ends with bit-identical weights."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ferlib.engine import EpochSampler, ResumableSampler, train
from ferlib.engine.checkpoint import load_checkpoint

# Spawns processes or trains end to end: the slow tier, so that make test-fast stays quick.
pytestmark = pytest.mark.slow

TINY = dict(dataset_kwargs={"n_train": 48, "n_test": 24, "progress": False}, model_kwargs={"width": 8},
            input_size=32, progress=False)
ROOT = Path(__file__).resolve().parents[2]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_epoch_sampler_start_skips_exactly_the_consumed_items():
    s = EpochSampler(10, seed=3, rank=1, world=2)
    s.set_epoch(4)
    full = list(s)
    s.set_epoch(4, start=2)
    assert list(s) == full[2:] and len(s) == len(full) - 2
    other = EpochSampler(10, seed=3, rank=0, world=2)
    other.set_epoch(4)
    assert sorted(full + list(other)) == list(range(10))  # the two ranks share the epoch, no overlap
    s.set_epoch(5)
    assert list(s) != full


def test_resumable_sampler_skips_within_the_same_epoch_order():
    from ferlib.data.samplers import ImbalancedDatasetSampler

    inner = ImbalancedDatasetSampler([0, 0, 0, 1, 2, 2], num_samples=12, seed=1)
    s = ResumableSampler(inner)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start=5)
    assert list(s) == full[5:] and len(s) == 7
    s.set_epoch(3)
    assert list(s) != full


def test_stop_mid_epoch_then_resume_from_fallback_is_bit_identical(tmp_path):
    """SAM + accumulation + EMA + a recipe sampler, stopped mid-epoch 2, newest checkpoint corrupted:
    the resumed run falls back to the previous (also mid-epoch) checkpoint and ends where an
    uninterrupted run ends."""
    kw = dict(TINY, epochs=2, batch_size=8, sam=True, sampler="imbalanced", data=tmp_path / "data", seed=5)
    fo = {"accumulate": 2, "ema": 0.5, "checkpoint_every_steps": 1, "deterministic": True}
    full = train("baseline", "synthetic", run=tmp_path / "full", fit_options=fo, **kw)
    part_dir = tmp_path / "part"
    stopped = train("baseline", "synthetic", run=part_dir, fit_options={**fo, "stop_after_steps": 5}, **kw)
    assert stopped.summary["stopped"] and stopped.summary["stopped_at_step"] == 5
    ck = load_checkpoint(part_dir / "last.pt")["state"]
    prev = load_checkpoint(part_dir / "last.pt.prev")["state"]
    # 48 images / 8 = 6 micro-batches = 3 updates per epoch: step 5 is batch 4 of epoch 2, step 4 batch 2
    assert (ck["epoch"], ck["batch_in_epoch"], prev["epoch"], prev["step"], prev["batch_in_epoch"]) == (1, 4, 1, 4, 2)
    (part_dir / "last.pt").write_bytes((part_dir / "last.pt").read_bytes()[:100])
    with pytest.warns(UserWarning, match="unreadable"):
        part = train("baseline", "synthetic", run=part_dir, fit_options=fo, **kw)
    a, b = load_checkpoint(full.run_dir / "last.pt"), load_checkpoint(part.run_dir / "last.pt")
    assert_same_weights(a["model"], b["model"])
    assert_same_weights(a["ema"], b["ema"])
    rows = lambda d: [{k: v for k, v in json.loads(x).items() if k != "time_s"}  # noqa: E731
                      for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert rows(part.run_dir) == rows(full.run_dir)
    assert part.summary["test_selected"] == full.summary["test_selected"]


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    """A `python -m ferlib train` process is SIGKILLed after a mid-epoch step checkpoint; --resume ends
    with the weights of an uninterrupted run (CPU, --deterministic)."""
    def cli(run_dir, *extra):
        return [sys.executable, "-m", "ferlib", "train", "--model", "baseline", "--dataset", "synthetic",
                "--data-root", str(tmp_path / "data"), "--run-dir", str(run_dir), "--epochs", "2",
                "--batch-size", "4", "--device", "cpu", "--deterministic", "--checkpoint-every-steps", "1",
                "--no-progress", "--set", "input_size=32", "--set", "model_kwargs.width=8",
                "--set", "dataset_kwargs={n_train: 64, n_test: 16, progress: false}", *extra]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cli(tmp_path / "full"), check=True, env=env, cwd=tmp_path, capture_output=True)
    proc = subprocess.Popen(cli(tmp_path / "part"), env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    last, killed_at = tmp_path / "part" / "last.pt", None
    try:
        while proc.poll() is None:
            try:
                st = torch.load(last, weights_only=True)["state"] if last.exists() else None
            except Exception:  # noqa: BLE001 - replaced while reading: try again
                st = None
            if st is not None and st["step"] >= 3 and 0 < st["batch_in_epoch"] < 16:
                proc.send_signal(signal.SIGKILL)
                killed_at = st
                break
            time.sleep(0.01)
    finally:
        proc.wait()
    assert killed_at is not None and proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    resumed = subprocess.run(cli(tmp_path / "part", "--resume"), check=True, env=env, cwd=tmp_path,
                             capture_output=True, text=True)
    assert "resumed" in resumed.stdout
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "part" / "last.pt")
    assert a["state"]["step"] == b["state"]["step"] == 32
    assert_same_weights(a["model"], b["model"])
    assert_same_weights(a["optimizer"]["state"][0], b["optimizer"]["state"][0])
