"""Saving figures as PNG + SVG (the plots read run directories through :class:`ferlib.run_dir.RunDir`)."""
from __future__ import annotations

from pathlib import Path

__all__ = ["save_figure"]


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
