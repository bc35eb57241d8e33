"""Ablations as a declarative grid of runs over :func:`ferlib.engine.train` (notebook 08).

A grid entry is ``(paper, overrides, seed)``: recipe overrides (``model_kwargs``, ``loss_kwargs``,
any :class:`~ferlib.recipes.Recipe` field) applied to the paper's card for one dataset. A *sweep*
groups the entries of one question (EMO-Net's λ, MMFRM's RFLoss, ...); :data:`PRESETS` holds the
papers' ablations and the code-vs-paper switches the models expose.

Runs live in ``<runs_dir>/ablations/<dataset>/<sweep>/<variant>__s<seed>``; a run whose
``summary.json`` shows the expected epochs (or ``max_steps`` steps) is skipped, an interrupted one
resumes from ``last.pt``. :func:`run_grid` gathers every run into a tidy table (one row per run)
and a mean ± std table over seeds, and draws one plot per sweep::

    res = run_grid("synthetic", "emonet_lambda", epochs=2, seeds=[0, 1])
    res.table          # variant, n_seeds, accuracy_last/selected mean, std, "mean ± std"
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import re
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ferlib.metrics import format_mean_std

#: Metrics gathered per run, in (summary section, key) form → column name.
RUN_METRICS = {
    "accuracy_last": ("last", "accuracy"),
    "accuracy_selected": ("selected", "accuracy"),
    "mean_class_accuracy_selected": ("selected", "mean_class_accuracy"),
    "macro_f1_selected": ("selected", "macro_f1"),
    "accuracy_test_at_val_selected": ("test_at_val_selected", "accuracy"),
}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One setting of a sweep: a label, its recipe overrides and the x-axis value it stands for."""

    label: str
    overrides: dict
    value: Any = None
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A named group of variants of one paper's recipe (one table, one plot)."""

    name: str
    paper: str
    variants: tuple
    axis: str = "variant"
    description: str = ""


@dataclasses.dataclass(frozen=True)
class GridEntry:
    """One run: ``paper``'s recipe with ``overrides`` under ``seed`` (``sweep``/``variant`` name it)."""

    sweep: str
    paper: str
    variant: str
    overrides: dict
    seed: int
    value: Any = None


@dataclasses.dataclass
class AblationResult:
    runs: pd.DataFrame              # one row per run
    table: pd.DataFrame             # mean ± std over seeds per (sweep, variant)
    skipped: list                   # notes on variants left out (missing option, missing card)
    files: list                     # tables and figures written


def _v(label, value=None, note="", **overrides) -> Variant:
    return Variant(label, overrides, value, note)


def _lam(v: float) -> Variant:
    note = {0.8: "as coded (hard-coded in the forward)", 0.5: "README RAF-DB checkpoint",
            0.6: "README RAF-DB/AffectNet checkpoints"}.get(v, "")
    return _v(f"lam={v}", v, note, model_kwargs={"lam": v})


PRESETS: dict[str, Sweep] = {s.name: s for s in (
    Sweep("emonet_lambda", "emonet", tuple(_lam(v) for v in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)), "λ (shortcut weight)",
          "EMO-Net fusion-branch weight λ (specs/emonet.md §2.3: 0.8 coded, 0.5/0.6 released)"),
    Sweep("fermam_label_smoothing", "fermam", (
        _v("ce_only", "CE", "no label-smoothing term", loss_kwargs={"lsce_weight": 0.0}),
        _v("w1_eps0.2", "1 / 0.2", loss_kwargs={"lsce_weight": 1.0, "smoothing": 0.2}),
        _v("w2_eps0.1", "2 / 0.1", loss_kwargs={"lsce_weight": 2.0, "smoothing": 0.1}),
        _v("w2_eps0.2", "2 / 0.2", "as coded (train.py)", loss_kwargs={"lsce_weight": 2.0, "smoothing": 0.2}),
        _v("w2_eps0.3", "2 / 0.3", loss_kwargs={"lsce_weight": 2.0, "smoothing": 0.3}),
        _v("w3_eps0.2", "3 / 0.2", loss_kwargs={"lsce_weight": 3.0, "smoothing": 0.2}),
    ), "LSCE weight / ε", "FERMam CE + w·LSCE(ε) (specs/fermam.md §10)"),
    Sweep("mmfrm_rfloss", "mmfrm", (
        _v("off", "off", "CE only: the paper's without-RFLoss ablation", loss_kwargs={"variant": "off"}),
        _v("as_coded", "as_coded", "RR is a gradient-free constant (spec §5)", loss_kwargs={"variant": "as_coded"}),
        _v("intended", "intended", "differentiable per-class RR", loss_kwargs={"variant": "intended"}),
    ), "RFLoss", "MMFRM RFLoss off / as coded / intended (specs/mmfrm.md §5)"),
    Sweep("grefel_losses", "grefel", (
        _v("ce_only", "CE", loss_kwargs={"lambda_anchor": 0.0, "lambda_center": 0.0}),
        _v("ce+anchor", "CE+A", loss_kwargs={"lambda_anchor": 1.0, "lambda_center": 0.0}),
        _v("ce+center", "CE+C", loss_kwargs={"lambda_anchor": 0.0, "lambda_center": 1.0}),
        _v("all", "CE+A+C", "the paper's loss", loss_kwargs={"lambda_anchor": 1.0, "lambda_center": 1.0}),
        _v("anchors=1", 1, model_kwargs={"num_anchors": 1}),
        _v("anchors=5", 5, model_kwargs={"num_anchors": 5}),
        _v("anchors=10", 10, "the card's anchor count", model_kwargs={"num_anchors": 10}),
    ), "loss terms / anchors per class", "GReFEL loss terms and anchor count (specs/grefel.md §4)"),
    Sweep("mfer_feature_loss", "mfer", (
        _v("none", "none", "released classification loss only", loss_kwargs={"feature_loss": None}),
        _v("lgm", "LGM", loss_kwargs={"feature_loss": "lgm"}),
        _v("dsf", "DSF (approx.)", "our reconstruction of DSF", loss_kwargs={"feature_loss": "dsf"}),
    ), "feature loss", "MFER feature loss: none / LGM / DSF approximation (specs/mfer.md §4)"),
    # Code-vs-paper switches: the upstream code's behaviour against the paper's apparent intent.
    Sweep("fermam_code_vs_paper", "fermam", (
        _v("as_coded", "as coded"),
        _v("ir_tokens=spatial", "spatial tokens", model_kwargs={"ir_tokens": "spatial"}),
        _v("ss2d_merge=vmamba", "VMamba merge", model_kwargs={"ss2d_merge": "vmamba"}),
        _v("asfr_input_gate=delta", "Δ⊙B gate", model_kwargs={"asfr_input_gate": "delta"}),
        _v("asfr_skip=param", "learned D skip", model_kwargs={"asfr_skip": "param"}),
        _v("shuffled_residual", "shuffled residual", model_kwargs={"shuffled_residual": True}),
        _v("cls_pool=mean", "mean pool", model_kwargs={"cls_pool": "mean"}),
        _v("landmark_bn_eval", "landmark BN eval", model_kwargs={"landmark_bn_train": False}),
        _v("conv_only", "conv only", "SS_Conv_SSM ablation (spec §4)", model_kwargs={"conv_ssm_mode": "conv_only"}),
        _v("ssm_only", "SSM only", "SS_Conv_SSM ablation (spec §4)", model_kwargs={"conv_ssm_mode": "ssm_only"}),
    ), "switch", "FERMam upstream quirks against the paper's intent (ferlib/models/fermam/model.py table)"),
    Sweep("mmfrm_code_vs_paper", "mmfrm", (
        _v("as_coded", "as coded", "landmark net in train mode, frozen; RR / 64"),
        _v("landmark_eval", "landmark eval", model_kwargs={"landmark_mode": "eval"}),
        _v("landmark_follow", "landmark follows", model_kwargs={"landmark_mode": "follow"}),
        _v("train_landmark", "landmark trained", model_kwargs={"train_landmark": True}),
        _v("intended_rr_batch", "intended RR / B", loss_kwargs={"variant": "intended", "normalizer": "batch"}),
    ), "switch", "MMFRM code quirks (specs/mmfrm.md §10)"),
    Sweep("grefel_code_vs_paper", "grefel", (
        _v("grefel", "GReFEL"),
        _v("arbex", "ARBEx (code)", "predecessor code's variant and loss",
           model_kwargs={"variant": "arbex"}, loss="arbex_loss"),
        _v("batch_coupled_attention", "batch-coupled attn", model_kwargs={"batch_coupled_attention": True}),
        _v("anchor_init=zeros", "zero anchors", model_kwargs={"anchor_init": "zeros"}),
        _v("no_balanced_prediction", "no balancing", model_kwargs={"balanced_prediction": False}),
        _v("anchor_loss=arbex", "ARBEx anchor loss", loss_kwargs={"anchor_loss": "arbex"}),
        _v("center_confidence", "confidence-weighted centre", loss_kwargs={"center_confidence": True}),
    ), "switch", "GReFEL against its predecessor ARBEx's code (specs/grefel.md [quirk]s)"),
    Sweep("mfer_code_vs_paper", "mfer", (
        _v("lgm_w1", "LGM ×1", "train.py adds the feature loss unweighted",
           loss_kwargs={"feature_loss": "lgm", "feature_loss_weight": 1.0}),
        _v("lgm_w0.001", "LGM ×0.001", "--weight_loss 0.001 (parsed, never used)",
           loss_kwargs={"feature_loss": "lgm", "feature_loss_weight": 0.001}),
    ), "feature-loss weight", "MFER: the parsed but unused --weight_loss (specs/mfer.md §5)"),
)}

#: The papers' own ablations (``grid="papers"``) and the code-vs-paper switches (``"code_vs_paper"``).
GROUPS = {
    "papers": ("emonet_lambda", "fermam_label_smoothing", "mmfrm_rfloss", "grefel_losses", "mfer_feature_loss"),
    "code_vs_paper": ("fermam_code_vs_paper", "mmfrm_code_vs_paper", "grefel_code_vs_paper", "mfer_code_vs_paper"),
}
GROUPS["all"] = GROUPS["papers"] + GROUPS["code_vs_paper"]


def list_presets() -> list[str]:
    return list(PRESETS)


def sweep_from_dict(spec: dict) -> Sweep:
    """A sweep from a small dict: ``{"paper": "baseline", "name": "lr", "axis": "lr",
    "variants": {"lr=1e-3": {"lr": 1e-3}, "lr=1e-2": {"lr": 1e-2}}}`` (``variants`` may also be a
    list of ``{"label", "overrides", "value"}`` dicts)."""
    if "paper" not in spec or "variants" not in spec:
        raise ValueError(f"a grid dict needs 'paper' and 'variants' keys, got {sorted(spec)}")
    variants = spec["variants"]
    if isinstance(variants, dict):
        vs = tuple(Variant(str(k), dict(v or {}), k) for k, v in variants.items())
    else:
        vs = tuple(Variant(str(v["label"]), dict(v.get("overrides") or {}), v.get("value", v["label"]),
                           v.get("note", "")) for v in variants)
    return Sweep(spec.get("name", "custom"), spec["paper"], vs, spec.get("axis", "variant"), spec.get("description", ""))


def resolve_sweeps(grid) -> list[Sweep]:
    """``grid``: a preset name, a group (``papers``, ``code_vs_paper``, ``all``), a sweep dict, or a list of these."""
    if isinstance(grid, Sweep):
        return [grid]
    if isinstance(grid, dict):
        return [sweep_from_dict(grid)]
    if isinstance(grid, str):
        if grid in GROUPS:
            return [PRESETS[n] for n in GROUPS[grid]]
        if grid not in PRESETS:
            raise KeyError(f"unknown ablation grid {grid!r}; presets: {list(PRESETS)}, groups: {list(GROUPS)}")
        return [PRESETS[grid]]
    return [s for g in grid for s in resolve_sweeps(g)]


# ---------------------------------------------------------------------------------------------
# Checking that a variant can run (the paper engineers' options may not exist yet)
# ---------------------------------------------------------------------------------------------

def _accepted_names(fn) -> tuple[set, bool]:
    """Keyword names ``fn`` accepts and whether it also takes ``**kwargs``."""
    params = inspect.signature(fn).parameters.values()
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def model_accepts(model: str, option: str) -> bool:
    """Whether ``create_model(model, option=...)`` is a real option: the factory's keywords, then
    (when it forwards ``**kwargs``) those of the class it returns."""
    from ferlib.models import model_entrypoint

    try:
        fn = model_entrypoint(model)
    except KeyError:
        return False
    names, var = _accepted_names(fn)
    if option in names:
        return True
    if not var:
        return False
    try:
        ret = typing.get_type_hints(fn).get("return")
    except Exception:  # unresolved annotation: cannot tell, trust the factory
        return True
    if inspect.isclass(ret):
        names, var = _accepted_names(ret.__init__)
        return option in names or var
    return True


def _build_on_meta(recipe) -> str | None:
    """Build the recipe's model on the meta device (no memory, no compute): the error of an option
    the model does not take or a value it refuses, else None. Other failures are left to training."""
    import torch

    from ferlib.models import create_model

    try:
        with torch.device("meta"):
            create_model(recipe.model, num_classes=recipe.num_classes, **recipe.model_kwargs)
    except TypeError as e:
        if "unexpected keyword" in str(e):
            return str(e)
    except ValueError as e:
        return str(e)
    except Exception:  # noqa: BLE001 - e.g. an op without a meta kernel: not the option's fault
        return None
    return None


def check_variant(sweep: Sweep, variant: Variant, dataset: str) -> str | None:
    """``None`` when the variant can run on ``dataset``; otherwise why not (a note for the table)."""
    from ferlib.engine.run import build_loss
    from ferlib.recipes import load_recipe

    try:
        recipe = load_recipe(sweep.paper, dataset, **variant.overrides)
    except (FileNotFoundError, KeyError, TypeError) as e:
        return f"{sweep.name}/{variant.label}: no recipe ({e})"
    for opt in (variant.overrides.get("model_kwargs") or {}):
        if not model_accepts(recipe.model, opt):
            return f"{sweep.name}/{variant.label}: model {recipe.model!r} has no option {opt!r} yet"
    if variant.overrides.get("model_kwargs"):
        why = _build_on_meta(recipe)
        if why:
            return f"{sweep.name}/{variant.label}: model {recipe.model!r} rejects {variant.overrides['model_kwargs']} ({why})"
    try:
        build_loss(recipe)
    except (KeyError, TypeError, ValueError) as e:
        return f"{sweep.name}/{variant.label}: loss {recipe.loss!r} rejects {recipe.loss_kwargs} ({e})"
    return None


def expand(grid, dataset: str, seeds=(0,)) -> tuple[list[GridEntry], list[str]]:
    """Grid entries for ``dataset`` (variant × seed, in preset order) and the notes of skipped variants."""
    entries, skipped = [], []
    for sweep in resolve_sweeps(grid):
        for variant in sweep.variants:
            why = check_variant(sweep, variant, dataset)
            if why:
                skipped.append(why)
                continue
            for seed in seeds:
                entries.append(GridEntry(sweep.name, sweep.paper, variant.label, variant.overrides, int(seed),
                                         variant.value))
    return entries, skipped


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", str(text)).strip("_") or "x"


def entry_run_dir(entry: GridEntry, dataset: str, runs_dir) -> Path:
    return Path(runs_dir) / "ablations" / _slug(dataset) / _slug(entry.sweep) / f"{_slug(entry.variant)}__s{entry.seed}"


def _spec(entry: GridEntry, dataset: str, extra: dict) -> dict:
    """What identifies a run's content (epochs / max_steps only decide whether it is complete)."""
    return json.loads(json.dumps({"paper": entry.paper, "dataset": dataset, "overrides": entry.overrides,
                                  "seed": entry.seed, **extra}, sort_keys=True, default=str))


def spec_digest(spec: dict) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def is_complete(run_dir, epochs: int, max_steps: int | None = None) -> bool:
    """``summary.json`` exists and shows ``epochs`` epochs run, or at least ``max_steps`` steps."""
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        return False
    try:
        s = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    if int(s.get("epochs_run", 0)) >= int(epochs):
        return True
    return max_steps is not None and int(s.get("steps", 0)) >= int(max_steps)


def run_entry(entry: GridEntry, dataset: str = "synthetic", runs_dir=None, data_root=None, epochs: int | None = None,
              max_steps: int | None = None, val_fraction: float | None = None, dataset_kwargs: dict | None = None,
              progress: bool = False, run_dir=None) -> tuple[Path, str]:
    """Train one grid entry unless already complete; returns (run dir, ``"skipped"``/``"ran"``/``"resumed"``).

    ``run_dir``: where to train (default :func:`entry_run_dir` under ``runs_dir``)."""
    from ferlib.engine import train
    from ferlib.paths import results_dir
    from ferlib.recipes import load_recipe

    runs_dir = Path(runs_dir) if runs_dir else results_dir() / "runs"
    run_dir = Path(run_dir) if run_dir else entry_run_dir(entry, dataset, runs_dir)
    overrides = dict(entry.overrides)
    if dataset_kwargs is not None:
        overrides["dataset_kwargs"] = dict(dataset_kwargs)
    spec = _spec(entry, dataset, {"dataset_kwargs": dataset_kwargs, "val_fraction": val_fraction})
    expected = load_recipe(entry.paper, dataset, epochs=epochs, **overrides).epochs
    spec_file = run_dir / "ablation.json"
    same = spec_file.exists() and json.loads(spec_file.read_text()).get("digest") == spec_digest(spec)
    if same and is_complete(run_dir, expected, max_steps):
        return run_dir, "skipped"
    status = "resumed" if same and (run_dir / "last.pt").exists() else "ran"
    run_dir.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(json.dumps({**spec, "digest": spec_digest(spec), "sweep": entry.sweep,
                                     "variant": entry.variant, "value": entry.value}, indent=2, default=str))
    train(entry.paper, dataset, data_root=data_root, run_dir=run_dir, epochs=epochs, max_steps=max_steps,
          seed=entry.seed, resume="auto" if same else False, overwrite=not same, val_fraction=val_fraction, progress=progress, **overrides)
    return run_dir, status


def run_record(run_dir) -> dict:
    """The metrics of one run directory as a flat dict (NaN where a section is absent)."""
    s = json.loads((Path(run_dir) / "summary.json").read_text())
    row = {"epochs_run": s.get("epochs_run"), "steps": s.get("steps"), "selected_on": s.get("selected_on"),
           "selected_epoch": s.get("selected_epoch")}
    for col, (section, key) in RUN_METRICS.items():
        row[col] = float((s.get(section) or {}).get(key, np.nan))
    return row


def aggregate(runs: pd.DataFrame, keys=("sweep", "paper", "variant"), metrics=None) -> pd.DataFrame:
    """Mean and sample standard deviation (ddof 1; NaN for one seed) of each metric over seeds.

    Adds ``<metric>_mean``, ``<metric>_std`` and a text column ``<metric>`` = ``"0.8125 ± 0.0442"``
    (``"0.8125"`` alone for one seed); ``n_seeds`` counts the runs. Row order = first appearance.
    """
    metrics = [m for m in (metrics or RUN_METRICS) if m in runs and runs[m].notna().any()]
    keys = [k for k in keys if k in runs]
    g = runs.groupby(keys, sort=False, dropna=False)
    out = g.size().rename("n_seeds").to_frame()
    for m in metrics:
        out[f"{m}_mean"] = g[m].mean()
        out[f"{m}_std"] = g[m].std(ddof=1)
        out[m] = [format_mean_std(a, b) for a, b in zip(out[f"{m}_mean"], out[f"{m}_std"])]
    return out.reset_index()


def plot_sweep(runs: pd.DataFrame, sweep: Sweep | str, dataset: str = "", ax=None):
    """Bars of mean accuracy (± std over seeds) per variant, seeds as dots: last and selected epoch on
    the test split, or, for runs that held out a validation split, validation and test accuracy at
    the epoch selected on validation."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    name = sweep.name if isinstance(sweep, Sweep) else sweep
    sub = runs[runs["sweep"] == name]
    sel_on = sub["selected_on"].dropna().unique()
    sel_label = f"selected ({', '.join(map(str, sel_on))})" if len(sel_on) else "selected"
    if sub["accuracy_test_at_val_selected"].notna().any():  # selected on a held-out split: show test numbers
        long = pd.concat([
            sub.assign(metric="validation, selected epoch", accuracy=sub["accuracy_selected"]),
            sub.assign(metric="test, epoch selected on validation", accuracy=sub["accuracy_test_at_val_selected"]),
        ])
    else:
        long = pd.concat([
            sub.assign(metric="last epoch", accuracy=sub["accuracy_last"]),
            sub.assign(metric=sel_label, accuracy=sub["accuracy_selected"]),
        ])
    order = list(dict.fromkeys(sub["variant"]))
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(order) + 2), 3.6))
    else:
        fig = ax.figure
    sns.barplot(data=long, x="variant", y="accuracy", hue="metric", order=order, errorbar="sd", ax=ax, alpha=0.85)
    sns.stripplot(data=long, x="variant", y="accuracy", hue="metric", order=order, dodge=True, ax=ax,
                  palette="dark:k", size=3, legend=False)
    axis = sweep.axis if isinstance(sweep, Sweep) else "variant"
    n = int(sub.groupby("variant")["seed"].nunique().max()) if len(sub) else 0
    ax.set_xlabel(axis)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{name} on {dataset} (mean ± std over {n} seed{'s' if n != 1 else ''})")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def run_grid(dataset: str = "synthetic", grid="emonet_lambda", epochs: int | None = None, max_steps: int | None = None,
             seeds=(0,), data_root=None, runs_dir=None, tables_dir=None, figures_dir=None,
             val_fraction: float | None = None, dataset_kwargs: dict | None = None, progress: bool = False,
             plot: bool = True) -> AblationResult:
    """Run (or skip when complete) every entry of ``grid`` on ``dataset``, gather, tabulate and plot.

    Writes ``<tables_dir>/ablation_<sweep>_<dataset>.csv`` (mean ± std), ``..._runs.csv`` (one row
    per run) and ``<figures_dir>/ablation_<sweep>_<dataset>.png/.svg``.
    """
    import matplotlib.pyplot as plt

    from ferlib.paths import results_dir
    from ferlib.viz.io import save_figure

    if isinstance(seeds, int):
        seeds = [seeds]
    runs_dir = Path(runs_dir) if runs_dir else results_dir() / "runs"
    tables_dir = Path(tables_dir) if tables_dir else results_dir() / "tables"
    figures_dir = Path(figures_dir) if figures_dir else results_dir() / "figures"
    sweeps = resolve_sweeps(grid)
    entries, skipped = expand(sweeps, dataset, seeds)
    for note in skipped:
        print(f"skipped {note}", flush=True)
    rows = []
    for i, e in enumerate(entries):
        print(f"[{i + 1}/{len(entries)}] {e.sweep} / {e.variant} / seed {e.seed}", flush=True)
        run_dir, status = run_entry(e, dataset, runs_dir, data_root, epochs, max_steps, val_fraction,
                                    dataset_kwargs, progress)
        rows.append({"sweep": e.sweep, "paper": e.paper, "dataset": dataset, "variant": e.variant,
                     "value": e.value, "seed": e.seed, "status": status, **run_record(run_dir),
                     "overrides": json.dumps(e.overrides, sort_keys=True), "run_dir": str(run_dir)})
    columns = ["sweep", "paper", "dataset", "variant", "value", "seed", "status", "epochs_run", "steps", "selected_on",
               "selected_epoch", *RUN_METRICS, "overrides", "run_dir"]
    runs = pd.DataFrame(rows, columns=columns)
    table = aggregate(runs) if len(runs) else pd.DataFrame(columns=["sweep", "paper", "variant", "n_seeds"])
    files = []
    for sweep in sweeps:
        if not len(runs) or not (runs["sweep"] == sweep.name).any():
            continue
        stem = f"ablation_{_slug(sweep.name)}_{_slug(dataset)}"
        tables_dir.mkdir(parents=True, exist_ok=True)
        for df, path in ((table[table["sweep"] == sweep.name], tables_dir / f"{stem}.csv"),
                         (runs[runs["sweep"] == sweep.name], tables_dir / f"{stem}_runs.csv")):
            df.to_csv(path, index=False)
            files.append(path)
        if plot:
            fig = plot_sweep(runs, sweep, dataset)
            files += save_figure(fig, figures_dir / f"{stem}.png")
            plt.close(fig)
    return AblationResult(runs, table, skipped, files)


# ---------------------------------------------------------------------------------------------
# The minimal runs notebook 09 draws when there is nothing to draw
# ---------------------------------------------------------------------------------------------

#: Papers whose figure runs are a preset sweep rather than the card alone: MFER's README compares
#: t-SNE plots without feature loss, with LGM and with DSF.
FIGURE_SWEEPS = {"mfer": "mfer_feature_loss"}


def minimal_runs(runs_dir=None, dataset: str = "synthetic", max_steps: int | None = 2, papers=("baseline", "mfer"),
                 dataset_kwargs: dict | None = None, epochs: int = 1) -> list[Path]:
    """When ``runs_dir`` holds no run, train what notebook 09 needs to draw every kind of figure: each
    paper's card run, or the variants of its :data:`FIGURE_SWEEPS` sweep, ``epochs`` epochs bounded by
    ``max_steps``, in ``<runs_dir>/minimal/<paper>_<dataset>_<variant>`` (through :func:`run_entry`, so
    an interrupted set resumes). Returns the run directories (those found when there were some)."""
    from ferlib.paths import results_dir
    from ferlib.results import find_runs

    runs_dir = Path(runs_dir) if runs_dir else results_dir() / "runs"
    existing = find_runs(runs_dir)
    if existing:
        return existing
    sweeps = [PRESETS[FIGURE_SWEEPS[p]] if p in FIGURE_SWEEPS else Sweep("card", p, (Variant("card", {}),))
              for p in papers]
    entries, skipped = expand(sweeps, dataset)
    for note in skipped:
        print(f"skipped {note}", flush=True)
    out = []
    for e in entries:
        print(f"training {e.paper} / {e.variant} on {dataset} (max_steps={max_steps})", flush=True)
        run_dir = runs_dir / "minimal" / f"{_slug(e.paper)}_{_slug(dataset)}_{_slug(e.variant)}"
        out.append(run_entry(e, dataset, runs_dir, epochs=epochs, max_steps=max_steps, dataset_kwargs=dataset_kwargs,
                             run_dir=run_dir)[0])
    return out
