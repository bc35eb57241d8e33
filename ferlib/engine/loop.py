"""The one training / evaluation loop for every paper (docs/design.md §3, §8).

A paper brings a model (returning ``ModelOutput``), a loss and a recipe; this module owns devices,
precision, data order and checkpoints, and fills the run directory through :class:`ferlib.runs.RunDir`,
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
split (``train(val_fraction=…)``) they are ``val_selected`` and the test split is reported separately
(``fit(test=…)`` evaluates ``best.pt`` on it before summary.json is written).

Several processes (``torchrun``): DDP, each rank its share of every epoch (:class:`EpochSampler`),
metrics summed over ranks, evaluation sharded and gathered, only rank 0 writes. One process is the
same code.
"""
from __future__ import annotations

import dataclasses
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
from ferlib.optim import apply_schedule, build_optimizer, build_scheduler
from ferlib.runs import RUN_FILES, RunDir, save_predictions, summarise

from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import (BatchSplitError, all_gather_objects, all_reduce_sum, barrier, broadcast_state, is_distributed,
                          per_process_batch, rank_and_world)
from .env import (backend_flags, environment, nondeterministic_ops, resolve_device, rng_state, seed_everything,
                  set_rng_state)
from .loader import EpochSampler, ResumableSampler, batches_per_epoch, collate_uint8, make_loader, train_sampler
from .metrics import classification_metrics
from .step import Stepper, autocast, resolve_precision
from .writer import holds_run_dir

__all__ = ["RUN_FILES", "EpochSampler", "FitOptions", "ResumableSampler", "collate_uint8", "evaluate", "fit",
           "predict", "save_predictions", "summarise"]  # RUN_FILES, save_predictions, summarise: from ferlib.runs


@dataclasses.dataclass
class FitOptions:
    """How to train (never what): device, precision, speed switches, checkpointing, limits."""

    device: str = "auto"
    precision: str = "auto"          # auto = the recipe's (the authors' precision, fp32); or "fp32", "tf32", "bf16", "fp16"
    channels_last: bool | None = None  # None = on for CUDA
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


class RunExistsError(FileExistsError):
    """A fresh run was pointed at a directory holding a previous run (nothing was touched)."""


class ResumeError(RuntimeError):
    """``resume`` was asked for but nothing usable can be resumed, or the recipe differs from the stored one."""


#: Recipe fields a resume may change: more (or fewer) epochs extend (or end) the same run; provenance text.
SAFE_ON_RESUME = ("epochs", "notes", "source", "reported", "pretrained_note")


def check_same_recipe(stored: dict, recipe, run_dir) -> None:
    """Refuse to resume with a recipe that differs from the checkpoint's outside :data:`SAFE_ON_RESUME`."""
    new = json.loads(json.dumps(recipe.to_dict(), default=str))
    old = json.loads(json.dumps(stored, default=str))
    diffs = [f"{k}: {old.get(k)!r} in the run, {new.get(k)!r} now" for k in sorted(set(new) | set(old))
             if k not in SAFE_ON_RESUME and old.get(k) != new.get(k) and k in old]
    if diffs:
        raise ResumeError(f"cannot resume {run_dir} with another recipe ({'; '.join(diffs)}). Resume with the run's "
                          f"own settings, or start a new run (another run directory, or overwrite=True).")


def check_run_dir(run_dir, resume: bool, overwrite: bool) -> list[str]:
    """The previous run's files in ``run_dir`` that a fresh run would replace; raises :class:`RunExistsError`
    when there are some and neither ``resume`` nor ``overwrite`` is set. Touches nothing."""
    previous = RunDir(run_dir).files
    if previous and not resume and not overwrite:
        raise RunExistsError(
            f"{run_dir} holds a previous run ({', '.join(previous)}); nothing was changed. Continue it with resume=True "
            f"(--resume, -p resume True), replace it with overwrite=True (--overwrite, -p overwrite True), or choose "
            f"another run directory (run_name / --run-dir).")
    return previous


def _progress_enabled(flag: bool | None) -> bool:
    if flag is not None:
        return flag
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def _unwrap(model):
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return model.module if hasattr(model, "module") else model


def _autocast(device: torch.device, precision: str):
    return autocast(device, precision)


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
    when there is one, else start afresh in an empty directory; ``"must"`` raises :class:`ResumeError` when
    nothing usable is there; a different recipe (except :data:`SAFE_ON_RESUME`) is refused. Resuming
    continues mid-epoch. Keyword options are :class:`FitOptions` fields.
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
    device = resolve_device(opts.device)
    precision = resolve_precision(device, getattr(recipe, "precision", "fp32") if opts.precision == "auto"
                                  else opts.precision)
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision fp16 (with GradScaler) needs a CUDA device, not {device}; use fp32 (or bf16)")
    bs = per_process_batch(recipe.batch_size, rank_and_world()[1])  # the recipe's batch is the global batch
    with backend_flags(device, precision, opts.deterministic):  # TF32, cuDNN, determinism: restored on return
        return _fit(model, loss, recipe, train, val, Path(run_dir), resume, opts, callbacks, start, test, data_source,
                    card_epochs, device, precision, bs)


def _fit(model, loss, recipe, train, val, run_dir: Path, resume, opts: FitOptions, callbacks, start, test, data_source,
         card_epochs, device: torch.device, precision: str, bs: int) -> dict:
    """:func:`fit` under its backend flags; ``bs`` is this process's share of the global batch."""
    from tqdm.auto import tqdm

    rd = RunDir(run_dir)
    rank, world = rank_and_world()
    is_main = rank == 0
    seed_everything(opts.seed + rank)
    channels_last = device.type == "cuda" if opts.channels_last is None else opts.channels_last

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
                      opts.accumulate, bs, recipe.grad_clip, ema, model)
    train_tf = build_batch_transform(recipe, train=True).to(device)
    sampler = train_sampler(recipe, train, opts.seed, rank, world)
    loader = make_loader(train, bs, sampler, opts.num_workers, pin_memory=device.type == "cuda",
                         seed=opts.seed, persistent=True)
    sel = recipe.selection_metric
    steps_planned = recipe.epochs * -(-batches_per_epoch(sampler, bs) // max(1, opts.accumulate))
    state = {"epoch": 0, "step": 0, "batch_in_epoch": 0, "best": -math.inf, "best_epoch": None,
             "epoch_stats": {"loss": 0.0, "correct": 0, "seen": 0, "time_s": 0.0}}

    if is_main:
        previous = check_run_dir(run_dir, resume, opts.overwrite)
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:  # a fresh run never mixes with an older one in the same folder (overwrite=True said so)
            rd.remove(previous)
    barrier()
    refused: list = []
    ckpt = load_checkpoint(run_dir / "last.pt", refused=refused) if resume else None
    if resume and ckpt is None:
        found = [n for n in RUN_FILES if (rd / n).exists()]
        if resume == "must" or (found and not opts.overwrite):
            why = "; ".join(str(e) for e in refused) or "it holds no last.pt or last.pt.prev"
            raise ResumeError(
                f"cannot resume {run_dir}: {why}. Found: {', '.join(found) or 'no run files'}. Start afresh with "
                f"overwrite=True (--overwrite, -p overwrite True)" + (", or resume='auto' (--resume auto) to resume "
                "only when there is something to resume" if resume == "must" and not found else "") + ".")
        if is_main:  # overwrite=True: the unusable run is replaced, as the caller asked
            rd.remove(found)
    if ckpt is not None:
        check_same_recipe(ckpt.get("recipe") or {}, recipe, run_dir)
        model.load_state_dict(ckpt["model"])
        loss.load_state_dict(ckpt["loss"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        apply_schedule(scheduler)  # the lr of this run's schedule (epochs may have been raised)
        if ckpt.get("scaler"):
            stepper.scaler.load_state_dict(ckpt["scaler"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.load_state_dict(ckpt["ema"])
        state.update(ckpt["state"])
        ranks = ckpt.get("rng_ranks")
        same_world = bool(ranks) and len(ranks) == world
        set_rng_state(ranks[rank] if same_world else ckpt["rng"])
        if same_world and ckpt.get("epoch_stats_ranks"):
            state["epoch_stats"] = dict(ckpt["epoch_stats_ranks"][rank])
        if is_main:
            rd.truncate_metrics(state["epoch"])
            if state["epoch"] >= recipe.epochs:
                print(f"{run_dir} is already complete ({state['epoch']} of {recipe.epochs} epochs); nothing to train",
                      flush=True)
            else:
                print(f"resumed {run_dir} at epoch {state['epoch'] + 1}, step {state['step']} "
                      f"(batch {state['batch_in_epoch']} of the epoch)", flush=True)
    elif is_main:
        rd.write_config(_config(recipe, opts, device, model, train, val, precision, channels_last, world, bs,
                                {"start": [dict(i) for i in start], "steps_planned": steps_planned,
                                 "max_steps": opts.max_steps, "complete_planned": opts.max_steps is None},
                                data_source))
        rd.start_metrics()

    def checkpoint(path: Path):
        """Collective (gathers every rank's RNG state); rank 0 writes."""
        gathered = all_gather_objects((rng_state(), dict(state["epoch_stats"])))
        if not is_main:
            return
        rngs = [g[0] for g in gathered]
        save_checkpoint({
            "model": model.state_dict(), "loss": loss.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": stepper.scaler.state_dict(),
            "ema": ema.state_dict() if ema is not None else None, "state": json.loads(json.dumps(state)),
            "rng": rngs[0], "rng_ranks": rngs,
            "epoch_stats_ranks": [g[1] for g in gathered], "world_size": world, "recipe": recipe.to_dict(),
            "classes": list(train.classes), "preprocessing": preprocessing(recipe),
        }, path)

    show = _progress_enabled(opts.progress) and is_main
    done = opts.max_steps is not None and state["step"] >= opts.max_steps
    stopped = False
    total_updates = None  # for losses with set_progress(fraction of the run), e.g. GReFEL's trust ramp
    while state["epoch"] < recipe.epochs and not done and not stopped:
        epoch = state["epoch"]
        sampler.set_epoch(epoch, start=state["batch_in_epoch"] * bs)
        n_batches = batches_per_epoch(sampler, bs)
        if total_updates is None:
            total_updates = recipe.epochs * -(-n_batches // stepper.k)
            if opts.max_steps is not None:
                total_updates = min(total_updates, opts.max_steps)
        loader.generator.manual_seed(opts.seed * 100003 + epoch)
        if hasattr(loss, "set_epoch"):
            loss.set_epoch(epoch)
        net.train()
        meter = _EpochMeter(state["epoch_stats"], device)
        t0 = time.time() - meter.time_s
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{recipe.epochs}", leave=False, disable=not show,
                   initial=state["batch_in_epoch"], total=n_batches)
        for x, y in bar:
            x = train_tf(x.to(device, non_blocking=True))
            y = y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            b = state["batch_in_epoch"]
            boundary = (b + 1) % stepper.k == 0 or b + 1 == n_batches
            if hasattr(loss, "set_progress"):
                loss.set_progress(state["step"] / max(1, total_updates))
            try:
                value, out, updated = stepper.micro(x, y, boundary)
            except ValueError as e:  # torch's BatchNorm refuses one value per channel: say which batch to pass
                if "Expected more than 1 value per channel" not in str(e) or x.shape[0] > 1:
                    raise
                raise BatchSplitError(
                    f"{recipe.model}'s BatchNorm cannot train on 1 image per process (global batch "
                    f"{recipe.batch_size} over {world} process(es), batch {b} of epoch {epoch + 1} has {x.shape[0]}); "
                    f"pass --batch-size {2 * world} or more (batch_size=…, the global batch)") from e
            # checks the previous batch's loss: the device keeps one step queued instead of syncing every step
            meter.add(value, out.logits, y, (epoch + 1, state["step"], b))
            state["batch_in_epoch"] += 1
            if show and (b % 10 == 0 or b + 1 == n_batches):
                bar.set_postfix(**meter.postfix())
            if not updated:
                continue
            state["step"] += 1
            meter.time_s = time.time() - t0
            if opts.max_steps is not None and state["step"] >= opts.max_steps:
                done = True
                break
            if opts.stop_after_steps is not None and state["step"] >= opts.stop_after_steps:
                stopped = True
                break
            if opts.checkpoint_every_steps and state["step"] % opts.checkpoint_every_steps == 0:
                state["epoch_stats"] = meter.as_dict()
                checkpoint(run_dir / "last.pt")
        state["epoch_stats"] = stats = meter.as_dict()
        bar.close()
        if stopped:
            checkpoint(run_dir / "last.pt")
            if is_main:
                print(f"stopped at step {state['step']} (epoch {epoch + 1}, batch {state['batch_in_epoch']}); "
                      f"resume=True continues from {run_dir / 'last.pt'}", flush=True)
            break
        with warnings.catch_warnings():  # SAM steps through first_step/second_step, which the scheduler cannot see
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            scheduler.step()
        train_stats = all_reduce_sum({k: stats[k] for k in ("loss", "correct", "seen")}, device)
        eval_model = ema.module if ema is not None else model
        broadcast_state(eval_model)
        result = evaluate(eval_model, val, recipe, device, tta=opts.eval_tta, max_batches=opts.max_steps,
                          progress=show, precision=precision, channels_last=channels_last, batch_size=bs)
        state["epoch"] += 1
        state["batch_in_epoch"] = 0
        state["epoch_stats"] = {"loss": 0.0, "correct": 0, "seen": 0, "time_s": 0.0}
        if is_main:
            row = {"epoch": state["epoch"], "step": state["step"], "lr": optimizer.param_groups[0]["lr"],
                   "train_loss": train_stats["loss"] / max(1, train_stats["seen"]),
                   "train_accuracy": train_stats["correct"] / max(1, train_stats["seen"]),
                   "time_s": round(time.time() - t0, 2), "eval_split": getattr(val, "split", None),
                   "selected_on": opts.selected_on,
                   **{f"eval_{k}": v for k, v in result.items()
                      if k not in ("predictions", "confusion_matrix", "per_class_accuracy")}}
            rd.append_metrics(row)
            print(f"epoch {state['epoch']}/{recipe.epochs}: train loss {row['train_loss']:.4f} "
                  f"acc {row['train_accuracy']:.3f} | eval acc {result['accuracy']:.3f} "
                  f"mean-class {result['mean_class_accuracy']:.3f} ({row['time_s']}s)", flush=True)
            # epochs before select_from_epoch are not candidates, unless the run ends before it
            # (a smoke run): then its last epoch is selected so that best.pt exists
            last_epoch = done or state["epoch"] >= recipe.epochs
            eligible = state["epoch"] >= recipe.select_from_epoch or (last_epoch and state["best_epoch"] is None)
            if eligible and result[sel] > state["best"]:
                state["best"], state["best_epoch"] = result[sel], state["epoch"]
                save_predictions(run_dir, result, val)
                save_checkpoint({"model": eval_model.state_dict(), "classes": list(train.classes),
                                 "preprocessing": preprocessing(recipe),
                                 "state": json.loads(json.dumps(state)), "recipe": recipe.to_dict(),
                                 "metrics": {k: v for k, v in result.items() if k != "predictions"}},
                                run_dir / "best.pt", keep_previous=False)
        state["best"], state["best_epoch"] = all_gather_objects((state["best"], state["best_epoch"]))[0]
        checkpoint(run_dir / "last.pt")
        if is_main:
            for cb in callbacks:
                cb(row, result)
        barrier()

    tested = None
    if test is not None and not stopped:  # the test split, with the checkpoint chosen on the held-out split
        tested = _test_selected(model, run_dir, test, recipe, device, opts.max_steps, show, precision, channels_last)
    if not is_main:
        return {"selected_on": opts.selected_on, **({"test_at_val_selected": tested} if tested is not None else {})}
    summary = rd.summarise(sel, opts.selected_on, recipe.select_from_epoch)
    if stopped:
        summary.update(stopped=True, stopped_at_step=state["step"])
    if state["best_epoch"] is not None and summary.get("selected_epoch") != state["best_epoch"]:
        best = load_checkpoint(run_dir / "best.pt")  # metrics.jsonl lost the selected epoch: best.pt is the truth
        if best is not None and best.get("metrics"):
            sel_metrics = {k: v for k, v in best["metrics"].items() if not isinstance(v, (list, dict))}
            split = "test" if opts.selected_on == "test_selected" else "val"
            summary.update(selected=sel_metrics, selected_epoch=state["best_epoch"], **{f"{split}_selected": sel_metrics})
    summary.update(_completeness(state, recipe, opts, stopped, steps_planned, precision))
    if summary["complete"] and card_epochs is not None and recipe.epochs < card_epochs:  # not the paper's run
        summary.update(complete=False, limited_by=[f"epochs {recipe.epochs} < the card's {card_epochs}"])
    if tested is not None:
        summary["test_at_val_selected"] = tested
    rd.write_summary(summary)
    _print_summary(run_dir, summary)
    return summary


def _test_selected(model, run_dir: Path, test, recipe, device, max_steps, progress, precision, channels_last) -> dict:
    """Metrics of ``best.pt`` on ``test`` (collective under DDP); rank 0 saves them as predictions.npz."""
    best = load_checkpoint(run_dir / "best.pt")
    model.load_state_dict(best["model"])
    res = evaluate(model, test, recipe, device, max_batches=max_steps, progress=progress, precision=precision,
                   channels_last=channels_last)
    if rank_and_world()[0] == 0:
        save_predictions(run_dir, res, test)
    return {k: v for k, v in res.items() if k != "predictions"}


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
