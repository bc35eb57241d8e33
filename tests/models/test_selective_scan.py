"""Selective scan (ferlib.ops): the fast PyTorch scan against the sequential reference, autograd, CUDA."""
import pytest
import torch

from ferlib.ops import cuda_backend_available, linear_scan, selective_scan


def _inputs(batch=2, groups=4, per_group=8, length=49, d_state=16, dtype=torch.float32, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    d_in = groups * per_group

    def rnd(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=dtype)).requires_grad_(grad)

    u = rnd(batch, d_in, length)
    delta = rnd(batch, d_in, length, scale=0.5)
    # FERMam's A: -exp(A_logs) with A_logs[d, n] = log(n + 1) plus noise
    a_log = torch.log(torch.arange(1, d_state + 1, dtype=dtype)).repeat(d_in, 1) + 0.1 * torch.randn(
        d_in, d_state, generator=g, dtype=dtype
    )
    A = (-torch.exp(a_log)).requires_grad_(grad)
    B = rnd(batch, groups, d_state, length)
    C = rnd(batch, groups, d_state, length)
    D = rnd(d_in)
    bias = rnd(d_in, scale=0.3)
    return u, delta, A, B, C, D, bias


@pytest.mark.parametrize("length", [1, 9, 49])
@pytest.mark.parametrize("softplus", [True, False])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("use_d", [True, False])
def test_torch_matches_reference(length, softplus, use_bias, use_d):
    u, delta, A, B, C, D, bias = _inputs(length=length)
    if not softplus:
        delta = delta.abs()  # Δ must stay positive without softplus, as in Mamba
    kw = dict(D=D if use_d else None, delta_bias=bias.abs() if use_bias else None, delta_softplus=softplus)
    ref = selective_scan(u, delta, A, B, C, backend="reference", **kw)
    out = selective_scan(u, delta, A, B, C, backend="torch", **kw)
    assert out.shape == u.shape and out.dtype == u.dtype
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def test_fermam_ss2d_shape():
    """FERMam's SS2D call: 4 directions × 512 channels, d_state 16, L 49, B/C per direction."""
    u, delta, A, B, C, D, bias = _inputs(batch=2, groups=4, per_group=512, length=49)
    ref = selective_scan(u, delta, A, B, C, D, bias, backend="reference")
    out = selective_scan(u, delta, A, B, C, D, bias, backend="torch")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def test_reference_follows_the_recurrence_by_hand():
    """One channel, two steps, written out: catches a wrong grouping or a missing term."""
    u, delta, A, B, C, D, bias = _inputs(batch=1, groups=2, per_group=1, length=2, d_state=3)
    y = selective_scan(u, delta, A, B, C, D, bias, backend="reference")
    d = 1  # second channel -> second group
    dt = torch.nn.functional.softplus(delta[0, d] + bias[d])
    h = torch.zeros(3)
    for t in range(2):
        h = torch.exp(dt[t] * A[d]) * h + dt[t] * u[0, d, t] * B[0, 1, :, t]
        expected = (h * C[0, 1, :, t]).sum() + D[d] * u[0, d, t]
        torch.testing.assert_close(y[0, d, t], expected)


def test_ungrouped_b_c_equal_one_group():
    u, delta, A, B, C, D, bias = _inputs(groups=1, per_group=16, length=9)
    grouped = selective_scan(u, delta, A, B, C, D, bias, backend="torch")
    plain = selective_scan(u, delta, A, B[:, 0], C[:, 0], D, bias, backend="torch")
    torch.testing.assert_close(grouped, plain)


def test_bf16_autocast_keeps_fp32_state():
    u, delta, A, B, C, D, bias = _inputs(length=49)
    ref = selective_scan(u, delta, A, B, C, D, bias, backend="reference")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = selective_scan(u.bfloat16(), delta.bfloat16(), A, B.bfloat16(), C.bfloat16(), D, bias, backend="torch")
    assert out.dtype == torch.bfloat16
    # Only the bf16 rounding of the inputs and of the output remains.
    err = (out.float() - ref).abs().max() / ref.abs().max()
    assert err < 3e-2, err
    # ... and the same bf16 inputs computed by the reference agree to fp32 accuracy before rounding.
    ref16 = selective_scan(u.bfloat16().float(), delta.bfloat16().float(), A, B.bfloat16().float(),
                           C.bfloat16().float(), D, bias, backend="reference")
    torch.testing.assert_close(out.float(), ref16, rtol=1e-2, atol=1e-2 * ref16.abs().max().item())


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_gradcheck_float64(backend):
    args = _inputs(batch=2, groups=2, per_group=2, length=5, d_state=3, dtype=torch.float64, grad=True)
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a, backend=backend), args)


def test_torch_gradients_match_reference():
    args = _inputs(length=49, grad=True)
    grads = {}
    for backend in ("reference", "torch"):
        for a in args:
            a.grad = None
        y = selective_scan(*args, backend=backend)
        (y * torch.linspace(-1, 1, y.shape[-1])).sum().backward()
        grads[backend] = [a.grad.clone() for a in args]
    for g_ref, g in zip(grads["reference"], grads["torch"]):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-4 * g_ref.abs().max().item())


@pytest.mark.parametrize("chunk", [0, 2, 3, 7, 10])
def test_linear_scan_chunks_and_gradcheck(chunk):
    g = torch.Generator().manual_seed(1)
    a = torch.rand(11, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(11, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    h, expected = linear_scan(a, b, chunk), []
    state = torch.zeros(3, 2, dtype=torch.float64)
    for t in range(11):
        state = a[t] * state + b[t]
        expected.append(state)
    torch.testing.assert_close(h, torch.stack(expected))
    assert torch.autograd.gradcheck(lambda a, b: linear_scan(a, b, chunk), (a, b))


def test_bad_arguments_raise():
    u, delta, A, B, C, D, bias = _inputs(groups=3, per_group=2, length=4)
    with pytest.raises(ValueError, match="unknown selective-scan backend"):
        selective_scan(u, delta, A, B, C, backend="triton")
    with pytest.raises(ValueError, match="B must be"):
        selective_scan(u, delta, A, B[..., :3], C, backend="torch")
    with pytest.raises(ValueError, match="A must be"):
        selective_scan(u, delta, A[:-1], B, C, backend="torch")
    if not cuda_backend_available(u):
        with pytest.raises(RuntimeError, match="backend='cuda'"):
            selective_scan(u, delta, A, B, C, backend="cuda")


def test_auto_picks_torch_on_cpu():
    u, delta, A, B, C, D, bias = _inputs(length=9)
    torch.testing.assert_close(
        selective_scan(u, delta, A, B, C, D, bias, backend="auto"),
        selective_scan(u, delta, A, B, C, D, bias, backend="torch"),
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the mamba_ssm kernel test needs one")
def test_cuda_kernel_matches_torch():
    if not cuda_backend_available():
        pytest.skip("mamba_ssm (selective_scan_cuda) does not import: pip install mamba-ssm to test the CUDA backend")
    args = [a.cuda() for a in _inputs(batch=4, groups=4, per_group=512, length=49)]
    out = selective_scan(*args, backend="cuda")
    ref = selective_scan(*args, backend="torch")
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
