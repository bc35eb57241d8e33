"""What a figure was drawn from, in words: the data (synthetic or real), the seed, whether the run was a smoke run
or complete, and how its epoch was selected — read from the run directory (:class:`ferlib.run_dir.RunDir`:
``config.yaml`` and ``summary.json``). Every figure of :mod:`ferlib.viz.figures` carries this in its title, and
the gallery (:mod:`ferlib.viz.gallery`) beside it."""
from __future__ import annotations

from pathlib import Path

from ferlib.run_dir import RunDir


def data_kind(dataset: str | None) -> str:
    """``synthetic data`` for a generated set, ``your own data`` for ``imagefolder``, else ``real data``."""
    from ferlib.data import dataset_info, list_datasets

    if not dataset or dataset not in list_datasets():
        return "unknown data"
    info = dataset_info(dataset)
    if info.generated:
        return "synthetic data"
    return "your own data" if info.label_set is None else "real data"


def run_facts(run_dir) -> dict:
    """``{dataset, data, seed, status, selection, eval_images, eval_split, accuracy}`` of one run, as text or numbers."""
    rd = RunDir(run_dir)
    cfg = rd.config()
    try:
        summary = rd.summary()
    except (FileNotFoundError, ValueError):
        summary = {}
    recipe, fit, data = cfg.get("recipe") or {}, cfg.get("fit") or {}, cfg.get("data") or {}
    if summary.get("complete"):
        status = "complete run"
    elif summary:
        why = ", ".join(summary.get("limited_by") or ["cut short"])
        done, planned = summary.get("steps_run", summary.get("steps")), summary.get("steps_planned")
        status = f"smoke run ({why}: {done} of {planned} steps)" if planned else f"smoke run ({why})"
    else:
        status = "unfinished run"
    selected_on = summary.get("selected_on") or (data.get("eval") or {}).get("selected_on") or "test_selected"
    epoch = summary.get("selected_epoch")
    at = f"epoch {epoch} of {summary.get('epochs_run')}" if epoch is not None else "the epoch"
    selection = (f"{at} selected on the test split (as the authors' code)" if selected_on == "test_selected"
                 else f"{at} selected on a held-out validation split")
    sel = (summary.get("test_at_val_selected") if selected_on != "test_selected" else summary.get("selected")) or {}
    split_n = (data.get("eval") or {}).get("n")
    n = sel.get("n", split_n)  # a smoke run's max_steps also limits the evaluation batches
    images = f"{n} of {split_n}" if n is not None and split_n is not None and n < split_n else n
    return {"dataset": recipe.get("dataset"), "data": data_kind(recipe.get("dataset")), "seed": fit.get("seed"),
            "status": status, "selection": selection, "eval_images": images,
            "eval_split": (data.get("eval") or {}).get("split"), "accuracy": sel.get("accuracy"),
            "paper": recipe.get("paper"), "run": Path(run_dir).name}


def run_caption(run_dir) -> str:
    """One line: ``synthetic data (synthetic), seed 0, smoke run (max_steps: 20 of 375 steps), epoch 1 of 1
    selected on the test split (as the authors' code), 600 test images``."""
    f = run_facts(run_dir)
    images = f", {f['eval_images']} {f['eval_split'] or 'evaluation'} images" if f["eval_images"] else ""
    return f"{f['data']} ({f['dataset']}), seed {f['seed']}, {f['status']}, {f['selection']}{images}"


def runs_caption(run_dirs) -> str:
    """The caption of several runs drawn together: what they share once, then each run's seed and status."""
    facts = [run_facts(d) for d in run_dirs]
    if not facts:
        return ""
    if len(facts) == 1:
        return run_caption(run_dirs[0])
    shared = [k for k in ("data", "dataset", "status", "selection") if len({f[k] for f in facts}) == 1]
    head = ", ".join(f"{facts[0]['data']} ({facts[0]['dataset']})" if k == "data" else facts[0][k]
                     for k in shared if k != "dataset")
    seeds = sorted({f["seed"] for f in facts}, key=str)
    rest = [f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"]
    for k in ("data", "status", "selection"):
        if k not in shared:
            rest.append("; ".join(f"{f['run']}: {f[k]}" for f in facts))
    return ", ".join([head] + rest) if head else ", ".join(rest)


def wrap(text: str, width: int = 110) -> str:
    """``text`` broken into lines of at most ``width`` characters (a figure title stays inside the figure)."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) if text else ""
