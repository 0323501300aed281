"""Conditional encoder guide ``q(z | x, y)`` of the conditional VAE (Sohn et al. 2015,
sec. 4: the recognition network takes both the input and the condition)."""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from ppl_gen.core.naming import unique_scope
from ppl_gen.lvm.nets import mlp
from ppl_gen.lvm.plates import data_plate


class ConditionalEncoderGuide(nn.Module):
    """``q(z | x, y) = N(z; mu_phi(x, y), diag sigma_phi(x, y)^2)``.

    An MLP with ReLU hidden layers on ``[x | one_hot(y)]`` and linear heads for the mean and
    (through a softplus) the standard deviation.

    Args:
        model: a :class:`ppl_gen.models.CVAE` (gives ``D``, ``C`` and ``Z`` and splits rows).
        hidden: hidden widths (default: the model's, reversed).
        min_scale: floor on the standard deviations.

    Call signature: ``guide(x, indices=None, size=None)`` with CVAE rows
    ``x: (batch, D + C)``.
    """

    def __init__(
        self, model: nn.Module, hidden: Sequence[int] | None = None, min_scale: float = 1e-4
    ) -> None:
        super().__init__()
        self.model = [model]  # a list so the model's parameters are not registered here
        self.hidden = tuple(hidden) if hidden is not None else tuple(model.hidden[::-1])
        self.min_scale = min_scale
        self.latent_dim = model.latent_dim
        self.scope = unique_scope(type(self).__name__)
        in_dim = model.image_dim + model.num_classes
        self.net = mlp(in_dim, self.hidden, 2 * model.latent_dim)

    def encode(self, x: torch.Tensor, y_onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loc, scale)`` of ``q(z | x, y)``, each ``(batch, Z)``; ``x: (batch, D)``,
        ``y_onehot: (batch, C)``."""
        loc, raw = self.net(torch.cat([x, y_onehot], dim=-1)).chunk(2, dim=-1)
        return loc, self.min_scale + F.softplus(raw)

    def forward(self, x: torch.Tensor, indices=None, size=None) -> torch.Tensor:
        pyro.module(self.scope, self)
        image, y = self.model[0].split(x)
        loc, scale = self.encode(image, y)
        with data_plate(image, indices, size):
            return pyro.sample(self.model[0].latent_site, dist.Normal(loc, scale).to_event(1))
