"""SAM: the ascent step has norm rho, the update is the base step at the perturbed gradient."""
import copy

import pytest
import torch
from torch import nn

from ferlib.optim import SAM


def _setup(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    return model, x, y


def _loss(model, x, y):
    return nn.functional.cross_entropy(model(x), y)


def _flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("rho", [0.05, 0.5])
def test_first_step_moves_by_rho_along_the_gradient(rho):
    model, x, y = _setup()
    opt = SAM(model.parameters(), torch.optim.Adam, rho=rho, lr=1e-3)
    w0 = _flat(model)
    _loss(model, x, y).backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters()])
    opt.first_step(zero_grad=True)
    e = _flat(model) - w0
    torch.testing.assert_close(e.norm(), torch.tensor(rho), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(e, rho * grad / grad.norm(), rtol=1e-4, atol=1e-7)
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_adaptive_perturbation():
    model, x, y = _setup()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, adaptive=True, lr=0.1)
    w0 = _flat(model)
    _loss(model, x, y).backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters()])
    opt.first_step()
    expected = 0.1 * w0.pow(2) * grad / (w0.abs() * grad).norm()
    torch.testing.assert_close(_flat(model) - w0, expected, rtol=1e-4, atol=1e-7)


def test_second_step_is_the_base_step_at_the_perturbed_gradient():
    model, x, y = _setup()
    twin = copy.deepcopy(model)
    opt = SAM(model.parameters(), torch.optim.Adam, rho=0.05, lr=1e-2)
    base = torch.optim.Adam(twin.parameters(), lr=1e-2)
    for _ in range(3):
        _loss(model, x, y).backward()
        opt.first_step(zero_grad=True)
        perturbed = copy.deepcopy(model)  # the point w + e
        _loss(model, x, y).backward()
        opt.second_step(zero_grad=True)
        # Twin: gradient evaluated at w + e, applied by plain Adam from w.
        _loss(perturbed, x, y).backward()
        for p, q in zip(twin.parameters(), perturbed.parameters()):
            p.grad = q.grad.clone()
        base.step()
        base.zero_grad()
        torch.testing.assert_close(_flat(model), _flat(twin), rtol=1e-6, atol=1e-7)
    # ... and it differs from plain Adam on the unperturbed gradient.
    plain_model, _, _ = _setup()
    plain = torch.optim.Adam(plain_model.parameters(), lr=1e-2)
    for _ in range(3):
        _loss(plain_model, x, y).backward()
        plain.step()
        plain.zero_grad()
    assert (_flat(plain_model) - _flat(model)).abs().max() > 1e-6


def test_step_with_closure_equals_the_two_calls():
    model, x, y = _setup()
    twin = copy.deepcopy(model)
    opt = SAM(model.parameters(), torch.optim.Adam, lr=1e-2)
    opt2 = SAM(twin.parameters(), torch.optim.Adam, lr=1e-2)
    _loss(model, x, y).backward()
    opt.first_step(zero_grad=True)
    _loss(model, x, y).backward()
    opt.second_step(zero_grad=True)

    def closure():
        loss = _loss(twin, x, y)
        loss.backward()
        return loss

    _loss(twin, x, y).backward()
    opt2.step(closure)
    torch.testing.assert_close(_flat(model), _flat(twin))
    with pytest.raises(ValueError, match="closure"):
        opt2.step()


def test_param_groups_shared_so_schedulers_work():
    model, _, _ = _setup()
    opt = SAM(model.parameters(), torch.optim.Adam, rho=0.05, lr=4e-5)
    assert opt.param_groups is opt.base_optimizer.param_groups
    assert opt.param_groups[0]["rho"] == 0.05 and opt.param_groups[0]["betas"] == (0.9, 0.999)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.98)
    for _ in range(2):
        opt.base_optimizer.step()
        sched.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(4e-5 * 0.98**2)


def test_frozen_parameters_are_skipped():
    model, x, y = _setup()
    model[0].weight.requires_grad_(False)
    opt = SAM(model.parameters(), torch.optim.Adam, lr=1e-2)
    w = model[0].weight.detach().clone()
    _loss(model, x, y).backward()
    opt.first_step(zero_grad=True)
    _loss(model, x, y).backward()
    opt.second_step(zero_grad=True)
    torch.testing.assert_close(model[0].weight, w)


def test_state_dict_round_trip_keeps_adam_moments():
    model, x, y = _setup()
    opt = SAM(model.parameters(), torch.optim.Adam, lr=1e-2)

    def sam_step(m, o):
        _loss(m, x, y).backward()
        o.first_step(zero_grad=True)
        _loss(m, x, y).backward()
        o.second_step(zero_grad=True)

    sam_step(model, opt)
    state = copy.deepcopy(opt.state_dict())
    assert state["state"] and "exp_avg" in next(iter(state["state"].values()))
    twin = copy.deepcopy(model)
    opt2 = SAM(twin.parameters(), torch.optim.Adam, lr=0.5)
    opt2.load_state_dict(state)
    assert opt2.param_groups is opt2.base_optimizer.param_groups and opt2.param_groups[0]["lr"] == 1e-2
    sam_step(model, opt)
    sam_step(twin, opt2)
    torch.testing.assert_close(_flat(model), _flat(twin))


def test_negative_rho_raises():
    model, _, _ = _setup()
    with pytest.raises(ValueError, match="rho"):
        SAM(model.parameters(), torch.optim.SGD, rho=-0.1, lr=0.1)
