"""``train(paper, dataset, ...)``: recipe → data → model → loss → :func:`fit`, the call every notebook makes."""
from __future__ import annotations

import dataclasses
import inspect
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from ferlib.data import DataNotFoundError, DatasetFormatError, dataset_info, dataset_root, load_dataset
from ferlib.data.cache import CacheSpaceError
from ferlib.losses import create_loss
from ferlib.models import create_model
from ferlib.paths import results_dir
from ferlib.recipes import Recipe, load_recipe
from ferlib.run_dir import RunDir

from .loop import FitOptions, fit
from .policy import ResumeError, decide
from .checkpoint import load_checkpoint
from .env import seed_everything
from .writer import holds_run_dir

@dataclasses.dataclass
class RunResult:
    run_dir: Path
    recipe: Recipe
    summary: dict

    @property
    def metrics(self) -> dict:
        """Metrics of the selected epoch (``test_selected`` unless a validation split was held out)."""
        return self.summary.get("selected", {})

    def __repr__(self) -> str:
        m = self.metrics
        return (f"RunResult({str(self.run_dir)!r}, accuracy={m.get('accuracy', float('nan')):.4f}, "
                f"selected on {self.summary.get('selected_on')})")


def default_data_root(dataset: str) -> Path:
    """``data/<folder>`` of the dataset's record (``affectnet8``: ``data/affectnet``)."""
    return dataset_info(dataset).default_root()


def load_recipe_splits(recipe: Recipe, data_root=None, progress: bool = True, cache="auto"):
    """``(train, eval)`` datasets of a recipe; a missing real dataset raises :class:`DataNotFoundError`.

    ``cache`` = True (or a folder) reads the uint8 tensor cache at the recipe's ``stored_size``
    (built on first use, ``ferlib.data.cache``), which the engine reads a whole batch at a time.
    ``"auto"`` (default): the cache for a real dataset (docs/design.md §5: training reads tensors, not JPEGs),
    falling back to the image files with a warning when the disk lacks room for it; the synthetic set
    is read as it is. False reads the image files every epoch.
    """
    return (load_split(recipe, "train", data_root, progress, cache),
            load_split(recipe, eval_split(recipe), data_root, progress, cache))


def eval_split(recipe: Recipe) -> str:
    """The split a recipe evaluates (and, like the authors' code, selects) on: the card's ``eval_split``,
    else the dataset's usual one (its record's ``eval_split``; FERPlus: ``test`` = PrivateTest)."""
    return recipe.eval_split or dataset_info(recipe.dataset).eval_split


def default_cache_workers() -> int:
    """Processes that decode a new cache: up to 8, one core left free; 0 (this process) on ≤ 2 cores."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cores <= 2 else min(8, cores - 1)


def load_split(recipe: Recipe, split: str, data_root=None, progress: bool = True, cache="auto"):
    """One split of the recipe's dataset (label_mode applies to train only, except on the generated synthetic set),
    read from :func:`ferlib.data.dataset_root`; a missing real dataset raises :class:`DataNotFoundError`."""
    name = recipe.dataset
    generated = dataset_info(name).generated
    opts = dict(recipe.dataset_kwargs or {})
    auto = isinstance(cache, str) and cache == "auto"
    if auto:
        cache = not generated
    if cache:
        opts.setdefault("cache", cache)
        opts.setdefault("cache_size", recipe.stored_size or recipe.input_size)
        opts.setdefault("cache_workers", default_cache_workers())
    if recipe.label_mode and (split == "train" or generated):
        opts["label_mode"] = recipe.label_mode
    opts.setdefault("progress", progress)
    root = dataset_root(name, data_root)
    try:
        return load_dataset(name, root, split, **opts)
    except CacheSpaceError as e:
        if not auto:
            raise
        warnings.warn(f"{e}; reading the image files instead", stacklevel=2)
        opts = {k: v for k, v in opts.items() if k not in ("cache", "cache_size", "cache_workers")}
        return load_dataset(name, root, split, **opts)
    except DatasetFormatError as e:
        if generated:
            raise
        raise DatasetFormatError(f"{e} (run notebooks/01_prepare_data.ipynb to check the layout)") from None


def holdout(dataset, fraction: float, seed: int):
    """A seeded, stratified split of ``dataset`` into (train, validation) subsets with the same attributes.

    Each class gives round(fraction · its count) items to validation (a class with one item keeps it in
    train), drawn with ``numpy.random.default_rng(seed)``.
    """
    from ferlib.metrics import hard_targets

    if not 0 < fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction}")
    y = hard_targets(np.array([np.asarray(t) for t in dataset.targets]))
    rng = np.random.default_rng(seed)
    va = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        k = min(len(members) - 1, int(round(fraction * len(members))))
        va.extend(rng.permutation(members)[:k].tolist())
    va = sorted(va)
    tr = sorted(set(range(len(dataset))) - set(va))
    return _subset(dataset, tr, "train"), _subset(dataset, va, "val")


def _subset(dataset, indices, split):
    sub = Subset(dataset, list(indices))
    sub.classes = dataset.classes
    sub.targets = [dataset.targets[i] for i in indices]
    sub.split = split
    sub.root = getattr(dataset, "root", None)
    return sub


def build_loss(recipe: Recipe):
    from ferlib.losses import loss_class

    kw = dict(recipe.loss_kwargs or {})
    cls = loss_class(recipe.loss)
    if "num_classes" in inspect.signature(cls).parameters:
        kw.setdefault("num_classes", recipe.num_classes)
    return create_loss(recipe.loss, **kw)


class DeviceError(RuntimeError):
    """The device asked for is not on this machine, or the precision cannot run on it."""


def check_device(device: str, precision: str):
    """The torch device for ``device``, refusing CUDA without CUDA and fp16 off CUDA (before any work)."""
    from .env import resolve_device

    try:
        dev = resolve_device(device)
    except RuntimeError as e:
        raise DeviceError(f"device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} asked for, but this machine has no CUDA device "
                          f"(torch {torch.__version__}); use --device cpu / -p device cpu, or auto")
    if precision == "fp16" and dev.type != "cuda":
        raise DeviceError(f"precision fp16 (with a GradScaler) needs a CUDA device, not {dev}; use fp32 (or bf16)")
    return dev


class FromScratchWarning(UserWarning):
    """A real-dataset run does not start from the paper's starting weights: its number is not expected."""


def resolve_recipe(paper: str, dataset: str, data_root=None, base_recipe: str | None = None, **overrides) -> Recipe:
    """The card's recipe for ``dataset`` with ``overrides``; for ``imagefolder`` the ``base_recipe`` entry
    (default RAF-DB's) with the number of classes read from the folder names of its ``train/`` split."""
    if dataset != "imagefolder":
        if base_recipe is not None:
            raise ValueError(f"base_recipe applies to dataset='imagefolder' only (got dataset={dataset!r})")
        return load_recipe(paper, dataset, **overrides)
    train = load_dataset("imagefolder", dataset_root(dataset, data_root), "train", progress=False)
    overrides.setdefault("num_classes", len(train.classes))
    recipe = load_recipe(paper, dataset, base_recipe=base_recipe, **overrides)
    if "stored_size" not in overrides and len(train):
        side = max(train[0][0].shape[-2:])
        if side < recipe.input_size:  # crops smaller than the input (e.g. 48 px) are cached as they are
            recipe = recipe.replace(stored_size=side)
    return recipe


@dataclasses.dataclass(frozen=True)
class RunDirOptions:
    """Which run directory :func:`train` writes, and what happens to a run already there
    (:func:`ferlib.engine.policy.decide` says which: new, resume, overwrite, reuse or refuse)."""

    run_dir: str | Path | None = None  # None: results/runs/<run_name>, or <paper>_<dataset>_<time stamp>
    run_name: str | None = None
    resume: bool | str = "auto"        # True/"auto": continue a checkpoint there; "must": or refuse; False: afresh
    overwrite: bool = False            # a fresh run may replace a previous run there
    reuse: bool = False                # a finished run there with the same settings is returned, not retrained
    break_lock: bool = False           # take over a lock held from another host (that run must be gone)


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """Which data :func:`train` reads, and how."""

    data_root: str | Path | None = None  # None: data/<folder> of the dataset's record
    cache: bool | str | Path = "auto"    # "auto": the uint8 tensor cache for real datasets; True / a folder; False
    val_fraction: float | None = None    # hold out this stratified share of train and select on it
    base_recipe: str | None = None       # dataset="imagefolder": the card entry it trains with (default rafdb)


def run_options(run) -> RunDirOptions:
    """``train(run=…)``: a :class:`RunDirOptions`, or a path standing for ``RunDirOptions(run_dir=path)``."""
    return run if isinstance(run, RunDirOptions) else RunDirOptions(run_dir=run)


def data_options(data) -> DataOptions:
    """``train(data=…)``: a :class:`DataOptions`, or a path standing for ``DataOptions(data_root=path)``."""
    return data if isinstance(data, DataOptions) else DataOptions(data_root=data)


def _run_dir(paper: str, dataset: str, run: RunDirOptions) -> Path:
    from .distributed import all_gather_objects

    run_dir = run.run_dir
    if run_dir is None:
        run_dir = results_dir() / "runs" / (run.run_name or f"{paper}_{dataset}_{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir = all_gather_objects(run_dir)[0]  # every rank uses rank 0's time stamp
    return Path(run_dir)


def _locked_run_dir(args: dict) -> Path | None:
    """The directory ``train`` locks on entry: a named one (``run_dir`` / ``run_name``; a time-stamped one is new
    and ``fit`` locks it), none for a dry run."""
    run = run_options(args["run"])
    if args["dry_run"] or (run.run_dir is None and run.run_name is None):
        return None
    return _run_dir(args["paper"], args["dataset"], run)


@holds_run_dir(_locked_run_dir, lambda args: run_options(args["run"]).break_lock)  # one writer, before any check
def train(paper: str, dataset: str = "synthetic", run: RunDirOptions | str | Path | None = None,
          data: DataOptions | str | Path | None = None, *, epochs: int | None = None, batch_size: int | None = None,
          max_steps: int | None = None, pretrained="card", precision: str | None = None, seed: int = 0,
          device: str = "auto", fit_options: dict | None = None, progress: bool | None = None, callbacks=(),
          threads: int | None = None, dry_run: bool = False, **recipe_overrides):
    """Train ``paper``'s recipe for ``dataset`` and return the run (see ``ferlib.engine.loop`` for the files).

    ``train("fermam", "rafdb", run="results/runs/mine", data="data/RAF-DB", epochs=2)``: ``run`` is the run
    directory (:class:`RunDirOptions`, or its path), ``data`` the data (:class:`DataOptions`, or its root).

    The defaults are the paper's run: the card's epochs, batch, schedule and evaluation on the whole
    evaluation split, from the card's starting weights, in the card's precision. Less only when asked:
    ``epochs``/``batch_size`` override the card; ``max_steps`` stops after that many optimiser steps
    (and limits evaluation batches) — None takes the card's, which only the synthetic entries set (a CPU
    smoke budget). A run cut short is recorded with ``complete: false``.

    One writer per run directory: the call holds ``run_dir/run.lock`` (:meth:`ferlib.run_dir.RunDir.lock`) from
    its first line to its return; while another process holds it, it raises :class:`ferlib.run_dir.RunLockedError`
    naming that process at once. A lock left by a killed process on this host is taken over with a warning;
    ``RunDirOptions(break_lock=True)`` breaks one held from another host (make sure that run is gone).

    ``pretrained``: ``"card"``/True = the card's starting weights (``ferlib.weights.start``), False = random
    init (warns on a real dataset), or a ``ferlib.weights`` entry / file. Missing files stop the run before
    any data is read, in one error listing all of them. ``precision``: None = the card's (fp32 for all five
    papers), or fp32 / bf16 / fp16. ``dry_run``: resolve everything, write ``<run_dir>/plan.json`` and return
    the plan (a dict) without training. ``dataset="imagefolder"``: your own ``train/<class>/`` and
    ``test/<class>/`` folders under ``data_root``, trained with the card's ``base_recipe`` entry (default
    rafdb). ``val_fraction`` holds out a stratified validation split of train and selects the checkpoint on
    it; otherwise selection is on the evaluation split, as the authors' code does. ``callbacks``:
    ``cb(row, result)`` after each epoch. ``cache``: see :func:`load_recipe_splits`. ``threads``: torch CPU
    threads (None honours ``OMP_NUM_THREADS``). ``fit_options``: :class:`~ferlib.engine.loop.FitOptions` fields.
    Under ``torchrun`` the process group is joined here; every rank returns the run, only rank 0 writes.

    What happens to a run already in the run directory is decided before any data is read, by
    :func:`ferlib.engine.policy.decide`: ``resume`` ``"auto"``/True continues it from its checkpoint (else
    starts afresh), ``"must"`` continues it or raises ``ResumeError`` saying what was found and why each file
    was refused, False starts afresh; a resume with another recipe (other than more epochs) is refused. A fresh
    run into a directory holding a previous run refuses (``RunExistsError``) unless ``overwrite``. ``reuse``:
    a finished run with the same settings (resolved recipe, seed, ``max_steps``, starting weights) is returned
    without training, after printing ``already complete: reusing …`` and replaying its ``metrics.jsonl`` rows
    to ``callbacks`` (``result`` None); a finished run with other settings raises ``RecipeChangedError``
    naming them, unless ``resume`` or ``overwrite`` says what to do (the notebooks' default, so that they can
    run again).
    """
    from ferlib.weights.start import require_start_files, resolve_start

    from .distributed import launched_world_size, per_process_batch
    from .env import configure_threads

    run, data = run_options(run), data_options(data)
    configure_threads(threads)
    fit_options = dict(fit_options or {})
    precision = precision or fit_options.pop("precision", None)
    recipe = resolve_recipe(paper, dataset, data.data_root, data.base_recipe, **recipe_overrides)
    card_epochs = recipe.epochs
    recipe = recipe.replace(epochs=epochs, batch_size=batch_size)
    if precision not in (None, "auto"):
        recipe = recipe.replace(precision=precision)
    per_process_batch(recipe.batch_size, launched_world_size())  # a batch that does not split stops here
    items = resolve_start(pretrained, recipe.pretrained, recipe.model)
    if max_steps is None:
        max_steps = recipe.max_steps
    if dry_run:
        return plan_run(recipe, items, data.data_root, _run_dir(paper, dataset, run), max_steps, device,
                        data.val_fraction, data.cache)
    if run.run_dir is not None or run.run_name is not None:  # a named folder may hold a run: decided before the data
        target = _run_dir(paper, dataset, run)
        settings = _settings(recipe, items, max_steps, seed, data.val_fraction, fit_options) if run.reuse else None
        decision = decide(target, run.resume, run.overwrite, reuse=settings, load=False)
        if decision.action == "reuse":
            return _reused(target, recipe, decision.summary, callbacks)
    check_device(device, recipe.precision)
    require_start_files(items, f"{paper} on {dataset}")
    _warn_start(recipe, items, pretrained)
    fit_kw = {"selected_on": "val" if data.val_fraction else "test_selected", "overwrite": run.overwrite,
              **fit_options}
    opts = FitOptions(device=device, max_steps=max_steps, seed=seed, progress=progress, precision=recipe.precision,
                      **fit_kw)
    return _train(paper, dataset, recipe, items, run, data, opts, callbacks, card_epochs)


def _train(paper: str, dataset: str, recipe: Recipe, items, run: RunDirOptions, data: DataOptions, opts: FitOptions,
           callbacks, card_epochs: int) -> RunResult:
    """:func:`train` past its checks: the data, the model from its starting weights, the loss, then :func:`fit`."""
    from .distributed import init_distributed, rank0_first, rank_and_world

    init_distributed(opts.device)  # torchrun: join the process group (no-op for one process)
    rank, _ = rank_and_world()
    # rank 0 generates the synthetic set / builds the cache first, however long it takes (a heartbeat, no fixed
    # timeout); the others then read what it wrote
    train_ds, eval_ds = rank0_first(
        lambda: load_recipe_splits(recipe, data.data_root, progress=opts.progress is not False and rank == 0,
                                   cache=data.cache),
        "read the data (generate the synthetic set or build the cache)")
    data_classes = len(train_ds.classes)
    if data_classes != recipe.num_classes:
        raise DatasetFormatError(f"{dataset}: the data has {data_classes} classes {list(train_ds.classes)} but the "
                                 f"recipe has num_classes={recipe.num_classes}; drop the num_classes override (or use "
                                 f"the card entry for this label set)")
    select_ds = eval_ds
    if data.val_fraction:
        train_ds, select_ds = holdout(train_ds, data.val_fraction, opts.seed)
    run_dir = _run_dir(paper, dataset, run)
    seed_everything(opts.seed)  # the initial weights depend on the seed too
    model = create_model(recipe.model, num_classes=recipe.num_classes, **recipe.model_kwargs)
    if items:
        from ferlib.weights.start import load_start

        load_start(model, items)
    loss = build_loss(recipe)
    # fit writes config.yaml and summary.json once, complete: where the data came from, the card's epochs
    # (fewer: not the paper's run) and, with a held-out split, best.pt on the test split
    summary = fit(model, loss, recipe, train_ds, select_ds, run_dir, resume=run.resume, options=opts,
                  callbacks=callbacks, start=[i.to_dict() for i in items], test=eval_ds if data.val_fraction else None,
                  data_source=data_source(data.data_root, data.cache), card_epochs=card_epochs)
    return RunResult(Path(run_dir), recipe, summary)


def _settings(recipe: Recipe, items, max_steps, seed, val_fraction, fit_options) -> dict:
    """What makes this run this run, compared with a finished run's by ``reuse`` (:mod:`.reuse`)."""
    from .reuse import run_settings

    return run_settings(recipe, [i.to_dict() for i in items], seed, max_steps,
                        "val" if val_fraction else "test_selected", fit_options)


def _reused(target: Path, recipe: Recipe, summary: dict, callbacks) -> RunResult:
    """``RunDirOptions(reuse=True)`` found its run finished in ``target``: say so, replay its rows to ``callbacks``."""
    from .reuse import reuse_message

    print(reuse_message(target, summary), flush=True)
    for row in RunDir(target).metrics():
        for cb in callbacks:
            cb(row, None)
    return RunResult(target, recipe, summary)


def _warn_start(recipe: Recipe, items, pretrained) -> None:
    if dataset_info(recipe.dataset).generated:  # the synthetic set: no paper number to miss
        return
    if not items and recipe.pretrained:
        names = ", ".join(i["weights"] for i in recipe.pretrained)
        warnings.warn(f"{recipe.paper} on {recipe.dataset} trains from random init (pretrained={pretrained!r}); the "
                      f"card starts from {names}: the paper's number is not expected from this run.",
                      FromScratchWarning, stacklevel=3)
    elif not recipe.pretrained and recipe.pretrained_note and not items:
        warnings.warn(f"{recipe.paper} on {recipe.dataset} trains from random init because the paper's starting "
                      f"weights are not released: the paper's number is not expected from this run. "
                      f"{recipe.pretrained_note}", FromScratchWarning, stacklevel=3)


def plan_run(recipe: Recipe, items, data_root, run_dir: Path, max_steps: int | None, device: str = "auto",
             val_fraction: float | None = None, cache="auto") -> dict:
    """What a run would do, resolved without training (``train(dry_run=True)``): written to
    ``run_dir/plan.json``, printed, and returned. Missing data or weights are reported, not raised."""
    import math

    from ferlib.weights.start import missing_message, plan_start

    from .distributed import launched_world_size, per_process_batch
    from .env import resolve_device
    from .loader import batches_per_epoch, train_sampler

    plan = {"paper": recipe.paper, "model": recipe.model, "dataset": recipe.dataset, "base_recipe": recipe.base_recipe,
            "data_root": str(data_root or (None if dataset_info(recipe.dataset).generated else default_data_root(recipe.dataset))),
            "epochs": recipe.epochs, "batch_size": recipe.batch_size, "max_steps": max_steps,
            "world_size": launched_world_size(), "per_process_batch_size": per_process_batch(recipe.batch_size,
                                                                                             launched_world_size()),
            "precision": recipe.precision, "device": str(resolve_device(device)), "eval_split": eval_split(recipe),
            "selected_on": "val (held-out fraction of train)" if val_fraction else eval_split(recipe),
            "num_classes": recipe.num_classes, "model_kwargs": dict(recipe.model_kwargs), "input_size": recipe.input_size,
            "stored_size": recipe.stored_size, "color_order": recipe.color_order,
            "optimizer": recipe.optimizer, "lr": recipe.lr, "schedule": recipe.schedule, "sam": recipe.sam,
            "sampler": recipe.sampler, "loss": recipe.loss, "train_images": None, "eval_images": None,
            "classes": None, "steps_per_epoch": None, "optimizer_steps_planned": None, "data_error": None,
            "pretrained": plan_start(items), "pretrained_note": recipe.pretrained_note or None,
            "missing_weights": missing_message(items), "run_dir": str(run_dir)}
    try:
        tr = load_split(recipe, "train", data_root, progress=False, cache=False)
        ev = load_split(recipe, eval_split(recipe), data_root, progress=False, cache=False)
        n_train = len(tr) - (round(val_fraction * len(tr)) if val_fraction else 0)
        sampler = train_sampler(recipe, tr, 0, 0, 1)
        per_epoch = batches_per_epoch(sampler, recipe.batch_size) if not val_fraction else math.ceil(
            n_train / recipe.batch_size)
        planned = per_epoch * recipe.epochs
        plan.update(train_images=n_train, eval_images=len(ev), classes=list(tr.classes), steps_per_epoch=per_epoch,
                    optimizer_steps_planned=planned if max_steps is None else min(planned, max_steps))
    except (DataNotFoundError, DatasetFormatError, FileNotFoundError) as e:
        plan["data_error"] = str(e)
    plan["complete_if_run"] = max_steps is None
    RunDir(run_dir).write_plan(plan)
    print(format_plan(plan), flush=True)
    return plan


def format_plan(plan: dict) -> str:
    """The dry run, readable: one line per decision, one per starting-weights file."""
    lines = [f"dry run: {plan['paper']} ({plan['model']}) on {plan['dataset']}"
             + (f" with the card's {plan['base_recipe']} recipe" if plan.get("base_recipe") else "")]
    if plan["data_error"]:
        lines.append(f"  data        NOT FOUND: {plan['data_error']}")
    else:
        lines.append(f"  data        {plan['data_root']}: train {plan['train_images']} images, "
                     f"{plan['eval_split']} {plan['eval_images']} images, {plan['num_classes']} classes {plan['classes']}")
    steps = plan["optimizer_steps_planned"]
    limit = "the full recipe" if plan["max_steps"] is None else f"STOPS after max_steps={plan['max_steps']} (smoke run)"
    lines.append(f"  schedule    {plan['epochs']} epochs × {plan['steps_per_epoch']} steps, batch {plan['batch_size']}: "
                 f"{steps} optimiser steps — {limit}")
    lines.append(f"  optimiser   {plan['optimizer']} lr {plan['lr']}, schedule {plan['schedule']}, SAM {plan['sam']}, "
                 f"sampler {plan['sampler']}, loss {plan['loss']}")
    lines.append(f"  evaluation  the whole {plan['eval_split']} split, selected on {plan['selected_on']}")
    lines.append(f"  precision   {plan['precision']} on {plan['device']}; input {plan['input_size']} px {plan['color_order']}"
                 + (f", cached at {plan['stored_size']} px (prepare --size)" if plan.get("stored_size") else ""))
    lines.append(f"  batch       {plan['batch_size']} global, {plan['per_process_batch_size']} per process "
                 f"× {plan['world_size']} process(es)")
    if not plan["pretrained"]:
        lines.append("  weights     random init" + (f" — {plan['pretrained_note']}" if plan["pretrained_note"] else ""))
    for row in plan["pretrained"]:
        state = "found" if row["found"] else "MISSING"
        check = {True: "sha256 ok", False: "SIZE/SHA256 MISMATCH", None: "not checked"}[row["sha256_ok"]]
        lines.append(f"  weights     {row['entry'] or row['file']} → {row['target']}: {state} ({row['file']}; {check})")
    if plan["missing_weights"]:
        lines.append("  " + plan["missing_weights"].replace("\n", "\n  "))
    lines.append(f"  plan        {plan['run_dir']}/plan.json")
    return "\n".join(lines)


def data_source(data_root, cache) -> dict:
    """Where a run's data came from, config.yaml ``data.source`` (``python -m ferlib evaluate`` reloads it there)."""
    return {"data_root": str(Path(data_root).resolve()) if data_root else None,
            "cache": str(cache) if cache not in (True, False) else cache}


#: Loading switches older runs stored in ``model_kwargs`` (the factories no longer load files).
_RETIRED_MODEL_KWARGS = ("pretrained_backbones", "pretrained_landmark")


def recipe_from_dict(d: dict) -> Recipe:
    """A :class:`Recipe` from a checkpoint's ``recipe`` dict (older runs included: retired fields dropped)."""
    import dataclasses as dc

    known = {f.name for f in dc.fields(Recipe)}
    d = {k: v for k, v in d.items() if k in known}
    d["model_kwargs"] = {k: v for k, v in (d.get("model_kwargs") or {}).items() if k not in _RETIRED_MODEL_KWARGS}
    if isinstance(d.get("pretrained"), str):
        d["pretrained"] = ({"weights": d["pretrained"], "into": "", "unused": []},)
    for k in ("mean", "std", "train_transforms", "test_transforms", "pretrained"):
        if isinstance(d.get(k), list):
            d[k] = tuple(d[k])
    return Recipe(**d)


def load_run(run_dir, checkpoint: str = "best") -> tuple[torch.nn.Module, Recipe]:
    """Rebuild the model of a run directory from its checkpoint alone (``best`` = the selected epoch,
    ``last`` = the last one written)."""
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    refused: list = []
    ckpt = load_checkpoint(Path(run_dir) / f"{checkpoint}.pt", refused=refused)
    if ckpt is None:
        if refused:
            raise ResumeError(f"{run_dir}/{checkpoint}.pt cannot be used: " + "; ".join(str(e) for e in refused))
        if RunDir(run_dir).in_progress():
            raise FileNotFoundError(f"{run_dir}/{checkpoint}.pt not found: the run is still in progress "
                                    f"({RunDir(run_dir).lock_holder()}) and has not finished an epoch yet")
        raise FileNotFoundError(f"{run_dir}/{checkpoint}.pt not found: was the run trained?")
    recipe = recipe_from_dict(ckpt["recipe"])
    model = create_model(recipe.model, num_classes=recipe.num_classes, **recipe.model_kwargs)
    model.load_state_dict(ckpt["model"])
    return model.eval(), recipe
