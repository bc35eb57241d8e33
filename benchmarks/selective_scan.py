"""Forward + backward time of the selective-scan backends at FERMam's shapes (docs/design.md §4, §8).

SS2D scan (docs/papers/fermam.md §5): batch B, 4 directions × d_inner 512 = 2048 channels, L = 49 (7×7),
d_state 16, B/C grouped per direction, delta bias + softplus, D skip. Fusion scan (§7): the ASFR
recurrence of ``fusion.ssm1`` (d_inner 1024, L 49, one shared A [16]). Backends: ``reference``
(sequential loop), ``torch`` (ferlib's scan) and ``cuda`` (mamba_ssm, only with a GPU and the
package). Writes ``results/bench/selective_scan.json``; the last printed line is
``selective_scan: reference <t> ms vs torch <t> ms = <ratio>x`` (SS2D scan, forward + backward).

    python benchmarks/selective_scan.py                 # batch 64, 2 timed iterations
    python benchmarks/selective_scan.py --batch 16 --iters 3 --device cuda
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from ferlib.models.fermam.asfr import ASFRSS2D
from ferlib.ops import cuda_backend_available, selective_scan

OUT = Path(__file__).resolve().parent.parent / "results" / "bench" / "selective_scan.json"


def ss2d_inputs(batch, device, directions=4, d_inner=512, length=49, d_state=16):
    g = torch.Generator().manual_seed(0)
    d = directions * d_inner

    def rnd(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g)).to(device).requires_grad_()

    A = (-torch.exp(torch.log(torch.arange(1, d_state + 1.0)).repeat(d, 1))).to(device).requires_grad_()
    return [rnd(batch, d, length), rnd(batch, d, length, scale=0.5), A, rnd(batch, directions, d_state, length),
            rnd(batch, directions, d_state, length), rnd(d), rnd(d, scale=0.1)]


def fusion_inputs(batch, device, d_inner=1024, length=49, d_state=16):
    g = torch.Generator().manual_seed(1)
    delta = torch.nn.functional.softplus(torch.randn(batch, length, d_inner, generator=g))
    decay = torch.exp(delta.unsqueeze(-1) * -torch.rand(d_state, generator=g)).to(device).requires_grad_()
    drive = (0.1 * torch.randn(batch, length, d_inner, d_state, generator=g)).to(device).requires_grad_()
    C = torch.randn(batch, length, d_state, generator=g).to(device).requires_grad_()
    return decay, drive, C


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_fwd_bwd(fn, inputs, device, iters, warmup):
    """Median forward and backward milliseconds of ``fn(*inputs).sum().backward()``."""
    fwd, bwd = [], []
    for i in range(warmup + iters):
        for t in inputs:
            t.grad = None
        _sync(device)
        t0 = time.perf_counter()
        y = fn(*inputs)
        _sync(device)
        t1 = time.perf_counter()
        y.sum().backward()
        _sync(device)
        t2 = time.perf_counter()
        if i >= warmup:
            fwd.append(1e3 * (t1 - t0))
            bwd.append(1e3 * (t2 - t1))
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    return {"forward_ms": med(fwd), "backward_ms": med(bwd), "total_ms": med(fwd) + med(bwd), "iters": iters}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--iters", type=int, default=2, help="timed iterations per backend (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--reference-iters", type=int, default=1, help="the reference is slow: fewer iterations")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    device = torch.device(args.device)

    backends = ["reference", "torch"] + (["cuda"] if device.type == "cuda" and cuda_backend_available() else [])
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batch": args.batch,
        "ss2d": {"shape": {"u": [args.batch, 2048, 49], "A": [2048, 16], "B": [args.batch, 4, 16, 49]}, "backends": {}},
        "fusion": {"shape": {"h": [args.batch, 1024, 49, 16]}, "backends": {}},
    }
    x = ss2d_inputs(args.batch, device)
    for be in backends:
        iters, warm = (args.reference_iters, 0) if be == "reference" else (args.iters, args.warmup)
        r = time_fwd_bwd(lambda *a, be=be: selective_scan(*a, backend=be), x, device, iters, warm)
        result["ss2d"]["backends"][be] = r
        print(f"ss2d   {be:9s} forward {r['forward_ms']:9.1f} ms  backward {r['backward_ms']:9.1f} ms", flush=True)
    asfr = ASFRSS2D()
    f = fusion_inputs(args.batch, device)
    for be in ("reference", "torch"):
        asfr.scan_backend = be
        iters, warm = (args.reference_iters, 0) if be == "reference" else (args.iters, args.warmup)
        r = time_fwd_bwd(asfr._scan, f, device, iters, warm)
        result["fusion"]["backends"][be] = r
        print(f"fusion {be:9s} forward {r['forward_ms']:9.1f} ms  backward {r['backward_ms']:9.1f} ms", flush=True)

    ref_ms = result["ss2d"]["backends"]["reference"]["total_ms"]
    torch_ms = result["ss2d"]["backends"]["torch"]["total_ms"]
    result["ss2d"]["speedup_torch_vs_reference"] = ref_ms / torch_ms
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    print(f"selective_scan: reference {ref_ms:.1f} ms vs torch {torch_ms:.1f} ms = {ref_ms / torch_ms:.1f}x")


if __name__ == "__main__":
    main()
