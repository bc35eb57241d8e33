"""Training images/s and peak memory of each paper's RAF-DB card, the authors' way against ferlib's engine.

Per paper: the card's model, loss, optimiser, SAM, input size and batch on one device (FERMam 300 with SAM;
halved only on out-of-memory, recorded as ``batch_reduced_from``; ``--max-batch`` caps it on request):

(a) ``authors_fp32``: fp32, PIL decode + per-item torchvision transforms in a DataLoader with workers, torch's
    default optimiser and switches;
(b) ``engine_fp32``: ferlib's engine path in the card's precision (fp32, TF32 off): uint8 cache, the card's
    batched transforms on the device, channels_last, fused optimiser, :class:`~ferlib.engine.step.Stepper`;
(b') ``engine_tf32``: the same with ``precision: tf32``; (c) ``engine_bf16``: bf16 autocast;
(d) ``engine_bf16_compile``: bf16 + ``torch.compile`` (compile time apart), after (a)-(c) of every paper,
    quickest model first, so that a short budget still has every paper's eager numbers.

Each variant builds the same model from seed 0 and reads the same synthetic images (generated in a temporary
folder). images/s = batch / median step time, data loading included. ``--budget-s`` skips what its estimate
says does not fit, recording ``skipped: budget (...)``. Writes ``paper_throughput.json`` (after every variant,
so a run cut off keeps what it measured) and ``paper_throughput.md`` in ``--out``; exit status 1 when a
variant raised.

    python benchmarks/paper_throughput.py --device cuda                   # every paper, the cards' batches
    python benchmarks/paper_throughput.py                 # the same on CUDA; without CUDA the --tiny CPU smoke
    python benchmarks/paper_throughput.py --device cpu --tiny --papers emonet   # toy sizes: the CPU smoke
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

import train_throughput  # noqa: E402  (sibling benchmark: the two pipelines)

from ferlib.recipes import list_papers, load_recipe  # noqa: E402

PAPERS = tuple(list_papers())
VARIANTS = ("authors_fp32", "engine_fp32", "engine_tf32", "engine_bf16", "engine_bf16_compile")
EAGER = VARIANTS[:4]
#: The speed targets of issue 17 (engine vs the authors' pipeline, same precision; bf16 + compile vs the authors').
TARGETS = {"engine_fp32_vs_authors_fp32": 1.5, "bf16_compile_vs_authors_fp32": 2.5}
#: --tiny: toy sizes per paper (recipe overrides). FERMam, GReFEL and MMFRM have no width option: full models at
#: small inputs (their backbones resize to 112 inside) and batch 2.
TINY_DEFAULT = {"input_size": 32, "stored_size": 32}
TINY_RECIPE = {"mfer": {"input_size": 64, "stored_size": 64, "loss_kwargs": {"feat_dim": 128},
                        "model_kwargs": {"dims": [16, 32, 64, 128], "depths": [1, 1, 3, 1]}}}
#: --tiny compiles this model only (tracing a full model takes minutes on CPU), with the aot_eager backend.
TINY_COMPILE = ("emonet",)


def log(msg: str) -> None:
    print(f"[paper_throughput] {msg}", flush=True)


def error_text(e: BaseException) -> str:
    return f"error: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"


class Budget:
    """Seconds left; :meth:`skip` says why a measurement whose estimate does not fit is skipped."""

    def __init__(self, seconds: float | None):
        self.end = math.inf if seconds is None else time.perf_counter() + seconds

    def skip(self, estimate_s: float) -> str | None:
        left = self.end - time.perf_counter()
        return None if estimate_s <= left else f"skipped: budget (needs ~{estimate_s:.0f} s, {max(0.0, left):.0f} s left)"


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def paper_recipe(paper: str, tiny: bool):
    overrides = dict(TINY_RECIPE.get(paper, TINY_DEFAULT)) if tiny else {}
    if tiny and paper == "grefel":  # the card resizes to 256 before its crop
        overrides["transform_kwargs"] = {**load_recipe(paper, "rafdb").transform_kwargs, "resize_to": 36}
    return load_recipe(paper, "rafdb", **overrides)


def backend_switch(device: torch.device, tf32_matmul: bool, tf32_cudnn: bool, benchmark: bool):
    """A pipeline ``setup``: the TF32 / cuDNN autotuner switches of one variant (process-wide, set before each step)."""
    def setup():
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = tf32_matmul
            torch.backends.cudnn.allow_tf32 = tf32_cudnn
            torch.backends.cudnn.benchmark = benchmark

    return setup


class Bench:
    """One run: the device, sizes, data, budget and the result written after every measurement."""

    def __init__(self, a, device: torch.device, work: Path):
        self.a, self.device, self.work, self.budget = a, device, work, Budget(a.budget_s)
        self.compile_backend = "aot_eager" if a.tiny else a.compile
        self.priors = {"variant": 4.0, "compile": 15.0} if a.tiny else {"variant": 10.0, "compile": 60.0}
        self.failures: list[str] = []
        self.result = {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                       "torch": torch.__version__, "tiny": a.tiny, "warmup": a.warmup, "steps": a.steps,
                       "workers": a.workers, "compile_backend": self.compile_backend, "images": a.images,
                       "papers": {}, "finished": False}

    def dataset(self, size: int | None = None):
        """The synthetic train split as image files (``size`` None) or as the uint8 cache at ``size``."""
        from ferlib.data import load_dataset

        kw = dict(n_train=self.a.images, n_test=8, progress=False)
        if size is None:
            return load_dataset("synthetic", self.work / "synthetic", "train", **kw)
        return load_dataset("synthetic", self.work / "synthetic", "train", cache=self.work / "cache", cache_size=size, **kw)

    def save(self) -> None:
        out = Path(self.a.out)
        out.mkdir(parents=True, exist_ok=True)
        self.result["summary"] = summary(self.result)
        for name, text in (("paper_throughput.json", json.dumps(self.result, indent=1)),
                           ("paper_throughput.md", markdown(self.result))):
            tmp = out / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, out / name)

    def build(self, variant: str, recipe, files, cached, batch: int):
        dev, workers = self.device, self.a.workers
        if variant == "authors_fp32":  # torch's defaults: matmul TF32 off, cuDNN TF32 on, no autotuner
            return train_throughput.authors_pipeline(recipe, files, batch, dev, workers, backend_switch(dev, False, True, False))
        precision = "bf16" if "bf16" in variant else "fp32"
        tf32 = variant == "engine_tf32"  # what fit() sets for precision tf32; fp32 and bf16 keep TF32 off
        compile_ = variant.endswith("compile") and self.compile_backend
        return train_throughput.ferlib_pipeline(recipe, cached, batch, dev, workers, True, precision, compile_,
                                                backend_switch(dev, tf32, tf32, True))

    def measure(self, variant: str, recipe, files, cached, batch: int) -> dict:
        """Build, warm up (the first step compiles under (d)), then time ``--steps`` steps; peak memory of the timed
        steps (CUDA ``max_memory_allocated``; resident set size on CPU)."""
        free_memory(self.device)
        t0 = time.perf_counter()
        pipe = self.build(variant, recipe, files, cached, batch)
        build_s = time.perf_counter() - t0
        warmup = max(self.a.warmup, 1 if variant.endswith("compile") else 0)  # compile time apart from step time
        first = [pipe.step(timed=False) for _ in range(warmup)]
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        pipe.peak = 0.0
        for _ in range(self.a.steps):
            pipe.step()
        res = pipe.result()
        res.update(build_s=round(build_s, 2), first_step_s=round(first[0], 3) if first else None)
        if variant.endswith("compile") and first:
            res["compile_s"] = round(max(0.0, first[0] - res["median_step_s"]), 2)
            # the quickest model compiles first: the next ones are budgeted at twice its time at least
            self.priors["compile"] = max(self.priors["compile"], 2 * res["compile_s"])
        del pipe
        free_memory(self.device)
        return res

    def estimate(self, variant: str, measured: dict) -> float:
        """Seconds a variant should take: from a variant of the same paper already measured, else the prior."""
        done = [v for v in measured.values() if isinstance(v, dict) and "median_step_s" in v]
        est = (max(v["build_s"] for v in done) + (self.a.warmup + self.a.steps) * max(v["median_step_s"] for v in done)
               if done else self.priors["variant"])
        return est + (self.priors["compile"] if variant.endswith("compile") else 0.0)

    def run_variant(self, paper: str, variant: str, recipe, files, cached, row: dict) -> None:
        """Measure one variant into ``row["variants"]`` unless the budget says no; out-of-memory propagates."""
        reason = self.budget.skip(self.estimate(variant, row["variants"]))
        if reason:
            row["variants"][variant] = reason
        else:
            try:
                row["variants"][variant] = self.measure(variant, recipe, files, cached, row["batch"])
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as e:  # noqa: BLE001 - one variant's failure is recorded, the others run
                row["variants"][variant] = error_text(e)
                self.failures.append(f"{paper} {variant}: {row['variants'][variant]}")
        r = row["variants"][variant]
        log(f"{paper} {variant} (batch {row['batch']}): " + (r if isinstance(r, str) else
            f"{r['img_s']} img/s, peak {r['peak_memory_mb']} MB" + (f", compile {r['compile_s']} s" if "compile_s" in r else "")))
        row["ratios"] = ratios(row["variants"])
        self.save()

    def paper(self, paper: str) -> dict:
        """(a)-(c) of ``paper`` at the card's batch (``--max-batch`` caps it), halved until they fit in memory."""
        recipe = paper_recipe(paper, self.a.tiny)
        batch = recipe.batch_size if self.a.max_batch is None else min(recipe.batch_size, self.a.max_batch)
        row = {"input_size": recipe.input_size, "stored_size": recipe.stored_size, "card_batch": recipe.batch_size,
               "sam": recipe.sam, "optimizer": recipe.optimizer, "loss": recipe.loss,
               "engine_transforms": list(recipe.train_transforms), "authors_transforms": ["resize", "hflip"]}
        self.result["papers"][paper] = row
        files, cached = self.dataset(), self.dataset(recipe.stored_size or recipe.input_size)
        while True:
            row["batch"], row["variants"] = batch, {}
            try:
                for variant in EAGER:
                    self.run_variant(paper, variant, recipe, files, cached, row)
                return row
            except torch.cuda.OutOfMemoryError:
                free_memory(self.device)
                if batch <= 1:
                    raise
                row.setdefault("batch_reduced_from", []).append(batch)
                batch //= 2
                log(f"{paper}: out of memory, batch halved to {batch}")

    def compile_pass(self, papers) -> None:
        """Variant (d) of every paper, the quickest bf16 models first."""
        rows = self.result["papers"]

        def bf16_step(paper):
            r = rows[paper].get("variants", {}).get("engine_bf16") if isinstance(rows.get(paper), dict) else None
            return r["median_step_s"] if isinstance(r, dict) else math.inf

        for paper in sorted(papers, key=bf16_step):
            row = rows.get(paper)
            if not isinstance(row, dict) or "variants" not in row:
                continue
            if self.a.tiny and paper not in TINY_COMPILE:
                row["variants"]["engine_bf16_compile"] = ("skipped: --tiny compiles one small model only (tracing a "
                                                          "full model takes minutes on CPU)")
                continue
            try:
                recipe = paper_recipe(paper, self.a.tiny)
                self.run_variant(paper, "engine_bf16_compile", recipe, self.dataset(),
                                 self.dataset(recipe.stored_size or recipe.input_size), row)
            except torch.cuda.OutOfMemoryError as e:
                row["variants"]["engine_bf16_compile"] = error_text(e)
                self.failures.append(f"{paper} engine_bf16_compile: out of memory")
                free_memory(self.device)


def ratios(variants: dict) -> dict:
    rate = {k: v["img_s"] for k, v in variants.items() if isinstance(v, dict) and "img_s" in v}
    out = {}
    if rate.get("authors_fp32"):
        for k in VARIANTS[1:]:
            if k in rate:
                out[("bf16_compile" if k == "engine_bf16_compile" else k) + "_vs_authors_fp32"] = \
                    round(rate[k] / rate["authors_fp32"], 3)
    if rate.get("engine_fp32") and rate.get("engine_tf32"):
        out["tf32_vs_fp32"] = round(rate["engine_tf32"] / rate["engine_fp32"], 3)
    return out


def cell(v) -> str:
    if isinstance(v, dict):
        return f"{v['img_s']:g} ({v['peak_memory_mb']:g} MB)"
    return "–" if v is None else ("skipped" if v.startswith("skipped") else "error")


def markdown(result: dict) -> str:
    lines = [f"Training images/s (peak MB) on {result['gpu'] or result['device']}, {result['warmup']} warm-up + "
             f"{result['steps']} timed steps per variant, {result['workers']} workers, compile backend "
             f"{result['compile_backend']}.", "",
             "| paper | batch (card) | (a) authors fp32 | (b) engine fp32 | (b') engine tf32 | (c) engine bf16 "
             "| (d) bf16+compile | (b)/(a) | (d)/(a) |", "|---|---|---|---|---|---|---|---|---|"]
    for paper, row in result["papers"].items():
        if not isinstance(row, dict) or "variants" not in row:
            lines.append(f"| {paper} | {row.get('error', row) if isinstance(row, dict) else row} |")
            continue
        r = row.get("ratios", {})
        lines.append(f"| {paper} | {row['batch']} ({row['card_batch']}) | "
                     + " | ".join(cell(row["variants"].get(k)) for k in VARIANTS)
                     + f" | {r.get('engine_fp32_vs_authors_fp32', '–')} | {r.get('bf16_compile_vs_authors_fp32', '–')} |")
    return "\n".join(lines) + "\n"


def summary(result: dict) -> list[list[str]]:
    """``[item, result]`` rows for the ``make gpu-check`` table: one per paper, then the targets."""
    rows, on_gpu = [], result["gpu"] is not None
    for paper, row in result["papers"].items():
        if not isinstance(row, dict) or "variants" not in row:
            rows.append([f"throughput {paper}", str(row.get("error", row) if isinstance(row, dict) else row)])
            continue
        cells = "; ".join(f"{k} {cell(row['variants'].get(k))}" for k in VARIANTS)
        rows.append([f"throughput {paper}, batch {row['batch']} (card {row['card_batch']}), img/s", cells])
        for key, target in TARGETS.items():
            if key in row.get("ratios", {}):
                note = "" if on_gpu else " (CPU run: not a measurement of the target)"
                rows.append([f"{paper} {key} (target >= {target})", f"{row['ratios'][key]}{note}"])
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else the --tiny CPU smoke), cuda, "
                   "cuda:N or cpu (the cards' sizes on the CPU: slow)")
    p.add_argument("--papers", default=",".join(PAPERS), help="comma-separated subset of " + ",".join(PAPERS))
    p.add_argument("--tiny", action="store_true", help="toy sizes, batch 2, one timed step, aot_eager compile of emonet")
    p.add_argument("--budget-s", type=float, default=None, help="seconds for the whole run (default: no limit)")
    p.add_argument("--max-batch", type=int, default=None, help="cap on the cards' batch sizes (default: none)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers, both pipelines (default min(8, cores))")
    p.add_argument("--steps", type=int, default=None, help="timed steps per variant (default 8)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2)")
    p.add_argument("--images", type=int, default=None, help="synthetic training images (default 1024)")
    p.add_argument("--compile", default="inductor", help="torch.compile backend of (d)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: $OMP_NUM_THREADS, else torch's)")
    p.add_argument("--work-dir", default=None, help="synthetic set and caches (default: a temporary folder, removed)")
    p.add_argument("--out", default="results/bench", help="folder for paper_throughput.json / .md")
    a = p.parse_args(argv)
    if a.device == "auto" and not torch.cuda.is_available() and not a.tiny:
        log("no CUDA device: running the CPU smoke version (--tiny); its numbers measure no GPU")
        a.tiny = True
    cores = os.cpu_count() or 1
    defaults = ({"workers": min(1, cores), "steps": 1, "warmup": 0, "images": 48, "max_batch": 2} if a.tiny else
                {"workers": min(8, cores), "steps": 8, "warmup": 2, "images": 1024, "max_batch": None})
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.papers = tuple(x.strip() for x in a.papers.split(",") if x.strip())
    unknown = sorted(set(a.papers) - set(PAPERS))
    if unknown:
        p.error(f"unknown papers {unknown}; choose from {PAPERS}")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    from ferlib.engine.env import configure_threads, resolve_device

    configure_threads(a.threads)
    device = resolve_device(a.device)
    work = Path(a.work_dir) if a.work_dir else Path(tempfile.mkdtemp(prefix="ferlib_paper_throughput_"))
    old_data = os.environ.get("FERLIB_DATA")
    os.environ["FERLIB_DATA"] = str(work)  # every cache goes here, nothing into the checkout's data/
    bench = Bench(a, device, work)
    try:
        for paper in a.papers:
            try:
                bench.paper(paper)
            except Exception as e:  # noqa: BLE001 - a paper that raises is recorded, the next one runs
                bench.result["papers"][paper] = {"error": error_text(e)}
                bench.failures.append(f"{paper}: {error_text(e)}")
            bench.save()
        bench.compile_pass(a.papers)
    finally:
        bench.result.update(finished=True, failures=bench.failures)
        bench.save()
        if not a.work_dir:
            shutil.rmtree(work, ignore_errors=True)
        if old_data is None:
            os.environ.pop("FERLIB_DATA", None)
        else:
            os.environ["FERLIB_DATA"] = old_data
    log(f"wrote {Path(a.out) / 'paper_throughput.json'}; {len(bench.failures)} failure(s)")
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
