"""Images/s of the data pipeline: the authors' way vs ferlib's cache + batched transforms (DESIGN §5).

(a) per epoch, every JPEG is decoded with PIL and transformed per sample (Resize 112, RandomHorizontalFlip,
    ToTensor, Normalize), as the five projects' loaders do; (b) the images were decoded and resized once into
    the uint8 cache (``python -m ferlib prepare``), batches are gathered from the memmap and flipped /
    normalised as whole tensors (inside the workers on CPU). Same images (the synthetic RAF-DB train split), same size, same batch size,
    2 DataLoader workers each, same run. The timed epoch is the second one (workers already started).

    python benchmarks/data_pipeline.py [--root data/synthetic] [--size 112] [--workers 2]

Writes ``results/bench/data_pipeline.json``; the last line printed is
``data_pipeline: <a> img/s vs <b> img/s = <ratio>x``.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

from ferlib.data import load_dataset
from ferlib.data.transforms import build_batch_transform
from ferlib.paths import results_dir
from ferlib.recipes import Recipe

from authors_pipeline import MEAN, STD, PILFolder  # noqa: E402  (sibling script module)


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


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=None, help="synthetic data folder (default data/synthetic)")
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2, help="the last one is timed")
    p.add_argument("--transform-in", choices=("main", "workers"), default="main",
                   help="where (b) runs the batched transform: the main process (as on a GPU) or the workers")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)

    files = load_dataset("synthetic", a.root, "train", progress=False)
    t0 = time.perf_counter()
    cached = load_dataset("synthetic", a.root, "train", cache=True, cache_size=a.size, progress=False)
    cache_s = time.perf_counter() - t0
    result = measure(files, cached, a.size, a.batch_size, a.workers, a.epochs, a.transform_in)
    ra, rb = result["a_pil_per_sample_img_s"], result["b_cache_batched_img_s"]
    result.update({"cache_build_or_check_s": round(cache_s, 2), "torch": torch.__version__,
                   "machine": platform.processor() or platform.machine(), "cpu_threads": torch.get_num_threads()})
    out = Path(a.out) if a.out else results_dir() / "bench" / "data_pipeline.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print(f"data_pipeline: {ra:.0f} img/s vs {rb:.0f} img/s = {rb / ra:.1f}x")
    return result


if __name__ == "__main__":
    main()
