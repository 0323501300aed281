"""The GAN objective in its three common forms, with targets built on the prediction's
device.

* ``vanilla`` -- the minimax objective of Goodfellow et al. 2014 (eq. 1) on logits with
  binary cross-entropy; the generator uses the *non-saturating* loss ``-log D(G(z))``
  (sec. 3 of the paper), i.e. BCE against the "real" target.
* ``lsgan`` -- least squares (Mao et al. 2017, eq. 2 with a=0, b=c=1), as used by CycleGAN.
* ``wgan-gp`` -- Wasserstein critic loss ``E[D(fake)] - E[D(real)]`` with the gradient
  penalty ``lambda * E[(||grad D(x_hat)||_2 - 1)^2]`` on random interpolates (Gulrajani et
  al. 2017, algorithm 1).
* ``hinge`` -- ``E[max(0, 1 - D(real))] + E[max(0, 1 + D(fake))]`` for the discriminator and
  ``-E[D(G(z))]`` for the generator (Lim & Ye 2017; Miyato et al. 2018, eq. 16-17).

:func:`r1_penalty` is the R1 regulariser ``E_real[||grad_x D(x)||^2]`` of Mescheder et al.
2018 (eq. 9, without the ``gamma / 2`` factor).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ppl_gen.core.errors import PplGenError

LOSS_MODES = ("vanilla", "lsgan", "wgan-gp", "hinge")


def check_loss_mode(mode: str) -> str:
    """Return ``mode`` if it is one of :data:`LOSS_MODES`, else raise :class:`PplGenError`
    naming ``--loss``."""
    if mode not in LOSS_MODES:
        raise PplGenError(f"loss must be one of {', '.join(LOSS_MODES)}, got {mode!r}")
    return mode


class GANLoss(nn.Module):
    """``loss(prediction, target_is_real, generator=False)`` → scalar mean loss.

    Args:
        mode: ``"vanilla"``, ``"lsgan"``, ``"wgan-gp"`` or ``"hinge"`` (module docstring).

    ``prediction`` is the discriminator's raw output of any shape (logits for ``vanilla``;
    a PatchGAN map works too); the target tensor is built with ``full_like``, so it lives on
    the prediction's device and dtype.  For the generator step call it with
    ``target_is_real=True`` on the discriminator's output for fakes (non-saturating loss)
    and ``generator=True``: only ``hinge`` uses it (its generator loss ``-E[D(G(z))]`` is
    not its discriminator's loss on a "real" target); the other modes ignore it.

    Raises:
        PplGenError: unknown ``mode`` (naming ``--loss``).
    """

    def __init__(self, mode: str = "vanilla") -> None:
        super().__init__()
        self.mode = check_loss_mode(mode)

    def forward(
        self, prediction: torch.Tensor, target_is_real: bool, generator: bool = False
    ) -> torch.Tensor:
        if self.mode == "hinge":
            if generator:
                return -prediction.mean()
            sign = -1.0 if target_is_real else 1.0
            return F.relu(1.0 + sign * prediction).mean()
        if self.mode == "wgan-gp":
            return -prediction.mean() if target_is_real else prediction.mean()
        target = torch.full_like(prediction, 1.0 if target_is_real else 0.0)
        if self.mode == "vanilla":
            return F.binary_cross_entropy_with_logits(prediction, target)
        return F.mse_loss(prediction, target)


def gradient_penalty(
    critic: Callable[..., torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    *extra: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WGAN-GP penalty ``E[(||grad_x D(x_hat)||_2 - 1)^2]`` (Gulrajani et al. 2017, eq. 3,
    without the lambda factor).

    Args:
        critic: the discriminator; called as ``critic(x_hat, *extra)`` (``extra``: e.g. the
            labels of a conditional critic).
        real, fake: ``(B, C, H, W)`` (or ``(B, D)``) batches of the same shape; ``fake`` is
            detached here.
        generator: random stream for the interpolation weights ``eps ~ U(0, 1)`` of shape
            ``(B, 1, ..., 1)``, drawn on the stream's device (``real``'s without one) and
            moved to ``real``'s.

    Returns:
        Scalar tensor with a graph, so its gradient reaches the critic's parameters.
    """
    if real.shape != fake.shape:
        raise PplGenError(
            f"gradient_penalty: real {tuple(real.shape)} and fake {tuple(fake.shape)} differ"
        )
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    where = generator.device if generator is not None else real.device
    eps = torch.rand(shape, device=where, dtype=real.dtype, generator=generator).to(real.device)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    out = critic(x_hat, *extra)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()


def r1_from_output(output: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """``E[||grad_x D(x)||_2^2]`` over the batch, from ``output = D(real)`` computed with
    ``real.requires_grad``; the result keeps its graph (create_graph), so its gradient
    reaches the discriminator's parameters."""
    (grad,) = torch.autograd.grad(output.float().sum(), real, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean()


def r1_penalty(
    critic: Callable[..., torch.Tensor], real: torch.Tensor, *extra: torch.Tensor
) -> torch.Tensor:
    """R1 penalty ``E_{x ~ data}[||grad_x D(x)||_2^2]`` on real images (Mescheder et al.
    2018, eq. 9; the trainers add ``gamma / 2`` times it to the discriminator's loss).

    Args:
        critic: the discriminator, called as ``critic(x, *extra)``; any output shape (a
            PatchGAN map is summed per image, as its loss averages it).
        real: ``(B, C, H, W)`` (or ``(B, D)``) real inputs; detached here.

    Returns:
        Scalar tensor with a graph (squared input-gradient norm, averaged over the batch).
    """
    x = real.detach().requires_grad_(True)
    return r1_from_output(critic(x, *extra), x)
