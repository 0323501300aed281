"""The gradient reversal layer and the λ schedule of DANN (Ganin et al. JMLR 2016)."""

import math

import pytest
import torch

from ppl_gen.adaptation.gradient_reversal import (
    GradientReversal,
    dann_lambda,
    grad_reverse,
)
from ppl_gen.core.errors import PplGenError


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0, 2.5])
def test_grl_gradient_is_minus_lambda_times_identity_gradient(lam):
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    weights = torch.randn(4, 3, 5, 5)
    (grad_identity,) = torch.autograd.grad((x * weights).sum(), x)
    y = grad_reverse(x, lam)
    assert torch.equal(y, x)  # identity forward
    (grad_reversed,) = torch.autograd.grad((y * weights).sum(), x)
    torch.testing.assert_close(grad_reversed, -lam * grad_identity)


def test_grl_full_jacobian_is_minus_lambda_identity():
    x = torch.randn(6, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: grad_reverse(v, 0.7), x)
    torch.testing.assert_close(jac, -0.7 * torch.eye(6, dtype=torch.float64))


def test_grl_inside_a_network_reverses_only_upstream_gradients():
    torch.manual_seed(0)
    f = torch.nn.Linear(3, 4)
    d = torch.nn.Linear(4, 1)
    x = torch.randn(8, 3)
    plain = d(f(x)).sum()
    plain.backward()
    gf, gd = f.weight.grad.clone(), d.weight.grad.clone()
    f.zero_grad()
    d.zero_grad()
    d(GradientReversal(0.5)(f(x))).sum().backward()
    torch.testing.assert_close(d.weight.grad, gd)  # the domain head descends as usual
    torch.testing.assert_close(f.weight.grad, -0.5 * gf)  # the features ascend


def test_lambda_schedule_values():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert dann_lambda(0.1) == pytest.approx(2 / (1 + math.exp(-1)) - 1)  # 0.4621
    assert dann_lambda(0.1) == pytest.approx(0.46211715726)
    assert dann_lambda(0.5) == pytest.approx(0.98661429815)
    values = [dann_lambda(p / 20) for p in range(21)]
    assert all(a < b for a, b in zip(values[:-1], values[1:], strict=True))  # increasing
    assert dann_lambda(0.2, gamma=5.0) == pytest.approx(dann_lambda(0.1, gamma=10.0))


def test_scheduled_module_follows_progress_and_fixed_one_does_not():
    scheduled = GradientReversal()
    assert scheduled.lambda_ == 0.0
    assert scheduled.set_progress(0.1) == pytest.approx(0.46211715726)
    fixed = GradientReversal(0.25)
    assert fixed.set_progress(0.9) == 0.25


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_progress_outside_unit_interval_is_refused(bad):
    with pytest.raises(PplGenError, match="progress"):
        dann_lambda(bad)


def test_negative_fixed_lambda_is_refused():
    with pytest.raises(PplGenError, match="^lambda"):
        GradientReversal(-1.0)
