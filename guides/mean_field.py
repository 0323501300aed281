"""Mean-field, non-amortised guide with free parameters for every datapoint.

``q(z_1, ..., z_N) = prod_i N(z_i; m_i, diag s_i^2)``: each datapoint ``i`` has its own
variational mean ``m_i`` and standard deviation ``s_i`` (the local parameters of stochastic
variational inference, Hoffman et al. 2013; the per-datapoint ``q^(i)`` of Cremer et al.
2018).  Like Pyro's ``AutoNormal`` the parameters live in unconstrained space (a softplus
gives the scale; a constrained site's Gaussian is mapped onto its support by
``biject_to``, log-Jacobian included; discrete sites are left to enumeration) and are
initialised at the centre of unconstrained space with a small scale; unlike
``AutoNormal`` it is correct under subsampling: a minibatch with ``indices`` reads and
updates only rows ``indices`` of the tables, and the data plate scales the ELBO by
``N / batch``.

Test-time evaluation: a non-amortised guide knows nothing about new datapoints, so bounds
on test data are computed with a *fresh* guide whose local parameters are fitted to the
test points by SVI while the model is frozen (:func:`ppl_gen.infer.training.fit_local_guide`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.core.naming import unique_scope
from ppl_gen.guides.sites import LatentSite, model_sites, site_distribution
from ppl_gen.lvm.plates import data_plate


class MeanFieldGuide(nn.Module):
    """Per-datapoint diagonal Gaussian ``q^(i)(z) = N(m_i, diag s_i^2)``.

    Args:
        model: the Pyro model.
        num_data: ``N``, rows of the dataset the guide is fitted to (size of its tables).
        init_scale: initial standard deviation ``s_i`` (AutoNormal's default 0.1).
        min_scale: floor on ``s_i``.

    Call signature: ``guide(x, indices=None, size=None)``; ``indices: (batch,)`` rows of the
    tables (default ``0..batch-1``) and ``size`` must equal ``N`` when given.

    Raises:
        PplGenError: if ``num_data`` is not positive, or a call's ``size`` differs from
            ``num_data``.
    """

    is_local = True

    def __init__(
        self, model: Callable, num_data: int, init_scale: float = 0.1, min_scale: float = 1e-4
    ) -> None:
        super().__init__()
        self.model = [model]
        self.num_data = require_positive_int("num_data", num_data)
        self.init_scale = init_scale
        self.min_scale = min_scale
        self.scope = unique_scope(type(self).__name__)
        self.locs = nn.ParameterDict()
        self.raw_scales = nn.ParameterDict()
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.sites: dict[str, LatentSite] = {}
        if hasattr(model, "latent_shapes"):
            self._build(model_sites(model, None), torch.device("cpu"))

    def _build(self, sites: dict[str, LatentSite], device: torch.device) -> None:
        raw = math.log(math.expm1(self.init_scale - self.min_scale))
        self.sites = dict(sites)
        self.shapes = {name: s.event_shape for name, s in sites.items()}
        for site in sites.values():
            shape = (self.num_data, *site.unconstrained_shape)
            self.locs[site.key] = nn.Parameter(torch.zeros(shape, device=device))
            self.raw_scales[site.key] = nn.Parameter(torch.full(shape, raw, device=device))

    def setup(self, x: torch.Tensor, indices=None, size=None) -> None:
        """Build the tables from a trace of the model on ``x`` (no-op once built)."""
        if not self.shapes:
            self._build(model_sites(self.model[0], x, indices, size), x.device)

    def posterior(self, indices: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{site: (loc, scale)}`` of rows ``indices`` in unconstrained space, each
        ``(batch, *unconstrained_shape)`` (the event shape for real sites)."""
        out = {}
        for name, site in self.sites.items():
            key = site.key
            loc = self.locs[key][indices]
            scale = self.min_scale + F.softplus(self.raw_scales[key][indices])
            out[name] = (loc, scale)
        return out

    def forward(self, x: torch.Tensor, indices=None, size=None) -> dict[str, torch.Tensor]:
        self.setup(x, indices, size)
        indices = local_indices(self.num_data, x, indices, size)
        pyro.module(self.scope, self)
        values = {}
        with data_plate(x, indices, self.num_data):
            for name, (loc, scale) in self.posterior(indices).items():
                base = dist.Normal(loc, scale).to_event(loc.dim() - 1)
                values[name] = pyro.sample(name, site_distribution(self.sites[name], base))
        return values


def local_indices(num_data: int, x: torch.Tensor, indices, size) -> torch.Tensor:
    """The table rows of a call ``guide(x, indices, size)`` of a per-datapoint guide.

    Raises:
        PplGenError: if ``size`` differs from ``num_data``, or ``indices`` is missing while
            the batch is not the whole dataset.
    """
    if size is not None and size != num_data:
        raise PplGenError(
            f"size: this mean-field guide holds {num_data} datapoints, got size={size}"
        )
    if indices is None:
        if x.shape[0] != num_data:
            raise PplGenError(
                f"indices: required when the batch ({x.shape[0]} rows) is not the whole "
                f"dataset the guide was built for ({num_data} rows)"
            )
        indices = torch.arange(x.shape[0], device=x.device)
    return indices
