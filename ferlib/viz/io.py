"""Reading run directories and saving figures as PNG + SVG."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def save_figure(fig, path) -> list[Path]:
    """Save ``fig`` as ``<path>.png`` and ``<path>.svg`` (suffix of ``path`` ignored); returns both paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in (".png", ".svg"):
        p = path.with_suffix(ext)
        fig.savefig(p, dpi=150, bbox_inches="tight")
        out.append(p)
    return out


def load_predictions(run_dir) -> dict:
    """``predictions.npz`` of a run: logits, targets, features and class names."""
    path = Path(run_dir) / "predictions.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: train the run first (ferlib.engine.train)")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def load_metrics(run_dir) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
