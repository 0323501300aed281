"""DCGAN (Radford et al. 2016, sec. 3 and fig. 1) sized for 28x28 (MNIST) and 32x32 images:
strided (transposed) convolutions instead of pooling, batch norm in both networks (not on
the generator output nor the discriminator input), ReLU in the generator with a tanh
output, LeakyReLU(0.2) in the discriminator, N(0, 0.02) initialisation.  The number of
channels (1 grey, 3 colour) comes from the data."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.gan.init import init_weights_normal
from ppl_gen.gan.mlp_gan import check_image_shape, check_input

DCGAN_SIZES = (28, 32)


def check_dcgan_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """``(C, H, W)`` with H = W in {28, 32}; else :class:`PplGenError`."""
    shape = check_image_shape(image_shape)
    if shape[1] != shape[2] or shape[1] not in DCGAN_SIZES:
        raise PplGenError(
            f"dcgan needs 28x28 or 32x32 images, got {shape[1]}x{shape[2]} (use model gan "
            "for other sizes)"
        )
    return shape


def _up(cin: int, cout: int) -> list[nn.Module]:
    return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]


class DCGenerator(nn.Module):
    """``forward(z: (B, latent_dim)) -> x: (B, C, S, S)`` in [-1, 1], S = 28 or 32.

    28x28: z → 7x7x(4 ngf) → 14x14x(2 ngf) → 28x28xC.  32x32: z → 4x4x(4 ngf) → 8x8x(2 ngf)
    → 16x16x(ngf) → 32x32xC.

    Args:
        latent_dim: dimension of ``z ~ N(0, I)``.
        image_shape: ``(C, S, S)`` with C in {1, 3}, S in {28, 32}.
        ngf: base number of generator filters.
        in_dim: input width if it differs from ``latent_dim`` (the conditional GAN feeds
            ``[z, embedding(y)]``).
    """

    num_classes = None

    def __init__(
        self, latent_dim: int, image_shape: Sequence[int], ngf: int = 64, in_dim: int | None = None
    ) -> None:
        super().__init__()
        self.latent_dim = require_positive_int("latent_dim", latent_dim)
        require_positive_int("ngf", ngf)
        self.image_shape = check_dcgan_shape(image_shape)
        c, s, _ = self.image_shape
        start = 7 if s == 28 else 4
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(in_dim or latent_dim, ngf * 4, start, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            *_up(ngf * 4, ngf * 2),
        ]
        last = ngf * 2
        if s == 32:
            layers += _up(ngf * 2, ngf)
            last = ngf
        layers += [nn.ConvTranspose2d(last, c, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_weights_normal(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.reshape(z.shape[0], -1, 1, 1))


class DCDiscriminator(nn.Module):
    """``forward(x: (B, C, S, S)) -> logits (B,)``.

    28x28: → 14x14x(ndf) → 7x7x(2 ndf) → 1.  32x32: → 16 → 8 → 4x4x(4 ndf) → 1.

    Args:
        image_shape: ``(C, S, S)`` with C in {1, 3}, S in {28, 32}.
        ndf: base number of discriminator filters.
        in_channels: input channels if they differ from C (the conditional GAN appends a
            label map).
        batch_norm: use batch norm (off for the WGAN-GP critic, whose penalty is per sample;
            Gulrajani et al. 2017, sec. 4).
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        ndf: int = 64,
        in_channels: int | None = None,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        require_positive_int("ndf", ndf)
        self.image_shape = check_dcgan_shape(image_shape)
        c, s, _ = self.image_shape

        def down(cin: int, cout: int) -> list[nn.Module]:
            norm = [nn.BatchNorm2d(cout)] if batch_norm else []
            return [
                nn.Conv2d(cin, cout, 4, 2, 1, bias=not batch_norm),
                *norm,
                nn.LeakyReLU(0.2, True),
            ]

        layers: list[nn.Module] = [
            nn.Conv2d(in_channels or c, ndf, 4, 2, 1),
            nn.LeakyReLU(0.2, True),
        ]
        layers += down(ndf, ndf * 2)
        last, size = ndf * 2, 7
        if s == 32:
            layers += down(ndf * 2, ndf * 4)
            last, size = ndf * 4, 4
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(last, 1, size, 1, 0)
        self.feature_dim = last * size * size
        init_weights_normal(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Activations before the last layer, ``(B, feature_dim)``."""
        return self._body(x).flatten(1)

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        c_in, s = self.body[0].in_channels, self.image_shape[1]
        if x.dim() != 4 or tuple(x.shape[1:]) != (c_in, s, s):
            check_input(x, (c_in, s, s))
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._body(x)).flatten()
