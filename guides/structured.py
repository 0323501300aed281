"""Structured amortised guide that follows the model's dependency graph (Burda et al. 2016,
sec. 5; the top-down order of ladder-style inference networks).

For a model whose latent sites form a directed graph (``z2 -> z1 -> x``), the guide samples
the sites in *reverse* model order and conditions each on ``x`` and on the sites already
sampled that are its children in the model:

    q(z | x) = prod_j q(z_j | x, children(z_j)),   e.g.  q(z1 | x) q(z2 | z1, x).

The children come from :func:`~ppl_gen.guides.latent_sites` (``parents`` of every site, from
``pyro.infer.inspect.get_dependencies``).  Each factor is a diagonal Gaussian over the
site's unconstrained event, mapped onto its support by ``biject_to``: a shared encoder body
reads ``x`` into features ``h``, and each site has its own MLP on
``[h, unconstrained values of its children]``.

Training note: Pyro's ``TraceMeanField_ELBO`` (``elbo="analytic-kl"``) takes closed-form
``KL(q(z_j | .) || p(z_j | parents))`` per site, which is biased when a site's model parent
is sampled *after* it in the guide (here: always).  The guide therefore always wraps its
factors in ``TransformedDistribution`` (no closed-form KL is registered for it against the
usual priors, so Pyro falls back to the Monte Carlo term); still, ``elbo="trace"`` is the
safe choice (:attr:`StructuredAmortisedGuide.analytic_kl_safe` is ``False``).
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
from ppl_gen.guides.sites import LatentSite, model_sites
from ppl_gen.lvm.nets import mlp
from ppl_gen.lvm.plates import data_plate


class StructuredAmortisedGuide(nn.Module):
    """``q(z | x) = prod_j q(z_j | x, children(z_j))``, sites in reverse model order.

    Args:
        model: the Pyro model.
        hidden: hidden widths of the shared MLP body on ``x`` (its output is ``h``).
        site_hidden: hidden widths of each site's MLP on ``[h, children]``.
        encoder_body: optional module ``(batch, D) -> (batch, F)`` with ``out_dim = F``.
        min_scale: floor on the standard deviations.

    Attributes:
        order: site names in the order the guide samples them.
        conditioned_on: ``{site: names of the latent sites it is conditioned on}``.

    Call signature: ``guide(x, indices=None, size=None)`` with ``x: (batch, D)``.

    Raises:
        PplGenError: at build time as :func:`~ppl_gen.guides.latent_sites`.
    """

    analytic_kl_safe = False

    def __init__(
        self,
        model: Callable,
        hidden: Sequence[int] = (400,),
        site_hidden: Sequence[int] = (200,),
        encoder_body: nn.Module | None = None,
        min_scale: float = 1e-4,
    ) -> None:
        super().__init__()
        self.model = [model]
        self.hidden = tuple(hidden)
        self.site_hidden = tuple(site_hidden)
        self.min_scale = min_scale
        self.scope = unique_scope(type(self).__name__)
        self._encoder_body = encoder_body
        self.body: nn.Module | None = None
        self.nets = nn.ModuleDict()
        self.sites: dict[str, LatentSite] = {}
        self.order: list[str] = []
        self.conditioned_on: dict[str, tuple[str, ...]] = {}
        if hasattr(model, "latent_shapes") and hasattr(model, "data_dim"):
            self._build(model.data_dim, model_sites(model, None))

    def _build(self, data_dim: int, sites: dict[str, LatentSite]) -> None:
        self.body, width = encoder_body(self.model[0], data_dim, self.hidden, self._encoder_body)
        self.sites = dict(sites)
        self.order = list(reversed(sites))
        self.conditioned_on = {
            name: tuple(c for c in self.order if name in sites[c].parents) for name in self.order
        }
        for name in self.order:
            site = sites[name]
            extra = sum(sites[c].unconstrained_numel for c in self.conditioned_on[name])
            out = 2 * site.unconstrained_numel
            self.nets[site.key] = mlp(width + extra, self.site_hidden, out)

    def setup(self, x: torch.Tensor, indices=None, size=None) -> None:
        """Build the networks from a trace of the model on ``x`` (no-op once built)."""
        if self.body is None:
            flat = x.reshape(x.shape[0], -1)
            self._build(flat.shape[-1], model_sites(self.model[0], x, indices, size))
            self.to(device=x.device, dtype=x.dtype)

    def forward(self, x: torch.Tensor, indices=None, size=None) -> dict[str, torch.Tensor]:
        self.setup(x, indices, size)
        pyro.module(self.scope, self)
        h = self.body(x.reshape(x.shape[0], -1))
        values: dict[str, torch.Tensor] = {}
        free: dict[str, torch.Tensor] = {}  # unconstrained values, (..., batch, numel)
        with data_plate(x, indices, size):
            for name in self.order:
                site = self.sites[name]
                parts = [free[c] for c in self.conditioned_on[name]]
                lead = torch.broadcast_shapes(h.shape[:-1], *(p.shape[:-1] for p in parts))
                inputs = [h.expand(*lead, h.shape[-1])] + [
                    p.expand(*lead, p.shape[-1]) for p in parts
                ]
                loc, raw = self.nets[site.key](torch.cat(inputs, dim=-1)).chunk(2, dim=-1)
                shape = (*lead, *site.unconstrained_shape)
                scale = self.min_scale + F.softplus(raw)
                base = dist.Normal(loc.reshape(shape), scale.reshape(shape))
                base = base.to_event(len(site.unconstrained_shape))
                transform = site.transform.with_cache(1)
                values[name] = pyro.sample(name, dist.TransformedDistribution(base, transform))
                u = transform.inv(values[name])  # cached: the exact base sample
                free[name] = u.reshape(*u.shape[: u.dim() - len(site.unconstrained_shape)], -1)
        return values
