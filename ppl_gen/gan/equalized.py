"""Equalised learning rate (Karras et al. 2018, "Progressive Growing of GANs", sec. 4.1;
used throughout Karras et al. 2019): weights are stored as ``N(0, 1)`` draws and scaled at
run time by He's constant ``c = gain / sqrt(fan_in)``, so that an adaptive optimiser such as
Adam, whose steps do not depend on a parameter's scale, changes every layer's effective
weights at the same relative speed.

``lr_mul`` (the mapping network's 0.01 in Karras et al. 2019, sec. 2 / appendix C) slows a
layer down: the stored weight is ``N(0, 1) / lr_mul`` and the run-time scale ``c * lr_mul``,
so the effective initial weights are unchanged while Adam's steps on them shrink by
``lr_mul``.  Nothing here imports Pyro.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ppl_gen.core.errors import require, require_positive_int

#: Gain of a layer followed by LeakyReLU(0.2) or ReLU (He et al. 2015).
LRELU_GAIN = math.sqrt(2.0)


def _check_gain(gain: float) -> None:
    require(gain > 0, f"gain must be positive, got {gain!r}")


class EqualizedLinear(nn.Module):
    """``forward(x: (..., in_features)) -> (..., out_features)``:
    ``x (w c lr_mul)^T + b lr_mul`` with ``w ~ N(0, 1) / lr_mul`` at initialisation,
    ``c = gain / sqrt(in_features)`` and ``b = bias_init / lr_mul``.

    Raises:
        PplGenError: non-positive sizes, ``lr_mul`` or ``gain``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        gain: float = 1.0,
        lr_mul: float = 1.0,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        require_positive_int("in_features", in_features)
        require_positive_int("out_features", out_features)
        require(lr_mul > 0, f"lr_mul must be positive, got {lr_mul!r}")
        _check_gain(gain)
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul))
        self.scale = gain / math.sqrt(in_features) * lr_mul
        self.lr_mul = float(lr_mul)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class EqualizedConv2d(nn.Module):
    """``forward(x: (B, C_in, H, W)) -> (B, C_out, H, W)``: a stride-1 ``kernel x kernel``
    convolution (zero padding ``kernel // 2``) with weights ``w c``, ``w ~ N(0, 1)``,
    ``c = gain / sqrt(C_in kernel^2)``, bias 0 at initialisation.

    Raises:
        PplGenError: non-positive sizes or ``gain``, or an even ``kernel``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, *, gain: float = 1.0):
        super().__init__()
        require_positive_int("in_channels", in_channels)
        require_positive_int("out_channels", out_channels)
        require_positive_int("kernel", kernel)
        require(kernel % 2 == 1, f"kernel must be odd, got {kernel}")
        _check_gain(gain)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = gain / math.sqrt(in_channels * kernel * kernel)
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)
