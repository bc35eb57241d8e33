"""The one training / evaluation loop for every paper (DESIGN §3, §8).

A paper brings a model (returning ``ModelOutput``), a loss and a recipe; this module owns devices,
precision, data order, checkpoints and the run directory::

    run_dir/config.yaml        resolved recipe + environment + fit options
    run_dir/metrics.jsonl      one JSON line per epoch
    run_dir/last.pt, best.pt   atomic checkpoints (model, optimiser, scheduler, loss, RNG, epoch/step)
    run_dir/predictions.npz    logits, targets, features of the best model on the evaluation split
    run_dir/summary.json       last-epoch and selected-epoch metrics
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.utils.data import DataLoader, Sampler

from ferlib.data.transforms import build_batch_transform

from .checkpoint import load_checkpoint, save_checkpoint
from .env import environment, resolve_device, rng_state, seed_everything, set_rng_state
from .metrics import classification_metrics
from .optim import build_optimizer, build_scheduler


@dataclasses.dataclass
class FitOptions:
    """How to train (never what): device, precision, speed switches, checkpointing, limits."""

    device: str = "auto"
    precision: str = "auto"          # auto = bf16 autocast on CUDA, fp32 on CPU; or "fp32", "bf16", "fp16"
    channels_last: bool | None = None  # None = on for CUDA
    compile: bool = False
    num_workers: int = 0
    accumulate: int = 1              # gradient accumulation steps (effective batch = batch_size × accumulate)
    max_steps: int | None = None     # stop after this many optimiser steps (smoke runs); also limits evaluation
    checkpoint_every_steps: int | None = None
    seed: int = 0
    deterministic: bool = False
    progress: bool | None = None     # None = only on a terminal or in a notebook
    eval_tta: bool = False
    ema: float | None = None         # decay of an exponential moving average of the weights


class EpochSampler(Sampler):
    """A seeded random permutation per epoch (``set_epoch``), split across DDP ranks; ``start`` skips
    the first batches when resuming mid-epoch."""

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True):
        self.n, self.seed, self.rank, self.world, self.shuffle = n, seed, rank, world, shuffle
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            idx = torch.randperm(self.n, generator=g).tolist()
        else:
            idx = list(range(self.n))
        per = math.ceil(self.n / self.world)
        idx = (idx + idx[: per * self.world - self.n])[self.rank::self.world]
        return idx

    def __iter__(self):
        return iter(self.indices()[self.start:])

    def __len__(self) -> int:
        return math.ceil(self.n / self.world) - self.start


def collate_uint8(batch):
    """Stack uint8 [3,H,W] images (resizing odd sizes to the first one's) and their targets."""
    imgs, targets = zip(*batch)
    h, w = imgs[0].shape[-2:]
    if any(im.shape[-2:] != (h, w) for im in imgs):
        from torchvision.transforms.v2 import functional as TF

        imgs = [im if im.shape[-2:] == (h, w) else TF.resize(im, [h, w], antialias=True) for im in imgs]
    t0 = targets[0]
    if isinstance(t0, torch.Tensor):
        tgt = torch.stack(targets)
    elif t0 is None:
        tgt = torch.full((len(targets),), -1, dtype=torch.long)
    else:
        tgt = torch.as_tensor(targets, dtype=torch.long)
    return torch.stack(imgs), tgt


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _autocast(device: torch.device, precision: str):
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device.type, dtype=dtype)


def _progress_enabled(flag: bool | None) -> bool:
    if flag is not None:
        return flag
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


@torch.no_grad()
def predict(model, dataset, recipe, device="auto", batch_size: int | None = None, tta: bool = False,
            max_batches: int | None = None, num_workers: int = 0, progress: bool | None = None,
            precision: str = "auto") -> dict:
    """Run ``model`` over ``dataset``: ``{"logits" [N,C], "features" [N,D], "targets"}`` as NumPy arrays.

    ``tta`` averages the softmax-free logits of the image and its horizontal flip.
    """
    from tqdm.auto import tqdm

    device = resolve_device(device)
    model = model.to(device)
    was_training = model.training
    model.eval()
    tf = build_batch_transform(recipe, train=False).to(device)
    loader = DataLoader(dataset, batch_size=batch_size or recipe.batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=collate_uint8)
    logits, feats, targets = [], [], []
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    for i, (x, y) in enumerate(tqdm(loader, total=total, desc="eval", leave=False, disable=not _progress_enabled(progress))):
        if max_batches is not None and i >= max_batches:
            break
        x = tf(x.to(device, non_blocking=True))
        with _autocast(device, precision):
            out = model(x)
            lg = out.logits.float()
            if tta:
                lg = (lg + model(x.flip(-1)).logits.float()) / 2
        logits.append(lg.cpu())
        feats.append(out.features.float().flatten(1).cpu())
        targets.append(y)
    model.train(was_training)
    return {"logits": torch.cat(logits).numpy(), "features": torch.cat(feats).numpy(),
            "targets": torch.cat(targets).numpy()}


def evaluate(model, dataset, recipe, device="auto", tta: bool = False, max_batches: int | None = None,
             progress: bool | None = None, **kw) -> dict:
    """Accuracy, mean per-class accuracy, macro F1 and confusion matrix of ``model`` on ``dataset``,
    plus the raw ``predictions`` (logits, features, targets)."""
    pred = predict(model, dataset, recipe, device, tta=tta, max_batches=max_batches, progress=progress, **kw)
    metrics = classification_metrics(pred["logits"], pred["targets"], list(dataset.classes))
    return {**metrics, "predictions": pred}


def fit(model, loss, recipe, train, val, run_dir, resume: bool = True, options: FitOptions | None = None,
        callbacks=(), **option_kw) -> dict:
    """Train ``model`` with ``loss`` by ``recipe`` on ``train``, selecting on ``val``; returns the summary.

    ``val`` is the evaluation split the model is selected on (the test split in the authors' code,
    recorded as ``test_selected``; pass a held-out split to select honestly). ``resume=True``
    continues from ``run_dir/last.pt`` when it exists. Keyword options are :class:`FitOptions` fields.
    """
    from tqdm.auto import tqdm

    opts = dataclasses.replace(options or FitOptions(), **option_kw)
    run_dir = Path(run_dir)
    rank, world = _dist_info()
    is_main = rank == 0
    device = resolve_device(opts.device)
    seed_everything(opts.seed + rank, opts.deterministic)
    channels_last = device.type == "cuda" if opts.channels_last is None else opts.channels_last

    model = model.to(device)
    loss = loss.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = [p for p in list(model.parameters()) + list(loss.parameters()) if p.requires_grad]
    optimizer = build_optimizer(params, recipe)
    scheduler = build_scheduler(optimizer, recipe, recipe.epochs)
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(opts.ema)) if opts.ema else None
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if opts.compile:
        net = torch.compile(net)
    train_tf = build_batch_transform(recipe, train=True).to(device)
    sampler = _train_sampler(recipe, train, opts.seed, rank, world)
    loader = DataLoader(train, batch_size=recipe.batch_size, sampler=sampler, num_workers=opts.num_workers,
                        collate_fn=collate_uint8, pin_memory=device.type == "cuda", drop_last=False,
                        persistent_workers=opts.num_workers > 0)
    sel = recipe.selection_metric
    state = {"epoch": 0, "step": 0, "batch_in_epoch": 0, "best": -math.inf, "best_epoch": None}

    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:  # a fresh run never mixes with an older one in the same folder
            for name in ("last.pt", "last.pt.prev", "best.pt", "predictions.npz", "summary.json"):
                (run_dir / name).unlink(missing_ok=True)
    ckpt = load_checkpoint(run_dir / "last.pt") if resume else None
    if ckpt is not None:
        _unwrap(model).load_state_dict(ckpt["model"])
        loss.load_state_dict(ckpt["loss"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.load_state_dict(ckpt["ema"])
        state.update(ckpt["state"])
        set_rng_state(ckpt["rng"])
        if is_main:
            print(f"resumed {run_dir} at epoch {state['epoch']}, step {state['step']}", flush=True)
    elif is_main:
        _write_config(run_dir, recipe, opts, device, model, train, val)
        (run_dir / "metrics.jsonl").write_text("")

    def checkpoint(path: Path, keep_previous: bool = True):
        if not is_main:
            return
        save_checkpoint({
            "model": _unwrap(model).state_dict(), "loss": loss.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
            "state": dict(state), "rng": rng_state(), "recipe": recipe.to_dict(),
        }, path, keep_previous)

    show = _progress_enabled(opts.progress) and is_main
    done = opts.max_steps is not None and state["step"] >= opts.max_steps
    while state["epoch"] < recipe.epochs and not done:
        epoch = state["epoch"]
        sampler.set_epoch(epoch, start=state["batch_in_epoch"] * recipe.batch_size
                          if isinstance(sampler, EpochSampler) else 0)
        if hasattr(loss, "set_epoch"):
            loss.set_epoch(epoch)
        net.train()
        t0, seen, loss_sum, correct = time.time(), 0, 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{recipe.epochs}", leave=False, disable=not show)
        for x, y in bar:
            x = train_tf(x.to(device, non_blocking=True))
            y = y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            value, out = _train_step(net, loss, optimizer, x, y, device, opts, recipe, state)
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"loss is {value} at epoch {epoch + 1}, step {state['step']} (batch {state['batch_in_epoch']} "
                    f"of the epoch, {len(y)} images); lower the learning rate or check the data")
            if ema is not None:
                ema.update_parameters(_unwrap(model))
            state["step"] += 1
            state["batch_in_epoch"] += 1
            seen += len(y)
            loss_sum += value * len(y)
            correct += int((out.logits.argmax(1) == (y.argmax(1) if y.ndim == 2 else y)).sum())
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}")
            if opts.checkpoint_every_steps and state["step"] % opts.checkpoint_every_steps == 0:
                checkpoint(run_dir / "last.pt")
            if opts.max_steps is not None and state["step"] >= opts.max_steps:
                done = True
                break
        scheduler.step()
        train_stats = _reduce({"loss": loss_sum, "correct": correct, "seen": seen}, device)
        eval_model = ema.module if ema is not None else _unwrap(model)
        result = evaluate(eval_model, val, recipe, device, tta=opts.eval_tta,
                          max_batches=opts.max_steps, progress=show) if is_main else None
        state["epoch"] += 1
        state["batch_in_epoch"] = 0
        if is_main:
            row = {"epoch": state["epoch"], "step": state["step"], "lr": optimizer.param_groups[0]["lr"],
                   "train_loss": train_stats["loss"] / max(1, train_stats["seen"]),
                   "train_accuracy": train_stats["correct"] / max(1, train_stats["seen"]),
                   "time_s": round(time.time() - t0, 2),
                   **{f"eval_{k}": v for k, v in result.items() if k not in ("predictions", "confusion_matrix", "per_class_accuracy")}}
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"epoch {state['epoch']}/{recipe.epochs}: train loss {row['train_loss']:.4f} "
                  f"acc {row['train_accuracy']:.3f} | eval acc {result['accuracy']:.3f} "
                  f"mean-class {result['mean_class_accuracy']:.3f} ({row['time_s']}s)", flush=True)
            if result[sel] > state["best"]:
                state["best"], state["best_epoch"] = result[sel], state["epoch"]
                _save_predictions(run_dir, result, val)
                atomic_best = {"model": eval_model.state_dict(), "state": dict(state), "recipe": recipe.to_dict(),
                               "metrics": {k: v for k, v in result.items() if k != "predictions"}}
                save_checkpoint(atomic_best, run_dir / "best.pt", keep_previous=False)
            checkpoint(run_dir / "last.pt")
            for cb in callbacks:
                cb(row, result)
        if world > 1:
            dist.barrier()

    summary = _summarise(run_dir, sel) if is_main else {}
    return summary


def _train_step(net, loss, optimizer, x, y, device, opts, recipe, state):
    """One optimiser step (SAM: the two-step closure); returns (loss value, model output)."""
    acc = max(1, opts.accumulate)
    sam = hasattr(optimizer, "first_step")
    with _autocast(device, opts.precision):
        out = net(x)
        value = loss(out, y)
    (value / acc).backward()
    if (state["step"] + 1) % acc and not sam:
        return float(value.detach()), out  # accumulate
    if recipe.grad_clip:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], recipe.grad_clip)
    if sam:
        optimizer.first_step(zero_grad=True)
        with _autocast(device, opts.precision):
            loss(net(x), y).backward()
        optimizer.second_step(zero_grad=True)
    else:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return float(value.detach()), out


def _train_sampler(recipe, train, seed, rank, world):
    if recipe.sampler:
        from ferlib.data import samplers

        return samplers.build_sampler(recipe.sampler, train, seed=seed, rank=rank, num_replicas=world,
                                      **(recipe.sampler_kwargs or {}))
    return EpochSampler(len(train), seed, rank, world)


def _reduce(stats: dict, device) -> dict:
    if not (dist.is_available() and dist.is_initialized()):
        return stats
    t = torch.tensor([float(v) for v in stats.values()], device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return dict(zip(stats, t.tolist()))


def _save_predictions(run_dir: Path, result: dict, dataset) -> None:
    p = result["predictions"]
    tmp = run_dir / ".predictions.tmp.npz"
    np.savez_compressed(tmp, logits=p["logits"], targets=p["targets"], features=p["features"],
                        classes=np.array(list(dataset.classes)))
    os.replace(tmp, run_dir / "predictions.npz")


def _write_config(run_dir, recipe, opts, device, model, train, val) -> None:
    n_params = sum(p.numel() for p in _unwrap(model).parameters())
    cfg = {"recipe": recipe.to_dict(), "fit": dataclasses.asdict(opts), "environment": environment(device),
           "model": {"name": recipe.model, "parameters": n_params},
           "data": {"train": {"n": len(train), "classes": list(train.classes), "root": str(getattr(train, "root", ""))},
                    "eval": {"n": len(val), "split": getattr(val, "split", None)}}}
    text = yaml.safe_dump(json.loads(json.dumps(cfg, default=str)), sort_keys=False)
    tmp = run_dir / ".config.yaml.tmp"
    tmp.write_text(text)
    os.replace(tmp, run_dir / "config.yaml")


def _summarise(run_dir: Path, sel: str) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    if not rows:
        return {}
    best = max(rows, key=lambda r: r[f"eval_{sel}"])
    summary = {"epochs_run": rows[-1]["epoch"], "steps": rows[-1]["step"], "selection_metric": sel,
               "last": {k[5:]: v for k, v in rows[-1].items() if k.startswith("eval_")},
               "selected": {k[5:]: v for k, v in best.items() if k.startswith("eval_")},
               "selected_epoch": best["epoch"]}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
