"""Diagnostics that say when an importance-weighted bound cannot be trusted.

Pareto-smoothed importance sampling (Vehtari et al. 2024, "Pareto smoothed importance
sampling", JMLR) fits a generalised Pareto distribution to the largest importance weights
of each datapoint; its shape ``k-hat`` estimates how heavy the weights' tail is.  For
``k-hat > 0.7`` the importance-sampling estimate -- here IWAE-K as an estimate of
``log p(x)`` -- is unreliable: its error can stay large for any practical K.  We use ArviZ's
``psislw`` for the fit.

**The scheme-level flag.**  k-hat is itself an estimate from the M largest of K weights,
so a sound proposal still gives some points above 0.7 by chance: with K = 1000 log-normal
or generalised-Pareto weights whose true shape is 0.5 (finite variance, PSIS's "good"
range), 7.5% of 400 simulated points get ``k-hat > 0.7`` (see the outputs notes for the
command).  A scheme is therefore flagged "bound unreliable" only when more than
``UNRELIABLE_FRACTION`` (10%) of its scored points exceed 0.7 -- above that noise floor --
and the count is always reported ("3 of 359"), never a rounded "0%".

**Few distinct weights.**  A discrete proposal (a categorical or enumerated guide over C
mixture components) draws at most C distinct latents, so its K log-weights take at most C
values: the weights are bounded, the estimate has finite variance, and a Pareto fit to a
tail of tied values is meaningless (it reported 39-56% "unreliable" points on GMMs where
IWAE was within 1e-4 nats of exact).  Points whose K log-weights take at most
``K * DISTINCT_FRACTION`` distinct values get k-hat ``NaN`` ("not applicable").
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

KHAT_THRESHOLD = 0.7
CONSTANT_SPREAD = 1e-3  # nats
#: A scheme is flagged "bound unreliable" when more than this fraction of its scored test
#: points have k-hat > 0.7 (module docs: just above the estimation-noise floor).
UNRELIABLE_FRACTION = 0.10
#: A point whose K log-weights take at most ``K * DISTINCT_FRACTION`` distinct values (to
#: ``DISTINCT_DECIMALS`` decimals, nats) has a discrete proposal: k-hat not applicable.
DISTINCT_FRACTION = 0.5
DISTINCT_DECIMALS = 9


def distinct_log_weights(log_weights: torch.Tensor) -> torch.Tensor:
    """Number of distinct log-weights per datapoint.

    Args:
        log_weights: ``(N, K)`` log importance weights (nats).

    Returns:
        ``(N,)`` int64 counts of distinct values, rounded to ``DISTINCT_DECIMALS`` decimals.
    """
    lw = np.round(log_weights.detach().double().cpu().numpy(), DISTINCT_DECIMALS)
    lw = np.sort(lw, axis=1)
    distinct = 1 + (np.diff(lw, axis=1) != 0).sum(axis=1)
    return torch.from_numpy(distinct.astype(np.int64))


def psis_khat(log_weights: torch.Tensor) -> torch.Tensor:
    """Pareto k-hat of each datapoint's importance weights.

    Args:
        log_weights: ``(N, K)`` log importance weights (nats), K samples per datapoint.

    Returns:
        ``(N,)`` k-hat values (float64).  Datapoints whose log-weights spread by less than
        ``CONSTANT_SPREAD`` nats (an exact posterior as proposal, up to float error) have no
        tail to fit and get ``-inf``: such a spread cannot move IWAE-K by more than that.
        Datapoints with few distinct log-weights (a discrete proposal, module docs) get
        ``NaN``: k-hat is not applicable to bounded weights.
    """
    import arviz as az

    lw = log_weights.detach().double().cpu().numpy()
    k_samples = lw.shape[1]
    flat = np.ptp(lw, axis=1) < CONSTANT_SPREAD
    few = (distinct_log_weights(log_weights).numpy() <= k_samples * DISTINCT_FRACTION) & ~flat
    khat = np.full(lw.shape[0], -np.inf)
    khat[few] = np.nan
    fit = ~flat & ~few
    if fit.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, k = az.psislw(lw[fit], reff=1.0)
        khat[fit] = np.asarray(k, dtype=float)
    return torch.from_numpy(khat)


def khat_summary(khat: torch.Tensor) -> dict[str, float | int | bool | None]:
    """The k-hat entries of a ``metrics.json`` scheme row.

    Args:
        khat: ``(N,)`` from :func:`psis_khat` (``NaN``: not applicable; ``-inf``: constant).

    Returns:
        ``psis_khat_mean`` (mean over finite k-hat, ``None`` when there are none),
        ``psis_khat_n_scored`` (points k-hat applies to: ``N`` minus the ``NaN`` ones),
        ``psis_khat_n_above_0_7`` (their count with k-hat > 0.7),
        ``psis_khat_frac_above_0_7`` (that count / ``n_scored``; ``None`` when no point is
        scored), ``psis_khat_applicable`` (``False`` when most points have few distinct
        weights: a discrete proposal) and ``bound_unreliable`` (applicable and the
        fraction above ``UNRELIABLE_FRACTION``).
    """
    khat = khat.double()
    applies = ~torch.isnan(khat)
    n = int(khat.numel())
    n_scored = int(applies.sum())
    finite = khat[torch.isfinite(khat)]
    above = int((khat[applies] > KHAT_THRESHOLD).sum())
    applicable = n > 0 and n_scored * 2 >= n
    frac = above / n_scored if n_scored else None
    return {
        "psis_khat_mean": float(finite.mean()) if finite.numel() and applicable else None,
        "psis_khat_n_scored": n_scored,
        "psis_khat_n_above_0_7": above,
        "psis_khat_frac_above_0_7": frac,
        "psis_khat_applicable": bool(applicable),
        "bound_unreliable": bool(applicable and frac is not None and frac > UNRELIABLE_FRACTION),
    }


def khat_cell(row: dict) -> str:
    """The report's ``k̂ > 0.7`` cell of a scheme row (keys of :func:`khat_summary`).

    ``"not applicable (discrete proposal)"`` for few distinct weights; ``"3 of 359 (1%)"``
    with the count always shown (a percentage only when it rounds to at least 1%), and
    ``"(bound unreliable)"`` appended only above ``UNRELIABLE_FRACTION``; ``"n/a"`` when
    nothing was scored.  Rows written before the counts existed fall back to the fraction.
    """
    if row.get("psis_khat_applicable") is False:
        return "not applicable (discrete proposal)"
    above, n = row.get("psis_khat_n_above_0_7"), row.get("psis_khat_n_scored")
    frac = row.get("psis_khat_frac_above_0_7")
    if isinstance(frac, bool) or not isinstance(frac, int | float) or not math.isfinite(frac):
        return "n/a"
    pct = 100 * frac
    pct_text = f"{pct:.0f}%" if pct >= 0.5 or frac == 0 else "<1%"
    if isinstance(above, int) and isinstance(n, int) and n > 0:
        text = f"{above} of {n}" + (f" ({pct_text})" if above and pct >= 0.5 else "")
    else:
        text = pct_text
    unreliable = row.get("bound_unreliable")
    if unreliable is None:
        unreliable = frac > UNRELIABLE_FRACTION
    return text + (" (bound unreliable)" if unreliable else "")
