"""Reusing a finished run: what ``train(reuse=True)`` does (the notebooks' default, so that ``make notebooks``
can run again).

A run directory holds a *finished* run when its ``summary.json`` exists, the run was not stopped, and it ran
what it planned: every epoch of its recipe, or ``max_steps`` optimiser steps for a smoke run. Such a run is
reused when its settings equal the ones asked for now: the resolved recipe (provenance text aside), the seed,
the step budget, the selection split and the starting weights (:func:`run_settings`). When they differ,
:class:`RecipeChangedError` names each differing setting and the choices, in one line.

Both errors here render as that one line in a notebook (IPython's ``_render_traceback_``), not as a traceback:
the message is the whole answer.
"""
from __future__ import annotations

import json
from pathlib import Path

from ferlib.runs import RunDir

from .loop import SAFE_ON_RESUME, RunExistsError

#: Recipe fields that are provenance text: a card's wording changing does not make another run.
PROVENANCE = ("notes", "source", "reported", "pretrained_note")

#: The fit settings (config.yaml ``fit``) that make another run.
FIT_SETTINGS = ("seed", "max_steps", "selected_on", "accumulate", "ema", "eval_tta")


class _OneLine:
    """In a notebook, IPython shows ``_render_traceback_()`` instead of the traceback."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class RecipeChangedError(_OneLine, RunExistsError):
    """The run directory holds a finished run made with other settings (nothing was touched)."""


class UnfinishedRunError(_OneLine, RunExistsError):
    """The run directory holds a run that did not finish (nothing was touched)."""


def _plain(obj):
    return json.loads(json.dumps(obj, default=str))


def run_settings(recipe, start=(), seed: int = 0, max_steps: int | None = None, selected_on: str = "test_selected",
                 fit_options: dict | None = None) -> dict:
    """What makes a run this run: ``{"recipe": {...}, "fit": {...}, "start": [...]}`` in config.yaml's form
    (``start``: the starting-weights items' ``to_dict()``)."""
    fit = {"seed": seed, "max_steps": max_steps, "selected_on": selected_on, "accumulate": 1, "ema": None,
           "eval_tta": False}
    fit.update({k: v for k, v in (fit_options or {}).items() if k in FIT_SETTINGS})
    recipe = {k: v for k, v in recipe.to_dict().items() if k not in PROVENANCE}
    return _plain({"recipe": recipe, "fit": fit, "start": [dict(i) for i in start]})


def stored_settings(run_dir) -> dict:
    """:func:`run_settings` of the run in ``run_dir``, read from its ``config.yaml``."""
    cfg = RunDir(run_dir).config()
    recipe = {k: v for k, v in (cfg.get("recipe") or {}).items() if k not in PROVENANCE}
    fit = {k: (cfg.get("fit") or {}).get(k) for k in FIT_SETTINGS}
    return _plain({"recipe": recipe, "fit": fit, "start": (cfg.get("plan") or {}).get("start") or []})


def differences(old: dict, new: dict) -> list[tuple[str, object, object]]:
    """``(name, value in the run, value now)`` of every setting that differs (recipe fields by their name)."""
    out = []
    for part in ("recipe", "fit"):
        for k in sorted(set(old.get(part, {})) | set(new.get(part, {}))):
            a, b = old.get(part, {}).get(k), new.get(part, {}).get(k)
            if a != b:
                out.append((k, a, b))
    if old.get("start") != new.get("start"):
        names = lambda items: [i.get("weights") for i in items] or "random init"  # noqa: E731
        out.append(("pretrained", names(old.get("start") or []), names(new.get("start") or [])))
    return out


def is_finished(summary: dict) -> bool:
    """A run's ``summary.json`` shows that it ran what it planned (all epochs, or its ``max_steps``)."""
    if not summary or summary.get("stopped"):
        return False
    if int(summary.get("epochs_run") or 0) >= int(summary.get("epochs_planned") or 1 << 30):
        return True
    budget = summary.get("max_steps")
    return budget is not None and int(summary.get("steps_run") or summary.get("steps") or 0) >= int(budget)


def _summary(rd: RunDir) -> dict:
    try:
        return rd.summary()
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def reusable_run(run_dir, settings: dict, resume: bool = False, overwrite: bool = False) -> dict | None:
    """The summary of the finished run in ``run_dir`` when its settings equal ``settings``; None when the folder
    holds no run, or when ``resume`` / ``overwrite`` decide what happens to it. Raises
    :class:`RecipeChangedError` (a finished run with other settings) or :class:`UnfinishedRunError` (a run that
    did not finish) otherwise. Reads only."""
    rd = RunDir(run_dir)
    if not rd.files:
        return None
    summary = _summary(rd)
    finished = is_finished(summary) and (rd / "predictions.npz").exists() and (rd / "best.pt").exists()
    diffs = differences(stored_settings(run_dir), settings) if finished else None
    if finished and not diffs:
        return summary
    if resume or overwrite:
        return None
    if not finished:
        raise UnfinishedRunError(
            f"{run_dir} holds a run that did not finish; nothing was changed. Choose: continue it with "
            f"-p resume True (resume=True), replace it with -p overwrite True (overwrite=True), or train into "
            f"another -p run_name.")
    said = "; ".join(f"{k}: {a!r} in that run, {b!r} now" for k, a, b in diffs)
    resumable = all(k in SAFE_ON_RESUME or k == "max_steps" for k, _, _ in diffs)
    choices = (["continue it with -p resume True (resume=True)"] if resumable else []) + [
        "replace it with -p overwrite True (overwrite=True)", "keep it and train into another -p run_name"]
    raise RecipeChangedError(f"{run_dir} holds a finished run with other settings ({said}); nothing was changed. "
                             f"Choose: {', '.join(choices[:-1])}, or {choices[-1]}.")


def reuse_message(run_dir, summary: dict) -> str:
    """``already complete: reusing <run_dir> (…)``: what a reused run printed when it was trained."""
    sel = (summary.get("selected") or {}).get("accuracy")
    acc = f", accuracy {sel:.4f} selected on {summary.get('selected_on')}" if sel is not None else ""
    return (f"already complete: reusing {Path(run_dir)} ({summary.get('epochs_run')} epochs, "
            f"{summary.get('steps_run', summary.get('steps'))} steps{acc}); same settings as asked, so nothing is "
            f"trained. -p reuse False -p overwrite True trains it again.")
