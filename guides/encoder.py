"""Amortised Gaussian encoder guide ``q(z | x; phi)`` (Kingma & Welling 2014, sec. 2.4).

Pyro's autoguides are not amortised: they hold one set of variational parameters per
latent variable.  This guide is ppl_gen's own: an encoder network maps each datapoint to
the mean and standard deviation of a diagonal Gaussian over each of the model's local
latent sites, so inference for a new datapoint costs one forward pass.  A constrained site
(positive, interval, simplex, ...) gets its Gaussian in unconstrained space, pushed through
``biject_to(support)`` (:func:`ppl_gen.guides.sites.site_distribution`); discrete sites are
left to enumeration.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from ppl_gen.core.naming import unique_scope
from ppl_gen.guides.bodies import encoder_body
from ppl_gen.guides.sites import LatentSite, model_sites, site_distribution
from ppl_gen.lvm.plates import data_plate


class AmortisedGaussianGuide(nn.Module):
    """``q(z | x) = N(z; mu_phi(x), diag sigma_phi(x)^2)`` for every local latent site.

    The encoder body is, in order of preference: ``encoder_body`` if given, the model's
    ``make_encoder_body()`` if it has one (e.g. the convolutional VAE), else an MLP with
    ReLU hidden layers ``hidden`` on the flattened datapoint.  Linear heads give the mean
    and, through a softplus, the standard deviation of each site.

    For declared models the guide is built at once from ``model.latent_shapes`` and
    ``model.data_dim``; for hand-written models it is built on the first call by tracing
    the model (see :func:`ppl_gen.guides.sites.latent_sites`).  Each continuous site gets
    ``N(mu, diag sigma^2)`` over its unconstrained event, mapped onto its support by
    ``biject_to`` (log-Jacobian included); discrete sites are not sampled.

    Args:
        model: the Pyro model this guide approximates the posterior of.
        hidden: hidden widths of the default MLP body.
        encoder_body: optional ``nn.Module`` ``(batch, D) -> (batch, F)`` with attribute
            ``out_dim = F``.
        min_scale: floor on the standard deviations.

    Call signature: ``guide(x, indices=None, size=None)`` with ``x: (batch, D)``.
    """

    def __init__(
        self,
        model: Callable,
        hidden: Sequence[int] = (400,),
        encoder_body: nn.Module | None = None,
        min_scale: float = 1e-4,
    ) -> None:
        super().__init__()
        self.model = [model]  # a list so the model's parameters are not registered here
        self.hidden = tuple(hidden)
        self.min_scale = min_scale
        self.scope = unique_scope(type(self).__name__)
        self._encoder_body = encoder_body
        self.body: nn.Module | None = None
        self.heads = nn.ModuleDict()
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.sites: dict[str, LatentSite] = {}
        if hasattr(model, "latent_shapes") and hasattr(model, "data_dim"):
            self._build(model.data_dim, model_sites(model, None))

    def _build(self, data_dim: int, sites: dict[str, LatentSite]) -> None:
        self.body, width = encoder_body(self.model[0], data_dim, self.hidden, self._encoder_body)
        self.sites = dict(sites)
        self.shapes = {name: s.event_shape for name, s in sites.items()}
        for site in sites.values():
            self.heads[site.key] = nn.Linear(width, 2 * site.unconstrained_numel)

    def setup(self, x: torch.Tensor, indices=None, size=None) -> None:
        """Build the networks from a trace of the model on ``x`` (no-op once built)."""
        if self.body is None:
            flat = x.reshape(x.shape[0], -1)
            self._build(flat.shape[-1], model_sites(self.model[0], x, indices, size))
            self.to(device=x.device, dtype=x.dtype)

    def encode(self, x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Means and standard deviations per site in unconstrained space: ``{site: (loc,
        scale)}``, each ``(batch, *unconstrained_shape)`` (the event shape for real sites)."""
        self.setup(x)
        h = self.body(x.reshape(x.shape[0], -1))
        out = {}
        for name, site in self.sites.items():
            loc, raw = self.heads[site.key](h).chunk(2, dim=-1)
            scale = self.min_scale + F.softplus(raw)
            shape = site.unconstrained_shape
            out[name] = (loc.reshape(-1, *shape), scale.reshape(-1, *shape))
        return out

    def forward(self, x: torch.Tensor, indices=None, size=None) -> dict[str, torch.Tensor]:
        self.setup(x, indices, size)
        pyro.module(self.scope, self)
        params = self.encode(x)
        values = {}
        with data_plate(x, indices, size):
            for name, (loc, scale) in params.items():
                base = dist.Normal(loc, scale).to_event(loc.dim() - 1)
                values[name] = pyro.sample(name, site_distribution(self.sites[name], base))
        return values
