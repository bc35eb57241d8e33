"""The pieces every parity adapter uses: checks, the report table, the authors' checkout on ``sys.path``.

A parity run (``python -m ferlib parity PAPER --upstream DIR``) drives the authors' own code from ``DIR``
and ferlib's on the same inputs, and turns every comparison into a :class:`Check` row of one
:class:`Report`. The comparisons here are the only tolerances the adapters use:

* tensors: the largest ``|ours − theirs|`` divided by the reference's scale (its largest magnitude, at
  least 1), the way the reference tests compare (:func:`ferlib.testing.assert_matches_ref`);
* images: grey levels, ``|Δ| · 255`` of the network input before normalisation; tolerance 1 level;
* random draws: a two-sample test (Kolmogorov–Smirnov, Fisher / binomial, χ²) at ``alpha``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import math
import os
import sys
import types
import zlib
from unittest import mock
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

#: the stages of a parity run, in the order of the table
STAGES = ("info", "model", "data", "augment", "train", "eval")

#: the fp32 tolerance of a tensor comparison, relative to the reference's scale
FP32_REL_TOL = 1e-5


class ParityInputError(ValueError):
    """A parity run cannot start: a missing checkout or data folder, an unknown paper. The message names the
    path and the fix (the CLI prints it as one ``error: …`` line and exits 2)."""


@dataclass
class ParityOptions:
    """What a parity run needs (the CLI's options; the library takes this, never the parsed command line).

    ``upstream``: the authors' checkout; ``data_root``: a real dataset's folder instead of the fixture
    (its first ``n_images`` images); ``steps``: training steps compared (None: the adapter's default, which
    crosses an epoch boundary); ``record``: where to write the recording a replay test reads.
    """

    upstream: str | Path
    data_root: str | Path | None = None
    n_images: int | None = None
    seed: int = 0
    steps: int | None = None
    device: str = "cpu"
    record: str | Path | None = None


@dataclass
class Check:
    """One row of the parity table: ``stage`` (one of :data:`STAGES`), what was compared (``name``), the measured
    deviation as text (``value``), whether it is within ``tol``, and a ``note`` (why a difference is expected)."""

    stage: str
    name: str
    value: str
    ok: bool
    tol: str = ""
    note: str = ""

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"unknown parity stage {self.stage!r}; stages: {STAGES}")
        self.ok = bool(self.ok)


def info(stage: str, name: str, value: str, note: str = "") -> Check:
    """A row that states a fact (what was compared, what was switched off, a stand-in used); it never fails."""
    return Check(stage, name, value, True, "", note)


# --- tensors ----------------------------------------------------------------------------------------------


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    return torch.as_tensor(np.asarray(x))


def tensor_deviation(ours, theirs) -> tuple[float, float]:
    """``(max|ours − theirs| / scale, scale)`` with ``scale = max(1, max|theirs|)``, computed in float64."""
    a, b = _as_tensor(ours).double(), _as_tensor(theirs).double()
    scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
    dev = float((a - b).abs().max()) / scale if b.numel() else 0.0
    return dev, scale


def compare_tensors(stage: str, name: str, ours, theirs, rel_tol: float = FP32_REL_TOL, note: str = "") -> Check:
    """``ours`` against the authors' ``theirs``: same shape, and ``max|Δ| ≤ rel_tol · max(1, max|theirs|)``.
    Integer and bool tensors must be equal. ``value`` is the deviation relative to that scale."""
    a, b = _as_tensor(ours), _as_tensor(theirs)
    if tuple(a.shape) != tuple(b.shape):
        return Check(stage, name, f"shape {tuple(a.shape)} vs {tuple(b.shape)}", False, "same shape", note)
    if not (a.is_floating_point() or b.is_floating_point()):
        differ = int((a != b).sum())
        return Check(stage, name, f"{differ} of {a.numel()} differ", differ == 0, "equal", note)
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        same = bool(torch.equal(torch.isnan(a), torch.isnan(b)) and torch.equal(a[~torch.isnan(a)], b[~torch.isnan(b)]))
        return Check(stage, name, "non-finite values " + ("match" if same else "differ"), same, "equal", note)
    dev, scale = tensor_deviation(a, b)
    return Check(stage, name, f"{dev:.1e} (max|Δ| / {scale:.3g})", dev <= rel_tol, f"≤ {rel_tol:.0e} rel.", note)


def compare_state_dicts(stage: str, ours: Mapping[str, torch.Tensor], theirs: Mapping[str, torch.Tensor],
                        rel_tol: float = FP32_REL_TOL, name: str = "parameters and buffers",
                        note: str = "", max_rows: int = 8) -> list[Check]:
    """Every tensor of two state dicts (parameters and buffers: BatchNorm running statistics and
    ``num_batches_tracked`` included): one summary row (the worst tensor) plus a row per failing tensor and
    per key that only one side has (the first ``max_rows`` of them, then one row counting the rest)."""
    rows: list[Check] = []
    only_ours, only_theirs = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    for key in only_ours:
        rows.append(Check(stage, f"{key}", "only in ferlib's state", False, "same keys", note))
    for key in only_theirs:
        rows.append(Check(stage, f"{key}", "only in the authors' state", False, "same keys", note))
    worst_key, worst, failing = "", 0.0, []
    shared = [k for k in theirs if k in ours]
    for key in shared:
        row = compare_tensors(stage, key, ours[key], theirs[key], rel_tol, note)
        if not row.ok:
            failing.append(row)
        if _as_tensor(theirs[key]).is_floating_point() and tuple(_as_tensor(ours[key]).shape) == tuple(
                _as_tensor(theirs[key]).shape):
            dev, _ = tensor_deviation(ours[key], theirs[key])
            if dev >= worst:
                worst_key, worst = key, dev
    rows.extend(failing)
    if len(rows) > max_rows:
        rest = len(rows) - max_rows
        rows = rows[:max_rows] + [Check(stage, f"… {rest} more tensors", "beyond tolerance or missing", False,
                                        f"≤ {rel_tol:.0e} rel. each", note)]
    summary = (f"{len(shared) - len(failing)}/{len(shared)} tensors within; worst {worst:.1e} ({worst_key})"
               if shared else "no tensors")
    ok = bool(shared) and not failing and not only_ours and not only_theirs
    rows.insert(0, Check(stage, name, summary, ok, f"≤ {rel_tol:.0e} rel. each", note))
    return rows


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """A sha256 of a state dict's keys, dtypes, shapes and exact bytes (a recording's exact fingerprint)."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = _as_tensor(state[key]).contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


# --- images -----------------------------------------------------------------------------------------------


def _to_grey_levels(x, mean: Sequence[float] | None, std: Sequence[float] | None) -> torch.Tensor:
    t = _as_tensor(x)
    if t.dtype == torch.uint8:
        return t.double()
    t = t.double()
    if mean is not None and std is not None:
        shape = [1] * t.dim()
        shape[-3] = -1  # channels of [C, H, W] or [B, C, H, W]
        t = t * torch.tensor(std, dtype=torch.float64).view(shape) + torch.tensor(mean, dtype=torch.float64).view(shape)
    return t * 255.0


def grey_levels(stage: str, name: str, ours, theirs, mean: Sequence[float] | None = None,
                std: Sequence[float] | None = None, tol: float = 1.0, note: str = "") -> Check:
    """Network inputs compared in grey levels: ``|Δ| · 255`` before normalisation (``mean``/``std`` given: the
    tensors are normalised and are mapped back first; uint8 tensors are grey levels already). Fails when the
    largest difference exceeds ``tol`` levels (default 1)."""
    a, b = _to_grey_levels(ours, mean, std), _to_grey_levels(theirs, mean, std)
    if tuple(a.shape) != tuple(b.shape):
        return Check(stage, name, f"shape {tuple(a.shape)} vs {tuple(b.shape)}", False, f"≤ {tol:g} grey level", note)
    d = (a - b).abs()
    mx, mean_d = (float(d.max()), float(d.mean())) if d.numel() else (0.0, 0.0)
    # normalised float inputs mapped back carry fp32 rounding (~1e-4 level): not a grey-level difference
    slack = 1e-6 if _as_tensor(ours).dtype == _as_tensor(theirs).dtype == torch.uint8 else 1e-3
    return Check(stage, name, f"max {mx:.2f}, mean {mean_d:.3f} grey levels", mx <= tol + slack,
                 f"≤ {tol:g} grey level", note)


# --- distributions ----------------------------------------------------------------------------------------


def two_sample(stage: str, name: str, ours, theirs, kind: str = "continuous", alpha: float = 1e-3,
               note: str = "") -> Check:
    """Whether ferlib's draws of a random op (``ours``) and the authors' (``theirs``) come from one distribution.

    ``kind``: ``"continuous"`` (two-sample Kolmogorov–Smirnov), ``"binary"`` (0/1 outcomes: Fisher's exact test
    on the 2×2 table), ``"categorical"`` (χ² on the table of counts). Fails when ``p < alpha``; ``value`` gives
    both means (for categorical draws, the frequency of each category) and the p-value.
    """
    from scipy import stats

    a, b = np.asarray(_as_tensor(ours)).ravel(), np.asarray(_as_tensor(theirs)).ravel()
    if a.size == 0 or b.size == 0:
        return Check(stage, name, "no draws", False, f"p ≥ {alpha:g}", note)
    if kind == "continuous":
        p = float(stats.ks_2samp(a.astype(np.float64), b.astype(np.float64)).pvalue)
        value = f"mean {a.mean():.4g} vs {b.mean():.4g}, KS p={p:.3g}"
    elif kind == "binary":
        a, b = a.astype(bool), b.astype(bool)
        table = [[int(a.sum()), int((~a).sum())], [int(b.sum()), int((~b).sum())]]
        p = float(stats.fisher_exact(table).pvalue)
        value = f"rate {a.mean():.4f} vs {b.mean():.4f}, Fisher p={p:.3g}"
    elif kind == "categorical":
        cats = np.union1d(a, b)
        table = np.array([[int((a == c).sum()) for c in cats], [int((b == c).sum()) for c in cats]])
        if len(cats) < 2:
            p = 1.0
        else:
            p = float(stats.chi2_contingency(table).pvalue)
        freq = lambda row: "/".join(f"{v / row.sum():.3f}" for v in row)  # noqa: E731
        value = f"freq {freq(table[0])} vs {freq(table[1])} (categories {cats.tolist()}), χ² p={p:.3g}"
    else:
        raise ValueError(f"kind must be 'continuous', 'binary' or 'categorical', got {kind!r}")
    return Check(stage, name, value, p >= alpha, f"p ≥ {alpha:g} (n={a.size}/{b.size})", note)


# --- the report -------------------------------------------------------------------------------------------


@dataclass
class Report:
    """The rows of one parity run; ``ok`` when every row is."""

    paper: str = ""
    checks: list[Check] = field(default_factory=list)

    def add(self, check: Check | Iterable[Check]) -> "Report":
        if isinstance(check, Check):
            self.checks.append(check)
        else:
            for c in check:
                self.add(c)
        return self

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def table(self) -> str:
        """One plain-text table: stage, check, measured, tolerance, result, note (rows in stage order)."""
        header = ("stage", "check", "measured", "tolerance", "result", "note")
        order = {s: i for i, s in enumerate(STAGES)}
        rows = [(c.stage, c.name, c.value, c.tol, "ok" if c.ok else "FAIL", c.note)
                for c in sorted(self.checks, key=lambda c: order[c.stage])]
        widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
        widths[-1] = len(header[-1])  # the note is the last column: never padded
        line = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
        out = [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]
        n_fail = len(self.failed)
        verdict = "PARITY OK" if self.ok else f"PARITY FAILED: {n_fail} check(s); stages {self.failed_stages()}"
        title = f"parity {self.paper}: " if self.paper else ""
        return "\n".join(out + ["", f"{title}{verdict} ({len(self.checks)} checks)"])

    def failed_stages(self) -> list[str]:
        return sorted({c.stage for c in self.failed}, key=STAGES.index)

    def to_dict(self) -> dict:
        return {"paper": self.paper, "ok": self.ok, "checks": [dataclasses.asdict(c) for c in self.checks]}


# --- recordings -------------------------------------------------------------------------------------------


def save_record(path: str | Path, record: dict) -> Path:
    """Write a parity recording (tensors, numbers, strings) with ``torch.save``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(record, tmp)
    os.replace(tmp, path)
    return path


def load_record(path: str | Path) -> dict:
    """A recording written by :func:`save_record` (tensors and plain Python values only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"parity recording {path} not found; write one with "
                                "python -m ferlib parity PAPER --upstream DIR --record {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


# --- compact recordings -------------------------------------------------------------------------------

def _project(key: str, t: torch.Tensor, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed * 7919 + zlib.crc32(key.encode()))
    dirs = torch.randn(4, t.numel(), generator=g, dtype=torch.float64)
    return {"proj": dirs @ t.double().reshape(-1), "numel": t.numel(), "absmax": float(t.abs().max())}


def fingerprint(state: Mapping[str, torch.Tensor], whole_numel: int = 64) -> dict:
    """A small stand-in of a state dict for a recording: tensors of up to ``whole_numel`` elements (and integer
    ones) whole, larger float tensors as 4 projections onto Gaussian directions seeded by the key (float64),
    with their size and largest magnitude."""
    out = {}
    for key, t in state.items():
        t = t.detach().cpu()
        whole = t.numel() <= whole_numel or not t.is_floating_point()
        out[key] = t.clone() if whole else _project(key, t)
    return out


def compare_fingerprints(stage: str, ours: Mapping[str, torch.Tensor], recorded: dict, rel_tol: float = FP32_REL_TOL,
                         name: str = "parameters and buffers after K steps (recorded)") -> list[Check]:
    """``ours`` (a state dict) against a recording's :func:`fingerprint`: whole tensors as :func:`compare_tensors`,
    projections within ``rel_tol · scale · √numel`` (a projection of a difference of ``rel_tol · scale`` in every
    element). One summary row (the worst tensor) plus one per failing or missing tensor."""
    rows, worst, worst_key = [], 0.0, ""
    for key, rec in recorded.items():
        if key not in ours:
            rows.append(Check(stage, key, "missing in ferlib's state", False, "same keys"))
            continue
        t = ours[key].detach().cpu()
        if isinstance(rec, dict):
            if t.numel() != rec["numel"]:
                rows.append(Check(stage, key, f"{t.numel()} elements vs {rec['numel']}", False, "same shape"))
                continue
            scale = max(1.0, rec["absmax"])
            dev = float((_project(key, t)["proj"] - rec["proj"]).abs().max()) / (scale * math.sqrt(rec["numel"]))
            if dev > rel_tol:
                rows.append(Check(stage, key, f"{dev:.1e} (projection / scale·√n)", False, f"≤ {rel_tol:.0e} rel."))
        else:
            row = compare_tensors(stage, key, t, rec, rel_tol)
            if not row.ok:
                rows.append(row)
                continue
            dev = tensor_deviation(t, rec)[0] if rec.is_floating_point() else 0.0
        if dev >= worst:
            worst, worst_key = dev, key
    summary = f"{len(recorded) - len(rows)}/{len(recorded)} within; worst {worst:.1e} ({worst_key})"
    return [Check(stage, name, summary, not rows, f"≤ {rel_tol:.0e} rel. each")] + rows


def pack_uint8(x: torch.Tensor) -> dict:
    """A uint8 tensor zlib-compressed for a recording (images of flat synthetic faces shrink 3–5×)."""
    return {"shape": list(x.shape), "zlib": torch.frombuffer(bytearray(zlib.compress(x.numpy().tobytes(), 9)),
                                                              dtype=torch.uint8)}


def unpack_uint8(d: dict) -> torch.Tensor:
    """The uint8 tensor :func:`pack_uint8` stored."""
    raw = zlib.decompress(bytes(d["zlib"].numpy()))
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(d["shape"]).clone()


# --- the authors' checkout --------------------------------------------------------------------------------


def _standin_selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                               return_last_state=False):
    """mamba_ssm's ``selective_scan_fn`` signature over ferlib's reference scan (no fused kernel)."""
    from ferlib.ops.selective_scan import selective_scan

    if return_last_state:
        raise NotImplementedError("the mamba_ssm stand-in of ferlib.parity does not return the last state")
    y = selective_scan(u, delta, A, B, C, D, delta_bias, delta_softplus, backend="reference")
    if z is not None:
        y = y * torch.nn.functional.silu(z)
    return y


def _mamba_importable() -> bool:
    if "mamba_ssm" in sys.modules:
        return not getattr(sys.modules["mamba_ssm"], "__ferlib_standin__", False)
    try:
        importlib.import_module("mamba_ssm.ops.selective_scan_interface")
        return True
    except Exception:  # ImportError, or its compiled extension failing to load
        return False


def _mamba_standin_modules() -> dict[str, types.ModuleType]:
    root = types.ModuleType("mamba_ssm")
    ops = types.ModuleType("mamba_ssm.ops")
    iface = types.ModuleType("mamba_ssm.ops.selective_scan_interface")
    for m in (root, ops, iface):
        m.__ferlib_standin__ = True
        m.__path__ = []  # a package, so submodule imports resolve through sys.modules
    iface.selective_scan_fn = _standin_selective_scan_fn
    root.selective_scan_fn = _standin_selective_scan_fn
    root.ops, ops.selective_scan_interface = ops, iface
    return {m.__name__: m for m in (root, ops, iface)}


def _top_level_names(root: Path) -> set[str]:
    names = set()
    for p in root.iterdir():
        if p.suffix == ".py":
            names.add(p.stem)
        elif p.is_dir() and p.name.isidentifier():
            names.add(p.name)
    return names


def _is_under(module: types.ModuleType, root: Path) -> bool:
    files = [getattr(module, "__file__", None)] + list(getattr(module, "__path__", None) or [])
    for f in files:
        if f:
            try:
                Path(f).resolve().relative_to(root)
                return True
            except (ValueError, OSError):
                pass
    return False


@dataclass
class UpstreamCode:
    """The handle :func:`upstream_code` yields: the checkout's ``root`` (the folder on ``sys.path``), the rows it
    recorded (``checks``: the mamba_ssm stand-in, if used) and ``import_module``."""

    root: Path
    checks: list[Check] = field(default_factory=list)

    def import_module(self, name: str) -> types.ModuleType:
        return importlib.import_module(name)


@contextlib.contextmanager
def upstream_code(directory: str | Path, subdir: str | None = None, report: Report | None = None,
                  stand_in_mamba: bool = True):
    """The authors' checkout ``directory`` (its ``subdir``, where the code lives) importable for the block.

    Modules of the same top-level names already imported (another paper's ``model``, ``dataset``) are set
    aside for the block and put back after it; every module imported from the checkout is removed on exit,
    so two papers never see each other's code. Where ``mamba_ssm`` does not import, a stand-in package with
    ``mamba_ssm.selective_scan_fn`` and ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn`` runs
    ferlib's reference scan (:mod:`ferlib.ops.selective_scan`), and an ``info`` row says so (added to
    ``report`` when given; always in the handle's ``checks``).
    """
    root = Path(directory).expanduser().resolve()
    if subdir:
        root = root / subdir
    if not root.is_dir():
        raise ParityInputError(f"upstream checkout folder {root} does not exist; pass --upstream with a clone of "
                               "the authors' repository")
    handle = UpstreamCode(root)
    # ferlib's own scan decides once whether mamba_ssm is real: decide before any stand-in exists
    importlib.import_module("ferlib.ops.selective_scan")._mamba_selective_scan_fn()
    set_aside = {n: sys.modules.pop(n) for n in list(sys.modules)
                 if n.split(".")[0] in _top_level_names(root) and not _is_under(sys.modules[n], root)}
    before = set(sys.modules)
    standins: dict[str, types.ModuleType] = {}
    if stand_in_mamba and not _mamba_importable():
        standins = _mamba_standin_modules()
        sys.modules.update(standins)
        handle.checks.append(info("info", "mamba_ssm", "stand-in: ferlib.ops.selective_scan (reference scan)",
                                  "mamba_ssm does not import here; the authors' selective_scan_fn calls run "
                                  "ferlib's reference loop (same semantics, no CUDA kernel)"))
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        if report is not None:
            report.add(handle.checks)
        yield handle
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(root))
        for name in list(sys.modules):
            if name in standins or (name not in before and _is_under(sys.modules[name], root)):
                del sys.modules[name]
        for name in list(sys.modules):  # a name of the checkout imported by a module outside it
            if name.split(".")[0] in _top_level_names(root) and name not in before:
                sys.modules.pop(name, None)
        sys.modules.update(set_aside)
        importlib.invalidate_caches()


def patched(obj, name: str, value):
    """``obj.name = value`` inside a ``with`` block: created when missing, restored after (a class's
    staticmethod stays static). How the adapters drive the authors' scripts without editing them."""
    return mock.patch.object(obj, name, value, create=True)


@contextlib.contextmanager
def working_dir(path):
    """Run the block in ``path`` (the authors' scripts open files relative to their working directory)."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)

def zero_dropout(module: torch.nn.Module) -> int:
    """Dropout and stochastic depth off (p = 0) in every submodule; returns how many were switched off."""
    n = 0
    for m in module.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.p = 0.0
            n += 1
        elif type(m).__name__ == "DropPath":  # timm's (drop_prob) and ferlib's (p)
            for attr in ("drop_prob", "p"):
                if hasattr(m, attr):
                    setattr(m, attr, 0.0)
            n += 1
    return n
