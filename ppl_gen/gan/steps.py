"""The optimisation steps of the adversarial trainers, shared by :mod:`ppl_gen.gan.trainer`
and :mod:`ppl_gen.gan.cycle_trainer`: noise, one discriminator update, one generator update
with the discriminator frozen, the Adam pair, the index batches of an epoch and the checks
of a data-parallel run.

* :func:`discriminator_step` -- ``L_D = loss(D(x), real) + loss(D(G(z).detach()), fake)``
  (+ ``gp_weight`` x the WGAN-GP gradient penalty, Gulrajani et al. 2017, algorithm 1;
  + ``gamma / 2`` x the R1 penalty on the real batch, Mescheder et al. 2018, eq. 9);
* :func:`generator_step` -- the non-saturating ``loss(D(G(z)), real)`` (Goodfellow et al.
  2014, sec. 3; ``-E[D(G(z))]`` for hinge) with D frozen (``requires_grad_(False)``);
* Adam(``lr``, ``(beta1, beta2)``) for each network (Radford et al. 2016, sec. 4).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ppl_gen.core import precision as amp
from ppl_gen.core.distributed import DistributedContext
from ppl_gen.core.errors import PplGenError
from ppl_gen.data.datasets import iterate_minibatches
from ppl_gen.gan.losses import GANLoss, gradient_penalty, r1_from_output


def sample_noise(
    n: int, latent_dim: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """``z: (n, latent_dim)`` ~ N(0, I) drawn from ``generator`` on its own device (the
    trainers' streams are CPU generators, so a seed gives the same noise on every device
    and a run can resume on another device), then moved to ``device``."""
    z = torch.randn(n, latent_dim, generator=generator, device=generator.device)
    return z.to(device, non_blocking=True)


def discriminator_step(
    discriminator: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: GANLoss,
    real: torch.Tensor,
    fake: torch.Tensor,
    cond: tuple[torch.Tensor, ...] = (),
    gp_weight: float = 10.0,
    gp_generator: torch.Generator | None = None,
    precision: str = "fp32",
    r1_gamma: float = 0.0,
) -> torch.Tensor:
    """One update of the discriminator; returns its loss (detached scalar).

    Args:
        real: ``(B, C, H, W)`` real images in [-1, 1].
        fake: ``(B, C, H, W)`` generator outputs; detached here.
        cond: extra inputs of a conditional discriminator, e.g. ``(labels,)``.
        gp_weight: lambda of the gradient penalty (``wgan-gp`` only).
        gp_generator: random stream of the penalty's interpolation weights.
        precision: ``fp32`` or ``bf16`` (the forward passes under ``torch.autocast``).
        r1_gamma: ``gamma`` of the R1 penalty (0: off), from the same forward pass on
            ``real``.
    """
    fake = fake.detach()
    if r1_gamma:
        real = real.detach().requires_grad_(True)
    with amp.autocast(precision, real.device):
        d_real = discriminator(real, *cond)
        loss = loss_fn(d_real, True) + loss_fn(discriminator(fake, *cond), False)
    if r1_gamma:
        loss = loss + 0.5 * r1_gamma * r1_from_output(d_real, real)
    if loss_fn.mode == "wgan-gp" and gp_weight:
        gp = gradient_penalty(discriminator, real, fake, *cond, generator=gp_generator)
        loss = loss + gp_weight * gp
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def generator_step(
    discriminator: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: GANLoss,
    fake: torch.Tensor,
    cond: tuple[torch.Tensor, ...] = (),
    precision: str = "fp32",
) -> torch.Tensor:
    """One update of the generator with the non-saturating loss ``loss(D(G(z)), real)``.

    The discriminator is frozen (``requires_grad_(False)``) for the backward pass and
    unfrozen afterwards, so its ``.grad`` is untouched.  ``fake`` must carry the graph back
    to the generator.  Returns the loss (detached scalar).
    """
    discriminator.requires_grad_(False)
    try:
        with amp.autocast(precision, fake.device):
            loss = loss_fn(discriminator(fake, *cond), True, generator=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    finally:
        discriminator.requires_grad_(True)
    return loss.detach()


def make_optimizers(
    generator: nn.Module, discriminator: nn.Module, config: Any
) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Adam(``config.lr``, ``(config.beta1, config.beta2)``) for each network (``config``: a
    :class:`~ppl_gen.gan.trainer.GANConfig`; the generator's at ``config.g_lr`` when that is
    set)."""
    betas = (config.beta1, config.beta2)
    g_lr = getattr(config, "g_lr", None) or config.lr
    return (
        torch.optim.Adam(generator.parameters(), lr=g_lr, betas=betas),
        torch.optim.Adam(discriminator.parameters(), lr=config.lr, betas=betas),
    )


def check_data_parallel(config: Any, ctx: DistributedContext, gp: bool = True) -> None:
    """Refuse settings a data-parallel GAN step cannot run (see the module docs).

    Raises:
        PplGenError: ``wgan-gp`` (when ``gp``), an R1 penalty, or a ``batch_size`` that is
            not a multiple of the number of processes.
    """
    if not ctx.distributed:
        return
    if getattr(config, "r1", 0):
        raise PplGenError(
            f"r1 {config.r1}: the R1 penalty cannot run on {ctx.world_size} processes: it "
            "needs a double backward, which DistributedDataParallel does not support (use r1 "
            "0 or one process)"
        )
    if gp and config.loss == "wgan-gp":
        raise PplGenError(
            f"loss wgan-gp cannot run on {ctx.world_size} processes: its gradient penalty "
            "needs a double backward, which DistributedDataParallel does not support "
            "(use loss vanilla or lsgan, or one process)"
        )
    if config.batch_size % ctx.world_size:
        raise PplGenError(
            f"batch_size {config.batch_size} must be a multiple of the {ctx.world_size} "
            "processes (every process takes an equal part of each batch)"
        )


class IndexBatches:
    """The index batches ``(batch_size,)`` of one epoch, drawn from ``generator`` when
    iterated (a fresh permutation of ``range(n)``, incomplete last batch dropped); has a
    length, for the progress bar."""

    def __init__(
        self, n: int, batch_size: int, generator: torch.Generator, device: torch.device
    ) -> None:
        self.n, self.batch_size, self.generator, self.device = n, batch_size, generator, device

    def __len__(self) -> int:
        return self.n // self.batch_size

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iterate_minibatches(
            self.n, self.batch_size, generator=self.generator, device=self.device, drop_last=True
        )


def gan_streams(seed: int) -> dict[str, torch.Generator]:
    """The GAN task's CPU streams ``shuffle``, ``noise``, ``penalty`` from ``seed``."""
    # CPU streams: the same draws on every device, and a checkpoint resumes on any device
    return {
        "shuffle": torch.Generator().manual_seed(seed),
        "noise": torch.Generator().manual_seed(seed + 1),
        "penalty": torch.Generator().manual_seed(seed + 2),
    }


def fixed_inputs(config: Any, device: torch.device, num_classes: int | None):
    """The fixed noise (and labels) of the per-epoch sample grid: ``(z, cond, nrow)``."""
    g = torch.Generator().manual_seed(config.seed + 1000)
    if config.model == "cgan":
        per = 8
        labels = torch.arange(num_classes, device=device).repeat_interleave(per)
        return sample_noise(labels.shape[0], config.latent_dim, g, device), (labels,), per
    return sample_noise(64, config.latent_dim, g, device), (), 8


@torch.no_grad()
def eval_samples(generator: nn.Module, z: torch.Tensor, cond: tuple) -> torch.Tensor:
    """``generator(z, *cond)`` in eval mode, no gradient (the mode restored after)."""
    was = generator.training
    generator.eval()
    x = generator(z, *cond)
    generator.train(was)
    return x
