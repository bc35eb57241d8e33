"""``python -m ferlib.evaluate --run-dir DIR [--split test] [--tta]``: evaluate a trained run again.

Rebuilds the model from ``DIR/best.pt`` (``--checkpoint last`` for the last epoch), reads the split of the
run's dataset from where training read it (``config.yaml``; ``--data-root`` to change), and reports
accuracy, mean per-class accuracy, macro F1, the confusion matrix and a per-class report. Writes
``DIR/eval_<split>[_tta].json`` and ``DIR/predictions_<split>[_tta].npz`` (logits, targets, features,
classes — the layout of ``predictions.npz``, DESIGN §3).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import yaml


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ferlib.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run-dir", required=True, help="a run directory written by ferlib.train")
    p.add_argument("--split", default=None, help="train, val or test (default: the split the paper reports on)")
    p.add_argument("--tta", action="store_true", help="average the logits of each image and its horizontal flip")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"), help="which checkpoint")
    p.add_argument("--data-root", default=None, help="dataset folder (default: the one the run was trained on)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    p.add_argument("--progress", default=None, action=argparse.BooleanOptionalAction)
    return p


def evaluate_run(run_dir, split: str | None = None, tta: bool = False, checkpoint: str = "best", data_root=None,
                 device: str = "auto", batch_size: int | None = None, precision: str = "auto",
                 progress: bool | None = None) -> dict:
    """Metrics of a run's checkpoint on ``split``; writes the JSON and predictions files next to it."""
    from ferlib.engine.loop import _save_predictions, evaluate
    from ferlib.engine.metrics import per_class_report
    from ferlib.engine.run import eval_split, load_run, load_split

    run_dir = Path(run_dir)
    model, recipe = load_run(run_dir, checkpoint)
    source = {}
    cfg_path = run_dir / "config.yaml"
    if cfg_path.exists():
        source = ((yaml.safe_load(cfg_path.read_text()) or {}).get("data") or {}).get("source") or {}
    split = split or eval_split(recipe)
    data_root = data_root or source.get("data_root")
    cache = source.get("cache") or False
    ds = load_split(recipe, split, data_root, progress=progress is not False, cache=cache)
    res = evaluate(model, ds, recipe, device, tta=tta, progress=progress, batch_size=batch_size, precision=precision)
    pred = res.pop("predictions")
    res["report"] = per_class_report(pred["logits"], pred["targets"], list(ds.classes))
    res.update(split=split, tta=tta, checkpoint=checkpoint, classes=list(ds.classes))
    tag = f"{split}{'_tta' if tta else ''}"
    (run_dir / f"eval_{tag}.json").write_text(json.dumps(res, indent=2))
    _save_predictions(run_dir, {"predictions": pred}, ds, f"predictions_{tag}.npz")
    return res


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    res = evaluate_run(a.run_dir, a.split, a.tta, a.checkpoint, a.data_root, a.device, a.batch_size, a.precision,
                       a.progress)
    print(res["report"])
    print("confusion matrix (rows = true, columns = predicted; " + ", ".join(res["classes"]) + "):")
    print(np.array(res["confusion_matrix"]))
    print(json.dumps({k: res[k] for k in ("split", "tta", "checkpoint", "accuracy", "mean_class_accuracy",
                                          "macro_f1", "n")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
