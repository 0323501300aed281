"""Convolutional autoencoder for single-channel images whose sides are multiples of 4.

Encoder: two stride-2 4x4 convolutions (``1 -> c1 -> c2`` channels, ReLU), a linear map to
the code; decoder: the mirror image with transposed convolutions (the DCGAN-style stack of
:mod:`ppl_gen.models.conv_vae`).  28x28 MNIST gives ``c2 x 7 x 7`` features, the 8x8 digits
``c2 x 2 x 2``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ppl_gen.autoencoders.base import Autoencoder, check_output
from ppl_gen.core.errors import PplGenError, require_positive_int


class _Encoder(nn.Module):
    def __init__(self, shape: tuple[int, int], channels: tuple[int, int], latent_dim: int):
        super().__init__()
        h, w = shape
        c1, c2 = channels
        self.shape = shape
        self.net = nn.Sequential(
            nn.Conv2d(1, c1, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(c2 * (h // 4) * (w // 4), latent_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(-1, 1, *self.shape))


class _Decoder(nn.Module):
    def __init__(self, shape: tuple[int, int], channels: tuple[int, int], latent_dim: int):
        super().__init__()
        h, w = shape
        c1, c2 = channels
        self.features = (c2, h // 4, w // 4)
        self.fc = nn.Sequential(nn.Linear(latent_dim, c2 * (h // 4) * (w // 4)), nn.ReLU())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(c1, 1, 4, stride=2, padding=1),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.deconv(self.fc(h).reshape(-1, *self.features))
        return out.reshape(h.shape[0], -1)


class ConvAutoencoder(Autoencoder):
    """Convolutional encoder/decoder for ``(H, W)`` grey images, ``H`` and ``W`` multiples
    of 4.

    Args:
        image_shape: ``(H, W)``, e.g. ``(28, 28)`` or ``(8, 8)``.
        latent_dim: ``Z``.
        channels: ``(c1, c2)`` feature maps of the two convolutions.
        output: ``"sigmoid"`` or ``"linear"``.

    Shapes: ``x: (batch, H*W)`` (or ``(batch, H, W)``), ``h: (batch, Z)``.

    Raises:
        PplGenError: if ``image_shape`` is not ``(H, W)`` with sides divisible by 4
            (``arch="conv"``), or on non-positive sizes.
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (28, 28),
        latent_dim: int = 32,
        channels: Sequence[int] = (32, 64),
        output: str = "sigmoid",
    ) -> None:
        super().__init__()
        shape = tuple(int(s) for s in image_shape)
        if len(shape) != 2 or any(s < 4 or s % 4 for s in shape):
            raise PplGenError(
                "arch conv needs (H, W) grey images with H and W multiples of 4 "
                f"(e.g. 28x28 MNIST, 8x8 digits), got image shape {tuple(image_shape)}"
            )
        if len(channels) != 2:
            raise PplGenError(f"channels must be two positive integers, got {channels!r}")
        self.channels = tuple(require_positive_int("channels", int(c)) for c in channels)
        self.image_shape = shape
        self.data_dim = shape[0] * shape[1]
        self.latent_dim = require_positive_int("latent_dim", latent_dim)
        self.output = check_output(output)
        self.encoder = _Encoder(shape, self.channels, latent_dim)
        self.decoder = _Decoder(shape, self.channels, latent_dim)

    def spec(self) -> dict:
        return {
            "arch": "conv",
            "data_dim": self.data_dim,
            "latent_dim": self.latent_dim,
            "channels": list(self.channels),
            "output": self.output,
            "image_shape": list(self.image_shape),
        }
