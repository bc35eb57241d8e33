"""``report_run``: what a training notebook shows after ``train()`` — curves, confusion matrix, t-SNE and
the accuracy next to the card's reported number, labelled with precision and completeness."""
from __future__ import annotations


def run_status(summary: dict) -> str:
    """"complete run" or what cut the run short (a smoke run is never a reproduction)."""
    if summary.get("complete"):
        return "complete run"
    why = ", ".join(summary.get("limited_by") or ["unknown"])
    return (f"INCOMPLETE run ({why}: {summary.get('steps_run')} of {summary.get('steps_planned')} optimiser steps), "
            f"a smoke run, not a reproduction")


def report_run(run, order=None, tsne: bool = False, tsne_title: str | None = None) -> None:
    """Draw a finished run's figures and print its accuracy; a dry-run plan (a dict) is only acknowledged.

    ``run``: a :class:`ferlib.engine.RunResult`; ``order``: class order of the confusion matrix (default
    the paper's order for the dataset, its card's ``class_order``; the data's own order where the paper
    has none, and for your folders); ``tsne``: also the t-SNE of the features.
    """
    if isinstance(run, dict):
        print(f"dry run: nothing was trained; the plan is in {run['run_dir']}/plan.json")
        return
    from . import plot_confusion, plot_curves, plot_tsne

    if order is None and run.recipe.dataset != "imagefolder":
        from ferlib.recipes import class_order

        order = class_order(run.recipe.paper, run.recipe.dataset)  # None: the data's own order
    plot_curves(run.run_dir)
    plot_confusion(run.run_dir, order=order)
    if tsne:
        plot_tsne(run.run_dir, title=tsne_title)
    s = run.summary
    reported = run.recipe.reported or "none recorded for this dataset (see the card)"
    print(f"accuracy {run.metrics['accuracy']:.4f} (epoch selected on {s.get('selected_on')}, {s.get('precision')}); "
          f"{run_status(s)}; reported: {reported}")
    print("run directory:", run.run_dir)
