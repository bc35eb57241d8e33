"""``python -m ferlib train --model NAME --dataset NAME [options]``: train a paper recipe from the shell.

The same call as ``ferlib.engine.train`` (what the notebooks use), so one GPU, CPU and several GPUs
run the same code::

    python -m ferlib train --model emonet --dataset rafdb --data-root data/RAF-DB/basic
    python -m ferlib train --model fermam --dataset affectnet --dry-run     # what the run would do, no training
    python -m ferlib train --model emonet --dataset imagefolder --data-root my_faces --base-recipe rafdb
    torchrun --nproc-per-node 4 -m ferlib train --model fermam --dataset affectnet --checkpoint-every-steps 500
    python -m ferlib train --model baseline --dataset synthetic --set input_size=32 --set model_kwargs.width=8

The defaults run the paper's recipe: the card's epochs, batch and schedule, the whole evaluation
split, the card's starting weights (``--pretrained``) and precision (``--precision``). ``--set
key=value`` overrides any recipe field (values are YAML: ``--set lr=1e-4``, ``--set
train_transforms=[hflip]``, ``--set model_kwargs.lam=0.5``). Run ``--help`` for every option. A known
error (missing data or weights, a bad option) prints one ``error: …`` line with the fix and exits 2.
"""
from __future__ import annotations

import argparse
import json
import sys

import yaml

from ferlib.cli import int_at_least


def parse_set(items) -> dict:
    """``["lr=1e-4", "model_kwargs.width=8"]`` → ``{"lr": 1e-4, "model_kwargs": {"width": 8}}``."""
    out: dict = {}
    for item in items or ():
        if "=" not in item:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else None
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as text
            try:
                value = float(value)
            except ValueError:
                pass
        parts = key.strip().split(".")
        d = out
        for p in parts[:-1]:
            d = d.setdefault(p, {})
            if not isinstance(d, dict):
                raise SystemExit(f"--set {item!r}: {p} is not a mapping")
        d[parts[-1]] = value
    return out


def parse_pretrained(text: str):
    """``--pretrained``: card/true → the card's starting weights, false/none → random init, else an entry or file."""
    from ferlib.weights.start import is_card, is_off

    text = text.strip()
    return "card" if is_card(text) else False if is_off(text) else text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ferlib train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="registered model name (ferlib.models.list_models())")
    p.add_argument("--dataset", required=True,
                   help="rafdb, affectnet, affectnet8, ferplus, fer2013, synthetic (a dataset entry of the recipe card), "
                        "or imagefolder (your own train/<class>/ and test/<class>/ folders under --data-root)")
    p.add_argument("--base-recipe", default=None,
                   help="imagefolder only: the card entry whose recipe to use (default rafdb)")
    p.add_argument("--data-root", default=None, help="the dataset's folder as distributed (default data/<dataset>)")
    p.add_argument("--recipe", default=None, help="paper card in ferlib/recipes (default: the one named like --model)")
    p.add_argument("--epochs", type=int_at_least(1), default=None, help="epochs (default: the recipe's)")
    p.add_argument("--batch-size", type=int_at_least(1), default=None,
                   help="the global batch: under torchrun each of N processes takes batch-size / N (default: the "
                        "card's, the authors' batch)")
    p.add_argument("--max-steps", type=int_at_least(1), default=None,
                   help="stop after this many optimiser steps and evaluate that many batches (a smoke run, recorded "
                        "as incomplete; default: none on real data, the card's CPU budget on synthetic)")
    p.add_argument("--dry-run", action="store_true",
                   help="resolve data, recipe, steps, precision and starting weights, print them and write "
                        "<run-dir>/plan.json without training")
    p.add_argument("--run-dir", default=None, help="run directory (default results/runs/<model>_<dataset>_<time>)")
    p.add_argument("--run-name", default=None, help="name of the run directory under results/runs")
    p.add_argument("--seed", type=int, default=0, help="one seed for Python, NumPy, torch and the samplers")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels (torch.use_deterministic_algorithms, no cuDNN autotune, no TF32)")
    p.add_argument("--resume", nargs="?", const="must", default=False, choices=("must", "auto"),
                   help="continue the run in --run-dir from its last.pt (mid-epoch included); an error when there is "
                        "nothing usable to resume. --resume auto: resume when possible, else start afresh")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a previous run in --run-dir (without it, a fresh run into a used directory refuses)")
    p.add_argument("--break-lock", action="store_true",
                   help="take the run directory's lock (run.lock) from a run on another host that is gone; a lock "
                        "from a live run, or from a killed one on this host (taken over with a warning), needs no flag")
    p.add_argument("--checkpoint-every-steps", type=int_at_least(1), default=None,
                   help="also write last.pt every N optimiser steps (long AffectNet epochs, preemptible jobs)")
    p.add_argument("--stop-after-steps", type=int_at_least(1), default=None,
                   help="write last.pt and exit after N optimiser steps, even mid-epoch (job time limits)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="hold out this stratified fraction of train and select the epoch on it "
                        "(default: select on the test split as the authors do, labelled test_selected)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--precision", default=None, choices=("fp32", "tf32", "bf16", "fp16"),
                   help="training precision (default: the card's, the authors' fp32 with TF32 off); tf32 = fp32 with "
                        "TF32 matmuls and convolutions (Ampere+); bf16 autocast is the fast switch on a GPU (fp16 uses "
                        "a GradScaler, CUDA only)")
    p.add_argument("--threads", type=int_at_least(1), default=None,
                   help="torch CPU threads (default: OMP_NUM_THREADS if set, else one per core; use 1 when other "
                        "jobs share a small machine)")
    p.add_argument("--channels-last", default=None, action=argparse.BooleanOptionalAction,
                   help="channels_last memory format (default: on for CUDA and CPU)")
    p.add_argument("--accumulate", type=int_at_least(1), default=1,
                   help="gradient accumulation micro-batches per update (effective batch = global batch × K)")
    p.add_argument("--num-workers", type=int_at_least(0), default=0, help="DataLoader worker processes")
    p.add_argument("--cache", nargs="?", const=True, default="auto",
                   help="read the uint8 tensor cache, built on first use (optional folder; default for real "
                        "datasets, unless the disk lacks room)")
    p.add_argument("--no-cache", dest="cache", action="store_const", const=False,
                   help="read the image files every epoch instead of the cache")
    p.add_argument("--ema", type=float, default=None, help="evaluate an EMA of the weights with this decay")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation in the per-epoch evaluation")
    p.add_argument("--pretrained", type=parse_pretrained, default="card",
                   help="starting weights: card (the paper's, from the recipe card), false (random init: the paper's "
                        "number is not expected), a ferlib.weights entry, or a checkpoint file")
    p.add_argument("--progress", default=None, action=argparse.BooleanOptionalAction,
                   help="tqdm bars (default: only on a terminal)")
    p.add_argument("--find-unused-parameters", action="store_true", help="DDP option for models with unused branches")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override, YAML value; dotted keys reach into dicts (model_kwargs.width=8); repeatable")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from ferlib.error_report import exit_on_known_errors

    with exit_on_known_errors():
        return _main(args)


def _main(args) -> int:
    from ferlib.engine import DataOptions, RunDirOptions, train
    from ferlib.engine.distributed import cleanup_distributed, rank_and_world

    overrides = parse_set(args.set)
    paper = args.recipe or args.model
    from ferlib.recipes import list_recipes, load_card

    if paper not in list_recipes():
        raise SystemExit(f"error: no recipe card named {paper!r} (ferlib/recipes/{paper}.yaml); pass --recipe, one of "
                         f"{list_recipes()}")
    if load_card(paper)["model"] != args.model:
        overrides.setdefault("model", args.model)
    fit_options = {"channels_last": args.channels_last, "compile": args.compile,
                   "accumulate": args.accumulate, "num_workers": args.num_workers, "deterministic": args.deterministic,
                   "checkpoint_every_steps": args.checkpoint_every_steps, "stop_after_steps": args.stop_after_steps,
                   "ema": args.ema, "eval_tta": args.tta, "find_unused_parameters": args.find_unused_parameters}
    try:
        run_dir = RunDirOptions(args.run_dir, args.run_name, args.resume, args.overwrite, break_lock=args.break_lock)
        data = DataOptions(args.data_root, args.cache, args.val_fraction, args.base_recipe)
        run = train(paper, args.dataset, run_dir, data,
                    device=args.device, epochs=args.epochs, batch_size=args.batch_size, max_steps=args.max_steps,
                    pretrained=args.pretrained, precision=args.precision, seed=args.seed, fit_options=fit_options,
                    progress=args.progress, dry_run=args.dry_run, threads=args.threads, **overrides)
        if args.dry_run:
            return 0
        if rank_and_world()[0] == 0:
            print(json.dumps({"run_dir": str(run.run_dir), "selected_on": run.summary.get("selected_on"),
                              "complete": run.summary.get("complete"),
                              "metrics": {k: run.metrics.get(k) for k in ("accuracy", "mean_class_accuracy", "macro_f1")}}))
    finally:
        cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
