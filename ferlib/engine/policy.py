"""What a run does with what its run directory already holds: the one place that decides.

:func:`decide` answers for ``train()`` (before any data is read) and for ``fit()`` (which then acts on it):

=========  ==========================================================================================
new        the folder holds no previous run: start afresh
resume     ``resume`` (True / ``"auto"`` / ``"must"``) and a usable ``last.pt`` (or ``last.pt.prev``):
           continue it, mid-epoch, with the same recipe (other than :data:`SAFE_ON_RESUME`)
overwrite  ``overwrite=True`` and a previous run that is not resumed: its files are removed first
reuse      ``reuse`` settings given and a finished run with those settings: return it, train nothing
refuse     anything else raises, touching nothing: :class:`RunExistsError` (a previous run, neither
           resume nor overwrite), :class:`ResumeError` (nothing usable to resume, or another recipe),
           :class:`RecipeChangedError` / :class:`UnfinishedRunError` (reuse asked for, the run is not it)
=========  ==========================================================================================

The lock that keeps one writer per run directory is :mod:`ferlib.engine.writer`'s; the settings a reuse
compares are :mod:`ferlib.engine.reuse`'s.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ferlib.run_dir import RUN_FILES, RunDir

from .checkpoint import load_checkpoint
from .reuse import differences, is_finished, stored_settings

#: Recipe fields a resume may change: more (or fewer) epochs extend (or end) the same run; provenance text.
SAFE_ON_RESUME = ("epochs", "notes", "source", "reported", "pretrained_note")


class RunExistsError(FileExistsError):
    """A fresh run was pointed at a directory holding a previous run (nothing was touched)."""


class ResumeError(RuntimeError):
    """``resume`` was asked for but nothing usable can be resumed, or the recipe differs from the stored one."""


class _OneLine:
    """In a notebook, IPython shows ``_render_traceback_()`` instead of the traceback: the message is the answer."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class RecipeChangedError(_OneLine, RunExistsError):
    """The run directory holds a finished run made with other settings (nothing was touched)."""


class UnfinishedRunError(_OneLine, RunExistsError):
    """The run directory holds a run that did not finish (nothing was touched)."""


@dataclasses.dataclass(frozen=True)
class Decision:
    """What :func:`decide` chose: ``action`` (new, resume, overwrite, reuse), the previous run's ``remove`` files
    to delete before starting, the ``checkpoint`` to continue from (``resume`` with ``load``) and the reused
    run's ``summary`` (``reuse``)."""

    action: str
    remove: tuple[str, ...] = ()
    checkpoint: dict | None = None
    summary: dict | None = None


def decide(run_dir, resume: bool | str = False, overwrite: bool = False, *, reuse: dict | None = None, recipe=None,
           load: bool = True) -> Decision:
    """The :class:`Decision` for a run into ``run_dir``, or the refusal (see the module docstring). Reads only.

    ``resume``: False (start afresh), True / ``"auto"`` (continue when there is a usable ``last.pt``),
    ``"must"`` (continue, or refuse). ``reuse``: the settings of the run asked for
    (:func:`ferlib.engine.reuse.run_settings`), None when reuse is off. ``recipe``: compared with the resumed
    checkpoint's. ``load``: read ``last.pt`` (``fit``); False only looks whether there is one (``train``,
    before any data is read).
    """
    rd = RunDir(run_dir)
    previous = rd.files
    if reuse is not None and previous:
        summary = _finished_run(rd, reuse, resume, overwrite)
        if summary is not None:
            return Decision("reuse", summary=summary)
    if not resume:
        if previous and not overwrite:
            raise RunExistsError(
                f"{run_dir} holds a previous run ({', '.join(previous)}); nothing was changed. Continue it with "
                f"resume=True (--resume, -p resume True), replace it with overwrite=True (--overwrite, -p overwrite "
                f"True), or choose another run directory (run_name / --run-dir).")
        return Decision("overwrite" if previous else "new", remove=tuple(previous))
    refused: list = []
    if load:
        ckpt = load_checkpoint(rd / "last.pt", refused=refused)
    else:
        ckpt = {} if any((rd / n).exists() for n in ("last.pt", "last.pt.prev")) else None
    if ckpt is not None:
        if recipe is not None:
            _check_same_recipe(ckpt.get("recipe") or {}, recipe, run_dir)
        return Decision("resume", checkpoint=ckpt if load else None)
    found = [n for n in RUN_FILES if (rd / n).exists()]
    if resume == "must" or (found and not overwrite):
        why = "; ".join(str(e) for e in refused) or "it holds no last.pt or last.pt.prev"
        raise ResumeError(
            f"cannot resume {run_dir}: {why}. Found: {', '.join(found) or 'no run files'}. Start afresh with "
            f"overwrite=True (--overwrite, -p overwrite True)" + (", or resume='auto' (--resume auto) to resume "
            "only when there is something to resume" if resume == "must" and not found else "") + ".")
    return Decision("overwrite" if found else "new", remove=tuple(found))  # overwrite=True: the unusable run goes


def _check_same_recipe(stored: dict, recipe, run_dir) -> None:
    """Refuse to resume with a recipe that differs from the checkpoint's outside :data:`SAFE_ON_RESUME`."""
    new = json.loads(json.dumps(recipe.to_dict(), default=str))
    old = json.loads(json.dumps(stored, default=str))
    diffs = [f"{k}: {old.get(k)!r} in the run, {new.get(k)!r} now" for k in sorted(set(new) | set(old))
             if k not in SAFE_ON_RESUME and old.get(k) != new.get(k) and k in old]
    if diffs:
        raise ResumeError(f"cannot resume {run_dir} with another recipe ({'; '.join(diffs)}). Resume with the run's "
                          f"own settings, or start a new run (another run directory, or overwrite=True).")


def _finished_run(rd: RunDir, settings: dict, resume, overwrite: bool) -> dict | None:
    """The summary of the finished run in ``rd`` when its settings equal ``settings``; None when ``resume`` /
    ``overwrite`` decide what happens to it; else :class:`RecipeChangedError` or :class:`UnfinishedRunError`."""
    try:
        summary = rd.summary()
    except (FileNotFoundError, json.JSONDecodeError):
        summary = {}
    finished = is_finished(summary) and (rd / "predictions.npz").exists() and (rd / "best.pt").exists()
    diffs = differences(stored_settings(rd.path), settings) if finished else None
    if finished and not diffs:
        return summary
    if resume or overwrite:
        return None
    run_dir = Path(rd.path)
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
