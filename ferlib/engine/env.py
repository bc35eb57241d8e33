"""Devices, seeding and the environment record of a run."""
from __future__ import annotations

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


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """One seed for Python, NumPy and torch (all devices); ``deterministic`` sets torch's flags."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


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

    info = {
        "ferlib": ferlib.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
        "python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform(),
        "device": str(device), "git_commit": git_commit(), "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
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
