"""Diagnostics that say when an importance-weighted bound cannot be trusted.

Pareto-smoothed importance sampling (Vehtari et al. 2024, "Pareto smoothed importance
sampling", JMLR) fits a generalised Pareto distribution to the largest importance weights
of each datapoint; its shape ``k-hat`` estimates how heavy the weights' tail is.  For
``k-hat > 0.7`` the importance-sampling estimate -- here IWAE-K as an estimate of
``log p(x)`` -- is unreliable: its error can stay large for any practical K.  We use ArviZ's
``psislw`` for the fit.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

KHAT_THRESHOLD = 0.7
CONSTANT_SPREAD = 1e-3  # nats


def psis_khat(log_weights: torch.Tensor) -> torch.Tensor:
    """Pareto k-hat of each datapoint's importance weights.

    Args:
        log_weights: ``(N, K)`` log importance weights (nats), K samples per datapoint.

    Returns:
        ``(N,)`` k-hat values (float64).  Datapoints whose log-weights spread by less than
        ``CONSTANT_SPREAD`` nats (an exact posterior as proposal, up to float error) have no
        tail to fit and get ``-inf``: such a spread cannot move IWAE-K by more than that.
    """
    import arviz as az

    lw = log_weights.detach().double().cpu().numpy()
    flat = np.ptp(lw, axis=1) < CONSTANT_SPREAD
    khat = np.full(lw.shape[0], -np.inf)
    if (~flat).any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, k = az.psislw(lw[~flat], reff=1.0)
        khat[~flat] = np.asarray(k, dtype=float)
    return torch.from_numpy(khat)


def khat_summary(khat: torch.Tensor) -> dict[str, float | None]:
    """``{"psis_khat_mean", "psis_khat_frac_above_0_7"}``; the mean is over datapoints with a
    finite k-hat (``None`` when there are none)."""
    finite = khat[torch.isfinite(khat)]
    return {
        "psis_khat_mean": float(finite.mean()) if finite.numel() else None,
        "psis_khat_frac_above_0_7": float((khat > KHAT_THRESHOLD).double().mean()),
    }
