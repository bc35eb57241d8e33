"""The shell commands: ``python -m ferlib <command> [options]`` (or ``ferlib <command>`` once installed).

=============  ==========================================================  ==============================
command        what it does                                                 library call behind it
=============  ==========================================================  ==============================
``train``      train a paper's recipe (``--dry-run``: the plan only)        :func:`ferlib.engine.train`
``evaluate``   re-evaluate a run directory or released weights              :mod:`ferlib.evaluation`
``prepare``    check a dataset's layout, count classes, build its cache     :mod:`ferlib.prepare`
``predict``    expressions of the faces in photos                           :mod:`ferlib.inference`
``weights``    ``sha256 FILE…``: a weights file against the registry        :mod:`ferlib.weights`
``notebooks``  run / list / sync the numbered notebooks (papermill)         :mod:`ferlib.notebooks`
``demo``       the synthetic set and the quickstart notebook (``make demo``)
``parity``     ferlib against the authors' own training code (a checkout)  :mod:`ferlib.parity`
=============  ==========================================================  ==============================

Each command is a module here with ``build_parser()`` (where it has options) and ``main(argv) -> int``;
the library modules hold no argument parsing, so ``ferlib.engine.train`` (a function) is the only
``train`` in the library. A known error (missing data or weights, a bad option) prints one ``error: …``
line with the fix and exits 2 (:func:`ferlib.error_report.report`).
"""
from __future__ import annotations

import argparse
import importlib
import sys

#: command -> module under ferlib.cli
COMMANDS = ("train", "evaluate", "prepare", "predict", "weights", "notebooks", "demo", "parity")


def main(argv=None) -> int:
    """``python -m ferlib <command> …``: run ``ferlib.cli.<command>.main`` on the remaining arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m ferlib {{{','.join(COMMANDS)}}} [options]\n\n" + __doc__.split("\n\n")[1])
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return importlib.import_module(f"ferlib.cli.{command}").main(rest)


def int_at_least(minimum: int):
    """An argparse ``type``: an integer ≥ ``minimum`` (argparse then prints one line and exits 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"integer ≥ {minimum}"
    return parse
