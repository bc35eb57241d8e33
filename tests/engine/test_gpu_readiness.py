"""What a run on GPUs relies on, checked on CPU (issue 27): the card's batch is the global batch, precision
means what it says and fit() leaves torch's switches as it found them, deterministic runs say where they
are not, the environment is recorded, a broken mamba_ssm is not silent, rank 0 prepares the data first
without a fixed time limit."""
import os
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
import yaml

from ferlib.engine import train
from ferlib.engine.distributed import BatchSplitError, per_process_batch, rank0_first
from ferlib.engine.env import backend_flags, backend_state, nondeterministic_ops
from ferlib.models import create_model
from ferlib.models.fermam.pyramid_fusion import PyramidMambaFusionBlock, upsample_bilinear_matmul
import ferlib.ops.selective_scan

scan_module = sys.modules["ferlib.ops.selective_scan"]  # the module (ferlib.ops exports the function of that name)

from test_ddp import _free_port

TINY = dict(dataset_kwargs={"n_train": 48, "n_test": 24, "progress": False}, batch_size=16,
            model_kwargs={"width": 8}, input_size=32, progress=False)


@pytest.fixture
def flags_restored():
    """Leave torch's global switches as the test found them, whatever the test does."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic, torch.are_deterministic_algorithms_enabled())
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[0], saved[1]
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]
    torch.use_deterministic_algorithms(saved[4])


# --- the global batch ------------------------------------------------------------------------------------

def test_each_process_takes_its_share_of_the_global_batch():
    assert [per_process_batch(300, w) for w in (1, 2, 3, 4)] == [300, 150, 100, 75]
    with pytest.raises(BatchSplitError, match=r"the global batch of 300 images does not split over 8 processes .*"
                                              r"Pass --batch-size 296 or 304"):
        per_process_batch(300, 8)


def test_a_batch_that_does_not_split_stops_before_anything_is_touched(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun sets; no process group is joined before the check
    with pytest.raises(BatchSplitError, match="global batch of 15 images does not split over 2 processes"):
        train("baseline", "synthetic", data=tmp_path / "data", run=tmp_path / "run", epochs=1,
              **{**TINY, "batch_size": 15})
    assert not (tmp_path / "data").exists()  # no data generated, no run file written (the run lock may leave the folder)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.slow  # real processes
def test_the_cli_says_it_in_one_line(tmp_path):
    import subprocess

    env = {**os.environ, "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "ferlib", "train", "--model", "fermam", "--dataset", "synthetic",
                          "--batch-size", "7", "--device", "cpu", "--run-dir", str(tmp_path / "r")],
                         env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1].startswith("error: the global batch of 7 images does not split over 2")
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


# --- precision and torch's switches ----------------------------------------------------------------------

def test_backend_flags_set_tf32_only_for_tf32_and_restore_everything(flags_restored):
    torch.backends.cuda.matmul.allow_tf32 = True  # e.g. a notebook cell before the run
    torch.backends.cudnn.benchmark = True
    before = backend_state()
    with backend_flags(torch.device("cpu"), "fp32", deterministic=True) as inside:
        assert inside["tf32_matmul"] is False and inside["tf32_cudnn"] is False
        assert inside["deterministic_algorithms"] is True and inside["cudnn_benchmark"] is False
    assert backend_state() == before
    with backend_flags(torch.device("cuda"), "tf32") as inside:
        assert inside["tf32_matmul"] is True and inside["tf32_cudnn"] is True and inside["cudnn_benchmark"] is True
        assert inside["deterministic_algorithms"] is False
    assert backend_state() == before


def test_backend_flags_are_restored_when_the_run_fails(flags_restored):
    torch.backends.cudnn.allow_tf32 = True
    before = backend_state()
    with pytest.raises(RuntimeError, match="boom"):
        with backend_flags(torch.device("cpu"), "bf16", deterministic=True):
            raise RuntimeError("boom")
    assert backend_state() == before


def test_fit_restores_the_flags_after_a_run_and_after_a_failed_run(tmp_path, flags_restored):
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    before = backend_state()
    run = train("baseline", "synthetic", data=tmp_path / "d", run=tmp_path / "r", epochs=1, device="cpu",
                precision="tf32", fit_options={"deterministic": True}, **TINY)
    assert backend_state() == before
    cfg = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    assert cfg["resolved"]["precision"] == "tf32" and cfg["resolved"]["deterministic"] is True
    assert cfg["environment"]["backend"]["tf32_matmul"] is True  # recorded as the run had it
    assert cfg["environment"]["backend"]["deterministic_algorithms"] is True
    assert run.summary["precision"] == "tf32"
    from ferlib.tables import runs_table

    table = runs_table(tmp_path)
    assert list(table["precision"]) == ["tf32"]  # what 10_results shows
    with pytest.raises(FloatingPointError):  # a run that fails (nan loss) leaves the switches too
        train("baseline", "synthetic", data=tmp_path / "d", run=tmp_path / "n", epochs=1, device="cpu",
              std=(0.0, 0.0, 0.0), fit_options={"deterministic": True}, **{**TINY, "batch_size": 48})
    assert backend_state() == before


# --- deterministic: the FERMam upsampling, the scan, what is listed ---------------------------------------

@pytest.mark.parametrize("side", [1, 3])
def test_matmul_upsampling_equals_bilinear_interpolate_values_and_gradients(side):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, side, side, generator=g, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, 4, 7, 7, generator=g, dtype=torch.float64)
    ref = F.interpolate(x, size=(7, 7), mode="bilinear", align_corners=False)
    out = upsample_bilinear_matmul(x, 7)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(out, x, grad)[0], torch.autograd.grad(ref, x, grad)[0],
                               rtol=1e-12, atol=1e-12)


def test_fusion_block_under_deterministic_algorithms_gives_the_same_tokens(flags_restored):
    torch.manual_seed(0)
    block = PyramidMambaFusionBlock(d_model=16, dropout=0.0).eval()
    x_ir, x_lm = torch.randn(2, 49, 16), torch.randn(2, 49, 16)
    ref = block(x_ir, x_lm)
    with backend_flags(torch.device("cpu"), "fp32", deterministic=True):
        out = block(x_ir, x_lm)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_deterministic_runs_use_the_pytorch_scan(monkeypatch, flags_restored):
    monkeypatch.setattr(scan_module, "_mamba_selective_scan_fn", lambda: object())  # as if mamba_ssm imported
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert scan_module.resolve_backend("auto", "cuda") == "cuda"
    assert scan_module.resolve_backend("auto", "cpu") == "torch"
    with backend_flags(torch.device("cpu"), "fp32", deterministic=True):
        assert scan_module.resolve_backend("auto", "cuda") == "torch"


def test_nondeterministic_ops_are_listed_for_cuda():
    emonet = create_model("emonet", num_classes=7, alpha=0.25)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert nondeterministic_ops(emonet, cpu) == []
    assert nondeterministic_ops(emonet, cuda) == ["AdaptiveAvgPool2d backward (CUDA atomic adds)"]
    fermam = create_model("fermam", num_classes=7)
    assert nondeterministic_ops(fermam, cuda, deterministic=True) == []  # the fixed upsampling, the torch scan
    loose = nondeterministic_ops(fermam, cuda, deterministic=False)
    assert "bilinear interpolate backward (CUDA atomic adds)" in loose


# --- mamba_ssm: absent is silent, broken is said once ----------------------------------------------------

def test_absent_mamba_ssm_is_silent_and_recorded(monkeypatch, recwarn):
    import importlib.util

    if importlib.util.find_spec("mamba_ssm") is not None:
        pytest.skip("mamba_ssm is installed here")
    monkeypatch.setattr(scan_module, "_MAMBA", {})
    assert scan_module._mamba_selective_scan_fn() is None
    assert scan_module.mamba_ssm_status() == {"version": None, "import_error": "not installed"}
    assert not [w for w in recwarn if issubclass(w.category, scan_module.MambaSSMImportWarning)]


def test_broken_mamba_ssm_warns_once_with_its_error(monkeypatch):
    import types

    broken = types.ModuleType("mamba_ssm")
    broken.__path__ = []  # a package whose compiled part fails to load
    monkeypatch.setattr(scan_module, "_MAMBA", {})
    monkeypatch.setitem(sys.modules, "mamba_ssm", broken)
    monkeypatch.setitem(sys.modules, "mamba_ssm.ops", None)
    with pytest.warns(scan_module.MambaSSMImportWarning, match=r"mamba_ssm is installed but does not import "
                                                               r"\(ModuleNotFoundError: No module named 'mamba_ssm.ops"):
        assert scan_module._mamba_selective_scan_fn() is None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not a second time
        assert scan_module._mamba_selective_scan_fn() is None
        assert "No module named 'mamba_ssm.ops" in scan_module.mamba_ssm_status()["import_error"]


# --- rank 0 first, as long as it takes -------------------------------------------------------------------

def _rank0_first_worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    marker = os.path.join(out_dir, "built")
    try:
        def build():
            if rank == 0:
                time.sleep(3.0)  # longer than the stall timeout: only the heartbeats keep the others waiting
                open(marker, "w").close()
            return os.path.exists(marker)

        seen = rank0_first(build, "build", heartbeat_s=0.2, stall_timeout_s=2.0, report_every_s=0.5)

        def fail():
            if rank == 0:
                raise ValueError("no data")
            return "ran"

        try:
            rank0_first(fail, "read the data", heartbeat_s=0.2, stall_timeout_s=2.0)
            failed = None
        except (ValueError, RuntimeError) as e:
            failed = f"{type(e).__name__}: {e}"
        with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as f:
            f.write(f"{seen}\n{failed}\n")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # real processes
def test_rank0_prepares_first_with_heartbeats_and_failures_stop_every_rank(tmp_path):
    mp.spawn(_rank0_first_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = (tmp_path / "rank0.txt").read_text().splitlines()
    r1 = (tmp_path / "rank1.txt").read_text().splitlines()
    assert r0[0] == r1[0] == "True"  # rank 1 read after rank 0 had written, 3 s > the 2 s stall timeout
    assert r0[1] == "ValueError: no data"
    assert r1[1] == "RuntimeError: rank 0 failed to read the data; its error is above (rank 1 stops too)"


def test_one_image_per_process_through_a_batchnorm_head_says_which_batch_to_pass(tmp_path):
    tiny = {"dim_emb": 32, "depth": 1, "num_heads": 2, "head_hidden": (16, 8), "num_anchors": 2}
    with pytest.raises(BatchSplitError, match=r"grefel's BatchNorm cannot train on 1 image per process \(global batch "
                                              r"1 over 1 process\(es\), .*pass --batch-size 2 or more"):
        train("grefel", "synthetic", data=tmp_path / "d", run=tmp_path / "r", epochs=1, batch_size=1,
              max_steps=1, device="cpu", progress=False, model_kwargs=tiny, input_size=32, stored_size=32,
              train_transforms=[], sampler_kwargs={"num_samples": 8},
              dataset_kwargs={"n_train": 8, "n_test": 4, "progress": False})
