"""The exact posterior as a guide, for models that offer one (:mod:`ppl_gen.lvm.tractable`).

``q(z | x) = p(z | x; theta)`` computed in closed form by ``model.exact_posterior(x)`` and
detached from the model's parameters.  With it the importance weights are constant and
ELBO = IWAE-K = log p(x); as a fixed guide in SVI it turns SVI into (Monte Carlo) EM: the
gradient of the ELBO with respect to theta is then the gradient of the EM objective
``Q(theta, theta_old) = E_{p(z|x,theta_old)} log p(x, z | theta)`` (Neal & Hinton 1998).
"""

from __future__ import annotations

from collections.abc import Callable

import pyro
import torch

from ppl_gen.lvm.plates import data_plate


class ExactPosteriorGuide:
    """Pyro guide sampling ``model.exact_posterior(x)`` at ``model.latent_site``.

    Call signature: ``guide(x, indices=None, size=None)`` with ``x: (batch, D)``.
    """

    def __init__(self, model: Callable) -> None:
        self.model = model

    def __call__(self, x: torch.Tensor, indices=None, size=None) -> torch.Tensor:
        with torch.no_grad():
            posterior = self.model.exact_posterior(x)
        with data_plate(x, indices, size):
            return pyro.sample(self.model.latent_site, posterior)
