"""One writer per run directory: ``train`` and ``fit`` hold the run directory's lock (:meth:`ferlib.run_dir.RunDir.lock`)
from their first line to their return, so that two runs into one directory never mix; the second refuses at once
with :class:`ferlib.run_dir.RunLockedError` naming the holder.

``train`` locks a named directory (``run_dir`` / ``run_name``) before it reads or checks anything; a time-stamped
one (neither given) is new to this call and is locked by ``fit``, which every training goes through. Under
``torchrun`` only global rank 0 writes, so only rank 0 holds the lock: in ``fit`` every rank learns whether it got
it and all stop together; in ``train`` (before the process group exists) rank 0 stops and torchrun stops the rest.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import os
from pathlib import Path

from ferlib.run_dir import RunDir

from .distributed import all_gather_objects, is_distributed, rank_and_world


def _writes() -> bool:
    """This process writes the run: rank 0 of the process group, or (before it exists) global ``RANK`` 0."""
    if is_distributed():
        return rank_and_world()[0] == 0
    return int(os.environ.get("RANK", "0")) == 0


@contextlib.contextmanager
def one_writer(run_dir, break_lock: bool = False):
    """Hold ``run_dir``'s lock for the block (on the writing rank); raises ``RunLockedError`` on every rank when
    another process holds it."""
    lock, refused = None, None
    if _writes():
        try:
            lock = RunDir(run_dir).lock(break_lock).acquire()
        except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
            refused = e
    if is_distributed():
        refused = all_gather_objects(refused)[0]
    if refused is not None:
        raise refused
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def holds_run_dir(run_dir_of, break_lock_of=lambda arguments: False):
    """Decorator: the call holds the run directory ``run_dir_of(arguments)`` names (None: no lock) for its whole
    length, breaking a lock held from another host when ``break_lock_of(arguments)``; ``arguments`` are the
    call's bound arguments with defaults."""

    def wrap(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def locked(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            target = run_dir_of(bound.arguments)
            if target is None:
                return fn(*args, **kwargs)
            with one_writer(Path(target), bool(break_lock_of(bound.arguments))):
                return fn(*args, **kwargs)

        return locked

    return wrap
