"""``python -m ferlib demo`` (``make demo``): generate the synthetic set and run the quickstart notebook headlessly."""
from __future__ import annotations

import sys
import time

from ferlib.quickstart import quickstart_dir


def main(argv=None) -> int:
    if argv:
        print(f"error: demo takes no options, got {' '.join(argv)}", file=sys.stderr)
        return 2
    from ferlib.data import load_dataset
    from ferlib.notebooks import execute
    from ferlib.paths import data_dir
    from ferlib.run_dir import METRICS, SUMMARY

    t0 = time.time()
    print(f"the synthetic RAF-DB-format set: {data_dir() / 'synthetic'} (generated on the first run only) ...", flush=True)
    load_dataset("synthetic", None, "train")
    out = execute("00_quickstart")
    run = quickstart_dir()
    print(f"\ndone in {time.time() - t0:.0f}s")
    print(f"executed notebook : {out}")
    print(f"metrics           : {run / METRICS}, {run / SUMMARY}")
    print(f"figures           : {run / 'confusion.png'}, {run / 'tsne.png'}, {run / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
