"""``python -m ferlib notebooks {list,run,run-all,sync}``: the numbered notebooks, headless (papermill).

Outputs go to ``results/notebooks/<name>.ipynb``; the stored notebooks stay output-free.
"""
from __future__ import annotations

import argparse

from ferlib.notebooks import execute, list_notebooks, sync


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ferlib notebooks", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the notebooks")
    r = sub.add_parser("run", help="run some notebooks")
    r.add_argument("names", nargs="+")
    r.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[], help="a parameter")
    a = sub.add_parser("run-all", help="run every numbered notebook on its defaults")
    a.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[], help="a parameter")
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
    for n in names:
        execute(n, params)
    return 0



if __name__ == "__main__":
    import sys

    sys.exit(main())
