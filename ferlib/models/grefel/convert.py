"""Upstream checkpoints → GReFEL state dicts (``convert_upstream("grefel", state)``), docs/papers/grefel.md §2 and §7.

Accepted inputs (``module.`` prefixes of DataParallel are stripped):

- a flat state with the container keys (``vit.*``, ``classifier.*``, ``anchors.*``,
  ``self_attn.*``): returned as is;
- ARBEx's separate files as a dict ``{"vit": ..., "classifier": ..., "anchors": ...[,
  "self_attn": ...]}`` (upstream saves them without prefixes and never saves ``self_attn``);
- the standard backbone checkpoints ``{"ir50": <face.evoLVe ir50.pth>, "mobilefacenet":
  <mobilefacenet_model_best.pth.tar['state_dict']>}`` (alone or beside the entries above),
  mapped to ``vit.ir.*`` / ``vit.landmark.*`` as ``ref/grefel_pretrained_keymap.txt`` lists;
  IR-50 stage 4 and ``output_layer`` and the MobileFaceNet GDC head are dropped.

A dict holding only some parts converts to a partial state: load it with ``strict=False``
(e.g. backbones only, the rest trained).
"""
from __future__ import annotations

from collections.abc import Mapping

from ferlib.weights.converters import register_converter

from .arbex_backbones import ir50_key_to_arbex, mobilefacenet_key_to_arbex

PARTS = ("vit", "classifier", "anchors", "self_attn")
BACKBONES = {"ir50": ("vit.ir.", ir50_key_to_arbex), "mobilefacenet": ("vit.landmark.", mobilefacenet_key_to_arbex)}


def _strip_module(state: Mapping) -> dict:
    return {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}


def backbone_state(name: str, state: Mapping) -> dict:
    """A standard ``ir50`` / ``mobilefacenet`` checkpoint → ``vit.ir.*`` / ``vit.landmark.*`` entries."""
    prefix, to_arbex = BACKBONES[name]
    out = {}
    for k, v in _strip_module(state).items():
        new = to_arbex(k)
        if new is not None:
            out[prefix + new] = v
    return out


@register_converter("grefel")
def convert_grefel(state: Mapping) -> dict:
    """See the module docstring; returns a flat state dict in ferlib (= ARBEx container) keys."""
    nested = {k: v for k, v in state.items() if isinstance(v, Mapping)}
    if not nested:
        return _strip_module(state)
    unknown = sorted(set(nested) - set(PARTS) - set(BACKBONES))
    if unknown or len(nested) != len(state):
        raise KeyError(f"GReFEL converter: expected parts {PARTS + tuple(BACKBONES)} (dicts of tensors), got {sorted(state)}")
    out: dict = {}
    for name, part in nested.items():
        if name in BACKBONES:
            out.update(backbone_state(name, part))
        else:
            out.update({f"{name}.{k}": v for k, v in _strip_module(part).items()})
    return out


def _rename_keep_rest(state: Mapping, to_arbex) -> dict:
    # Entries ARBEx has no name for keep theirs, so the loader reports them as dropped by name.
    out = {}
    for k, v in _strip_module(state).items():
        new = to_arbex(k)
        out[k if new is None else new] = v
    return out


@register_converter("grefel_ir50")
def convert_ir50_to_arbex(state: Mapping) -> dict:
    """Standard IR-50 checkpoint → keys of :class:`~.arbex_backbones.ArbexIR50` (``vit.ir`` without prefix);
    stage 4 and ``output_layer`` keep their names (:data:`IR50_UNUSED`)."""
    return _rename_keep_rest(state, ir50_key_to_arbex)


@register_converter("grefel_mobilefacenet")
def convert_mobilefacenet_to_arbex(state: Mapping) -> dict:
    """Standard MobileFaceNet checkpoint → keys of :class:`~.arbex_backbones.ArbexMobileFaceNet`;
    the GDC head keeps its names (:data:`MOBILEFACENET_UNUSED`)."""
    return _rename_keep_rest(state, mobilefacenet_key_to_arbex)


#: Checkpoint entries GReFEL does not use (dropped with a ``DroppedKeysWarning`` naming them).
IR50_UNUSED = ("body.21.*", "body.22.*", "body.23.*", "output_layer.*")
MOBILEFACENET_UNUSED = ("output_layer.*",)
