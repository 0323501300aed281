"""Test-time inference for per-datapoint guides: fresh local posteriors fitted with the model
frozen (:func:`fit_local_guide`), and the validation ELBO that uses them."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import pyro
import torch
from torch import nn

from ppl_gen.core.distributed import DistributedContext
from ppl_gen.data.datasets import iterate_minibatches
from ppl_gen.guides import LocalFullRankGuide, MeanFieldGuide
from ppl_gen.infer.bounds import evaluate_bounds
from ppl_gen.infer.elbos import training_elbo

__all__ = ["fit_local_guide", "fresh_local_guide", "frozen", "validation_elbo"]


@contextlib.contextmanager
def frozen(module: Callable) -> Iterator[None]:
    """Freeze an ``nn.Module``'s parameters (and put it in eval mode) inside the block."""
    if not isinstance(module, nn.Module):
        yield
        return
    flags = [(p, p.requires_grad) for p in module.parameters()]
    was_training = module.training
    for p, _ in flags:
        p.requires_grad_(False)
    module.eval()
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        module.train(was_training)


def fit_local_guide(
    model: Callable,
    x: torch.Tensor,
    *,
    steps: int = 500,
    lr: float = 1e-2,
    elbo: str = "analytic-kl",
    batch_size: int | None = None,
    guide: Callable | None = None,
) -> Callable:
    """Fit a fresh per-datapoint guide to ``x`` with the model frozen (test-time inference).

    A non-amortised guide has no parameters for unseen datapoints, so evaluating it on test
    data means running its inference there: new local parameters ``(m_i, s_i)`` for each row
    of ``x`` are fitted by SVI for ``steps`` passes over ``x`` while every model parameter
    stays fixed.  The bounds then measure the model with the best the mean-field family can
    do in that budget (Cremer et al. 2018's ``q*`` approximated by optimisation).

    Args:
        model: the trained Pyro model (its ``nn.Module`` parameters are frozen meanwhile).
        x: ``(N, D)`` datapoints on the model's device.
        steps: passes over ``x`` (Adam steps when ``batch_size`` is ``None``).
        lr: Adam learning rate of the local parameters.
        elbo: ELBO flavour (see :class:`TrainConfig`).
        batch_size: minibatch size (default: all of ``x`` at once).
        guide: a per-datapoint guide for the rows of ``x`` to start from (e.g. initialised
            at an encoder's output: semi-amortised inference); default a fresh
            :class:`~ppl_gen.guides.MeanFieldGuide`.

    Returns:
        The fitted guide (a :class:`~ppl_gen.guides.MeanFieldGuide` with ``num_data = N``
        unless ``guide`` was given).
    """
    n = x.shape[0]
    if guide is None:
        guide = MeanFieldGuide(model, n)
        guide.setup(x[:1], torch.zeros(1, dtype=torch.long, device=x.device), n)
    guide.to(x.device)
    if elbo != "enum":
        elbo = "analytic-kl" if elbo.endswith("analytic-kl") else "trace"
    first = torch.arange(min(n, batch_size or n), device=x.device)
    loss_fn, fit_model = training_elbo(model, guide, x[first], first, n, elbo)
    model_n = functools.partial(fit_model, size=n)
    guide_n = functools.partial(guide, size=n)
    optimizer = torch.optim.Adam(guide.parameters(), lr=lr)
    with frozen(model), pyro.validation_enabled(False):
        for _ in range(steps):
            for idx in iterate_minibatches(n, batch_size or n, shuffle=False, device=x.device):
                loss = loss_fn.differentiable_loss(model_n, guide_n, x[idx], idx)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return guide


def fresh_local_guide(like: Callable, model: Callable, x: torch.Tensor) -> Callable:
    """A new per-datapoint guide of ``like``'s family for the rows of ``x: (N, D)`` (a
    :class:`~ppl_gen.guides.LocalFullRankGuide` keeps its rank; anything else gets a
    :class:`~ppl_gen.guides.MeanFieldGuide`), built and on ``x``'s device."""
    n = x.shape[0]
    if isinstance(like, LocalFullRankGuide):
        guide = LocalFullRankGuide(
            model, n, rank=like.rank, init_scale=like.init_scale, min_scale=like.min_scale
        )
    else:
        guide = MeanFieldGuide(model, n)
    guide.setup(x[:1], torch.zeros(1, dtype=torch.long, device=x.device), n)
    return guide.to(x.device)


def validation_elbo(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    refit_steps: int = 100,
    dist: DistributedContext | None = None,
) -> float:
    """Mean ELBO of ``x`` (nats per datapoint), one sample per datapoint.

    Amortised guides are evaluated directly; per-datapoint guides first get fresh local
    parameters fitted to ``x`` (:func:`fit_local_guide`, ``refit_steps`` passes).  With a
    distributed ``dist`` each rank scores its shard of ``x`` and the sums are all-reduced
    (the same number on every rank).
    """
    ctx = dist or DistributedContext(device=x.device)
    part = ctx.shard(x)
    total = 0.0
    if part.shape[0]:
        if getattr(guide, "is_local", False):
            fresh = fresh_local_guide(guide, model, part)
            guide = fit_local_guide(model, part, steps=refit_steps, guide=fresh)
        total = float(evaluate_bounds(model, guide, part, k=1).elbo.double().sum())
    return ctx.all_reduce_float(total, "validation ELBO") / x.shape[0]
