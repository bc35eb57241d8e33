"""The errors a user can fix, and the CLIs' way of reporting them: one ``error: …`` line, exit code 2.

Every message of these errors already says what is wrong and what to do (which file, which folder,
which option), so the command-line tools print it without a traceback. Anything else is a bug and
keeps its traceback.
"""
from __future__ import annotations

import contextlib
import sys

#: KeyError messages that come from a user's input (a name the registries do not know).
_USER_KEY_ERRORS = ("recipe card", "unknown model", "unknown pretrained weights", "unknown loss", "unknown dataset")


def known_error_types() -> tuple[type, ...]:
    """The exception classes whose message is the whole answer for a user."""
    from ferlib.data import DataNotFoundError, DatasetFormatError
    from ferlib.data.cache import CacheSpaceError
    from ferlib.engine.distributed import BatchSplitError
    from ferlib.engine.policy import ResumeError, RunExistsError
    from ferlib.engine.training import DeviceError
    from ferlib.recipes import RecipeError
    from ferlib.run_dir import RunLockedError
    from ferlib.weights import PretrainedWeightsError

    return (BatchSplitError, DatasetFormatError, DataNotFoundError, PretrainedWeightsError, CacheSpaceError,
            RunExistsError, ResumeError, RecipeError, DeviceError, RunLockedError)


def is_known(err: BaseException, extra: tuple = ()) -> bool:
    """Whether ``err`` is a user's error: a known type, a user-input KeyError, or one of a CLI's ``extra`` types."""
    if extra and isinstance(err, extra):
        return True
    if isinstance(err, KeyError) and err.args and isinstance(err.args[0], str):
        return err.args[0].startswith(_USER_KEY_ERRORS)
    return isinstance(err, known_error_types() + (PermissionError,))


def message(err: BaseException) -> str:
    if isinstance(err, PermissionError):
        return f"{err}: ferlib cannot write there; choose a writable folder (--run-dir, FERLIB_RESULTS, cache=<folder>)"
    return err.args[0] if isinstance(err, KeyError) and err.args else str(err)


def report(err: BaseException, extra: tuple = (), stream=None) -> bool:
    """Print ``error: <message>`` for a user's error (see :func:`is_known`) and return True; False otherwise."""
    if not is_known(err, extra):
        return False
    print(f"error: {message(err)}", file=stream or sys.stderr, flush=True)
    return True


@contextlib.contextmanager
def exit_on_known_errors(*extra: type, stream=None):
    """Inside a CLI's ``main``: a user's error (``extra``: the CLI's own error types) prints one ``error: …``
    line and exits with status 2; anything else keeps its traceback."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - re-raised unless it is a user's error
        if not report(err, extra, stream):
            raise
        raise SystemExit(2) from None
