"""Paper cards: one YAML per paper beside this file, resolved per dataset into a frozen :class:`Recipe`.

Card layout (``ferlib/recipes/<paper>.yaml``)::

    paper: fermam               # card name
    title: ...; code: owner/repo@commit; paper_ref: DOI or arXiv id
    model: fermam               # registered model name
    defaults: {...}             # any Recipe field
    datasets:
      rafdb: {...}              # overrides for that dataset, plus `reported: {metric: value}`
                                # and `source:` (table/section the number comes from)

``load_recipe(paper, dataset, **overrides)`` merges defaults ← dataset ← overrides (``model_kwargs``,
``loss_kwargs``, ``schedule_kwargs`` and ``optimizer_kwargs`` merged key by key) and validates names.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CARDS_DIR = Path(__file__).resolve().parent
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
    sampler: str | None = None            # None, "class_balanced", "imbalanced"
    sampler_kwargs: dict = field(default_factory=dict)
    label_mode: str | None = None         # FERPlus: majority / probability / crossentropy / multi_target
    dataset_kwargs: dict = field(default_factory=dict)
    base_recipe: str | None = None        # imagefolder: the card entry whose recipe it uses (e.g. rafdb)
    eval_split: str | None = None         # None = the dataset's usual one (ferlib.engine.run.EVAL_SPLIT)
    pretrained: tuple = ()                # starting weights: items {weights: entry, into: submodule, converter, unused}
    pretrained_note: str = ""             # what the paper started from and why the card's items are these
    precision: str = "fp32"               # the authors' training precision (the engine's default; bf16 is a switch)
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


def load_card(paper: str) -> dict:
    path = CARDS_DIR / f"{paper}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no recipe card {path}; available: {list_recipes()}")
    return yaml.safe_load(path.read_text())


def load_recipe(paper: str, dataset: str, base_recipe: str | None = None, **overrides: Any) -> Recipe:
    """The paper's recipe for ``dataset``; keyword overrides win (e.g. ``epochs=2``).

    ``dataset="imagefolder"`` (your own ``train/<class>/`` folders) takes the card's ``base_recipe``
    entry (default ``rafdb``) — its transforms, optimiser and schedule — with no reported numbers; pass
    ``num_classes`` for your folders (``ferlib.engine.run.resolve_recipe`` reads it from the data).
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
    out = dict(base)
    for k, v in extra.items():
        if k in _MERGED and isinstance(v, dict):
            out[k] = {**(out.get(k) or {}), **v}
        else:
            out[k] = v
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
    if merged.get("precision", "fp32") not in ("fp32", "bf16", "fp16"):
        raise RecipeError(f"recipe precision must be fp32, bf16 or fp16, got {merged.get('precision')!r}")
    _check_values(merged)
    return Recipe(**merged)


class RecipeError(ValueError):
    """A recipe value (from a card or an override such as ``--set lr=abc``) has the wrong type or range."""


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
