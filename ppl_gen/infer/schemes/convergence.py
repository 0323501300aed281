"""Whether each scheme's fit converged, by a documented criterion per kind of fit.

* **Closed-form iterations** (EM, CAVI): the stopping rule of
  :func:`ppl_gen.models.stopping.converged` fired before ``em_max_iter`` (last change below
  ``em_tol`` nats/point and Aitken's remaining gain below ``em_tol^2``); Monte Carlo EM is an
  SVI fit and is judged as one.
* **SVI fits** (mean-field / svi-local SVI, amortised, semi-amortised's encoder): the mean
  training objective of the last ``m = max(5, epochs // 10)`` epochs improved on the
  ``m`` epochs before by no more than ``max(SVI_REL_TOL |objective|, 2 standard errors)``
  (the standard error of the difference of the two window means, from the epoch-to-epoch
  spread, so Monte Carlo noise alone does not count as progress).  Fewer than ``2 m``
  epochs: not converged.
* **NUTS**: every latent's split R-hat below ``RHAT_MAX = 1.01`` and bulk ESS at least
  ``ESS_PER_CHAIN = 100`` per chain (Vehtari et al. 2021, "Rank-normalization, folding,
  and localization: an improved R-hat", Bayesian Analysis 16, sec. 4).

A row that did not converge is reported, but flagged and not ranked (:mod:`ppl_gen.viz.report`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ppl_gen.core.errors import PplGenError
from ppl_gen.infer.schemes.base import SchemeResult, SchemeSettings
from ppl_gen.models.stopping import STOPPING_RULE

SVI_REL_TOL = 1e-3
"""Relative tolerance on the improvement of the windowed mean SVI objective."""

RHAT_MAX = 1.01
ESS_PER_CHAIN = 100

_SVI_SCHEMES = ("svi-local", "amortised", "semi-amortised")


def svi_window(epochs: int) -> int:
    """Window ``m = max(5, epochs // 10)`` of the SVI criterion (epochs)."""
    return max(5, epochs // 10)


def svi_converged(objective: Sequence[float]) -> tuple[bool, str]:
    """The SVI criterion (module docs) on a per-epoch objective (nats per datapoint).

    Returns:
        ``(converged, description)``; the description gives the window, the improvement
        and the threshold in nats/point.
    """
    values = [float(v) for v in objective if v is not None and math.isfinite(v)]
    m = svi_window(len(values))
    if len(values) < 2 * m:
        return False, f"SVI: {len(values)} finite epochs, fewer than 2 windows of {m}"
    last, before = values[-m:], values[-2 * m : -m]
    mean_last, mean_before = sum(last) / m, sum(before) / m

    def var(v: list[float], mean: float) -> float:
        return sum((a - mean) ** 2 for a in v) / (m - 1)

    se = math.sqrt((var(last, mean_last) + var(before, mean_before)) / m)
    gain = mean_last - mean_before
    threshold = max(SVI_REL_TOL * abs(mean_before), 2.0 * se)
    ok = gain <= threshold
    return ok, (
        f"SVI: mean objective of the last {m} epochs {'+' if gain >= 0 else '-'}"
        f"{abs(gain):.3g} nats/point on the {m} before (threshold {threshold:.3g})"
    )


def nuts_converged(extra: dict, chains: int) -> tuple[bool, str]:
    """The NUTS criterion (module docs) from ``extra["rhat_max"]`` and ``extra["ess_bulk_min"]``."""
    rhat, ess = extra.get("rhat_max"), extra.get("ess_bulk_min")
    if rhat is None or ess is None or not (math.isfinite(rhat) and math.isfinite(ess)):
        return False, "NUTS: no R-hat / ESS"
    need = ESS_PER_CHAIN * chains
    ok = rhat < RHAT_MAX and ess >= need
    return ok, f"NUTS: R-hat max {rhat:.3f} (< {RHAT_MAX}), bulk ESS min {ess:.0f} (>= {need})"


def assess(result: SchemeResult, settings: SchemeSettings) -> SchemeResult:
    """Set ``result.converged`` and ``result.convergence`` by the module's criteria."""
    history = result.history
    if result.name == "nuts":
        ok, text = nuts_converged(result.extra, settings.nuts_chains)
    elif result.epochs is not None or result.name in _SVI_SCHEMES:
        ok, text = svi_converged(history.objective)
    else:
        ok = bool(history.converged)
        text = (
            f"{result.name}: {history.iterations} iterations; "
            + ("stopping rule met" if ok else "stopping rule not met by em_max_iter")
            + f" ({STOPPING_RULE}, tol {settings.em_tol:g})"
        )
    result.converged, result.convergence = ok, text
    return result


ABSURD_BELOW_EM = 20.0
"""Nats per test datapoint: a scheme whose test log-likelihood (exact where the model has
one, else its IWAE-K bound) is further than this below EM's on the same model is failed."""


def check_against_em(result: SchemeResult, em: SchemeResult | None) -> None:
    """Raise :class:`PplGenError` when ``result`` scores absurdly below EM's fit.

    EM reaches a (local) maximum of the exact likelihood; a gradient fit of the same model
    more than :data:`ABSURD_BELOW_EM` nats per test point below it has not fitted the model
    (a collapsed or exploded component), so its row is reported as failed with the figures.
    """
    if em is None or result is em or em.test_log_likelihood is None:
        return
    reference = float(em.test_log_likelihood.double().mean())
    ll = result.test_log_likelihood
    value = float(ll.double().mean()) if ll is not None else result.bounds.iwae_mean
    if not math.isfinite(value) or value < reference - ABSURD_BELOW_EM:
        raise PplGenError(
            f"{result.name}: test log-likelihood {value:.4g} nats/point is more than "
            f"{ABSURD_BELOW_EM:g} below EM's {reference:.4g} (the fit did not converge to a "
            "sane optimum; lower the learning rate or raise --epochs)"
        )


__all__ = [
    "ABSURD_BELOW_EM",
    "ESS_PER_CHAIN",
    "RHAT_MAX",
    "SVI_REL_TOL",
    "assess",
    "check_against_em",
    "nuts_converged",
    "svi_converged",
    "svi_window",
]
