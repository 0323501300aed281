"""Amortised inverse autoregressive flow guide (Kingma et al. 2016, "Improved variational
inference with inverse autoregressive flow", sec. 4 and Algorithm 1).

The encoder gives a diagonal Gaussian ``u_0 ~ N(mu_phi(x), diag sigma_phi(x)^2)`` over the
concatenated unconstrained latents and a context ``h = f_phi(x)``; ``T`` IAF layers
``u_t = mu_t(u_{t-1}, h) + sigma_t(u_{t-1}, h) * u_{t-1}`` (each ``mu_t, sigma_t``
autoregressive in ``u_{t-1}``, so the Jacobian is triangular and ``log q`` costs one pass)
follow, with the order of the variables reversed between layers.  The layers are Pyro's
``ConditionalAffineAutoregressive`` (``pyro.distributions.transforms``, a MADE network that
also reads the context), conditioned on ``h`` per minibatch.  Each site's slice of the
final ``u_T`` is then mapped onto its support (:class:`~ppl_gen.guides.sites.SitesTransform`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import transforms as T
from torch import nn
from torch.nn import functional as F

from ppl_gen.core.errors import require_positive_int
from ppl_gen.core.naming import unique_scope
from ppl_gen.guides.bodies import encoder_body, sample_joint
from ppl_gen.guides.sites import LatentSite, model_sites


class AmortisedIAFGuide(nn.Module):
    """``q(z | x)``: diagonal Gaussian base from the encoder, ``num_flows`` conditional IAF
    layers with context ``h(x)``, then each site's bijection onto its support.

    Args:
        model: the Pyro model.
        hidden: hidden widths of the default MLP encoder body (its output is the context).
        num_flows: IAF layers (>= 1).
        flow_hidden: hidden widths of each layer's autoregressive network (default
            ``(max(2 U, 16),)`` for ``U`` unconstrained latents).
        encoder_body: optional module ``(batch, D) -> (batch, F)`` with ``out_dim = F``.
        min_scale: floor on the base standard deviations.

    Call signature: ``guide(x, indices=None, size=None)`` with ``x: (batch, D)``.

    Raises:
        PplGenError: a bad ``num_flows``; at build time as :func:`~ppl_gen.guides.latent_sites`.
    """

    def __init__(
        self,
        model: Callable,
        hidden: Sequence[int] = (400,),
        num_flows: int = 2,
        flow_hidden: Sequence[int] | None = None,
        encoder_body: nn.Module | None = None,
        min_scale: float = 1e-4,
    ) -> None:
        super().__init__()
        self.model = [model]
        self.hidden = tuple(hidden)
        self.num_flows = require_positive_int("num_flows", num_flows)
        self.flow_hidden = tuple(flow_hidden) if flow_hidden is not None else None
        self.min_scale = min_scale
        self.scope = unique_scope(type(self).__name__)
        self._encoder_body = encoder_body
        self.body: nn.Module | None = None
        self.head: nn.Linear | None = None
        self.flows = nn.ModuleList()
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
        self.head = nn.Linear(width, 2 * u)
        hidden = list(self.flow_hidden or (max(2 * u, 16),))
        for _ in range(self.num_flows):
            self.flows.append(T.conditional_affine_autoregressive(u, width, hidden_dims=hidden))
        self.register_buffer("reverse", torch.arange(u - 1, -1, -1), persistent=False)

    def setup(self, x: torch.Tensor, indices=None, size=None) -> None:
        """Build the networks from a trace of the model on ``x`` (no-op once built)."""
        if self.body is None:
            self._build(
                x.reshape(x.shape[0], -1).shape[-1], model_sites(self.model[0], x, indices, size)
            )
            self.to(device=x.device, dtype=x.dtype)

    def base_and_flows(self, x: torch.Tensor) -> tuple[dist.TorchDistribution, list]:
        """The base ``Normal`` over ``u_0`` (batch ``(batch,)``, event ``(U,)``) and the IAF
        layers conditioned on this batch's context (permutations in between)."""
        self.setup(x)
        h = self.body(x.reshape(x.shape[0], -1))
        loc, raw = self.head(h).chunk(2, dim=-1)
        base = dist.Normal(loc, self.min_scale + F.softplus(raw)).to_event(1)
        layers: list = []
        for i, flow in enumerate(self.flows):
            if i:
                layers.append(T.Permute(self.reverse))
            layers.append(flow.condition(h))
        return base, layers

    def forward(self, x: torch.Tensor, indices=None, size=None) -> dict[str, torch.Tensor]:
        self.setup(x, indices, size)
        pyro.module(self.scope, self)
        base, layers = self.base_and_flows(x)
        name = f"_{type(self).__name__}_latent"
        return sample_joint(name, base, layers, list(self.sites.values()), x, indices, size)
