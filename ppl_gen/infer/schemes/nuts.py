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
from ppl_gen.guides.bodies import sample_joint
from ppl_gen.guides.sites import continuous_sites, latent_sites, real_site
from ppl_gen.infer.schemes.base import (
    SchemeResult,
    SchemeSettings,
    bounds_with_weights,
    exact_log_likelihood,
)
from ppl_gen.infer.training import frozen
from ppl_gen.lvm.tractable import FitHistory


class EmpiricalGaussianGuide:
    """``q(u_i) = N(loc_i, Sigma_i)`` per datapoint over the concatenated unconstrained values
    of the model's continuous latent sites, pushed through their bijections (``biject_to``
    of each support, log-Jacobian included), fitted to posterior draws.

    Args:
        sites: the continuous :class:`~ppl_gen.guides.sites.LatentSite` s, in concatenation order.
        loc: ``(N, U)`` means; scale_tril: ``(N, U, U)`` Cholesky factors (``U`` = total
            unconstrained size).
    """

    def __init__(self, sites: list, loc: torch.Tensor, scale_tril: torch.Tensor) -> None:
        self.sites, self.loc, self.scale_tril = list(sites), loc, scale_tril

    def __call__(self, x, indices=None, size=None):
        if indices is None:
            indices = torch.arange(x.shape[0], device=x.device)
        base = dist.MultivariateNormal(self.loc[indices], scale_tril=self.scale_tril[indices])
        return sample_joint("_nuts_joint", base, [], self.sites, x, indices, size)


def _nuts_sites(model: Callable, x: torch.Tensor | None, model_name: str) -> dict:
    """The latent sites NUTS samples (all continuous, else refused)."""
    if getattr(model, "discrete", False):
        raise PplGenError(
            f"schemes nuts: {model_name}'s latent is a discrete assignment; NUTS needs "
            "continuous latents (use em, whose posterior is exact)"
        )
    if x is None:
        shapes = getattr(model, "latent_shapes", None)
        return {n: real_site(n, tuple(s)) for n, s in (shapes or {}).items()}
    sites = latent_sites(model, x)
    discrete = [name for name, site in sites.items() if site.discrete]
    if discrete:
        raise PplGenError(
            f"schemes nuts: {model_name}'s latent site {discrete[0]!r} is discrete; NUTS "
            "samples continuous latents only (the other schemes sum it out exactly)"
        )
    return continuous_sites(sites)


def check_nuts(model: Callable, model_name: str = "model", x: torch.Tensor | None = None) -> None:
    """Raise :class:`PplGenError` unless NUTS applies: continuous latent sites only
    (several, and constrained ones, are fine).
    ``x: (batch, D)`` rows to trace a hand-written model on."""
    _nuts_sites(model, x, model_name)


def _plate_nesting(model: Callable, x: torch.Tensor) -> int:
    with torch.random.fork_rng(), torch.no_grad(), pyro.poutine.block():
        trace = pyro.poutine.trace(model).get_trace(x)
    dims = [
        -f.dim
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for f in site["cond_indep_stack"]
        if f.vectorized
    ]
    return max(dims, default=1)


def fit_nuts(
    model: Callable, data: DataSplits, settings: SchemeSettings, fitted_by: str
) -> SchemeResult:
    """NUTS on the first ``settings.nuts_subset`` test points of an already fitted model.

    Every latent site is sampled (several sites and constrained supports: Pyro's NUTS works
    in unconstrained space); models with discrete latents are refused.

    Returns:
        :class:`~ppl_gen.infer.schemes.SchemeResult` whose bounds (nats per datapoint) cover the
        subset; ``extra`` holds ``rhat_max``, ``ess_bulk_min`` (over all sites),
        ``n_evaluated`` and the ``arviz.InferenceData`` (draws ``(chains, draws, n, *event)``
        per site).

    Raises:
        PplGenError: for a model without a continuous latent site.
    """
    import arviz as az

    x = data.test[: settings.nuts_subset]
    sites = _nuts_sites(model, x, "model")
    target = model
    t0 = time.perf_counter()
    chains: dict[str, list[torch.Tensor]] = {name: [] for name in sites}
    with frozen(model):
        nesting = _plate_nesting(model, x)
        for chain in range(settings.nuts_chains):
            pyro.set_rng_seed(settings.seed + chain)
            mcmc = MCMC(
                NUTS(
                    target,
                    max_plate_nesting=nesting,
                    max_tree_depth=settings.nuts_max_tree_depth,
                ),
                num_samples=settings.nuts_samples,
                warmup_steps=settings.nuts_warmup,
                # Pyro's bars are tqdm bars on stderr: on a terminal only, never in logs.
                disable_progbar=not (settings.progress and sys.stderr.isatty()),
            )
            mcmc.run(x)
            samples = mcmc.get_samples()
            for name in sites:
                chains[name].append(samples[name].detach())
    draws = {name: torch.stack(v) for name, v in chains.items()}  # (chains, draws, n, *event)
    idata = az.from_dict(posterior={name: d.cpu().numpy() for name, d in draws.items()})
    rhat = float(max(az.rhat(idata)[name].max() for name in sites))
    ess = float(min(az.ess(idata, method="bulk")[name].min() for name in sites))
    seconds = time.perf_counter() - t0
    free = []
    for name, site in sites.items():
        d = draws[name].reshape(-1, *draws[name].shape[2:])  # (S, n, *event)
        u = d if site.is_real else site.transform.inv(d)
        free.append(u.reshape(d.shape[0], d.shape[1], -1))
    flat = torch.cat(free, dim=-1)  # (S, n, U)
    loc = flat.mean(0)
    centred = flat - loc
    cov = torch.einsum("sni,snj->nij", centred, centred) / (flat.shape[0] - 1)
    cov = cov + 1e-6 * torch.eye(cov.shape[-1], device=cov.device, dtype=cov.dtype)
    guide = EmpiricalGaussianGuide(list(sites.values()), loc, torch.linalg.cholesky(cov))
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
