"""Two processes (gloo on CPU) train like one process with the same global batch.

- exact: the DDP update path (gradient averaging, accumulation with ``no_sync``, a loss's own
  parameters averaged by hand) on a BatchNorm-free model equals one process on the whole batch;
- end to end: ``torchrun --nproc-per-node 2 -m ferlib train`` (the same global batch, 8 per process) against
  ``train()`` in one process, equal
  within tolerance (BatchNorm sees per-rank batches of 8 instead of 16), and its sharded + gathered
  evaluation equal to a one-process evaluation of the same weights.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ferlib.engine import load_run, predict, train
from ferlib.engine.checkpoint import load_checkpoint
from ferlib.engine.step import Stepper
from ferlib.models.registry import ModelOutput

# Spawns processes or trains end to end: the slow tier, so that make test-fast stays quick.
pytestmark = [pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built"), pytest.mark.slow]


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return ModelOutput(self.fc(x), x, {})


class BiasedCE(nn.Module):
    """Cross-entropy of logits + a learnable per-class bias (a loss with parameters, like centre losses)."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(3))

    def forward(self, out, y):
        return nn.functional.cross_entropy(out.logits + self.bias, y)


def _run_steps(rank: int, world: int, x: torch.Tensor, y: torch.Tensor, accumulate: int):
    """4 updates of a global batch of 8 (split over ranks, then into ``accumulate`` micro-batches)."""
    torch.manual_seed(0)
    model, loss = Tiny(), BiasedCE()
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    params = list(model.parameters()) + list(loss.parameters())
    opt = torch.optim.SGD(params, lr=0.5, momentum=0.9)
    micro = 8 // world // accumulate
    st = Stepper(net, loss, opt, params, list(loss.parameters()), torch.device("cpu"), "fp32", accumulate, micro)
    for step in range(4):
        mine = torch.arange(step * 8, step * 8 + 8)[rank::world]
        for k in range(accumulate):
            idx = mine[k * micro:(k + 1) * micro]
            st.micro(x[idx], y[idx], boundary=k == accumulate - 1)
    return [p.detach().clone() for p in params]


def _worker(rank, world, port, x, y, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.save(_run_steps(rank, world, x, y, accumulate=2), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_update_equals_one_process_on_the_whole_batch(tmp_path):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)
    mp.spawn(_worker, args=(2, _free_port(), x, y, str(tmp_path)), nprocs=2, join=True)
    one = _run_steps(0, 1, x, y, accumulate=1)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for a, b, c in zip(one, r0, r1):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(c, b, rtol=0, atol=0)  # the loss's own parameters too
    assert not torch.equal(one[-1], torch.zeros(3))


def test_torchrun_two_processes_match_one_process(tmp_path):
    data = tmp_path / "data"
    sets = {"input_size": 64, "model_kwargs": {"width": 8}, "train_transforms": [],
            "dataset_kwargs": {"n_train": 48, "n_test": 24, "progress": False}}
    train("baseline", "synthetic", data=data, run=tmp_path / "one", epochs=2, batch_size=16,
          device="cpu", progress=False, fit_options={"deterministic": True}, **sets)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "ferlib", "train", "--model", "baseline", "--dataset", "synthetic", "--data-root", str(data),
           "--run-dir", str(tmp_path / "two"), "--epochs", "2", "--batch-size", "16", "--device", "cpu",
           "--deterministic", "--no-progress", "--set", "input_size=64", "--set", "model_kwargs.width=8",
           "--set", "train_transforms=[]", "--set", "dataset_kwargs={n_train: 48, n_test: 24, progress: false}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("done:") == 1  # only rank 0 reports and writes
    rows1 = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    rows2 = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    # the global batch of 16 = 2 ranks × 8: same steps, same images; BatchNorm makes the only difference
    assert [r["step"] for r in rows2] == [r["step"] for r in rows1] == [3, 6]
    assert rows2[0]["train_loss"] == pytest.approx(rows1[0]["train_loss"], rel=0.03)
    assert rows2[1]["train_loss"] == pytest.approx(rows1[1]["train_loss"], rel=0.12)
    assert abs(rows2[1]["eval_accuracy"] - rows1[1]["eval_accuracy"]) <= 0.1
    assert rows2[1]["eval_n"] == rows1[1]["eval_n"] == 24  # the shards are not padded
    cfg = (tmp_path / "two" / "config.yaml").read_text()
    assert "world_size: 2" in cfg and "global_batch_size: 16" in cfg and "per_process_batch_size: 8" in cfg
    # the sharded, gathered evaluation equals a one-process evaluation of the same weights, in order
    model, recipe = load_run(tmp_path / "two")
    from ferlib.engine.training import load_split

    pred = predict(model, load_split(recipe, "test", data), recipe, "cpu", progress=False)
    with np.load(tmp_path / "two" / "predictions.npz") as z:
        np.testing.assert_allclose(z["logits"], pred["logits"], rtol=1e-5, atol=1e-5)
        assert (z["targets"] == pred["targets"]).all()
    assert len(load_checkpoint(tmp_path / "two" / "last.pt")["rng_ranks"]) == 2  # each rank resumes its RNG
