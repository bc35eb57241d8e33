"""The run directory (DESIGN §3): the one module that writes and reads its files.

::

    config.yaml       resolved recipe + environment + fit options + where the data came from (written once)
    metrics.jsonl     one JSON line per epoch (appended)
    last.pt, best.pt  checkpoints (written by ``ferlib.engine.checkpoint``; listed here in :data:`RUN_FILES`)
    predictions.npz   logits, targets, features and class names of the selected model on the evaluation split
    summary.json      last-epoch and selected-epoch metrics, ``selected_on``, completeness (written once)
    plan.json         what a dry run would do
    eval_<tag>.json   a later evaluation (``python -m ferlib evaluate``), beside ``predictions_<tag>.npz``
    ablation.json     an ablation grid entry's identity (:mod:`ferlib.ablations`)

The engine writes through :class:`RunDir`; results tables, figures, ablations and ``ferlib.evaluation`` read
through it. Whole-file writes go to a temporary file in the same folder, then ``os.replace``: a reader never
sees half a file. :func:`aggregate` is the one mean ± std over seeds of every table.

This is a leaf below the engine, viz, results and ablations: it imports NumPy, YAML and ``ferlib.metrics``
only (pandas inside :func:`aggregate`).
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import yaml

from ferlib.metrics import format_mean_std

__all__ = ["CONFIG", "METRICS", "PLAN", "PREDICTIONS", "RUN_FILES", "SUMMARY", "RunDir", "aggregate", "find_runs",
           "load_metrics", "load_predictions", "read_config", "save_predictions", "summarise"]

CONFIG, METRICS, SUMMARY, PREDICTIONS, PLAN = "config.yaml", "metrics.jsonl", "summary.json", "predictions.npz", "plan.json"
ABLATION = "ablation.json"

#: The files of a run; a fresh run into a directory holding any of them needs ``overwrite``.
RUN_FILES = ("last.pt", "last.pt.prev", "best.pt", PREDICTIONS, SUMMARY, METRICS)


def _plain(obj):
    """JSON-safe form (tuples → lists, paths and other objects → str)."""
    return json.loads(json.dumps(obj, default=str))


class RunDir:
    """One run directory: ``RunDir(path).write_summary(s)``, ``RunDir(path).summary()``, ..."""

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def files(self) -> list[str]:
        """The :data:`RUN_FILES` present (an empty ``metrics.jsonl`` does not count): a previous run's files."""
        return [n for n in RUN_FILES if (self.path / n).exists() and (n != METRICS or (self.path / n).stat().st_size)]

    def remove(self, names) -> None:
        for name in names:
            (self.path / name).unlink(missing_ok=True)

    # --- writing ---------------------------------------------------------------------------------

    def _replace(self, name: str, text: str) -> Path:
        """Write ``name`` atomically: a temporary file in the same folder, fsynced, then ``os.replace``."""
        self.path.mkdir(parents=True, exist_ok=True)
        target, tmp = self.path / name, self.path / f".{name}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        return target

    def write_config(self, cfg: dict) -> Path:
        """``config.yaml`` (the whole of it, once per run)."""
        return self._replace(CONFIG, yaml.safe_dump(_plain(cfg), sort_keys=False))

    def start_metrics(self) -> None:
        """An empty ``metrics.jsonl`` (a fresh run)."""
        self._replace(METRICS, "")

    def append_metrics(self, row: dict) -> None:
        """One epoch's line at the end of ``metrics.jsonl`` (a reader skips a line cut short by a crash)."""
        with open(self.path / METRICS, "a") as f:
            f.write(json.dumps(row) + "\n")

    def truncate_metrics(self, epochs: int) -> None:
        """Keep the rows of the first ``epochs`` epochs (what a checkpoint has seen; ``last.pt.prev`` may be
        older than the last line); damaged lines are dropped with a warning."""
        path = self.path / METRICS
        if not path.exists():
            self.start_metrics()
            return
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        keep = []
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                warnings.warn(f"{path}: dropped a damaged line ({line[:60]!r}); the checkpoint's epoch count stands")
                continue
            if row.get("epoch", epochs + 1) <= epochs:
                keep.append(line)
        if len(keep) != len(lines):
            self._replace(METRICS, "".join(line + "\n" for line in keep))

    def save_predictions(self, logits, targets, features, classes, name: str = PREDICTIONS) -> Path:
        """``name`` (default ``predictions.npz``): logits [N,C], targets, features [N,D], class names."""
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f".{name}.tmp.npz"
        np.savez_compressed(tmp, logits=logits, targets=targets, features=features, classes=np.array(list(classes)))
        os.replace(tmp, self.path / name)
        return self.path / name

    def write_summary(self, summary: dict) -> Path:
        """``summary.json`` (the whole of it, once per ``train``/``fit`` call)."""
        return self._replace(SUMMARY, json.dumps(summary, indent=2))

    def write_plan(self, plan: dict) -> Path:
        """``plan.json`` of a dry run."""
        return self._replace(PLAN, json.dumps(plan, indent=2, default=str))

    def write_evaluation(self, tag: str, result: dict) -> Path:
        """``eval_<tag>.json``: a later evaluation of the run (``python -m ferlib evaluate --run-dir``)."""
        return self._replace(f"eval_{tag}.json", json.dumps(result, indent=2, default=str))

    def write_ablation_spec(self, spec: dict) -> Path:
        """``ablation.json``: what identifies an ablation grid entry's run (:mod:`ferlib.ablations`)."""
        return self._replace(ABLATION, json.dumps(spec, indent=2, default=str))

    # --- reading ---------------------------------------------------------------------------------

    def config(self) -> dict:
        """``config.yaml`` as a dict (empty when the run has none)."""
        path = self.path / CONFIG
        return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}

    def metrics(self) -> list[dict]:
        """``metrics.jsonl``: one dict per epoch ([] when absent; a damaged line is skipped)."""
        path = self.path / METRICS
        rows = []
        for line in (path.read_text().splitlines() if path.exists() else ()):
            try:
                rows.append(json.loads(line)) if line.strip() else None
            except json.JSONDecodeError:
                continue  # cut short by a crash (reported when the run resumes)
        return rows

    def predictions(self, name: str = PREDICTIONS) -> dict:
        """``predictions.npz``: ``{"logits", "targets", "features", "classes"}`` arrays."""
        path = self.path / name
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: train the run first (ferlib.engine.train)")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def evaluation(self, tag: str) -> dict:
        """``eval_<tag>.json`` as a dict (``{}`` when the run has none)."""
        path = self.path / f"eval_{tag}.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def ablation_spec(self) -> dict:
        """``ablation.json`` as a dict (``{}`` when absent or damaged: the entry is then run afresh)."""
        path = self.path / ABLATION
        try:
            return json.loads(path.read_text()) if path.exists() else {}
        except json.JSONDecodeError:
            return {}

    def summary(self) -> dict:
        """``summary.json`` as a dict (``FileNotFoundError`` when the run has not finished once)."""
        return json.loads((self.path / SUMMARY).read_text())

    def is_complete(self, epochs: int, max_steps: int | None = None) -> bool:
        """``summary.json`` exists and shows ``epochs`` epochs run, or at least ``max_steps`` steps."""
        try:
            s = self.summary()
        except (FileNotFoundError, json.JSONDecodeError):
            return False
        if int(s.get("epochs_run", 0)) >= int(epochs):
            return True
        return max_steps is not None and int(s.get("steps", 0)) >= int(max_steps)

    def summarise(self, sel: str, selected_on: str = "test_selected", select_from_epoch: int = 1) -> dict:
        """The summary ``metrics.jsonl`` implies: ``last`` (last epoch), ``selected`` = ``<split>_selected``
        (best epoch by ``eval_<sel>`` among the epochs from ``select_from_epoch`` on; the last epoch when the
        run ends before it), ``selected_on``."""
        rows = self.metrics()
        if not rows:
            return {"selected_on": selected_on}
        eligible = [r for r in rows if r["epoch"] >= select_from_epoch] or rows[-1:]
        best = max(eligible, key=lambda r: r[f"eval_{sel}"])
        last = {k[5:]: v for k, v in rows[-1].items() if k.startswith("eval_")}
        selected = {k[5:]: v for k, v in best.items() if k.startswith("eval_")}
        split = "test" if selected_on == "test_selected" else "val"
        return {"epochs_run": rows[-1]["epoch"], "steps": rows[-1]["step"], "selection_metric": sel,
                "selected_on": selected_on, "last": last, "selected": selected, "selected_epoch": best["epoch"],
                f"{split}_last": last, f"{split}_selected": selected}


# ---------------------------------------------------------------------------------------------
# Function forms (the names the engine, viz and results have always used)
# ---------------------------------------------------------------------------------------------

def find_runs(root) -> list[Path]:
    """Every run directory (holding ``summary.json`` and ``config.yaml``) under ``root``, sorted."""
    root = Path(root)
    if not root.exists():
        return []
    return sorted(p.parent for p in root.rglob(SUMMARY) if (p.parent / CONFIG).exists())


def read_config(run_dir) -> dict:
    return RunDir(run_dir).config()


def load_metrics(run_dir) -> list[dict]:
    """``metrics.jsonl`` of a run: one dict per epoch."""
    return RunDir(run_dir).metrics()


def load_predictions(run_dir) -> dict:
    """``predictions.npz`` of a run: logits, targets, features and class names."""
    return RunDir(run_dir).predictions()


def save_predictions(run_dir, result: dict, dataset, name: str = PREDICTIONS) -> None:
    """``name`` in ``run_dir`` from an evaluation ``result`` (its ``predictions``) and ``dataset.classes``."""
    p = result["predictions"]
    RunDir(run_dir).save_predictions(p["logits"], p["targets"], p["features"], dataset.classes, name)


def summarise(run_dir, sel: str, selected_on: str = "test_selected", select_from_epoch: int = 1) -> dict:
    """:meth:`RunDir.summarise` of ``run_dir``."""
    return RunDir(run_dir).summarise(sel, selected_on, select_from_epoch)


# ---------------------------------------------------------------------------------------------
# The one aggregator
# ---------------------------------------------------------------------------------------------

def aggregate(runs, keys, metrics, sort: bool = False, drop_empty: bool = False, any_of=()):
    """Mean and sample standard deviation (ddof 1; NaN for one seed) of each of ``metrics`` over the runs
    (seeds) sharing ``keys``.

    Columns: ``keys``, ``n_seeds``, then per ``any_of`` column whether any run of the group has it true,
    then per metric ``<m>_mean``, ``<m>_std`` and ``<m>`` as text, ``"0.8125 ± 0.0442"`` (``"0.8125"`` alone
    for one seed). ``sort``: groups sorted by key (else in order of first appearance); ``drop_empty``: leave
    out metrics absent from ``runs`` or NaN in every run. Keys missing from ``runs`` are ignored.
    """
    import pandas as pd

    keys = [k for k in keys if k in runs]
    metrics = [m for m in metrics if not drop_empty or (m in runs and runs[m].notna().any())]
    if runs.empty or not keys:
        return pd.DataFrame(columns=[*keys, "n_seeds", *any_of])
    g = runs.groupby(keys, sort=sort, dropna=False)
    out = g.size().rename("n_seeds").to_frame()
    for col in any_of:
        out[col] = g[col].any()
    for m in metrics:
        out[f"{m}_mean"] = g[m].mean()
        out[f"{m}_std"] = g[m].std(ddof=1)
        out[m] = [format_mean_std(a, b) for a, b in zip(out[f"{m}_mean"], out[f"{m}_std"])]
    return out.reset_index()
