"""What the machine is: GPU, memory, torch / CUDA / cuDNN versions, the optional packages, mamba_ssm's kernel.

    python benchmarks/support/environment.py [--device cuda] [--out results/bench]   # writes environment.json

The first row of the ``make gpu-check`` table. Needs no optional package: a broken one is reported, not fatal.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

OPTIONAL = ("cv2", "triton", "mamba_ssm")


def probe(device: torch.device) -> dict:
    """ferlib's run environment (:func:`ferlib.engine.env.environment`) plus what a GPU check needs to know."""
    from ferlib.engine.env import environment
    from ferlib.ops.selective_scan import resolve_backend

    env = environment(device)
    env.update(cuda_available=torch.cuda.is_available(), cuda_build=torch.version.cuda, cpu_count=os.cpu_count(),
               scan_backend_auto=resolve_backend("auto", device))
    if device.type == "cuda":
        env["bf16_supported"] = torch.cuda.is_bf16_supported()
    env["optional"] = {}
    for mod in OPTIONAL:
        try:
            env["optional"][mod] = getattr(__import__(mod), "__version__", "present")
        except Exception as e:  # noqa: BLE001 - a broken optional package is reported, not fatal
            env["optional"][mod] = f"missing ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
    return env


def summary(env: dict) -> list[list[str]]:
    """``[item, result]`` rows for the ``make gpu-check`` table."""
    device = (f"{env['gpu']} ({env['gpu_memory_gib']} GiB, capability {env['capability']}, driver {env.get('driver')})"
              if env.get("gpu") else f"{env['device']} (no GPU: the numbers below measure no GPU)")
    scan = env["mamba_ssm"]["import_error"] or "imports"
    return [["device", device],
            ["torch", f"{env['torch']} (CUDA {env['cuda_build']}, cuDNN {env['backend']['cudnn']}), "
                      f"{env['threads']} CPU threads of {env['cpu_count']}"],
            ["mamba_ssm kernel", f"{scan}; scan backend auto = {env['scan_backend_auto']}"],
            ["optional packages", ", ".join(f"{m} {v}" for m, v in env["optional"].items())]]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    p.add_argument("--out", type=Path, default=Path("results/bench"))
    a = p.parse_args(argv)
    env = probe(torch.device(a.device))
    env["summary"] = summary(env)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "environment.json").write_text(json.dumps(env, indent=1, default=str))
    for item, text in env["summary"]:
        print(f"{item}: {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
