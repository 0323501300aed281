"""Training of the MLP GAN, DCGAN, conditional GAN and the style-based generator
(:mod:`ppl_gen.gan.stylegan`, with the DCGAN discriminator) on the engine
(:mod:`ppl_gen.engine`); stabilisers (hinge loss, spectral norm, R1, generator EMA) from
:mod:`ppl_gen.gan.stabilisers`.

Each batch runs one discriminator step and (every ``n_critic`` batches) one generator step
(Goodfellow et al. 2014, algorithm 1, with k = ``n_critic``):

1. :func:`discriminator_step` -- ``L_D = loss(D(x), real) + loss(D(G(z).detach()), fake)``
   (+ ``gp_weight`` x gradient penalty for ``wgan-gp``, Gulrajani et al. 2017, alg. 1);
   fakes are detached so no gradient reaches the generator.
2. :func:`generator_step` -- the non-saturating loss ``loss(D(G(z)), real)`` (Goodfellow et
   al. 2014, sec. 3) with the discriminator frozen (``requires_grad_(False)``), so no
   gradient accumulates in it.

Adam(2e-4, betas (0.5, 0.999)) for both networks (Radford et al. 2016, sec. 4) and an
optional linear learning-rate decay over the last ``decay_epochs`` epochs
(:mod:`ppl_gen.gan.schedules`).  :class:`GANTask` is the family's engine task: its
components are ``generator``, ``discriminator``, ``opt_g``, ``opt_d``, ``sched_g``,
``sched_d`` (and the collapse ``monitor``), its random streams ``shuffle`` (minibatch order),
``noise`` (``z``) and ``penalty`` (the gradient penalty's interpolation weights): CPU
generators whose draws are moved to the device, so a resume may move to another device.
The engine (:func:`ppl_gen.engine.fit`) owns the epochs, progress bar, divergence stop,
checkpoint per epoch (``out/checkpoint.pt``, with the ``kind``, ``config``, ``data``,
``image_shape`` and ``num_classes`` that ``ppl-gen evaluate`` reads) and exact resume; the
task adds a sample grid per epoch (``samples_epoch_NNN.png``), the loss curves
(``loss_curves.png``) and the collapse warnings (:mod:`ppl_gen.gan.monitor`); with ``ema``
the samples (and :func:`load_generator`) use the EMA generator (``generator_ema``).  A resume
may raise ``epochs`` and ``decay_epochs``: the schedule is then recomputed from the new
totals (:func:`~ppl_gen.gan.schedules.reschedule`).

**Data parallelism** (``torchrun --nproc-per-node N -m ppl_gen train dcgan ...``, see
:mod:`ppl_gen.core.distributed`): every rank draws the same permutation and the same noise
``z`` for each global batch of ``batch_size`` images (shared seeded streams) and takes its
part ``[rank::N]`` of both, so the global batches are those of one process.  G and D run
inside ``DistributedDataParallel`` (gradients averaged over the ranks; ``batch_size`` must
be a multiple of N so that the average of the per-rank mean losses is the global mean), and
their batch-norm layers are converted by :func:`ppl_gen.core.distributed.sync_batchnorm`, so
every forward pass (D on the real batch, D on the fakes, G) normalises with the statistics
of the global batch, as one process does.  In the generator step D is frozen and called
without its DDP wrapper (no gradient of D to average); G is called through its wrapper
only in iterations that end with a generator step (each DDP forward must be followed by its
backward).  ``wgan-gp`` is refused with more than one process: its gradient penalty
differentiates D's input gradient (``autograd.grad(..., create_graph=True)`` then a second
backward), a double backward that ``DistributedDataParallel`` does not support.  Losses are
averaged over the ranks each epoch; rank 0 alone shows progress, checks for collapse and
writes samples, curves and checkpoints (with every rank's random state); a crashed rank
makes the others stop with :class:`~ppl_gen.core.distributed.RankFailed` and the last good
checkpoint stays intact.

``precision="bf16"`` runs the forward passes and losses under
:func:`ppl_gen.core.precision.autocast` (parameters, gradients and Adam in float32; samples for
figures and metrics in float32); ``deterministic=True`` runs training under
:func:`ppl_gen.core.precision.deterministic`.  Nothing here imports Pyro.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ppl_gen.core import precision as amp
from ppl_gen.core.device import resolve_device
from ppl_gen.core.distributed import (
    DistributedContext,
    init_from_env,
    sync_batchnorm,
)
from ppl_gen.core.errors import PplGenError, require, require_positive_int
from ppl_gen.data.images import ImageData, to_tanh_range, to_unit
from ppl_gen.engine.loop import EpochSummary, LoopConfig, checkpoint_kept, fit
from ppl_gen.engine.rng import seed_everything
from ppl_gen.engine.state import data_fingerprint, settings_record
from ppl_gen.gan.cgan import ConditionalDiscriminator, ConditionalGenerator
from ppl_gen.gan.dcgan import DCDiscriminator, DCGenerator
from ppl_gen.gan.losses import GANLoss, check_loss_mode
from ppl_gen.gan.mlp_gan import MLPDiscriminator, MLPGenerator
from ppl_gen.gan.monitor import CollapseMonitor, mean_pairwise_distance
from ppl_gen.gan.schedules import constant_then_linear_decay, reschedule
from ppl_gen.gan.stabilisers import (
    Stabilisers,
    apply_spectral_norm,
    ema_weights,
    maybe_ema,
    sampling_copy,
)
from ppl_gen.gan.steps import (
    IndexBatches,
    check_data_parallel,
    discriminator_step,
    eval_samples,
    fixed_inputs,
    gan_streams,
    generator_step,
    make_optimizers,
    sample_noise,
)
from ppl_gen.gan.stylegan import StyleGenerator
from ppl_gen.viz.gan import plot_gan_losses, save_sample_grid

GAN_MODELS = ("gan", "dcgan", "cgan", "stylegan")

__all__ = [
    "GAN_MAY_CHANGE",
    "GAN_MODELS",
    "GANConfig",
    "GANResult",
    "GANTask",
    "build_gan",
    "check_data_parallel",
    "discriminator_step",
    "generator_step",
    "load_generator",
    "make_optimizers",
    "sample_noise",
    "train_gan",
]

#: Settings a resume may change (applied by the task or not affecting the weights); any
#: other changed setting is refused (:func:`ppl_gen.engine.state.check_resume`).
GAN_MAY_CHANGE = frozenset(
    {"epochs", "decay_epochs", "progress", "device", "out", "check_collapse"}
)


@dataclass
class GANConfig(Stabilisers):
    """Settings of :func:`train_gan` (plus ``spectral_norm``, ``r1``, ``ema`` of
    :class:`~ppl_gen.gan.stabilisers.Stabilisers`).

    Attributes:
        model: ``gan`` (MLP, any image size), ``dcgan`` (28x28 / 32x32), ``cgan``
            (conditional; DCGAN body for 28x28 / 32x32, MLP otherwise; needs labels) or
            ``stylegan`` (style-based G, DCGAN D; 28x28 / 32x32).
        loss: ``vanilla``, ``lsgan``, ``wgan-gp`` or ``hinge``.
        latent_dim: dimension of ``z ~ N(0, I)``.
        epochs: total epochs (a resumed run continues up to this number).
        batch_size: images per step.
        lr, beta1, beta2: Adam settings of both networks.
        g_lr: the generator's learning rate when it differs from the discriminator's (the
            two time-scale update rule of Heusel et al. 2017; ``None``: ``lr``).  The
            style-based generator's equalised layers store ``N(0, 1)`` weights, so Adam
            moves them ~1/``c`` times slower than plainly initialised ones: it wants a
            larger ``g_lr`` (``train stylegan`` uses 1e-3; Karras et al. 2019 use 1e-3 to
            3e-3).
        n_critic: discriminator steps per generator step (``None``: 5 for ``wgan-gp``,
            else 1).
        gp_weight: lambda of the WGAN-GP gradient penalty.
        hidden: hidden widths of the MLP GAN's generator (the discriminator's are reversed).
        ngf, ndf: base filter counts (DCGAN / cGAN / StyleGAN; cGAN-MLP uses ``ngf`` as
            width).
        mapping_layers, style_mixing: ``stylegan``: layers of the mapping network and the
            style-mixing probability.
        decay_epochs: the last ``decay_epochs`` epochs decay the learning rate linearly to
            ~0 (0: constant).
        seed: seeds initialisation, shuffling and noise.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        progress: show a progress bar and one line per epoch.
        out: folder for ``checkpoint.pt``, ``samples_epoch_NNN.png``, ``loss_curves.png``
            (``None``: write nothing).
        check_collapse: emit :class:`~ppl_gen.gan.monitor.GANTrainingWarning`.
        precision: ``fp32`` or ``bf16`` (forward passes under ``torch.autocast``).
        deterministic: ``torch.use_deterministic_algorithms(True)`` during training.

    Resume (``train_gan(..., resume=True)``) continues the checkpoint's run and may change
    only ``epochs``, ``decay_epochs`` (the learning-rate schedule is recomputed from the new
    totals: the next epoch runs at ``lr x factor`` of a fresh run with those totals, never
    below zero), ``progress``, ``device``, ``out`` and ``check_collapse``; any other changed
    setting (``lr``, ``loss``, ``latent_dim``, widths, ...) or other training data is
    refused with a :class:`PplGenError` naming it.
    """

    model: str = "dcgan"
    loss: str = "vanilla"
    latent_dim: int = 100
    epochs: int = 5
    batch_size: int = 64
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    n_critic: int | None = None
    gp_weight: float = 10.0
    hidden: tuple[int, ...] = (256, 512)
    ngf: int = 64
    ndf: int = 64
    decay_epochs: int = 0
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    out: str | None = None
    check_collapse: bool = True
    precision: str = "fp32"
    deterministic: bool = False
    mapping_layers: int = 4
    style_mixing: float = 0.9
    g_lr: float | None = None

    def validate(self) -> None:
        """Raise :class:`PplGenError` naming the first bad setting (its parameter name)."""
        self.validate_stabilisers()
        require(
            0 <= self.style_mixing <= 1, f"style_mixing must be in [0, 1], got {self.style_mixing}"
        )
        if self.model not in GAN_MODELS:
            raise PplGenError(f"model must be one of {', '.join(GAN_MODELS)}, got {self.model!r}")
        check_loss_mode(self.loss)
        for flag, value in (
            ("latent_dim", self.latent_dim),
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("ngf", self.ngf),
            ("ndf", self.ndf),
            ("mapping_layers", self.mapping_layers),
        ):
            require_positive_int(flag, value)
        if self.n_critic is not None:
            require_positive_int("n_critic", self.n_critic)
        require(self.lr > 0, f"lr must be positive, got {self.lr!r}")
        require(self.g_lr is None or self.g_lr > 0, f"g_lr must be positive, got {self.g_lr!r}")
        require(
            isinstance(self.decay_epochs, int) and 0 <= self.decay_epochs <= self.epochs,
            f"decay_epochs must be in 0..epochs ({self.epochs}), got {self.decay_epochs!r}",
        )
        require(self.gp_weight >= 0, f"gp_weight must be >= 0, got {self.gp_weight!r}")
        amp.check_precision(self.precision)

    @property
    def critic_steps(self) -> int:
        """Discriminator steps per generator step."""
        return self.n_critic or (5 if self.loss == "wgan-gp" else 1)


@dataclass
class GANResult:
    """What :func:`train_gan` returns.

    Attributes:
        generator, discriminator: the trained networks (generator in eval mode).
        ema: the EMA generator (eval mode) when ``config.ema`` > 0, else ``None``.
        history: per epoch ``epoch``, ``d_loss``, ``g_loss`` (mean per batch), ``lr`` (the
            epoch's learning rate), ``images_per_second`` and ``seconds`` (cumulative
            training wall time, s).
        epochs, iterations: completed epochs and discriminator steps.
        seconds: training wall time (s), without figures and checkpoints.
        warnings: collapse warnings emitted.
        checkpoint: path of the checkpoint, or ``None``.
    """

    generator: nn.Module
    discriminator: nn.Module
    history: dict
    epochs: int = 0
    iterations: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    checkpoint: Path | None = None
    ema: nn.Module | None = None

    @property
    def sampler(self) -> nn.Module:
        """The generator that samples and metrics use: the EMA one when trained with it."""
        return self.ema if self.ema is not None else self.generator


def build_gan(
    config: GANConfig, image_shape: tuple[int, int, int], num_classes: int | None = None
) -> tuple[nn.Module, nn.Module]:
    """Build ``(generator, discriminator)`` for ``config.model`` on the CPU (the
    discriminator spectrally normalised with ``config.spectral_norm``).

    Args:
        config: the settings (model, widths, latent dimension, loss).
        image_shape: ``(C, H, W)`` of the data; C (1 or 3) sets the channel counts.
        num_classes: labels for ``cgan``.

    Raises:
        PplGenError: a model that does not fit the images (DCGAN on sizes other than
            28x28 / 32x32) or ``cgan`` without labels.
    """
    g, d = _build_pair(config, image_shape, num_classes)
    return g, apply_spectral_norm(d) if config.spectral_norm else d


def _build_pair(config: GANConfig, image_shape: tuple[int, int, int], num_classes: int | None):
    batch_norm = config.loss != "wgan-gp"
    if config.model == "gan":
        return (
            MLPGenerator(config.latent_dim, image_shape, config.hidden),
            MLPDiscriminator(image_shape, tuple(reversed(config.hidden))),
        )
    if config.model in ("dcgan", "stylegan"):
        if config.model == "stylegan":
            g = StyleGenerator(
                config.latent_dim,
                image_shape,
                config.ngf,
                config.mapping_layers,
                config.style_mixing,
            )
        else:
            g = DCGenerator(config.latent_dim, image_shape, config.ngf)
        return g, DCDiscriminator(image_shape, config.ndf, batch_norm=batch_norm)
    if not num_classes:
        raise PplGenError("cgan needs labelled data (data mnist, digits, or class subfolders)")
    arch = "dcgan" if image_shape[1] == image_shape[2] and image_shape[1] in (28, 32) else "mlp"
    return (
        ConditionalGenerator(config.latent_dim, image_shape, num_classes, arch, config.ngf),
        ConditionalDiscriminator(image_shape, num_classes, arch, config.ndf, batch_norm),
    )


class GANTask:
    """The engine task of one GAN / DCGAN / cGAN run (module docs).

    Builds the networks from ``config.seed`` (the same seed gives the same initial weights),
    their optimisers and schedulers, and the seeded streams; :meth:`step` runs one
    discriminator step and, every ``critic_steps`` iterations, one generator step.

    Args:
        data: the training images (``(N, C, H, W)`` in [0, 1]; labels for ``cgan``).
        config: validated settings.
        ctx: the data-parallel context.
        num_classes: labels of a ``cgan`` (``None`` otherwise).
    """

    def __init__(
        self,
        data: ImageData,
        config: GANConfig,
        ctx: DistributedContext,
        num_classes: int | None = None,
    ) -> None:
        self.config, self.ctx = config, ctx
        device = self.device = ctx.device
        self.conditional = config.model == "cgan"
        seed_everything(config.seed)  # initial weights follow the seed
        generator, discriminator = build_gan(config, data.image_shape, num_classes)
        self.generator, self.discriminator = generator.to(device), discriminator.to(device)
        if ctx.distributed:
            sync_batchnorm(generator, ctx)  # global-batch statistics in every forward pass
            sync_batchnorm(discriminator, ctx)
            seed_everything(config.seed + 1 + ctx.rank)  # per-rank stream (e.g. dropout)
        self.opt_g, self.opt_d = make_optimizers(generator, discriminator, config)
        self.ema = maybe_ema(generator, config.ema)
        n_constant = config.epochs - config.decay_epochs
        self.sched_g = constant_then_linear_decay(self.opt_g, n_constant, config.decay_epochs)
        self.sched_d = constant_then_linear_decay(self.opt_d, n_constant, config.decay_epochs)
        self.streams = gan_streams(config.seed)
        self.loss_fn = GANLoss(config.loss)
        self.images = ctx.to_device(to_tanh_range(data.images))
        self.labels = ctx.to_device(data.labels) if self.conditional else None
        # DDP wrappers (the networks themselves when one process); batch-norm buffers agree
        # on every rank by construction, so DDP need not broadcast them before each forward.
        self.g_net = ctx.wrap(generator, forward_sync_buffers=False)
        self.d_net = ctx.wrap(discriminator, forward_sync_buffers=False)
        self.fixed_z, self.fixed_cond, self.nrow = fixed_inputs(config, device, num_classes)
        self.monitor = CollapseMonitor(config.loss)
        if config.check_collapse and ctx.is_main:
            self.monitor.real_diversity = mean_pairwise_distance(
                self.images[: self.fixed_z.shape[0]]
            )
        self.critic = config.critic_steps
        self.out = Path(config.out) if config.out else None
        self.warnings: list[str] = []
        self._lr = config.lr

    # ------------------------------------------------------------------ engine protocol

    def components(self) -> dict[str, Any]:
        return {
            "generator": self.generator,
            "discriminator": self.discriminator,
            "opt_g": self.opt_g,
            "opt_d": self.opt_d,
            "sched_g": self.sched_g,
            "sched_d": self.sched_d,
            "monitor": self.monitor,
            **({"generator_ema": self.ema} if self.ema is not None else {}),
        }

    def generators(self) -> dict[str, torch.Generator]:
        return self.streams

    def batches(self, epoch: int) -> IndexBatches:
        return IndexBatches(
            self.images.shape[0], self.config.batch_size, self.streams["shuffle"], self.device
        )

    def start_epoch(self, epoch: int) -> None:
        self.generator.train()
        self.discriminator.train()
        self._lr = float(self.opt_d.param_groups[0]["lr"])

    def step(self, idx: torch.Tensor, iteration: int) -> dict[str, torch.Tensor]:
        config, ctx = self.config, self.ctx
        # The global batch's noise is drawn on every rank; each takes its part.
        z = sample_noise(idx.shape[0], config.latent_dim, self.streams["noise"], self.device)
        idx, z = ctx.shard(idx), ctx.shard(z)
        real = self.images[idx]
        cond = (self.labels[idx],) if self.conditional else ()
        g_step = (iteration + 1) % self.critic == 0
        with amp.autocast(config.precision, self.device):
            # through DDP only when a generator backward follows
            fake = (self.g_net if g_step else self.generator)(z, *cond)
        out = {
            "d_loss": discriminator_step(
                self.d_net,
                self.opt_d,
                self.loss_fn,
                real,
                fake,
                cond,
                config.gp_weight,
                self.streams["penalty"],
                config.precision,
                config.r1,
            )
        }
        if g_step:
            out["g_loss"] = generator_step(
                self.discriminator, self.opt_g, self.loss_fn, fake, cond, config.precision
            )
            if self.ema is not None:
                self.ema.update(self.generator)
        return out

    def end_epoch(self, summary: EpochSummary) -> dict[str, float]:
        self.sched_g.step()
        self.sched_d.step()
        images = summary.steps * self.config.batch_size
        return {
            "d_loss": summary.means["d_loss"],
            "g_loss": summary.means.get("g_loss", 0.0),  # 0: no generator step this epoch
            "lr": self._lr,
            "images_per_second": images / summary.seconds if summary.seconds > 0 else 0.0,
        }

    def write_epoch(self, epoch: int, history: dict[str, list]) -> None:
        if not (self.config.check_collapse or self.out is not None):
            return
        sampler = sampling_copy(self.generator, self.ema)
        samples = eval_samples(sampler, self.fixed_z, self.fixed_cond)
        if self.config.check_collapse:
            self.warnings += self.monitor.check(epoch, history["d_loss"][-1], samples)
        if self.out is not None:
            path = self.out / f"samples_epoch_{epoch:03d}.png"
            labels = self.fixed_cond[0][:: self.nrow] if self.fixed_cond else []
            rows = [f"class {int(c)}" for c in labels] or None  # cGAN: one row per class
            save_sample_grid(to_unit(samples), path, self.nrow, row_labels=rows)
            plot_gan_losses(history, self.out / "loss_curves.png")

    def after_restore(self, state: dict) -> None:
        """Recompute the learning-rate schedule from this run's (possibly larger)
        ``epochs`` / ``decay_epochs``."""
        n_constant = self.config.epochs - self.config.decay_epochs
        for sched in (self.sched_g, self.sched_d):
            reschedule(sched, n_constant, self.config.decay_epochs)

    def summary_line(self, epoch: int, entries: dict[str, float]) -> str:
        return (
            f"epoch {epoch}: D loss {entries['d_loss']:.4f}, G loss {entries['g_loss']:.4f}, "
            f"{entries['images_per_second']:.0f} images/s"
        )


def train_gan(
    data: ImageData,
    config: GANConfig | None = None,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    data_spec: dict | None = None,
    dist: DistributedContext | None = None,
) -> GANResult:
    """Train a GAN, DCGAN or conditional GAN on ``data.images`` (``(N, C, H, W)`` in [0, 1]);
    data-parallel under torchrun (module docs).

    Args:
        data: the training images (labels needed for ``cgan``); every rank passes all.
        config: settings (default :class:`GANConfig`).
        resume: continue from ``config.out/checkpoint.pt`` when it exists (everything
            restored, so the continuation equals an uninterrupted run; see
            :class:`GANConfig` for the settings a resume may change).
        stop_after: stop after this many epochs in this call (a later ``resume`` continues).
        data_spec: JSON-able description of the data stored in the checkpoint (used by
            ``ppl-gen evaluate``).
        dist: the data-parallel context; default :func:`ppl_gen.core.distributed.init_from_env`.

    Returns:
        :class:`GANResult` (plain networks, identical on every rank; losses averaged over
        the ranks).

    Raises:
        PplGenError: bad settings, too few images for one batch, a model that does not fit
            the images, a resume from a checkpoint of another model, other settings or other
            data (naming what differs); with several processes, ``wgan-gp`` or a batch size
            that is not a multiple of their number; ``out`` in use by another live run.
        TrainingDiverged: a non-finite or exploded loss (the last checkpoint is kept).
        RankFailed: another rank stopped (crashed); the last checkpoint is left as it was.
    """
    config = config or GANConfig()
    config.validate()
    ctx = dist if dist is not None else init_from_env(config.device)
    with amp.deterministic(config.deterministic, ctx.device):
        with checkpoint_kept(config.out and f"{config.out}/checkpoint.pt"):
            return _train_gan(data, config, ctx, resume, stop_after, data_spec)


def _train_gan(
    data: ImageData,
    config: GANConfig,
    ctx: DistributedContext,
    resume: bool,
    stop_after: int | None,
    data_spec: dict | None,
) -> GANResult:
    n = data.images.shape[0]
    if n < config.batch_size:
        raise PplGenError(f"batch_size {config.batch_size} exceeds the {n} training images")
    check_data_parallel(config, ctx)
    conditional = config.model == "cgan"
    if conditional and data.labels is None:
        raise PplGenError("cgan needs labelled data (data mnist, digits, or class subfolders)")
    num_classes = data.num_classes if conditional else None
    task = GANTask(data, config, ctx, num_classes)
    ckpt = Path(config.out) / "checkpoint.pt" if config.out else None
    loop = LoopConfig(
        epochs=config.epochs,
        kind=config.model,
        settings=settings_record(config),
        may_change=GAN_MAY_CHANGE,
        data_fingerprint=data_fingerprint(data.images, data.labels if conditional else None),
        meta={
            "data": data_spec or {"name": data.name},
            "image_shape": list(data.image_shape),
            "num_classes": num_classes,
        },
        checkpoint=ckpt,
        resume=resume,
        stop_after=stop_after,
        seed=config.seed,
        progress=config.progress,
    )
    fitted = fit(task, loop, ctx)
    result = GANResult(
        task.generator,
        task.discriminator,
        fitted.history,
        epochs=fitted.epochs,
        iterations=fitted.iterations,
        seconds=fitted.seconds,
        warnings=task.warnings,
        checkpoint=ckpt,
        ema=task.ema.module if task.ema is not None else None,
    )
    if ctx.distributed:  # hand back plain networks (no process-group batch norm)
        plain_g, plain_d = build_gan(config, data.image_shape, num_classes)
        plain_g.load_state_dict(task.generator.state_dict())
        plain_d.load_state_dict(task.discriminator.state_dict())
        result.generator, result.discriminator = plain_g.to(ctx.device), plain_d.to(ctx.device)
        if task.ema is not None:
            result.ema = build_gan(config, data.image_shape, num_classes)[0].to(ctx.device)
            result.ema.load_state_dict(task.ema.module.state_dict())
            result.ema.eval()
        result.warnings = ctx.broadcast_object(result.warnings if ctx.is_main else None) or []
    result.generator.eval()
    return result


def load_generator(state: dict, device: torch.device | str = "cpu", ema: bool = True) -> nn.Module:
    """Rebuild the trained generator (eval mode, on ``device``) from a checkpoint written by
    :func:`train_gan` (``state["kind"]`` in :data:`GAN_MODELS`): the EMA generator when the
    run kept one (``generator_ema``) and ``ema`` is true, else the trained one.

    Its ``forward(z: (B, latent_dim)[, y: (B,)])`` returns images in [-1, 1]; map them with
    :func:`~ppl_gen.data.images.to_unit`.

    Args:
        state: the checkpoint (:func:`ppl_gen.core.checkpoint.load_checkpoint`); reads
            ``kind``, ``config``, ``image_shape``, ``num_classes`` and ``generator``.
        device: where the generator goes.

    Raises:
        PplGenError: not a GAN checkpoint.
    """
    kind = state.get("kind")
    if kind not in GAN_MODELS:
        raise PplGenError(f"CHECKPOINT: not a GAN checkpoint (kind {kind!r})")
    known = set(GANConfig.__dataclass_fields__)
    saved = {k: v for k, v in dict(state["config"]).items() if k in known}
    saved["hidden"] = tuple(saved.get("hidden", ()))
    config = GANConfig(**saved)
    generator, _ = build_gan(config, tuple(state["image_shape"]), state.get("num_classes"))
    averaged = state.get("generator_ema") if ema else None
    generator.load_state_dict(ema_weights(averaged) if averaged else state["generator"])
    return generator.to(resolve_device(device)).eval()
