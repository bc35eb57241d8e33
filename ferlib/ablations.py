"""Ablations as a declarative grid of runs over :func:`ferlib.engine.train` (notebook 08).

A grid entry is ``(paper, overrides, seed)``: recipe overrides (``model_kwargs``, ``loss_kwargs``,
any :class:`~ferlib.recipes.Recipe` field) applied to the paper's card for one dataset. A *sweep*
groups the entries of one question (EMO-Net's λ, MMFRM's RFLoss, ...). Each paper's sweeps live in its
recipe card's ``ablations:`` section (``ferlib/recipes/<paper>.yaml``): :data:`PRESETS` gathers them
by name, :data:`GROUPS` by the cards' ``group:`` (the papers' ablations, the code-vs-paper switches the
models expose); a card added with sweeps puts them in the grid with no edit here. Before any training
every variant's recipe, model (on the meta device) and loss are built: an override that does not exist
stops the grid with :class:`AblationError`.

Runs live in ``<runs_dir>/ablations/<dataset>/<sweep>/<variant>__s<seed>``; a run whose
``summary.json`` shows the expected epochs (or ``max_steps`` steps) is skipped, an interrupted one
resumes from ``last.pt``; an entry another process is training is skipped for now and taken up again when
that process lets it go (:func:`run_entries`: two processes share a grid). :func:`run_grid` gathers every run
into a tidy table (one row per run) and a mean ± std table over seeds, and draws one plot per sweep::

    res = run_grid("synthetic", "emonet_lambda", epochs=2, seeds=[0, 1])
    res.table          # variant, n_seeds, accuracy_last/selected mean, std, "mean ± std"
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ferlib import run_dir as _run_dir
from ferlib.recipes import SWEEP_GROUPS, RecipeError, card_ablations, list_recipes

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
    group: str = ""                 # the card's group: "papers" or "code_vs_paper"
    figure: bool = False            # notebook 09 draws the paper from this sweep's runs


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
    skipped: list                   # notes on variants left out (no recipe for the dataset)
    files: list                     # tables and figures written


def sweep_from_dict(spec: dict) -> Sweep:
    """A sweep from a small dict: ``{"paper": "baseline", "name": "lr", "axis": "lr",
    "variants": {"lr=1e-3": {"lr": 1e-3}, "lr=1e-2": {"lr": 1e-2}}}`` (``variants`` may also be a
    list of ``{"label", "overrides", "value", "note"}`` dicts, as in a card's ``ablations:`` section)."""
    if "paper" not in spec or "variants" not in spec:
        raise ValueError(f"a grid dict needs 'paper' and 'variants' keys, got {sorted(spec)}")
    variants = spec["variants"]
    if isinstance(variants, dict):
        vs = tuple(Variant(str(k), dict(v or {}), k) for k, v in variants.items())
    else:
        vs = tuple(Variant(str(v["label"]), dict(v.get("overrides") or {}), v.get("value", v["label"]),
                           v.get("note", "")) for v in variants)
    return Sweep(spec.get("name", "custom"), spec["paper"], vs, spec.get("axis", "variant"), spec.get("description", ""),
                 spec.get("group", ""), bool(spec.get("figure", False)))


def card_sweeps(paper: str) -> list[Sweep]:
    """The sweeps of ``paper``'s recipe card (its ``ablations:`` section), in card order."""
    return [sweep_from_dict({**spec, "paper": paper}) for spec in card_ablations(paper)]


def load_presets() -> dict[str, Sweep]:
    """Every card's sweeps by name: the papers' ablations, then the code-vs-paper switches (cards in name
    order within a group). A name is a run directory, so two cards may not use the same one."""
    out: dict[str, Sweep] = {}
    for sweep in sorted((s for paper in list_recipes() for s in card_sweeps(paper)),
                        key=lambda s: SWEEP_GROUPS.index(s.group)):
        if sweep.name in out:
            raise RecipeError(f"ablation sweep {sweep.name!r} is in both {out[sweep.name].paper}.yaml and "
                              f"{sweep.paper}.yaml; sweep names must be unique over the cards")
        out[sweep.name] = sweep
    return out


#: Every card's sweeps by name (read from the cards when this module is imported).
PRESETS: dict[str, Sweep] = load_presets()

#: The papers' own ablations (``grid="papers"``), the code-vs-paper switches (``"code_vs_paper"``) and
#: both (``"all"``), from each sweep's ``group:`` in its card.
GROUPS = {g: tuple(n for n, s in PRESETS.items() if s.group == g) for g in SWEEP_GROUPS}
GROUPS["all"] = tuple(PRESETS)


def list_presets() -> list[str]:
    return list(PRESETS)


def figure_sweeps(papers=None) -> list[Sweep]:
    """The ``figures`` grid, what notebook 09 trains when it has nothing to draw: for each paper (default:
    every card) its card's ``figure: true`` sweeps (MFER: no feature loss / LGM / DSF, the README's
    t-SNE plots), else its card run alone (sweep ``<paper>_card``, variant ``card``)."""
    out = []
    for paper in list_recipes() if papers is None else papers:
        own = [s for s in card_sweeps(paper) if s.figure]
        out += own or [Sweep(f"{paper}_card", paper, (Variant("card", {}, "card"),), description=f"the {paper} card")]
    return out


def resolve_sweeps(grid) -> list[Sweep]:
    """``grid``: a preset name, a group (``papers``, ``code_vs_paper``, ``all``), ``figures``
    (:func:`figure_sweeps`), a :class:`Sweep`, a sweep dict, or a list of these."""
    if isinstance(grid, Sweep):
        return [grid]
    if isinstance(grid, dict):
        return [sweep_from_dict(grid)]
    if isinstance(grid, str):
        if grid in GROUPS:
            return [PRESETS[n] for n in GROUPS[grid]]
        if grid == "figures":
            return figure_sweeps()
        if grid not in PRESETS:
            raise KeyError(f"unknown ablation grid {grid!r}; presets: {list(PRESETS)}, "
                           f"groups: {[*GROUPS, 'figures']}")
        return [PRESETS[grid]]
    return [s for g in grid for s in resolve_sweeps(g)]


def select_variants(sweeps, variants: dict | None = None) -> list[Sweep]:
    """``sweeps`` with only the variants ``variants[sweep name]`` lists, each by its label or its value
    (``"lam=0.5"`` or ``0.5``), in the card's order; a sweep not named keeps all its variants. ``KeyError``
    names an unknown sweep or variant and the ones there are."""
    sweeps = list(sweeps)
    if not variants:
        return sweeps
    by_name = {s.name: s for s in sweeps}
    if unknown := sorted(set(variants) - set(by_name)):
        raise KeyError(f"variants names sweeps {unknown} that are not in the grid {list(by_name)}")
    out = []
    for sweep in sweeps:
        keep = variants.get(sweep.name)
        if keep is None:
            out.append(sweep)
            continue
        labels = [v.label for v in sweep.variants]
        values = [v.value for v in sweep.variants]
        if missing := [k for k in keep if k not in labels and k not in values]:
            raise KeyError(f"sweep {sweep.name!r} has no variant {missing}; its variants: {labels}")
        out.append(dataclasses.replace(sweep, variants=tuple(v for v in sweep.variants
                                                             if v.label in keep or v.value in keep)))
    return out


# ---------------------------------------------------------------------------------------------
# Checking a grid before training: every override is one the recipe, the model and the loss take
# ---------------------------------------------------------------------------------------------

class AblationError(ValueError):
    """A variant's overrides do not build: a recipe field, model option or loss option that does not
    exist, or a value its owner refuses."""


#: Models (name, classes, model_kwargs) already built on the meta device in this process: a grid checks
#: each once (the loss-only variants of a sweep share their model).
_BUILT_ON_META: set = set()


def check_variant(sweep: Sweep, variant: Variant, dataset: str) -> str | None:
    """Build the variant's recipe, its model on the meta device (no memory, no compute) and its loss.

    ``None`` when they build; a note when ``sweep.paper`` has no recipe for ``dataset`` (the variant is left
    out); :class:`AblationError` when an override is not one the recipe, the model or the loss takes."""
    import torch

    from ferlib.engine.training import build_loss
    from ferlib.models import create_model
    from ferlib.recipes import load_recipe

    where = f"{sweep.name}/{variant.label}"
    try:
        recipe = load_recipe(sweep.paper, dataset, **variant.overrides)
    except (FileNotFoundError, KeyError) as e:  # no card, or no entry for the dataset in it
        return f"{where}: no recipe ({e})"
    except (TypeError, ValueError) as e:
        raise AblationError(f"{where}: the recipe rejects {variant.overrides} ({e})") from e
    key = (recipe.model, recipe.num_classes, repr(sorted(recipe.model_kwargs.items())))
    if key not in _BUILT_ON_META:
        try:
            with torch.device("meta"):
                create_model(recipe.model, num_classes=recipe.num_classes, **recipe.model_kwargs)
        except Exception as e:  # noqa: BLE001 - re-raised with the variant named
            raise AblationError(f"{where}: model {recipe.model!r} rejects model_kwargs {recipe.model_kwargs} "
                                f"({type(e).__name__}: {e})") from e
        _BUILT_ON_META.add(key)
    try:
        build_loss(recipe)
    except Exception as e:  # noqa: BLE001 - re-raised with the variant named
        raise AblationError(f"{where}: loss {recipe.loss!r} rejects loss_kwargs {recipe.loss_kwargs} "
                            f"({type(e).__name__}: {e})") from e
    return None


def expand(grid, dataset: str, seeds=(0,)) -> tuple[list[GridEntry], list[str]]:
    """Grid entries for ``dataset`` (variant × seed, in preset order) and the notes of variants left out
    because their paper has no recipe for ``dataset``. Every variant is checked (:func:`check_variant`)
    first: :class:`AblationError` lists all that do not build, before anything trains."""
    entries, skipped, errors = [], [], []
    for sweep in resolve_sweeps(grid):
        for variant in sweep.variants:
            try:
                why = check_variant(sweep, variant, dataset)
            except AblationError as e:
                errors.append(str(e))
                continue
            if why:
                skipped.append(why)
                continue
            for seed in seeds:
                entries.append(GridEntry(sweep.name, sweep.paper, variant.label, variant.overrides, int(seed),
                                         variant.value))
    if errors:
        raise AblationError(f"{len(errors)} variant(s) do not build on {dataset!r}:\n  " + "\n  ".join(errors))
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


def run_entry(entry: GridEntry, dataset: str = "synthetic", runs_dir=None, data_root=None, epochs: int | None = None,
              max_steps: int | None = None, val_fraction: float | None = None, dataset_kwargs: dict | None = None,
              progress: bool = False, run_dir=None) -> tuple[Path, str]:
    """Train one grid entry unless already complete; returns (run dir, ``"skipped"``/``"ran"``/``"resumed"``).

    ``run_dir``: where to train (default :func:`entry_run_dir` under ``runs_dir``). The run directory's lock is
    held from the completeness check to the end of training, so that two processes running one grid never train
    an entry twice: :class:`ferlib.run_dir.RunLockedError` when another process holds it (:func:`run_grid` then
    comes back to the entry later)."""
    from ferlib.engine import DataOptions, RunDirOptions, train
    from ferlib.paths import results_dir
    from ferlib.recipes import load_recipe

    runs_dir = Path(runs_dir) if runs_dir else results_dir() / "runs"
    run_dir = Path(run_dir) if run_dir else entry_run_dir(entry, dataset, runs_dir)
    overrides = dict(entry.overrides)
    if dataset_kwargs is not None:
        overrides["dataset_kwargs"] = dict(dataset_kwargs)
    spec = _spec(entry, dataset, {"dataset_kwargs": dataset_kwargs, "val_fraction": val_fraction})
    expected = load_recipe(entry.paper, dataset, epochs=epochs, **overrides).epochs
    rd = _run_dir.RunDir(run_dir)
    with rd.lock():
        same = rd.ablation_spec().get("digest") == spec_digest(spec)
        if same and rd.is_complete(expected, max_steps):
            return run_dir, "skipped"
        status = "resumed" if same and (run_dir / "last.pt").exists() else "ran"
        rd.write_ablation_spec({**spec, "digest": spec_digest(spec), "sweep": entry.sweep, "variant": entry.variant,
                                "value": entry.value})
        train(entry.paper, dataset, RunDirOptions(run_dir, resume="auto" if same else False, overwrite=not same),
              DataOptions(data_root, val_fraction=val_fraction), epochs=epochs, max_steps=max_steps, seed=entry.seed,
              progress=progress, **overrides)
    return run_dir, status


def run_entries(entries, dataset: str, poll_s: float = 2.0, **kw) -> list[tuple]:
    """:func:`run_entry` of each entry; an entry another process is training (its run directory locked) is left
    for later and taken up again once that process lets it go: skipped when it finished there, resumed when it
    did not (a killed process's lock is taken over). Several processes running one grid, one per GPU, thus
    share its entries and each entry ends with one complete run. Returns ``[(entry, run_dir, status)]`` in
    ``entries`` order."""
    import time

    done: dict[int, tuple] = {}
    pending = list(range(len(entries)))
    waiting: set[int] = set()
    while pending:
        progressed = False
        for i in list(pending):
            e = entries[i]
            if i not in waiting:
                print(f"[{i + 1}/{len(entries)}] {e.sweep} / {e.variant} / seed {e.seed}", flush=True)
            try:
                run_dir, status = run_entry(e, dataset, **kw)
            except _run_dir.RunLockedError as err:
                if i not in waiting:
                    print(f"  held by another process ({err.holder}): coming back to it later", flush=True)
                    waiting.add(i)
                continue
            done[i] = (e, run_dir, status)
            pending.remove(i)
            progressed = True
        if pending and not progressed:
            time.sleep(poll_s)
    return [done[i] for i in range(len(entries))]


def baseline_rates(run_dir) -> dict:
    """What a model that learnt nothing scores on the run's evaluation split (its ``predictions.npz``):
    ``majority`` = share of the most frequent class (always predicting it), ``chance`` = 1 / classes.
    NaN for both when the run saved no predictions."""
    try:
        p = _run_dir.RunDir(run_dir).predictions()
    except FileNotFoundError:
        return {"majority": np.nan, "chance": np.nan}
    counts = np.bincount(np.asarray(p["targets"]).astype(int), minlength=len(p["classes"]))
    return {"majority": float(counts.max() / counts.sum()), "chance": 1.0 / len(p["classes"])}


def run_record(run_dir) -> dict:
    """The metrics of one run directory as a flat dict (NaN where a section is absent), with the
    majority-class and chance rates of its evaluation split (:func:`baseline_rates`)."""
    s = _run_dir.RunDir(run_dir).summary()
    row = {"epochs_run": s.get("epochs_run"), "steps": s.get("steps"), "selected_on": s.get("selected_on"),
           "selected_epoch": s.get("selected_epoch")}
    for col, (section, key) in RUN_METRICS.items():
        row[col] = float((s.get(section) or {}).get(key, np.nan))
    return {**row, **baseline_rates(run_dir)}


#: p-value under which a sweep's variants are said to differ (one-way ANOVA over seeds, :func:`seed_verdict`).
ALPHA = 0.05


def plotted_metric(sub: pd.DataFrame) -> tuple[str, str]:
    """(column, axis label) a sweep's figure shows: the test accuracy at the epoch selected on the
    held-out validation split when the runs held one out, else the last epoch's test accuracy (never an
    epoch chosen on the test split itself)."""
    if "accuracy_test_at_val_selected" in sub and sub["accuracy_test_at_val_selected"].notna().any():
        return "accuracy_test_at_val_selected", "test accuracy (epoch selected on validation)"
    return "accuracy_last", "test accuracy (last epoch)"


def seed_verdict(sub: pd.DataFrame, metric: str) -> tuple[str, float]:
    """Do the variants of one sweep differ beyond the spread over seeds?

    One-way ANOVA (:func:`scipy.stats.f_oneway`) of ``metric`` with the variants as groups and the
    seeds as samples. Returns ``(text, p)``: ``"variants differ (one-way ANOVA p = 0.003)"`` when
    p < :data:`ALPHA`, ``"no difference beyond seed variance (…)"`` otherwise, and a note without a
    test when a variant has fewer than 2 seeds (p NaN)."""
    from scipy.stats import f_oneway

    groups = [g[metric].dropna().to_numpy() for _, g in sub.groupby("variant", sort=False)]
    if len(groups) < 2 or min(len(g) for g in groups) < 2:
        return "fewer than 2 seeds per variant: no test of a difference", float("nan")
    if all(np.ptp(g) == 0 for g in groups):  # no spread over seeds: the test is undefined
        same = len({float(g[0]) for g in groups}) == 1
        return ("no difference beyond seed variance (identical runs)" if same
                else "variants differ (no spread over seeds)"), (1.0 if same else 0.0)
    p = float(f_oneway(*groups).pvalue)
    word = "variants differ" if p < ALPHA else "no difference beyond seed variance"
    return f"{word} (one-way ANOVA p = {p:.2g})", p


def sweep_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (sweep, paper, variant) of a grid's runs (one row per run and seed, :data:`RUN_METRICS`
    columns): ``n_seeds``, each metric's mean ± sample std over seeds (:func:`ferlib.run_dir.aggregate`, metrics
    absent or NaN everywhere left out, rows in order of first appearance) and the sweep's ``verdict``
    (:func:`seed_verdict` on :func:`plotted_metric`), the figure title's words beside the numbers they are about."""
    if not len(runs):
        return pd.DataFrame(columns=["sweep", "paper", "variant", "n_seeds"])
    table = _run_dir.aggregate(runs, ("sweep", "paper", "variant"), RUN_METRICS, drop_empty=True)
    verdicts = {n: seed_verdict(sub, plotted_metric(sub)[0])[0] for n, sub in runs.groupby("sweep", sort=False)}
    table["verdict"] = table["sweep"].map(verdicts)
    return table


def plot_sweep(runs: pd.DataFrame, sweep: Sweep | str, dataset: str = "", ax=None):
    """Mean ± std over seeds per variant (black bar), every seed as a dot, and dashed / dotted lines at
    the majority-class and chance rates of the evaluation split. The title says whether the variants
    differ beyond the spread over seeds (:func:`seed_verdict`), so a figure never implies an effect the
    seeds do not support. The metric: :func:`plotted_metric`."""
    import matplotlib.pyplot as plt

    name = sweep.name if isinstance(sweep, Sweep) else sweep
    sub = runs[runs["sweep"] == name]
    metric, ylabel = plotted_metric(sub)
    order = list(dict.fromkeys(sub["variant"]))
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(order) + 2.5), 3.8))
    else:
        fig = ax.figure
    rng = np.random.default_rng(0)
    for i, variant in enumerate(order):
        vals = sub.loc[sub["variant"] == variant, metric].dropna().to_numpy()
        if not len(vals):
            continue
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(vals)), vals, s=22, color="tab:blue", alpha=0.75, zorder=3,
                   label="one seed" if i == 0 else None)
        sd = vals.std(ddof=1) if len(vals) > 1 else 0.0
        ax.errorbar(i + 0.25, vals.mean(), yerr=sd, fmt="s", color="k", capsize=4, ms=5, zorder=4,
                    label="mean ± std over seeds" if i == 0 else None)
    for col, style, text in (("majority", "--", "majority class"), ("chance", ":", "chance")):
        rate = sub[col].dropna().median() if col in sub else np.nan
        if np.isfinite(rate):
            ax.axhline(rate, ls=style, color="grey", lw=1, label=f"{text} ({rate:.3f})")
    verdict, _ = seed_verdict(sub, metric) if len(sub) else ("no runs", np.nan)
    n = int(sub.groupby("variant")["seed"].nunique().min()) if len(sub) else 0
    steps = sub["steps"].dropna()
    budget = f", {int(steps.median())} steps per run" if len(steps) else ""
    ax.set_xticks(range(len(order)), order, rotation=30 if len(order) > 4 else 0)
    ax.set_xlim(-0.5, len(order) - 0.4)
    ax.set_xlabel(sweep.axis if isinstance(sweep, Sweep) else "variant")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{name} on {dataset} ({n} seed{'s' if n != 1 else ''} per variant{budget})\n{verdict}",
                 fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def run_grid(dataset: str = "synthetic", grid="emonet_lambda", epochs: int | None = None, max_steps: int | None = None,
             seeds=(0,), data_root=None, runs_dir=None, tables_dir=None, figures_dir=None,
             val_fraction: float | None = None, dataset_kwargs: dict | None = None, progress: bool = False,
             plot: bool = True, variants: dict | None = None) -> AblationResult:
    """Run (or skip when complete) every entry of ``grid`` on ``dataset``, gather, tabulate and plot.

    Writes ``<tables_dir>/ablation_<sweep>_<dataset>.csv`` (mean ± std), ``..._runs.csv`` (one row
    per run) and ``<figures_dir>/ablation_<sweep>_<dataset>.png/.svg`` (:func:`plot_sweep`). ``variants``
    (``{sweep: [labels]}``) runs only those variants of a sweep (:func:`select_variants`). Several processes may run the same grid
    at once (one per GPU): they share its entries (:func:`run_entries`).
    """
    import matplotlib.pyplot as plt

    from ferlib.paths import results_dir
    from ferlib.viz.captions import runs_caption
    from ferlib.viz.gallery import save_caption
    from ferlib.viz.io import save_figure

    if isinstance(seeds, int):
        seeds = [seeds]
    runs_dir = Path(runs_dir) if runs_dir else results_dir() / "runs"
    tables_dir = Path(tables_dir) if tables_dir else results_dir() / "tables"
    figures_dir = Path(figures_dir) if figures_dir else results_dir() / "figures"
    sweeps = select_variants(resolve_sweeps(grid), variants)
    entries, skipped = expand(sweeps, dataset, seeds)
    for note in skipped:
        print(f"skipped {note}", flush=True)
    rows = []
    for e, run_dir, status in run_entries(entries, dataset, runs_dir=runs_dir, data_root=data_root, epochs=epochs,
                                          max_steps=max_steps, val_fraction=val_fraction,
                                          dataset_kwargs=dataset_kwargs, progress=progress):
        rows.append({"sweep": e.sweep, "paper": e.paper, "dataset": dataset, "variant": e.variant,
                     "value": e.value, "seed": e.seed, "status": status, **run_record(run_dir),
                     "overrides": json.dumps(e.overrides, sort_keys=True), "run_dir": str(run_dir)})
    columns = ["sweep", "paper", "dataset", "variant", "value", "seed", "status", "epochs_run", "steps", "selected_on",
               "selected_epoch", *RUN_METRICS, "majority", "chance", "overrides", "run_dir"]
    runs = pd.DataFrame(rows, columns=columns)
    table = sweep_table(runs)
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
            sub = runs[runs["sweep"] == sweep.name]
            metric, what = plotted_metric(sub)
            save_caption(figures_dir / f"{stem}.png", f"{sweep.name} on {dataset}: {seed_verdict(sub, metric)[0]}",
                         f"{what}, every seed a point, mean ± std per variant; {runs_caption(list(sub['run_dir']))}",
                         list(sub["run_dir"]), "ablation")
    return AblationResult(runs, table, skipped, files)
