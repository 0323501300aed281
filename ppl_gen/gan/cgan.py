"""Conditional GAN (Mirza & Osindero 2014): both networks see the class label through a
learned embedding.  The generator takes ``[z, embed(y)]``.  The discriminator gets the
label twice with the DCGAN body (28x28 / 32x32): as one extra input channel of the image
size, and through the projection of Miyato & Koyama 2018 (eq. 3),
``D(x, y) = psi(phi(x)) + <embed'(y), phi(x)>`` on its last features ``phi(x)``; with the
MLP body the embedding is concatenated to the flattened image."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.gan.dcgan import DCDiscriminator, DCGenerator
from ppl_gen.gan.init import init_weights_normal
from ppl_gen.gan.mlp_gan import check_image_shape, check_input, mlp_layers


def check_labels(y: torch.Tensor, num_classes: int, batch: int) -> None:
    """Raise :class:`PplGenError` unless ``y`` is ``(batch,)`` integers in 0..num_classes-1."""
    if y is None or y.dim() != 1 or y.shape[0] != batch or y.is_floating_point():
        raise PplGenError(f"labels must be an int64 tensor of shape ({batch},)")


class ConditionalGenerator(nn.Module):
    """``forward(z: (B, latent_dim), y: (B,) int64) -> x: (B, C, H, W)`` in [-1, 1].

    Args:
        latent_dim: dimension of ``z``.
        image_shape: ``(C, H, W)``; with ``arch="dcgan"`` H = W in {28, 32}.
        num_classes: number of labels K; ``embed: K -> K`` (as wide as a one-hot code).
        arch: ``"dcgan"`` (transposed convolutions, :class:`DCGenerator`) or ``"mlp"``.
        width: ``ngf`` for ``dcgan``; hidden widths for ``mlp`` are ``(width, 2 width)``.
    """

    def __init__(
        self,
        latent_dim: int,
        image_shape: Sequence[int],
        num_classes: int = 10,
        arch: str = "dcgan",
        width: int = 64,
    ) -> None:
        super().__init__()
        self.latent_dim = require_positive_int("latent_dim", latent_dim)
        self.num_classes = require_positive_int("num_classes", num_classes)
        self.image_shape = check_image_shape(image_shape)
        self.embed = nn.Embedding(num_classes, num_classes)
        if arch == "dcgan":
            self.body = DCGenerator(latent_dim, image_shape, width, in_dim=latent_dim + num_classes)
        elif arch == "mlp":
            sizes = [latent_dim + num_classes, width, 2 * width]
            self.body = nn.Sequential(
                *mlp_layers(sizes), nn.Linear(sizes[-1], math.prod(self.image_shape)), nn.Tanh()
            )
        else:
            raise PplGenError(f"arch must be dcgan or mlp, got {arch!r}")
        init_weights_normal(self)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_labels(y, self.num_classes, z.shape[0])
        out = self.body(torch.cat([z, self.embed(y)], dim=1))
        return out.view(z.shape[0], *self.image_shape)


class ConditionalDiscriminator(nn.Module):
    """``forward(x: (B, C, H, W), y: (B,) int64) -> logits (B,)``.

    Args:
        image_shape: ``(C, H, W)``.
        num_classes: number of labels K.
        arch: ``"dcgan"`` (label embedded to an ``H x W`` map appended as a channel, plus
            the projection term on the last features) or ``"mlp"`` (embedding of width K
            concatenated to the flattened image).
        width: ``ndf`` for ``dcgan``; hidden widths ``(2 width, width)`` for ``mlp``.
        batch_norm: ``dcgan`` only: batch norm in the body (off for WGAN-GP).
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        num_classes: int = 10,
        arch: str = "dcgan",
        width: int = 64,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.num_classes = require_positive_int("num_classes", num_classes)
        self.image_shape = check_image_shape(image_shape)
        c, h, w = self.image_shape
        self.arch = arch
        if arch == "dcgan":
            self.embed = nn.Embedding(num_classes, h * w)
            self.body = DCDiscriminator(
                image_shape, width, in_channels=c + 1, batch_norm=batch_norm
            )
            self.project = nn.Embedding(num_classes, self.body.feature_dim)
        elif arch == "mlp":
            self.embed = nn.Embedding(num_classes, num_classes)
            sizes = [c * h * w + num_classes, 2 * width, width]
            self.body = nn.Sequential(*mlp_layers(sizes), nn.Linear(sizes[-1], 1))
        else:
            raise PplGenError(f"arch must be dcgan or mlp, got {arch!r}")
        init_weights_normal(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_input(x, self.image_shape)
        check_labels(y, self.num_classes, x.shape[0])
        if self.arch == "dcgan":
            _, h, w = self.image_shape
            feats = self.body._body(torch.cat([x, self.embed(y).view(-1, 1, h, w)], dim=1))
            projection = (self.project(y) * feats.flatten(1)).sum(1)
            return self.body.head(feats).flatten() + projection
        return self.body(torch.cat([x.flatten(1), self.embed(y)], dim=1)).squeeze(1)
