"""Reference-weight helpers: rebuild the authors' weights from a ``*_keys.txt`` file (ref/README.md).

Used by the test suite and the benchmarks to prove that a ferlib model reproduces the authors'
outputs. The recipe depends only on key, shape and dtype, so no weights need to ship.
"""
from __future__ import annotations

import ast
import json
import math
import os
import zlib
from collections import OrderedDict
from pathlib import Path

import torch

_REPO = Path(__file__).resolve().parent.parent
#: Small reference files copied into the repository (keys, inputs, outputs, losses).
REF_DIR = _REPO / "tests" / "data" / "ref"
#: Fixtures in the official dataset formats.
FIXTURES_DIR = _REPO / "tests" / "data" / "fixtures"


def shared_ref_dir() -> Path | None:
    """``../shared/ref`` (or ``$FERLIB_SHARED_REF``) holding the large ``*_intermediates.pt``; None if absent."""
    env = os.environ.get("FERLIB_SHARED_REF")
    cands = [Path(env)] if env else []
    cands += [_REPO.parent / "shared" / "ref", _REPO.parent.parent / "shared" / "ref"]
    for c in cands:
        if c.is_dir() and any(c.glob("*_intermediates.pt")):
            return c
    return None


def conv_gain(model: str) -> float:
    """The ``conv_gain`` of a reference set, from ``manifest.json``."""
    manifest = json.loads((REF_DIR / "manifest.json").read_text())
    return float(manifest[model]["conv_gain"])


def read_keys(path: str | os.PathLike) -> list[tuple[str, tuple, str, str]]:
    """Parse a keys file into ``(key, shape, dtype, kind)`` rows, in state-dict order."""
    rows = []
    for line in Path(path).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape, dtype, kind = line.split("\t")
        rows.append((key, tuple(ast.literal_eval(shape)), dtype, kind))
    return rows


def reference_tensor(key: str, shape: tuple, dtype: str, gain: float) -> torch.Tensor:
    """One tensor by the documented recipe (seeded by crc32 of the key)."""
    dt = getattr(torch, dtype)
    if not dt.is_floating_point:
        return torch.zeros(shape, dtype=dt)
    g = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
    if key.endswith("running_var"):
        t = 0.5 + torch.rand(shape, generator=g)
    elif key.endswith("running_mean"):
        t = 0.1 * torch.randn(shape, generator=g)
    elif len(shape) <= 1 and key.endswith("weight"):
        t = 1 + 0.1 * torch.randn(shape, generator=g)
    elif len(shape) <= 1:
        t = 0.1 * torch.randn(shape, generator=g)
    elif len(shape) == 4:
        t = gain * torch.randn(shape, generator=g) / math.sqrt(shape[1] * shape[2] * shape[3])
    else:
        t = torch.randn(shape, generator=g) / math.sqrt(shape[-1])
    return t.to(dt)


def reference_state(keys_file: str, gain: float | None = None, model: str | None = None) -> "OrderedDict[str, torch.Tensor]":
    """The upstream state dict rebuilt from ``REF_DIR / keys_file`` (gain from the manifest entry ``model``)."""
    path = Path(keys_file)
    if not path.is_absolute():
        path = REF_DIR / path
    if gain is None:
        gain = conv_gain(model or path.name.split("_")[0])
    return OrderedDict((k, reference_tensor(k, s, d, gain)) for k, s, d, _ in read_keys(path))


def load_ref(name: str) -> object:
    """``torch.load`` a small reference file from ``REF_DIR``."""
    return torch.load(REF_DIR / name, map_location="cpu", weights_only=True)


def install_weights(monkeypatch, home, name: str, state: dict, wrap: bool = False) -> dict:
    """Write ``state`` as registry entry ``name``'s file under ``home/pretrained`` (``$FERLIB_HOME``) and
    re-register the entry with that file's size and sha256, for the duration of a test; returns ``state``.

    ``wrap`` stores ``{"state_dict": state}`` as pytorch_face_landmark's checkpoint does. The caller sets
    ``FERLIB_HOME`` to ``home`` (``monkeypatch.setenv``)."""
    import dataclasses

    import ferlib.weights.registry as registry
    from ferlib.weights.load import sha256_of

    entry = registry.get_weights(name)
    path = Path(home) / "pretrained" / entry.filename
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state} if wrap else state, path)
    monkeypatch.setitem(registry._WEIGHTS, name,
                        dataclasses.replace(entry, size=path.stat().st_size, sha256=sha256_of(path)))
    return state


def assert_matches_ref(actual: torch.Tensor, expected: torch.Tensor, msg: str | None = None,
                       rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """``actual`` equals a reference tensor of the authors' code within ``rtol`` and an absolute tolerance of
    ``atol`` times the reference's largest magnitude (at least 1).

    fp32 convolutions accumulate in an order that depends on the CPU's kernels (oneDNN picks AVX2 or AVX-512
    paths), so near-zero entries of a tensor whose scale is S differ by about 1e-7·S between machines; a fixed
    ``atol`` of 1e-5 passed on one CPU type and failed on another for IR-50 tokens and MMFRM logits (|x| ≈ 300).
    """
    scale = max(1.0, float(expected.detach().abs().max())) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol * scale, msg=msg)


def notebook_text(nb) -> str:
    """Everything an executed notebook printed or displayed as text (stream text, text/plain, text/html)."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            parts.append(out.get("text", "") + data.get("text/plain", "") + data.get("text/html", ""))
    return "\n".join(parts)
