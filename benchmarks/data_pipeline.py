"""Images/s of the data pipeline: the authors' way vs ferlib's cache + batched transforms (docs/design.md §5).

Per paper (``python benchmarks/data_pipeline.py``, the default): each paper's FULL train transform from its
card's RAF-DB entry, on the same synthetic RAF-DB JPEG files (official layout, 100×100 aligned crops),
in the same run, on ONE CPU core (OMP_NUM_THREADS=1, torch.set_num_threads(1), no DataLoader workers):

(a) the authors' per-sample pipeline (``AuthorsTrainSet`` of ``support/authors_pipeline.py``): decode at every
    access (cv2 or PIL, as their code) and their torchvision transforms per item, collated into the card's batch;
(b) ferlib: batches gathered from the uint8 cache at the card's ``stored_size`` and the card's train
    transform (``build_batch_transform(recipe, train=True)``: every random op drawn per image, applied to
    the whole batch) in the training process, as the engine runs it.

The timed pass is the second over the files (the first warms caches up); the table gives images/s per core
and (b)/(a). Writes ``results/bench/data_pipeline.json`` and ``data_pipeline.md``.

    python benchmarks/data_pipeline.py [--papers fermam,emonet] [--images 960] [--repeat 1]

``--loader`` asks the other question, whether the loader feeds a device: resize + flip only, (a) per item in
DataLoader workers vs (b) cache batches gathered in workers and flipped + normalised on ``--device`` (``measure()``);
it writes ``data_pipeline_loader.json`` / ``.md`` (the data row of ``make gpu-check``).

    python benchmarks/data_pipeline.py --loader --device cuda --workers 8 --images 1024 --size 112
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

if __name__ == "__main__":  # run as the benchmark: set before torch is imported
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # per-core numbers
    if "--thp" in sys.argv:  # PyTorch's CPU allocator: 2 MB-aligned blocks with transparent huge pages (read once)
        os.environ["THP_MEM_ALLOC_ENABLE"] = "1"

import torch  # noqa: E402
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler  # noqa: E402

from ferlib.data import load_dataset  # noqa: E402
from ferlib.data.synthetic_faces import SyntheticConfig, generate  # noqa: E402
from ferlib.data.transforms import build_batch_transform  # noqa: E402
from ferlib.paths import results_dir  # noqa: E402
from ferlib.recipes import Recipe, load_recipe  # noqa: E402

from support.authors_pipeline import MEAN, PAPERS, STD, AuthorsTrainSet, PILFolder  # noqa: E402  (benchmarks/support)


class CacheBatches(Dataset):
    """Indexed by a list of indices: one uint8 batch [B,3,S,S] gathered from the cache memmap."""

    def __init__(self, cached, transform=None):
        self.cached, self.transform = cached, transform
        self.targets = torch.as_tensor(cached.targets)

    def __len__(self):
        return len(self.cached)

    def __getitem__(self, idx):
        idx = sorted(idx)
        x = self.cached.batch(idx)
        return (self.transform(x) if self.transform is not None else x), self.targets[idx]


def run_epochs(loader, step, epochs: int) -> tuple[float, int]:
    """Seconds and images of the last epoch (earlier ones warm the workers up)."""
    for e in range(epochs):
        n, t0 = 0, time.perf_counter()
        for x, y in loader:
            x = step(x)
            n += x.shape[0]
        dt = time.perf_counter() - t0
    return dt, n


def _on(device: torch.device, fn=None):
    """A step that moves the batch to ``device`` (then applies ``fn``) and waits for the device."""
    def step(x):
        x = x.to(device, non_blocking=True)
        x = fn(x) if fn is not None else x
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return x

    return step


def measure(files, cached, size: int, batch_size: int, workers: int, epochs: int = 2, transform_in: str = "main",
            device: torch.device | str = "cpu") -> dict:
    """Images/s of (a) the per-item PIL pipeline over ``files`` and (b) cache batches of ``cached`` with the
    batched transform, both delivering the training batch on ``device``; the last of ``epochs`` is timed."""
    device = torch.device(device)
    authors = DataLoader(PILFolder(files.samples, files.targets, size), batch_size=batch_size, shuffle=True,
                         num_workers=workers, persistent_workers=workers > 0, pin_memory=device.type == "cuda")
    ta, na = run_epochs(authors, _on(device), epochs)
    recipe = Recipe(paper="bench", dataset="synthetic", model="none", input_size=size, mean=MEAN, std=STD,
                    train_transforms=("hflip",))
    in_workers = workers > 0 and transform_in == "workers" and device.type == "cpu"
    tf = build_batch_transform(recipe, train=True)
    batches = BatchSampler(RandomSampler(range(len(cached))), batch_size, drop_last=False)
    # workers only gather uint8 batches (4x less to pass between processes than float); the batched
    # transform runs where the engine runs it, on the training process's batch (the GPU in real runs)
    ours = DataLoader(CacheBatches(cached, tf if in_workers else None), sampler=batches, batch_size=None,
                      num_workers=workers, persistent_workers=workers > 0, pin_memory=device.type == "cuda")
    tb, nb = run_epochs(ours, _on(device, None if in_workers else tf.to(device)), epochs)
    assert na == nb == len(files) == len(cached), (na, nb, len(files), len(cached))
    ra, rb = na / ta, nb / tb
    return {"images": na, "size": size, "batch_size": batch_size, "workers": workers, "device": str(device),
            "a_pil_per_sample_img_s": round(ra, 1), "b_cache_batched_img_s": round(rb, 1), "ratio": round(rb / ra, 2),
            "transform_in": "workers" if in_workers else "main"}


def synthetic_rafdb(root: Path, n: int) -> Path:
    """``n`` synthetic training faces written as RAF-DB (``Image/aligned/*_aligned.jpg``, 100×100 JPEG)."""
    return generate(root, "rafdb", SyntheticConfig(n_train=n, n_test=8), progress=False)


def measure_paper(paper: str, files, cached, recipe, batch_size: int, epochs: int = 2) -> dict:
    """Images/s on one core of (a) the authors' per-sample pipeline over ``files`` and (b) ferlib's cache
    batches of ``cached`` with the card's batched train transform; the last of ``epochs`` passes is timed."""
    authors = DataLoader(AuthorsTrainSet(files.samples, files.targets, paper), batch_size=batch_size, shuffle=True)
    ta, na = run_epochs(authors, lambda x: x, epochs)
    tf = build_batch_transform(recipe, train=True)
    batches = BatchSampler(RandomSampler(range(len(cached))), batch_size, drop_last=False)
    ours = DataLoader(CacheBatches(cached, None), sampler=batches, batch_size=None)
    tb, nb = run_epochs(ours, tf, epochs)
    assert na == nb == len(files) == len(cached), (na, nb, len(files), len(cached))
    xa, xb = next(iter(authors))[0], tf(cached.batch(range(min(batch_size, len(cached)))))
    assert xa.shape[1:] == xb.shape[1:], (paper, xa.shape, xb.shape)  # the same network input
    ra, rb = na / ta, nb / tb
    return {"paper": paper, "images": na, "batch_size": batch_size, "stored_size": cached.size,
            "input_size": recipe.input_size, "train_transforms": list(recipe.train_transforms),
            "a_authors_img_s": round(ra, 1), "b_ferlib_img_s": round(rb, 1), "ratio": round(rb / ra, 2)}


def markdown(rows: list[dict], runs: int) -> str:
    """One line per paper: steps, sizes, (a), (b) and the ratio (median over runs, range when several)."""
    def cell(vals, fmt):
        vals = sorted(vals)
        n = len(vals)
        med = vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2
        return fmt.format(med) + (f" ({fmt.format(vals[0])}–{fmt.format(vals[-1])})" if len(vals) > 1 else "")

    out = ["| paper | train transform (card, RAF-DB) | stored → input | batch | (a) authors img/s | "
           "(b) ferlib img/s | (b)/(a) |", "|---|---|---|---|---|---|---|"]
    for paper in dict.fromkeys(r["paper"] for r in rows):
        rs = [r for r in rows if r["paper"] == paper]
        r = rs[0]
        steps = ", ".join(r["train_transforms"]) or "none"
        out.append(f"| {paper} | {steps} | {r['stored_size']} → {r['input_size']} | {r['batch_size']} | "
                   f"{cell([x['a_authors_img_s'] for x in rs], '{:.0f}')} | "
                   f"{cell([x['b_ferlib_img_s'] for x in rs], '{:.0f}')} | {cell([x['ratio'] for x in rs], '{:.1f}×')} |")
    out.append(f"\n{runs} run(s), one CPU core each side (OMP_NUM_THREADS=1, torch threads 1, no workers); "
               "median (min–max) over runs.")
    return "\n".join(out)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--papers", default=",".join(PAPERS), help="comma-separated cards (default: all five)")
    p.add_argument("--root", default=None, help="folder for the synthetic RAF-DB files and caches "
                   "(default data/bench_rafdb)")
    p.add_argument("--images", type=int, default=960, help="synthetic training images (one timed pass)")
    p.add_argument("--batch-size", type=int, default=None, help="default: each card's RAF-DB batch")
    p.add_argument("--repeat", type=int, default=1, help="runs of the whole table (spread)")
    p.add_argument("--out", default=None, help="JSON path (default results/bench/data_pipeline.json)")
    p.add_argument("--thp", action="store_true", help="THP_MEM_ALLOC_ENABLE=1 for both sides: batch-sized "
                   "tensors then cost far fewer page faults (must be on the command line: read at import)")
    p.add_argument("--loader", action="store_true", help="resize + flip with DataLoader workers, the batch "
                   "delivered on --device (measure()), instead of the per-paper table")
    p.add_argument("--device", default="cpu", help="cpu or cuda (--loader: where (b) transforms the batch)")
    p.add_argument("--workers", type=int, default=8, help="--loader: DataLoader workers of both sides")
    p.add_argument("--size", type=int, default=112, help="--loader: image side")
    a = p.parse_args(argv)
    if not a.loader and a.device != "cpu":
        p.error("the per-paper table measures one CPU core; add --loader to measure feeding --device " + a.device)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    torch.set_num_threads(1)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    root = synthetic_rafdb(Path(a.root or "data/bench_rafdb"), a.images)
    if a.loader:
        return loader_main(a, root)
    files = load_dataset("rafdb", root, "train", progress=False)
    rows = []
    for run in range(a.repeat):
        for paper in a.papers.split(","):
            recipe = load_recipe(paper, "rafdb")
            stored = recipe.stored_size or recipe.input_size
            cached = load_dataset("rafdb", root, "train", cache=root / "cache", cache_size=stored, progress=False)
            row = measure_paper(paper, files, cached, recipe, min(a.batch_size or recipe.batch_size, len(files)))
            rows.append({"run": run, **row})
            print(f"run {run} {paper}: {row['a_authors_img_s']:.0f} vs {row['b_ferlib_img_s']:.0f} img/s = "
                  f"{row['ratio']:.1f}x", flush=True)
    table = markdown(rows, a.repeat)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    if a.thp:
        table += " THP_MEM_ALLOC_ENABLE=1."
    table += (f" Load average (1 min) {load_before[0]:.1f} before, {load[0]:.1f} after, on {os.cpu_count()} CPUs."
              if load_before and load else "")
    result = {"rows": rows, "table": table, "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
              "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
              "loadavg_before": [round(v, 2) for v in load_before] if load_before else None,
              "loadavg_after": [round(v, 2) for v in load] if load else None,
              "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE") == "1"}
    return write_result(result, table, a.out, "data_pipeline.json")


def loader_main(a, root: Path) -> dict:
    """``--loader``: :func:`measure` on the synthetic RAF-DB files; ``data_pipeline_loader.json`` / ``.md``."""
    files = load_dataset("rafdb", root, "train", progress=False)
    cached = load_dataset("rafdb", root, "train", cache=root / "cache", cache_size=a.size, progress=False)
    r = measure(files, cached, a.size, min(a.batch_size or 64, len(files)), a.workers, epochs=2, device=a.device)
    line = (f"PIL per item {r['a_pil_per_sample_img_s']:g} img/s vs cache + batched transforms "
            f"{r['b_cache_batched_img_s']:g} img/s = {r['ratio']:g}x ({r['images']} images at {r['size']} px, "
            f"batch {r['batch_size']}, {r['workers']} workers, on {r['device']})")
    result = {**r, "torch": torch.__version__, "summary": [["resize + flip, loader feeding the device", line]]}
    return write_result(result, line, a.out, "data_pipeline_loader.json")


def write_result(result: dict, text: str, out, default_name: str) -> dict:
    """``result`` as JSON at ``out`` (default ``results/bench/<default_name>``), ``text`` beside it as .md and on
    the screen."""
    out = Path(out) if out else results_dir() / "bench" / default_name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
