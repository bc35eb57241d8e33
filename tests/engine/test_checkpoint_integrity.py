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


# --- python -m ferlib weights sha256 ---------------------------------------------------------------------

def run_sha256(*files):
    return subprocess.run([sys.executable, "-m", "ferlib", "weights", "sha256", *map(str, files)], capture_output=True,
                          text=True)


def test_sha256_prints_hash_and_size_of_an_unregistered_file(tmp_path):
    f = tmp_path / "mine.pth"
    f.write_bytes(b"\x00\x01" * 500)
    proc = run_sha256(f)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    assert first == f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f}  (1,000 bytes)"
    assert "no registry entry has this file name" in second


def test_sha256_says_whether_a_registered_file_matches(tmp_path, monkeypatch, capsys):
    from dataclasses import replace

    from ferlib.cli import weights as cli
    from ferlib.weights import get_weights, registry

    f = tmp_path / "ir50.pth"
    f.write_bytes(b"not the released ir50" * 10)
    proc = run_sha256(f)  # the registry's ir50.pth is 174,472,765 bytes
    assert proc.returncode == 1 and "DIFFERS from registry entry 'ir50_ms1m' (ir50.pth)" in proc.stdout
    assert "truncated download?" in proc.stdout
    same = replace(get_weights("ir50_ms1m"), size=f.stat().st_size, sha256=hashlib.sha256(f.read_bytes()).hexdigest())
    monkeypatch.setitem(registry._WEIGHTS, "ir50_ms1m", same)
    assert cli.main(["sha256", str(f)]) == 0
    assert "matches registry entry 'ir50_ms1m'" in capsys.readouterr().out
    monkeypatch.setitem(registry._WEIGHTS, "ir50_ms1m", replace(same, sha256="0" * 64))
    assert cli.main(["sha256", str(f), str(tmp_path / "absent.pth")]) == 2
    out = capsys.readouterr()
    assert "DIFFERS" in out.out and "whose sha256 is 0000" in out.out and "absent.pth does not exist" in out.err


# --- read_checkpoint on what a failed download leaves ----------------------------------------------------

@pytest.mark.parametrize("content, kind", [
    (b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>...</body></html>", "an HTML page"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:f696a1d2\nsize 174472765\n", "a git-lfs pointer"),
])
def test_text_saved_as_pth_is_named_not_called_pickled_objects(tmp_path, content, kind):
    from ferlib.weights import PretrainedWeightsError, UnsafeCheckpointError, read_checkpoint

    f = tmp_path / "ir50.pth"
    f.write_bytes(content)
    with pytest.raises(PretrainedWeightsError) as err:
        read_checkpoint(f)
    assert f"{f} is {kind}, not a checkpoint" in str(err.value)
    assert not isinstance(err.value, UnsafeCheckpointError) and "pickled" not in str(err.value)
    if kind == "an HTML page":
        assert "a failed download?" in str(err.value)


def test_last_checkpoint_stays_in_place_while_the_next_is_written(tmp_path, monkeypatch):
    """A kill during the write used to leave only last.pt.prev (last.pt was renamed first)."""
    from ferlib.engine import checkpoint as ck

    p = tmp_path / "last.pt"
    save_checkpoint(state(1.0), p)
    seen, real_save = [], torch.save

    def save_and_look(obj, f):
        seen.append(sorted(x.name for x in tmp_path.iterdir() if not x.name.startswith(".")))
        real_save(obj, f)

    monkeypatch.setattr(ck.torch, "save", save_and_look)
    save_checkpoint(state(2.0), p)
    assert seen == [["last.pt"]]
    assert float(load_checkpoint(p)["model"]["b"]) == 2.0
    assert float(load_checkpoint(tmp_path / "last.pt.prev")["model"]["b"]) == 1.0
    assert sorted(x.name for x in tmp_path.iterdir()) == ["last.pt", "last.pt.prev"]
