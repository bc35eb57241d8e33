"""The one training / evaluation loop for every paper (docs/design.md §3, §8).

A paper brings a model (returning ``ModelOutput``), a loss and a recipe; this module owns devices,
precision, data order and checkpoints, and fills the run directory through :class:`ferlib.run_dir.RunDir`,
which owns its files (``config.yaml`` and ``summary.json`` are each written once, complete)::

    run_dir/config.yaml        resolved recipe + environment (versions, git commit, device) + fit options
                               + where the data came from (``data.source``)
    run_dir/metrics.jsonl      one JSON line per epoch (``eval_*`` = the evaluation split, ``selected_on``)
    run_dir/last.pt, best.pt   atomic checkpoints (model, optimiser, scheduler, scaler, loss, EMA,
                               RNG of every rank, epoch / step / batch within the epoch)
    run_dir/predictions.npz    logits, targets, features of the selected model on the evaluation split
    run_dir/summary.json       last-epoch and selected-epoch metrics, labelled with the split selected on,
                               completeness, and with a held-out split ``test_at_val_selected``

Model selection is labelled honestly: by default the epoch is chosen on the evaluation split (the
test split, as the authors' code does) and the metrics are called ``test_selected``; with a held-out
split (``train(data=DataOptions(val_fraction=…))``) they are ``val_selected`` and the test split is reported
separately (``fit(test=…)`` evaluates ``best.pt`` on it before summary.json is written).

Several processes (``torchrun``): DDP, each rank its share of every epoch (:class:`EpochSampler`),
metrics summed over ranks, evaluation sharded and gathered, only rank 0 writes. One process is the
same code.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ferlib.data.registry import face_crop
from ferlib.data.transforms import build_batch_transform
from ferlib.metrics import classification_metrics
from ferlib.optim import apply_schedule, build_optimizer, build_scheduler
from ferlib.run_dir import RunDir

from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import (BatchSplitError, all_gather_objects, all_reduce_sum, barrier, broadcast_state, is_distributed,
                          per_process_batch, rank_and_world)
from .env import (backend_flags, environment, nondeterministic_ops, resolve_device, rng_state, seed_everything,
                  set_rng_state)
from .loader import batches_per_epoch, make_loader, train_sampler
from .policy import decide
from .step import Stepper, autocast, resolve_precision
from .writer import holds_run_dir

__all__ = ["FitOptions", "default_channels_last", "evaluate", "fit", "predict"]


def default_channels_last(device: torch.device) -> bool:
    """The engine's memory format when nobody chose one: channels_last on CUDA and on CPU, NCHW elsewhere (MPS).

    On the 2-core CPU it made every paper's training step faster than the authors' NCHW loop
    (``benchmarks/train_throughput.py``, README "The CPU engine against the authors' loop")."""
    return torch.device(device).type in ("cuda", "cpu")


@dataclasses.dataclass
class FitOptions:
    """How to train (never what): device, precision, speed switches, checkpointing, limits."""

    device: str = "auto"
    precision: str = "auto"          # auto = the recipe's (the authors' precision, fp32); or "fp32", "tf32", "bf16", "fp16"
    channels_last: bool | None = None  # None = default_channels_last(device): on for CUDA and CPU
    compile: bool = False
    num_workers: int = 0
    accumulate: int = 1              # gradient accumulation (effective batch = batch_size × accumulate; batch_size is global)
    max_steps: int | None = None     # stop after this many optimiser steps (smoke runs); also limits evaluation
    checkpoint_every_steps: int | None = None  # also write last.pt every N optimiser steps (mid-epoch)
    stop_after_steps: int | None = None  # checkpoint and return after N optimiser steps, even mid-epoch
    seed: int = 0
    deterministic: bool = False
    progress: bool | None = None     # None = only on a terminal or in a notebook
    eval_tta: bool = False
    ema: float | None = None         # decay of an exponential moving average of the weights (evaluated instead)
    selected_on: str = "test_selected"  # what the selection split is: "test_selected" or "val"
    find_unused_parameters: bool = False  # DDP option for models with branches unused in some steps
    overwrite: bool = False          # a fresh run may replace a previous run in the same directory


def _progress_enabled(flag: bool | None) -> bool:
    if flag is not None:
        return flag
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def _unwrap(model):
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return model.module if hasattr(model, "module") else model


@torch.no_grad()
def predict(model, dataset, recipe, device="auto", batch_size: int | None = None, tta: bool = False,
            max_batches: int | None = None, num_workers: int = 0, progress: bool | None = None,
            precision: str = "auto", channels_last: bool = False) -> dict:
    """Run ``model`` over ``dataset``: ``{"logits" [N,C], "features" [N,D], "targets"}`` as NumPy arrays.

    ``tta`` averages the logits of the image and its horizontal flip. Under DDP every rank predicts
    items rank, rank+W, … and all ranks receive the gathered arrays in dataset order.
    """
    from tqdm.auto import tqdm

    device = resolve_device(device)
    model = model.to(device)
    was_training = model.training
    model.eval()
    tf = build_batch_transform(recipe, train=False).to(device)
    rank, world = rank_and_world()
    order = list(range(rank, len(dataset), world)) if is_distributed() else list(range(len(dataset)))
    loader = make_loader(dataset, batch_size or recipe.batch_size, order, num_workers,
                         pin_memory=device.type == "cuda")
    logits, feats, targets = [], [], []
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    show = _progress_enabled(progress) and rank == 0
    for i, (x, y) in enumerate(tqdm(loader, total=total, desc="eval", leave=False, disable=not show)):
        if max_batches is not None and i >= max_batches:
            break
        x = tf(x.to(device, non_blocking=True))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            out = model(x)
            lg = out.logits.float()
            if tta:
                lg = (lg + model(x.flip(-1)).logits.float()) / 2
        logits.append(lg.cpu())
        feats.append(out.features.float().flatten(1).cpu())
        targets.append(y)
    model.train(was_training)
    pred = {"logits": torch.cat(logits).numpy(), "features": torch.cat(feats).numpy(),
            "targets": torch.cat(targets).numpy()}
    if is_distributed():
        pred = _gather_predictions(pred, order[:len(pred["logits"])])
    return pred


def _gather_predictions(pred: dict, index: list[int]) -> dict:
    parts = all_gather_objects((index, pred))
    index = np.concatenate([np.asarray(ix, dtype=np.int64) for ix, _ in parts])
    order = np.argsort(index, kind="stable")
    return {k: np.concatenate([p[k] for _, p in parts])[order] for k in pred}


def evaluate(model, dataset, recipe, device="auto", tta: bool = False, max_batches: int | None = None,
             progress: bool | None = None, **kw) -> dict:
    """Accuracy, mean per-class accuracy, macro F1 and confusion matrix of ``model`` on ``dataset``,
    plus the raw ``predictions`` (logits, features, targets)."""
    pred = predict(model, dataset, recipe, device, tta=tta, max_batches=max_batches, progress=progress, **kw)
    metrics = classification_metrics(pred["logits"], pred["targets"], list(dataset.classes))
    return {**metrics, "predictions": pred}


@holds_run_dir(lambda a: a["run_dir"])  # one writer per run directory (ferlib.engine.writer)
def fit(model, loss, recipe, train, val, run_dir, resume: bool = True, options: FitOptions | None = None,
        callbacks=(), start=(), test=None, data_source: dict | None = None, card_epochs: int | None = None,
        **option_kw) -> dict:
    """Train ``model`` with ``loss`` by ``recipe`` on ``train``, selecting on ``val``; returns the summary.

    ``val`` is the evaluation split the model is selected on (the test split in the authors' code,
    recorded as ``test_selected``; pass a held-out split and ``selected_on="val"`` to select honestly).
    ``resume``: ``True``/``"auto"`` continue from ``run_dir/last.pt`` (or ``last.pt.prev`` when that one is damaged)
    when there is one, else start afresh in an empty directory; ``"must"`` raises ``ResumeError`` when nothing
    usable is there; a different recipe (except ``SAFE_ON_RESUME``) is refused: :func:`ferlib.engine.policy.decide`
    says which. Resuming continues mid-epoch. Keyword options are :class:`FitOptions` fields.
    ``callbacks``: ``cb(row, result)`` after each epoch on rank 0. ``start``: the starting-weights items the
    model was loaded from (recorded in config.yaml). summary.json says whether the run is ``complete``
    (every epoch of the recipe, whole evaluation split) or was cut short (``max_steps``, a stop, fewer epochs
    than the paper card's ``card_epochs``).
    ``test``: when ``val`` is a held-out split, the test split: after training (unless stopped) ``best.pt`` is
    evaluated on it, its predictions saved and its metrics recorded as ``test_at_val_selected``.
    ``data_source``: where the data came from (``{"data_root", "cache"}``), recorded as config.yaml
    ``data.source``. config.yaml (by a fresh run) and summary.json are each written once, complete.
    """
    opts = dataclasses.replace(options or FitOptions(), **option_kw)
    run_dir = Path(run_dir)
    device, precision = device_and_precision(opts, recipe)
    batch_size = per_process_batch(recipe.batch_size, rank_and_world()[1])  # the recipe's batch is the global batch
    with backend_flags(device, precision, opts.deterministic):  # TF32, cuDNN, determinism: restored on return
        parts = build_parts(model, loss, recipe, train, opts, device, precision, batch_size)
        state = start_run(parts, recipe, run_dir, resume, opts, train, val, start, data_source)
        save_last = functools.partial(save, parts, state, recipe, run_dir / "last.pt")
        show = _progress_enabled(opts.progress) and parts.rank == 0
        end = "done" if opts.max_steps is not None and state["step"] >= opts.max_steps else None
        while state["epoch"] < recipe.epochs and end is None:
            train_stats, end = train_one_epoch(parts, state, recipe, opts, save_last, show)
            if end == "stopped":
                save_last()
                if parts.rank == 0:
                    print(f"stopped at step {state['step']} (epoch {state['epoch'] + 1}, batch "
                          f"{state['batch_in_epoch']}); resume=True continues from {run_dir / 'last.pt'}", flush=True)
                break
            with warnings.catch_warnings():  # SAM steps through first_step/second_step, which the scheduler cannot see
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                parts.scheduler.step()
            row, result = evaluate_and_select(parts, state, recipe, opts, val, train_stats, run_dir, show,
                                              done=end == "done")
            save_last()
            if parts.rank == 0:
                for cb in callbacks:
                    cb(row, result)
            barrier()
        tested = None
        if test is not None and end != "stopped":  # the test split, with the checkpoint chosen on the held-out split
            tested = _test_selected(parts, run_dir, test, recipe, opts.max_steps, show)
        if parts.rank != 0:
            return {"selected_on": opts.selected_on, **({"test_at_val_selected": tested} if tested is not None else {})}
        return write_summary(state, recipe, opts, run_dir, parts, end == "stopped", tested, card_epochs)


def device_and_precision(opts: FitOptions, recipe) -> tuple[torch.device, str]:
    """The torch device of ``opts.device`` and the precision to train in (``auto``: the recipe's; fp16 needs CUDA)."""
    device = resolve_device(opts.device)
    precision = resolve_precision(device, getattr(recipe, "precision", "fp32") if opts.precision == "auto"
                                  else opts.precision)
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision fp16 (with GradScaler) needs a CUDA device, not {device}; use fp32 (or bf16)")
    return device, precision


@dataclasses.dataclass
class FitParts:
    """What :func:`fit` trains with, built by :func:`build_parts`: the bare ``model`` (what checkpoints hold) and
    ``net`` (what runs forward: DDP-wrapped and/or compiled), the optimiser, its scheduler, the :class:`Stepper`,
    the EMA (or None), the batch ``transform`` on the device, the train ``sampler`` and ``loader``; ``batch_size``
    is this process's share of the global batch, ``steps_planned`` the optimiser steps of the whole recipe,
    ``classes`` the train split's (stored in checkpoints)."""

    model: torch.nn.Module
    loss: torch.nn.Module
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    stepper: Stepper
    ema: object
    transform: torch.nn.Module
    sampler: object
    loader: object
    device: torch.device
    precision: str
    channels_last: bool
    batch_size: int
    steps_planned: int
    classes: list
    rank: int = 0
    world: int = 1


def build_parts(model, loss, recipe, train, opts: FitOptions, device: torch.device, precision: str,
                batch_size: int) -> FitParts:
    """Seed this rank, move ``model`` and ``loss`` to ``device`` and build everything :func:`fit` trains with."""
    rank, world = rank_and_world()
    seed_everything(opts.seed + rank)
    channels_last = default_channels_last(device) if opts.channels_last is None else opts.channels_last
    model = model.to(device)
    loss = loss.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model_params = [p for p in model.parameters() if p.requires_grad]
    loss_params = [p for p in loss.parameters() if p.requires_grad]
    optimizer = build_optimizer(model_params + loss_params, recipe)
    scheduler = build_scheduler(optimizer, recipe, recipe.epochs)
    ema = None
    if opts.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(opts.ema), use_buffers=True)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=opts.find_unused_parameters)
    if opts.compile:
        net = torch.compile(net)
    stepper = Stepper(net, loss, optimizer, model_params + loss_params, loss_params, device, precision,
                      opts.accumulate, batch_size, recipe.grad_clip, ema, model)
    transform = build_batch_transform(recipe, train=True).to(device)
    sampler = train_sampler(recipe, train, opts.seed, rank, world)
    loader = make_loader(train, batch_size, sampler, opts.num_workers, pin_memory=device.type == "cuda",
                         seed=opts.seed, persistent=True)
    steps_planned = recipe.epochs * -(-batches_per_epoch(sampler, batch_size) // max(1, opts.accumulate))
    return FitParts(model, loss, net, optimizer, scheduler, stepper, ema, transform, sampler, loader, device,
                    precision, channels_last, batch_size, steps_planned, list(train.classes), rank, world)


def start_run(parts: FitParts, recipe, run_dir: Path, resume, opts: FitOptions, train, val, start=(),
              data_source: dict | None = None) -> dict:
    """The run's state, as :func:`ferlib.engine.policy.decide` says: the checkpoint's (weights, optimiser, RNG
    restored by :func:`restore`) or a fresh one (rank 0 writes config.yaml and an empty metrics.jsonl, after
    removing the previous run's files when ``overwrite`` said so). Every rank reads; rank 0 writes."""
    state = {"epoch": 0, "step": 0, "batch_in_epoch": 0, "best": -math.inf, "best_epoch": None,
             "epoch_stats": {"loss": 0.0, "correct": 0, "seen": 0, "time_s": 0.0}}
    decision = decide(run_dir, resume, opts.overwrite, recipe=recipe)
    barrier()  # every rank has read the folder before rank 0 changes it
    rd = RunDir(run_dir)
    if parts.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        rd.remove(decision.remove)  # a fresh run never mixes with an older one in the same folder
    if decision.checkpoint is not None:
        restore(parts, decision.checkpoint, state)
        if parts.rank == 0:
            rd.truncate_metrics(state["epoch"])
            if state["epoch"] >= recipe.epochs:
                print(f"{run_dir} is already complete ({state['epoch']} of {recipe.epochs} epochs); nothing to train",
                      flush=True)
            else:
                print(f"resumed {run_dir} at epoch {state['epoch'] + 1}, step {state['step']} "
                      f"(batch {state['batch_in_epoch']} of the epoch)", flush=True)
    elif parts.rank == 0:
        rd.write_config(_config(recipe, opts, parts.device, parts.model, train, val, parts.precision,
                                parts.channels_last, parts.world, parts.batch_size,
                                {"start": [dict(i) for i in start], "steps_planned": parts.steps_planned,
                                 "max_steps": opts.max_steps, "complete_planned": opts.max_steps is None},
                                data_source))
        rd.start_metrics()
    return state


def restore(parts: FitParts, ckpt: dict, state: dict) -> None:
    """Load a ``last.pt`` into ``parts`` and ``state``: weights, loss, optimiser, scheduler (at this run's
    schedule), scaler, EMA, this rank's RNG and, with the same world size, its part of the epoch's statistics."""
    parts.model.load_state_dict(ckpt["model"])
    parts.loss.load_state_dict(ckpt["loss"])
    parts.optimizer.load_state_dict(ckpt["optimizer"])
    parts.scheduler.load_state_dict(ckpt["scheduler"])
    apply_schedule(parts.scheduler)  # the lr of this run's schedule (epochs may have been raised)
    if ckpt.get("scaler"):
        parts.stepper.scaler.load_state_dict(ckpt["scaler"])
    if parts.ema is not None and ckpt.get("ema") is not None:
        parts.ema.load_state_dict(ckpt["ema"])
    state.update(ckpt["state"])
    ranks = ckpt.get("rng_ranks")
    same_world = bool(ranks) and len(ranks) == parts.world
    set_rng_state(ranks[parts.rank] if same_world else ckpt["rng"])
    if same_world and ckpt.get("epoch_stats_ranks"):
        state["epoch_stats"] = dict(ckpt["epoch_stats_ranks"][parts.rank])


def save(parts: FitParts, state: dict, recipe, path: Path) -> None:
    """Write the resumable checkpoint ``path`` (``last.pt``): collective (gathers every rank's RNG state and
    epoch statistics); rank 0 writes."""
    gathered = all_gather_objects((rng_state(), dict(state["epoch_stats"])))
    if parts.rank != 0:
        return
    rngs = [g[0] for g in gathered]
    save_checkpoint({
        "model": parts.model.state_dict(), "loss": parts.loss.state_dict(), "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(), "scaler": parts.stepper.scaler.state_dict(),
        "ema": parts.ema.state_dict() if parts.ema is not None else None, "state": json.loads(json.dumps(state)),
        "rng": rngs[0], "rng_ranks": rngs,
        "epoch_stats_ranks": [g[1] for g in gathered], "world_size": parts.world, "recipe": recipe.to_dict(),
        "classes": parts.classes, "preprocessing": preprocessing(recipe),
    }, path)


def train_one_epoch(parts: FitParts, state: dict, recipe, opts: FitOptions, save_last=lambda: None,
                    show: bool = False) -> tuple[dict | None, str | None]:
    """Train the rest of epoch ``state["epoch"]`` (all of it, or from ``state["batch_in_epoch"]`` after a resume).

    Advances ``state`` (``step``, ``batch_in_epoch``, ``epoch_stats``) and calls ``save_last()`` every
    ``opts.checkpoint_every_steps`` optimiser steps. Returns ``(stats, end)``: ``stats`` = the epoch's
    ``{"loss": Σ loss·n, "correct", "seen"}`` summed over ranks and ``started`` (its start time), None when
    stopped; ``end`` = None (the epoch ran whole), ``"done"`` (``max_steps`` reached) or ``"stopped"``
    (``stop_after_steps`` reached: the caller checkpoints and returns).
    """
    from tqdm.auto import tqdm

    epoch, stepper = state["epoch"], parts.stepper
    parts.sampler.set_epoch(epoch, start=state["batch_in_epoch"] * parts.batch_size)
    n_batches = batches_per_epoch(parts.sampler, parts.batch_size)
    total_updates = parts.steps_planned if opts.max_steps is None else min(parts.steps_planned, opts.max_steps)
    parts.loader.generator.manual_seed(opts.seed * 100003 + epoch)
    if hasattr(parts.loss, "set_epoch"):
        parts.loss.set_epoch(epoch)
    parts.net.train()
    meter = _EpochMeter(state["epoch_stats"], parts.device)
    started = time.time() - meter.time_s
    bar = tqdm(parts.loader, desc=f"epoch {epoch + 1}/{recipe.epochs}", leave=False, disable=not show,
               initial=state["batch_in_epoch"], total=n_batches)
    end = None
    for x, y in bar:
        x, y = _to_device(parts, x, y)
        b = state["batch_in_epoch"]
        if hasattr(parts.loss, "set_progress"):  # the fraction of the run, e.g. GReFEL's trust ramp
            parts.loss.set_progress(state["step"] / max(1, total_updates))
        value, out, updated = _micro_step(parts, recipe, x, y, (b + 1) % stepper.k == 0 or b + 1 == n_batches, epoch, b)
        # checks the previous batch's loss: the device keeps one step queued instead of syncing every step
        meter.add(value, out.logits, y, (epoch + 1, state["step"], b))
        state["batch_in_epoch"] += 1
        if show and (b % 10 == 0 or b + 1 == n_batches):
            bar.set_postfix(**meter.postfix())
        if not updated:
            continue
        state["step"] += 1
        meter.time_s = time.time() - started
        end = _step_limit(state["step"], opts)
        if end is not None:
            break
        if opts.checkpoint_every_steps and state["step"] % opts.checkpoint_every_steps == 0:
            state["epoch_stats"] = meter.as_dict()
            save_last()
    state["epoch_stats"] = stats = meter.as_dict()
    bar.close()
    if end == "stopped":
        return None, end
    return {**all_reduce_sum({k: stats[k] for k in ("loss", "correct", "seen")}, parts.device), "started": started}, end


def _to_device(parts: FitParts, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A uint8 batch through the train transform on the device (channels-last when asked), its targets moved."""
    x = parts.transform(x.to(parts.device, non_blocking=True))
    y = y.to(parts.device, non_blocking=True)
    if parts.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def _micro_step(parts: FitParts, recipe, x, y, boundary: bool, epoch: int, batch: int):
    """:meth:`Stepper.micro`, with torch's BatchNorm refusal of one image per process said as the batch to pass."""
    try:
        return parts.stepper.micro(x, y, boundary)
    except ValueError as e:
        if "Expected more than 1 value per channel" not in str(e) or x.shape[0] > 1:
            raise
        raise BatchSplitError(
            f"{recipe.model}'s BatchNorm cannot train on 1 image per process (global batch {recipe.batch_size} over "
            f"{parts.world} process(es), batch {batch} of epoch {epoch + 1} has {x.shape[0]}); "
            f"pass --batch-size {2 * parts.world} or more (batch_size=…, the global batch)") from e


def _step_limit(step: int, opts: FitOptions) -> str | None:
    """``"done"`` at ``max_steps``, ``"stopped"`` at ``stop_after_steps``, else None."""
    if opts.max_steps is not None and step >= opts.max_steps:
        return "done"
    if opts.stop_after_steps is not None and step >= opts.stop_after_steps:
        return "stopped"
    return None


def evaluate_and_select(parts: FitParts, state: dict, recipe, opts: FitOptions, val, train_stats: dict, run_dir: Path,
                        show: bool = False, done: bool = False) -> tuple[dict | None, dict]:
    """Evaluate the epoch's weights (the EMA's when there is one) on ``val`` and close the epoch in ``state``.

    Rank 0 appends the epoch's row to metrics.jsonl, prints it, and keeps the epoch when it is the best so far by
    ``recipe.selection_metric``: its weights as ``best.pt``, its predictions as ``predictions.npz``. Epochs before
    ``recipe.select_from_epoch`` are not candidates, unless the run ends (``done``, or the last epoch) with none
    selected (a smoke run): then its last epoch is, so that ``best.pt`` exists. Returns ``(row, result)``
    (``row`` None on other ranks), ``result`` as :func:`evaluate`'s.
    """
    eval_model = parts.ema.module if parts.ema is not None else parts.model
    broadcast_state(eval_model)
    result = evaluate(eval_model, val, recipe, parts.device, tta=opts.eval_tta, max_batches=opts.max_steps,
                      progress=show, precision=parts.precision, channels_last=parts.channels_last,
                      batch_size=parts.batch_size)
    state["epoch"] += 1
    state["batch_in_epoch"] = 0
    state["epoch_stats"] = {"loss": 0.0, "correct": 0, "seen": 0, "time_s": 0.0}
    row = None
    if parts.rank == 0:
        row = _record_epoch(state, recipe, opts, val, train_stats, result, parts.optimizer, run_dir)
        ends = done or state["epoch"] >= recipe.epochs
        eligible = state["epoch"] >= recipe.select_from_epoch or (ends and state["best_epoch"] is None)
        if eligible and result[recipe.selection_metric] > state["best"]:
            state["best"], state["best_epoch"] = result[recipe.selection_metric], state["epoch"]
            RunDir(run_dir).save_predictions(result["predictions"], val.classes)
            save_checkpoint({"model": eval_model.state_dict(), "classes": parts.classes,
                             "preprocessing": preprocessing(recipe),
                             "state": json.loads(json.dumps(state)), "recipe": recipe.to_dict(),
                             "metrics": {k: v for k, v in result.items() if k != "predictions"}},
                            run_dir / "best.pt", keep_previous=False)
    state["best"], state["best_epoch"] = all_gather_objects((state["best"], state["best_epoch"]))[0]
    return row, result


def _record_epoch(state: dict, recipe, opts: FitOptions, val, train_stats: dict, result: dict, optimizer,
                  run_dir: Path) -> dict:
    """The epoch's metrics.jsonl row (``eval_*`` = the evaluation split), appended and printed in one line."""
    seen = max(1, train_stats["seen"])
    row = {"epoch": state["epoch"], "step": state["step"], "lr": optimizer.param_groups[0]["lr"],
           "train_loss": train_stats["loss"] / seen, "train_accuracy": train_stats["correct"] / seen,
           "time_s": round(time.time() - train_stats["started"], 2), "eval_split": getattr(val, "split", None),
           "selected_on": opts.selected_on,
           **{f"eval_{k}": v for k, v in result.items()
              if k not in ("predictions", "confusion_matrix", "per_class_accuracy")}}
    RunDir(run_dir).append_metrics(row)
    print(f"epoch {state['epoch']}/{recipe.epochs}: train loss {row['train_loss']:.4f} "
          f"acc {row['train_accuracy']:.3f} | eval acc {result['accuracy']:.3f} "
          f"mean-class {result['mean_class_accuracy']:.3f} ({row['time_s']}s)", flush=True)
    return row


def _test_selected(parts: FitParts, run_dir: Path, test, recipe, max_steps, progress) -> dict:
    """Metrics of ``best.pt`` on ``test`` (collective under DDP); rank 0 saves them as predictions.npz."""
    best = load_checkpoint(run_dir / "best.pt")
    parts.model.load_state_dict(best["model"])
    res = evaluate(parts.model, test, recipe, parts.device, max_batches=max_steps, progress=progress,
                   precision=parts.precision, channels_last=parts.channels_last)
    if parts.rank == 0:
        RunDir(run_dir).save_predictions(res["predictions"], test.classes)
    return {k: v for k, v in res.items() if k != "predictions"}


def write_summary(state: dict, recipe, opts: FitOptions, run_dir: Path, parts: FitParts, stopped: bool,
                  tested: dict | None = None, card_epochs: int | None = None) -> dict:
    """summary.json, written once, complete: the last and selected epochs (from metrics.jsonl, or from ``best.pt``
    when metrics.jsonl lost the selected epoch), whether the run is complete and why not, the test split's metrics
    with a held-out selection (``test_at_val_selected``); printed in one line and returned."""
    rd = RunDir(run_dir)
    summary = rd.summarise(recipe.selection_metric, opts.selected_on, recipe.select_from_epoch)
    if stopped:
        summary.update(stopped=True, stopped_at_step=state["step"])
    if state["best_epoch"] is not None and summary.get("selected_epoch") != state["best_epoch"]:
        best = load_checkpoint(run_dir / "best.pt")  # metrics.jsonl lost the selected epoch: best.pt is the truth
        if best is not None and best.get("metrics"):
            sel_metrics = {k: v for k, v in best["metrics"].items() if not isinstance(v, (list, dict))}
            split = "test" if opts.selected_on == "test_selected" else "val"
            summary.update(selected=sel_metrics, selected_epoch=state["best_epoch"], **{f"{split}_selected": sel_metrics})
    summary.update(_completeness(state, recipe, opts, stopped, parts.steps_planned, parts.precision))
    if summary["complete"] and card_epochs is not None and recipe.epochs < card_epochs:  # not the paper's run
        summary.update(complete=False, limited_by=[f"epochs {recipe.epochs} < the card's {card_epochs}"])
    if tested is not None:
        summary["test_at_val_selected"] = tested
    rd.write_summary(summary)
    _print_summary(run_dir, summary)
    return summary


class _EpochMeter:
    """Loss sum, correct count and images of the epoch so far, summed on the device (no per-step sync).

    The finiteness of each batch's loss is checked when the next batch has been queued (or at
    :meth:`as_dict`), and a non-finite loss raises ``FloatingPointError`` naming its epoch, step and batch.
    """

    def __init__(self, stats: dict, device: torch.device):
        dt = torch.float64 if device.type != "mps" else torch.float32
        self.loss = torch.tensor(float(stats["loss"]), dtype=dt, device=device)
        self.correct = torch.tensor(int(stats["correct"]), dtype=torch.int64, device=device)
        self.seen, self.time_s, self.pending = int(stats["seen"]), float(stats["time_s"]), None

    def add(self, value: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, where: tuple) -> None:
        self._check()
        n = int(y.shape[0])
        self.loss += value.to(self.loss.dtype) * n
        self.correct += (logits.argmax(1) == (y.argmax(1) if y.ndim == 2 else y)).sum()
        self.seen += n
        self.pending = (value, where, n)

    def _check(self) -> None:
        if self.pending is None:
            return
        value, (epoch, step, batch), n = self.pending
        self.pending = None
        v = float(value)
        if not math.isfinite(v):
            raise FloatingPointError(
                f"loss is {v} at epoch {epoch}, step {step} (batch {batch} of the epoch, {n} images); "
                f"lower the learning rate or check the data")

    def postfix(self) -> dict:
        seen = max(1, self.seen)
        return {"loss": f"{float(self.loss) / seen:.4f}", "acc": f"{int(self.correct) / seen:.3f}"}

    def as_dict(self) -> dict:
        self._check()
        return {"loss": float(self.loss), "correct": int(self.correct), "seen": self.seen, "time_s": self.time_s}


def preprocessing(recipe) -> dict:
    """What a checkpoint's user needs to feed it: sizes, normalisation, colour order, eval transform, face crop
    (the ``face_crop`` of the dataset's record: how its training images were cropped, what ``ferlib.inference``
    reproduces)."""
    base = recipe.base_recipe or recipe.dataset
    return {"input_size": recipe.input_size, "stored_size": recipe.stored_size, "mean": list(recipe.mean),
            "std": list(recipe.std), "color_order": recipe.color_order, "test_transforms": list(recipe.test_transforms),
            "eval_resize": (recipe.transform_kwargs or {}).get("eval_resize"), "face_crop": face_crop(base)}


def _completeness(state: dict, recipe, opts: FitOptions, stopped: bool, steps_planned: int, precision: str) -> dict:
    """Whether the run is the recipe's whole run; ``limited_by`` names what cut it short."""
    limited = [why for why, cut in (("max_steps", opts.max_steps is not None), ("stopped", stopped),
                                    ("epochs", state["epoch"] < recipe.epochs)) if cut]
    return {"complete": not limited, "limited_by": limited, "steps_run": state["step"], "steps_planned": steps_planned,
            "epochs_planned": recipe.epochs, "max_steps": opts.max_steps, "precision": precision}


def _config(recipe, opts, device, model, train, val, precision, channels_last, world, per_process: int,
            plan: dict | None = None, data_source: dict | None = None) -> dict:
    """What config.yaml holds: the resolved recipe, fit options, environment, model, data and its source.

    ``resolved``: the precision (``tf32`` only when asked), the global batch (the recipe's ``batch_size``) and each
    process's share, the world size, the batch of one update (global × accumulate), the scan backends the model
    runs, and under ``--deterministic`` the operations that still are not (:func:`~ferlib.engine.env.nondeterministic_ops`).
    """
    from ferlib.ops.selective_scan import scan_backends

    n_params = sum(p.numel() for p in _unwrap(model).parameters())
    cfg = {"recipe": recipe.to_dict(), "fit": dataclasses.asdict(opts), "plan": plan or {},
           "resolved": {"precision": precision, "channels_last": channels_last, "world_size": world,
                        "global_batch_size": recipe.batch_size, "per_process_batch_size": per_process,
                        "effective_batch_size": recipe.batch_size * max(1, opts.accumulate),
                        "deterministic": bool(opts.deterministic),
                        "nondeterministic_ops": nondeterministic_ops(_unwrap(model), device, opts.deterministic),
                        "scan_backend": scan_backends(_unwrap(model), device)},
           "environment": environment(device),
           "model": {"name": recipe.model, "parameters": n_params},
           "data": {"train": {"n": len(train), "classes": list(train.classes), "root": str(getattr(train, "root", ""))},
                    "eval": {"n": len(val), "split": getattr(val, "split", None), "selected_on": opts.selected_on}}}
    if data_source is not None:
        cfg["data"]["source"] = dict(data_source)
    return cfg


def _print_summary(run_dir: Path, summary: dict) -> None:
    if "selected" not in summary:
        return
    last, sel, split = summary["last"], summary["selected"], summary["selected_on"]
    print(f"done: {summary['epochs_run']} epochs, {summary['steps']} steps | last epoch: acc {last['accuracy']:.4f} "
          f"mean-class {last['mean_class_accuracy']:.4f} macro-F1 {last['macro_f1']:.4f} | "
          f"best epoch {summary['selected_epoch']} ({split}): acc {sel['accuracy']:.4f} "
          f"mean-class {sel['mean_class_accuracy']:.4f} macro-F1 {sel['macro_f1']:.4f} | {run_dir}", flush=True)
