"""Pieces shared by the amortised guides: the encoder body and the joint sampling step.

* :func:`encoder_body` -- the network ``h = f_phi(x)`` every amortised guide reads its
  datapoint through: a given module, the model's ``make_encoder_body()``, or an MLP.
* :func:`sample_joint` -- samples several sites from one joint distribution over their
  concatenated unconstrained values, the way Pyro's ``AutoContinuous`` guides do: one
  auxiliary site (``infer={"is_auxiliary": True}``) holds the joint value and carries the
  whole ``log q(z | x)`` (base density, flow and the sites' log-Jacobians through
  :class:`~ppl_gen.guides.sites.SitesTransform`), and each model site gets a ``Delta`` at
  its slice with zero log-density.  Pyro's ELBOs count auxiliary guide sites, and because
  the ``Delta`` sites carry no density, ``TraceMeanField_ELBO``'s ``KL(Delta || p) =
  -log p(z)`` rule is exact for them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppl_gen.guides.sites import LatentSite, SitesTransform
from ppl_gen.lvm.nets import mlp
from ppl_gen.lvm.plates import data_plate


def encoder_body(
    model: Callable, data_dim: int, hidden: Sequence[int], body: nn.Module | None = None
) -> tuple[nn.Module, int]:
    """The encoder body and its output width ``F``.

    In order of preference: ``body`` (needs ``body.out_dim``), the model's
    ``make_encoder_body()``, an MLP ``D -> hidden...`` with ReLU after every layer, or the
    identity (``hidden == ()``: the heads are then linear in ``x``).

    Returns:
        ``(module, F)``; the module maps ``(batch, D) -> (batch, F)``.
    """
    if body is not None:
        return body, body.out_dim
    if hasattr(model, "make_encoder_body"):
        made = model.make_encoder_body()
        return made, made.out_dim
    hidden = tuple(hidden)
    if hidden:
        net = nn.Sequential(mlp(data_dim, hidden[:-1], hidden[-1]), nn.ReLU())
        return net, hidden[-1]
    return nn.Identity(), data_dim


def sample_joint(
    aux_name: str,
    base: dist.TorchDistribution,
    flows: Sequence,
    sites: Sequence[LatentSite],
    x: torch.Tensor,
    indices=None,
    size=None,
) -> dict[str, torch.Tensor]:
    """Sample ``sites`` jointly inside the data plate (module docs).

    Args:
        aux_name: name of the auxiliary site holding the joint value.
        base: distribution over the concatenated unconstrained values, event shape
            ``(sum_j numel(unconstrained_j),)``, batch shape ``(batch,)``.
        flows: transforms applied to the base sample before the sites' bijections (e.g.
            IAF layers), each on ``(..., U)``.
        sites: the continuous sites, in the order of the concatenation.
        x, indices, size: the data plate's arguments.

    Returns:
        ``{site: value (..., batch, *event_shape)}``.
    """
    joint = SitesTransform(list(sites))
    q = dist.TransformedDistribution(base, [*flows, joint])
    values = {}
    with data_plate(x, indices, size):
        z = pyro.sample(aux_name, q, infer={"is_auxiliary": True})
        parts = joint.split(z)
        for site in sites:
            delta = dist.Delta(parts[site.name], event_dim=len(site.event_shape))
            values[site.name] = pyro.sample(site.name, delta)
    return values
