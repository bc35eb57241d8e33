"""Evaluate a trained run again, or a released checkpoint on a benchmark (``python -m ferlib evaluate``).

- ``--run-dir DIR [--split test] [--tta]`` rebuilds the model from ``DIR/best.pt`` (``--checkpoint last`` for
  the last epoch), reads the split of the run's dataset from where training read it (``config.yaml``
  ``data.source``; ``--data-root`` to change), and reports accuracy, mean per-class accuracy, macro F1, the
  confusion matrix and a per-class report. Writes ``DIR/eval_<split>[_tta].json`` and
  ``DIR/predictions_<split>[_tta].npz`` (logits, targets, features, classes — the layout of
  ``predictions.npz``, docs/design.md §3).
- ``--weights ENTRY_OR_FILE [--model NAME] --dataset rafdb --data-root …`` builds the model a
  ``ferlib.weights`` entry describes (or ``--model`` for a file the registry does not know), applies the
  entry's preprocessing (input size, the paper card's eval resize / crop, mean/std, colour order) and class
  order (the dataset's classes matched to the entry's by name), evaluates on the dataset's evaluation split
  and prints ferlib's accuracy next to the one the authors report for that file. Writes
  ``results/released/<entry>_<dataset>.json``, which :func:`released_checkpoints_table` (and notebook
  ``10_results``) reads.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ferlib.run_dir import RunDir




class ClassMismatchError(ValueError):
    """The dataset's classes cannot be matched by name to the classes of a checkpoint's head."""


#: Errors of evaluate / predict reported as one ``error: …`` line (exit 2) beside ``ferlib.error_report``' known ones.
CLI_ERRORS = (ClassMismatchError, KeyError, ValueError, FileNotFoundError)


# --- run directories ---------------------------------------------------------------------------------


def run_classes(run_dir, checkpoint: dict | None = None) -> list[str] | None:
    """Class names of a run's outputs, index i = logit i: the checkpoint's ``classes`` when it carries them,
    else ``config.yaml`` ``data.train.classes``, else None."""
    if checkpoint and checkpoint.get("classes"):
        return [str(c) for c in checkpoint["classes"]]
    classes = ((RunDir(run_dir).config().get("data") or {}).get("train") or {}).get("classes")
    return [str(c) for c in classes] if classes else None


def run_data_root(run_dir, recipe, data_root=None) -> Path | None:
    """Where a run's data is read from: ``data_root``, else the folder it was trained on (``config.yaml``
    ``data.source.data_root``), else ``data/<folder>`` of the dataset's record. None for the generated synthetic
    set.

    Raises :class:`ferlib.data.DataNotFoundError` naming the folder looked in and how to pass another."""
    from ferlib.data import DataNotFoundError, dataset_info

    source = (RunDir(run_dir).config().get("data") or {}).get("source") or {}
    if dataset_info(recipe.dataset).generated:
        return Path(data_root or source["data_root"]) if (data_root or source.get("data_root")) else None
    if data_root:
        root, how = Path(data_root).expanduser(), "the folder given (data_root / --data-root)"
    elif source.get("data_root"):
        root, how = Path(source["data_root"]), "the folder the run was trained on (config.yaml data.source)"
    else:
        root, how = dataset_info(recipe.dataset).default_root(), f"the default folder for {recipe.dataset}"
    if not root.exists():
        raise DataNotFoundError(
            f"run {run_dir} was trained on {recipe.dataset}; its data is not at {root} ({how}). Pass the folder "
            f"that holds it now: python -m ferlib evaluate --run-dir {run_dir} --data-root <folder> "
            f"(evaluate_run(..., data_root=<folder>) in Python).")
    return root


def evaluate_run(run_dir, split: str | None = None, tta: bool = False, checkpoint: str = "best", data_root=None,
                 device: str = "auto", batch_size: int | None = None, precision: str = "auto",
                 progress: bool | None = None) -> dict:
    """Metrics of a run's checkpoint on ``split``; writes the JSON and predictions files next to it, holding the
    run directory's lock (:meth:`ferlib.run_dir.RunDir.lock`). A run another process is still training is evaluated
    from its last complete checkpoint, said so (``in_progress``: the holder) and left unwritten."""
    from ferlib.run_dir import RunLockedError

    if not Path(run_dir).is_dir():  # nothing to lock: load_run says what is missing
        return _evaluate_run(run_dir, split, tta, checkpoint, data_root, device, batch_size, precision, progress)
    try:
        with RunDir(run_dir).lock():
            return _evaluate_run(run_dir, split, tta, checkpoint, data_root, device, batch_size, precision, progress)
    except RunLockedError as e:
        print(f"{run_dir} is still in progress ({e.holder}): evaluating its last complete {checkpoint}.pt; nothing is "
              f"written to the run directory", flush=True)
        res = _evaluate_run(run_dir, split, tta, checkpoint, data_root, device, batch_size, precision, progress,
                            write=False)
        return {**res, "in_progress": str(e.holder)}


def _evaluate_run(run_dir, split, tta, checkpoint, data_root, device, batch_size, precision, progress,
                  write: bool = True) -> dict:
    from ferlib.engine.loop import evaluate
    from ferlib.metrics import per_class_report
    from ferlib.engine.training import eval_split, load_run, load_split

    run_dir = Path(run_dir)
    model, recipe = load_run(run_dir, checkpoint)
    source = (RunDir(run_dir).config().get("data") or {}).get("source") or {}
    split = split or eval_split(recipe)
    root = run_data_root(run_dir, recipe, data_root)
    classes = run_classes(run_dir)
    if recipe.dataset == "imagefolder" and classes and "classes" not in (recipe.dataset_kwargs or {}):
        recipe = recipe.replace(dataset_kwargs={**(recipe.dataset_kwargs or {}), "classes": classes})
    cache = source.get("cache") or False
    ds = load_split(recipe, split, root, progress=progress is not False, cache=cache)
    res = evaluate(model, ds, recipe, device, tta=tta, progress=progress, batch_size=batch_size, precision=precision)
    pred = res.pop("predictions")
    res["report"] = per_class_report(pred["logits"], pred["targets"], list(ds.classes))
    res.update(split=split, tta=tta, checkpoint=checkpoint, classes=list(ds.classes))
    tag = f"{split}{'_tta' if tta else ''}"
    if not write:
        return res
    rd = RunDir(run_dir)
    rd.write_evaluation(tag, res)
    rd.save_predictions(pred, ds.classes, f"predictions_{tag}.npz")
    return res


# --- released checkpoints ----------------------------------------------------------------------------


def card_for_model(model: str) -> str | None:
    """The recipe card whose ``model`` is ``model`` (e.g. ``emonet`` → ``emonet``), or None."""
    from ferlib.recipes import list_recipes, load_card

    if model in list_recipes() and load_card(model).get("model") == model:
        return model
    for name in list_recipes():
        if load_card(name).get("model") == model:
            return name
    return None


def entry_dataset(entry) -> str | None:
    """The dataset the authors report ``entry`` on (its first ``metrics`` key), or None."""
    return next(iter(entry.metrics), None) if entry is not None else None


def resolve_weights(weights, model: str | None = None):
    """``(entry or None, what ``create_model(weights=…)`` loads, model name)`` for an entry name or a checkpoint
    file.

    A file the registry knows by its name gets that entry; another file needs ``model``."""
    import os

    from ferlib.weights.registry import entry_for_filename, get_weights, list_weights

    if hasattr(weights, "filename"):  # a WeightsEntry
        return weights, weights.name, weights.model
    name = str(weights)
    if name in list_weights():
        entry = get_weights(name)
        if model is not None and model != entry.model:
            raise ValueError(f"weights {name!r} belong to model {entry.model!r}, not {model!r}")
        return entry, name, entry.model
    path = Path(name).expanduser()
    if path.is_file() or os.sep in name or "/" in name:
        if not path.is_file():
            from ferlib.weights.load import WeightsNotFoundError

            raise WeightsNotFoundError(f"no checkpoint file {path}")
        entry = entry_for_filename(path.name)
        if entry is None and model is None:
            raise ValueError(f"{path.name} is not a registered checkpoint file: pass the model it belongs to "
                             f"(--model NAME / model=NAME)")
        return entry, str(path), model or entry.model
    raise KeyError(f"unknown weights {name!r}: neither a registered entry ({list_weights()}) nor a file")


def weights_recipe(entry, model: str, dataset: str):
    """The recipe for using a checkpoint on ``dataset``: the model's card entry for ``dataset`` (else the one the
    entry reports on, else the card's first), with the entry's input size, mean/std, colour order, class count and
    model arguments. The card supplies the eval resize / crop (``test_transforms``, ``transform_kwargs``)."""
    from ferlib.recipes import Recipe, load_card, load_recipe

    card = card_for_model(model)
    overrides = {}
    if entry is not None:
        if entry.categories is not None:
            overrides["num_classes"] = len(entry.categories)
        kw = {k: v for k, v in entry.model_kwargs.items() if k != "num_classes"}
        if kw:
            overrides["model_kwargs"] = kw
        if entry.input_size:
            overrides["input_size"] = entry.input_size
        if entry.mean is not None:
            overrides["mean"], overrides["std"] = tuple(entry.mean), tuple(entry.std)
        if entry.colour:
            overrides["color_order"] = entry.colour
    if card is None:
        return Recipe(paper=model, dataset=dataset, model=model, **overrides)
    have = load_card(card).get("datasets") or {}
    key = next((d for d in (dataset, entry_dataset(entry)) if d in have), next(iter(have)))
    recipe = load_recipe(card, key, **overrides)
    if key != dataset:  # the card's preprocessing, the other dataset's reader and splits
        recipe = recipe.replace(dataset=dataset, dataset_kwargs={}, label_mode=None, eval_split=None,
                                stored_size=None, reported={})
    return recipe


def head_classes(entry, dataset: str) -> list[str]:
    """Class names of a checkpoint's outputs: the entry's ``categories``, else ``dataset``'s native order."""
    from ferlib.data import dataset_info, list_datasets
    from ferlib.labels import LABEL_SETS

    if entry is not None and entry.categories is not None:
        return list(entry.categories)
    native = dataset_info(dataset).label_set if dataset in list_datasets() else LABEL_SETS.get(dataset)
    if native is None:
        raise ClassMismatchError(f"the classes of this checkpoint are unknown (no registry entry) and {dataset!r} "
                                 f"has no fixed class order; register the file with its categories")
    return list(native.names)


def model_from_weights(weights, model: str | None = None, dataset: str | None = None):
    """``(model, recipe, classes, entry)`` for an entry name or a checkpoint file: the model built as the entry
    describes (``create_model(entry.model, num_classes, weights=…, **entry.model_kwargs)``), in eval mode.

    ``dataset`` picks the card entry supplying the eval resize / crop (default: the dataset the authors report
    the file on, else ``rafdb``)."""
    from ferlib.models import create_model

    entry, to_load, model_name = resolve_weights(weights, model)
    dataset = dataset or entry_dataset(entry) or "rafdb"
    recipe = weights_recipe(entry, model_name, dataset)
    classes = head_classes(entry, dataset)
    kwargs = dict(recipe.model_kwargs or {})
    if entry is not None:
        kwargs.update({k: v for k, v in entry.model_kwargs.items() if k != "num_classes"})
    if recipe.num_classes != len(classes):
        recipe = recipe.replace(num_classes=len(classes))
    net = create_model(model_name, num_classes=len(classes), weights=to_load, **kwargs)
    return net.eval(), recipe, classes, entry


def match_classes(ds, classes) -> None:
    """Re-index ``ds``'s targets into ``classes`` (a checkpoint's output order), matching names through
    ``ferlib.data.relabel`` (synonyms such as happiness / happy accepted); in place.

    Raises :class:`ClassMismatchError` when a class of the dataset has no output in the checkpoint."""
    from ferlib.data.relabel import relabel_dataset
    from ferlib.labels import LabelSet

    try:
        relabel_dataset(ds, LabelSet("checkpoint", tuple(classes)))
    except ValueError as e:
        raise ClassMismatchError(f"the dataset's classes {list(ds.classes)} cannot be matched to the checkpoint's "
                                 f"{list(classes)}: {e}") from None


def released_dir(results=None) -> Path:
    """Where ``evaluate --weights`` writes its JSON files: ``<results>/released`` (default ``results/``)."""
    from ferlib.paths import results_dir

    return Path(results or results_dir()) / "released"


def evaluate_weights(weights, dataset: str | None = None, data_root=None, model: str | None = None,
                     split: str | None = None, tta: bool = False, device: str = "auto",
                     batch_size: int | None = None, precision: str = "auto", progress: bool | None = None,
                     cache=False, out=None) -> dict:
    """Evaluate a released (or any) checkpoint on ``dataset``'s evaluation split with the entry's preprocessing
    and class order; writes ``results/released/<entry>_<dataset>.json`` (or ``out``), the logits, targets and
    features beside it (``.npz``, targets in the checkpoint's class order), and returns the result:
    the metrics, ``reported`` (the authors' accuracy in %, None when they report none for ``dataset``),
    ``measured`` (ours, %), ``weights``, ``dataset``, ``split``, ``classes``, ``n``."""
    from ferlib.engine.loop import evaluate
    from ferlib.metrics import per_class_report
    from ferlib.engine.training import eval_split, load_split

    net, recipe, classes, entry = model_from_weights(weights, model, dataset)
    dataset = recipe.dataset
    split = split or eval_split(recipe)
    ds = load_split(recipe, split, data_root, progress=progress is not False, cache=cache)
    match_classes(ds, classes)
    res = evaluate(net, ds, recipe, device, tta=tta, progress=progress, batch_size=batch_size, precision=precision)
    pred = res.pop("predictions")
    name = entry.name if entry is not None else Path(str(weights)).stem
    reported = entry.metrics.get(dataset) if entry is not None else None
    res["report"] = per_class_report(pred["logits"], pred["targets"], list(classes))
    res.update(weights=name, model=recipe.model, dataset=dataset, split=split, tta=tta, classes=list(classes),
               reported=reported, measured=round(100 * res["accuracy"], 3),
               data_root=str(data_root) if data_root else None, input_size=recipe.input_size,
               mean=list(recipe.mean), std=list(recipe.std), color_order=recipe.color_order,
               test_transforms=list(recipe.test_transforms), date=time.strftime("%Y-%m-%d %H:%M:%S"))
    path = Path(out) if out else released_dir() / f"{name}_{dataset}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(res, indent=2))
    os.replace(tmp, path)
    RunDir(path.parent).save_predictions(pred, classes, path.stem + ".npz")
    res["json"] = str(path)
    return res


def released_checkpoints_table(results_dir=None):
    """Every released ``ferlib.weights`` entry: the accuracy its authors report next to the one ferlib measured
    (read from ``<results_dir>/released/<entry>_<dataset>.json``, written by ``evaluate --weights``).

    One row per (entry, dataset it is reported on); an entry with no reported accuracy (a backbone) gets one
    row. Columns: weights, model, dataset, reported (%), measured (%), gap (pp), n, note — empty measured
    cells say why in ``note`` (file absent, or not evaluated yet)."""
    import pandas as pd

    from ferlib.weights.registry import find_file, get_weights, list_weights

    folder = released_dir(results_dir)
    rows = []
    for name in list_weights(released=True):
        e = get_weights(name)
        for dataset, reported in (dict(e.metrics) or {None: None}).items():
            row = {"weights": name, "model": e.model, "dataset": dataset or "—", "reported": reported,
                   "measured": None, "gap": None, "n": None, "note": ""}
            measured = folder / f"{name}_{dataset}.json" if dataset else None
            if dataset is None:
                row["note"] = "no accuracy reported (a starting point / backbone)"
            elif measured.is_file():
                m = json.loads(measured.read_text())
                row.update(measured=m.get("measured"), n=m.get("n"), note=f"{m.get('split')} split, {m.get('date', '')}")
                if reported is not None and m.get("measured") is not None:
                    row["gap"] = round(m["measured"] - reported, 3)
            elif find_file(e) is None:
                row["note"] = f"file {e.filename} absent (data/README.md says where to get it)"
            else:
                row["note"] = (f"not evaluated yet: python -m ferlib evaluate --weights {name} --dataset {dataset} "
                               f"--data-root <folder>")
            rows.append(row)
    return pd.DataFrame(rows, columns=["weights", "model", "dataset", "reported", "measured", "gap", "n", "note"])
