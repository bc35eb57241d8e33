"""``results/figures/index.html``: one static page with every figure of the folder, its caption, the runs it
was drawn from and their summaries, and links to the PNG and SVG files. Written by ``make figures``
(:func:`ferlib.viz.figures.make_figures`); it opens from the file system (relative links, no script, no server).

A figure's caption lives beside it in ``<name>.caption.json`` (``{"title", "caption", "runs", "kind"}``,
:func:`save_caption`), so that a figure drawn by another notebook (e.g. 08's ablation plots) joins the gallery
with its own words; a PNG without one is shown under its file name.
"""
from __future__ import annotations

import html
import json
import os
import time
from pathlib import Path

from ferlib.run_dir import SUMMARY, RunDir

GALLERY = "index.html"
#: Order of the sections: figure kinds as :func:`ferlib.viz.figures.make_figures` names them, then the rest.
KIND_ORDER = ("per_class_accuracy", "confusion", "ablation", "tsne_mfer_feature_loss", "tsne", "curves")


def caption_path(png) -> Path:
    return Path(png).with_suffix(".caption.json")


def save_caption(png, title: str, caption: str, runs=(), kind: str = "") -> Path:
    """Write ``<png stem>.caption.json`` beside a figure: what the gallery shows with it."""
    path = caption_path(png)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"title": title, "caption": caption, "runs": [str(r) for r in runs], "kind": kind},
                              indent=1))
    os.replace(tmp, path)
    return path


def _rel(path, start: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), start.resolve())).as_posix()


def _summary_rows(run_dir) -> list[tuple[str, str]]:
    """What the gallery shows of a run's ``summary.json``: accuracy, completeness, epochs, steps, selection."""
    try:
        s = RunDir(run_dir).summary()
    except (FileNotFoundError, ValueError):
        return [("summary", "none (the run has not finished)")]
    sel = (s.get("test_at_val_selected") if s.get("selected_on") == "val" else s.get("selected")) or {}
    fmt = lambda v: f"{v:.4f}" if isinstance(v, (int, float)) else "—"  # noqa: E731
    status = "complete" if s.get("complete") else f"smoke run (limited by {', '.join(s.get('limited_by') or ['?'])})"
    return [("test accuracy", fmt(sel.get("accuracy"))), ("mean class accuracy", fmt(sel.get("mean_class_accuracy"))),
            ("macro F1", fmt(sel.get("macro_f1"))), ("status", status),
            ("epochs", f"{s.get('epochs_run')} of {s.get('epochs_planned', '?')}"),
            ("steps", f"{s.get('steps_run', s.get('steps'))} of {s.get('steps_planned', '?')}"),
            ("selected", f"epoch {s.get('selected_epoch')} on {s.get('selected_on')}"),
            ("precision", str(s.get("precision") or "—"))]


def _figure_html(png: Path, out_dir: Path) -> str:
    meta = json.loads(caption_path(png).read_text()) if caption_path(png).exists() else {}
    title = meta.get("title") or png.stem
    caption = meta.get("caption") or "no caption recorded for this figure: its title says what it shows"
    svg = png.with_suffix(".svg")
    links = [f'<a href="{html.escape(png.name)}">PNG</a>']
    if svg.exists():
        links.insert(0, f'<a href="{html.escape(svg.name)}">SVG</a>')
    runs = []
    for r in meta.get("runs") or []:
        rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in _summary_rows(r))
        summary = RunDir(r) / SUMMARY
        link = f' (<a href="{html.escape(_rel(summary, out_dir))}">{SUMMARY}</a>)' if summary.exists() else ""
        runs.append(f'<details class="run"><summary>run <code>{html.escape(Path(r).name)}</code>{link}</summary>'
                    f'<p class="path">{html.escape(str(r))}</p><table>{rows}</table></details>')
    runs_html = "".join(runs) or '<p class="run">drawn from no single run</p>'
    return (f'<figure id="{html.escape(png.stem)}" data-kind="{html.escape(meta.get("kind") or "other")}">'
            f'<h3>{html.escape(title)}</h3>'
            f'<a href="{html.escape(png.name)}"><img src="{html.escape(png.name)}" alt="{html.escape(title)}" '
            f'loading="lazy"></a>'
            f'<figcaption><p class="caption">{html.escape(caption)}</p><p class="links">{" · ".join(links)}</p>'
            f'{runs_html}</figcaption></figure>')


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } .lead { color: #555; margin-top: 0; }
nav a { margin-right: 1em; }
section { margin-top: 2em; border-top: 1px solid #ddd; }
figure { margin: 1.5em 0; padding: 1em; border: 1px solid #e3e3e3; border-radius: 6px; background: #fafafa; }
figure h3 { margin: 0 0 0.5em 0; font-size: 1.05em; }
figure img { max-width: 100%; max-height: 75vh; height: auto; background: white; border: 1px solid #eee; }
.caption { margin: 0.6em 0 0.3em 0; } .links a { font-weight: 600; }
.run { margin: 0.3em 0; font-size: 0.9em; } .path { color: #777; font-family: monospace; margin: 0.2em 0; }
table { border-collapse: collapse; } th { text-align: left; font-weight: normal; color: #555; padding-right: 1em; }
"""


def write_gallery(out_dir, table=None) -> Path:
    """Write ``<out_dir>/index.html``. ``table``: :func:`ferlib.viz.figures.make_figures`' rows, whose captions are
    saved beside their figures first (:func:`save_caption`); every PNG of ``out_dir`` is then shown, grouped by
    kind. Returns the page's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if table is not None:
        for row in table.to_dict("records"):
            save_caption(row["png"], row["title"], row["caption"], row["runs"], row["kind"])
    pngs = sorted(out_dir.glob("*.png"))
    kinds: dict[str, list[Path]] = {}
    for png in pngs:
        meta = json.loads(caption_path(png).read_text()) if caption_path(png).exists() else {}
        kinds.setdefault(meta.get("kind") or "other", []).append(png)
    order = [k for k in KIND_ORDER if k in kinds] + sorted(k for k in kinds if k not in KIND_ORDER)
    names = {"per_class_accuracy": "Per-class accuracy", "confusion": "Confusion matrices",
             "ablation": "Ablations (seeds)",
             "tsne_mfer_feature_loss": "MFER: feature losses compared", "tsne": "t-SNE of test features",
             "curves": "Training curves", "other": "Other figures"}
    sections = []
    for k in order:
        body = "".join(_figure_html(p, out_dir) for p in kinds[k])
        sections.append(f'<section id="kind-{html.escape(k)}"><h2>{html.escape(names.get(k, k))} '
                        f'({len(kinds[k])})</h2>{body}</section>')
    nav = " ".join(f'<a href="#kind-{html.escape(k)}">{html.escape(names.get(k, k))}</a>' for k in order)
    empty = "" if pngs else "<p>No figure yet: train some runs (make notebooks), then make figures.</p>"
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>ferlib figures</title>'
            f'<style>{_CSS}</style></head><body><h1>ferlib figures</h1>'
            f'<p class="lead">{len(pngs)} figures in {html.escape(str(out_dir))}, drawn from run directories '
            f'(written {time.strftime("%Y-%m-%d %H:%M")}). Each caption says the data (synthetic or real), the seeds, '
            f'whether the run was a smoke run or complete, and how its epoch was selected.</p>'
            f'<nav>{nav}</nav>{empty}{"".join(sections)}</body></html>\n')
    path = out_dir / GALLERY
    tmp = out_dir / f".{GALLERY}.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path
