"""Training and inference images/s per paper model: the authors' pipeline vs ferlib's, same data, same run.

(a) authors' style: every step decodes each JPEG with PIL and transforms it per sample (Resize, random
    horizontal flip, ToTensor, Normalize), default ``DataLoader`` (``--workers``, default 0), fp32,
    contiguous (NCHW) tensors, a plain forward / cross-entropy / backward / Adam step;
(b) ferlib: images decoded once into the uint8 cache, batches gathered from the memmap
    (``ferlib.engine.loader``), flip + normalisation on the whole batch on the training device, the
    engine's :class:`~ferlib.engine.step.Stepper`, fused Adam and channels_last; on GPU also bf16 autocast and
    ``torch.compile`` (``--no-compile`` to skip; ``--compile`` on CPU, where compiling takes minutes).

The timed steps of (a) and (b) alternate (a, b, a, b, …) so that a machine shared with other work slows
both alike; the reported rate is images / median step time (data loading included), and ``cpu_img_s`` the
same per second of this process's CPU time (``time.process_time``; with 0 workers every step runs in this
process), which other jobs on a shared CPU do not inflate. (b) uses the engine's defaults: channels_last
(``ferlib.engine.loop.default_channels_last``: on GPU and CPU). Peak memory: CUDA
``max_memory_allocated`` on GPU; on CPU the largest resident set size sampled after each step.
Inference: eval mode, no grad, ferlib's settings, batch 1 and 256 (``--infer-batches``; CPU default 1 and
32 to stay short).

    python benchmarks/train_throughput.py [--models emonet,baseline] [--steps 5] [--size 112] [--device cpu]

Writes ``results/bench/train_throughput.json``; the last line printed is
``train_throughput: <model> authors-style <a> img/s vs ferlib <b> img/s = <ratio>x`` for the model
with the lowest ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from support.authors_pipeline import MEAN, STD, PILFolder  # noqa: E402  (benchmarks/support)

from ferlib.recipes import list_recipes, load_card  # noqa: E402

PAPER_MODELS = tuple(dict.fromkeys(load_card(name)["model"] for name in list_recipes()))  # every card's model


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def endless(loader):
    while True:
        yield from loader


class Pipeline:
    """One training pipeline: ``step()`` loads a batch and trains on it; times and memory are recorded.

    ``setup`` (optional) runs before every step: e.g. the TF32 switches, which are process-wide while the
    pipelines of one run share the process.
    """

    def __init__(self, name, model, loader, prepare, step, device, setup=None):
        self.name, self.model, self.it, self.prepare, self.step_fn = name, model, endless(loader), prepare, step
        self.device, self.setup, self.times, self.peak, self.images = device, setup, [], 0.0, 0
        self.cpu_times = []  # this process's CPU seconds per step: on a shared CPU, load does not inflate them

    def step(self, timed: bool = True) -> float:
        """One step; returns its seconds (data loading included)."""
        if self.setup is not None:
            self.setup()
        sync(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        x, y = next(self.it)
        x, y = self.prepare(x, y)
        self.step_fn(x, y)
        sync(self.device)
        dt = time.perf_counter() - t0
        if timed:
            self.times.append(dt)
            self.cpu_times.append(time.process_time() - c0)
            self.images = int(y.shape[0])
        self.peak = max(self.peak, torch.cuda.max_memory_allocated(self.device) / 2**20
                        if self.device.type == "cuda" else rss_mb())
        return dt

    def result(self) -> dict:
        med, cpu = statistics.median(self.times), statistics.median(self.cpu_times)
        return {"img_s": round(self.images / med, 2), "median_step_s": round(med, 4),
                "cpu_img_s": round(self.images / cpu, 2), "median_cpu_step_s": round(cpu, 4),
                "step_times_s": [round(t, 4) for t in self.times], "peak_memory_mb": round(self.peak, 1)}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_recipe(model_name: str, size: int):
    """The recipe both pipelines of this script train by: Adam 1e-4, cross-entropy, flip only."""
    from ferlib.recipes import Recipe

    return Recipe(paper="bench", dataset="synthetic", model=model_name, input_size=size, mean=MEAN, std=STD,
                  train_transforms=("hflip",), optimizer="adam", lr=1e-4, weight_decay=0.0)


def model_and_loss(recipe, device):
    """``recipe``'s model (random init, seed 0) and loss on ``device``, and the tensors the optimiser updates."""
    from ferlib.engine.training import build_loss
    from ferlib.models import create_model

    torch.manual_seed(0)
    model = create_model(recipe.model, num_classes=recipe.num_classes, **recipe.model_kwargs).to(device).train()
    loss = build_loss(recipe).to(device)
    params = [p for p in model.parameters() if p.requires_grad] + [p for p in loss.parameters() if p.requires_grad]
    return model, loss, params


def authors_pipeline(recipe, files, batch, device, workers, setup=None):
    """The authors' way: per-item PIL pipeline, fp32, NCHW, torch's default optimiser implementation (not
    fused), SAM's two passes when the recipe has SAM."""
    from ferlib.optim import build_optimizer

    model, loss, params = model_and_loss(recipe, device)
    opt = build_optimizer(params, recipe.replace(optimizer_kwargs={"foreach": None}))
    # persistent workers: a small benchmark set would restart them every few steps, a real epoch rarely
    loader = DataLoader(PILFolder(files.samples, files.targets, recipe.input_size), batch_size=batch, shuffle=True,
                        num_workers=workers, drop_last=True, persistent_workers=workers > 0)

    def prepare(x, y):
        return x.to(device), y.to(device)

    def step(x, y):
        opt.zero_grad()
        loss(model(x), y).backward()
        if recipe.sam:
            opt.first_step(zero_grad=True)
            loss(model(x), y).backward()
            opt.second_step(zero_grad=True)
        else:
            opt.step()

    return Pipeline("authors", model, loader, prepare, step, device, setup)


def ferlib_pipeline(recipe, cached, batch, device, workers, channels_last, precision, compile_, setup=None):
    """The engine's way: uint8 cache batches, the recipe's batched transforms on ``device``, channels_last,
    the fused optimiser and :class:`~ferlib.engine.step.Stepper` in ``precision``; ``compile_`` True or a
    ``torch.compile`` backend name compiles the model."""
    from ferlib.data.transforms import build_batch_transform
    from ferlib.engine.loader import EpochSampler, make_loader
    from ferlib.optim import build_optimizer
    from ferlib.engine.step import Stepper

    model, loss, params = model_and_loss(recipe, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(params, recipe)   # the engine's (fused) optimiser
    if compile_:  # True: torch's default backend (inductor); a string names another backend
        net = torch.compile(model, backend=compile_) if isinstance(compile_, str) else torch.compile(model)
    else:
        net = model
    tf = build_batch_transform(recipe, train=True).to(device)
    sampler = EpochSampler(len(cached), seed=0)
    loader = make_loader(cached, batch, sampler, workers, pin_memory=device.type == "cuda", persistent=True)
    loss_params = [p for p in loss.parameters() if p.requires_grad]
    stepper = Stepper(net, loss, opt, params, loss_params, device, precision, grad_clip=recipe.grad_clip)

    def prepare(x, y):
        x = tf(x.to(device, non_blocking=True))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(device, non_blocking=True)

    def step(x, y):
        stepper.micro(x, y, boundary=True)

    return Pipeline("ferlib", model, loader, prepare, step, device, setup)


@torch.no_grad()
def inference_img_s(model, size, batch, device, channels_last, precision, repeats) -> float:
    from ferlib.engine.step import autocast

    model.eval()
    x = torch.randn(batch, 3, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    for i in range(repeats + 1):
        sync(device)
        t0 = time.perf_counter()
        with autocast(device, precision):
            model(x)
        sync(device)
        if i:
            times.append(time.perf_counter() - t0)
    model.train()
    return round(batch / statistics.median(times), 2)


def profile_step(pipe: Pipeline, top: int = 12) -> list[dict]:
    """torch.profiler over one step of ``pipe``: the operators taking the most self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if pipe.device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        pipe.step(timed=False)
    total = sum(e.self_cpu_time_total for e in prof.key_averages()) or 1.0
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return [{"op": e.key, "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 2),
             "share": round(e.self_cpu_time_total / total, 3), "calls": e.count} for e in rows]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(PAPER_MODELS), help="comma-separated registered model names")
    p.add_argument("--steps", type=int, default=None, help="timed steps per pipeline (default 3 on CPU, 30 on GPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1 on CPU, 5 on GPU)")
    p.add_argument("--size", type=int, default=112, help="input side")
    p.add_argument("--batch-size", type=int, default=None, help="default 16 on CPU, 128 on GPU")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers, both pipelines")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: $OMP_NUM_THREADS, else torch's)")
    p.add_argument("--root", default=None, help="synthetic data folder (default data/synthetic)")
    p.add_argument("--cache-dir", default=None, help="cache folder (default data/cache)")
    p.add_argument("--infer-batches", default=None, help="inference batch sizes (default 1,256 on GPU, 1,32 on CPU)")
    p.add_argument("--compile", default=None, action=argparse.BooleanOptionalAction,
                   help="torch.compile the model in (b) (default: on GPU only; on CPU compiling takes minutes per model)")
    p.add_argument("--channels-last", default=None, action=argparse.BooleanOptionalAction,
                   help="(b) channels_last (default: as the engine, ferlib.engine.loop.default_channels_last)")
    p.add_argument("--profile", default=None, action=argparse.BooleanOptionalAction,
                   help="torch.profiler of a (b) step (default: when EMO-Net misses 1.5x)")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)

    from ferlib.data import load_dataset
    from ferlib.engine.env import configure_threads, resolve_device
    from ferlib.engine.loop import default_channels_last
    from ferlib.paths import results_dir

    device = resolve_device(a.device)
    gpu = device.type == "cuda"
    configure_threads(a.threads)
    steps = a.steps or (30 if gpu else 3)
    warmup = a.warmup if a.warmup is not None else (5 if gpu else 1)
    batch = a.batch_size or (128 if gpu else 16)
    infer = [int(b) for b in (a.infer_batches or ("1,256" if gpu else "1,32")).split(",")]
    channels_last = default_channels_last(device) if a.channels_last is None else a.channels_last
    precision = "bf16" if gpu else "fp32"
    compile_ = gpu if a.compile is None else a.compile

    files = load_dataset("synthetic", a.root, "train", progress=False)
    t0 = time.perf_counter()
    cached = load_dataset("synthetic", a.root, "train", cache=a.cache_dir or True, cache_size=a.size, progress=False)
    cache_s = time.perf_counter() - t0

    results = {}
    for name in [m.strip() for m in a.models.split(",") if m.strip()]:
        print(f"{name}: building pipelines", flush=True)
        try:
            recipe = bench_recipe(name, a.size)
            pa = authors_pipeline(recipe, files, batch, device, a.workers)
            pb = ferlib_pipeline(recipe, cached, batch, device, a.workers, channels_last, precision, compile_)
            for _ in range(warmup):
                pa.step(timed=False)
                pb.step(timed=False)
            if gpu:
                torch.cuda.reset_peak_memory_stats(device)
            for _ in range(steps):  # alternate, so that background load hits both alike
                pa.step()
                if gpu:
                    pa.peak = max(pa.peak, torch.cuda.max_memory_allocated(device) / 2**20)
                    torch.cuda.reset_peak_memory_stats(device)
                pb.step()
            ra, rb = pa.result(), pb.result()
            row = {"parameters": sum(q.numel() for q in pb.model.parameters()), "authors": ra, "ferlib": rb,
                   "ratio": round(rb["img_s"] / ra["img_s"], 3),
                   "ratio_cpu_time": round(rb["cpu_img_s"] / ra["cpu_img_s"], 3)}
            row["inference_img_s"] = {
                "authors_fp32": {str(bs): inference_img_s(pa.model, a.size, bs, device, False, "fp32", 3 if gpu else 1)
                                 for bs in infer},
                "ferlib": {str(bs): inference_img_s(pb.model, a.size, bs, device, channels_last, precision,
                                                    3 if gpu else 1) for bs in infer}}
            want_profile = a.profile if a.profile is not None else (name == "emonet" and row["ratio"] < 1.5)
            if want_profile:
                row["profile_ferlib_step"] = profile_step(pb)
                row["profile_authors_step"] = profile_step(pa)
            del pa, pb
        except Exception as e:  # noqa: BLE001 - one model's failure is reported, the others still run
            row = {"error": f"{type(e).__name__}: {e}"}
        results[name] = row
        print(name, json.dumps({k: v for k, v in row.items() if not k.startswith("profile")}), flush=True)
        if gpu:
            torch.cuda.empty_cache()

    out = {"device": str(device), "gpu": torch.cuda.get_device_name(device) if gpu else None,
           "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "size": a.size, "batch_size": batch, "steps": steps, "warmup": warmup,
           "workers": a.workers, "channels_last": channels_last, "precision_ferlib": precision, "compile": compile_,
           "inference_batches": infer, "cache_build_or_check_s": round(cache_s, 2), "models": results,
           "note": ("CPU run: few steps, inference batches 1 and 32 instead of 256; a machine shared with other "
                    "work makes single numbers noisy (steps alternate between pipelines)") if not gpu else ""}
    path = Path(a.out) if a.out else results_dir() / "bench" / "train_throughput.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    ok = {k: v for k, v in results.items() if "ratio" in v}
    if ok:
        worst = min(ok, key=lambda k: ok[k]["ratio"])
        r = ok[worst]
        print(f"train_throughput: {worst} authors-style {r['authors']['img_s']:.1f} img/s vs ferlib "
              f"{r['ferlib']['img_s']:.1f} img/s = {r['ratio']:.2f}x (per CPU second: {r['ratio_cpu_time']:.2f}x)")
    else:
        print("train_throughput: no model ran")
    return out


if __name__ == "__main__":
    main()
