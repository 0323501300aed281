"""Latent-variable models whose marginal likelihood and posterior are exact.

The Gaussian mixture, probabilistic PCA and factor analysis in :mod:`ppl_gen.models` are
Pyro models (data plate convention of :mod:`ppl_gen.lvm.plates`) that *also* implement this
interface, so that every inference scheme can be checked against the truth:

* ``log_marginal(x)`` -- exact ``log p(x_i)`` per datapoint, ``(N,)`` nats;
* ``exact_posterior(x)`` -- ``p(z_i | x_i)`` as a distribution with batch shape ``(N,)``
  (``Categorical`` over components for the mixture, ``MultivariateNormal`` otherwise);
* ``init_from_data(x, seed)`` -- data-dependent initialisation of the parameters;
* ``em(x, ...)`` -- expectation-maximisation with the exact E-step and closed-form M-step
  (Bishop PRML 9.2-9.4; Tipping & Bishop 1999), parameters updated in place;
* ``mean_field(x, ...)`` -- coordinate-ascent mean-field variational inference
  (PRML 10.1.1), and ``mean_field_bounds(x_test, k)`` -- its test bounds.

A model offering only ``exact_posterior`` and ``log_marginal`` still gets the ``em`` scheme:
:func:`ppl_gen.infer.schemes.em.generic_em` runs Monte Carlo EM (exact posterior as a fixed
guide, gradient M-step).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


def has_exact_posterior(model: object) -> bool:
    """Whether ``model`` offers ``exact_posterior`` and ``log_marginal`` (EM applies)."""
    return callable(getattr(model, "exact_posterior", None)) and callable(
        getattr(model, "log_marginal", None)
    )


__all__ = ["FitHistory", "BoundEstimate", "has_exact_posterior"]
