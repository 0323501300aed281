"""A style-based generator (Karras et al. 2019, "A Style-Based Generator Architecture for
Generative Adversarial Networks", sec. 2 and fig. 1b) sized for 28x28 (and 32x32) images.

* **Mapping network** ``f: z -> w`` (:class:`MappingNetwork`): ``z`` normalised to unit
  RMS (pixel norm), then ``mapping_layers`` fully connected layers with LeakyReLU(0.2)
  (8 in the paper; 4 here), ``w`` as wide as ``z``, learning 100x slower than the rest
  (``lr_mul = 0.01``, appendix C).
* **Equalised learning rate** (:mod:`ppl_gen.gan.equalized`) on every layer, as in the
  paper: ``N(0, 1)`` weights scaled at run time by He's constant.  In particular the style
  affines ``A`` start at the He scale, so the styles move every layer's statistics by O(1)
  from the first step; with the usual small (N(0, 0.02)) initialisation all codes gave
  nearly the same image at the start and the benchmark's generator collapsed.
* **Synthesis network**: a learned constant ``(C0, 7, 7)`` input (4x4 for 32x32), then two
  style layers per resolution 7 -> 14 -> 28 (4 -> 8 -> 16 -> 32): 3x3 convolution (bilinear
  2x upsampling first at a new resolution; none on the constant), per-layer **noise input**
  ``x + s_c n`` with a single-channel ``n ~ N(0, 1)`` map and learned per-channel scales
  ``s_c`` (initialised to 0; sec. 3.2), LeakyReLU(0.2), and **AdaIN** (eq. 1)
  ``y_s (x - mu(x)) / sigma(x) + y_b`` with ``(y_s, y_b) = A(w)`` a learned affine map of
  ``w`` per layer (``y_s = 1 + ...``); a 1x1 convolution to C channels and tanh.
* **Style-mixing regularisation** (sec. 3.1): while training, with probability
  ``mixing_prob`` a batch uses two codes ``z1, z2``: the styles of layers ``< k`` come from
  ``w1 = f(z1)``, those from layer ``k`` on from ``w2 = f(z2)``, with the crossover layer
  ``k`` uniform in ``1 .. L - 1`` (one ``k`` per batch).  ``z2``, ``k`` and the noise maps
  are drawn from torch's global generator, which the engine seeds, checkpoints and restores,
  so a resumed run equals an uninterrupted one.

Noise modes: ``random`` (fresh maps, the training default), ``const`` (one fixed map per
layer, drawn at construction and stored as a buffer: the eval default, so samples for
figures and metrics are a function of ``z`` and draw nothing from the global generator) and
``none``.  The paper's progressive growing and truncation trick are not used (a 28x28
generator trains directly at full resolution).  Nothing here
imports Pyro.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ppl_gen.core.errors import PplGenError, require, require_positive_int
from ppl_gen.data.images import to_unit
from ppl_gen.gan.dcgan import check_dcgan_shape
from ppl_gen.gan.equalized import LRELU_GAIN, EqualizedConv2d, EqualizedLinear

NOISE_MODES = ("random", "const", "none")


class MappingNetwork(nn.Module):
    """``forward(z: (B, latent_dim)) -> w: (B, latent_dim)``: pixel norm, then
    ``n_layers`` x (equalised Linear with ``lr_mul``, LeakyReLU(0.2)) (Karras et al. 2019,
    sec. 2 and appendix C: ``lr_mul = 0.01``)."""

    def __init__(self, latent_dim: int, n_layers: int = 4, lr_mul: float = 0.01) -> None:
        super().__init__()
        require_positive_int("latent_dim", latent_dim)
        require_positive_int("mapping_layers", n_layers)
        layers: list[nn.Module] = []
        for _ in range(n_layers):
            layers.append(EqualizedLinear(latent_dim, latent_dim, gain=LRELU_GAIN, lr_mul=lr_mul))
            layers.append(nn.LeakyReLU(0.2))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        return self.net(z)


class NoiseInput(nn.Module):
    """``x + s * n``: a single-channel noise map ``n: (B, 1, H, W)`` scaled per channel by
    the learned ``s: (1, C, 1, 1)`` (zeros at start; Karras et al. 2019, fig. 1b "B")."""

    def __init__(self, channels: int, size: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("const_noise", torch.randn(1, 1, size, size))

    def forward(self, x: torch.Tensor, mode: str = "random") -> torch.Tensor:
        if mode == "none":
            return x
        if mode == "const":
            noise = self.const_noise.to(x.dtype).expand(x.shape[0], -1, -1, -1)
        else:
            noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)
        return x + self.scale * noise


class AdaIN(nn.Module):
    """Adaptive instance normalisation ``y_s (x - mu(x)) / sigma(x) + y_b`` per channel with
    ``(y_s - 1, y_b) = A w`` (Karras et al. 2019, eq. 1), ``A`` an equalised linear map
    (He-scaled, bias 0): ``forward(x: (B, C, H, W), w: (B, w_dim))``."""

    def __init__(self, channels: int, w_dim: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.affine = EqualizedLinear(w_dim, 2 * channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        scale, bias = self.affine(w).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        return (1.0 + scale) * self.norm(x) + bias


class StyleLayer(nn.Module):
    """One style layer: [2x bilinear upsampling,] [equalised 3x3 conv,] noise,
    LeakyReLU(0.2), AdaIN."""

    def __init__(
        self, cin: int, cout: int, size: int, w_dim: int, *, conv: bool, upsample: bool
    ) -> None:
        super().__init__()
        self.upsample = upsample
        self.conv = EqualizedConv2d(cin, cout, 3, gain=LRELU_GAIN) if conv else None
        self.noise = NoiseInput(cout, size)
        self.adain = AdaIN(cout, w_dim)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        if self.conv is not None:
            x = self.conv(x)
        return self.adain(F.leaky_relu(self.noise(x, noise_mode), 0.2), w)


class StyleGenerator(nn.Module):
    """``forward(z: (B, latent_dim)) -> x: (B, C, S, S)`` in [-1, 1], S = 28 or 32 (module
    docs).

    Args:
        latent_dim: dimension of ``z ~ N(0, I)`` and of ``w``.
        image_shape: ``(C, S, S)`` with C in {1, 3}, S in {28, 32}.
        ngf: channels of the finest resolution (doubled per coarser one: 28x28 uses
            ``4 ngf, 2 ngf, ngf`` at 7, 14, 28).
        mapping_layers: fully connected layers of the mapping network.
        mixing_prob: probability of style mixing per training batch (0: off; 0.9 in the
            paper).

    Attributes:
        num_layers: style layers ``L`` (6 for 28x28, 8 for 32x32); ``coarse_layers`` (2):
            those at the lowest resolution.

    Raises:
        PplGenError: an image shape other than 28x28 / 32x32, non-positive sizes, or
            ``mixing_prob`` outside [0, 1].
    """

    num_classes = None
    coarse_layers = 2

    def __init__(
        self,
        latent_dim: int,
        image_shape: Sequence[int],
        ngf: int = 32,
        mapping_layers: int = 4,
        mixing_prob: float = 0.9,
    ) -> None:
        super().__init__()
        self.latent_dim = require_positive_int("latent_dim", latent_dim)
        require_positive_int("ngf", ngf)
        require(0.0 <= mixing_prob <= 1.0, f"style_mixing must be in [0, 1], got {mixing_prob!r}")
        self.image_shape = check_dcgan_shape(image_shape)
        self.mixing_prob = float(mixing_prob)
        c, s, _ = self.image_shape
        base = 7 if s == 28 else 4
        n_up = 2 if s == 28 else 3
        widths = [ngf * 2 ** min(n_up - i, 2) for i in range(n_up + 1)]
        self.mapping = MappingNetwork(latent_dim, mapping_layers)
        self.const = nn.Parameter(torch.ones(1, widths[0], base, base))
        layers: list[StyleLayer] = []
        size = base
        for i, width in enumerate(widths):
            cin = widths[i - 1] if i else width
            if i:
                size *= 2
            layers.append(StyleLayer(cin, width, size, latent_dim, conv=i > 0, upsample=i > 0))
            layers.append(StyleLayer(width, width, size, latent_dim, conv=True, upsample=False))
        self.layers = nn.ModuleList(layers)
        self.to_image = EqualizedConv2d(widths[-1], c, 1)
        self.num_layers = len(layers)

    def styles(
        self,
        z: torch.Tensor,
        mix_z: torch.Tensor | None = None,
        crossover: int | None = None,
    ) -> torch.Tensor:
        """Per-layer styles ``ws: (B, L, latent_dim)``: ``f(z)`` for every layer, or with
        ``mix_z`` ``f(z)`` for layers ``< crossover`` and ``f(mix_z)`` from it on."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise PplGenError(f"z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        ws = self.mapping(z).unsqueeze(1).repeat(1, self.num_layers, 1)
        if mix_z is not None:
            k = self.num_layers // 2 if crossover is None else int(crossover)
            require(0 <= k <= self.num_layers, f"crossover must be in 0..{self.num_layers}")
            ws[:, k:] = self.mapping(mix_z).unsqueeze(1)
        return ws

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        """Images ``(B, C, S, S)`` in [-1, 1] from per-layer styles ``ws: (B, L, w_dim)``."""
        if noise_mode not in NOISE_MODES:
            raise PplGenError(f"noise_mode must be one of {', '.join(NOISE_MODES)}")
        x = self.const.expand(ws.shape[0], -1, -1, -1)
        for i, layer in enumerate(self.layers):
            x = layer(x, ws[:, i], noise_mode)
        return torch.tanh(self.to_image(x))

    def forward(
        self,
        z: torch.Tensor,
        mix_z: torch.Tensor | None = None,
        crossover: int | None = None,
        noise_mode: str | None = None,
    ) -> torch.Tensor:
        """Images from ``z``; while training, style mixing with probability
        ``mixing_prob`` when no ``mix_z`` is given (module docs).  ``noise_mode`` defaults to
        ``random`` in training and ``const`` in eval mode."""
        if mix_z is None and self.training and self.mixing_prob > 0:
            if float(torch.rand(())) < self.mixing_prob:
                mix_z = torch.randn(z.shape, device=z.device, dtype=z.dtype)
                crossover = int(torch.randint(1, self.num_layers, ()))
        mode = noise_mode or ("random" if self.training else "const")
        return self.synthesis(self.styles(z, mix_z, crossover), mode)


@torch.no_grad()
def style_mixing_grid(
    generator: StyleGenerator,
    z_coarse: torch.Tensor,
    z_fine: torch.Tensor,
    crossover: int | None = None,
) -> torch.Tensor:
    """The style-mixing figure of Karras et al. 2019 (fig. 3) as one image batch in [0, 1].

    Row ``r + 1`` starts with the image of ``z_coarse[r]``, column ``c + 1`` of the first row
    is the image of ``z_fine[c]``; cell ``(r + 1, c + 1)`` takes the coarse styles (layers
    ``< crossover``) from ``z_coarse[r]`` and the fine ones from ``z_fine[c]``.  The top-left
    cell is blank (white).  Save it with ``nrow = C + 1``.

    Args:
        generator: a :class:`StyleGenerator` (evaluated with the eval-mode constant noise).
        z_coarse: ``(R, latent_dim)``; z_fine: ``(C, latent_dim)``.
        crossover: first layer taking the fine code (default ``generator.coarse_layers``).

    Returns:
        ``((R + 1) (C + 1), channels, S, S)`` on the generator's device.
    """
    was = generator.training
    generator.eval()
    k = generator.coarse_layers if crossover is None else crossover
    n_rows, n_cols = z_coarse.shape[0], z_fine.shape[0]
    tops = to_unit(generator(z_fine))
    lefts = to_unit(generator(z_coarse))
    rows_z = z_coarse.repeat_interleave(n_cols, dim=0)
    cols_z = z_fine.repeat(n_rows, 1)
    mixed = to_unit(generator(rows_z, mix_z=cols_z, crossover=k))
    mixed = mixed.view(n_rows, n_cols, *tops.shape[1:])
    generator.train(was)
    blank = torch.ones_like(tops[:1])
    cells = [blank, tops]
    for r in range(n_rows):
        cells += [lefts[r : r + 1], mixed[r]]
    return torch.cat(cells)
