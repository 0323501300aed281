"""pix2pix networks (Isola et al. 2017, "Image-to-Image Translation with Conditional
Adversarial Networks", sec. 3.2 and appendix 6.1) sized for 28x28 images.

* :class:`UNetGenerator` -- an encoder-decoder with skip connections between mirrored
  layers (U-Net, Ronneberger et al. 2015; pix2pix sec. 3.2.1): ``n_down`` stride-2
  convolutions C_ngf-C_2ngf-C_4ngf... (LeakyReLU 0.2, instance norm except on the first and
  innermost layers), then as many transposed convolutions (ReLU, instance norm, dropout 0.5
  on the innermost ``n_dropout``), each decoder layer taking the concatenation of the
  previous decoder output and the mirrored encoder output; tanh output.  A 4x4 / stride-2 /
  padding-1 layer halves an even size; an odd one (7 on 28x28 digits) uses 3x3 / stride 2 /
  no padding (7 -> 3 -> 7), so 28 -> 14 -> 7 -> 3.  Dropout is active in training only
  (the paper keeps it at test time as its noise source; here translations are
  deterministic).
* :class:`PairDiscriminator` -- the PatchGAN of :class:`~ppl_gen.gan.cyclegan.
  PatchDiscriminator` on the channel concatenation ``(source, target)`` (pix2pix sec. 3.2.2:
  the discriminator judges the pair, so it checks that the output fits the input):
  ``forward(target, source) -> (B, 1, H', W')`` patch logits (argument order as a
  conditional discriminator ``D(x, *cond)`` of :func:`~ppl_gen.gan.steps.discriminator_step`).

Instance norm replaces the paper's batch norm (which it runs at batch size 1, where the two
coincide).  Nothing here imports Pyro.
"""

from __future__ import annotations

import torch
from torch import nn

from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.gan.cyclegan import PatchDiscriminator
from ppl_gen.gan.init import init_weights_normal
from ppl_gen.gan.mlp_gan import check_input


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


def _geometry(size: int) -> tuple[int, int, int]:
    """``(kernel, stride, padding)`` halving ``size`` (even: 4/2/1; odd: 3/2/0)."""
    return (4, 2, 1) if size % 2 == 0 else (3, 2, 0)


class _Level(nn.Module):
    """One U-Net level: ``down -> inner -> up``, its input concatenated to its output
    unless it is the outermost level."""

    def __init__(self, down: nn.Module, inner: nn.Module | None, up: nn.Module, outer: bool):
        super().__init__()
        self.down, self.inner, self.up, self.outer = down, inner, up, outer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.down(x)
        if self.inner is not None:
            h = self.inner(h)
        h = self.up(h)
        return h if self.outer else torch.cat([x, h], dim=1)


class UNetGenerator(nn.Module):
    """``forward(x: (B, in_channels, S, S)) -> (B, out_channels, S, S)`` in [-1, 1].

    Args:
        in_channels, out_channels: 1 (grey) or 3 (colour) each.
        image_size: S; each of the ``n_down`` halvings must leave at least 1 pixel.
        ngf: filters of the first layer (doubled per level, at most 8 ngf).
        n_down: encoder (and decoder) layers; 3 for 28x28 (28 -> 14 -> 7 -> 3).
        n_dropout: innermost decoder layers with dropout 0.5 (training only).

    Raises:
        PplGenError: channel counts other than 1 / 3, non-positive sizes, or an image too
            small for ``n_down`` halvings.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        image_size: int = 28,
        ngf: int = 32,
        n_down: int = 3,
        n_dropout: int = 1,
    ) -> None:
        super().__init__()
        for name, c in (("in_channels", in_channels), ("out_channels", out_channels)):
            if c not in (1, 3):
                raise PplGenError(f"{name} must be 1 (grey) or 3 (colour), got {c}")
        require_positive_int("ngf", ngf)
        require_positive_int("n_down", n_down)
        self.image_shape = (in_channels, image_size, image_size)
        sizes = [image_size]
        for _ in range(n_down):
            k, s, p = _geometry(sizes[-1])
            nxt = (sizes[-1] + 2 * p - k) // s + 1
            if nxt < 1:
                raise PplGenError(
                    f"n_down {n_down}: {image_size}x{image_size} images cannot be halved "
                    f"{n_down} times"
                )
            sizes.append(nxt)
        widths = [ngf * min(2**i, 8) for i in range(n_down)]
        block: nn.Module | None = None
        for i in reversed(range(n_down)):  # innermost first
            k, s, p = _geometry(sizes[i])
            outer, inner = i == 0, i == n_down - 1
            cin = in_channels if outer else widths[i - 1]
            down: list[nn.Module] = [] if outer else [nn.LeakyReLU(0.2, True)]
            down.append(nn.Conv2d(cin, widths[i], k, s, p, bias=outer or inner))
            if not (outer or inner):
                down.append(_norm(widths[i]))
            up_in = widths[i] if inner else 2 * widths[i]
            cout = out_channels if outer else cin
            up: list[nn.Module] = [nn.ReLU(True), nn.ConvTranspose2d(up_in, cout, k, s, p)]
            if outer:
                up.append(nn.Tanh())
            else:
                up.append(_norm(cout))
                if n_down - 1 - i < n_dropout:
                    up.append(nn.Dropout(0.5))
            block = _Level(nn.Sequential(*down), block, nn.Sequential(*up), outer)
        self.net = block
        init_weights_normal(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.image_shape)
        return self.net(x)


class PairDiscriminator(nn.Module):
    """PatchGAN on ``(source, target)`` pairs: ``forward(target: (B, C_t, S, S),
    source: (B, C_s, S, S)) -> (B, 1, S', S')`` patch logits.

    Args:
        source_channels, target_channels: 1 or 3 each.
        ndf, n_layers, image_size: as in :class:`~ppl_gen.gan.cyclegan.PatchDiscriminator`.
    """

    def __init__(
        self,
        source_channels: int,
        target_channels: int,
        ndf: int = 32,
        n_layers: int = 2,
        image_size: int = 28,
    ) -> None:
        super().__init__()
        self.patch = PatchDiscriminator(target_channels, ndf, n_layers, image_size)
        pair = source_channels + target_channels
        self.patch.net[0] = init_weights_normal(nn.Conv2d(pair, ndf, 4, 2, 1))
        self.patch.image_shape = (pair, image_size, image_size)
        self.source_shape = (source_channels, image_size, image_size)

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        check_input(source, self.source_shape)
        return self.patch(torch.cat([source, target], dim=1))
