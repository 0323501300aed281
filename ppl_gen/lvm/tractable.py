"""Latent-variable models whose marginal likelihood and posterior are exact.

The Gaussian mixture, probabilistic PCA and factor analysis in :mod:`ppl_gen.models` are
Pyro models (data plate convention of :mod:`ppl_gen.lvm.plates`) that *also* implement the
:class:`TractableModel` protocol, so that every inference scheme can be checked against the
truth.  The protocol is structural (:class:`typing.Protocol`, ``runtime_checkable``): a
model need not inherit from it, and ``isinstance(model, TractableModel)`` checks that the
methods exist (not their signatures).

A model offering only the two methods of :class:`ExactPosterior` (``exact_posterior`` and
``log_marginal``) still gets the ``em`` scheme: :func:`ppl_gen.infer.schemes.em.generic_em`
runs Monte Carlo EM (exact posterior as a fixed guide, gradient M-step); see
:func:`has_exact_posterior`.

Sources: Bishop, PRML (2006) 9.2-9.4 (EM), 10.1.1 (mean-field VI), 12.2 (probabilistic PCA
and factor analysis); Tipping & Bishop (1999), probabilistic PCA.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from ppl_gen.infer.bounds import BoundEstimate


@dataclass
class FitHistory:
    """Trace of an iterative fit.

    Attributes:
        objective: per iteration, the objective after the update, in nats per datapoint
            (average log-likelihood for EM, ELBO for mean-field / SVI).
        seconds: cumulative wall time (seconds) at each entry of ``objective``.
        converged: whether the stopping rule fired before ``max_iter``.
        extra: scheme-specific records (e.g. restarts, best restart index).
    """

    objective: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    converged: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def iterations(self) -> int:
        """Number of iterations run."""
        return len(self.objective)


@runtime_checkable
class ExactPosterior(Protocol):
    """A model with an exact marginal likelihood and posterior (enough for the ``em`` scheme).

    Shapes: ``x`` is ``(N, D)`` (or ``(N, *image_shape)``) rows; ``z_i`` is the latent of
    row ``i`` (the model's ``latent_site``).
    """

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x_i)`` per row, ``(N,)`` nats.

        Raises:
            PplGenError: if the rows of ``x`` do not have the model's width.
        """
        ...

    def exact_posterior(self, x: torch.Tensor) -> torch.distributions.Distribution:
        """``p(z_i | x_i)`` as a distribution with batch shape ``(N,)``: ``Categorical``
        over components for the mixture, ``MultivariateNormal`` (event ``(Q,)``) for the
        linear-Gaussian models."""
        ...


@runtime_checkable
class TractableModel(ExactPosterior, Protocol):
    """The closed-form interface of :mod:`ppl_gen.models`' tractable models.

    Besides :class:`ExactPosterior`'s ``log_marginal`` and ``exact_posterior``: a
    data-dependent initialisation, EM with the exact E-step and closed-form M-step, and
    coordinate-ascent mean-field VI with its test bounds.  Every fit updates the model's
    parameters in place and returns a :class:`FitHistory` whose objective is in nats per
    datapoint.  Implementations take further keyword arguments (``n_init`` and ``dist``
    for the mixture's ``em``, ``priors`` for its ``mean_field``, ...).
    """

    def init_from_data(self, x: torch.Tensor, seed: int = 0) -> None:
        """Data-dependent initialisation of the parameters from training rows ``x``
        (k-means++ for the mixture; data mean and variances for PPCA / FA), seeded."""
        ...

    def em(self, x: torch.Tensor, **kwargs: Any) -> FitHistory:
        """Expectation-maximisation (PRML 9.2-9.4; Tipping & Bishop 1999) on ``x``: exact
        E-step, closed-form M-step; ``objective`` = average log-likelihood, which never
        decreases.  Common keywords: ``max_iter``, ``tol`` (relative), ``seed``, ``init``.
        """
        ...

    def mean_field(self, x: torch.Tensor, **kwargs: Any) -> FitHistory:
        """Coordinate-ascent mean-field VI (PRML 10.1.1) on ``x``; ``objective`` = ELBO,
        which never decreases.  Common keywords: ``max_iter``, ``tol``, ``seed``, ``init``.
        """
        ...

    def mean_field_bounds(self, x_test: torch.Tensor, k: int = 1000) -> BoundEstimate:
        """ELBO and IWAE-``k`` of test rows (``(N,)`` nats each) under the fitted
        mean-field ``q``, with the ``(N, k)`` log-weights."""
        ...


def has_exact_posterior(model: object) -> bool:
    """Whether ``model`` offers ``exact_posterior`` and ``log_marginal`` (EM applies).

    The :class:`ExactPosterior` test, done with ``getattr`` (so attributes served by a
    ``__getattr__``, as on :class:`torch.nn.Module`, count too) and requiring both to be
    callable.
    """
    return callable(getattr(model, "exact_posterior", None)) and callable(
        getattr(model, "log_marginal", None)
    )


__all__ = [
    "BoundEstimate",
    "ExactPosterior",
    "FitHistory",
    "TractableModel",
    "has_exact_posterior",
]
