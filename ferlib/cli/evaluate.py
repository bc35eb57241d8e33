"""``python -m ferlib evaluate``: a trained run again (``--run-dir``), or released weights on a benchmark
(``--weights``); the work is :mod:`ferlib.evaluation`'s (its docstring says what each writes)."""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from ferlib.cli import int_at_least
from ferlib.evaluation import CLI_ERRORS, evaluate_run, evaluate_weights


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ferlib evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--run-dir", help="a run directory written by python -m ferlib train")
    what.add_argument("--weights", help="a ferlib.weights entry (e.g. emonet_rafdb_lam0.6) or a checkpoint file")
    p.add_argument("--model", default=None, help="with --weights FILE the registry does not know: the model name")
    p.add_argument("--dataset", default=None,
                   help="with --weights: rafdb, affectnet, affectnet8, ferplus, fer2013, imagefolder or synthetic "
                        "(default: the dataset the authors report the file on)")
    p.add_argument("--split", default=None, help="train, val or test (default: the split the paper reports on)")
    p.add_argument("--tta", action="store_true", help="average the logits of each image and its horizontal flip")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"), help="with --run-dir: which checkpoint")
    p.add_argument("--data-root", default=None,
                   help="dataset folder (default: the one the run was trained on; data/<dataset> for --weights)")
    p.add_argument("--out", default=None, help="with --weights: the JSON file to write "
                                               "(default: results/released/<entry>_<dataset>.json)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int_at_least(1), default=None, help="default: the recipe's")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    p.add_argument("--threads", type=int_at_least(1), default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--progress", default=None, action=argparse.BooleanOptionalAction)
    return p


def main(argv=None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    if a.run_dir and (a.model or a.dataset or a.out):
        p.error("--model, --dataset and --out go with --weights")
    from ferlib.engine.env import configure_threads
    from ferlib.error_report import report

    configure_threads(a.threads)
    try:
        if a.weights:
            res = evaluate_weights(a.weights, a.dataset, a.data_root, a.model, a.split, a.tta, a.device,
                                   a.batch_size, a.precision, a.progress, out=a.out)
        else:
            res = evaluate_run(a.run_dir, a.split, a.tta, a.checkpoint, a.data_root, a.device, a.batch_size,
                               a.precision, a.progress)
    except Exception as e:  # noqa: BLE001 - re-raised unless it is a user's error
        if not report(e, CLI_ERRORS):
            raise
        return 2
    print(res["report"])
    print("confusion matrix (rows = true, columns = predicted; " + ", ".join(res["classes"]) + "):")
    print(np.array(res["confusion_matrix"]))
    if a.weights:
        rep = "not reported" if res["reported"] is None else f"{res['reported']:.2f} %"
        print(f"{res['weights']} on {res['dataset']} ({res['split']}, {res['n']} images): accuracy measured by ferlib "
              f"{res['measured']:.2f} % | reported by the authors for this file: {rep}  -> {res['json']}")
        print(json.dumps({k: res[k] for k in ("weights", "dataset", "split", "reported", "measured",
                                              "mean_class_accuracy", "macro_f1", "n")}))
    else:
        print(json.dumps({k: res[k] for k in ("split", "tta", "checkpoint", "accuracy", "mean_class_accuracy",
                                              "macro_f1", "n", "in_progress") if k in res}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
