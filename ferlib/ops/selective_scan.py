"""Selective scan (Mamba S6) with mamba_ssm's ``selective_scan_fn`` semantics, three backends.

Used by FERMam's 4-direction SS2D (``docs/papers/fermam.md`` §5; docs/design.md §4). For every batch element,
channel ``d`` and step ``t`` (state ``h`` [N] starts at zero and is kept in float32)::

    Δ      = softplus(delta[d, t] + delta_bias[d])        (softplus only when delta_softplus)
    h      ← exp(Δ · A[d, :]) ⊙ h + Δ · u[d, t] · B[g(d), :, t]
    y[d,t] = ⟨h, C[g(d), :, t]⟩ + D[d] · u[d, t]

Shapes: ``u``, ``delta`` [B, D_in, L]; ``A`` [D_in, N]; ``B``, ``C`` [B, G, N, L] where channel
block ``g·D_in/G … (g+1)·D_in/G − 1`` uses group ``g`` (a [B, N, L] tensor means G = 1);
``D``, ``delta_bias`` [D_in]. The result has ``u``'s shape and dtype; all arithmetic is float32
(or float64 when ``u`` is float64), whatever autocast says, as in mamba_ssm.

Backends:

* ``"cuda"``: mamba_ssm's fused kernel; imported lazily, only for CUDA tensors.
* ``"torch"``: pure PyTorch. The recurrence ``h_t = a_t ⊙ h_{t-1} + b_t`` runs as a chunked
  scan (:class:`_LinearScan`): a short loop inside chunks of ``√L`` steps, a loop over the chunk
  carries, and a fix-up with the in-chunk cumulative product of the decays (a product of numbers
  in (0, 1], so no overflow). Its backward is the same scan run backwards, so autograd never sees
  the L per-step slices that make the reference's backward quadratic in L.
* ``"reference"``: the obvious sequential loop (mamba_ssm's ``selective_scan_ref``); tests only.
* ``"auto"``: ``cuda`` when available for the inputs, else ``torch``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "cuda", "torch", "reference")


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    backend: str = "auto",
) -> torch.Tensor:
    """``y`` [B, D_in, L] of the selective scan (module docstring); ``backend`` picks the implementation."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown selective-scan backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        backend = resolve_backend("auto", u.device)
    if backend == "cuda":
        fn = _mamba_selective_scan_fn()
        if fn is None:
            raise RuntimeError(f"backend='cuda' needs the mamba_ssm package (pip install mamba-ssm); it did not import "
                               f"({_MAMBA['error']})")
        if not u.is_cuda:
            raise RuntimeError("backend='cuda' needs CUDA tensors; use backend='torch' on CPU")
        return fn(u, delta, A, B, C, D, z=None, delta_bias=delta_bias, delta_softplus=delta_softplus)
    _check_shapes(u, delta, A, B, C, D, delta_bias)
    impl = _scan_torch if backend == "torch" else _scan_reference
    with torch.autocast(device_type=u.device.type, enabled=False):
        return impl(u, delta, A, B, C, D, delta_bias, delta_softplus)


def cuda_backend_available(u: torch.Tensor | None = None) -> bool:
    """True when mamba_ssm's kernel imports (and ``u``, if given, lives on a CUDA device)."""
    if u is not None and not u.is_cuda:
        return False
    if u is None and not torch.cuda.is_available():
        return False
    return _mamba_selective_scan_fn() is not None


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """The backend ``backend`` runs on ``device``: ``"auto"`` is ``cuda`` (mamba_ssm's kernel) for CUDA tensors
    when it imports, unless deterministic algorithms are on (its backward adds atomically), else ``torch``."""
    if backend != "auto":
        return backend
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available() and not torch.are_deterministic_algorithms_enabled() \
            and _mamba_selective_scan_fn() is not None:
        return "cuda"
    return "torch"


def scan_backends(model: torch.nn.Module, device: torch.device | str) -> list[str]:
    """The backends ``model``'s scans run on ``device`` (modules with a ``scan_backend``); [] for a model without."""
    return sorted({resolve_backend(m.scan_backend, device) for m in model.modules() if hasattr(m, "scan_backend")})


class MambaSSMImportWarning(UserWarning):
    """mamba_ssm is installed but does not import (a broken build): the PyTorch scan runs instead."""


_MAMBA: dict = {}


def _mamba_selective_scan_fn():
    """mamba_ssm's ``selective_scan_fn`` or None; the import is tried once. Not installed: None, silently.
    Installed but broken (its compiled extension or a dependency fails to load): None, with one warning
    carrying the error (:class:`MambaSSMImportWarning`); :func:`mamba_ssm_status` records it."""
    if not _MAMBA:
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        except ModuleNotFoundError as e:
            if e.name != "mamba_ssm":  # the package is there, a part or a dependency of it is not
                _mamba_broken(e)
            else:
                _MAMBA.update(fn=None, error="not installed")
        except Exception as e:  # noqa: BLE001 - any failure of an installed package: an undefined symbol, CUDA mismatch …
            _mamba_broken(e)
        else:
            _MAMBA.update(fn=selective_scan_fn, error=None)
    return _MAMBA["fn"]


def _mamba_broken(e: Exception) -> None:
    import warnings

    error = f"{type(e).__name__}: {e}"
    _MAMBA.update(fn=None, error=error)
    warnings.warn(f"mamba_ssm is installed but does not import ({error}); FERMam uses ferlib's PyTorch selective "
                  f"scan instead (same numbers, slower). Rebuild it against this torch: MAMBA_FORCE_BUILD=TRUE pip "
                  f"install --no-build-isolation --force-reinstall mamba-ssm", MambaSSMImportWarning, stacklevel=3)


def mamba_ssm_status() -> dict:
    """``{"version", "import_error"}`` of mamba_ssm (config.yaml ``environment.mamba_ssm``): the installed version
    (None when absent) and why it does not import (None when it does, "not installed" when absent)."""
    from importlib import metadata

    try:
        version = metadata.version("mamba_ssm")
    except metadata.PackageNotFoundError:
        version = None
    if version is None and not _MAMBA:
        return {"version": None, "import_error": "not installed"}
    _mamba_selective_scan_fn()
    return {"version": version, "import_error": _MAMBA["error"]}


def _check_shapes(u, delta, A, B, C, D, delta_bias) -> None:
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f"u and delta must both be [B, D_in, L]; got {tuple(u.shape)} and {tuple(delta.shape)}")
    batch, d_in, length = u.shape
    if A.dim() != 2 or A.shape[0] != d_in:
        raise ValueError(f"A must be [D_in={d_in}, N]; got {tuple(A.shape)}")
    n = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if t.dim() == 3:
            t = t.unsqueeze(1)
        if t.dim() != 4 or t.shape[0] != batch or t.shape[2] != n or t.shape[3] != length or d_in % t.shape[1]:
            raise ValueError(
                f"{name} must be [B={batch}, G, N={n}, L={length}] with G dividing D_in={d_in}; got {tuple(t.shape)}"
            )
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and t.shape != (d_in,):
            raise ValueError(f"{name} must be [D_in={d_in}]; got {tuple(t.shape)}")


def _compute_dtype(u: torch.Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _prepare_delta(u, delta, delta_bias, delta_softplus):
    dt = _compute_dtype(u)
    delta = delta.to(dt)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dt)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return u.to(dt), delta


def _grouped(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (t.unsqueeze(1) if t.dim() == 3 else t).to(dtype)


def _scan_reference(u, delta, A, B, C, D, delta_bias, delta_softplus):
    """The sequential loop over L, one time step at a time (mamba_ssm ``selective_scan_ref``)."""
    dtype_in = u.dtype
    u, delta = _prepare_delta(u, delta, delta_bias, delta_softplus)
    A = A.to(u.dtype)
    B, C = _grouped(B, u.dtype), _grouped(C, u.dtype)
    repeat = u.shape[1] // B.shape[1]
    B = B.repeat_interleave(repeat, dim=1)  # [B, D_in, N, L]
    C = C.repeat_interleave(repeat, dim=1)
    decay = torch.exp(delta.unsqueeze(-1) * A[:, None, :])  # [B, D_in, L, N]
    drive = (delta * u).unsqueeze(-1) * B.transpose(2, 3)  # [B, D_in, L, N]
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[2]):
        h = decay[:, :, t] * h + drive[:, :, t]
        ys.append((h * C[:, :, :, t]).sum(-1))
    y = torch.stack(ys, dim=2)
    if D is not None:
        y = y + u * D.to(u.dtype)[:, None]
    return y.to(dtype_in)


def _scan_torch(u, delta, A, B, C, D, delta_bias, delta_softplus):
    """The fast path: big elementwise tensors laid out [L, B, G, H, N] and one chunked linear scan."""
    dtype_in = u.dtype
    u, delta = _prepare_delta(u, delta, delta_bias, delta_softplus)
    batch, d_in, length = u.shape
    n = A.shape[1]
    B, C = _grouped(B, u.dtype), _grouped(C, u.dtype)
    groups = B.shape[1]
    per_group = d_in // groups
    delta_t = delta.permute(2, 0, 1).reshape(length, batch, groups, per_group, 1)
    du_t = (delta * u).permute(2, 0, 1).reshape(length, batch, groups, per_group, 1)
    A_g = A.to(u.dtype).reshape(groups, per_group, n)
    B_t = B.permute(3, 0, 1, 2).unsqueeze(3)  # [L, B, G, 1, N]
    C_t = C.permute(3, 0, 1, 2).unsqueeze(-1)  # [L, B, G, N, 1]
    decay = (delta_t * A_g).exp_()  # [L, B, G, H, N]; in place: saves one 4-D allocation
    drive = torch.matmul(du_t, B_t)  # outer product Δu ⊗ B, as a batched matmul
    h = linear_scan(decay, drive)
    y = torch.matmul(h, C_t).reshape(length, batch, d_in).permute(1, 2, 0)
    if D is not None:
        y = y + u * D.to(u.dtype)[:, None]
    return y.to(dtype_in)


def linear_scan(a: torch.Tensor, b: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """``h_t = a_t ⊙ h_{t-1} + b_t`` along dim 0 with ``h_{-1} = 0``; ``a``, ``b`` [L, ...] of one shape.

    ``chunk_size`` 0 (or ≥ L) is the plain loop of L in-place steps, the fastest on a CPU, where the
    work, not the number of steps, sets the time. None picks the plain loop on CPU and chunks of
    ``ceil(√L)`` elsewhere (fewer, larger kernel launches).
    """
    if a.shape != b.shape:
        raise ValueError(f"a and b must have one shape; got {tuple(a.shape)} and {tuple(b.shape)}")
    shape = a.shape
    if chunk_size is None:
        chunk_size = 0 if a.device.type == "cpu" else math.ceil(math.sqrt(shape[0]))
    h = _LinearScan.apply(a.reshape(shape[0], -1), b.reshape(shape[0], -1), chunk_size)
    return h.reshape(shape)


class _LinearScan(torch.autograd.Function):
    """Autograd wrapper: the adjoint of a forward linear scan is a backward linear scan."""

    @staticmethod
    def forward(ctx, a, b, chunk):
        h = _scan(a.contiguous(), b.contiguous(), chunk)
        ctx.save_for_backward(a, h)
        ctx.chunk = chunk
        return h

    @staticmethod
    def backward(ctx, grad_h):
        a, h = ctx.saved_tensors
        # g_t = grad_t + a_{t+1} g_{t+1}; then dL/db_t = g_t and dL/da_t = g_t h_{t-1}.
        g = _scan(a, grad_h.contiguous(), ctx.chunk, reverse=True)
        grad_a = torch.empty_like(a)
        grad_a[0] = 0
        torch.mul(g[1:], h[:-1], out=grad_a[1:])
        return grad_a, g, None


def _scan(a: torch.Tensor, b: torch.Tensor, chunk: int, reverse: bool = False) -> torch.Tensor:
    """Linear scan of [L, M] tensors without autograd. ``reverse``: ``h_t = a_{t+1} h_{t+1} + b_t``."""
    length = a.shape[0]
    if chunk <= 1 or chunk >= length:
        h = b.clone()
        if reverse:
            for t in range(length - 2, -1, -1):
                h[t].addcmul_(a[t + 1], h[t + 1])
        else:
            for t in range(1, length):
                h[t].addcmul_(a[t], h[t - 1])
        return h
    if reverse:
        a_next = torch.cat([a[1:], a.new_zeros(1, a.shape[1])])
        return _scan(a_next.flip(0), b.flip(0), chunk).flip(0)
    n_chunks = -(-length // chunk)
    pad = n_chunks * chunk - length
    if pad:
        a = torch.cat([a, a.new_ones(pad, a.shape[1])])
        b = torch.cat([b, b.new_zeros(pad, b.shape[1])])
    a_c = a.view(n_chunks, chunk, -1)
    # 1. scan inside every chunk from a zero state (all chunks at once)
    h = b.view(n_chunks, chunk, -1).clone()
    for t in range(1, chunk):
        h[:, t].addcmul_(a_c[:, t], h[:, t - 1])
    # 2. carry the chunk-end states across chunks
    decay_in_chunk = torch.cumprod(a_c, dim=1)
    carry = h[:, -1].clone()
    for c in range(1, n_chunks):
        carry[c].addcmul_(decay_in_chunk[c, -1], carry[c - 1])
    # 3. add each chunk's incoming state, decayed to every step of the chunk
    h[1:].addcmul_(decay_in_chunk[1:], carry[:-1].unsqueeze(1))
    return h.view(n_chunks * chunk, -1)[:length]
