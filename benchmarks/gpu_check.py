"""The GPU path of ferlib, proven in one prepared run (issue 17): speed, CUDA correctness, the scan.

    PYTHONPATH=. python benchmarks/gpu_check.py --out results/bench/          # on a CUDA machine, < 8 min
    PYTHONPATH=. python benchmarks/gpu_check.py --device cpu --tiny --out /tmp/gc   # toy sizes, CPU, < 3 min

Needs only torch >= 2.4, torchvision, timm, einops, numpy, pyyaml, tqdm, pandas, matplotlib, scikit-learn
(and opencv, which draws the synthetic faces); no network, no papermill, no facenet-pytorch. It generates its
own synthetic set in a temporary folder and measures, one step after the other:

1. ``environment``: GPU name and memory, torch / CUDA / cuDNN versions, whether mamba_ssm's kernel imports.
2. ``throughput``: per paper (its RAF-DB card's model, loss, optimiser, SAM, input size and the card's batch
   on one GPU: FERMam 300 with SAM; halved only on out-of-memory, which the report then says; ``--max-batch``
   caps it on request), training images/s and peak memory of
   (a) the authors' way: fp32, PIL decode + per-item torchvision transforms in a DataLoader with workers,
   torch's default optimiser and switches; (b) ferlib's engine path in the card's precision (fp32, TF32
   off): uint8 cache, the card's batched transforms on the device, channels_last, fused optimiser,
   :class:`~ferlib.engine.step.Stepper`; (b') the same with ``precision: tf32``; (c) bf16 autocast; (d) bf16 +
   ``torch.compile`` (compile time apart). Each variant builds the same model from the same seed and reads
   the same images.
3. ``data_pipeline``: cache + batched transforms vs the per-item PIL pipeline alone, images/s.
4. ``selective_scan``: FERMam's SS2D scan, forward + backward: the PyTorch scan, the same compiled, the
   sequential reference and mamba_ssm's kernel when it imports; max |difference| between them.
5. ``correctness``: per paper, short ``ferlib.engine.train`` runs of its synthetic card on the device:
   deterministic bf16 (finite losses, accuracy above chance, checkpoint written), the same stopped mid-epoch
   and resumed (equal to the uninterrupted run: exactly when the run's config.yaml lists no
   non-deterministic op, within a tolerance otherwise), fp16 with loss scaling, and ``evaluate`` of the checkpoint
   on the device against the CPU (fp32, TF32 off). On CPU: fp32 for the first two, bf16 for the third.

``gpu_check.json`` and ``gpu_check.md`` are rewritten in ``--out`` after every measurement, so a run killed by
a time limit keeps what it measured; what the training runs print goes to ``gpu_check_train.log`` there.
``--budget-s`` (default 420) is shared among the steps; anything whose estimate does not fit in what is left
is recorded as ``skipped: budget (...)``. Exit status 1 when a check failed or a measurement raised.

``--tiny`` keeps every step at toy sizes (48 images, batch 2, one timed step per variant, narrow inputs) and
compiles with the ``aot_eager`` backend (tracing without code generation), so that CI runs the whole script.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark scripts, when imported

import data_pipeline  # noqa: E402
import selective_scan as scan_bench  # noqa: E402
import train_throughput  # noqa: E402

from ferlib.recipes import list_papers  # noqa: E402

PAPERS = tuple(list_papers())  # every card of a paper: a new paper is measured with no edit here
STEPS = ("environment", "throughput", "data_pipeline", "selective_scan", "correctness")
#: Share of the budget left when a step starts that the step may use (renormalised over the steps to come).
WEIGHTS = {"environment": 0.02, "throughput": 0.38, "data_pipeline": 0.08, "selective_scan": 0.12,
           "correctness": 0.40}
VARIANTS = ("authors_fp32", "engine_fp32", "engine_tf32", "engine_bf16", "engine_bf16_compile")
EAGER = VARIANTS[:4]
TARGETS = {"engine_vs_authors_same_precision": 1.5, "bf16_compile_vs_authors": 2.5, "torch_scan_vs_mamba_max": 3.0}

#: --tiny: toy sizes per paper (recipe overrides). FERMam, GReFEL and MMFRM have no width option: full
#: models at small inputs (their backbones resize to 112 inside) and batch 2.
TINY_DEFAULT = {"input_size": 32, "stored_size": 32}
TINY_RECIPE = {
    "mfer": {"input_size": 64, "stored_size": 64, "model_kwargs": {"dims": [16, 32, 64, 128], "depths": [1, 1, 3, 1]},
             "loss_kwargs": {"feat_dim": 128}},
}
#: --tiny on CPU: what a 2-core machine can afford in minutes; the rest is skipped with this reason.
TINY_COMPILE = ("emonet",)
TINY_SKIP_REASON = "skipped: --tiny compiles one small model only (tracing a full model takes minutes on CPU)"


@dataclass
class Plan:
    """Sizes of one run (GPU defaults; :func:`tiny_plan` for the CPU smoke run)."""

    n_train: int = 1024
    n_test: int = 256
    warmup: int = 2
    steps: int = 8
    max_batch: int | None = None  # None: the card's batch
    workers: int = 8
    data_size: int = 112
    data_batch: int = 64
    scan_batch: int = 64
    scan_d_inner: int = 512
    scan_length: int = 49
    scan_iters: int = 5
    train_batch: int = 32
    eval_batch: int = 128
    train_steps: int = 20
    compile_papers: tuple = PAPERS
    compile_backend: str = "inductor"
    priors: dict = field(default_factory=lambda: {"variant": 10.0, "compile": 60.0, "data": 10.0, "scan": 10.0,
                                                  "train": 12.0, "generate": 20.0})


def tiny_plan(workers: int) -> Plan:
    """The CPU smoke run: toy sizes, one timed step, and ``torch.compile`` with the ``aot_eager`` backend
    (Dynamo + AOTAutograd tracing, no code generation: inductor takes minutes per model on CPU)."""
    return Plan(n_train=48, n_test=24, warmup=0, steps=1, max_batch=2, workers=min(workers, 1),
                data_size=32, data_batch=8, scan_batch=1, scan_d_inner=16, scan_length=16, scan_iters=2,
                train_batch=2, train_steps=2, eval_batch=32, compile_papers=TINY_COMPILE, compile_backend="aot_eager",
                priors={"variant": 4.0, "compile": 15.0, "data": 3.0, "scan": 3.0, "train": 6.0, "generate": 3.0})


class Budget:
    """Seconds left for the run and for the current step (its share of what is left)."""

    def __init__(self, seconds: float):
        self.total, self.t0 = float(seconds), time.perf_counter()
        self.step_end = self.t0 + self.total

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def start_step(self, name: str) -> None:
        todo = STEPS[STEPS.index(name):]
        left = max(0.0, self.total - self.elapsed())
        self.step_end = time.perf_counter() + left * WEIGHTS[name] / sum(WEIGHTS[s] for s in todo)

    def step_left(self) -> float:
        return self.step_end - time.perf_counter()

    def skip(self, estimate_s: float) -> str | None:
        """None when ``estimate_s`` fits in the step's share, else the reason to record."""
        left = self.step_left()
        if estimate_s <= left:
            return None
        return f"skipped: budget (needs ~{estimate_s:.0f} s, {max(0.0, left):.0f} s left for this step)"


class Report:
    """``gpu_check.json`` + ``gpu_check.md`` in ``out``, rewritten (atomically) at every :meth:`save`."""

    def __init__(self, out: Path, meta: dict):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.data = {"meta": meta, "steps": {s: {"status": "pending"} for s in STEPS}}

    def step(self, name: str) -> dict:
        return self.data["steps"][name]

    def save(self) -> None:
        for name, text in (("gpu_check.json", json.dumps(self.data, indent=1, default=str)),
                           ("gpu_check.md", markdown(self.data))):
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, self.out / name)


def log(budget: Budget, msg: str) -> None:
    print(f"[gpu_check {budget.elapsed():6.1f}s] {msg}", flush=True)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def error_text(e: BaseException) -> str:
    return f"error: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"


# ---------------------------------------------------------------------------------------------- 1. environment

def step_environment(ctx) -> dict:
    import numpy as np

    env = {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
           "numpy": np.__version__, "cuda_available": torch.cuda.is_available(), "device": str(ctx.device),
           "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
           "interop_threads": torch.get_num_interop_threads()}
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except ImportError as e:
        env["torchvision"] = error_text(e)
    env["cuda_build"] = torch.version.cuda
    env["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    if ctx.device.type == "cuda":
        props = torch.cuda.get_device_properties(ctx.device)
        env.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                   compute_capability=f"{props.major}.{props.minor}", bf16_supported=torch.cuda.is_bf16_supported())
    for mod in ("cv2", "triton", "mamba_ssm"):
        try:
            m = __import__(mod)
            env[mod] = getattr(m, "__version__", "present")
        except Exception as e:  # noqa: BLE001 - a broken optional package is reported, not fatal
            env[mod] = f"missing ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
    from ferlib.engine.env import backend_state, gpu_info
    from ferlib.ops.selective_scan import mamba_ssm_status, resolve_backend

    status = mamba_ssm_status()
    env["mamba_ssm_selective_scan_imports"] = status["import_error"] is None
    env["mamba_ssm_import_error"] = status["import_error"]
    env["scan_backend_auto"] = resolve_backend("auto", ctx.device)
    env["torch_defaults"] = backend_state()  # the switches the authors' scripts ran with
    env.update({k: v for k, v in gpu_info(ctx.device).items() if k in ("driver", "cuda_runtime", "gpu_count")})
    return env


# ------------------------------------------------------------------------------------------ shared: the data

def generate_data(ctx) -> None:
    """The synthetic RAF-DB-format set under ``ctx.data_root`` (the same for every step)."""
    from ferlib.data import load_dataset

    t0 = time.perf_counter()
    load_dataset("synthetic", ctx.data_root, "train", n_train=ctx.plan.n_train, n_test=ctx.plan.n_test,
                 progress=False)
    ctx.report.data["meta"]["synthetic_set"] = {"n_train": ctx.plan.n_train, "n_test": ctx.plan.n_test,
                                                "generate_s": round(time.perf_counter() - t0, 1)}


def prepare_data(ctx) -> str | None:
    """Generate the synthetic set; None when it is there, else why the steps that need it cannot run."""
    reason = ctx.budget.skip(ctx.plan.priors["generate"])
    if reason:
        return reason + " (the synthetic set was not generated)"
    log(ctx.budget, f"generating the synthetic set ({ctx.plan.n_train} + {ctx.plan.n_test} images) in {ctx.work}")
    try:
        generate_data(ctx)
    except Exception as e:  # noqa: BLE001 - recorded for every step that needs the data
        hint = "; the faces are drawn with OpenCV (opencv-python-headless)" if isinstance(e, ImportError) else ""
        msg = f"{error_text(e)} (generating the synthetic set{hint})"
        ctx.failures.append(msg)
        return msg
    return None


def dataset(ctx, split: str = "train", size: int | None = None):
    """The synthetic split as image files (``size`` None) or as the uint8 cache at ``size``."""
    from ferlib.data import load_dataset

    kw = dict(n_train=ctx.plan.n_train, n_test=ctx.plan.n_test, progress=False)
    if size is None:
        return load_dataset("synthetic", ctx.data_root, split, **kw)
    return load_dataset("synthetic", ctx.data_root, split, cache=ctx.work / "cache", cache_size=size, **kw)


# ------------------------------------------------------------------------------------------- 2. throughput

def throughput_recipe(ctx, paper: str):
    from ferlib.recipes import load_recipe

    overrides = dict(TINY_RECIPE.get(paper, TINY_DEFAULT)) if ctx.tiny else {}
    if ctx.tiny and paper == "grefel":  # the card resizes to 256 before its crop
        card = load_recipe(paper, "rafdb")
        overrides["transform_kwargs"] = {**card.transform_kwargs, "resize_to": 36}
    return load_recipe(paper, "rafdb", **overrides)


def backend_switch(device: torch.device, tf32_matmul: bool, tf32_cudnn: bool, benchmark: bool):
    """A pipeline ``setup``: the TF32 / cuDNN autotuner switches of one variant (process-wide, set before each step)."""
    def setup():
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = tf32_matmul
            torch.backends.cudnn.allow_tf32 = tf32_cudnn
            torch.backends.cudnn.benchmark = benchmark

    return setup


def build_variant(ctx, variant: str, recipe, files, cached, batch: int):
    dev = ctx.device
    if variant == "authors_fp32":  # torch's defaults: matmul TF32 off, cuDNN TF32 on, no autotuner
        return train_throughput.authors_pipeline(recipe, files, batch, dev, ctx.plan.workers,
                                                 backend_switch(dev, False, True, False))
    precision = "bf16" if "bf16" in variant else "fp32"
    tf32 = variant == "engine_tf32"  # what fit() sets for precision tf32; fp32 and bf16 keep TF32 off
    compile_ = variant.endswith("compile") and ctx.plan.compile_backend
    return train_throughput.ferlib_pipeline(recipe, cached, batch, dev, ctx.plan.workers, True, precision,
                                            compile_, backend_switch(dev, tf32, tf32, True))


def measure_variant(ctx, variant: str, recipe, files, cached, batch: int) -> dict:
    """Build, warm up (the first step compiles under (d)), then time ``plan.steps`` steps; peak memory of
    the timed steps (CUDA ``max_memory_allocated``; resident set size on CPU)."""
    free_memory(ctx.device)
    t0 = time.perf_counter()
    pipe = build_variant(ctx, variant, recipe, files, cached, batch)
    build_s = time.perf_counter() - t0
    warmup = max(ctx.plan.warmup, 1 if variant.endswith("compile") else 0)  # compile time apart from step time
    first = [pipe.step(timed=False) for _ in range(warmup)]
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    pipe.peak = 0.0
    for _ in range(ctx.plan.steps):
        pipe.step()
    res = pipe.result()
    res.update(build_s=round(build_s, 2), first_step_s=round(first[0], 3) if first else None)
    if variant.endswith("compile") and first:
        res["compile_s"] = round(max(0.0, first[0] - res["median_step_s"]), 2)
        # the quickest model compiles first: the next ones are budgeted at twice its time at least
        ctx.plan.priors["compile"] = max(ctx.plan.priors["compile"], 2 * res["compile_s"])
    del pipe
    free_memory(ctx.device)
    return res


def variant_estimate(ctx, variant: str, measured: dict) -> float:
    """Seconds a variant should take: from a variant of the same paper already measured, else the prior."""
    done = [v for v in measured.values() if isinstance(v, dict) and "median_step_s" in v]
    if done:
        step = max(v["median_step_s"] for v in done)
        est = max(v["build_s"] for v in done) + (ctx.plan.warmup + ctx.plan.steps) * step
    else:
        est = ctx.plan.priors["variant"]
    if variant.endswith("compile"):
        est += ctx.plan.priors["compile"]
    return est


def ratios(variants: dict) -> dict:
    rate = {k: v["img_s"] for k, v in variants.items() if isinstance(v, dict) and "img_s" in v}
    out = {}
    a = rate.get("authors_fp32")
    if a:
        for k, name in (("engine_fp32", "engine_fp32_vs_authors_fp32"), ("engine_tf32", "engine_tf32_vs_authors_fp32"),
                        ("engine_bf16", "engine_bf16_vs_authors_fp32"),
                        ("engine_bf16_compile", "bf16_compile_vs_authors_fp32")):
            if k in rate:
                out[name] = round(rate[k] / a, 3)
    if rate.get("engine_fp32") and rate.get("engine_tf32"):
        out["tf32_vs_fp32"] = round(rate["engine_tf32"] / rate["engine_fp32"], 3)
    return out


def run_variant(ctx, paper: str, variant: str, recipe, files, cached, row: dict) -> None:
    """Measure one variant into ``row["variants"]`` unless the budget says no; out-of-memory propagates."""
    reason = ctx.budget.skip(variant_estimate(ctx, variant, row["variants"]))
    if reason:
        row["variants"][variant] = reason
        log(ctx.budget, f"throughput {paper} {variant}: {reason}")
        return
    try:
        r = measure_variant(ctx, variant, recipe, files, cached, row["batch"])
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - one variant's failure is recorded, the others run
        r = error_text(e)
        ctx.failures.append(f"throughput {paper} {variant}: {r}")
    row["variants"][variant] = r
    msg = r if isinstance(r, str) else (f"{r['img_s']} img/s, peak {r['peak_memory_mb']} MB"
                                        + (f", compile {r['compile_s']} s" if "compile_s" in r else ""))
    log(ctx.budget, f"throughput {paper} {variant} (batch {row['batch']}): {msg}")
    row["ratios"] = ratios(row["variants"])
    ctx.report.save()


def throughput_data(ctx, recipe):
    """(image files for the authors' loader, the uint8 cache at the card's stored size)."""
    return dataset(ctx), dataset(ctx, size=recipe.stored_size or recipe.input_size)


def throughput_paper(ctx, paper: str) -> dict:
    """Variants (a)-(c) of ``paper`` at the card's batch (``--max-batch`` caps it); halved until they fit in memory,
    recorded as ``batch_reduced_from`` (the card's batch then does not fit on this GPU)."""
    recipe = throughput_recipe(ctx, paper)
    batch = recipe.batch_size if ctx.plan.max_batch is None else min(recipe.batch_size, ctx.plan.max_batch)
    row = {"input_size": recipe.input_size, "stored_size": recipe.stored_size, "card_batch": recipe.batch_size,
           "sam": recipe.sam, "optimizer": recipe.optimizer, "loss": recipe.loss,
           "engine_transforms": list(recipe.train_transforms), "authors_transforms": ["resize", "hflip"]}
    files, cached = throughput_data(ctx, recipe)
    while True:
        row["batch"], row["variants"] = batch, {}
        try:
            for variant in EAGER:
                run_variant(ctx, paper, variant, recipe, files, cached, row)
            return row
        except torch.cuda.OutOfMemoryError:
            free_memory(ctx.device)
            if batch <= 1:
                raise
            row.setdefault("batch_reduced_from", []).append(batch)
            batch //= 2
            log(ctx.budget, f"throughput {paper}: out of memory, batch halved to {batch}")


def compile_pass(ctx, rows: dict) -> None:
    """Variant (d) after (a)-(c) of every paper, the quickest bf16 models first: compiling takes a minute or
    more per model, so a short budget compiles what it can and every paper has its eager numbers."""
    def bf16_step(paper):
        r = rows[paper]["variants"].get("engine_bf16") if isinstance(rows.get(paper), dict) else None
        return r["median_step_s"] if isinstance(r, dict) else math.inf

    for paper in sorted(ctx.papers, key=bf16_step):
        row = rows.get(paper)
        if not isinstance(row, dict):
            continue
        if paper not in ctx.plan.compile_papers:
            row["variants"]["engine_bf16_compile"] = TINY_SKIP_REASON
            continue
        try:
            recipe = throughput_recipe(ctx, paper)
            run_variant(ctx, paper, "engine_bf16_compile", recipe, *throughput_data(ctx, recipe), row)
        except torch.cuda.OutOfMemoryError as e:
            row["variants"]["engine_bf16_compile"] = error_text(e)
            ctx.failures.append(f"throughput {paper} engine_bf16_compile: out of memory")
            free_memory(ctx.device)


def step_throughput(ctx) -> dict:
    out = {"papers": {}, "warmup": ctx.plan.warmup, "steps": ctx.plan.steps, "workers": ctx.plan.workers,
           "compile_backend": ctx.plan.compile_backend,
           "note": "images/s = batch / median step time, data loading included; variants run one after the other, "
                   "each building the same model from seed 0; (d) after (a)-(c) of every paper"}
    per_paper(ctx, "throughput", out, throughput_paper)
    compile_pass(ctx, out["papers"])
    return out


def per_paper(ctx, step: str, out: dict, measure) -> dict:
    """``out["papers"][paper] = measure(ctx, paper)`` for each paper, saving the report after each; a
    paper that raises is recorded and the next one runs."""
    ctx.report.step(step).update(out)
    for paper in ctx.papers:
        try:
            out["papers"][paper] = measure(ctx, paper)
        except Exception as e:  # noqa: BLE001
            out["papers"][paper] = error_text(e)
            ctx.failures.append(f"{step} {paper}: {out['papers'][paper]}")
        ctx.report.step(step).update(out)
        ctx.report.save()
    return out


# ---------------------------------------------------------------------------------------- 3. data pipeline

def step_data_pipeline(ctx) -> dict:
    reason = ctx.budget.skip(ctx.plan.priors["data"])
    if reason:
        return {"status": reason}
    files, cached = dataset(ctx), dataset(ctx, size=ctx.plan.data_size)
    return data_pipeline.measure(files, cached, ctx.plan.data_size, ctx.plan.data_batch, ctx.plan.workers,
                                 epochs=2, device=ctx.device)


# ---------------------------------------------------------------------------------------- 4. selective scan

def scan_outputs(fn, inputs) -> list[torch.Tensor]:
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


def step_selective_scan(ctx) -> dict:
    with exact_fp32():  # TF32 (left on by the engine's throughput variants) would blur the comparison
        return scan_backends(ctx)


def scan_backends(ctx) -> dict:
    from ferlib.ops import cuda_backend_available, selective_scan

    p = ctx.plan
    dev = ctx.device
    x = scan_bench.ss2d_inputs(p.scan_batch, dev, d_inner=p.scan_d_inner, length=p.scan_length)
    out = {"shape": {"u": list(x[0].shape), "A": list(x[2].shape), "B": list(x[3].shape)},
           "note": "FERMam SS2D scan (4 directions, d_state 16, delta bias + softplus, D skip), forward + backward",
           "compile_backend": p.compile_backend, "backends": {}, "diff_vs_reference": {}}
    compiled = torch.compile(lambda *a: selective_scan(*a, backend="torch"), backend=p.compile_backend)
    fns = {"reference": lambda *a: selective_scan(*a, backend="reference"),
           "torch": lambda *a: selective_scan(*a, backend="torch"),
           "torch_compiled": compiled}
    if dev.type == "cuda" and cuda_backend_available():
        fns["mamba_ssm"] = lambda *a: selective_scan(*a, backend="cuda")
    else:
        out["backends"]["mamba_ssm"] = ("skipped: mamba_ssm's selective scan does not import" if dev.type == "cuda"
                                        else "skipped: mamba_ssm's kernel runs on CUDA only")
    ref = None
    for name, fn in fns.items():
        est = ctx.plan.priors["scan"] + (ctx.plan.priors["compile"] / 2 if name == "torch_compiled" else 0.0)
        reason = ctx.budget.skip(est)
        if reason:
            out["backends"][name] = reason
            log(ctx.budget, f"selective_scan {name}: {reason}")
            continue
        try:
            t0 = time.perf_counter()
            got = scan_outputs(fn, x)   # also the warm-up (and the compilation) of the backend
            first_s = time.perf_counter() - t0
            iters = 1 if name == "reference" else p.scan_iters
            r = scan_bench.time_fwd_bwd(fn, x, dev, iters, 0 if name == "reference" else 1)
            r = {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}
            if name == "torch_compiled":
                r["compile_s"] = round(max(0.0, first_s - r["total_ms"] / 1e3), 2)
            out["backends"][name] = r
            if name == "reference":
                ref = got
            elif ref is not None:
                out["diff_vs_reference"][name] = max_diff(got, ref)
        except Exception as e:  # noqa: BLE001
            out["backends"][name] = error_text(e)
            ctx.failures.append(f"selective_scan {name}: {out['backends'][name]}")
        log(ctx.budget, f"selective_scan {name}: {out['backends'][name]}")
        ctx.report.step("selective_scan").update(out)
        ctx.report.save()
    ms = {k: v["total_ms"] for k, v in out["backends"].items() if isinstance(v, dict)}
    if "mamba_ssm" in ms:
        for k in ("torch", "torch_compiled"):
            if k in ms:
                out[f"{k}_vs_mamba_ssm_time_ratio"] = round(ms[k] / ms["mamba_ssm"], 2)
    if "torch" in ms and "torch_compiled" in ms:
        out["compiled_speedup_vs_torch"] = round(ms["torch"] / ms["torch_compiled"], 2)
    diffs = out["diff_vs_reference"]
    out["agree"] = bool(diffs) and all(d["max_rel"] < 1e-3 for d in diffs.values())
    if diffs and not out["agree"]:
        ctx.failures.append(f"selective_scan: backends disagree with the reference: {diffs}")
    return out


# ------------------------------------------------------------------------------------------- 5. correctness

def train_run(ctx, paper: str, run_dir: Path, precision: str, max_steps: int, stop_after_steps: int | None = None,
              resume: bool = False, deterministic: bool = True):
    """One short ``ferlib.engine.train`` of ``paper``'s synthetic card on ``ctx.device`` (the engine's API
    is called in this one place); what the engine prints goes to ``gpu_check_train.log`` in ``--out``."""
    from ferlib.engine import train

    fit_options = {"precision": precision, "deterministic": deterministic}
    if stop_after_steps is not None:
        fit_options["stop_after_steps"] = stop_after_steps
    from ferlib.recipes import load_recipe

    # the synthetic cards are already narrow for MFER; the others shrink their input
    overrides = dict(TINY_RECIPE.get(paper, TINY_DEFAULT)) if ctx.tiny and paper != "mfer" else {}
    card = load_recipe(paper, "synthetic")
    if card.sampler == "subset":  # the demo entries draw a part of their 2,400 faces; this set may be smaller
        overrides["sampler_kwargs"] = {**(card.sampler_kwargs or {}),
                                       "num_samples": min(ctx.plan.n_train, (card.sampler_kwargs or {}).get(
                                           "num_samples", ctx.plan.n_train))}
    with open(ctx.report.out / "gpu_check_train.log", "a") as f, contextlib.redirect_stdout(f), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        print(f"== {paper} {run_dir.name}: precision {precision}, max_steps {max_steps}, stop_after_steps "
              f"{stop_after_steps}, resume {resume}", flush=True)
        run = train(paper, "synthetic", data_root=ctx.data_root, run_dir=run_dir, device=str(ctx.device),
                    batch_size=ctx.plan.train_batch, epochs=1, max_steps=max_steps, seed=0, resume=resume,
                    progress=False, fit_options=fit_options, cache=ctx.work / "cache",
                    dataset_kwargs={"n_train": ctx.plan.n_train, "n_test": ctx.plan.n_test, "progress": False},
                    **overrides)
        for w in caught:
            print(f"warning: {w.category.__name__}: {w.message}", flush=True)
    # what deterministic mode could not make deterministic (torch warns, warn_only=True)
    ctx.nondeterministic.update(str(w.message).splitlines()[0][:200] for w in caught
                                if "deterministic" in str(w.message))
    return run


def run_checks(run) -> dict:
    """Finite losses, accuracy against chance, checkpoint written, from a run directory."""
    d = Path(run.run_dir)
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = rows[-1] if rows else {}
    n_cls = run.recipe.num_classes
    acc = last.get("eval_accuracy")
    return {"train_loss": last.get("train_loss"), "eval_accuracy": acc, "chance": round(1 / n_cls, 4),
            "finite_losses": bool(rows) and all(math.isfinite(r["train_loss"]) for r in rows),
            "above_chance": acc is not None and acc > 1 / n_cls,
            "checkpoint_written": (d / "last.pt").is_file() and (d / "best.pt").is_file()}


#: Resume vs uninterrupted, for a run whose config.yaml lists non-deterministic ops: max |Δw| ≤ this × max(1, max |w|).
RESUME_TOLERANCE = 1e-3


def run_nondeterminism(run_dir: Path) -> list[str]:
    """What the run says is not deterministic (config.yaml ``resolved``): [] for a deterministic run whose ops
    all have deterministic kernels on its device, the listed ops otherwise."""
    import yaml

    resolved = yaml.safe_load((run_dir / "config.yaml").read_text()).get("resolved", {})
    if not resolved.get("deterministic"):
        return ["the run was not deterministic (--deterministic off)"]
    return list(resolved.get("nondeterministic_ops") or [])


def weights_scale(path: Path) -> float:
    from ferlib.engine.checkpoint import load_checkpoint

    state = load_checkpoint(path)["model"]
    return max((float(t.double().abs().max()) for t in state.values() if t.is_floating_point() and t.numel()),
               default=0.0)


def weights_diff(a: Path, b: Path) -> float:
    from ferlib.engine.checkpoint import load_checkpoint

    sa, sb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    if sa.keys() != sb.keys():
        return math.inf
    return max((float((sa[k].double() - sb[k].double()).abs().max()) for k in sa
                if sa[k].is_floating_point() and sa[k].numel()), default=0.0)


@contextlib.contextmanager
def exact_fp32():
    """TF32 off while it runs (CUDA evaluation compared with the CPU at fp32 tolerance)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def evaluate_both(ctx, run_dir: Path) -> dict:
    """``evaluate`` of the run's last checkpoint on the device and on the CPU, fp32 (TF32 off)."""
    import numpy as np

    from ferlib.data import load_dataset
    from ferlib.engine import evaluate, load_run

    model, recipe = load_run(run_dir, "last")
    test = load_dataset("synthetic", ctx.data_root, "test", **recipe.dataset_kwargs)
    kw = dict(progress=False, precision="fp32", batch_size=ctx.plan.eval_batch)
    with exact_fp32():
        on_dev = evaluate(model, test, recipe, str(ctx.device), **kw)
    on_cpu = evaluate(model, test, recipe, "cpu", **kw) if ctx.device.type != "cpu" else on_dev
    la, lb = on_dev["predictions"]["logits"], on_cpu["predictions"]["logits"]
    diff = float(np.abs(la - lb).max())
    scale = float(np.abs(lb).max())
    return {"device": str(ctx.device), "accuracy_device": on_dev["accuracy"], "accuracy_cpu": on_cpu["accuracy"],
            "max_abs_logit_diff": diff, "max_logit": scale,
            "equal_within_fp32_tolerance": diff <= 1e-3 * max(1.0, scale),
            "note": "a CPU run: one pass, compared with itself" if ctx.device.type == "cpu"
            else "TF32 off for the device pass"}


def correctness_precisions(device: torch.device) -> tuple[str, str]:
    """(the precision of the deterministic run and its resume pair, the second precision checked): bf16 and
    fp16 on CUDA; on CPU the engine's fp32 (CPU bf16 kernels are not bit-reproducible run to run) and bf16."""
    return ("bf16", "fp16") if device.type == "cuda" else ("fp32", "bf16")


def correctness_paper(ctx, paper: str) -> dict:
    from ferlib.recipes import load_recipe

    p = ctx.plan
    base = ctx.work / "runs" / paper
    main_prec, other_prec = correctness_precisions(ctx.device)
    main_key, other_key = f"train_{main_prec}", f"train_{other_prec}"
    row: dict = {}
    est = ctx.plan.priors["train"]
    half = max(1, p.train_steps // 2)

    def attempt(name, fn):
        nonlocal est
        reason = ctx.budget.skip(est * (2 if name == "resume" else 1))
        if reason:
            row[name] = reason
        else:
            t0 = time.perf_counter()
            try:
                row[name] = fn()
                row[name]["seconds"] = round(time.perf_counter() - t0, 1)
                if name == main_key:
                    est = time.perf_counter() - t0
            except Exception as e:  # noqa: BLE001
                row[name] = error_text(e)
                ctx.failures.append(f"correctness {paper} {name}: {row[name]}")
        log(ctx.budget, f"correctness {paper} {name}: {short(row[name])}")
        ctx.report.save()

    def run(precision: str, deterministic: bool):
        r = train_run(ctx, paper, base / precision, precision, p.train_steps, deterministic=deterministic)
        return {"precision": precision, "deterministic": deterministic, "max_steps": p.train_steps, **run_checks(r)}

    def resume():
        train_run(ctx, paper, base / "resumed", main_prec, p.train_steps, stop_after_steps=half)
        stopped_ok = (base / "resumed" / "last.pt").is_file()
        train_run(ctx, paper, base / "resumed", main_prec, p.train_steps, resume=True)
        diff = weights_diff(base / main_prec / "last.pt", base / "resumed" / "last.pt")
        loose = run_nondeterminism(base / main_prec)
        tolerance = 0.0 if not loose else RESUME_TOLERANCE * max(1.0, weights_scale(base / main_prec / "last.pt"))
        return {"precision": main_prec, "stopped_at_step": half, "of": p.train_steps,
                "stop_checkpoint_written": stopped_ok, "max_abs_weight_diff": diff, "nondeterministic_ops": loose,
                "tolerance": tolerance, "equal": diff <= tolerance}

    def other():
        if other_prec == "fp16" and load_recipe(paper, "synthetic").sam:
            return {"status": "skipped: the engine refuses SAM with fp16 loss scaling (use bf16 or fp32)"}
        return run(other_prec, deterministic=False)

    attempt(main_key, lambda: run(main_prec, deterministic=True))
    if isinstance(row[main_key], dict):
        attempt("resume", resume)
        attempt("evaluate_device_vs_cpu", lambda: evaluate_both(ctx, base / main_prec))
    else:
        row["resume"] = row["evaluate_device_vs_cpu"] = f"skipped: the {main_prec} run did not complete"
    attempt(other_key, other)
    row["ok"] = correctness_ok(ctx, row)
    if row["ok"] is False:
        ctx.failures.append(f"correctness {paper}: a check failed")
    shutil.rmtree(base, ignore_errors=True)
    return row


def correctness_ok(ctx, row: dict) -> bool | None:
    """False when a check that ran failed; None when nothing ran; True otherwise. Accuracy above chance is
    judged on full runs only (a --tiny run takes a couple of steps)."""
    flags = []
    for name, r in row.items():
        if name.startswith("train_") and isinstance(r, dict) and "finite_losses" in r:
            flags += [r["finite_losses"], r["checkpoint_written"]] + ([] if ctx.tiny else [r["above_chance"]])
    if isinstance(row.get("resume"), dict):
        flags.append(row["resume"]["equal"])
    if isinstance(row.get("evaluate_device_vs_cpu"), dict):
        flags.append(row["evaluate_device_vs_cpu"]["equal_within_fp32_tolerance"])
    return all(flags) if flags else None


def step_correctness(ctx) -> dict:
    out = {"papers": {}, "train_steps": ctx.plan.train_steps, "batch": ctx.plan.train_batch,
           "precisions": list(correctness_precisions(ctx.device)),
           "note": "synthetic card of each paper; the first precision's run and its resume pair in deterministic "
                   "mode, the second precision's run without"}
    per_paper(ctx, "correctness", out, correctness_paper)
    out["nondeterministic_op_warnings"] = sorted(ctx.nondeterministic)
    return out


# -------------------------------------------------------------------------------------------------- report

def short(v) -> str:
    if isinstance(v, str):
        return v
    return json.dumps({k: (round(x, 4) if isinstance(x, float) else x) for k, x in v.items()
                       if not isinstance(x, (dict, list))})


def fmt(v, unit: str = "") -> str:
    if isinstance(v, dict):
        return f"{v['img_s']:g}{unit}"
    if isinstance(v, str):
        return "skipped" if v.startswith("skipped") else "error"
    return "–"


def markdown(data: dict) -> str:
    meta, steps = data["meta"], data["steps"]
    env = steps["environment"]
    lines = ["# ferlib GPU check", "",
             f"Command: `{meta.get('command')}`  ",
             f"Device: **{env['gpu']}** ({env['gpu_memory_gb']} GB)  " if env.get("gpu") else
             f"Device: **{meta.get('device')}** (no GPU: the numbers below measure no GPU)  ",
             f"torch {env.get('torch', '–')} (CUDA {env.get('cuda_build')}, cuDNN {env.get('cudnn')}), "
             f"{env.get('threads', '–')} CPU threads, mamba_ssm kernel: {env.get('mamba_ssm_selective_scan_imports', '–')}  ",
             f"Started {meta.get('started')}, {meta.get('elapsed_s', '–')} s so far of a {meta.get('budget_s')} s budget"
             f"{' (finished)' if meta.get('finished') else ' (running or cut off)'}; tiny: {meta.get('tiny')}", ""]
    tp = steps["throughput"]
    lines += ["## Training throughput (images/s; peak MB)", "",
              f"{tp.get('warmup', '–')} warm-up + {tp.get('steps', '–')} timed steps per variant, "
              f"{tp.get('workers', '–')} DataLoader workers, torch.compile backend {tp.get('compile_backend', '–')}.",
              "",
              "| paper | batch (card) | (a) authors fp32 | (b) engine fp32 | (b') engine tf32 | (c) engine bf16 "
              "| (d) bf16+compile | compile s | (b)/(a) | (b')/(b) | (d)/(a) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for paper, row in (tp.get("papers") or {}).items():
        if not isinstance(row, dict):
            lines.append(f"| {paper} | {row} |")
            continue
        v = row.get("variants", {})
        cells = [f"{fmt(v.get(k))} ({v[k]['peak_memory_mb']:g})" if isinstance(v.get(k), dict) else fmt(v.get(k))
                 for k in VARIANTS]
        comp = v.get("engine_bf16_compile")
        r = row.get("ratios", {})
        lines.append(f"| {paper} | {row.get('batch')} ({row.get('card_batch')}) | " + " | ".join(cells)
                     + f" | {comp.get('compile_s', '–') if isinstance(comp, dict) else '–'}"
                     f" | {r.get('engine_fp32_vs_authors_fp32', '–')} | {r.get('tf32_vs_fp32', '–')}"
                     f" | {r.get('bf16_compile_vs_authors_fp32', '–')} |")
    dp = steps["data_pipeline"]
    lines += ["", "## Data pipeline alone", ""]
    if "ratio" in dp:
        lines.append(f"PIL per item {dp['a_pil_per_sample_img_s']:g} img/s vs cache + batched transforms "
                     f"{dp['b_cache_batched_img_s']:g} img/s = {dp['ratio']:g}x ({dp['images']} images at "
                     f"{dp['size']} px, batch {dp['batch_size']}, {dp['workers']} workers, on {dp['device']})")
    else:
        lines.append(str(dp.get("status")))
    sc = steps["selective_scan"]
    lines += ["", "## Selective scan (forward + backward, ms)", "", f"Shape: {sc.get('shape', '–')}", "",
              "| backend | forward | backward | total | max rel. diff vs reference |", "|---|---|---|---|---|"]
    for name, r in (sc.get("backends") or {}).items():
        d = (sc.get("diff_vs_reference") or {}).get(name)
        if isinstance(r, dict):
            lines.append(f"| {name} | {r['forward_ms']:g} | {r['backward_ms']:g} | {r['total_ms']:g} | "
                         f"{d['max_rel']:.2e} |" if d else f"| {name} | {r['forward_ms']:g} | {r['backward_ms']:g} | "
                         f"{r['total_ms']:g} | – |")
        else:
            lines.append(f"| {name} | {r} | | | |")
    co = steps["correctness"]
    lines += ["", "## Correctness on the device", "",
              "Training runs: finite losses, eval accuracy (chance), checkpoint written.", "",
              "| paper | training runs | resume = uninterrupted | evaluate device = CPU | ok |", "|---|---|---|---|---|"]
    for paper, row in (co.get("papers") or {}).items():
        if not isinstance(row, dict):
            lines.append(f"| {paper} | {row} |")
            continue
        runs = []
        for name, r in row.items():
            if not name.startswith("train_"):
                continue
            if isinstance(r, dict) and "finite_losses" in r:
                runs.append(f"{name[6:]}: {r['finite_losses']}, {r['eval_accuracy']:.3f} ({r['chance']:.3f}), "
                            f"{r['checkpoint_written']}")
            else:
                runs.append(f"{name[6:]}: {r.get('status') if isinstance(r, dict) else r}")
        res, ev = row.get("resume"), row.get("evaluate_device_vs_cpu")
        res = (f"{res['equal']} ({res['precision']}, max diff {res['max_abs_weight_diff']:.1e})"
               if isinstance(res, dict) else res)
        ev = (f"{ev['equal_within_fp32_tolerance']} (max diff {ev['max_abs_logit_diff']:.1e})"
              if isinstance(ev, dict) else ev)
        lines.append(f"| {paper} | {'; '.join(runs)} | {res} | {ev} | {row.get('ok')} |")
    if co.get("nondeterministic_op_warnings"):
        lines += ["", "Deterministic mode warned about: " + "; ".join(co["nondeterministic_op_warnings"])]
    tg = data.get("targets")
    if tg:
        lines += ["", "## Targets", ""] + [f"- {k}: {v}" for k, v in tg.items()]
    for name in STEPS:
        st = steps[name].get("status", "")
        if st and st != "done":
            lines.append(f"\n`{name}`: {st}")
    return "\n".join(lines) + "\n"


def targets(data: dict, device: torch.device) -> dict:
    """The issue's speed targets against what was measured (recorded as met only from a GPU run)."""
    out = {}
    papers = data["steps"]["throughput"].get("papers") or {}
    for paper, row in papers.items():
        r = row.get("ratios", {}) if isinstance(row, dict) else {}
        if "engine_fp32_vs_authors_fp32" in r:
            out[f"{paper} engine fp32 / authors fp32 >= {TARGETS['engine_vs_authors_same_precision']}"] = \
                r["engine_fp32_vs_authors_fp32"]
        if "bf16_compile_vs_authors_fp32" in r:
            out[f"{paper} bf16+compile / authors fp32 >= {TARGETS['bf16_compile_vs_authors']}"] = \
                r["bf16_compile_vs_authors_fp32"]
    sc = data["steps"]["selective_scan"]
    for k in ("torch", "torch_compiled"):
        if f"{k}_vs_mamba_ssm_time_ratio" in sc:
            out[f"{k} scan / mamba_ssm time <= {TARGETS['torch_scan_vs_mamba_max']}"] = sc[f"{k}_vs_mamba_ssm_time_ratio"]
    if not any(k.endswith("mamba_ssm_time_ratio") for k in sc) and "compiled_speedup_vs_torch" in sc:
        out["scan: compiled vs eager speed-up (no mamba_ssm)"] = sc["compiled_speedup_vs_torch"]
    if device.type != "cuda":
        out = {k: f"{v} (CPU run: not a measurement of the target)" for k, v in out.items()}
    return out


# ---------------------------------------------------------------------------------------------------- main

@dataclass
class Context:
    device: torch.device
    tiny: bool
    plan: Plan
    papers: tuple
    work: Path
    data_root: Path
    report: Report
    budget: Budget
    failures: list = field(default_factory=list)
    nondeterministic: set = field(default_factory=set)


RUNNERS = {"environment": step_environment, "throughput": step_throughput, "data_pipeline": step_data_pipeline,
           "selective_scan": step_selective_scan, "correctness": step_correctness}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/bench", help="folder for gpu_check.json / gpu_check.md")
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when present, else the --tiny CPU smoke run), cuda, cuda:N or cpu")
    p.add_argument("--tiny", action="store_true", help="toy sizes and a couple of steps (the CPU smoke run)")
    p.add_argument("--budget-s", type=float, default=420.0, help="seconds for the whole run (default 420)")
    p.add_argument("--papers", default=",".join(PAPERS), help="comma-separated subset of " + ",".join(PAPERS))
    p.add_argument("--max-batch", type=int, default=None,
                   help="cap on the cards' batch sizes (default: none, each card's batch, halved only on out-of-memory)")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader workers of both pipelines (default min(8, cores); 1 with --tiny)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: $OMP_NUM_THREADS when set, else torch's default)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per throughput variant")
    p.add_argument("--work-dir", default=None, help="where the synthetic set, caches and runs go "
                                                    "(default: a temporary folder, removed at the end)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    # cuBLAS reads this when it starts, long before the deterministic runs of the correctness step ask for it
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    from ferlib.engine.env import configure_threads, resolve_device

    threads = configure_threads(a.threads)
    device = resolve_device(a.device)
    if a.device == "auto" and device.type == "cpu" and not a.tiny:
        print("gpu_check: no CUDA device: running the CPU smoke version (--tiny); its numbers measure no GPU",
              flush=True)
        a.tiny = True
    workers = a.workers if a.workers is not None else min(8, os.cpu_count() or 1)
    plan = tiny_plan(workers) if a.tiny else Plan(workers=workers)
    if a.max_batch:
        plan.max_batch = a.max_batch
    if a.steps:
        plan.steps = a.steps
    papers = tuple(x.strip() for x in a.papers.split(",") if x.strip())
    unknown = sorted(set(papers) - set(PAPERS))
    if unknown:
        raise SystemExit(f"unknown papers {unknown}; choose from {PAPERS}")
    budget = Budget(a.budget_s)
    meta = {"command": " ".join([Path(sys.argv[0]).name] + (sys.argv[1:] if argv is None else list(argv))),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "device": str(device), "tiny": a.tiny,
            "budget_s": a.budget_s, "threads": threads, "workers": plan.workers, "finished": False}
    report = Report(Path(a.out), meta)
    (report.out / "gpu_check_train.log").write_text("")
    tmp = Path(a.work_dir) if a.work_dir else Path(tempfile.mkdtemp(prefix="ferlib_gpu_check_"))
    # ferlib's data folder for this run (the synthetic set and every cache): nothing goes into the checkout's data/
    old_data = os.environ.get("FERLIB_DATA")
    os.environ["FERLIB_DATA"] = str(tmp)
    ctx = Context(device, a.tiny, plan, papers, tmp, tmp / "synthetic", report, budget)
    try:
        for name in STEPS:
            budget.start_step(name)
            st = report.step(name)
            if name == "throughput":  # the first step that needs the synthetic set
                blocked = prepare_data(ctx)
                if blocked:
                    for rest in STEPS[STEPS.index(name):]:
                        report.step(rest)["status"] = blocked
                        log(budget, f"{rest}: {blocked}")
                    break
                budget.start_step(name)
            log(budget, f"{name}: starting ({budget.step_left():.0f} s for this step)")
            st["status"] = "running"
            t0 = time.perf_counter()
            try:
                res = RUNNERS[name](ctx)
                st.update(res)
                if not str(st.get("status", "")).startswith("skipped"):
                    st["status"] = "done"
            except Exception as e:  # noqa: BLE001 - a step's failure is recorded; the next steps still run
                st["status"] = error_text(e)
                ctx.failures.append(f"{name}: {st['status']}")
            st["seconds"] = round(time.perf_counter() - t0, 1)
            report.data["meta"]["elapsed_s"] = round(budget.elapsed(), 1)
            report.data["targets"] = targets(report.data, device)
            report.save()
            log(budget, f"{name}: {st['status']} in {st['seconds']} s")
    finally:
        report.data["meta"].update(finished=True, elapsed_s=round(budget.elapsed(), 1), failures=ctx.failures)
        report.data["targets"] = targets(report.data, device)
        report.save()
        if not a.work_dir:
            shutil.rmtree(tmp, ignore_errors=True)
        if old_data is None:
            os.environ.pop("FERLIB_DATA", None)
        else:
            os.environ["FERLIB_DATA"] = old_data
    log(budget, f"wrote {report.out / 'gpu_check.json'} and gpu_check.md; "
                f"{len(ctx.failures)} failure(s)" + (": " + "; ".join(ctx.failures) if ctx.failures else ""))
    return 1 if ctx.failures else 0


if __name__ == "__main__":
    sys.exit(main())
