"""Saving figures as PNG + SVG; the run readers the plots use (kept here under their old names) are
:mod:`ferlib.runs`', the module that owns the run directory."""
from __future__ import annotations

from pathlib import Path

from ferlib.runs import load_metrics, load_predictions

__all__ = ["load_metrics", "load_predictions", "save_figure"]


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
