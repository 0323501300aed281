"""Full-rank and low-rank Gaussian guides over all of a model's continuous latent sites.

Both guides put one Gaussian over ``u``, the concatenation of every continuous site's
unconstrained values (``U`` numbers per datapoint), so they capture the correlations
between and within sites that a mean-field (diagonal) guide cannot; each site's slice is
mapped onto its support by ``biject_to`` (:class:`~ppl_gen.guides.sites.SitesTransform`)
and the joint is sampled as Pyro's ``AutoContinuous`` guides do
(:func:`~ppl_gen.guides.bodies.sample_joint`).

* :class:`AmortisedFullRankGuide` -- an encoder gives ``mu_phi(x)`` and the Cholesky factor
  ``L_phi(x)`` (``MultivariateNormal(scale_tril=L)``), or with ``rank=r`` a low-rank plus
  diagonal covariance ``W W^T + diag d`` (``LowRankMultivariateNormal``).
* :class:`LocalFullRankGuide` -- the same families with free parameters per datapoint,
  correct under subsampling like :class:`~ppl_gen.guides.MeanFieldGuide`.  Why not Pyro's
  ``AutoLowRankMultivariateNormal`` / ``AutoMultivariateNormal``: they hold *one* joint
  vector over every latent value of the traced batch, so its size is fixed by the first
  minibatch and a minibatch of other rows (``subsample=indices``) is neither indexed nor
  of the right size; per-datapoint tables indexed by ``indices`` are what subsampled SVI
  needs (Hoffman et al. 2013).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.core.naming import unique_scope
from ppl_gen.guides.bodies import encoder_body, sample_joint
from ppl_gen.guides.mean_field import local_indices
from ppl_gen.guides.sites import LatentSite, model_sites


def _check_rank(rank: int | None) -> int | None:
    if rank is not None:
        require_positive_int("rank", rank)
    return rank


def _gaussian(loc, raw_diag, off, rank: int | None, min_scale: float):
    """``MultivariateNormal`` (``off``: the strictly-lower Cholesky entries ``(..., U(U-1)/2)``)
    or ``LowRankMultivariateNormal`` (``off``: the factor ``(..., U * rank)``)."""
    u = loc.shape[-1]
    diag = min_scale + F.softplus(raw_diag)
    if rank is None:
        rows, cols = torch.tril_indices(u, u, -1, device=loc.device)
        tril = torch.diag_embed(diag)
        tril[..., rows, cols] = off
        return dist.MultivariateNormal(loc, scale_tril=tril)
    factor = off.reshape(*off.shape[:-1], u, rank)
    return dist.LowRankMultivariateNormal(loc, factor, diag.square())


def _off_width(u: int, rank: int | None) -> int:
    return u * (u - 1) // 2 if rank is None else u * rank


class AmortisedFullRankGuide(nn.Module):
    """``q(z | x) = N(u; mu_phi(x), Sigma_phi(x))`` over all continuous sites, ``z = T(u)``.

    ``Sigma = L L^T`` with ``L`` lower triangular (diagonal through a softplus, floored at
    ``min_scale``), or ``W W^T + diag(d^2)`` with ``W: (U, rank)`` when ``rank`` is given.
    The encoder body is chosen as for :class:`~ppl_gen.guides.AmortisedGaussianGuide`
    (``hidden=()``: the Gaussian's parameters are affine in ``x``, exact for linear-Gaussian
    models); one linear head gives all of them.

    Args:
        model: the Pyro model.
        hidden: hidden widths of the default MLP body.
        rank: ``None`` for a full covariance, else the rank of the low-rank factor (>= 1).
        encoder_body: optional module ``(batch, D) -> (batch, F)`` with ``out_dim = F``.
        min_scale: floor on the diagonal of ``L`` (or on ``d``).

    Call signature: ``guide(x, indices=None, size=None)`` with ``x: (batch, D)``.

    Raises:
        PplGenError: a bad ``rank``; at build time as :func:`~ppl_gen.guides.latent_sites`.
    """

    def __init__(
        self,
        model: Callable,
        hidden: Sequence[int] = (400,),
        rank: int | None = None,
        encoder_body: nn.Module | None = None,
        min_scale: float = 1e-4,
    ) -> None:
        super().__init__()
        self.model = [model]
        self.hidden = tuple(hidden)
        self.rank = _check_rank(rank)
        self.min_scale = min_scale
        self.scope = unique_scope(type(self).__name__)
        self._encoder_body = encoder_body
        self.body: nn.Module | None = None
        self.head: nn.Linear | None = None
        self.sites: dict[str, LatentSite] = {}
        if hasattr(model, "latent_shapes") and hasattr(model, "data_dim"):
            self._build(model.data_dim, model_sites(model, None))

    @property
    def latent_size(self) -> int:
        """``U``: unconstrained values per datapoint over all sites."""
        return sum(s.unconstrained_numel for s in self.sites.values())

    def _build(self, data_dim: int, sites: dict[str, LatentSite]) -> None:
        self.body, width = encoder_body(self.model[0], data_dim, self.hidden, self._encoder_body)
        self.sites = dict(sites)
        u = self.latent_size
        self.head = nn.Linear(width, 2 * u + _off_width(u, self.rank))

    def setup(self, x: torch.Tensor, indices=None, size=None) -> None:
        """Build the networks from a trace of the model on ``x`` (no-op once built)."""
        if self.body is None:
            self._build(
                x.reshape(x.shape[0], -1).shape[-1], model_sites(self.model[0], x, indices, size)
            )
            self.to(device=x.device, dtype=x.dtype)

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        """The Gaussian over ``u`` for each row: batch shape ``(batch,)``, event ``(U,)``."""
        self.setup(x)
        out = self.head(self.body(x.reshape(x.shape[0], -1)))
        u = self.latent_size
        loc, raw, off = out.split([u, u, out.shape[-1] - 2 * u], dim=-1)
        return _gaussian(loc, raw, off, self.rank, self.min_scale)

    def forward(self, x: torch.Tensor, indices=None, size=None) -> dict[str, torch.Tensor]:
        self.setup(x, indices, size)
        pyro.module(self.scope, self)
        base = self.posterior(x)
        name = f"_{type(self).__name__}_latent"
        return sample_joint(name, base, (), list(self.sites.values()), x, indices, size)


class LocalFullRankGuide(nn.Module):
    """Per-datapoint ``q^(i)(z) = N(u; m_i, Sigma_i)``, ``z = T(u)``, over all continuous
    sites: full covariance (``Sigma_i = L_i L_i^T``) or, with ``rank``, ``W_i W_i^T +
    diag(d_i^2)``.

    Starts at ``m_i = 0`` with scale ``init_scale`` and no correlation (the low-rank factor
    at small random values, so it gets a gradient).

    Args:
        model: the Pyro model.
        num_data: ``N``, rows of the tables.
        rank: ``None`` (full covariance) or the factor's rank (>= 1).
        init_scale: initial standard deviation.
        min_scale: floor on the diagonal.

    Call signature: ``guide(x, indices=None, size=None)`` as
    :class:`~ppl_gen.guides.MeanFieldGuide` (``size`` must equal ``N``).

    Raises:
        PplGenError: bad ``num_data`` / ``rank``, a call's ``size`` other than
            ``num_data``, or missing ``indices`` for a partial batch.
    """

    is_local = True

    def __init__(
        self,
        model: Callable,
        num_data: int,
        rank: int | None = None,
        init_scale: float = 0.1,
        min_scale: float = 1e-4,
    ) -> None:
        super().__init__()
        self.model = [model]
        self.num_data = require_positive_int("num_data", num_data)
        self.rank = _check_rank(rank)
        if not init_scale > min_scale:
            raise PplGenError(f"init_scale: must exceed min_scale {min_scale}, got {init_scale}")
        self.init_scale, self.min_scale = init_scale, min_scale
        self.scope = unique_scope(type(self).__name__)
        self.sites: dict[str, LatentSite] = {}
        self.loc = self.raw_diag = self.off = None
        if hasattr(model, "latent_shapes"):
            self._build(model_sites(model, None), torch.device("cpu"))

    def _build(self, sites: dict[str, LatentSite], device: torch.device) -> None:
        self.sites = dict(sites)
        u = sum(s.unconstrained_numel for s in sites.values())
        n, raw = self.num_data, math.log(math.expm1(self.init_scale - self.min_scale))
        self.loc = nn.Parameter(torch.zeros(n, u, device=device))
        self.raw_diag = nn.Parameter(torch.full((n, u), raw, device=device))
        off = torch.zeros(n, _off_width(u, self.rank), device=device)
        if self.rank is not None:
            off.normal_(0.0, 0.1 * self.init_scale)
        self.off = nn.Parameter(off)

    def setup(self, x: torch.Tensor, indices=None, size=None) -> None:
        """Build the tables from a trace of the model on ``x`` (no-op once built)."""
        if not self.sites:
            self._build(model_sites(self.model[0], x, indices, size), x.device)

    def posterior(self, indices: torch.Tensor) -> dist.TorchDistribution:
        """The Gaussian over ``u`` of rows ``indices``: batch ``(batch,)``, event ``(U,)``."""
        return _gaussian(
            self.loc[indices], self.raw_diag[indices], self.off[indices], self.rank, self.min_scale
        )

    def forward(self, x: torch.Tensor, indices=None, size=None) -> dict[str, torch.Tensor]:
        self.setup(x, indices, size)
        indices = local_indices(self.num_data, x, indices, size)
        pyro.module(self.scope, self)
        name = f"_{type(self).__name__}_latent"
        base = self.posterior(indices)
        return sample_joint(name, base, (), list(self.sites.values()), x, indices, self.num_data)
