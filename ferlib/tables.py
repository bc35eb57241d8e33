"""Result tables from run directories alone (notebook 10): our runs against the papers' numbers,
model cost, per-class accuracy and cross-dataset evaluation.

Accuracy columns say how the epoch was chosen, because the authors' code selects on the test split:

``accuracy_last``           test split, last epoch (runs that select on the test split only; a
                            validation-selected run evaluates every epoch on its held-out split)
``accuracy_test_selected``  test split, best epoch *chosen on the test split* (``selected_on:
                            test_selected``; optimistic, what the papers' code reports)
``accuracy_val_selected``   test split at the epoch chosen on a held-out validation split
                            (``selected_on: val``, ``summary["test_at_val_selected"]``)

Means and sample standard deviations (ddof 1) are over seeds of runs sharing paper, dataset,
variant (the recipe's difference from the card), epochs and precision. A run cut short (``max_steps``,
a stop, fewer epochs than its recipe: ``summary.json`` ``complete: false``) is labelled ``smoke`` and never
compared with a paper's number as a reproduction. Reported numbers come from the recipe
cards' ``reported:`` fields (percentages above 1 are read as percent); gaps are ours − reported in
percentage points.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ferlib.metrics import cross_dataset_accuracy, per_class_accuracy
from ferlib.run_dir import RunDir, aggregate, find_runs

ACCURACY_COLUMNS = ("accuracy_last", "accuracy_test_selected", "accuracy_val_selected")
#: Recipe fields that do not change what is trained (provenance) or have their own column.
_NOT_A_VARIANT = {"reported", "source", "notes", "epochs", "paper", "dataset", "dataset_kwargs"}


# ---------------------------------------------------------------------------------------------
# Runs (read through ferlib.run_dir: find_runs, RunDir)
# ---------------------------------------------------------------------------------------------

def recipe_variant(recipe: dict) -> str:
    """How a run's recipe differs from its paper card for that dataset: ``"card"`` when it does not,
    else ``"model_kwargs.lam=0.6, lr=0.01"``; ``"no card"`` when the card or its dataset is gone."""
    from ferlib.recipes import load_recipe

    try:
        card = load_recipe(recipe["paper"], recipe["dataset"]).to_dict()
    except (FileNotFoundError, KeyError, TypeError):
        return "no card"
    diffs = []
    for key in sorted(set(recipe) | set(card)):
        if key in _NOT_A_VARIANT:
            continue
        mine, theirs = _plain(recipe.get(key)), _plain(card.get(key))
        if isinstance(mine, dict) or isinstance(theirs, dict):
            mine, theirs = mine or {}, theirs or {}
            for k in sorted(set(mine) | set(theirs)):
                if mine.get(k) != theirs.get(k):
                    diffs.append(f"{key}.{k}={_short(mine.get(k))}")
        elif mine != theirs:
            diffs.append(f"{key}={_short(mine)}")
    return ", ".join(diffs) if diffs else "card"


def _plain(v):
    """YAML round-trip form (tuples → lists) so a card and a saved recipe compare equal."""
    return json.loads(json.dumps(v, default=str))


def _short(v) -> str:
    return json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)


def read_run(run_dir, runs_dir=None) -> dict:
    """One run as a flat record: identity, recipe variant, epochs/steps and the three accuracies. A run another
    process is writing is ``status`` "in progress" (its last complete ``summary.json``, if any; never complete)."""
    run_dir = Path(run_dir)
    rd = RunDir(run_dir)
    in_progress = rd.in_progress()
    cfg = rd.config()
    try:
        summary = rd.summary()
    except FileNotFoundError:
        if not in_progress:
            raise
        summary = {}  # a fresh run's first epoch
    recipe = cfg.get("recipe", {})
    fit = cfg.get("fit", {})
    selected_on = summary.get("selected_on", "test_selected")
    last = (summary.get("last") or {}).get("accuracy", np.nan)
    sel = summary.get("selected") or {}
    tav = summary.get("test_at_val_selected") or {}
    by_test = selected_on == "test_selected"
    complete = summary.get("complete")
    if complete is None:  # runs written before summary.json recorded it
        complete = fit.get("max_steps") is None and summary.get("epochs_run") == recipe.get("epochs") \
            and not summary.get("stopped")
    complete = bool(complete) and not in_progress
    precision = summary.get("precision") or (cfg.get("resolved") or {}).get("precision")
    name = str(run_dir.relative_to(runs_dir)) if runs_dir is not None and run_dir.is_relative_to(runs_dir) else run_dir.name
    return {
        "run": name, "paper": recipe.get("paper"), "dataset": recipe.get("dataset"), "model": recipe.get("model"),
        "variant": recipe_variant(recipe) if recipe else "unknown", "seed": fit.get("seed"),
        "data": _short(recipe.get("dataset_kwargs") or {}) if recipe.get("dataset_kwargs") else "",
        "epochs": recipe.get("epochs"), "epochs_run": summary.get("epochs_run"), "steps": summary.get("steps"),
        "max_steps": fit.get("max_steps"), "precision": precision, "complete": bool(complete),
        "status": "in progress" if in_progress else "reproduction" if complete else "smoke", "selected_on": selected_on, "selected_epoch": summary.get("selected_epoch"),
        "accuracy_last": float(last) if by_test else np.nan,
        "accuracy_test_selected": float(sel.get("accuracy", np.nan)) if by_test else np.nan,
        "accuracy_val_selected": float(tav.get("accuracy", np.nan)) if not by_test else np.nan,
        "mean_class_accuracy": float((sel if by_test else tav).get("mean_class_accuracy", np.nan)),
        "parameters": (cfg.get("model") or {}).get("parameters"),
        "run_dir": str(run_dir),
    }


def runs_table(runs_dir) -> pd.DataFrame:
    """One row per run directory under ``runs_dir`` (see :func:`read_run`), runs still training included
    (``status`` "in progress", named in a printed line)."""
    rows = [read_run(d, Path(runs_dir)) for d in find_runs(runs_dir, in_progress=True)]
    busy = [r["run"] for r in rows if r["status"] == "in progress"]
    if busy:
        print(f"{len(busy)} run(s) still in progress, shown with their last complete summary: {', '.join(busy)}",
              flush=True)
    return pd.DataFrame(rows)


def summary_table(runs: pd.DataFrame,
                  keys=("paper", "dataset", "data", "variant", "epochs", "precision", "status")) -> pd.DataFrame:
    """Mean ± std over seeds of each accuracy column per (paper, dataset, data options, variant, epochs,
    precision, status): complete runs (``reproduction``) and runs cut short (``smoke``: ``max_steps``, a stop,
    fewer epochs than the recipe) are never averaged together.

    Columns ``<acc>_mean``, ``<acc>_std`` (ddof 1, NaN for one seed) and ``<acc>`` as text;
    ``n_seeds``; ``partial`` is True for smoke rows and runs still in progress.
    """
    if not runs.empty and "status" not in runs:  # a table made before runs recorded completeness
        done = runs["epochs_run"].astype(float) >= runs["epochs"].astype(float)
        runs = runs.assign(status=np.where(done, "reproduction", "smoke"))
    keys = [k for k in keys if runs.empty or k in runs]
    if runs.empty:
        return pd.DataFrame(columns=list(keys) + ["n_seeds", "partial"])
    runs = runs.assign(partial=runs["status"] != "reproduction")  # smoke, or a run still in progress
    return aggregate(runs, keys, ACCURACY_COLUMNS + ("mean_class_accuracy",), sort=True, any_of=("partial",))


# ---------------------------------------------------------------------------------------------
# Reported numbers
# ---------------------------------------------------------------------------------------------

def as_fraction(value: float) -> float:
    """An accuracy as a fraction: ``89.2`` (percent, as some cards write it) → 0.892."""
    value = float(value)
    return value / 100.0 if value > 1.0 else value


def reported_table(papers=None) -> pd.DataFrame:
    """Every ``reported:`` number of the recipe cards: paper, dataset, metric, value (accuracies as
    fractions), the card's epochs for that dataset and its ``source``."""
    from ferlib.recipes import list_recipes, load_card, load_recipe

    rows = []
    for paper in papers or list_recipes():
        card = load_card(paper)
        for dataset, entry in (card.get("datasets") or {}).items():
            rep = (entry or {}).get("reported") or {}
            epochs = load_recipe(paper, dataset).epochs
            for metric, value in rep.items():
                v = as_fraction(value) if metric.startswith("accuracy") else float(value)
                rows.append({"paper": paper, "dataset": dataset, "metric": metric, "value": v,
                             "card_epochs": epochs, "source": " ".join(str((entry or {}).get("source", "")).split())})
    return pd.DataFrame(rows, columns=["paper", "dataset", "metric", "value", "card_epochs", "source"])


def compare_to_reported(summary: pd.DataFrame, reported: pd.DataFrame | None = None,
                        metric: str = "accuracy") -> pd.DataFrame:
    """Our mean ± std next to each paper's reported ``metric`` and the gap (ours − reported, in
    percentage points) for each accuracy column. Card entries that have a number but no run appear
    with empty ours-columns; our runs without a reported number keep an empty reported column."""
    reported = reported_table() if reported is None else reported
    rep = reported[reported["metric"] == metric][["paper", "dataset", "value", "card_epochs", "source"]]
    rep = rep.rename(columns={"value": f"reported_{metric}"})
    ours = summary.copy()
    out = ours.merge(rep, on=["paper", "dataset"], how="outer")
    out["n_seeds"] = out["n_seeds"].fillna(0).astype(int)
    if "variant" in out:
        out["variant"] = out["variant"].fillna("not run")
    if "data" in out:
        out["data"] = out["data"].fillna("")
    for col in ACCURACY_COLUMNS:
        if f"{col}_mean" not in out:
            out[f"{col}_mean"] = np.nan
        out[f"gap_{col}_pp"] = 100.0 * (out[f"{col}_mean"] - out[f"reported_{metric}"])
        if "partial" in out:  # a smoke run is no reproduction: no gap to the paper's number
            out.loc[out["partial"].fillna(False).astype(bool), f"gap_{col}_pp"] = np.nan
        out[col] = out[col].fillna("–") if col in out else "–"
    if "status" in out:
        out["status"] = out["status"].fillna("not run")
    cols = ["paper", "dataset", "data", "variant", "epochs", "precision", "card_epochs", "n_seeds", "status", "partial",
            f"reported_{metric}"]
    for col in ACCURACY_COLUMNS:
        cols += [col, f"{col}_mean", f"{col}_std", f"gap_{col}_pp"]
    cols.append("source")
    return out[[c for c in cols if c in out]].sort_values(["paper", "dataset"], kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Cost: parameters and multiply-accumulates
# ---------------------------------------------------------------------------------------------

def measure_complexity(model, input_size: int | tuple, batch: int = 1) -> tuple[int, float]:
    """(parameters, MACs per image) of ``model`` on a [batch, 3, H, W] zero input.

    MACs = FLOPs / 2 as counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions,
    matrix products, attention); element-wise work (activations, norms, the selective scan's
    recurrence in pure PyTorch) is not counted, as in the usual GFLOPs/MACs tables.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    params = sum(p.numel() for p in model.parameters())
    was = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(batch, 3, h, w))
    model.train(was)
    return params, counter.get_total_flops() / 2.0 / batch


def params_in_forward(model, input_size: int | tuple) -> int:
    """Parameters a gradient reaches from the logits on a [2, 3, H, W] zero input (eval mode): the
    count a paper means by "parameters" when its code builds heads it never runs (FERMam's unused
    IR-50 and MobileFaceNet output layers). Frozen parameters count; ``requires_grad`` is restored."""
    import torch

    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    flags = [p.requires_grad for p in model.parameters()]
    was = model.training
    try:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(True)
            p.grad = None
        model(torch.zeros(2, 3, h, w)).logits.sum().backward()
        return sum(p.numel() for p in model.parameters() if p.grad is not None)
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
            p.grad = None
        model.train(was)


def complexity_table(papers=None, dataset: str = "rafdb", input_size: int | None = None, **model_overrides) -> pd.DataFrame:
    """Parameters (M: all, and those the forward reaches, :func:`params_in_forward`) and GMACs per image
    measured by ferlib for each paper's model (card settings for ``dataset``, or the card's first
    dataset), next to the card's reported ``params_m`` / ``gflops``/``gmacs`` when present. Papers whose
    model cannot be built are listed with the error."""
    from ferlib.models import create_model
    from ferlib.recipes import list_recipes, load_card, load_recipe

    rows = []
    for paper in papers or [p for p in list_recipes() if p != "baseline"]:
        card = load_card(paper)
        datasets = list(card.get("datasets") or {})
        ds = dataset if dataset in datasets else datasets[0]
        recipe = load_recipe(paper, ds)
        kw = {**recipe.model_kwargs, **model_overrides}
        rep = {}
        for entry in (card.get("datasets") or {}).values():
            rep.update({k: v for k, v in ((entry or {}).get("reported") or {}).items() if not k.startswith("accuracy")})
        size = input_size or recipe.input_size
        row = {"paper": paper, "model": recipe.model, "dataset": ds, "num_classes": recipe.num_classes,
               "input_size": size, "params_m": np.nan, "params_in_forward_m": np.nan, "gmacs": np.nan,
               "reported_params_m": rep.get("params_m", np.nan),
               "reported_gflops": rep.get("gflops", rep.get("gmacs", np.nan)), "error": ""}
        try:
            model = create_model(recipe.model, num_classes=recipe.num_classes, **kw)
            params, macs = measure_complexity(model, size)
            row.update(params_m=params / 1e6, params_in_forward_m=params_in_forward(model, size) / 1e6,
                       gmacs=macs / 1e9)
            del model
        except Exception as e:  # a model still being written must not hide the others
            row["error"] = f"{type(e).__name__}: {e}"
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Per-class accuracy
# ---------------------------------------------------------------------------------------------

def per_class_table(run_dirs, order_by_paper: bool = True) -> pd.DataFrame:
    """Per-class accuracy of each run's best model (``predictions.npz``), in the paper's class order."""
    from ferlib.labels import canonical_name
    from ferlib.recipes import paper_order

    frames = []
    for d in run_dirs:
        rec = read_run(d)
        p = RunDir(d).predictions()
        classes = [str(c) for c in p["classes"]]
        df = per_class_accuracy(p["logits"], p["targets"], classes)
        if order_by_paper and rec["paper"]:
            order = [canonical_name(n) for n in paper_order(rec["paper"], rec["dataset"], classes)]
            rank = {n: i for i, n in enumerate(order)}
            df = df.assign(_r=[rank.get(canonical_name(c), len(rank)) for c in df["class"]]).sort_values("_r", kind="stable")
            df = df.drop(columns="_r")
        frames.append(df.assign(run=Path(d).name, paper=rec["paper"], dataset=rec["dataset"], variant=rec["variant"],
                                seed=rec["seed"]))
    if not frames:
        return pd.DataFrame(columns=["run", "paper", "dataset", "variant", "seed", "class", "n", "accuracy"])
    out = pd.concat(frames, ignore_index=True)
    return out[["run", "paper", "dataset", "variant", "seed", "class", "n", "accuracy"]]


def smoke_flags(runs: pd.DataFrame) -> pd.Series:
    """True for each row of :func:`runs_table` that is not a complete run (a smoke run, cut short or in progress),
    so that a complete run can stand for its paper and variant before one; False for all in a table without
    ``complete``."""
    if "complete" not in runs:
        return pd.Series(False, index=runs.index)
    return ~runs["complete"].fillna(False).astype(bool)


def one_run_per_paper(runs: pd.DataFrame, dataset: str | None = None) -> list[str]:
    """Run directories, one per (paper, dataset): the card recipe when there is one, a complete run before a smoke
    run, then the lowest seed."""
    if runs.empty:
        return []
    sub = runs if dataset is None else runs[runs["dataset"] == dataset]
    sub = sub.assign(_card=sub["variant"] != "card", _smoke=smoke_flags(sub))
    sub = sub.sort_values(["paper", "dataset", "_card", "_smoke", "seed", "run"], kind="stable")
    return list(sub.groupby(["paper", "dataset"], sort=True).head(1)["run_dir"])


# ---------------------------------------------------------------------------------------------
# Cross-dataset evaluation through the canonical label order
# ---------------------------------------------------------------------------------------------

def cross_dataset_eval(run_dir, dataset: str, data_root=None, split: str | None = None, max_batches: int | None = None,
                       device: str = "auto", **dataset_kwargs) -> dict:
    """Evaluate a run's best model (``best.pt``) on another dataset's evaluation split through the
    canonical label order (see :func:`cross_dataset_accuracy`)."""
    from ferlib.data import dataset_info, dataset_root, load_dataset
    from ferlib.engine import load_run, predict

    model, recipe = load_run(run_dir)
    ds = load_dataset(dataset, dataset_root(dataset, data_root), split or dataset_info(dataset).eval_split,
                      **dataset_kwargs)
    source_classes = _run_classes(run_dir)
    pred = predict(model, ds, recipe, device=device, max_batches=max_batches, progress=False)
    res = cross_dataset_accuracy(pred["logits"], pred["targets"], source_classes, list(ds.classes))
    fmt = dataset_kwargs.get("fmt")
    return {"run": Path(run_dir).name, "paper": recipe.paper, "trained_on": recipe.dataset,
            "evaluated_on": dataset + (f" ({fmt} format)" if fmt else ""), "split": getattr(ds, "split", split), **res}


def _run_classes(run_dir) -> list[str]:
    rd = RunDir(run_dir)
    try:
        return [str(c) for c in rd.predictions()["classes"]]
    except FileNotFoundError:
        return list(rd.config()["data"]["train"]["classes"])


def cross_dataset_table(run_dirs, targets, max_batches: int | None = None) -> pd.DataFrame:
    """One row per (run, target): ``targets`` is a list of ``{"dataset": ..., "data_root": ..., **kwargs}``."""
    rows = []
    for d in run_dirs:
        for t in targets:
            t = dict(t)
            res = cross_dataset_eval(d, t.pop("dataset"), t.pop("data_root", None), t.pop("split", None),
                                     max_batches=max_batches, **t)
            res = {k: (", ".join(v) if isinstance(v, list) else v) for k, v in res.items() if k != "per_class_accuracy"}
            rows.append(res)
    return pd.DataFrame(rows)


def save_table(df: pd.DataFrame, name: str, tables_dir=None) -> Path:
    """Write ``df`` to ``<tables_dir>/<name>.csv`` (default ``results/tables``); returns the path."""
    from ferlib.paths import results_dir

    out = Path(tables_dir) if tables_dir else results_dir() / "tables"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.csv"
    df.to_csv(path, index=False)
    return path
