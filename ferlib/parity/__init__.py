"""Parity with the authors' training code: ``python -m ferlib parity PAPER --upstream DIR`` (issue 23).

Each paper's adapter is a module here that registers itself with ``@register_parity(paper, repo=…)``
(importing this package imports them all, :func:`ferlib.discover.import_submodules`); it runs the authors'
code from a checkout and ferlib's on the same inputs and returns a :class:`~ferlib.parity.core.Report`.
The shared comparisons and the checkout handling are in :mod:`ferlib.parity.core`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict

from .core import Check, ParityInputError, ParityOptions, Report

#: paper -> (adapter, the authors' GitHub repository "owner/name")
_PARITY: Dict[str, tuple[Callable[[ParityOptions], Report], str]] = {}


def register_parity(paper: str, repo: str = ""):
    """Register ``fn(options: ParityOptions) -> Report`` as the parity adapter of ``paper``; ``repo`` is the
    authors' repository (``owner/name``), named in the error when the checkout is missing."""

    def deco(fn):
        if paper in _PARITY and _PARITY[paper][0] is not fn:
            raise ValueError(f"parity adapter {paper!r} is registered twice")
        _PARITY[paper] = (fn, repo)
        return fn

    return deco


def list_parity() -> list[str]:
    return sorted(_PARITY)


def upstream_repo(paper: str) -> str:
    return _PARITY[paper][1] if paper in _PARITY else ""


def run_parity(paper: str, args: ParityOptions | dict) -> Report:
    """Run ``paper``'s parity adapter. ``args``: a :class:`ParityOptions` (or a dict of its fields).
    Raises :class:`ParityInputError` (one line naming the path and the fix) for an unknown paper or a missing
    checkout or data folder."""
    opts = args if isinstance(args, ParityOptions) else ParityOptions(**args)
    if paper not in _PARITY:
        raise ParityInputError(f"no parity adapter for {paper!r}; papers with one: {', '.join(list_parity())}")
    fn, repo = _PARITY[paper]
    upstream = Path(opts.upstream).expanduser()
    if not upstream.is_dir():
        clone = f"git clone https://github.com/{repo} {upstream}" if repo else "clone the authors' repository there"
        raise ParityInputError(f"the authors' checkout {upstream} does not exist; fix: {clone}")
    if str(opts.device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ParityInputError("--device cuda: torch sees no CUDA device here; run with --device cpu")
    if opts.data_root is not None and not Path(opts.data_root).expanduser().is_dir():
        raise ParityInputError(f"--data-root {opts.data_root} does not exist; pass the folder of the dataset "
                               "(the layout ferlib's reader expects) or leave it out to use the test fixture")
    return fn(opts)


# Every adapter module registers itself on import: a new paper's parity is a new file.
from ferlib.discover import import_submodules  # noqa: E402

import_submodules(__name__, __path__)

__all__ = ["Check", "ParityInputError", "ParityOptions", "Report", "list_parity", "register_parity", "run_parity",
           "upstream_repo"]
