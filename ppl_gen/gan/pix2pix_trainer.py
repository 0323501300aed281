"""pix2pix training (Isola et al. 2017) on the engine (:mod:`ppl_gen.engine`): a U-Net
generator ``G: source -> target`` and a PatchGAN ``D(target, source)`` on aligned pairs
(:mod:`ppl_gen.gan.pix2pix`).

Per batch of pairs ``(x, y)`` (eq. 4 of the paper, ``G* = arg min_G max_D L_cGAN + lambda
L_L1``):

* discriminator (:func:`~ppl_gen.gan.steps.discriminator_step` with ``cond = (x,)``):
  ``loss(D(y, x), real) + loss(D(G(x).detach(), x), fake)`` (eq. 1), plus the WGAN-GP
  penalty for ``wgan-gp`` and ``r1 / 2`` x the R1 penalty on the real pair when ``r1 > 0``;
* generator (:func:`pix2pix_generator_step`, D frozen): ``loss(D(G(x), x), real) +
  lambda_l1 ||y - G(x)||_1`` (eq. 3, lambda = 100).

Adam(2e-4, (0.5, 0.999)) for both networks, an optional linear learning-rate decay over the
last ``decay_epochs`` epochs.  :class:`Pix2PixTask` is the engine task: components
``generator``, ``discriminator``, ``opt_g``, ``opt_d``, ``sched_g``, ``sched_d`` (and
``generator_ema`` with ``ema``), streams ``shuffle`` (pair order) and ``penalty`` (WGAN-GP
interpolation weights); dropout draws from torch's global generator, which the engine
checkpoints, so a resume equals an uninterrupted run.  Checkpoint ``kind`` ``pix2pix``
(``out/checkpoint.pt``), a translation panel per epoch (``samples_epoch_NNN.png``: rows
source, translation, target) and the loss curves.  One process only (no data parallelism).
Nothing here imports Pyro.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ppl_gen.core import precision as amp
from ppl_gen.core.device import resolve_device
from ppl_gen.core.distributed import DistributedContext, init_from_env
from ppl_gen.core.errors import PplGenError, require, require_positive_int
from ppl_gen.data.images import ImageData, to_tanh_range, to_unit
from ppl_gen.engine.loop import EpochSummary, LoopConfig, checkpoint_kept, fit
from ppl_gen.engine.rng import seed_everything
from ppl_gen.engine.state import data_fingerprint, settings_record
from ppl_gen.gan.losses import GANLoss, check_loss_mode
from ppl_gen.gan.pix2pix import PairDiscriminator, UNetGenerator
from ppl_gen.gan.schedules import constant_then_linear_decay, reschedule
from ppl_gen.gan.stabilisers import (
    Stabilisers,
    apply_spectral_norm,
    ema_weights,
    maybe_ema,
    sampling_copy,
)
from ppl_gen.gan.steps import IndexBatches, discriminator_step, eval_samples, make_optimizers
from ppl_gen.viz.gan import plot_gan_losses, save_sample_grid

KIND = "pix2pix"

#: Settings a resume may change; any other changed setting is refused.
PIX2PIX_MAY_CHANGE = frozenset({"epochs", "decay_epochs", "progress", "device", "out"})


@dataclass
class Pix2PixConfig(Stabilisers):
    """Settings of :func:`train_pix2pix` (plus ``spectral_norm``, ``r1``, ``ema`` of
    :class:`~ppl_gen.gan.stabilisers.Stabilisers`).

    Attributes:
        loss: ``vanilla`` (paper), ``lsgan``, ``hinge`` or ``wgan-gp``.
        lambda_l1: weight of the L1 term (100 in the paper).
        epochs, decay_epochs: total epochs; the last ``decay_epochs`` decay the learning
            rate linearly to ~0.
        batch_size: pairs per step (1 in the paper).
        lr, beta1, beta2: Adam settings of both networks.
        gp_weight: WGAN-GP penalty weight (``wgan-gp`` only).
        ngf, ndf: base filters of the U-Net / PatchGAN.
        n_down: U-Net levels (3 for 28x28); n_dropout: decoder layers with dropout.
        n_layers: stride-2 layers of the PatchGAN.
        seed, device, progress, out, precision, deterministic: as in
            :class:`~ppl_gen.gan.trainer.GANConfig`.

    A resume may change only ``epochs``, ``decay_epochs``, ``progress``, ``device`` and
    ``out``; any other changed setting or other data is refused naming it.
    """

    loss: str = "vanilla"
    lambda_l1: float = 100.0
    epochs: int = 5
    decay_epochs: int = 0
    batch_size: int = 32
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    gp_weight: float = 10.0
    ngf: int = 32
    ndf: int = 32
    n_down: int = 3
    n_dropout: int = 1
    n_layers: int = 2
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    out: str | None = None
    precision: str = "fp32"
    deterministic: bool = False

    def validate(self) -> None:
        """Raise :class:`PplGenError` naming the first bad setting (its parameter name)."""
        check_loss_mode(self.loss)
        self.validate_stabilisers()
        for flag, value in (
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("ngf", self.ngf),
            ("ndf", self.ndf),
            ("n_down", self.n_down),
            ("n_layers", self.n_layers),
        ):
            require_positive_int(flag, value)
        require(self.lr > 0, f"lr must be positive, got {self.lr!r}")
        require(self.lambda_l1 >= 0, f"lambda_l1 must be >= 0, got {self.lambda_l1!r}")
        require(self.gp_weight >= 0, f"gp_weight must be >= 0, got {self.gp_weight!r}")
        require(
            isinstance(self.n_dropout, int) and 0 <= self.n_dropout <= self.n_down,
            f"n_dropout must be in 0..n_down ({self.n_down}), got {self.n_dropout!r}",
        )
        require(
            isinstance(self.decay_epochs, int) and 0 <= self.decay_epochs <= self.epochs,
            f"decay_epochs must be in 0..epochs ({self.epochs}), got {self.decay_epochs!r}",
        )
        amp.check_precision(self.precision)


@dataclass
class Pix2PixResult:
    """What :func:`train_pix2pix` returns: ``generator`` (eval mode), ``discriminator``,
    ``ema`` (the EMA generator or ``None``), per-epoch ``history`` (``d_loss``, ``g_loss``,
    ``gan_loss``, ``l1_loss`` (mean absolute error on the [-1, 1] scale), ``lr``,
    ``images_per_second``, cumulative ``seconds``), completed ``epochs`` and
    ``iterations``, training ``seconds`` and the ``checkpoint`` path."""

    generator: nn.Module
    discriminator: nn.Module
    history: dict
    ema: nn.Module | None = None
    epochs: int = 0
    iterations: int = 0
    seconds: float = 0.0
    checkpoint: Path | None = None

    @property
    def sampler(self) -> nn.Module:
        """The generator that translations and metrics use (the EMA one when kept)."""
        return self.ema if self.ema is not None else self.generator


def build_pix2pix(
    config: Pix2PixConfig, source_shape: tuple[int, int, int], target_shape: tuple[int, int, int]
) -> tuple[UNetGenerator, PairDiscriminator]:
    """``(generator, discriminator)`` for square images of one size in both domains.

    Raises:
        PplGenError: non-square or differently sized domains, channels other than 1 / 3, an
            image too small for ``n_down``.
    """
    (cs, hs, ws), (ct, ht, wt) = source_shape, target_shape
    if not hs == ws == ht == wt:
        raise PplGenError(
            f"pix2pix needs square pairs of one size, got {hs}x{ws} (source) and {ht}x{wt}"
        )
    g = UNetGenerator(cs, ct, hs, config.ngf, config.n_down, config.n_dropout)
    d = PairDiscriminator(cs, ct, config.ndf, config.n_layers, hs)
    return g, apply_spectral_norm(d) if config.spectral_norm else d


def pix2pix_generator_step(
    discriminator: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: GANLoss,
    source: torch.Tensor,
    target: torch.Tensor,
    fake: torch.Tensor,
    lambda_l1: float = 100.0,
    precision: str = "fp32",
) -> dict[str, torch.Tensor]:
    """One generator update with D frozen: ``loss(D(G(x), x), real) + lambda_l1 |y -
    G(x)|_1`` (Isola et al. 2017, eq. 4).

    Args:
        source, target: ``(B, C_s, S, S)`` / ``(B, C_t, S, S)`` pairs in [-1, 1].
        fake: ``G(source)`` with its graph.

    Returns:
        Detached scalars ``g_loss`` (total), ``gan_loss``, ``l1_loss``.
    """
    discriminator.requires_grad_(False)
    try:
        with amp.autocast(precision, fake.device):
            gan = loss_fn(discriminator(fake, source), True, generator=True)
            l1 = F.l1_loss(fake.float(), target.float())
            loss = gan + lambda_l1 * l1
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    finally:
        discriminator.requires_grad_(True)
    return {"g_loss": loss.detach(), "gan_loss": gan.detach(), "l1_loss": l1.detach()}


class Pix2PixTask:
    """The engine task of one pix2pix run (module docs).

    Args:
        source, target: aligned images (``(N, C, S, S)`` in [0, 1]; row ``i`` of each is one
            pair).
        config: validated settings.
        device: where training runs.
    """

    def __init__(
        self, source: ImageData, target: ImageData, config: Pix2PixConfig, device: torch.device
    ) -> None:
        self.config, self.device = config, device
        seed_everything(config.seed)  # initial weights follow the seed
        g, d = build_pix2pix(config, source.image_shape, target.image_shape)
        self.generator, self.discriminator = g.to(device), d.to(device)
        self.opt_g, self.opt_d = make_optimizers(g, d, config)
        n_constant = config.epochs - config.decay_epochs
        self.sched_g = constant_then_linear_decay(self.opt_g, n_constant, config.decay_epochs)
        self.sched_d = constant_then_linear_decay(self.opt_d, n_constant, config.decay_epochs)
        self.ema = maybe_ema(self.generator, config.ema)
        self.streams = {
            "shuffle": torch.Generator().manual_seed(config.seed),
            "penalty": torch.Generator().manual_seed(config.seed + 2),
        }
        self.loss_fn = GANLoss(config.loss)
        self.x = to_tanh_range(source.images).to(device)
        self.y = to_tanh_range(target.images).to(device)
        self.out = Path(config.out) if config.out else None
        self._lr = config.lr

    def components(self) -> dict[str, Any]:
        return {
            "generator": self.generator,
            "discriminator": self.discriminator,
            "opt_g": self.opt_g,
            "opt_d": self.opt_d,
            "sched_g": self.sched_g,
            "sched_d": self.sched_d,
            **({"generator_ema": self.ema} if self.ema is not None else {}),
        }

    def generators(self) -> dict[str, torch.Generator]:
        return self.streams

    def batches(self, epoch: int) -> IndexBatches:
        n = self.x.shape[0]
        return IndexBatches(n, self.config.batch_size, self.streams["shuffle"], self.device)

    def start_epoch(self, epoch: int) -> None:
        self.generator.train()
        self.discriminator.train()
        self._lr = float(self.opt_g.param_groups[0]["lr"])

    def step(self, idx: torch.Tensor, iteration: int) -> Mapping[str, torch.Tensor]:
        config = self.config
        x, y = self.x[idx], self.y[idx]
        with amp.autocast(config.precision, self.device):
            fake = self.generator(x)
        d_loss = discriminator_step(
            self.discriminator,
            self.opt_d,
            self.loss_fn,
            y,
            fake,
            (x,),
            config.gp_weight,
            self.streams["penalty"],
            config.precision,
            config.r1,
        )
        losses = pix2pix_generator_step(
            self.discriminator,
            self.opt_g,
            self.loss_fn,
            x,
            y,
            fake,
            config.lambda_l1,
            config.precision,
        )
        if self.ema is not None:
            self.ema.update(self.generator)
        return {"d_loss": d_loss, **{k: v.float() for k, v in losses.items()}}

    def end_epoch(self, summary: EpochSummary) -> dict[str, float]:
        self.sched_g.step()
        self.sched_d.step()
        images = summary.steps * self.config.batch_size
        keys = ("d_loss", "g_loss", "gan_loss", "l1_loss")
        return {
            **{k: summary.means[k] for k in keys},
            "lr": self._lr,
            "images_per_second": images / summary.seconds if summary.seconds > 0 else 0.0,
        }

    def write_epoch(self, epoch: int, history: dict[str, list]) -> None:
        if self.out is None:
            return
        x, y = self.x[:8], self.y[:8]
        fake = eval_samples(sampling_copy(self.generator, self.ema), x, ())
        rows = [to_unit(r).expand(-1, 3, -1, -1) for r in (x, fake, y)]
        save_sample_grid(torch.cat(rows), self.out / f"samples_epoch_{epoch:03d}.png", 8)
        plot_gan_losses(history, self.out / "loss_curves.png")

    def after_restore(self, state: dict) -> None:
        """Recompute the learning-rate schedules from this run's ``epochs`` /
        ``decay_epochs``."""
        n_constant = self.config.epochs - self.config.decay_epochs
        for sched in (self.sched_g, self.sched_d):
            reschedule(sched, n_constant, self.config.decay_epochs)

    def summary_line(self, epoch: int, e: dict[str, float]) -> str:
        return (
            f"epoch {epoch}: D {e['d_loss']:.3f}, G {e['g_loss']:.3f} (GAN {e['gan_loss']:.3f},"
            f" L1 {e['l1_loss']:.4f})"
        )


def train_pix2pix(
    source: ImageData,
    target: ImageData,
    config: Pix2PixConfig | None = None,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    data_spec: dict | None = None,
    dist: DistributedContext | None = None,
) -> Pix2PixResult:
    """Train pix2pix on aligned pairs ``(source.images[i], target.images[i])`` (each
    ``(N, C, S, S)`` in [0, 1]); module docs.

    Args:
        source, target: the two sides of the pairs (same N, same S).
        config: settings (default :class:`Pix2PixConfig`).
        resume: continue from ``config.out/checkpoint.pt`` when it exists.
        stop_after: stop after this many epochs in this call.
        data_spec: JSON-able description of the data stored in the checkpoint.
        dist: the process context (default :func:`~ppl_gen.core.distributed.init_from_env`).

    Raises:
        PplGenError: bad settings, unpaired data (different N), fewer pairs than one batch,
            domains that do not fit, a refused resume (naming what differs), more than one
            process.
        TrainingDiverged: a non-finite or exploded loss (the last checkpoint is kept).
    """
    config = config or Pix2PixConfig()
    config.validate()
    ctx = dist if dist is not None else init_from_env(config.device)
    if ctx.distributed:
        raise PplGenError(
            f"pix2pix runs in one process, got {ctx.world_size} (launch it without torchrun)"
        )
    n = source.images.shape[0]
    if target.images.shape[0] != n:
        raise PplGenError(
            f"target: pix2pix needs aligned pairs, got {n} source and "
            f"{target.images.shape[0]} target images"
        )
    if n < config.batch_size:
        raise PplGenError(f"batch_size {config.batch_size} exceeds the {n} training pairs")
    with amp.deterministic(config.deterministic, ctx.device):
        with checkpoint_kept(config.out and f"{config.out}/checkpoint.pt"):
            task = Pix2PixTask(source, target, config, ctx.device)
            ckpt = Path(config.out) / "checkpoint.pt" if config.out else None
            loop = LoopConfig(
                epochs=config.epochs,
                kind=KIND,
                settings=settings_record(config),
                may_change=PIX2PIX_MAY_CHANGE,
                data_fingerprint=data_fingerprint(source.images, target.images),
                meta={
                    "data": data_spec or {"source": source.name, "target": target.name},
                    "image_shapes": [list(source.image_shape), list(target.image_shape)],
                },
                checkpoint=ckpt,
                resume=resume,
                stop_after=stop_after,
                seed=config.seed,
                progress=config.progress,
            )
            fitted = fit(task, loop, ctx)
    task.generator.eval()
    return Pix2PixResult(
        task.generator,
        task.discriminator,
        fitted.history,
        ema=task.ema.module if task.ema is not None else None,
        epochs=fitted.epochs,
        iterations=fitted.iterations,
        seconds=fitted.seconds,
        checkpoint=ckpt,
    )


def load_pix2pix(state: dict, device: torch.device | str = "cpu", ema: bool = True) -> nn.Module:
    """The trained U-Net (eval mode, on ``device``) from a :func:`train_pix2pix`
    checkpoint: its EMA weights when kept and ``ema`` is true.  It maps [-1, 1] source
    images to [-1, 1] targets (:func:`~ppl_gen.gan.cycle_trainer.translate` works on [0, 1]).

    Raises:
        PplGenError: not a pix2pix checkpoint.
    """
    if state.get("kind") != KIND:
        raise PplGenError(f"CHECKPOINT: not a pix2pix checkpoint (kind {state.get('kind')!r})")
    known = set(Pix2PixConfig.__dataclass_fields__)
    config = Pix2PixConfig(**{k: v for k, v in state["config"].items() if k in known})
    shape_s, shape_t = (tuple(s) for s in state["image_shapes"])
    generator, _ = build_pix2pix(config, shape_s, shape_t)
    averaged = state.get("generator_ema") if ema else None
    generator.load_state_dict(ema_weights(averaged) if averaged else state["generator"])
    return generator.to(resolve_device(device)).eval()
