"""``train(paper, dataset, ...)``: recipe → data → model → loss → :func:`fit`, the call every notebook makes."""
from __future__ import annotations

import dataclasses
import inspect
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from ferlib.data import DatasetFormatError, load_dataset
from ferlib.data.cache import CacheSpaceError
from ferlib.losses import create_loss
from ferlib.models import create_model
from ferlib.paths import data_dir, results_dir
from ferlib.recipes import Recipe, load_recipe

from .loop import FitOptions, evaluate, fit
from .checkpoint import load_checkpoint
from .env import seed_everything

#: Split the papers report on, per dataset (AffectNet: its validation set).
EVAL_SPLIT = {"rafdb": "test", "affectnet": "val", "affectnet8": "val", "ferplus": "test", "fer2013": "test",
              "synthetic": "test"}
#: Reader and default folder per dataset name used in the recipe cards.
READER = {"affectnet8": "affectnet8"}
DEFAULT_FOLDER = {"affectnet8": "affectnet"}


class DataNotFoundError(FileNotFoundError):
    """A real dataset was asked for but is not on disk: the message says where to put it."""


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
    return data_dir() / DEFAULT_FOLDER.get(dataset, dataset)


def load_splits(recipe: Recipe, data_root=None, progress: bool = True, cache="auto"):
    """``(train, eval)`` datasets of a recipe; a missing real dataset raises :class:`DataNotFoundError`.

    ``cache`` = True (or a folder) reads the uint8 tensor cache at the recipe's ``stored_size``
    (built on first use, ``ferlib.data.cache``), which the engine reads a whole batch at a time.
    ``"auto"`` (default): the cache for a real dataset (DESIGN §5: training reads tensors, not JPEGs),
    falling back to the image files with a warning when the disk lacks room for it; the synthetic set
    is read as it is. False reads the image files every epoch.
    """
    return (load_split(recipe, "train", data_root, progress, cache),
            load_split(recipe, eval_split(recipe), data_root, progress, cache))


def eval_split(recipe: Recipe) -> str:
    """The split a recipe evaluates (and, like the authors' code, selects) on: the card's ``eval_split``,
    else the dataset's usual one (``EVAL_SPLIT``; FERPlus: ``test`` = PrivateTest)."""
    return recipe.eval_split or EVAL_SPLIT.get(recipe.dataset, "test")


def default_cache_workers() -> int:
    """Processes that decode a new cache: up to 8, one core left free; 0 (this process) on ≤ 2 cores."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cores <= 2 else min(8, cores - 1)


def load_split(recipe: Recipe, split: str, data_root=None, progress: bool = True, cache="auto"):
    """One split of the recipe's dataset (label_mode applies to train only, except on the synthetic set)."""
    name = recipe.dataset
    opts = dict(recipe.dataset_kwargs or {})
    auto = isinstance(cache, str) and cache == "auto"
    if auto:
        cache = name != "synthetic"
    if cache:
        opts.setdefault("cache", cache)
        opts.setdefault("cache_size", recipe.stored_size or recipe.input_size)
        opts.setdefault("cache_workers", default_cache_workers())
    if recipe.label_mode and (split == "train" or name == "synthetic"):
        opts["label_mode"] = recipe.label_mode
    opts.setdefault("progress", progress)
    if name == "synthetic":
        return load_dataset("synthetic", data_root, split, **opts)
    root = Path(data_root) if data_root else default_data_root(name)
    if not root.exists():
        raise DataNotFoundError(
            f"{name}: no data at {root}. The licensed datasets cannot ship with ferlib: obtain {name} "
            f"(data/README.md says from where), put it at {root} or pass data_root=..., then check it with "
            f"notebooks/01_prepare_data.ipynb (-p dataset {name} -p data_root <folder>).")
    try:
        return load_dataset(READER.get(name, name), root, split, **opts)
    except CacheSpaceError as e:
        if not auto:
            raise
        warnings.warn(f"{e}; reading the image files instead", stacklevel=2)
        opts = {k: v for k, v in opts.items() if k not in ("cache", "cache_size", "cache_workers")}
        return load_dataset(READER.get(name, name), root, split, **opts)
    except DatasetFormatError as e:
        raise DatasetFormatError(f"{e} (run notebooks/01_prepare_data.ipynb to check the layout)") from None


def holdout(dataset, fraction: float, seed: int):
    """A seeded, stratified split of ``dataset`` into (train, validation) subsets with the same attributes.

    Each class gives round(fraction · its count) items to validation (a class with one item keeps it in
    train), drawn with ``numpy.random.default_rng(seed)``.
    """
    from .metrics import hard_targets

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
    from ferlib.losses import _LOSSES

    kw = dict(recipe.loss_kwargs or {})
    cls = _LOSSES.get(recipe.loss)
    if cls is not None and "num_classes" in inspect.signature(cls).parameters:
        kw.setdefault("num_classes", recipe.num_classes)
    return create_loss(recipe.loss, **kw)


def train(paper: str, dataset: str = "synthetic", data_root=None, run_dir=None, run_name: str | None = None,
          device: str = "auto", epochs: int | None = None, batch_size: int | None = None,
          max_steps: int | None = None, pretrained: bool | str = False, seed: int = 0, resume: bool = True,
          val_fraction: float | None = None, fit_options: dict | None = None, progress: bool | None = None,
          callbacks=(), cache="auto", **recipe_overrides) -> RunResult:
    """Train ``paper``'s recipe for ``dataset`` and return the run (see ``ferlib.engine.loop`` for the files).

    ``epochs``/``batch_size`` = None keep the paper's values. ``max_steps`` makes a smoke run (also
    limits evaluation batches). ``val_fraction`` holds out a stratified validation split of train and
    selects the checkpoint on it; otherwise selection is on the evaluation split, as the authors' code does.
    ``pretrained``: True = the card's ``pretrained`` entry (else the model's one registered checkpoint),
    or a ``ferlib.weights`` name / file; False = random init (see :func:`starting_weights`).
    ``callbacks``: called as ``cb(row, result)`` after each epoch (e.g. ``ferlib.viz.live.LivePlot()``).
    ``cache``: "auto" (default: the uint8 tensor cache for real datasets), True / a folder, or False
    (read the image files every epoch); see :func:`load_splits`.
    ``fit_options``: :class:`~ferlib.engine.loop.FitOptions` fields (precision, compile, accumulate,
    checkpoint_every_steps, deterministic, ema, …). Under ``torchrun`` the process group is joined here;
    every rank returns the run, only rank 0 writes.
    """
    from .distributed import all_gather_objects, barrier, init_distributed, rank_and_world

    init_distributed(device)  # torchrun: join the process group (no-op for one process)
    rank, _ = rank_and_world()
    recipe = load_recipe(paper, dataset, epochs=epochs, batch_size=batch_size, **recipe_overrides)
    if rank != 0:  # rank 0 generates / caches first; the others then read what it wrote
        barrier()
    train_ds, eval_ds = load_splits(recipe, data_root, progress=progress is not False and rank == 0, cache=cache)
    if rank == 0:
        barrier()
    select_ds = eval_ds
    if val_fraction:
        train_ds, select_ds = holdout(train_ds, val_fraction, seed)
    if run_dir is None:
        run_dir = results_dir() / "runs" / (run_name or f"{paper}_{dataset}_{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir = all_gather_objects(run_dir)[0]  # every rank uses rank 0's time stamp
    seed_everything(seed)  # the initial weights depend on the seed too
    model = create_model(recipe.model, num_classes=recipe.num_classes, pretrained=starting_weights(recipe, pretrained),
                         **recipe.model_kwargs)
    loss = build_loss(recipe)
    fit_kw = {"selected_on": "val" if val_fraction else "test_selected", **(fit_options or {})}
    opts = FitOptions(device=device, max_steps=max_steps, seed=seed, progress=progress, **fit_kw)
    summary = fit(model, loss, recipe, train_ds, select_ds, run_dir, resume=resume, options=opts,
                  callbacks=callbacks)
    summary["selected_on"] = opts.selected_on
    if rank == 0:
        _record_data_source(Path(run_dir), data_root, cache)
    if val_fraction and not summary.get("stopped"):  # the test split, with the checkpoint chosen on validation
        best = load_checkpoint(Path(run_dir) / "best.pt")
        model.load_state_dict(best["model"])
        res = evaluate(model, eval_ds, recipe, device, max_batches=max_steps, progress=progress,
                       precision=opts.precision)
        if rank == 0:
            from .loop import _save_predictions

            _save_predictions(Path(run_dir), res, eval_ds)
        summary["test_at_val_selected"] = {k: v for k, v in res.items() if k != "predictions"}
    if rank == 0:
        (Path(run_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    return RunResult(Path(run_dir), recipe, summary)


def starting_weights(recipe: Recipe, pretrained: bool | str = False) -> bool | str:
    """What ``train(pretrained=…)`` loads: True = the card's ``pretrained`` entry (e.g. EMO-Net's ImageNet
    MobileNetV2), else the model's single registered checkpoint; a name or a path is used as given."""
    if pretrained is True and recipe.pretrained:
        return recipe.pretrained
    return pretrained


def _record_data_source(run_dir: Path, data_root, cache) -> None:
    """Add where the data came from to config.yaml (``python -m ferlib.evaluate`` reloads it from there)."""
    import os

    import yaml

    path = run_dir / "config.yaml"
    if not path.exists():
        return
    cfg = yaml.safe_load(path.read_text()) or {}
    cfg.setdefault("data", {})["source"] = {"data_root": str(data_root) if data_root else None,
                                            "cache": str(cache) if cache not in (True, False) else cache}
    tmp = run_dir / ".config.yaml.tmp"
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    os.replace(tmp, path)


def load_run(run_dir, checkpoint: str = "best") -> tuple[torch.nn.Module, Recipe]:
    """Rebuild the model of a run directory from its checkpoint alone (``best`` = the selected epoch,
    ``last`` = the last one written)."""
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    ckpt = load_checkpoint(Path(run_dir) / f"{checkpoint}.pt")
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir}/{checkpoint}.pt not found: was the run trained?")
    recipe = Recipe(**{k: tuple(v) if k in ("mean", "std", "train_transforms", "test_transforms") else v
                       for k, v in ckpt["recipe"].items()})
    model = create_model(recipe.model, num_classes=recipe.num_classes, **recipe.model_kwargs)
    model.load_state_dict(ckpt["model"])
    return model.eval(), recipe
