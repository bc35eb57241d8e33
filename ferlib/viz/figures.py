"""Every figure of notebook 09 from run directories alone, saved as PNG + SVG under
``results/figures`` with names that say what they show:

``confusion_<paper>_<dataset>__<run>``      row-normalised confusion matrix in the paper's class order
``curves_<paper>_<dataset>__<run>``         train loss, train / evaluation accuracy per epoch
``tsne_<paper>_<dataset>__<run>``           t-SNE of the best model's test features (one per paper)
``tsne_mfer_feature_loss_<dataset>``        MFER's three panels: no feature loss, LGM, DSF (approx.)
``per_class_accuracy_<dataset>``            per-class accuracy bars of one run per paper
"""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ferlib.metrics import hard_targets

from .confusion import plot_confusion
from .curves import plot_curves
from .io import load_predictions, save_figure
from .tsne import plot_tsne

#: Panel titles of MFER's feature-loss comparison (README figures), keyed by ``loss_kwargs.feature_loss``.
MFER_PANELS = {None: "without feature loss", "lgm": "with LGM loss", "dsf": "with DSF loss (our approximation)"}


def _slug(text) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", str(text)).strip("_") or "x"


def default_figures_dir() -> Path:
    from ferlib.paths import results_dir

    return results_dir() / "figures"


def run_info(run_dir) -> dict:
    from ferlib.results import read_run

    return read_run(run_dir)


def _stem(kind: str, info: dict) -> str:
    """File name with a ``.png`` suffix, so that dots in a run's name survive ``save_figure``."""
    return f"{kind}_{_slug(info['paper'])}_{_slug(info['dataset'])}__{_slug(Path(info['run_dir']).name)}.png"


def class_order(paper: str, dataset: str, classes) -> list[int]:
    """Indices of ``classes`` (a run's class names) in ``paper``'s order for ``dataset``
    (``ferlib.recipes.paper_order``: the card's ``class_order``); classes the order does not name follow at the end."""
    from ferlib.labels import canonical_name
    from ferlib.recipes import paper_order

    mine = [canonical_name(str(c)) for c in classes]
    order = [mine.index(canonical_name(n)) for n in paper_order(paper, dataset, classes) if canonical_name(n) in mine]
    return order + [i for i in range(len(mine)) if i not in order]


def confusion_in_paper_order(run_dir, out_dir=None) -> tuple[plt.Figure, list[Path]]:
    """Confusion matrix of a run's best model, classes in its paper's order, saved under ``out_dir``."""
    info = run_info(run_dir)
    p = load_predictions(run_dir)
    classes = [str(c) for c in p["classes"]]
    order = class_order(info["paper"], info["dataset"], classes)
    acc = float((p["logits"].argmax(1) == hard_targets(p["targets"])).mean())
    sel = "epoch chosen on the test split" if info["selected_on"] == "test_selected" else "epoch chosen on validation"
    title = f"{info['paper']} on {info['dataset']}: accuracy {acc:.3f}\n({sel}; {info['paper']}'s class order)"
    path = Path(out_dir or default_figures_dir()) / _stem("confusion", info)
    fig = plot_confusion(logits=p["logits"], targets=p["targets"], classes=classes, order=order, title=title)
    return fig, save_figure(fig, path)


def training_curves(run_dir, out_dir=None) -> tuple[plt.Figure, list[Path]]:
    info = run_info(run_dir)
    path = Path(out_dir or default_figures_dir()) / _stem("curves", info)
    fig = plot_curves(run_dir, save_to=path)
    fig.suptitle(f"{info['paper']} on {info['dataset']} ({info['variant'][:80]})", fontsize=9, y=1.02)
    return fig, save_figure(fig, path)


def tsne_panels(runs: dict, path, title: str | None = None, seed: int = 0, max_points: int = 2000):
    """Side-by-side t-SNE panels, one per ``{panel title: run_dir}``; saved to ``path`` (.png/.svg)."""
    fig, axes = plt.subplots(1, len(runs), figsize=(5.2 * len(runs), 4.6), squeeze=False)
    for ax, (label, run_dir) in zip(axes[0], runs.items()):
        p = load_predictions(run_dir)
        plot_tsne(features=p["features"], targets=p["targets"], classes=[str(c) for c in p["classes"]],
                  title=label, ax=ax, seed=seed, max_points=max_points)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    files = save_figure(fig, path)
    return fig, files


def mfer_feature_loss_runs(runs_dir, dataset: str | None = None) -> dict:
    """One MFER run per feature loss (none / LGM / DSF), lowest seed first: ``{panel title: run_dir}``."""
    from ferlib.results import find_runs, read_config

    found: dict = {}
    for d in find_runs(runs_dir):
        recipe = read_config(d).get("recipe", {})
        if recipe.get("paper") != "mfer" or (dataset and recipe.get("dataset") != dataset):
            continue
        fl = (recipe.get("loss_kwargs") or {}).get("feature_loss")
        fl = None if fl in ("none", "") else fl
        seed = (read_config(d).get("fit") or {}).get("seed", 0)
        if fl in MFER_PANELS and (fl not in found or seed < found[fl][0]):
            found[fl] = (seed, d)
    return {MFER_PANELS[k]: found[k][1] for k in MFER_PANELS if k in found}


def representative_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """One run per (paper, dataset, variant): the lowest seed (then name)."""
    if runs.empty:
        return runs
    return (runs.sort_values(["paper", "dataset", "variant", "seed", "run"], kind="stable")
            .groupby(["paper", "dataset", "variant"], sort=False).head(1).reset_index(drop=True))


def per_class_bars(run_dirs: dict, path, title: str | None = None):
    """Per-class accuracy bars, one colour per ``{label: run_dir}``, classes in the first run's paper order."""
    import seaborn as sns

    from ferlib.results import per_class_table

    frames = []
    for label, d in run_dirs.items():
        frames.append(per_class_table([d]).assign(label=label))
    df = pd.concat(frames, ignore_index=True)
    order = list(dict.fromkeys(df["class"]))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(order) + 1.5), 3.6))
    sns.barplot(data=df, x="class", y="accuracy", hue="label", order=order, ax=ax)
    ax.set_ylim(0, 1)
    ax.set_xlabel("")
    ax.set_ylabel("per-class accuracy")
    ax.set_title(title or "per-class accuracy")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig, save_figure(fig, path)


def make_figures(runs_dir=None, out_dir=None, tsne: bool = True, curves: bool = True, confusion: bool = True,
                 per_class: bool = True, max_points: int = 2000) -> pd.DataFrame:
    """Draw every figure of the module docstring from the runs under ``runs_dir``; one row per figure
    (kind, paper, dataset, run, png, svg). t-SNE: one per paper (its card run when there is one) and
    MFER's feature-loss triple per dataset."""
    from ferlib.paths import results_dir
    from ferlib.results import runs_table

    runs_dir = Path(runs_dir) if runs_dir else results_dir() / "runs"
    out_dir = Path(out_dir) if out_dir else default_figures_dir()
    runs = runs_table(runs_dir)
    rows = []

    def add(kind, files, paper="", dataset="", run=""):
        rows.append({"kind": kind, "paper": paper, "dataset": dataset, "run": run,
                     "png": str(files[0]), "svg": str(files[1])})

    if not runs.empty:  # runs written by an older engine without a recipe or predictions cannot be drawn
        runs = runs[runs["paper"].notna() & runs["run_dir"].map(lambda d: (Path(d) / "predictions.npz").exists())]
    if runs.empty:
        return pd.DataFrame(rows, columns=["kind", "paper", "dataset", "run", "png", "svg"])
    reps = representative_runs(runs)
    for r in reps.itertuples():
        for flag, kind, fn in ((confusion, "confusion", confusion_in_paper_order), (curves, "curves", training_curves)):
            if flag:
                fig, files = fn(r.run_dir, out_dir)
                plt.close(fig)
                add(kind, files, r.paper, r.dataset, r.run)
    if tsne:
        for (paper, dataset), grp in reps.groupby(["paper", "dataset"], sort=True):
            pick = grp[grp["variant"] == "card"]
            r = (pick if len(pick) else grp).iloc[0]
            info = run_info(r.run_dir)
            fig, files = tsne_panels({f"{paper} on {dataset} ({r.variant})": r.run_dir}, out_dir / _stem("tsne", info),
                                     max_points=max_points)
            plt.close(fig)
            add("tsne", files, paper, dataset, r.run)
        for dataset in sorted(runs.loc[runs["paper"] == "mfer", "dataset"].unique()):
            panels = mfer_feature_loss_runs(runs_dir, dataset)
            if panels:
                fig, files = tsne_panels(panels, out_dir / f"tsne_mfer_feature_loss_{_slug(dataset)}.png",
                                         title=f"MFER on {dataset}: test features", max_points=max_points)
                plt.close(fig)
                add("tsne_mfer_feature_loss", files, "mfer", dataset)
    if per_class:
        for dataset, grp in reps.groupby("dataset", sort=True):
            chosen = {}
            for paper, g in grp.groupby("paper", sort=True):
                pick = g[g["variant"] == "card"]
                r = (pick if len(pick) else g).iloc[0]
                chosen[f"{paper} ({r.variant[:40]})" if r.variant != "card" else paper] = r.run_dir
            fig, files = per_class_bars(chosen, out_dir / f"per_class_accuracy_{_slug(dataset)}.png",
                                        title=f"per-class accuracy on {dataset} (best epoch of each run)")
            plt.close(fig)
            add("per_class_accuracy", files, "", dataset)
    return pd.DataFrame(rows)
