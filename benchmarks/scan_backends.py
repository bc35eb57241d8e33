"""Forward + backward time of the selective-scan backends at FERMam's shapes, and how far each is from the
sequential reference (docs/design.md §4, §8).

SS2D scan (docs/papers/fermam.md §5): batch B, 4 directions × d_inner 512 = 2048 channels, L = 49 (7×7),
d_state 16, B/C grouped per direction, delta bias + softplus, D skip. Backends: ``reference`` (sequential
loop), ``torch`` (ferlib's scan), ``torch_compiled`` (the same under ``torch.compile``, on CUDA or with
``--compile``) and ``mamba_ssm`` (its CUDA kernel, only on a GPU with the package). Each backend's output and input
gradients are compared with the reference's (TF32 off); they agree when max |difference| / max |reference| is
below 1e-3. Fusion scan (§7): the ASFR recurrence of ``fusion.ssm1`` (d_inner 1024, L 49, one shared A [16]),
reference vs torch.

Writes ``scan_backends.json`` and ``scan_backends.md`` in ``--out``; exit status 1 when a backend raised or
disagrees with the reference. The last printed line is
``scan_backends: reference <t> ms vs torch <t> ms = <ratio>x`` (SS2D scan, forward + backward).

    python benchmarks/scan_backends.py                          # batch 64, on CUDA when there is one
    python benchmarks/scan_backends.py --device cuda --batch 16 --iters 3
    python benchmarks/scan_backends.py --device cpu --tiny      # toy shapes, aot_eager compile: seconds
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from ferlib.engine.env import backend_flags
from ferlib.models.fermam.asfr import ASFRSS2D
from ferlib.ops import cuda_backend_available, selective_scan
from ferlib.paths import results_dir

#: The speed target of issue 17: ferlib's PyTorch scan at most this many times mamba_ssm's kernel.
TORCH_VS_MAMBA_MAX = 3.0
AGREE_REL = 1e-3


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
    return {"forward_ms": round(med(fwd), 3), "backward_ms": round(med(bwd), 3),
            "total_ms": round(med(fwd) + med(bwd), 3), "iters": iters}


def outputs(fn, inputs) -> list[torch.Tensor]:
    """``[y, grad of every input]`` of ``fn(*inputs).sum().backward()``, detached."""
    for t in inputs:
        t.grad = None
    y = fn(*inputs)
    y.sum().backward()
    return [y.detach().float()] + [t.grad.detach().float().clone() for t in inputs]


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> dict:
    """Largest |a - b| over the output and the input gradients, absolute and relative to max |b|."""
    absd = max(float((x - y).abs().max()) for x, y in zip(a, b))
    scale = max(float(y.abs().max()) for y in b)
    return {"max_abs": absd, "max_rel": absd / max(scale, 1e-12)}


def ss2d_backends(device, compile_backend: str | None) -> tuple[dict, dict]:
    """(name → scan function, name → why it is skipped) on ``device``."""
    fns = {"reference": lambda *a: selective_scan(*a, backend="reference"),
           "torch": lambda *a: selective_scan(*a, backend="torch")}
    skipped = {}
    if compile_backend:
        fns["torch_compiled"] = torch.compile(lambda *a: selective_scan(*a, backend="torch"), backend=compile_backend)
    if device.type == "cuda" and cuda_backend_available():
        fns["mamba_ssm"] = lambda *a: selective_scan(*a, backend="cuda")
    else:
        skipped["mamba_ssm"] = ("skipped: mamba_ssm's selective scan does not import" if device.type == "cuda"
                                else "skipped: mamba_ssm's kernel runs on CUDA only")
    return fns, skipped


def measure_ss2d(x, device, compile_backend, iters, warmup, reference_iters) -> dict:
    fns, skipped = ss2d_backends(device, compile_backend)
    out = {"backends": dict(skipped), "diff_vs_reference": {}}
    ref = None
    for name, fn in fns.items():
        try:
            t0 = time.perf_counter()
            got = outputs(fn, x)  # also the warm-up (and the compilation) of the backend
            first_s = time.perf_counter() - t0
            n, w = (reference_iters, 0) if name == "reference" else (iters, warmup)
            r = time_fwd_bwd(fn, x, device, n, w)
            if name == "torch_compiled":
                r["compile_s"] = round(max(0.0, first_s - r["total_ms"] / 1e3), 2)
            out["backends"][name] = r
            if name == "reference":
                ref = got
            elif ref is not None:
                out["diff_vs_reference"][name] = max_diff(got, ref)
        except Exception as e:  # noqa: BLE001 - one backend's failure is recorded, the others run
            out["backends"][name] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        print(f"ss2d   {name:14s} {out['backends'][name]}", flush=True)
    ms = {k: v["total_ms"] for k, v in out["backends"].items() if isinstance(v, dict)}
    for k in ("torch", "torch_compiled"):
        if k in ms and "mamba_ssm" in ms:
            out[f"{k}_vs_mamba_ssm_time_ratio"] = round(ms[k] / ms["mamba_ssm"], 2)
    if "torch" in ms and "torch_compiled" in ms:
        out["compiled_speedup_vs_torch"] = round(ms["torch"] / ms["torch_compiled"], 2)
    if "reference" in ms and "torch" in ms:
        out["speedup_torch_vs_reference"] = round(ms["reference"] / ms["torch"], 2)
    diffs = out["diff_vs_reference"]
    out["agree"] = bool(diffs) and all(d["max_rel"] < AGREE_REL for d in diffs.values())
    return out


def measure_fusion(f, device, iters, warmup, reference_iters) -> dict:
    asfr = ASFRSS2D()
    res = {}
    for be in ("reference", "torch"):
        asfr.scan_backend = be
        n, w = (reference_iters, 0) if be == "reference" else (iters, warmup)
        res[be] = time_fwd_bwd(asfr._scan, f, device, n, w)
        print(f"fusion {be:14s} {res[be]}", flush=True)
    return {"backends": res}


def summary(ss2d: dict, on_gpu: bool) -> list[list[str]]:
    """``[item, result]`` rows for the ``make gpu-check`` table."""
    rows = []
    for name, r in ss2d["backends"].items():
        d = ss2d["diff_vs_reference"].get(name)
        text = r if isinstance(r, str) else (f"{r['total_ms']:g} ms (forward {r['forward_ms']:g}, backward "
                                             f"{r['backward_ms']:g})" + (f", max rel. diff {d['max_rel']:.1e}" if d else ""))
        rows.append([f"SS2D scan {name}", text])
    for k in ("torch", "torch_compiled"):
        if f"{k}_vs_mamba_ssm_time_ratio" in ss2d:
            note = "" if on_gpu else " (CPU run: not a measurement of the target)"
            rows.append([f"{k} / mamba_ssm time (target <= {TORCH_VS_MAMBA_MAX})",
                         f"{ss2d[f'{k}_vs_mamba_ssm_time_ratio']}{note}"])
    rows.append(["backends agree with the reference", str(ss2d["agree"])])
    return rows


def markdown(result: dict) -> str:
    ss = result["ss2d"]
    lines = [f"SS2D scan, forward + backward, shape {ss['shape']}, on {result['device']}", "",
             "| backend | forward ms | backward ms | total ms | max rel. diff vs reference |", "|---|---|---|---|---|"]
    for name, r in ss["backends"].items():
        d = ss["diff_vs_reference"].get(name)
        if isinstance(r, dict):
            lines.append(f"| {name} | {r['forward_ms']:g} | {r['backward_ms']:g} | {r['total_ms']:g} | "
                         + (f"{d['max_rel']:.2e} |" if d else "– |"))
        else:
            lines.append(f"| {name} | {r} | | | |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--iters", type=int, default=2, help="timed iterations per backend (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--reference-iters", type=int, default=1, help="the reference is slow: fewer iterations")
    p.add_argument("--compile", default=None, help="torch.compile backend of torch_compiled, or none (default: "
                   "inductor on CUDA, none on the CPU, where inductor compiles for minutes; aot_eager with --tiny)")
    p.add_argument("--no-fusion", action="store_true", help="skip the fusion scan")
    p.add_argument("--tiny", action="store_true", help="toy shapes (batch 1, d_inner 16, L 16), aot_eager compile")
    p.add_argument("--out", type=Path, default=None, help="folder (default results/bench)")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    d_inner, length, batch = (16, 16, 1) if a.tiny else (512, 49, a.batch)
    compile_backend = a.compile or ("aot_eager" if a.tiny else "inductor" if device.type == "cuda" else "none")
    compile_backend = None if compile_backend == "none" else compile_backend
    x = ss2d_inputs(batch, device, d_inner=d_inner, length=length)
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
              "threads": torch.get_num_threads(), "torch": torch.__version__, "batch": batch, "tiny": a.tiny,
              "compile_backend": compile_backend}
    with backend_flags(device, "fp32"):  # TF32 off: it would blur the comparison with the reference
        ss2d = measure_ss2d(x, device, compile_backend, 2 if a.tiny else a.iters, a.warmup, a.reference_iters)
        ss2d["shape"] = {"u": list(x[0].shape), "A": list(x[2].shape), "B": list(x[3].shape)}
        result["ss2d"] = ss2d
        if not a.no_fusion:
            f = fusion_inputs(batch, device, *((16, 16) if a.tiny else ()))
            result["fusion"] = measure_fusion(f, device, 2 if a.tiny else a.iters, a.warmup, a.reference_iters)
            result["fusion"]["shape"] = {"h": [batch, f[1].shape[2], f[1].shape[1], f[1].shape[3]]}
    result["summary"] = summary(ss2d, device.type == "cuda")
    out = a.out or results_dir() / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "scan_backends.json").write_text(json.dumps(result, indent=1))
    (out / "scan_backends.md").write_text(markdown(result))
    print(f"wrote {out / 'scan_backends.json'}")
    ms = {k: v["total_ms"] for k, v in ss2d["backends"].items() if isinstance(v, dict)}
    if "reference" in ms and "torch" in ms:
        print(f"scan_backends: reference {ms['reference']:.1f} ms vs torch {ms['torch']:.1f} ms = "
              f"{ms['reference'] / ms['torch']:.1f}x")
    failed = [k for k, v in ss2d["backends"].items() if isinstance(v, str) and v.startswith("error")]
    return 1 if failed or not ss2d["agree"] else 0


if __name__ == "__main__":
    sys.exit(main())
