"""DANN: feature extractor G_f, label predictor G_y and domain classifier G_d (Ganin et al.
JMLR 2016, sec. 4 and fig. 1).

``G_y(G_f(x))`` predicts the class; ``G_d(R_λ(G_f(x)))`` predicts the domain through the
gradient reversal layer, so training both heads with one SGD step makes the features
discriminative for the labels and indistinguishable between domains.

Architectures (:func:`build_dann`):

* ``"paper"`` -- the MNIST → MNIST-M network of the paper (sec. 5.2.2, fig. 4a):
  conv5x5-32, ReLU, max-pool 2x2, conv5x5-48, ReLU, max-pool 2x2 (768 features);
  label head FC100-ReLU-FC100-ReLU-FC10; domain head FC100-ReLU-FC1.
* ``"bn"`` -- the configurable network (:class:`ArchConfig`) with its defaults: the paper's
  layout with batch norm after every convolution and hidden layer, dropout 0.5 before the
  heads' output layers, and a wider domain head (FC500-FC500-FC1).  Trained with separate
  source and target forward passes (:class:`~ppl_gen.adaptation.dann_trainer.DANNConfig`
  ``separate_batches``), its batch norm normalises each domain with its own statistics.
  Any :class:`ArchConfig` can be passed instead of a name.

Inputs are ``(batch, C, 28, 28)`` images in [0, 1]; the model standardises them per
channel with buffers ``input_mean`` / ``input_std`` (set with :meth:`DANN.set_input_stats`),
so the normalisation travels with the checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ppl_gen.adaptation.gradient_reversal import GradientReversal
from ppl_gen.core.errors import PplGenError

ARCHS = ("paper", "bn")


@dataclass(frozen=True)
class ArchConfig:
    """A DANN network for ``image_size`` x ``image_size`` images.

    Attributes:
        in_channels: image channels C (3 for MNIST → MNIST-M, greyscale replicated).
        n_classes: label classes (10 digits).
        image_size: side of the square input (28).
        conv_channels: output channels of the conv5x5 + max-pool 2x2 blocks of G_f.
        kernel_size: convolution kernel side.
        batch_norm: batch norm after each convolution and hidden linear layer.
        dropout: dropout probability before the last layer of each head (0: none).
        label_hidden: hidden widths of G_y.
        domain_hidden: hidden widths of G_d.
    """

    in_channels: int = 3
    n_classes: int = 10
    image_size: int = 28
    conv_channels: tuple[int, ...] = (32, 48)
    kernel_size: int = 5
    batch_norm: bool = True
    dropout: float = 0.5
    label_hidden: tuple[int, ...] = (100, 100)
    domain_hidden: tuple[int, ...] = (500, 500)

    def validate(self) -> ArchConfig:
        """Check the sizes; returns ``self``.

        Raises:
            PplGenError: non-positive sizes, a dropout outside [0, 1), or an image that the
                convolutions shrink to nothing.
        """
        for name, value in (
            ("in_channels", self.in_channels),
            ("n_classes", self.n_classes),
            ("image_size", self.image_size),
            ("kernel_size", self.kernel_size),
        ):
            if value < 1:
                raise PplGenError(f"{name} must be a positive integer, got {value!r}")
        if not self.conv_channels or any(
            c < 1 for c in (*self.conv_channels, *self.label_hidden, *self.domain_hidden)
        ):
            raise PplGenError("conv_channels / label_hidden / domain_hidden must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise PplGenError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.feature_side() < 1:
            raise PplGenError(
                f"image size {self.image_size} is too small for {len(self.conv_channels)} "
                f"conv{self.kernel_size}x{self.kernel_size} + pool blocks"
            )
        return self

    def feature_side(self) -> int:
        """Side of G_f's output map (4 for 28x28 inputs and two blocks)."""
        side = self.image_size
        for _ in self.conv_channels:
            side = (side - self.kernel_size + 1) // 2
        return side

    def feature_dim(self) -> int:
        """Length of the flattened feature vector G_f(x) (768 for the paper network)."""
        return self.conv_channels[-1] * self.feature_side() ** 2


PAPER_ARCH = ArchConfig(
    conv_channels=(32, 48),
    batch_norm=False,
    dropout=0.0,
    label_hidden=(100, 100),
    domain_hidden=(100,),
)
BN_ARCH = ArchConfig()


def arch_config(arch: str | ArchConfig, in_channels: int = 3) -> ArchConfig:
    """The :class:`ArchConfig` for ``"paper"`` / ``"bn"`` (or ``arch`` itself), with
    ``in_channels`` set.

    Raises:
        PplGenError: unknown name (naming ``arch``).
    """
    if isinstance(arch, ArchConfig):
        config = arch
    elif arch == "paper":
        config = PAPER_ARCH
    elif arch == "bn":
        config = BN_ARCH
    else:
        raise PplGenError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    d = asdict(config)
    d["in_channels"] = in_channels
    d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return ArchConfig(**d).validate()


def _mlp(
    in_dim: int, hidden: Sequence[int], out_dim: int, bn: bool, dropout: float
) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if bn:
            layers.append(nn.BatchNorm1d(h))
        layers.append(nn.ReLU())
        width = h
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


def feature_extractor(config: ArchConfig) -> nn.Sequential:
    """G_f: ``(batch, C, H, W)`` → ``(batch, feature_dim)``; conv-[BN]-ReLU-maxpool blocks."""
    layers: list[nn.Module] = []
    channels = config.in_channels
    for out in config.conv_channels:
        layers.append(nn.Conv2d(channels, out, config.kernel_size))
        if config.batch_norm:
            layers.append(nn.BatchNorm2d(out))
        layers += [nn.ReLU(), nn.MaxPool2d(2)]
        channels = out
    layers.append(nn.Flatten())
    return nn.Sequential(*layers)


@dataclass
class DANNOutput:
    """One forward pass: ``features`` ``(batch, feature_dim)``, ``class_logits``
    ``(batch, n_classes)``, ``domain_logits`` ``(batch,)`` (logit of "target domain")."""

    features: torch.Tensor
    class_logits: torch.Tensor
    domain_logits: torch.Tensor = field(default=None)  # type: ignore[assignment]


class DANN(nn.Module):
    """G_f, G_y and G_d with a gradient reversal layer between G_f and G_d.

    Args:
        config: the network (:class:`ArchConfig`, validated).
        lambda_: fixed λ of the reversal layer, or ``None`` for the paper's schedule
            (driven by :meth:`set_progress`).
        gamma: γ of the λ schedule.
    """

    def __init__(
        self, config: ArchConfig, lambda_: float | None = None, gamma: float = 10.0
    ) -> None:
        super().__init__()
        self.config = config.validate()
        dim = config.feature_dim()
        self.feature = feature_extractor(config)
        self.label_head = _mlp(
            dim, config.label_hidden, config.n_classes, config.batch_norm, config.dropout
        )
        self.domain_head = _mlp(dim, config.domain_hidden, 1, config.batch_norm, config.dropout)
        self.grl = GradientReversal(lambda_, gamma)
        self.register_buffer("input_mean", torch.zeros(config.in_channels))
        self.register_buffer("input_std", torch.ones(config.in_channels))

    def set_input_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-channel standardisation ``(x - mean) / std`` applied to every input;
        ``mean``, ``std``: ``(C,)``."""
        self.input_mean.copy_(mean.to(self.input_mean))
        self.input_std.copy_(std.clamp_min(1e-6).to(self.input_std))

    def set_progress(self, progress: float) -> float:
        """Advance the λ schedule to progress ``p ∈ [0, 1]``; returns λ."""
        return self.grl.set_progress(progress)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """G_f: ``x`` ``(batch, C, H, W)`` in [0, 1] → ``(batch, feature_dim)``."""
        self._check_input(x)
        x = (x - self.input_mean[:, None, None]) / self.input_std[:, None, None]
        return self.feature(x)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """G_y ∘ G_f: ``(batch, C, H, W)`` → class logits ``(batch, n_classes)``."""
        return self.label_head(self.features(x))

    def forward(self, x: torch.Tensor, domain: bool = True) -> DANNOutput:
        """Features, class logits and (through R_λ) domain logits of ``x``
        ``(batch, C, H, W)``; ``domain=False`` skips G_d."""
        f = self.features(x)
        out = DANNOutput(features=f, class_logits=self.label_head(f))
        if domain:
            out.domain_logits = self.domain_head(self.grl(f)).squeeze(-1)
        return out

    def _check_input(self, x: torch.Tensor) -> None:
        c, s = self.config.in_channels, self.config.image_size
        if x.dim() != 4 or x.shape[1] != c or x.shape[2] != s or x.shape[3] != s:
            raise PplGenError(
                f"DANN input must be (batch, {c}, {s}, {s}) images, got {tuple(x.shape)}"
            )


def build_dann(
    arch: str | ArchConfig = "paper",
    in_channels: int = 3,
    lambda_: float | None = None,
    gamma: float = 10.0,
) -> DANN:
    """A :class:`DANN` with the ``"paper"`` or ``"bn"`` network (or an :class:`ArchConfig`).

    Raises:
        PplGenError: unknown ``arch`` or bad sizes.
    """
    return DANN(arch_config(arch, in_channels), lambda_=lambda_, gamma=gamma)
