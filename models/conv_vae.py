"""Convolutional VAE generative model for 28x28 single-channel images.

The decoder is a DCGAN-style transposed-convolution stack ``z -> 64x7x7 -> 32x14x14 ->
1x28x28`` (logits or means, flattened to 784); :meth:`ConvVAE.make_encoder_body` gives the
mirrored convolutional encoder that :class:`ppl_gen.guides.AmortisedGaussianGuide` uses by
default for this model.
"""

from __future__ import annotations

import torch
from torch import nn

from ppl_gen.lvm.declare import LatentVariableModel
from ppl_gen.lvm.likelihoods import make_likelihood


class _ConvDecoder(nn.Module):
    def __init__(self, latent_dim: int, channels_out: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(latent_dim, 64 * 7 * 7), nn.ReLU())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, channels_out, 4, stride=2, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.fc(z.reshape(-1, z.shape[-1])).reshape(-1, 64, 7, 7)
        out = self.deconv(h)  # (n, C, 28, 28)
        return (
            out.permute(0, 2, 3, 1).reshape(*lead, -1)
            if out.shape[1] > 1
            else out.reshape(*lead, -1)
        )


class _ConvEncoderBody(nn.Module):
    def __init__(self, out_dim: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, out_dim),
            nn.ReLU(),
        )
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(-1, 1, 28, 28))


class ConvVAE(LatentVariableModel):
    """Convolutional decoder for 28x28 grey images (``D = 784``).

    Args:
        latent_dim: ``Z``.
        likelihood: ``bernoulli`` or ``gaussian`` (any family of :mod:`ppl_gen.lvm.likelihoods`;
            categorical stores its levels last).

    Shapes: ``x: (batch, 784)``, ``z: (batch, Z)``.
    """

    def __init__(self, latent_dim: int = 20, likelihood: str = "bernoulli", prior="normal") -> None:
        lik = make_likelihood(likelihood, 784)
        decoder = _ConvDecoder(latent_dim, lik.params_per_dim)
        super().__init__(latent_dim, decoder, 784, lik, prior, (28, 28))

    def make_encoder_body(self) -> nn.Module:
        """Convolutional feature extractor ``(batch, 784) -> (batch, 256)`` for the guide."""
        return _ConvEncoderBody()
