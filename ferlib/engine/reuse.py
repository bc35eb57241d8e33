"""Reusing a finished run: what ``train(run=RunDirOptions(reuse=True))`` does (the notebooks' default, so that
``make notebooks`` can run again).

A run directory holds a *finished* run when its ``summary.json`` exists, the run was not stopped, and it ran
what it planned: every epoch of its recipe, or ``max_steps`` optimiser steps for a smoke run. Such a run is
reused when its settings equal the ones asked for now: the resolved recipe (provenance text aside), the seed,
the step budget, the selection split and the starting weights (:func:`run_settings`). Whether to reuse, and the
refusal naming each differing setting, is :func:`ferlib.engine.policy.decide`'s.
"""
from __future__ import annotations

import json
from pathlib import Path

from ferlib.run_dir import RunDir

#: Recipe fields that are provenance text: a card's wording changing does not make another run.
PROVENANCE = ("notes", "source", "reported", "pretrained_note")

#: The fit settings (config.yaml ``fit``) that make another run.
FIT_SETTINGS = ("seed", "max_steps", "selected_on", "accumulate", "ema", "eval_tta")


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


def reuse_message(run_dir, summary: dict) -> str:
    """``already complete: reusing <run_dir> (…)``: what a reused run printed when it was trained."""
    sel = (summary.get("selected") or {}).get("accuracy")
    acc = f", accuracy {sel:.4f} selected on {summary.get('selected_on')}" if sel is not None else ""
    return (f"already complete: reusing {Path(run_dir)} ({summary.get('epochs_run')} epochs, "
            f"{summary.get('steps_run', summary.get('steps'))} steps{acc}); same settings as asked, so nothing is "
            f"trained. -p reuse False -p overwrite True trains it again.")
