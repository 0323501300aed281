"""The fully connected GAN of Goodfellow et al. 2014: an MLP generator ``z -> x`` with a
tanh output and an MLP discriminator ``x -> logit`` with leaky ReLUs (as in the reference
implementations; the paper used maxout units and dropout)."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import nn

from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.gan.init import init_weights_normal
from ppl_gen.lvm.nets import mlp


def check_image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """Return ``image_shape`` as ``(C, H, W)`` with C in {1, 3}; raise :class:`PplGenError`
    otherwise."""
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or shape[0] not in (1, 3) or min(shape) < 1:
        raise PplGenError(
            f"image_shape must be (C, H, W) with C = 1 (grey) or 3 (colour), got {shape}"
        )
    return shape  # type: ignore[return-value]


def mlp_layers(sizes: Sequence[int], slope: float = 0.2) -> list[nn.Module]:
    """Linear layers between consecutive ``sizes`` with LeakyReLU(``slope``) after each
    (the hidden part of :func:`ppl_gen.lvm.nets.mlp`)."""
    if len(sizes) < 2:
        return []
    body = mlp(sizes[0], sizes[1:-1], sizes[-1], functools.partial(nn.LeakyReLU, slope))
    return [*body, nn.LeakyReLU(slope)]


class MLPGenerator(nn.Module):
    """``forward(z: (B, latent_dim)) -> x: (B, C, H, W)`` in [-1, 1] (tanh).

    Args:
        latent_dim: dimension of ``z ~ N(0, I)``.
        image_shape: ``(C, H, W)``, C = 1 or 3.
        hidden: widths of the hidden layers (LeakyReLU 0.2).
    """

    num_classes = None

    def __init__(
        self, latent_dim: int, image_shape: Sequence[int], hidden: Sequence[int] = (256, 512)
    ) -> None:
        super().__init__()
        self.latent_dim = require_positive_int("latent_dim", latent_dim)
        self.image_shape = check_image_shape(image_shape)
        d = math.prod(self.image_shape)
        self.net = nn.Sequential(
            *mlp_layers([latent_dim, *hidden]), nn.Linear(([latent_dim, *hidden])[-1], d), nn.Tanh()
        )
        init_weights_normal(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(z.shape[0], *self.image_shape)


class MLPDiscriminator(nn.Module):
    """``forward(x: (B, C, H, W)) -> logits (B,)``.

    Args:
        image_shape: ``(C, H, W)``, C = 1 or 3.
        hidden: widths of the hidden layers (LeakyReLU 0.2), e.g. ``(512, 256)``.
    """

    def __init__(self, image_shape: Sequence[int], hidden: Sequence[int] = (512, 256)) -> None:
        super().__init__()
        self.image_shape = check_image_shape(image_shape)
        d = math.prod(self.image_shape)
        self.net = nn.Sequential(*mlp_layers([d, *hidden]), nn.Linear(([d, *hidden])[-1], 1))
        init_weights_normal(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.image_shape)
        return self.net(x.flatten(1)).squeeze(1)


def check_input(x: torch.Tensor, image_shape: tuple[int, int, int]) -> None:
    """Raise :class:`PplGenError` unless ``x`` is ``(B, *image_shape)`` (channel count first,
    so grey data given to a colour model is named as such)."""
    if x.dim() != 4 or x.shape[1] != image_shape[0]:
        raise PplGenError(
            f"images have {x.shape[1] if x.dim() == 4 else '?'} channel(s) (shape "
            f"{tuple(x.shape)}) but the model expects {image_shape[0]}: shape (B, {image_shape[0]},"
            f" {image_shape[1]}, {image_shape[2]})"
        )
    if tuple(x.shape[1:]) != tuple(image_shape):
        raise PplGenError(
            f"images of shape {tuple(x.shape)} do not match the model's (B, *{image_shape})"
        )
