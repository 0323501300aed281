"""GAN losses against hand-computed values, the gradient penalty, and the LR schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ppl_gen.core.errors import PplGenError
from ppl_gen.gan.losses import GANLoss, gradient_penalty
from ppl_gen.gan.schedules import LinearDecay, constant_then_linear_decay


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_vanilla_is_bce_on_logits():
    pred = torch.tensor([0.0, 2.0])
    loss = GANLoss("vanilla")
    # -log sigmoid(p) = softplus(-p); -log(1 - sigmoid(p)) = softplus(p)
    assert loss(pred, True).item() == pytest.approx((softplus(0) + softplus(-2)) / 2, rel=1e-6)
    assert loss(pred, False).item() == pytest.approx((softplus(0) + softplus(2)) / 2, rel=1e-6)


def test_vanilla_generator_loss_is_non_saturating():
    # G minimises -log D(G(z)): for a confident D (logit -10 on fakes) the gradient stays
    # large, unlike log(1 - D(G(z))) whose gradient vanishes there.
    logit = torch.tensor([-10.0], requires_grad=True)
    GANLoss("vanilla")(logit, True).backward()
    assert logit.grad.item() == pytest.approx(-torch.sigmoid(torch.tensor(10.0)).item(), rel=1e-5)
    assert abs(logit.grad.item()) > 0.99


def test_lsgan_is_mean_squared_error():
    pred = torch.tensor([0.5, 2.0])
    loss = GANLoss("lsgan")
    assert loss(pred, True).item() == pytest.approx((0.25 + 1.0) / 2)
    assert loss(pred, False).item() == pytest.approx((0.25 + 4.0) / 2)


def test_wgan_is_signed_mean():
    pred = torch.tensor([[0.5], [2.0]])
    loss = GANLoss("wgan-gp")
    assert loss(pred, True).item() == pytest.approx(-1.25)
    assert loss(pred, False).item() == pytest.approx(1.25)


@pytest.mark.parametrize("mode", ["vanilla", "lsgan", "wgan-gp"])
def test_targets_follow_dtype_and_patch_maps(mode):
    pred = torch.zeros(2, 1, 5, 5, dtype=torch.float64)
    assert GANLoss(mode)(pred, True).dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["vanilla", "lsgan", "wgan-gp"])
def test_targets_follow_the_device(mode):
    pred = torch.zeros(4, device="cuda")
    assert GANLoss(mode)(pred, False).device.type == "cuda"


def test_unknown_mode_names_the_parameter():
    with pytest.raises(PplGenError, match="^loss must be one of vanilla, lsgan, wgan-gp"):
        GANLoss("softplus")


def test_gradient_penalty_of_a_linear_critic():
    # D(x) = <w, x> has gradient w everywhere: penalty = (||w|| - 1)^2 = (4 - 1)^2.
    w = torch.full((4,), 2.0)

    def critic(x):
        return x @ w

    real, fake = torch.randn(3, 4), torch.randn(3, 4)
    assert gradient_penalty(critic, real, fake).item() == pytest.approx(9.0)


def test_gradient_penalty_reaches_the_critic_parameters():
    critic = nn.Linear(4, 1)
    gp = gradient_penalty(critic, torch.randn(5, 4), torch.randn(5, 4))
    gp.backward()
    assert critic.weight.grad is not None and critic.weight.grad.abs().sum() > 0


def test_gradient_penalty_rejects_mismatched_batches():
    with pytest.raises(PplGenError):
        gradient_penalty(nn.Linear(4, 1), torch.randn(2, 4), torch.randn(3, 4))


def test_linear_decay_multipliers():
    f = LinearDecay(3, 2)
    assert [f(e) for e in range(5)] == pytest.approx([1, 1, 1, 2 / 3, 1 / 3])
    assert LinearDecay(4, 0)(10) == 1.0


def test_scheduler_state_round_trip():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=0.1)
    sched = constant_then_linear_decay(opt, 1, 3)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.1, 0.075, 0.05, 0.025])
    opt2 = torch.optim.Adam([p], lr=0.1)
    sched2 = constant_then_linear_decay(opt2, 1, 3)
    sched2.load_state_dict(sched.state_dict())
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_linear_decay_never_goes_below_zero():
    f = LinearDecay(0, 2)
    assert [f(e) for e in range(5)] == pytest.approx([2 / 3, 1 / 3, 0, 0, 0])


def test_reschedule_follows_the_new_totals():
    """A schedule restored with the old totals (2 epochs, all decaying) and rescheduled for
    4 epochs (2 decaying) gives the rates of a fresh 4-epoch schedule from epoch 2 on."""
    from ppl_gen.gan.schedules import reschedule

    p = nn.Parameter(torch.zeros(1))
    old_opt = torch.optim.Adam([p], lr=0.1)
    old = constant_then_linear_decay(old_opt, 0, 2)
    for _ in range(2):
        old_opt.step()
        old.step()
    opt = torch.optim.Adam([p], lr=0.1)
    sched = constant_then_linear_decay(opt, 0, 2)
    opt.load_state_dict(old_opt.state_dict())
    sched.load_state_dict(old.state_dict())  # restores LinearDecay(0, 2)
    reschedule(sched, 2, 2)
    fresh_opt = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=0.1)
    fresh = constant_then_linear_decay(fresh_opt, 2, 2)
    for _ in range(2):
        fresh_opt.step()
        fresh.step()
    rates, expected = [], []
    for _ in range(3):
        rates.append(opt.param_groups[0]["lr"])
        expected.append(fresh_opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        fresh_opt.step()
        fresh.step()
    assert rates == pytest.approx(expected) and rates == pytest.approx([0.1 * 2 / 3, 0.1 / 3, 0])
    assert sched.get_last_lr() == fresh.get_last_lr()
    assert all(r >= 0 for r in rates)
