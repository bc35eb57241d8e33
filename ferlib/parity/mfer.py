"""MFER parity: nothing to run. ``XuJ1E/MFER``'s ``train.py`` cannot execute as published (undefined names,
imports that fail, the loss shadowed by a tensor: docs/papers/mfer.md §5), so there is no authors' training to compare
ferlib's with; the forward pass is covered by the reference tests. ``python -m ferlib parity mfer`` says so in
one ``info`` row and exits 0.
"""
from __future__ import annotations

from . import register_parity
from .core import ParityOptions, Report, info

PAPER = "mfer"
REPO = "XuJ1E/MFER"


@register_parity(PAPER, repo=REPO)
def parity_mfer(opts: ParityOptions) -> Report:
    """One info row: the authors' training script does not run, so no training stage can be compared."""
    return Report(PAPER, [info("info", "authors' training code", "none runnable: nothing compared",
                               f"{REPO} train.py fails before its first step (undefined device, FeatureLoss, "
                               "SmoothFunction; docs/papers/mfer.md §5); the model equals the authors' forward pass "
                               "(reference tests)")])
