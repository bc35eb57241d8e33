"""The engine on a CUDA device: each paper's synthetic card trains in bf16 (deterministic) and fp16 (loss
scaling), a run stopped mid-epoch and resumed equals the uninterrupted one, and ``evaluate`` on the GPU gives the
CPU's logits (fp32, TF32 off). Marked ``gpu``; ``make gpu-check`` runs them with the benchmarks.

    pytest -m gpu tests/engine/test_cuda.py                              # on a CUDA machine, ~3 min
    FERLIB_CUDA_TESTS_ON_CPU=1 pytest -m gpu tests/engine/test_cuda.py -k emonet   # the same code on CPU, toy sizes

Without CUDA they skip, saying so, unless ``FERLIB_CUDA_TESTS_ON_CPU=1``: then they run on the CPU at toy sizes,
with fp32 for the deterministic run and its resume pair (CPU bf16 kernels are not bit-reproducible run to run) and
bf16 as the second precision, so that the code cannot rot between GPU loans.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import yaml

from ferlib.recipes import list_papers, load_recipe

ON_CPU = os.environ.get("FERLIB_CUDA_TESTS_ON_CPU") == "1"
NO_CUDA = "no CUDA device: the CUDA correctness tests need one (FERLIB_CUDA_TESTS_ON_CPU=1 runs them on the CPU)"
skip_without_cuda = pytest.mark.skipif(not torch.cuda.is_available() and not ON_CPU, reason=NO_CUDA)
PAPERS = tuple(list_papers())
#: Resume vs uninterrupted, for a run whose config.yaml lists non-deterministic ops: max |Δw| ≤ this × max(1, max |w|).
RESUME_TOLERANCE = 1e-3
#: GPU evaluation vs the CPU's (fp32, TF32 off): max |Δlogit| ≤ this × max(1, max |logit|).
EVAL_TOLERANCE = 1e-3
#: Sizes: on CUDA 1024 + 256 images, 20 steps of batch 32; on the CPU toy sizes (the synthetic cards are already
#: narrow for MFER, the others shrink their input).
GPU_SIZES = {"n_train": 1024, "n_test": 256, "batch": 32, "steps": 20, "eval_batch": 128, "tiny": False}
CPU_SIZES = {"n_train": 48, "n_test": 24, "batch": 2, "steps": 2, "eval_batch": 32, "tiny": True}
TINY_OVERRIDES = {"input_size": 32, "stored_size": 32}


class Bench:
    """The device, the sizes, the synthetic set and the runs made so far (shared by the tests of one paper)."""

    def __init__(self, device: torch.device, work: Path):
        self.device, self.work = device, work
        self.size = GPU_SIZES if device.type == "cuda" else CPU_SIZES
        # (deterministic run and resume pair, second precision) as docs/design.md's precision section says
        self.precisions = ("bf16", "fp16") if device.type == "cuda" else ("fp32", "bf16")
        self.data_root = work / "synthetic"
        self.runs: dict = {}

    def train(self, paper: str, name: str, precision: str, deterministic: bool = True,
              stop_after_steps: int | None = None, resume: bool = False):
        """One short ``ferlib.engine.train`` of ``paper``'s synthetic card into ``work/runs/<paper>/<name>``."""
        from ferlib.engine import DataOptions, RunDirOptions, train

        s = self.size
        fit_options = {"precision": precision, "deterministic": deterministic}
        if stop_after_steps is not None:
            fit_options["stop_after_steps"] = stop_after_steps
        overrides = dict(TINY_OVERRIDES) if s["tiny"] and paper != "mfer" else {}
        card = load_recipe(paper, "synthetic")
        if card.sampler == "subset":  # the demo entries draw a part of their 2,400 faces; this set may be smaller
            kw = card.sampler_kwargs or {}
            overrides["sampler_kwargs"] = {**kw, "num_samples": min(s["n_train"], kw.get("num_samples", s["n_train"]))}
        return train(paper, "synthetic", RunDirOptions(self.work / "runs" / paper / name, resume=resume),
                     DataOptions(self.data_root, cache=self.work / "cache"), device=str(self.device),
                     batch_size=s["batch"], epochs=1, max_steps=s["steps"], seed=0, progress=False,
                     fit_options=fit_options,
                     dataset_kwargs={"n_train": s["n_train"], "n_test": s["n_test"], "progress": False}, **overrides)

    def main_run(self, paper: str):
        """The deterministic run in the first precision (trained once, used by several tests)."""
        if paper not in self.runs:
            self.runs[paper] = self.train(paper, self.precisions[0], self.precisions[0])
        return self.runs[paper]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from ferlib.data import load_dataset

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS reads it once, before deterministic runs
    work = tmp_path_factory.mktemp("cuda")
    b = Bench(torch.device("cuda" if torch.cuda.is_available() else "cpu"), work)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FERLIB_DATA", str(work))  # every cache goes here, nothing into the checkout's data/
        load_dataset("synthetic", b.data_root, "train", n_train=b.size["n_train"], n_test=b.size["n_test"],
                     progress=False)
        yield b


def metrics_rows(run) -> list[dict]:
    text = (Path(run.run_dir) / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def assert_trained(bench: Bench, run) -> None:
    """Finite losses, both checkpoints written, and (full runs only: a toy run takes two steps) accuracy above chance."""
    rows = metrics_rows(run)
    assert rows and all(math.isfinite(r["train_loss"]) for r in rows), rows
    d = Path(run.run_dir)
    assert (d / "last.pt").is_file() and (d / "best.pt").is_file()
    if not bench.size["tiny"]:
        chance = 1 / run.recipe.num_classes
        assert rows[-1]["eval_accuracy"] > chance, (rows[-1], chance)


def run_nondeterminism(run_dir: Path) -> list[str]:
    """What the run says is not deterministic (config.yaml ``resolved``): [] for a deterministic run whose ops
    all have deterministic kernels on its device, the listed ops otherwise."""
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text()).get("resolved", {})
    if not resolved.get("deterministic"):
        return ["the run was not deterministic (--deterministic off)"]
    return list(resolved.get("nondeterministic_ops") or [])


def float_tensors(path: Path) -> dict:
    from ferlib.engine.checkpoint import load_checkpoint

    return {k: t.double() for k, t in load_checkpoint(path)["model"].items() if t.is_floating_point() and t.numel()}


def test_a_run_says_where_it_is_not_deterministic(tmp_path):
    """The resume check's tolerance is 0 unless the run's config.yaml lists non-deterministic ops (a CPU test)."""
    cases = {"exact": {"deterministic": True, "nondeterministic_ops": []},
             "atomic": {"deterministic": True, "nondeterministic_ops": ["AdaptiveAvgPool2d backward (CUDA atomic adds)"]},
             "loose": {"deterministic": False, "nondeterministic_ops": []}}
    for name, resolved in cases.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(yaml.safe_dump({"resolved": resolved}))
    assert run_nondeterminism(tmp_path / "exact") == []
    assert run_nondeterminism(tmp_path / "atomic") == ["AdaptiveAvgPool2d backward (CUDA atomic adds)"]
    assert run_nondeterminism(tmp_path / "loose") == ["the run was not deterministic (--deterministic off)"]


@pytest.mark.gpu
@skip_without_cuda
@pytest.mark.parametrize("paper", PAPERS)
def test_deterministic_run_trains(bench, paper):
    """bf16 on CUDA (fp32 on the CPU), deterministic mode: finite losses, checkpoints, accuracy above chance."""
    assert_trained(bench, bench.main_run(paper))


@pytest.mark.gpu
@skip_without_cuda
@pytest.mark.parametrize("paper", PAPERS)
def test_resume_equals_the_uninterrupted_run(bench, paper):
    """Stopped after half the steps and resumed: the same weights, exactly when the run lists no non-deterministic
    op, else within RESUME_TOLERANCE × max(1, max |w|)."""
    main = Path(bench.main_run(paper).run_dir)
    prec, steps = bench.precisions[0], bench.size["steps"]
    half = max(1, steps // 2)
    bench.train(paper, "resumed", prec, stop_after_steps=half)
    resumed = main.parent / "resumed"
    assert (resumed / "last.pt").is_file(), "the stopped run wrote no checkpoint"
    bench.train(paper, "resumed", prec, resume=True)
    a, b = float_tensors(main / "last.pt"), float_tensors(resumed / "last.pt")
    assert a.keys() == b.keys()
    diff = max((float((a[k] - b[k]).abs().max()) for k in a), default=0.0)
    loose = run_nondeterminism(main)
    scale = max((float(t.abs().max()) for t in a.values()), default=0.0)
    tolerance = 0.0 if not loose else RESUME_TOLERANCE * max(1.0, scale)
    assert diff <= tolerance, f"resumed run differs by {diff:.3g} (tolerance {tolerance:.3g}; non-deterministic: {loose})"


@pytest.mark.gpu
@skip_without_cuda
@pytest.mark.parametrize("paper", PAPERS)
def test_second_precision_trains(bench, paper):
    """fp16 with loss scaling on CUDA (bf16 on the CPU), not deterministic: finite losses, checkpoints, above chance."""
    prec = bench.precisions[1]
    if prec == "fp16" and load_recipe(paper, "synthetic").sam:
        pytest.skip("the engine refuses SAM with fp16 loss scaling (use bf16 or fp32)")
    assert_trained(bench, bench.train(paper, prec, prec, deterministic=False))


@pytest.mark.gpu
@skip_without_cuda
@pytest.mark.parametrize("paper", PAPERS)
def test_evaluate_on_the_device_gives_the_cpus_logits(bench, paper):
    """``evaluate`` of the run's last checkpoint on the GPU and on the CPU, fp32 with TF32 off."""
    if bench.device.type == "cpu":
        pytest.skip("a CPU run has no device to compare with the CPU")
    from ferlib.data import load_dataset
    from ferlib.engine import evaluate, load_run
    from ferlib.engine.env import backend_flags

    model, recipe = load_run(bench.main_run(paper).run_dir, "last")
    test = load_dataset("synthetic", bench.data_root, "test", **recipe.dataset_kwargs)
    kw = dict(progress=False, precision="fp32", batch_size=bench.size["eval_batch"])
    with backend_flags(bench.device, "fp32"):  # TF32 off for the device pass
        on_dev = evaluate(model, test, recipe, str(bench.device), **kw)
    on_cpu = evaluate(model, test, recipe, "cpu", **kw)
    la, lb = on_dev["predictions"]["logits"], on_cpu["predictions"]["logits"]
    diff, scale = float(abs(la - lb).max()), float(abs(lb).max())
    assert diff <= EVAL_TOLERANCE * max(1.0, scale), f"max |logit difference| {diff:.3g} (max |logit| {scale:.3g})"
