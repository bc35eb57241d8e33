"""Every figure of notebook 09 from run directories alone, saved as PNG + SVG under
``results/figures`` with names that say what they show:

``confusion_<paper>_<dataset>__<run>``      row-normalised confusion matrix in the paper's class order
``curves_<paper>_<dataset>__<run>``         train loss, train / evaluation accuracy per epoch
``tsne_<paper>_<dataset>__<run>``           t-SNE of the best model's test features (one per paper)
``tsne_mfer_feature_loss_<dataset>``        MFER's panels side by side on shared axes: no feature loss, LGM, DSF
                                            (approx.), each with its silhouette score
``per_class_accuracy_<dataset>``            per-class accuracy bars of one run per paper, correct / images on each
``index.html``                              the gallery of the folder (:mod:`ferlib.viz.gallery`)

Every title carries its runs' caption (:mod:`ferlib.viz.captions`): synthetic or real data, seeds, smoke or
complete run, and the selection rule.
"""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ferlib.metrics import hard_targets
from ferlib.run_dir import RunDir, find_runs

from .captions import run_caption, runs_caption, wrap
from .confusion import plot_confusion
from .curves import plot_curves
from .io import save_figure
from .tsne import plot_tsne

#: Panel titles of MFER's feature-loss comparison (README figures), keyed by ``loss_kwargs.feature_loss``.
MFER_PANELS = {None: "without feature loss", "lgm": "with LGM loss", "dsf": "with DSF loss (our approximation)"}


def _slug(text) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", str(text)).strip("_") or "x"


def default_figures_dir() -> Path:
    from ferlib.paths import results_dir

    return results_dir() / "figures"


def run_info(run_dir) -> dict:
    from ferlib.tables import read_run

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
    p = RunDir(run_dir).predictions()
    classes = [str(c) for c in p["classes"]]
    order = class_order(info["paper"], info["dataset"], classes)
    acc = float((p["logits"].argmax(1) == hard_targets(p["targets"])).mean())
    title = (f"{info['paper']} on {info['dataset']}: accuracy {acc:.3f} on {len(p['targets'])} images\n"
             f"(rate of the row, count under it; {info['paper']}'s class order)")
    path = Path(out_dir or default_figures_dir()) / _stem("confusion", info)
    fig = plot_confusion(logits=p["logits"], targets=p["targets"], classes=classes, order=order, title=title,
                         caption=run_caption(run_dir))
    return fig, save_figure(fig, path)


def training_curves(run_dir, out_dir=None) -> tuple[plt.Figure, list[Path]]:
    info = run_info(run_dir)
    path = Path(out_dir or default_figures_dir()) / _stem("curves", info)
    fig = plot_curves(run_dir, save_to=path)
    fig.suptitle(f"{info['paper']} on {info['dataset']} ({info['variant'][:80]})\n{wrap(run_caption(run_dir), 110)}",
                 fontsize=9, y=1.08)
    return fig, save_figure(fig, path)


def tsne_panels(runs: dict, path, title: str | None = None, seed: int = 0, max_points: int = 2000):
    """Side-by-side t-SNE panels on shared axes, one per ``{panel title: run_dir}``: each embedding centred and
    scaled to a unit standard deviation, each title with its silhouette score, number of points and its run's
    caption (seed, smoke/complete, selection); saved to ``path`` (.png/.svg)."""
    fig, axes = plt.subplots(1, len(runs), figsize=(5.6 * len(runs), 5.6), squeeze=False, sharex=True, sharey=True)
    for ax, (label, run_dir) in zip(axes[0], runs.items()):
        p = RunDir(run_dir).predictions()
        plot_tsne(features=p["features"], targets=p["targets"], classes=[str(c) for c in p["classes"]],
                  title=label, ax=ax, seed=seed, max_points=max_points, caption=run_caption(run_dir),
                  normalise=len(runs) > 1)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    files = save_figure(fig, path)
    return fig, files


def mfer_feature_loss_runs(runs_dir, dataset: str | None = None) -> dict:
    """One MFER run per feature loss (none / LGM / DSF), lowest seed first, all from runs trained alike but for the
    feature loss (the same recipe and step budget: one sweep): ``{panel title: run_dir}``."""
    import json

    groups: dict = {}  # runs trained alike but for the feature loss (one sweep): {budget: {feature loss: (seed, dir)}}
    for d in find_runs(runs_dir):
        cfg = RunDir(d).config()
        recipe = cfg.get("recipe", {})
        if recipe.get("paper") != "mfer" or (dataset and recipe.get("dataset") != dataset):
            continue
        loss_kwargs = dict(recipe.get("loss_kwargs") or {})
        fl = loss_kwargs.pop("feature_loss", None)
        fl = None if fl in ("none", "") else fl
        seed = (cfg.get("fit") or {}).get("seed", 0)
        same = {k: v for k, v in recipe.items() if k not in ("loss_kwargs", "notes", "source", "reported")}
        budget = json.dumps([same, loss_kwargs, (cfg.get("fit") or {}).get("max_steps")], sort_keys=True, default=str)
        found = groups.setdefault(budget, {})
        if fl in MFER_PANELS and (fl not in found or seed < found[fl][0]):
            found[fl] = (seed, d)
    if not groups:
        return {}
    found = max(groups.values(), key=len)  # the sweep with the most feature losses: a like-for-like comparison
    return {MFER_PANELS[k]: found[k][1] for k in MFER_PANELS if k in found}


def representative_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """One run per (paper, dataset, variant): a complete run before a smoke run (an ablation's short run at the
    card's value is variant ``card`` too), then the lowest seed, then the name."""
    if runs.empty:
        return runs
    from ferlib.tables import smoke_flags

    runs = runs.assign(_smoke=smoke_flags(runs))
    return (runs.sort_values(["paper", "dataset", "variant", "_smoke", "seed", "run"], kind="stable")
            .groupby(["paper", "dataset", "variant"], sort=False).head(1).drop(columns="_smoke").reset_index(drop=True))


def per_class_bars(run_dirs: dict, path, title: str | None = None):
    """Per-class accuracy bars, one colour per ``{label: run_dir}``, classes in the first run's paper order; each
    bar labelled with its correct / test images of the class, a class without test images marked "no samples";
    the runs' caption (data, seeds, smoke/complete, selection) under the title."""
    import seaborn as sns

    from ferlib.tables import per_class_table

    frames = []
    for label, d in run_dirs.items():
        frames.append(per_class_table([d]).assign(label=label))
    df = pd.concat(frames, ignore_index=True)
    df["correct"] = (df["accuracy"].fillna(0) * df["n"]).round().astype(int)
    order = list(dict.fromkeys(df["class"]))
    labels = list(run_dirs)
    fig, ax = plt.subplots(figsize=(max(6.0, (0.45 + 0.45 * len(labels)) * len(order) + 1.5), 4.2))
    sns.barplot(data=df, x="class", y="accuracy", hue="label", order=order, hue_order=labels, ax=ax)
    width = 0.8 / len(labels)
    for k, label in enumerate(labels):
        rows = df[df["label"] == label].set_index("class")
        for i, c in enumerate(order):
            if c not in rows.index:
                continue
            r = rows.loc[c]
            x = i - 0.4 + width * (k + 0.5)
            text = "no samples" if r["n"] == 0 else f"{int(r['correct'])}/{int(r['n'])}"
            ax.text(x, (0 if r["n"] == 0 else r["accuracy"]) + 0.02, text, ha="center", va="bottom", fontsize=6,
                    rotation=90, style="italic" if r["n"] == 0 else "normal")
    ax.set_ylim(0, 1.15)
    ax.set_xlabel("")
    ax.set_ylabel("per-class accuracy (correct / test images)")
    ax.set_title((title or "per-class accuracy") + f"\n{wrap(runs_caption(list(run_dirs.values())), 110)}", fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig, save_figure(fig, path)


#: Columns of :func:`make_figures`' table (``runs``: the run directories a figure was drawn from).
FIGURE_COLUMNS = ["kind", "paper", "dataset", "run", "png", "svg", "title", "caption", "runs"]


def make_figures(runs_dir=None, out_dir=None, tsne: bool = True, curves: bool = True, confusion: bool = True,
                 per_class: bool = True, max_points: int = 2000, gallery: bool = True) -> pd.DataFrame:
    """Draw every figure of the module docstring from the runs under ``runs_dir``; one row per figure
    (:data:`FIGURE_COLUMNS`: kind, paper, dataset, run, png, svg, title, caption, runs). t-SNE: one per paper (its
    card run when there is one) and MFER's feature-loss comparison per dataset. ``gallery``: also write
    ``<out_dir>/index.html`` (:func:`ferlib.viz.gallery.write_gallery`: every figure of ``out_dir`` with its
    caption, its runs and their summaries)."""
    from ferlib.paths import results_dir
    from ferlib.tables import runs_table

    runs_dir = Path(runs_dir) if runs_dir else results_dir() / "runs"
    out_dir = Path(out_dir) if out_dir else default_figures_dir()
    runs = runs_table(runs_dir)
    rows = []

    def add(kind, files, run_dirs, title, paper="", dataset="", run=""):
        rows.append({"kind": kind, "paper": paper, "dataset": dataset, "run": run, "png": str(files[0]),
                     "svg": str(files[1]), "title": title, "caption": runs_caption([str(d) for d in run_dirs]),
                     "runs": [str(d) for d in run_dirs]})

    if not runs.empty:  # runs written by an older engine without a recipe or predictions cannot be drawn
        runs = runs[runs["paper"].notna() & runs["run_dir"].map(lambda d: (Path(d) / "predictions.npz").exists())]
    if runs.empty:
        table = pd.DataFrame(rows, columns=FIGURE_COLUMNS)
        if gallery:
            from .gallery import write_gallery

            write_gallery(out_dir, table)
        return table
    reps = representative_runs(runs)
    for r in reps.itertuples():
        for flag, kind, fn, what in ((confusion, "confusion", confusion_in_paper_order, "confusion matrix"),
                                     (curves, "curves", training_curves, "training curves")):
            if flag:
                fig, files = fn(r.run_dir, out_dir)
                plt.close(fig)
                add(kind, files, [r.run_dir], f"{r.paper} on {r.dataset} ({r.variant[:60]}): {what}", r.paper,
                    r.dataset, r.run)
    if tsne:
        for (paper, dataset), grp in reps.groupby(["paper", "dataset"], sort=True):
            pick = grp[grp["variant"] == "card"]
            r = (pick if len(pick) else grp).iloc[0]
            info = run_info(r.run_dir)
            fig, files = tsne_panels({f"{paper} on {dataset} ({r.variant})": r.run_dir}, out_dir / _stem("tsne", info),
                                     max_points=max_points)
            plt.close(fig)
            add("tsne", files, [r.run_dir], f"{paper} on {dataset}: t-SNE of the test features", paper, dataset, r.run)
        for dataset in sorted(runs.loc[runs["paper"] == "mfer", "dataset"].unique()):
            panels = mfer_feature_loss_runs(runs_dir, dataset)
            if panels:
                missing = [t for t in MFER_PANELS.values() if t not in panels]
                note = (f"\n(no run {' / '.join(missing)} yet: notebook 08 with -p grid mfer_feature_loss trains them)"
                        if missing else "")
                title = f"MFER on {dataset}: test features, silhouette of the features by true class{note}"
                fig, files = tsne_panels(panels, out_dir / f"tsne_mfer_feature_loss_{_slug(dataset)}.png",
                                         title=title, max_points=max_points)
                plt.close(fig)
                add("tsne_mfer_feature_loss", files, list(panels.values()),
                    f"MFER on {dataset}: {', '.join(panels)} (t-SNE, shared axes)", "mfer", dataset)
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
            add("per_class_accuracy", files, list(chosen.values()), f"per-class accuracy on {dataset}", "", dataset)
    table = pd.DataFrame(rows, columns=FIGURE_COLUMNS)
    drawn_kinds = [k for flag, kinds in ((confusion, ("confusion",)), (curves, ("curves",)),
                                         (tsne, ("tsne", "tsne_mfer_feature_loss")),
                                         (per_class, ("per_class_accuracy",))) if flag for k in kinds]
    drop_stale_figures(out_dir, table, runs_dir, drawn_kinds)
    if gallery:
        from .gallery import write_gallery

        write_gallery(out_dir, table)
    return table


def drop_stale_figures(out_dir, table: pd.DataFrame, runs_dir, kinds) -> list[Path]:
    """Delete the figures of ``out_dir`` that an earlier :func:`make_figures` drew from runs under ``runs_dir`` and
    this one did not (``table``): their runs were deleted, or another run now stands for their paper and variant.
    Only ``kinds`` (those drawn this time) are touched, and only figures whose saved caption lists their runs, all
    under ``runs_dir``; figures from other runs folders, an ablation's and unknown files stay. Returns the PNGs
    removed (their SVG and caption go with them)."""
    import json

    from .gallery import caption_path

    root = Path(runs_dir).resolve()
    drawn = {Path(p).name for p in table["png"]}
    removed = []
    for png in sorted(Path(out_dir).glob("*.png")):
        meta_path = caption_path(png)
        if png.name in drawn or not meta_path.exists():
            continue
        meta = json.loads(meta_path.read_text())
        runs = [Path(r).resolve() for r in meta.get("runs") or []]
        if meta.get("kind") not in kinds or not runs or not all(r.is_relative_to(root) for r in runs):
            continue
        for f in (png, png.with_suffix(".svg"), meta_path):
            f.unlink(missing_ok=True)
        removed.append(png)
    if removed:
        print(f"removed {len(removed)} figure(s) no longer drawn from {runs_dir}: "
              f"{', '.join(p.name for p in removed)}", flush=True)
    return removed
