"""Devices, seeding and the environment record of a run."""
from __future__ import annotations

import contextlib
import os
import platform
import random
import subprocess
from pathlib import Path

import numpy as np
import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    return torch.device(device)


def configure_threads(threads: int | None = None) -> int:
    """Set torch's CPU thread count and return the count in use.

    ``None`` honours ``OMP_NUM_THREADS`` when it is set to a positive integer and otherwise leaves
    torch's default (one thread per core). An int sets the intra-op threads and, where torch still
    allows it (before any inter-op parallel work has started), the inter-op threads too. On a machine
    shared with other work, torch's default oversubscribes the cores: one or two threads is then
    several times faster per step.
    """
    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "").strip()
        if not env:
            return torch.get_num_threads()
        try:
            threads = int(env)
        except ValueError:
            return torch.get_num_threads()
        if threads < 1:
            return torch.get_num_threads()
    elif int(threads) < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    threads = int(threads)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # already set, or inter-op work has started: torch allows it once, early
        pass
    return torch.get_num_threads()


def seed_everything(seed: int) -> None:
    """One seed for Python, NumPy and torch (all devices); the deterministic switches are
    :func:`backend_flags`'s (set for one run and restored)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> dict:
    import torchvision

    import ferlib

    from ferlib.ops.selective_scan import mamba_ssm_status

    info = {
        "ferlib": ferlib.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
        "python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform(),
        "device": str(device), "git_commit": git_commit(), "threads": torch.get_num_threads(),
        "backend": backend_state(), "mamba_ssm": mamba_ssm_status(),
    }
    info.update(gpu_info(device))
    return info


def rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    # Plain tensors and numbers only, so checkpoints load with torch.load(weights_only=True).
    state = {"python": random.getstate(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


#: Training precisions: ``fp32`` (IEEE float32 matmuls and convolutions: TF32 off), ``tf32`` (float32 with
#: TF32 matmuls and cuDNN convolutions on Ampere+ GPUs: faster, ~10-bit mantissa products), ``bf16`` / ``fp16``
#: (autocast; fp16 with a GradScaler).
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


def backend_state() -> dict:
    """torch's global numeric switches as they are now (recorded in config.yaml ``environment.backend``)."""
    return {"tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32), "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}


@contextlib.contextmanager
def backend_flags(device: torch.device, precision: str, deterministic: bool = False):
    """Set torch's global switches for one run, and restore the previous ones on exit (also on an exception:
    a notebook's later cells keep their own settings).

    - TF32 for matmuls and cuDNN convolutions only when ``precision == "tf32"`` (torch's own default lets cuDNN
      convolutions use TF32; ``fp32`` here means IEEE float32 for both);
    - cuDNN autotuning on CUDA unless ``deterministic``;
    - ``deterministic``: ``torch.use_deterministic_algorithms`` (warn-only: an op without a deterministic
      kernel warns, and :func:`nondeterministic_ops` lists the ones ferlib knows of), cuDNN deterministic, and
      ``CUBLAS_WORKSPACE_CONFIG`` (set for the process, as cuBLAS reads it once).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    # the legacy allow_tf32 switches only: torch >= 2.9 refuses to read a state set through both of its APIs
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic
        torch.backends.cudnn.deterministic = bool(deterministic)
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        yield backend_state()
    finally:
        matmul_tf32, cudnn_tf32, benchmark, cudnn_det, det, warn_only = saved
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
        torch.backends.cudnn.benchmark = benchmark
        torch.backends.cudnn.deterministic = cudnn_det
        torch.use_deterministic_algorithms(det, warn_only=warn_only)


#: Modules whose CUDA backward has no deterministic kernel (torch.use_deterministic_algorithms' list).
_NONDETERMINISTIC_CUDA_BACKWARD = (
    torch.nn.AdaptiveAvgPool2d, torch.nn.AdaptiveAvgPool3d, torch.nn.AdaptiveMaxPool2d, torch.nn.AvgPool3d,
    torch.nn.FractionalMaxPool2d, torch.nn.FractionalMaxPool3d, torch.nn.ReflectionPad1d, torch.nn.ReflectionPad2d,
    torch.nn.ReflectionPad3d, torch.nn.CTCLoss,
)


def nondeterministic_ops(model: torch.nn.Module, device: torch.device, deterministic: bool = True) -> list[str]:
    """The operations of ``model`` that give run-to-run different results on ``device`` (recorded in config.yaml).

    On CPU: none. On CUDA: the modules whose backward uses atomic adds (adaptive pooling, reflection padding …;
    torch has no deterministic kernel for them), and, unless ``deterministic``, mamba_ssm's selective-scan
    backward and bilinear upsampling backward (under ``deterministic`` FERMam uses the PyTorch scan and a matmul
    form of the upsampling instead). ``torch.nn.functional`` calls outside these are not seen here; torch warns
    about them at run time.
    """
    if device.type != "cuda":
        return []
    kinds = sorted({type(m).__name__ for m in model.modules() if isinstance(m, _NONDETERMINISTIC_CUDA_BACKWARD)})
    ops = [f"{k} backward (CUDA atomic adds)" for k in kinds]
    if not deterministic:
        from ferlib.ops.selective_scan import scan_backends

        if "cuda" in scan_backends(model, device):
            ops.append("mamba_ssm selective_scan backward (CUDA atomic adds)")
        if any(getattr(m, "upsamples_bilinear", False) for m in model.modules()):
            ops.append("bilinear interpolate backward (CUDA atomic adds)")
        ops.append("cuDNN autotuned convolutions (cudnn.benchmark)")
    return ops


def gpu_info(device: torch.device) -> dict:
    """Name, compute capability, memory, CUDA runtime and NVIDIA driver of a CUDA ``device`` ({} otherwise)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return {}
    props = torch.cuda.get_device_properties(device)
    return {"gpu": props.name, "capability": f"{props.major}.{props.minor}",
            "gpu_memory_gib": round(props.total_memory / 2**30, 1), "cuda_runtime": torch.version.cuda,
            "driver": _nvidia_driver(), "gpu_count": torch.cuda.device_count()}


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None
