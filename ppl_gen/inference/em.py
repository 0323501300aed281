"""The ``em`` scheme: expectation-maximisation with the exact posterior.

Models with closed-form updates (GMM, PPCA, FA: ``model.em``) run classical EM (Dempster,
Laird & Rubin 1977; Bishop PRML 9.3-9.4), whose log-likelihood never decreases.  Any other
model that offers ``exact_posterior`` and ``log_marginal`` gets Monte Carlo EM: SVI with the
exact posterior at the current parameters as a fixed, detached guide, so each gradient step
ascends ``Q(theta, theta_old)`` (Neal & Hinton 1998).  Models without an exact posterior
are refused: their posterior is intractable.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ppl_gen.data import DataSplits
from ppl_gen.errors import PplGenError
from ppl_gen.guides.exact import ExactPosteriorGuide
from ppl_gen.inference.base import (
    SchemeResult,
    SchemeSettings,
    bounds_with_weights,
    exact_log_likelihood,
    history_from_training,
)
from ppl_gen.tractable import has_exact_posterior
from ppl_gen.training import train


def check_em(model: Callable, model_name: str = "model") -> None:
    """Raise :class:`PplGenError` unless EM applies to ``model``."""
    if not (callable(getattr(model, "em", None)) or has_exact_posterior(model)):
        raise PplGenError(
            f"--schemes em: {model_name} has no exact posterior p(z|x) (it is intractable), "
            "so EM does not apply; use svi-local, amortised or semi-amortised"
        )


def fit_em(model: Callable, data: DataSplits, settings: SchemeSettings) -> SchemeResult:
    """Fit ``model`` by EM on ``data.train`` and score ``data.test`` (see module docs).

    Raises:
        PplGenError: if the model has no exact posterior.
    """
    check_em(model)
    t0 = time.perf_counter()
    if callable(getattr(model, "em", None)):
        kwargs = {"max_iter": settings.em_max_iter, "tol": settings.em_tol, "seed": settings.seed}
        if getattr(model, "discrete", False):
            kwargs["n_init"] = settings.n_init
        history = model.em(data.train, **kwargs)
        notes = ["em: closed-form E-step and M-step; the log-likelihood never decreases."]
    else:
        result = train(model, ExactPosteriorGuide(model), data, settings.train_config(val_every=0))
        history = history_from_training(result)
        notes = ["em: Monte Carlo EM (exact posterior as fixed guide, Adam M-step)."]
    train_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    guide = ExactPosteriorGuide(model)
    bounds = bounds_with_weights(model, guide, data.test, settings.iwae_k)
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
