"""``python -m ferlib parity PAPER --upstream DIR``: ferlib against the authors' own code, from files on disk to
the weights after K training steps; prints one table, exits 1 on any failed check (:mod:`ferlib.parity`)."""
from __future__ import annotations

import argparse
import sys

from ferlib.cli import int_at_least


def build_parser() -> argparse.ArgumentParser:
    from ferlib.parity import list_parity

    p = argparse.ArgumentParser(prog="python -m ferlib parity", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("paper", help="the paper whose authors' code is compared: " + ", ".join(list_parity()))
    p.add_argument("--upstream", required=True, metavar="DIR",
                   help="a checkout of the authors' repository (e.g. git clone https://github.com/xiayu-cell/EMO-Net DIR)")
    p.add_argument("--data-root", default=None, metavar="R",
                   help="a real dataset folder (ferlib's layout) instead of the RAF-DB fixture in tests/data")
    p.add_argument("--n-images", type=int_at_least(2), default=None, metavar="N",
                   help="with --data-root: the first N images of each split (default: the adapter's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights, the batches and the draws")
    p.add_argument("--steps", type=int_at_least(2), default=None, metavar="K",
                   help="training steps compared (default: the adapter's; crosses an epoch boundary)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where both sides run")
    p.add_argument("--record", default=None, metavar="OUT",
                   help="write the recording a replay test reads (inputs, per-step losses and lrs, final tensors)")
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    from ferlib.error_report import report
    from ferlib.parity import ParityInputError, ParityOptions, run_parity

    opts = ParityOptions(upstream=a.upstream, data_root=a.data_root, n_images=a.n_images, seed=a.seed,
                         steps=a.steps, device=a.device, record=a.record)
    try:
        result = run_parity(a.paper, opts)
    except Exception as e:  # noqa: BLE001 - re-raised unless it is a user's error
        if not report(e, (ParityInputError,)):
            raise
        return 2
    print(result.table())
    if a.record:
        print(f"recording written to {a.record}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
