"""Does bf16 change accuracy? Each paper's synthetic recipe trained twice, same seed: fp32 (the cards') vs bf16.

    PYTHONPATH=. python benchmarks/precision_ablation.py --papers emonet mmfrm --out results/bench/

Writes ``precision_ablation.json`` (one row per paper and precision: accuracy of the selected epoch and of the
last epoch, mean-class accuracy, wall time) and prints a Markdown table. An ablation, not a speed test: on a
CPU, bf16 autocast can be much slower than fp32 for some models.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def run_pair(paper: str, seed: int, device: str, runs: Path) -> list[dict]:
    from ferlib.engine import RunDirOptions, train

    rows = []
    for precision in ("fp32", "bf16"):
        t0 = time.time()
        run = train(paper, "synthetic", RunDirOptions(runs / f"{paper}_{precision}", resume=False),
                    precision=precision, seed=seed, device=device, progress=False)
        s = run.summary
        rows.append({"paper": paper, "precision": precision, "epochs": s.get("epochs_run"), "steps": s.get("steps_run"),
                     "complete": s.get("complete"), "accuracy_selected": s["selected"]["accuracy"],
                     "accuracy_last": s["last"]["accuracy"], "mean_class_accuracy": s["selected"]["mean_class_accuracy"],
                     "wall_s": round(time.time() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| paper | precision | epochs | accuracy (selected) | accuracy (last) | mean-class | wall s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['paper']} | {r['precision']} | {r['epochs']} | {r['accuracy_selected']:.4f} | "
                     f"{r['accuracy_last']:.4f} | {r['mean_class_accuracy']:.4f} | {r['wall_s']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--papers", nargs="+", default=["emonet", "mmfrm"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="results/bench")
    args = ap.parse_args(argv)
    from ferlib.engine.env import configure_threads

    configure_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for paper in args.papers:
            rows += run_pair(paper, args.seed, args.device, Path(tmp))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "precision_ablation.json").write_text(json.dumps(rows, indent=2))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
