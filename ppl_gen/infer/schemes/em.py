"""The ``em`` scheme: expectation-maximisation with the exact posterior.

Models with closed-form updates (GMM, PPCA, FA: ``model.em``) run classical EM (Dempster,
Laird & Rubin 1977; Bishop PRML 9.3-9.4), whose log-likelihood never decreases.  Any other
model that offers ``exact_posterior`` and ``log_marginal`` gets Monte Carlo EM: SVI with the
exact posterior at the current parameters as a fixed, detached guide, so each gradient step
ascends ``Q(theta, theta_old)`` (Neal & Hinton 1998).  Models without an exact posterior
are refused: their posterior is intractable.

Data-parallel (``dist`` of :mod:`ppl_gen.core.distributed`, under torchrun): each rank holds
every ``W``-th training row; closed-form EM all-reduces its sufficient statistics (the GMM's
``R^T Z`` and log-likelihood, PPCA/FA's mean and covariance), Monte Carlo EM averages
gradients like any SVI run, and the test bounds are split over the ranks and gathered.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable

from ppl_gen.core.distributed import DistributedContext
from ppl_gen.core.errors import PplGenError
from ppl_gen.data.datasets import DataSplits
from ppl_gen.guides.exact import ExactPosteriorGuide
from ppl_gen.infer.schemes.base import (
    SchemeResult,
    SchemeSettings,
    bounds_with_weights,
    exact_log_likelihood,
    history_from_training,
)
from ppl_gen.infer.training import train
from ppl_gen.lvm.tractable import has_exact_posterior


def check_em(model: Callable, model_name: str = "model") -> None:
    """Raise :class:`PplGenError` unless EM applies to ``model``."""
    if not (callable(getattr(model, "em", None)) or has_exact_posterior(model)):
        raise PplGenError(
            f"schemes em: {model_name} has no exact posterior p(z|x) (it is intractable), "
            "so EM does not apply; use svi-local, amortised or semi-amortised"
        )


def fit_em(
    model: Callable,
    data: DataSplits,
    settings: SchemeSettings,
    dist: DistributedContext | None = None,
) -> SchemeResult:
    """Fit ``model`` by EM on ``data.train`` and score ``data.test`` (see module docs).

    Args:
        model: a model with ``em`` or with ``exact_posterior`` and ``log_marginal``.
        data: every rank passes the whole dataset.
        settings: iterations, tolerance, restarts, K of the test IWAE-K.
        dist: the data-parallel context (default: one process).

    Raises:
        PplGenError: if the model has no exact posterior, or its ``em`` cannot take shards.
    """
    check_em(model)
    parallel = dist is not None and dist.distributed
    t0 = time.perf_counter()
    if callable(getattr(model, "em", None)):
        kwargs = {"max_iter": settings.em_max_iter, "tol": settings.em_tol, "seed": settings.seed}
        if getattr(model, "discrete", False):
            kwargs["n_init"] = settings.n_init
        x = data.train
        if parallel:
            if "dist" not in inspect.signature(model.em).parameters:
                raise PplGenError(
                    f"schemes em: {type(model).__name__}.em has no dist argument, so it "
                    "cannot run data-parallel; launch it as one process"
                )
            x, kwargs["dist"] = dist.shard(data.train), dist
        history = model.em(x, **kwargs)
        notes = ["em: closed-form E-step and M-step; the log-likelihood never decreases."]
    else:
        result = train(
            model,
            ExactPosteriorGuide(model),
            data,
            settings.train_config(val_every=0),
            dist=dist,
        )
        history = history_from_training(result)
        notes = ["em: Monte Carlo EM (exact posterior as fixed guide, Adam M-step)."]
    train_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    guide = ExactPosteriorGuide(model)
    bounds = bounds_with_weights(model, guide, data.test, settings.iwae_k, dist=dist)
    return SchemeResult(
        name="em",
        model=model,
        guide=guide,
        history=history,
        objective_name="log-likelihood",
        bounds=bounds,
        test_log_likelihood=exact_log_likelihood(model, data.test),
        train_seconds=train_seconds,
        test_seconds=time.perf_counter() - t1,
        notes=notes,
    )
