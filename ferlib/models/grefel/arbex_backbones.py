"""IR-50 and MobileFaceNet under ARBEx's key names (docs/papers/grefel.md §2.1–2.2).

ARBEx re-wrote both backbones with the same layers as the standard networks but other module
names (IR-50 stages ``net_1/net_2/net_3`` with units ``res``/``shortcut``; MobileFaceNet groups
``path_1/path_2/path_3`` with ``net.<i>`` everywhere). ferlib has one implementation of each
network (:mod:`ferlib.models.backbones`); the classes here subclass them, drop the heads ARBEx
does not have, and translate the keys when a state dict is saved or loaded, so that
``state_dict()`` holds exactly the ARBEx keys while the modules stay the shared ones.

The same key maps convert the standard checkpoints (face.evoLVe ``ir50.pth``,
``mobilefacenet_model_best.pth.tar``) into this layout: ``ref/grefel_pretrained_keymap.txt``.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from ferlib.models.backbones.ir50 import IR50, IR50_STAGES
from ferlib.models.backbones.mobilefacenet import MobileFaceNet

_IR_UNIT = re.compile(r"^body\.(\d+)\.(res_layer|shortcut_layer)\.(.*)$")


def ir50_key_to_arbex(key: str) -> str | None:
    """face.evoLVe IR-50 key → ARBEx key (None for what ARBEx does not have: stage 4, output_layer).

    ``body.<i>.res_layer.<j>`` → ``net_<s>.net.<k>.res.<j>`` with units 0–2, 3–6, 7–20 in stages
    1–3; ``shortcut_layer`` → ``shortcut``; ``input_layer.*`` unchanged.
    """
    if key.startswith("input_layer."):
        return key
    m = _IR_UNIT.match(key)
    if not m:
        return None
    unit, part, rest = int(m.group(1)), m.group(2), m.group(3)
    start = 0
    for stage, (_, _, n) in enumerate(IR50_STAGES[:3], start=1):
        if unit < start + n:
            return f"net_{stage}.net.{unit - start}.{part.replace('_layer', '')}.{rest}"
        start += n
    return None


#: Standard MobileFaceNet top-level modules → ARBEx ``path_<g>.<i>`` (no GDC ``output_layer``).
MFN_PATHS = {
    "conv1": "path_1.0", "conv2_dw": "path_1.1", "conv_23": "path_1.2", "conv_3": "path_1.3",
    "conv_34": "path_2.0", "conv_4": "path_2.1",
    "conv_45": "path_3.0", "conv_5": "path_3.1", "conv_6_sep": "path_3.2",
}
# Inner names: Conv_block conv/bn/prelu, Linear_block conv/bn, Depth_Wise conv/conv_dw/project,
# Residual model.<i>; ARBEx calls every child ``net.<i>`` in that order.
_MFN_INNER = {"conv": "net.0", "bn": "net.1", "prelu": "net.2", "conv_dw": "net.1", "project": "net.2", "model": "net"}


def mobilefacenet_key_to_arbex(key: str) -> str | None:
    """Standard MobileFaceNet key (``checkpoint['state_dict']``) → ARBEx key (None for the GDC head)."""
    head, _, rest = key.partition(".")
    if head not in MFN_PATHS:
        return None
    parts = rest.split(".")
    leaf = parts.pop()  # weight / bias / running_mean ...
    inner = [_MFN_INNER.get(p, p) for p in parts]
    return ".".join([MFN_PATHS[head], *inner, leaf])


class _ArbexKeys:
    """Mixin: ``state_dict`` / ``load_state_dict`` speak ARBEx keys through ``_to_arbex``.

    The renaming happens in hooks on this module, so it also works when the module is a child
    of a bigger model (the keys then carry the parent's prefix).
    """

    _to_arbex = staticmethod(lambda key: key)

    def _install_key_hooks(self) -> None:
        own = [k for k in nn.Module.state_dict(self).keys()]
        self._arbex_of = {k: self._to_arbex(k) for k in own}
        if None in self._arbex_of.values():
            missing = [k for k, v in self._arbex_of.items() if v is None]
            raise RuntimeError(f"no ARBEx name for {missing[:3]}")
        self._native_of = {v: k for k, v in self._arbex_of.items()}
        self.register_state_dict_post_hook(_rename_saved)
        self.register_load_state_dict_pre_hook(_rename_loaded)


def _rename_saved(module, state_dict, prefix, local_metadata):
    # The module's own entries are the last ones written: re-insert them renamed, in order.
    own = [k for k in list(state_dict.keys()) if k.startswith(prefix) and k[len(prefix):] in module._arbex_of]
    for k in own:
        state_dict[prefix + module._arbex_of[k[len(prefix):]]] = state_dict.pop(k)


def _rename_loaded(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
    for k in [k for k in list(state_dict.keys()) if k.startswith(prefix)]:
        native = module._native_of.get(k[len(prefix):])
        if native is not None:
            state_dict[prefix + native] = state_dict.pop(k)


class ArbexIR50(_ArbexKeys, IR50):
    """IR-50 stages 1–3 (ARBEx ``ir.py``): 17,611,968 params, keys ``input_layer``, ``net_{1,2,3}``.

    ``forward(x)`` [B,3,H,W] → (s1 [B,64,56,56], s2 [B,128,28,28], s3 [B,256,14,14]); the input is
    first nearest-resized to 112 (upstream ``interpolate(x, size=112)``).
    """

    _to_arbex = staticmethod(ir50_key_to_arbex)

    def __init__(self, units=None, input_size: int = 112):
        # units, input_size: IR50's (a shallower or smaller CPU demo, not ARBEx's net)
        super().__init__(num_stages=3, units=units, input_size=input_size)
        del self.output_layer  # ARBEx's IR-50 has no output layer
        self._install_key_hooks()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return tuple(self.forward_stages(x))


class ArbexMobileFaceNet(_ArbexKeys, MobileFaceNet):
    """MobileFaceNet up to ``conv_6_sep`` (ARBEx ``mobilefacenet.py``): 911,232 params, keys ``path_*``.

    ``forward(x)`` [B,3,112,112] → (f1 [B,64,28,28], f2 [B,128,14,14], f3 [B,512,7,7]), the outputs
    of path_1, path_2, path_3 (= ``conv_3``, ``conv_4``, ``conv_6_sep``).
    """

    _to_arbex = staticmethod(mobilefacenet_key_to_arbex)

    def __init__(self):
        super().__init__((112, 112), embedding_size=136)
        del self.output_layer  # no GDC head in ARBEx
        self._install_key_hooks()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = self.forward_taps(x)
        return t["conv_3"], t["conv_4"], t["conv_6_sep"]


def nearest_resize(x: torch.Tensor, size: int = 112) -> torch.Tensor:
    """Upstream ``F.interpolate(x, size)`` (nearest); the identity when x is already ``size``."""
    return x if x.shape[-1] == size and x.shape[-2] == size else F.interpolate(x, size=size)
