"""The registry of the checkpoint files the five papers use (torchvision-style weights entries).

Each :class:`WeightsEntry` says which file it is (name, size, sha256 where known), what
produced it, where a user gets it (``data/README.md``, section "Pretrained weights"), which
ferlib model it belongs to, and what a user must not get wrong when using it: the class order of
its head (``categories``), input size, mean/std, colour order, the model arguments it was trained
with, the keys it leaves unused on purpose, and the metrics its authors report.

Files are looked up by name in ``data/pretrained/`` (``ferlib.paths.data_dir()``) and in
``$FERLIB_HOME/pretrained``. Nothing is ever downloaded.
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from ferlib.labels import LABEL_SETS

#: Where the README explains how to obtain every file.
README_SECTION = 'data/README.md, section "Pretrained weights"'

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _frozen(d: Mapping | None) -> Mapping:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class WeightsEntry:
    """One released (or announced) checkpoint file.

    ``size`` / ``sha256`` are None where the file could not be inspected; ``unused_keys`` are
    fnmatch patterns of keys the target model leaves out on purpose (checkpoint keys it drops, or
    model keys the file does not provide); ``metrics`` maps a dataset name to the accuracy (%)
    the authors report for this very file; ``model_kwargs`` are the ``create_model`` arguments
    the file needs (e.g. ``num_classes=8``, EMO-Net's ``lam``).
    """

    name: str
    filename: str
    model: str
    papers: tuple[str, ...]
    produced_by: str
    source: str
    size: int | None = None
    sha256: str | None = None
    released: bool = True
    categories: tuple[str, ...] | None = None
    input_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    colour: str | None = None
    model_kwargs: Mapping = field(default_factory=dict)
    metrics: Mapping = field(default_factory=dict)
    unused_keys: tuple[str, ...] = ()
    notes: str = ""

    def __post_init__(self):
        object.__setattr__(self, "model_kwargs", _frozen(self.model_kwargs))
        object.__setattr__(self, "metrics", _frozen(self.metrics))
        if self.colour not in (None, "RGB", "BGR"):
            raise ValueError(f"{self.name}: colour must be 'RGB' or 'BGR', got {self.colour!r}")
        if self.sha256 is not None and len(self.sha256) != 64:
            raise ValueError(f"{self.name}: sha256 must have 64 hex digits")

    @property
    def num_classes(self) -> int | None:
        return None if self.categories is None else len(self.categories)

    def search_paths(self) -> list[Path]:
        """The places :func:`find_file` looks for ``filename``, in order."""
        return [d / self.filename for d in pretrained_dirs()]

    def __hash__(self):
        return hash(self.name)


def pretrained_dirs() -> list[Path]:
    """``data/pretrained`` (``ferlib.paths.data_dir()``) and ``$FERLIB_HOME/pretrained``, de-duplicated."""
    from ferlib.paths import data_dir

    dirs = [data_dir() / "pretrained"]
    home = os.environ.get("FERLIB_HOME")
    if home:
        dirs.append(Path(home).expanduser() / "pretrained")
    seen, out = set(), []
    for d in dirs:
        key = str(d.resolve()) if d.exists() else str(d)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def find_file(entry: WeightsEntry) -> Path | None:
    """The first existing copy of ``entry.filename``, or None."""
    for p in entry.search_paths():
        if p.is_file():
            return p
    return None


_WEIGHTS: dict[str, WeightsEntry] = {}


def register_weights(entry: WeightsEntry) -> WeightsEntry:
    if entry.name in _WEIGHTS and _WEIGHTS[entry.name] != entry:
        raise ValueError(f"weights {entry.name!r} are registered twice")
    _WEIGHTS[entry.name] = entry
    return entry


def get_weights(name: str) -> WeightsEntry:
    """The entry called ``name``; KeyError listing the registered names otherwise."""
    if name not in _WEIGHTS:
        raise KeyError(f"unknown pretrained weights {name!r}; registered: {list_weights()}")
    return _WEIGHTS[name]


def list_weights(pattern: str = "*", model: str | None = None, released: bool | None = None) -> list[str]:
    """Sorted entry names matching a shell pattern, optionally for one model / release status."""
    return sorted(
        n
        for n, e in _WEIGHTS.items()
        if fnmatch.fnmatch(n, pattern)
        and (model is None or e.model == model)
        and (released is None or e.released == released)
    )


def entry_for_filename(filename: str) -> WeightsEntry | None:
    """The entry whose ``filename`` is ``filename`` (used when a path is given to the loader)."""
    for e in _WEIGHTS.values():
        if e.filename == filename:
            return e
    return None


def weights_table_markdown(entries: list[str] | None = None) -> str:
    """The registry as a Markdown table (the README's weights table is generated from it)."""
    rows = [
        "| weights | file | model | papers | classes | input | reported | size / sha256 | obtain from |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in entries or list_weights():
        e = get_weights(name)
        classes = "—" if e.categories is None else f"{len(e.categories)}: " + ", ".join(e.categories)
        inp = "—" if e.input_size is None else f"{e.input_size}×{e.input_size}" + (f" {e.colour}" if e.colour else "")
        if e.mean is not None:
            inp += " " + ("ImageNet norm." if e.mean == IMAGENET_MEAN else f"mean {e.mean} std {e.std}")
        reported = ", ".join(f"{k} {v}" for k, v in e.metrics.items()) or "—"
        size = f"{e.size:,} B" if e.size else "size unknown"
        digest = f"`{e.sha256[:12]}…`" if e.sha256 else "sha256 unknown"
        source = e.source if e.released else f"**not released** — {e.source}"
        kwargs = ", ".join(f"{k}={v}" for k, v in e.model_kwargs.items())
        model = f"`{e.model}`" + (f" ({kwargs})" if kwargs else "")
        rows.append(
            f"| `{e.name}` | `{e.filename}` | {model} | {', '.join(e.papers)} | {classes} | {inp} | "
            f"{reported} | {size}, {digest} | {source} |"
        )
    return "\n".join(rows) + "\n"


# --- the entries ---------------------------------------------------------------------------------

_RAF = LABEL_SETS["rafdb"].names
_AFFECTNET7 = LABEL_SETS["affectnet"].names
_RAF_PLUS_CONTEMPT = LABEL_SETS["emonet_affectnet8"].names

_IR50_STAGE4 = ("body.21.*", "body.22.*", "body.23.*")

register_weights(WeightsEntry(
    name="ir50_ms1m",
    filename="ir50.pth",
    model="ir50",
    papers=("FERMam", "GReFEL", "POSTER"),
    produced_by="face.evoLVe IR-50 (backbone_ir50_ms1m) trained for face recognition on MS-Celeb-1M; "
                "the full 4-stage model with its output layer (349 entries, 43,574,976 parameters)",
    source="the FERMam authors' repository https://github.com/jxcsglr/FERMam, FERMam-main/models/pretrain/ir50.pth "
           "(Git LFS: `git lfs pull` in a clone); POSTER (https://github.com/zczcwh/POSTER) distributes the same file",
    size=174_472_765,
    sha256="f696a1d2216439c05dec042b42249a1c835f4a2106b91e14fbf09ed0fbd8acfa",
    input_size=112,
    colour="RGB",
    unused_keys=_IR50_STAGE4,
    notes="The 3-stage model (`ir50`, FERMam's `ir_back`) drops the 45 stage-4 entries (body.21-23) by "
          "name; `ir50_full` loads all of them. FERMam/POSTER feed it ImageNet-normalised input (RAF-DB "
          "as BGR in FERMam), not face.evoLVe's own normalisation. GReFEL/ARBEx use the same file in "
          "ARBEx key names (ref/grefel_pretrained_keymap.txt).",
))

register_weights(WeightsEntry(
    name="mobilefacenet_landmark",
    filename="mobilefacenet_model_best.pth.tar",
    model="mobilefacenet",
    papers=("FERMam", "MMFRM", "GReFEL", "POSTER"),
    produced_by="pytorch_face_landmark (cunjian) MobileFaceNet, 68-point landmark regression "
                "(136 outputs) trained on 300W; a dict whose 'state_dict' holds 333 un-prefixed keys",
    source="https://github.com/cunjian/pytorch_face_landmark, checkpoint/mobilefacenet_model_best.pth.tar (linked "
           "from its README); FERMam's repository lists the same name in FERMam-main/models/pretrain/",
    input_size=112,
    unused_keys=("output_layer.*", "*heatmap_weight*", "alpha.*", "fc.*"),
    notes="Only the trunk up to conv_6_sep is used by the papers. Loaded into a 512-d head (FERMam "
          "`face_landback`, MMFRM's landmark net) the 136-d GDC head does not fit and is dropped, "
          "and MMFRM's alpha/fc stay at their init (docs/papers/mmfrm.md §3: our choice, upstream loads an "
          "unreleased file). Training normalisation of this checkpoint is not documented; the papers "
          "feed it their own ImageNet-normalised 112×112 input.",
))

_EMONET_COMMON = dict(
    model="emonet",
    papers=("EMO-Net",),
    input_size=224,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    colour="RGB",
)
_EMONET_SRC = "the EMO-Net authors' repository https://github.com/xiayu-cell/EMO-Net, checkpoint/{}"
_EMONET_NOTE = ("Plain state_dict of MobileNetV2(num_classes={n}) (emonet_keys.txt layout). Trained "
                "with shortcut weight λ = {lam} (the code hard-codes 0.8): build the model with "
                "lam={lam}. Eval transform: Resize 256 → CenterCrop 224.")

# (entry, file, what produced it, categories, dataset, λ, reported accuracy, extra note)
_EMONET_RELEASES = (
    ("emonet_rafdb_lam0.5", "RAFDB_a_0.5_0.913.pth", "RAF-DB training (README row λ 0.5)", _RAF, "rafdb", 0.5,
     91.30, ""),
    ("emonet_rafdb_lam0.6", "rafdb_a_0.6_0.915.pth", "RAF-DB training (README row λ 0.6)", _RAF, "rafdb", 0.6,
     91.52, ""),
    ("emonet_affectnet7_lam0.6", "affectNet7_a_0.6_0.65457.pth", "AffectNet 7-class training", _AFFECTNET7,
     "affectnet", 0.6, 65.456, " Classes in AffectNet's native order."),
    ("emonet_affectnet8_lam0.6", "affectNet8_a_0.6_0.6208.pth", "AffectNet 8-class training", _RAF_PLUS_CONTEMPT,
     "affectnet8", 0.6, 62.08, " Classes in RAF-DB order + contempt (the authors' 8-class lists), NOT "
     "AffectNet's native order (docs/papers/emonet.md §7)."),
)
for _name, _file, _how, _cats, _ds, _lam, _acc, _extra in _EMONET_RELEASES:
    register_weights(WeightsEntry(
        name=_name, filename=_file, produced_by=f"EMO-Net authors, {_how}", source=_EMONET_SRC.format(_file),
        categories=_cats, model_kwargs={"num_classes": len(_cats), "lam": _lam}, metrics={_ds: _acc},
        notes=_EMONET_NOTE.format(n=len(_cats), lam=_lam) + _extra, **_EMONET_COMMON,
    ))

register_weights(WeightsEntry(
    name="mobilenet_v2_imagenet",
    filename="mobilenet_v2-b0353104.pth",
    produced_by="torchvision MobileNet_V2_Weights.IMAGENET1K_V1 (ImageNet-1k classification, top-1 71.878)",
    source="torchvision's mobilenet_v2 IMAGENET1K_V1 file (download.pytorch.org/models/mobilenet_v2-b0353104.pth, "
           "its name carries the first 8 hex digits of its sha256); fetch it on a connected machine",
    unused_keys=("classifier.*", "features.*.dowmSample.*", "features.*.channel.*"),
    notes="EMO-Net's reconstructed starting point (docs/papers/emonet.md §5: upstream fine-tunes an unreleased RAF-DB model). "
          "torchvision's MobileNetV2 keys equal EMO-Net's for every shared layer; the fusion branch "
          "(dowmSample), ECA (channel) and the classifier keep their init, the 1000-class head is dropped.",
    **_EMONET_COMMON,
))

register_weights(WeightsEntry(
    name="mmfrm_landmark",
    filename="mobileface.pth",
    model="mobilefacenet_mmfrm",
    papers=("MMFRM",),
    produced_by="unknown (MMFRM's landmark net: 512-d GDC + alpha + fc, 337 entries)",
    source="never published: MMFRM's train_my.py (https://github.com/hutianhan/MMFRM) expects models\\mobileface.pth "
           "and the authors do not say where it comes from; use `mobilefacenet_landmark`",
    released=False,
    input_size=112,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    colour="RGB",
    notes="docs/papers/mmfrm.md §3/§7: upstream silently trains with a random landmark net when the file is "
          "absent (always on Linux). ferlib loads the trunk from `mobilefacenet_landmark` instead.",
))
register_weights(WeightsEntry(
    name="mfer_convnext_msceleb",
    filename="mfer_convnext_base_msceleb.pth",
    model="mfer",
    papers=("MFER",),
    produced_by="MFER authors: ConvNeXt-B pre-trained on MS-Celeb-1M (self-supervised per the README)",
    source="not published yet: the MFER authors' README (https://github.com/XuJ1E/MFER) announces it ('will release soon'); an older version of "
           "that README linked a Google-Drive checkpoint",
    released=False,
    input_size=224,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    colour="RGB",
    unused_keys=("msc.*",),
    notes="No trained MFER weights are released (docs/papers/mfer.md §7: the README reports RAF-DB 92.08, "
          "AffectNet-8 63.15, AffectNet-7 67.06, FERPlus 91.09 for the full model). The file name "
          "is ours: put the checkpoint under this name if you obtain it.",
))
