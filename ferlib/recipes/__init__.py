"""Paper cards: one YAML per paper beside this file, resolved per dataset into a frozen :class:`Recipe`.

Card layout (``ferlib/recipes/<paper>.yaml``)::

    paper: fermam               # card name
    title: ...; code: owner/repo@commit; paper_ref: DOI or arXiv id
    model: fermam               # registered model name
    class_order: {affectnet8: affectnet8_alpha, ...}  # per dataset, the label set the code's outputs follow
    defaults: {...}             # any Recipe field
    datasets:
      rafdb: {...}              # overrides for that dataset, plus `reported: {metric: value}`
                                # and `source:` (table/section the number comes from)
    ablations:                  # the paper's sweeps (ferlib.ablations, notebook 08), optional
      - name: emonet_lambda     # unique over all cards: the grid's name for it
        group: papers           # papers (the paper's own ablations) or code_vs_paper
        axis: ...; description: ...
        figure: true            # optional: notebook 09 draws this paper from this sweep's runs
        variants:
          - {label: lam=0.5, value: 0.5, note: where it comes from, overrides: {model_kwargs: {lam: 0.5}}}

``load_recipe(paper, dataset, **overrides)`` merges defaults ← dataset ← overrides (``model_kwargs``,
``loss_kwargs``, ``schedule_kwargs`` and ``optimizer_kwargs`` merged key by key) and validates names.
A variant's ``overrides`` are such keyword overrides; the ``ablations:`` section is checked whenever the
card loads (:func:`card_ablations` returns it) and never reaches a :class:`Recipe`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CARDS_DIR = Path(__file__).resolve().parent
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when present: 10x faster
_MERGED = ("model_kwargs", "loss_kwargs", "schedule_kwargs", "optimizer_kwargs", "reported", "sampler_kwargs")


@dataclass(frozen=True)
class Recipe:
    """Everything that says *what* a paper trains; the engine decides *how* (devices, precision)."""

    paper: str
    dataset: str
    model: str
    num_classes: int = 7
    model_kwargs: dict = field(default_factory=dict)
    # data
    input_size: int = 224                 # what the model sees
    stored_size: int | None = None        # what the cache stores (None = input_size)
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)
    color_order: str = "RGB"              # "BGR" reproduces cv2-read pipelines
    train_transforms: tuple = ("random_resized_crop", "hflip")
    transform_kwargs: dict = field(default_factory=dict)
    test_transforms: tuple = ()
    sampler: str | None = None            # None, "class_balanced", "imbalanced", "subset"
    sampler_kwargs: dict = field(default_factory=dict)
    label_mode: str | None = None         # FERPlus: majority / probability / crossentropy / multi_target
    dataset_kwargs: dict = field(default_factory=dict)
    base_recipe: str | None = None        # imagefolder: the card entry whose recipe it uses (e.g. rafdb)
    eval_split: str | None = None         # None = the dataset's usual one (its record's, ferlib.data.dataset_info)
    pretrained: tuple = ()                # starting weights: items {weights: entry, into: submodule, converter, unused}
    pretrained_note: str = ""             # what the paper started from and why the card's items are these
    precision: str = "fp32"               # the authors' (IEEE fp32: TF32 off); tf32 / bf16 / fp16 are switches
    max_steps: int | None = None          # a CPU smoke budget (synthetic entries only; never on a real dataset)
    # optimisation
    loss: str = "cross_entropy"
    loss_kwargs: dict = field(default_factory=dict)
    optimizer: str = "adam"               # adam, adamw, sgd
    optimizer_kwargs: dict = field(default_factory=dict)
    lr: float = 1e-3
    weight_decay: float = 0.0
    sam: bool = False
    sam_rho: float = 0.05
    schedule: str | None = None           # None, exponential, step, cosine
    schedule_kwargs: dict = field(default_factory=dict)
    warmup_epochs: int = 0
    epochs: int = 10
    batch_size: int = 64
    grad_clip: float | None = None
    selection_metric: str = "accuracy"
    select_from_epoch: int = 1            # epochs before it never become the selected (best) checkpoint
    # provenance
    reported: dict = field(default_factory=dict)
    source: str = ""
    notes: str = ""

    def replace(self, **changes) -> "Recipe":
        return _build(dataclasses.asdict(self), changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def list_recipes() -> list[str]:
    return sorted(p.stem for p in CARDS_DIR.glob("*.yaml"))


def list_papers() -> list[str]:
    """The cards of papers: those naming the authors' code (``code:``); the baseline card names none."""
    return [name for name in list_recipes() if load_card(name).get("code")]


def load_card(paper: str) -> dict:
    path = CARDS_DIR / f"{paper}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no recipe card {path}; available: {list_recipes()}")
    card = yaml.load(path.read_text(), Loader=_YAML_LOADER)
    _check_sweeps(card.get("ablations"), path)
    _check_class_order(card.get("class_order"), path)
    return card


def _check_class_order(order, path: Path) -> None:
    from ferlib.labels import LABEL_SETS

    if order is None:
        return
    if not isinstance(order, dict):
        raise RecipeError(f"{path}: class_order must map dataset -> label set name, got {order!r}")
    unknown = {d: n for d, n in order.items() if n not in LABEL_SETS}
    if unknown:
        raise RecipeError(f"{path}: class_order names unknown label sets {unknown}; known: {sorted(LABEL_SETS)}")


def class_order(paper: str, dataset: str) -> tuple | None:
    """Class names in the order ``paper``'s code indexes ``dataset`` (its card's ``class_order:``, a
    :data:`ferlib.labels.LABEL_SETS` name per dataset); None when the card gives none (no card, or a dataset
    the paper never used): then the dataset's native order applies."""
    from ferlib.labels import LABEL_SETS

    if paper not in list_recipes():
        return None
    name = (load_card(paper).get("class_order") or {}).get(dataset)
    return LABEL_SETS[name].names if name is not None else None


def paper_order(paper: str, dataset: str, native=None) -> tuple:
    """Class names in ``paper``'s order for ``dataset`` (:func:`class_order`); when the card gives none, the
    dataset's native order: ``native`` (the caller's class names: a run's classes, or the record's
    ``ferlib.data.dataset_info(dataset).label_set.names``), else the label set named ``dataset``."""
    from ferlib.labels import LABEL_SETS

    order = class_order(paper, dataset)
    if order is not None:
        return order
    if native is not None:
        return tuple(native)
    if dataset not in LABEL_SETS:
        raise KeyError(f"{paper!r} has no class order for {dataset!r} and no label set is named so: pass native= "
                       f"(the data's class names, or ferlib.data.dataset_info({dataset!r}).label_set.names)")
    return LABEL_SETS[dataset].names


def card_ablations(paper: str) -> list[dict]:
    """The sweeps of ``paper``'s card (its ``ablations:`` list, checked), in card order."""
    return list(load_card(paper).get("ablations") or [])


def load_recipe(paper: str, dataset: str, base_recipe: str | None = None, **overrides: Any) -> Recipe:
    """The paper's recipe for ``dataset``; keyword overrides win (e.g. ``epochs=2``).

    ``dataset="imagefolder"`` (your own ``train/<class>/`` folders) takes the card's ``base_recipe``
    entry (default ``rafdb``) — its transforms, optimiser and schedule — with no reported numbers; pass
    ``num_classes`` for your folders (``ferlib.engine.training.resolve_recipe`` reads it from the data).
    """
    card = load_card(paper)
    datasets = card.get("datasets", {}) or {}
    entry = dataset
    if dataset == "imagefolder" and dataset not in datasets:
        entry = base_recipe or "rafdb"
    elif base_recipe is not None:
        raise ValueError(f"base_recipe applies to dataset='imagefolder' only (got {dataset!r})")
    if entry not in datasets:
        what = f"base recipe {entry!r} (for imagefolder)" if entry != dataset else f"dataset {dataset!r}"
        raise KeyError(f"recipe card {paper}.yaml has no entry for {what}; it has {sorted(datasets)}")
    base = {"paper": card.get("paper", paper), "dataset": dataset, "model": card["model"]}
    base = _merge(base, card.get("defaults", {}) or {})
    base = _merge(base, datasets[entry] or {})
    if entry != dataset:
        base.update(base_recipe=entry, reported={}, eval_split=None, dataset_kwargs={}, label_mode=None,
                    source=f"your own ImageFolder data, trained with the {paper} card's {entry} recipe",
                    stored_size=None)
    return _build(base, overrides)


def _merge(base: dict, extra: dict) -> dict:
    """``extra`` over ``base``; the ``_MERGED`` dicts are merged key by key, except that an ``extra`` naming
    another optimizer starts its ``optimizer_kwargs`` afresh (SGD's momentum means nothing to Adam)."""
    out = dict(base)
    for k, v in extra.items():
        if k in _MERGED and isinstance(v, dict):
            out[k] = {**(out.get(k) or {}), **v}
        else:
            out[k] = v
    if extra.get("optimizer") is not None and extra["optimizer"] != base.get("optimizer"):
        out["optimizer_kwargs"] = dict(extra.get("optimizer_kwargs") or {})
    return out


def _build(base: dict, overrides: dict) -> Recipe:
    merged = _merge(base, {k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(merged) - names)
    if unknown:
        raise TypeError(f"unknown recipe fields {unknown}; valid fields: {sorted(names)}")
    for k in ("mean", "std", "train_transforms", "test_transforms"):
        if k in merged and isinstance(merged[k], list):
            merged[k] = tuple(merged[k])
    if "pretrained" in merged:
        merged["pretrained"] = _start_items(merged["pretrained"])
    if merged.get("precision", "fp32") not in ("fp32", "tf32", "bf16", "fp16"):
        raise RecipeError(f"recipe precision must be fp32, tf32, bf16 or fp16, got {merged.get('precision')!r}")
    _check_values(merged)
    return Recipe(**merged)


class RecipeError(ValueError):
    """A recipe value (from a card or an override such as ``--set lr=abc``) has the wrong type or range."""


#: A card's ``ablations:`` entries: the keys of a sweep and of each of its variants, and the groups.
SWEEP_KEYS = ("name", "group", "axis", "description", "figure", "variants")
VARIANT_KEYS = ("label", "value", "note", "overrides")
SWEEP_GROUPS = ("papers", "code_vs_paper")


def _check_sweeps(sweeps, path: Path) -> None:
    """Refuse a malformed ``ablations:`` section of the card at ``path`` (RecipeError naming the file)."""
    if sweeps is None:
        return
    if not isinstance(sweeps, list):
        raise RecipeError(f"{path}: ablations must be a list of sweeps, got {type(sweeps).__name__}")
    fields = {f.name for f in dataclasses.fields(Recipe)} - {"paper", "dataset"}
    names = set()
    for i, sweep in enumerate(sweeps):
        where = f"{path}: ablations[{i}]"

        def fail(why):
            raise RecipeError(f"{where}: {why}")

        if not isinstance(sweep, dict):
            fail(f"a sweep is a mapping with keys {list(SWEEP_KEYS)}, got {sweep!r}")
        if not isinstance(sweep.get("name"), str) or not sweep["name"]:
            fail("a sweep needs a name")
        where = f"{path}: sweep {sweep['name']!r}"
        if unknown := sorted(set(sweep) - set(SWEEP_KEYS)):
            fail(f"unknown keys {unknown}; a sweep has {list(SWEEP_KEYS)}")
        if sweep["name"] in names:
            fail("the name is used twice")
        names.add(sweep["name"])
        if sweep.get("group") not in SWEEP_GROUPS:
            fail(f"group must be one of {list(SWEEP_GROUPS)}, got {sweep.get('group')!r}")
        if not isinstance(sweep.get("figure", False), bool):
            fail(f"figure must be true or false, got {sweep['figure']!r}")
        for key in ("axis", "description"):
            if not isinstance(sweep.get(key, ""), str):
                fail(f"{key} must be text, got {sweep[key]!r}")
        variants = sweep.get("variants")
        if not isinstance(variants, list) or not variants:
            fail("variants must be a non-empty list")
        labels = set()
        for variant in variants:
            if not isinstance(variant, dict) or not isinstance(variant.get("label"), str):
                fail(f"a variant is a mapping with a text label and keys {list(VARIANT_KEYS)}, got {variant!r}")
            label = variant["label"]
            if unknown := sorted(set(variant) - set(VARIANT_KEYS)):
                fail(f"variant {label!r}: unknown keys {unknown}; a variant has {list(VARIANT_KEYS)}")
            if label in labels:
                fail(f"variant {label!r} appears twice (labels name the run directories)")
            labels.add(label)
            if not isinstance(variant.get("note", ""), str):
                fail(f"variant {label!r}: note must be text, got {variant['note']!r}")
            overrides = variant.get("overrides") or {}
            if not isinstance(overrides, dict):
                fail(f"variant {label!r}: overrides must be a mapping of recipe fields, got {overrides!r}")
            if unknown := sorted(set(overrides) - fields):
                fail(f"variant {label!r} overrides {unknown}, not recipe fields; valid fields: {sorted(fields)}")


#: Numeric recipe fields: (type, smallest allowed value, whether the bound itself is allowed).
_NUMERIC = {"num_classes": (int, 2, True), "input_size": (int, 8, True), "stored_size": (int, 8, True),
            "epochs": (int, 1, True), "batch_size": (int, 1, True), "lr": (float, 0.0, False),
            "weight_decay": (float, 0.0, True), "sam_rho": (float, 0.0, True), "warmup_epochs": (int, 0, True),
            "select_from_epoch": (int, 1, True), "max_steps": (int, 1, True), "grad_clip": (float, 0.0, False)}


def _check_values(merged: dict) -> None:
    for name, (kind, low, inclusive) in _NUMERIC.items():
        value = merged.get(name)
        if value is None and name in ("stored_size", "max_steps", "grad_clip"):
            continue
        if name not in merged:
            continue
        ok_type = isinstance(value, (int, float)) and not isinstance(value, bool) and (kind is float or isinstance(value, int))
        if not ok_type:
            raise RecipeError(f"recipe field {name} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        if value < low or (value == low and not inclusive):
            bound = f"at least {low}" if inclusive else f"greater than {low}"
            raise RecipeError(f"recipe field {name} must be {bound}, got {value!r}")


def _start_items(spec) -> tuple:
    """A card's ``pretrained:`` (None, an entry name, or a list of items) as a tuple of plain dicts."""
    from ferlib.weights.start import card_items

    try:
        return tuple(item.to_dict() for item in card_items(spec))
    except (TypeError, ValueError) as e:
        raise RecipeError(f"recipe field pretrained: {e}") from None
