"""IR-50: the face-recognition ResNet of face.evoLVe, as POSTER / FERMam / GReFEL build it.

Upstream: ``models/ir50.py`` in jxcsglr/FERMam (the same file as zczcwh/POSTER),
``Backbone(50, 0.0, 'ir')``; ``docs/papers/fermam.md`` §3. The paper models use the first three
stages (``body.0``–``body.20``); the released MS-Celeb-1M checkpoint ``ir50.pth`` holds all four
(``body.0``–``body.23``). Both layouts are one class here, :class:`IR50` with ``num_stages``.

State-dict keys equal the upstream keys (``input_layer.*``, ``body.<i>.shortcut_layer.*``,
``body.<i>.res_layer.*``, ``output_layer.*``), so ``ir50.pth`` and the authors' checkpoints load
with the identity map. The ``output_layer`` exists in the 3-stage model although its forward
never calls it (upstream quirk, 12.8 M parameters) so that the checkpoints load strictly.
"""
from __future__ import annotations

import re
import warnings

import torch
import torch.nn.functional as F
from torch import nn

#: (in channels, depth, units) per stage of IR-50; the first unit of a stage has stride 2.
IR50_STAGES = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))


class BottleneckIR(nn.Module):
    """Pre-activation IR unit (upstream ``bottleneck_IR``), [B,in,H,W] -> [B,depth,H/s,W/s].

    ``res_layer``: BN(in) → 3×3 conv in→depth → PReLU → 3×3 conv depth→depth (stride) → BN.
    ``shortcut_layer``: ``MaxPool2d(1, stride)`` (plain subsampling) when in == depth, else a
    strided 1×1 conv + BN. Output = sum of both, no activation after it.
    """

    def __init__(self, in_channel: int, depth: int, stride: int):
        super().__init__()
        # Creation order fixes the state-dict order: shortcut_layer first, as upstream.
        if in_channel == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channel, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


def _stage_units(num_stages: int, units_per_stage=None) -> list[tuple[int, int, int]]:
    """(in, depth, stride) of every unit of the first ``num_stages`` stages, in ``body`` order
    (``units_per_stage``: the unit count of each stage, default IR-50's)."""
    units = []
    for (in_c, depth, _), n in zip(IR50_STAGES[:num_stages], _unit_counts(num_stages, units_per_stage)):
        units.append((in_c, depth, 2))
        units.extend((depth, depth, 1) for _ in range(n - 1))
    return units


class IR50(nn.Module):
    """IR-50 with ``num_stages`` stages (3: POSTER/FERMam/GReFEL, 4: the MS-Celeb-1M model).

    Input [B,3,H,W] of any size: ``forward`` first nearest-resizes it to 112×112 (upstream
    ``F.interpolate(x, size=112)``; for 224 this keeps the pixels at even indices). ``input_size``
    another multiple of 16 (3 stages only; e.g. 64 for the synthetic CPU demo, not a paper setting)
    resizes to that instead and gives (input_size / 16)² tokens.

    - ``forward_stages(x)`` → the output of every stage: [B,64,56,56], [B,128,28,28],
      [B,256,14,14] (and [B,512,7,7] with 4 stages). GReFEL taps the first three.
    - ``forward_features(x)`` → the last stage's map.
    - ``forward(x)`` → what upstream returns. 3 stages: ``map.view(B,49,1024)``, a raw
      reinterpretation of the contiguous NCHW [B,256,14,14] map (docs/papers/fermam.md §3.3: "tokens" are
      channel chunks, not image locations). 4 stages: the 512-d face embedding of
      ``output_layer`` (BN2d → Dropout → Flatten → Linear 25088→512 → BN1d).
    """

    def __init__(self, num_stages: int = 3, drop_ratio: float = 0.0, input_size: int = 112, units=None):
        super().__init__()
        if num_stages not in (3, 4):
            raise ValueError(f"IR-50 has 3 (POSTER/FERMam) or 4 (MS-Celeb-1M) stages, got {num_stages}")
        counts = _unit_counts(num_stages, units)
        if input_size != 112 and (num_stages != 3 or input_size % 16 or input_size < 16):
            raise ValueError(f"IR-50 is defined at 112×112; another input_size needs 3 stages and a multiple of 16 "
                             f"(the token view), got {input_size} with {num_stages} stages")
        self.num_stages = num_stages
        self.input_size = input_size
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        # Upstream creates output_layer before body (state-dict order). It is sized for the
        # 4-stage map (512·7·7) whatever num_stages is: the 3-stage model keeps it, unused.
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(drop_ratio),
            nn.Flatten(),
            nn.Linear(512 * 7 * 7, 512),
            nn.BatchNorm1d(512),
        )
        self.body = nn.Sequential(*(BottleneckIR(i, d, s) for i, d, s in _stage_units(num_stages, counts)))
        self._stage_ends = _stage_ends(num_stages, counts)
        self._init_weights()
        if num_stages == 3:
            # Never reaches an output: frozen, so DDP (which requires a gradient for every trainable
            # parameter) works without find_unused_parameters. The authors' optimiser holds it but never
            # updates it (no gradient), so freezing changes no number.
            self.output_layer.requires_grad_(False)

    def _init_weights(self) -> None:
        # face.evoLVe init; irrelevant once weights are loaded.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=self.input_size)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[B,3,H,W] → one map per stage (see the class docstring)."""
        x = self.input_layer(self._resize(x))
        outs = []
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self._stage_ends:
                outs.append(x)
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] → the last stage's map, [B,256,14,14] (3 stages) or [B,512,7,7] (4)."""
        return self.body(self.input_layer(self._resize(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """3 stages: tokens [B,49,1024] (raw view of the NCHW map; (input_size/16)² tokens at another size);
        4 stages: embedding [B,512]."""
        feat = self.forward_features(x)
        if self.num_stages == 3:
            return feat.reshape(feat.shape[0], -1, 1024)
        return self.output_layer(feat)

    def load_upstream(self, state: dict, strict: bool = True) -> list[str]:
        """Load an upstream IR-50 state (e.g. ``ir50.pth``) and return the keys it dropped.

        A 3-stage model drops the stage-4 entries (``body.21``–``body.23``) of a full 4-stage
        checkpoint, by name, and warns with the count and the first and last dropped key;
        everything else must match (``strict``), unlike upstream's silent shape filter.
        """
        kept, dropped = split_stage4(state, self.num_stages)
        if dropped:
            warnings.warn(
                f"IR-50 ({self.num_stages} stages): dropped {len(dropped)} stage-4 entries of a 4-stage "
                f"checkpoint ({dropped[0]} … {dropped[-1]})",
                stacklevel=2,
            )
        self.load_state_dict(kept, strict=strict)
        return dropped


def _unit_counts(num_stages: int, units=None) -> tuple[int, ...]:
    """Units per stage: IR-50's (3, 4, 14[, 3]) or ``units`` (a shallower network of the same widths and
    map sizes, e.g. (1, 1, 2) for a CPU demo; checkpoints of IR-50 then no longer load)."""
    if units is None:
        return tuple(n for _, _, n in IR50_STAGES[:num_stages])
    units = tuple(int(n) for n in units)
    if len(units) != num_stages or min(units) < 1:
        raise ValueError(f"units must give one count >= 1 per stage ({num_stages}), got {units}")
    return units


def _stage_ends(num_stages: int, units=None) -> set[int]:
    ends, total = set(), 0
    for n in _unit_counts(num_stages, units):
        total += n
        ends.add(total - 1)
    return ends


_BODY_UNIT = re.compile(r"^body\.(\d+)\.")


def split_stage4(state: dict, num_stages: int = 3) -> tuple[dict, list[str]]:
    """Split an IR-50 state into (entries a ``num_stages`` model has, dropped stage-4 keys)."""
    n_units = len(_stage_units(num_stages))
    kept, dropped = {}, []
    for k, v in state.items():
        m = _BODY_UNIT.match(k)
        if m and int(m.group(1)) >= n_units:
            dropped.append(k)
        else:
            kept[k] = v
    return kept, dropped


class IR50Backbone(IR50):
    """:class:`IR50` behind the ``create_model`` contract (``create_model("ir50")``, ``"ir50_full"``).

    Same modules and keys as :class:`IR50`; ``forward`` returns ``ModelOutput(logits=None,
    features, extras)`` with ``features`` = what :meth:`IR50.forward` returns (tokens
    [B,49,1024] or the embedding [B,512]) and ``extras["stages"]`` = the stage maps. A backbone
    has no classifier, so ``logits`` is None. Paper models embed :class:`IR50` itself.
    """

    def forward(self, x: torch.Tensor):
        from ferlib.models.registry import ModelOutput

        stages = self.forward_stages(x)
        feat = stages[-1]
        if self.num_stages == 3:
            features = feat.reshape(feat.shape[0], 49, 1024)
        else:
            features = self.output_layer(feat)
        return ModelOutput(None, features, {"stages": stages, "feature_map": feat})
