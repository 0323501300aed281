"""CycleGAN networks (Zhu et al. 2017, sec. 4 and appendix 7.2) sized for small images.

* :class:`ResnetGenerator` -- c7s1-ngf, two stride-2 downsamplings, ``n_blocks`` residual
  blocks, two fractionally strided upsamplings, c7s1-C with tanh; reflection padding and
  instance norm (Johnson et al. 2016; Ulyanov et al. 2016).  On 28x28 images the residual
  blocks work at 7x7.
* :class:`PatchDiscriminator` -- the 70x70 PatchGAN of pix2pix (Isola et al. 2017) with
  fewer layers: C64-C128-C256 (4x4 convolutions, LeakyReLU 0.2, instance norm from the
  second layer) and a 1-channel output map of per-patch logits.  With ``n_layers=2`` on a
  28x28 image it scores 5x5 overlapping patches of 22x22 pixels.
"""

from __future__ import annotations

import torch
from torch import nn

from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.gan.init import init_weights_normal
from ppl_gen.gan.mlp_gan import check_input


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class ResnetBlock(nn.Module):
    """``x + conv-IN-ReLU-conv-IN(x)`` with reflection padding, shape preserved."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=False),
            _norm(channels),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=False),
            _norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """``forward(x: (B, in_channels, H, W)) -> (B, out_channels, H, W)`` in [-1, 1].

    Args:
        in_channels, out_channels: 1 (grey) or 3 (colour) each.
        ngf: filters of the first layer (doubled at each downsampling).
        n_blocks: residual blocks at the bottleneck (6 for 128x128 in the paper).
        image_size: H = W, divisible by ``2 ** n_down``.
        n_down: stride-2 downsamplings before the residual blocks (2 in the paper; 1 keeps
            a 14x14 bottleneck for 28x28 digits, at the same cost per block).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        ngf: int = 32,
        n_blocks: int = 6,
        image_size: int = 28,
        n_down: int = 2,
    ) -> None:
        super().__init__()
        for ch in (in_channels, out_channels):
            if ch not in (1, 3):
                raise PplGenError(f"channels must be 1 (grey) or 3 (colour), got {ch}")
        require_positive_int("ngf", ngf)
        require_positive_int("n_blocks", n_blocks)
        if n_down not in (1, 2, 3):
            raise PplGenError(f"n_down must be 1, 2 or 3, got {n_down!r}")
        if image_size % 2**n_down:
            raise PplGenError(
                f"cyclegan needs an image size divisible by {2**n_down} (n_down {n_down}), "
                f"got {image_size}"
            )
        self.image_shape = (in_channels, image_size, image_size)
        self.out_channels = out_channels
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, 7, bias=False),
            _norm(ngf),
            nn.ReLU(True),
        ]
        mults = [2**i for i in range(n_down)]
        for mult in mults:
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, 3, 2, 1, bias=False),
                _norm(ngf * mult * 2),
                nn.ReLU(True),
            ]
        layers += [ResnetBlock(ngf * 2**n_down) for _ in range(n_blocks)]
        for mult in reversed([2 * m for m in mults]):
            layers += [
                nn.ConvTranspose2d(
                    ngf * mult, ngf * mult // 2, 3, 2, 1, output_padding=1, bias=False
                ),
                _norm(ngf * mult // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_weights_normal(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.image_shape)
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """``forward(x: (B, C, H, W)) -> patch logits (B, 1, H', W')``.

    Args:
        in_channels: 1 or 3.
        ndf: filters of the first layer (doubled per layer, at most 8 ndf).
        n_layers: stride-2 layers (3 in the 70x70 PatchGAN; 2 suits 28x28).
        image_size: H = W of the inputs (checked).
    """

    def __init__(
        self, in_channels: int, ndf: int = 32, n_layers: int = 2, image_size: int = 28
    ) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise PplGenError(f"channels must be 1 (grey) or 3 (colour), got {in_channels}")
        require_positive_int("ndf", ndf)
        require_positive_int("n_layers", n_layers)
        self.image_shape = (in_channels, image_size, image_size)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        ch = ndf
        for i in range(1, n_layers + 1):
            nxt = ndf * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [
                nn.Conv2d(ch, nxt, 4, stride, 1, bias=False),
                _norm(nxt),
                nn.LeakyReLU(0.2, True),
            ]
            ch = nxt
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        init_weights_normal(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.image_shape)
        return self.net(x)
