"""``python -m ferlib notebooks {list,run,run-all,sync}``: the numbered notebooks, headless (papermill).

Outputs go to ``results/notebooks/<name>.ipynb``; the stored notebooks stay output-free.
"""
from __future__ import annotations

import argparse
import sys

from ferlib.notebooks import MAX_DEFAULT_JOBS, default_jobs, execute, list_notebooks, run_parallel, sync


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ferlib notebooks", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the notebooks")
    r = sub.add_parser("run", help="run some notebooks")
    r.add_argument("names", nargs="+")
    r.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[], help="a parameter")
    a = sub.add_parser("run-all", help="run every numbered notebook on its defaults")
    a.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[], help="a parameter")
    a.add_argument("--jobs", "-j", type=_positive, default=default_jobs(), metavar="N",
                   help="notebooks run at once, each in its own process, in the order ferlib.notebooks.NEEDS allows "
                        f"(default: the cores available, at most {MAX_DEFAULT_JOBS}: %(default)s here); each gets "
                        "OMP_NUM_THREADS = cores // N unless it is set; 1 runs them one after another in this process")
    sub.add_parser("sync", help="regenerate the paired py:percent scripts notebooks/py/*.py (jupytext)")
    args = ap.parse_args(argv)
    if args.cmd == "sync":
        sync()
        return 0
    if args.cmd == "list":
        print("\n".join(p.name for p in list_notebooks()))
        return 0
    import yaml

    params = {k: yaml.safe_load(v) for k, v in args.p}
    names = [p.stem for p in list_notebooks()] if args.cmd == "run-all" else args.names
    if args.cmd == "run-all" and args.jobs > 1:
        return run_parallel(names, args.p, jobs=args.jobs)
    for n in names:
        try:
            execute(n, params)
        except Exception as err:  # noqa: BLE001 - re-raised unless a cell stopped on a user's error
            line = stopped_on_users_error(err)
            if line is None:
                raise
            print(f"error: {n}: {line}", file=sys.stderr, flush=True)
            return 2
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def stopped_on_users_error(err: BaseException) -> str | None:
    """The one line to print when a notebook cell stopped on an error whose message is the whole answer (a run
    directory holding another run, a mistyped parameter, missing data or weights); None for anything else,
    which keeps its traceback."""
    from ferlib.error_report import known_error_types
    from ferlib.notebooks import ParameterError

    ename = getattr(err, "ename", None)  # papermill.PapermillExecutionError: the cell's exception
    users = {t.__name__ for t in known_error_types() + (ParameterError,)}
    users |= {"RecipeChangedError", "UnfinishedRunError", "WeightsNotFoundError"}
    if ename not in users:
        return None
    return f"{ename}: {err.evalue}"



if __name__ == "__main__":
    sys.exit(main())
