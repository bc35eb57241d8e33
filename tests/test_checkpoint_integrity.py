"""Issue 19, checkpoint side: a flipped bit is found, leftovers of a killed write are removed, a file's hash
can be printed, and an HTML page saved as ``.pth`` is called what it is."""
import hashlib
import subprocess
import sys

import pytest
import torch

from ferlib.engine.checkpoint import (CHECKSUM_KEY, CheckpointError, checksum, load_checkpoint, read_checkpoint_file,
                                      save_checkpoint)

#: float32 1.5 repeated: easy to find in the file, and its exponent byte is 0x3f
MARK = torch.full((64,), 1.5)


def flip_bit_in_tensor(path, tensor: torch.Tensor, byte: int = 3, bit: int = 6) -> None:
    """Flip one bit of ``tensor``'s bytes inside the saved file ``path`` (torch stores tensors uncompressed)."""
    data = bytearray(path.read_bytes())
    at = data.find(tensor.numpy().tobytes())
    assert at >= 0 and data.find(tensor.numpy().tobytes(), at + 1) < 0
    data[at + byte] ^= 1 << bit
    path.write_bytes(bytes(data))


def state(v: float = 0.0) -> dict:
    return {"model": {"w": MARK.clone(), "b": torch.tensor([v])}, "state": {"epoch": 3, "best": 0.5}}


def test_saved_checkpoint_carries_a_checksum_removed_on_load(tmp_path):
    save_checkpoint(state(), tmp_path / "last.pt")
    raw = torch.load(tmp_path / "last.pt", weights_only=True)
    assert raw[CHECKSUM_KEY] == checksum(state()) and raw[CHECKSUM_KEY].startswith("sha256:")
    got = load_checkpoint(tmp_path / "last.pt")
    assert CHECKSUM_KEY not in got and torch.equal(got["model"]["w"], MARK) and got["state"]["epoch"] == 3


def test_flipped_bit_is_detected_and_falls_back_to_prev(tmp_path):
    p = tmp_path / "last.pt"
    save_checkpoint(state(1.0), p)
    save_checkpoint(state(2.0), p)  # the first becomes last.pt.prev
    flip_bit_in_tensor(p, MARK)
    assert torch.load(p, weights_only=True)["model"]["w"][0] != 1.5  # torch alone loads the damaged weight
    with pytest.raises(CheckpointError, match=r"last\.pt is corrupt.*no longer match the checksum"):
        read_checkpoint_file(p)
    refused = []
    with pytest.warns(UserWarning, match=r"checkpoint .*last\.pt is corrupt, hence unreadable.*trying the previous"):
        got = load_checkpoint(p, refused=refused)
    assert float(got["model"]["b"]) == 1.0 and torch.equal(got["model"]["w"], MARK)
    assert len(refused) == 1 and str(p) in str(refused[0])


def test_changed_value_outside_tensors_is_detected(tmp_path):
    p = tmp_path / "best.pt"
    save_checkpoint(state(), p, keep_previous=False)
    raw = torch.load(p, weights_only=True)
    raw["state"]["epoch"] = 4
    torch.save(raw, p)
    with pytest.warns(UserWarning, match="corrupt"):
        assert load_checkpoint(p) is None


def test_checkpoint_without_checksum_still_loads(tmp_path):
    torch.save(state(), tmp_path / "last.pt")  # as ferlib wrote them before checksums
    got = load_checkpoint(tmp_path / "last.pt")
    assert torch.equal(got["model"]["w"], MARK) and got["state"] == {"epoch": 3, "best": 0.5}


def test_temp_files_of_dead_processes_are_removed_on_the_next_save(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for name in (f".last.pt.tmp{dead}", f".best.pt.tmp{dead}", f".last.pt.tmp{alive.pid}", "notes.tmp1"):
            (tmp_path / name).write_bytes(b"x" * 1000)
        save_checkpoint(state(), tmp_path / "last.pt")
        left = sorted(p.name for p in tmp_path.iterdir())
    finally:
        alive.kill()
        alive.wait()
    assert left == sorted([f".last.pt.tmp{alive.pid}", "last.pt", "notes.tmp1"])
