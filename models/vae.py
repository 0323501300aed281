"""The AEVB variational autoencoder's generative model (Kingma & Welling 2014).

``p(z) = N(0, I)``, ``p(x | z)`` Bernoulli (binary data) or Gaussian (continuous data) with
an MLP decoder (Kingma & Welling 2014, appendix C).  Pair it with
:class:`ppl_gen.guides.AmortisedGaussianGuide` for the VAE, or with
:class:`ppl_gen.guides.MeanFieldGuide` for non-amortised (per-datapoint) inference.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ppl_gen.lvm.declare import LatentVariableModel
from ppl_gen.lvm.nets import mlp


class VAE(LatentVariableModel):
    """MLP decoder ``Z -> hidden... -> D`` with ReLU activations.

    Args:
        data_dim: ``D`` (784 for MNIST, 64 for the digits).
        latent_dim: ``Z`` (20 in the paper's MNIST runs).
        hidden: hidden layer widths of the decoder (the guide mirrors them).
        likelihood: ``bernoulli`` (binary data) or ``gaussian`` (continuous), or any family
            of :mod:`ppl_gen.lvm.likelihoods`.
        image_shape: display shape of a row of ``x``.

    Shapes: ``x: (batch, D)``, ``z: (batch, Z)``.
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 20,
        hidden: Sequence[int] = (400,),
        likelihood: str = "bernoulli",
        image_shape: Sequence[int] | None = None,
        prior: str | nn.Module = "normal",
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        from ppl_gen.core.errors import require_positive_int
        from ppl_gen.lvm.likelihoods import make_likelihood

        require_positive_int("latent_dim", latent_dim)
        lik = make_likelihood(likelihood, data_dim)
        decoder = mlp(latent_dim, hidden, data_dim * lik.params_per_dim, activation)
        super().__init__(latent_dim, decoder, data_dim, lik, prior, image_shape)
        self.hidden = tuple(hidden)
