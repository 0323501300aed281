"""The ``nuts`` scheme: Hamiltonian Monte Carlo as the gold-standard posterior reference.

Pyro's ``MCMC`` with the No-U-Turn sampler (Hoffman & Gelman 2014) draws from the posterior
``p(z_i | x_i)`` of the first few test points under a fitted model (its parameters frozen),
with several independent chains.  The draws become an ``arviz.InferenceData`` and are
reported with the rank-normalised split R-hat and bulk ESS (Vehtari et al. 2021).  A
full-covariance Gaussian fitted to each point's draws then serves as the proposal of the
ELBO / IWAE-K bounds, so the reference lands in the same table as the other schemes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, NUTS

from ppl_gen.core.errors import PplGenError
from ppl_gen.core.io import save_with, write_text
from ppl_gen.data.datasets import DataSplits
from ppl_gen.infer.schemes.base import (
    SchemeResult,
    SchemeSettings,
    bounds_with_weights,
    exact_log_likelihood,
)
from ppl_gen.infer.training import frozen
from ppl_gen.lvm.plates import data_plate
from ppl_gen.lvm.tractable import FitHistory


class EmpiricalGaussianGuide:
    """``q(z_i) = N(loc_i, Sigma_i)`` per datapoint, from posterior draws.

    Args:
        site: the latent site name.
        loc: ``(N, Q)`` means; scale_tril: ``(N, Q, Q)`` Cholesky factors.
    """

    def __init__(self, site: str, loc: torch.Tensor, scale_tril: torch.Tensor) -> None:
        self.site, self.loc, self.scale_tril = site, loc, scale_tril

    def __call__(self, x, indices=None, size=None):
        if indices is None:
            indices = torch.arange(x.shape[0], device=x.device)
        with data_plate(x, indices, size):
            d = dist.MultivariateNormal(self.loc[indices], scale_tril=self.scale_tril[indices])
            return pyro.sample(self.site, d)


def check_nuts(model: Callable, model_name: str = "model") -> None:
    """Raise :class:`PplGenError` unless the model has one continuous latent site."""
    if getattr(model, "discrete", False) or not hasattr(model, "latent_shapes"):
        raise PplGenError(
            f"schemes nuts: {model_name} has no continuous latent variables for NUTS "
            "(its latent is discrete; use em, whose posterior is exact)"
        )


def fit_nuts(
    model: Callable, data: DataSplits, settings: SchemeSettings, fitted_by: str
) -> SchemeResult:
    """NUTS on the first ``settings.nuts_subset`` test points of an already fitted model.

    Returns:
        :class:`~ppl_gen.infer.schemes.SchemeResult` whose bounds (nats per datapoint) cover the
        subset; ``extra`` holds ``rhat_max``, ``ess_bulk_min``, ``n_evaluated`` and the
        ``arviz.InferenceData`` (draws ``(chains, draws, n, Q)``).

    Raises:
        PplGenError: for a model without a continuous latent site.
    """
    import arviz as az

    check_nuts(model)
    (site, shape), *rest = model.latent_shapes.items()
    if rest:
        raise PplGenError("schemes nuts: models with several latent sites are not supported")
    x = data.test[: settings.nuts_subset]
    t0 = time.perf_counter()
    chains = []
    with frozen(model):
        for chain in range(settings.nuts_chains):
            pyro.set_rng_seed(settings.seed + chain)
            mcmc = MCMC(
                NUTS(model, max_plate_nesting=1, max_tree_depth=settings.nuts_max_tree_depth),
                num_samples=settings.nuts_samples,
                warmup_steps=settings.nuts_warmup,
                # Pyro's bars are tqdm bars on stderr: on a terminal only, never in logs.
                disable_progbar=not (settings.progress and sys.stderr.isatty()),
            )
            mcmc.run(x)
            chains.append(mcmc.get_samples()[site].detach())
    draws = torch.stack(chains)  # (chains, draws, n, Q)
    idata = az.from_dict(posterior={site: draws.cpu().numpy()})
    rhat = float(az.rhat(idata)[site].max())
    ess = float(az.ess(idata, method="bulk")[site].min())
    seconds = time.perf_counter() - t0
    flat = draws.reshape(-1, *draws.shape[2:])  # (S, n, Q)
    loc = flat.mean(0)
    centred = flat - loc
    cov = torch.einsum("sni,snj->nij", centred, centred) / (flat.shape[0] - 1)
    cov = cov + 1e-6 * torch.eye(cov.shape[-1], device=cov.device, dtype=cov.dtype)
    guide = EmpiricalGaussianGuide(site, loc, torch.linalg.cholesky(cov))
    t1 = time.perf_counter()
    bounds = bounds_with_weights(model, guide, x, settings.iwae_k)
    return SchemeResult(
        name="nuts",
        model=model,
        guide=guide,
        history=FitHistory(objective=[], seconds=[], converged=rhat < 1.01),
        objective_name="none",
        bounds=bounds,
        test_log_likelihood=exact_log_likelihood(model, x),
        train_seconds=seconds,
        test_seconds=time.perf_counter() - t1,
        extra={
            "rhat_max": rhat,
            "ess_bulk_min": ess,
            "n_evaluated": int(x.shape[0]),
            "inference_data": idata,
        },
        notes=[
            f"nuts: {settings.nuts_chains} chains x {settings.nuts_samples} draws "
            f"({settings.nuts_warmup} warm-up) on the first {x.shape[0]} test points, with the "
            f"parameters fitted by {fitted_by}; bounds use a Gaussian fitted to the draws. "
            f"Max R-hat {rhat:.3f}, min bulk ESS {ess:.0f}."
        ],
    )


def write_inference_data(idata, out: str | Path, stem: str = "nuts") -> dict[str, Path]:
    """Write the NUTS draws for ArviZ users: ``<stem>_posterior.nc`` and ``<stem>_summary.csv``.

    Args:
        idata: the ``arviz.InferenceData`` of :func:`fit_nuts` (``extra["inference_data"]``),
            posterior draws ``(chains, draws, n, Q)``.
        out: the run folder.
        stem: file-name prefix.

    Returns:
        ``{"posterior": path, "summary": path}``.  The netCDF file (h5netcdf engine) reads
        back with ``arviz.from_netcdf``; the CSV is ``arviz.summary`` (mean, sd, HDI, MCSE,
        bulk/tail ESS, R-hat per latent coordinate).  Both are written atomically.
    """
    import arviz as az

    out = Path(out)
    nc = save_with(out / f"{stem}_posterior.nc", lambda tmp: idata.to_netcdf(str(tmp)))
    table = az.summary(idata)
    csv = write_text(out / f"{stem}_summary.csv", table.to_csv())
    return {"posterior": nc, "summary": csv}
