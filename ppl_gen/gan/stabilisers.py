"""Stabilisers shared by every adversarial trainer (MLP GAN, DCGAN, cGAN, StyleGAN,
CycleGAN, pix2pix):

* the hinge loss (``loss="hinge"``, :class:`~ppl_gen.gan.losses.GANLoss`; Lim & Ye 2017);
* **spectral normalisation** of the discriminator's convolution and linear layers
  (Miyato et al. 2018): each weight is divided by its largest singular value, estimated by
  one power iteration per training forward pass
  (:func:`torch.nn.utils.parametrizations.spectral_norm`), so every layer is 1-Lipschitz;
* the **R1 penalty** ``gamma / 2 E_real[||grad_x D(x)||^2]`` on real data (Mescheder et al.
  2018, eq. 9; :func:`~ppl_gen.gan.losses.r1_penalty`) added to the discriminator's loss;
* a generator **EMA** (Karras et al. 2018, sec. 3 / Yazici et al. 2019): after every
  generator step ``theta_ema <- d_t theta_ema + (1 - d_t) theta`` (buffers such as batch-norm
  statistics averaged the same way) with the warmed-up decay ``d_t = min(beta, (1 + t) /
  (10 + t))`` after ``t`` earlier updates (the ``num_updates`` rule of TensorFlow's
  ``ExponentialMovingAverage``), so a short run is not dominated by the initial weights
  (with a fixed ``beta = 0.999`` the first generator would keep weight ``0.999^T``: 79% after
  234 steps); kept by :class:`torch.optim.swa_utils.AveragedModel`; the average is what
  samples, figures and metrics use, and it is saved in checkpoints (``generator_ema``).

:class:`Stabilisers` holds the three settings (``spectral_norm``, ``r1``, ``ema``); the
trainers' configs inherit it.  With more than one process, R1 is refused like WGAN-GP (its
double backward is not supported by ``DistributedDataParallel``).  Nothing here imports Pyro.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm
from torch.optim.swa_utils import AveragedModel

from ppl_gen.core.errors import PplGenError

_SN_LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


@dataclass
class Stabilisers:
    """The stabiliser settings every adversarial config carries.

    Attributes:
        spectral_norm: spectral normalisation of every convolution / linear layer of the
            discriminator(s).
        r1: ``gamma`` of the R1 penalty on real data (0: off; Mescheder et al. use 10).
        ema: decay ``beta`` of the generator EMA, in [0, 1) (0: off; e.g. 0.999).
    """

    spectral_norm: bool = False
    r1: float = 0.0
    ema: float = 0.0

    def validate_stabilisers(self) -> None:
        """Raise :class:`PplGenError` naming ``spectral_norm``, ``r1`` or ``ema``."""
        if not isinstance(self.spectral_norm, bool):
            raise PplGenError(f"spectral_norm must be true or false, got {self.spectral_norm!r}")
        for name, value in (("r1", self.r1), ("ema", self.ema)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise PplGenError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise PplGenError(f"{name} must be finite, got {value!r}")
        if self.r1 < 0:
            raise PplGenError(f"r1 must be >= 0 (the R1 gamma; 0: off), got {self.r1!r}")
        if not 0 <= self.ema < 1:
            raise PplGenError(f"ema must be in [0, 1) (the EMA decay; 0: off), got {self.ema!r}")


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectrally normalise, in place, the ``weight`` of every ``Conv2d``,
    ``ConvTranspose2d`` and ``Linear`` layer of ``module`` (Miyato et al. 2018, eq. 8) with
    :func:`torch.nn.utils.parametrizations.spectral_norm` (one power iteration per training
    forward; the power-iteration vectors are buffers, saved with the weights).  Layers
    already parametrised are left alone.  Returns ``module``."""
    for layer in list(module.modules()):
        if isinstance(layer, _SN_LAYERS) and not parametrize.is_parametrized(layer, "weight"):
            dim = 1 if isinstance(layer, nn.ConvTranspose2d) else 0
            spectral_norm(layer, dim=dim)
    return module


def warmed_up_decay(beta: float, t: int) -> float:
    """The EMA decay after ``t`` earlier updates: ``min(beta, (1 + t) / (10 + t))``."""
    return min(beta, (1.0 + t) / (10.0 + t))


def _ema_update(beta: float):
    @torch.no_grad()
    def update(ema: list[torch.Tensor], current: list[torch.Tensor], n_averaged) -> None:
        # AveragedModel copies on its first call; later calls come here with t >= 1
        decay = warmed_up_decay(beta, int(n_averaged))
        for p_ema, p in zip(ema, current, strict=True):
            if p_ema.is_floating_point():
                p_ema.lerp_(p, 1.0 - decay)
            else:  # integer buffers (batch-norm counters): the current value
                p_ema.copy_(p)

    return update


class GeneratorEMA:
    """Exponential moving average of a generator's parameters and buffers.

    ``update(generator)`` after each generator step: the first call copies the weights,
    the ``(t + 1)``-th sets ``p_ema <- d p_ema + (1 - d) p`` with ``d =``
    :func:`warmed_up_decay` ``(decay, t)``.  ``module`` is the averaged copy
    (kept in eval mode; call it as the generator).  ``state_dict`` / ``load_state_dict`` make
    it a checkpoint component; :func:`ema_weights` turns a saved state into the generator's
    own ``state_dict``.

    Args:
        generator: the trained network (deep-copied; not modified).
        decay: ``beta`` in (0, 1).
    """

    def __init__(self, generator: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.averaged = AveragedModel(
            generator, multi_avg_fn=_ema_update(self.decay), use_buffers=True
        )
        self.averaged.eval()

    @property
    def module(self) -> nn.Module:
        """The averaged generator (eval mode)."""
        return self.averaged.module

    @torch.no_grad()
    def update(self, generator: nn.Module) -> None:
        """Fold the current ``generator`` weights into the average."""
        self.averaged.update_parameters(generator)

    def state_dict(self) -> dict[str, Any]:
        return self.averaged.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.averaged.load_state_dict(state)


def ema_weights(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The generator ``state_dict`` inside a saved :class:`GeneratorEMA` state (the
    ``module.`` prefix removed, the update counter dropped)."""
    prefix = "module."
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def maybe_ema(generator: nn.Module, decay: float) -> GeneratorEMA | None:
    """A :class:`GeneratorEMA` of ``generator`` when ``decay > 0``, else ``None``."""
    return GeneratorEMA(generator, decay) if decay > 0 else None


def sampling_copy(generator: nn.Module, ema: GeneratorEMA | None) -> nn.Module:
    """The network that draws samples: the EMA's average when there is one, else
    ``generator`` itself."""
    return ema.module if ema is not None else generator


def plain_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` (e.g. to hand back an EMA generator detached from its
    averaging wrapper)."""
    return copy.deepcopy(module)
