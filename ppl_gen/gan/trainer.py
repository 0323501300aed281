"""Training loop of the MLP GAN, DCGAN and conditional GAN.

Each batch runs one discriminator step and (every ``n_critic`` batches) one generator step
(Goodfellow et al. 2014, algorithm 1, with k = ``n_critic``):

1. :func:`discriminator_step` -- ``L_D = loss(D(x), real) + loss(D(G(z).detach()), fake)``
   (+ ``gp_weight`` x gradient penalty for ``wgan-gp``); fakes are detached so no gradient
   reaches the generator.
2. :func:`generator_step` -- the non-saturating loss ``loss(D(G(z)), real)`` with the
   discriminator frozen (``requires_grad_(False)``), so no gradient accumulates in it.

Adam(2e-4, betas (0.5, 0.999)) for both networks (Radford et al. 2016, sec. 4), an optional
linear learning-rate decay (:mod:`ppl_gen.gan.schedules`), a progress bar, a sample
grid per epoch, loss curves, collapse warnings, and a checkpoint per epoch from which
:func:`train_gan` resumes exactly (networks, optimisers, schedulers, epoch, history and the
random streams).  The loop is a few small functions over plain ``torch.optim`` optimisers.

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
:func:`ppl_gen.core.precision.deterministic`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ppl_gen.core import precision as amp
from ppl_gen.core.checkpoint import save_checkpoint
from ppl_gen.core.device import resolve_device
from ppl_gen.core.distributed import (
    DistributedContext,
    RankFailed,
    init_from_env,
    load_for_resume,
    sync_batchnorm,
)
from ppl_gen.core.errors import PplGenError, require, require_positive_int
from ppl_gen.data.datasets import iterate_minibatches
from ppl_gen.data.images import ImageData, to_tanh_range, to_unit
from ppl_gen.gan.cgan import ConditionalDiscriminator, ConditionalGenerator
from ppl_gen.gan.dcgan import DCDiscriminator, DCGenerator
from ppl_gen.gan.losses import GANLoss, check_loss_mode, gradient_penalty
from ppl_gen.gan.mlp_gan import MLPDiscriminator, MLPGenerator
from ppl_gen.gan.monitor import CollapseMonitor, mean_pairwise_distance
from ppl_gen.gan.schedules import constant_then_linear_decay
from ppl_gen.infer.training import TrainingDiverged
from ppl_gen.viz.gan import plot_gan_losses, save_sample_grid

GAN_MODELS = ("gan", "dcgan", "cgan")


@dataclass
class GANConfig:
    """Settings of :func:`train_gan`.

    Attributes:
        model: ``gan`` (MLP, any image size), ``dcgan`` (28x28 / 32x32) or ``cgan``
            (conditional; DCGAN body for 28x28 / 32x32, MLP otherwise; needs labels).
        loss: ``vanilla``, ``lsgan`` or ``wgan-gp``.
        latent_dim: dimension of ``z ~ N(0, I)``.
        epochs: total epochs (a resumed run continues up to this number).
        batch_size: images per step.
        lr, beta1, beta2: Adam settings of both networks.
        n_critic: discriminator steps per generator step (``None``: 5 for ``wgan-gp``,
            else 1).
        gp_weight: lambda of the WGAN-GP gradient penalty.
        hidden: hidden widths of the MLP GAN's generator (the discriminator's are reversed).
        ngf, ndf: base filter counts (DCGAN / cGAN; cGAN-MLP uses ``ngf`` as width).
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

    def validate(self) -> None:
        """Raise :class:`PplGenError` naming the first bad setting (its CLI flag)."""
        if self.model not in GAN_MODELS:
            raise PplGenError(f"model must be one of {', '.join(GAN_MODELS)}, got {self.model!r}")
        check_loss_mode(self.loss)
        for flag, value in (
            ("latent_dim", self.latent_dim),
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("ngf", self.ngf),
            ("ndf", self.ndf),
        ):
            require_positive_int(flag, value)
        if self.n_critic is not None:
            require_positive_int("n_critic", self.n_critic)
        require(self.lr > 0, f"lr must be positive, got {self.lr!r}")
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
        history: per epoch ``epoch``, ``d_loss``, ``g_loss`` (mean per batch), ``seconds``
            (cumulative training wall time, s) and ``images_per_second``.
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


def build_gan(
    config: GANConfig, image_shape: tuple[int, int, int], num_classes: int | None = None
) -> tuple[nn.Module, nn.Module]:
    """Build ``(generator, discriminator)`` for ``config.model`` on the CPU.

    Args:
        config: the settings (model, widths, latent dimension, loss).
        image_shape: ``(C, H, W)`` of the data; C (1 or 3) sets the channel counts.
        num_classes: labels for ``cgan``.

    Raises:
        PplGenError: a model that does not fit the images (DCGAN on sizes other than
            28x28 / 32x32) or ``cgan`` without labels.
    """
    batch_norm = config.loss != "wgan-gp"
    if config.model == "gan":
        return (
            MLPGenerator(config.latent_dim, image_shape, config.hidden),
            MLPDiscriminator(image_shape, tuple(reversed(config.hidden))),
        )
    if config.model == "dcgan":
        return (
            DCGenerator(config.latent_dim, image_shape, config.ngf),
            DCDiscriminator(image_shape, config.ndf, batch_norm=batch_norm),
        )
    if not num_classes:
        raise PplGenError("cgan needs labelled data (data mnist, digits, or class subfolders)")
    arch = "dcgan" if image_shape[1] == image_shape[2] and image_shape[1] in (28, 32) else "mlp"
    return (
        ConditionalGenerator(config.latent_dim, image_shape, num_classes, arch, config.ngf),
        ConditionalDiscriminator(image_shape, num_classes, arch, config.ndf, batch_norm),
    )


def sample_noise(
    n: int, latent_dim: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """``z: (n, latent_dim)`` ~ N(0, I) from ``generator`` (on ``device``)."""
    return torch.randn(n, latent_dim, generator=generator, device=device)


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
) -> torch.Tensor:
    """One update of the discriminator; returns its loss (detached scalar).

    Args:
        real: ``(B, C, H, W)`` real images in [-1, 1].
        fake: ``(B, C, H, W)`` generator outputs; detached here.
        cond: extra inputs of a conditional discriminator, e.g. ``(labels,)``.
        gp_weight: lambda of the gradient penalty (``wgan-gp`` only).
        gp_generator: random stream of the penalty's interpolation weights.
        precision: ``fp32`` or ``bf16`` (the forward passes under ``torch.autocast``).
    """
    fake = fake.detach()
    with amp.autocast(precision, real.device):
        loss = loss_fn(discriminator(real, *cond), True) + loss_fn(
            discriminator(fake, *cond), False
        )
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
            loss = loss_fn(discriminator(fake, *cond), True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    finally:
        discriminator.requires_grad_(True)
    return loss.detach()


def make_optimizers(
    generator: nn.Module, discriminator: nn.Module, config: GANConfig
) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Adam(``lr``, ``(beta1, beta2)``) for each network."""
    betas = (config.beta1, config.beta2)
    return (
        torch.optim.Adam(generator.parameters(), lr=config.lr, betas=betas),
        torch.optim.Adam(discriminator.parameters(), lr=config.lr, betas=betas),
    )


def _streams(seed: int, device: torch.device) -> dict[str, torch.Generator]:
    return {
        "shuffle": torch.Generator().manual_seed(seed),
        "noise": torch.Generator(device=device).manual_seed(seed + 1),
        "penalty": torch.Generator(device=device).manual_seed(seed + 2),
    }


def _fixed_inputs(config: GANConfig, device: torch.device, num_classes: int | None):
    g = torch.Generator(device=device).manual_seed(config.seed + 1000)
    if config.model == "cgan":
        per = 8
        labels = torch.arange(num_classes, device=device).repeat_interleave(per)
        return sample_noise(labels.shape[0], config.latent_dim, g, device), (labels,), per
    return sample_noise(64, config.latent_dim, g, device), (), 8


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
            restored, so the continuation equals an uninterrupted run).
        stop_after: stop after this many epochs in this call (a later ``resume`` continues).
        data_spec: JSON-able description of the data stored in the checkpoint (used by
            ``ppl-gen evaluate``).
        dist: the data-parallel context; default :func:`ppl_gen.core.distributed.init_from_env`.

    Returns:
        :class:`GANResult` (plain networks, identical on every rank; losses averaged over
        the ranks).

    Raises:
        PplGenError: bad settings, too few images for one batch, a model that does not fit
            the images, a checkpoint of another model or data shape; with several processes,
            ``wgan-gp`` or a batch size that is not a multiple of their number.
        TrainingDiverged: a non-finite loss (the last checkpoint is kept).
        RankFailed: another rank stopped (crashed); the last checkpoint is left as it was.
    """
    config = config or GANConfig()
    config.validate()
    ctx = dist if dist is not None else init_from_env(config.device)
    with amp.deterministic(config.deterministic, ctx.device):
        try:
            return _train_gan(data, config, ctx, resume, stop_after, data_spec)
        except RankFailed as exc:
            kept = f"; the last good checkpoint {config.out}/checkpoint.pt is intact" * bool(
                config.out
            )
            raise RankFailed(f"{exc}{kept}") from exc


def check_data_parallel(config, ctx: DistributedContext, gp: bool = True) -> None:
    """Refuse settings a data-parallel GAN step cannot run (see the module docs).

    Raises:
        PplGenError: ``wgan-gp`` (when ``gp``) or a ``batch_size`` that is not a multiple of
            the number of processes.
    """
    if not ctx.distributed:
        return
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


def _train_gan(
    data: ImageData,
    config: GANConfig,
    ctx: DistributedContext,
    resume: bool,
    stop_after: int | None,
    data_spec: dict | None,
) -> GANResult:
    device = ctx.device
    n = data.images.shape[0]
    if n < config.batch_size:
        raise PplGenError(f"batch_size {config.batch_size} exceeds the {n} training images")
    check_data_parallel(config, ctx)
    torch.manual_seed(config.seed)
    conditional = config.model == "cgan"
    num_classes = data.num_classes if conditional else None
    if conditional and data.labels is None:
        raise PplGenError("cgan needs labelled data (data mnist, digits, or class subfolders)")
    generator, discriminator = build_gan(config, data.image_shape, num_classes)
    generator.to(device)
    discriminator.to(device)
    if ctx.distributed:
        sync_batchnorm(generator, ctx)  # global-batch statistics in every forward pass
        sync_batchnorm(discriminator, ctx)
        torch.manual_seed(config.seed + 1 + ctx.rank)  # per-rank stream (e.g. dropout)
    opt_g, opt_d = make_optimizers(generator, discriminator, config)
    n_constant = config.epochs - config.decay_epochs
    sched_g = constant_then_linear_decay(opt_g, n_constant, config.decay_epochs)
    sched_d = constant_then_linear_decay(opt_d, n_constant, config.decay_epochs)
    streams = _streams(config.seed, device)
    loss_fn = GANLoss(config.loss)
    images = ctx.to_device(to_tanh_range(data.images))
    labels = ctx.to_device(data.labels) if conditional else None
    out = Path(config.out) if config.out else None
    ckpt = out / "checkpoint.pt" if out else None
    history: dict[str, list] = {
        "epoch": [],
        "d_loss": [],
        "g_loss": [],
        "seconds": [],
        "images_per_second": [],
    }
    result = GANResult(generator, discriminator, history, checkpoint=ckpt)
    state = load_for_resume(ckpt, ctx) if resume and ckpt is not None else None
    if state is not None:
        _check_resumable(state, config, data)
        generator.load_state_dict(state["generator"])
        discriminator.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        sched_g.load_state_dict(state["sched_g"])
        sched_d.load_state_dict(state["sched_d"])
        result.history = history = state["history"]
        result.epochs, result.iterations = state["epoch"], state["iterations"]
        result.seconds = state["seconds"]
        for name, gen in streams.items():
            gen.set_state(state["rng"][name].cpu())
        if ctx.distributed:
            ctx.set_rng_state(state.get("rng_ranks"), config.seed + 1 + 7919 * result.epochs)
    # DDP wrappers (the networks themselves when one process); batch-norm buffers agree on
    # every rank by construction, so DDP need not broadcast them before each forward.
    g_net = ctx.wrap(generator, forward_sync_buffers=False)
    d_net = ctx.wrap(discriminator, forward_sync_buffers=False)
    fixed_z, fixed_cond, nrow = _fixed_inputs(config, device, num_classes)
    monitor = CollapseMonitor(config.loss)
    show = ctx.is_main
    if config.check_collapse and show:
        monitor.real_diversity = mean_pairwise_distance(images[: fixed_z.shape[0]])
    critic = config.critic_steps
    last = config.epochs if stop_after is None else min(config.epochs, result.epochs + stop_after)
    for epoch in range(result.epochs, last):
        generator.train()
        discriminator.train()
        t0 = time.perf_counter()
        d_sum = torch.zeros((), device=device)
        g_sum = torch.zeros((), device=device)
        n_d = n_g = 0
        batches = iterate_minibatches(
            n, config.batch_size, generator=streams["shuffle"], device=device, drop_last=True
        )
        bar = tqdm(
            batches,
            total=n // config.batch_size,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=True if not (config.progress and show) else None,
            leave=False,
        )
        for idx in bar:
            # The global batch's noise is drawn on every rank; each takes its part.
            z = sample_noise(idx.shape[0], config.latent_dim, streams["noise"], device)
            idx, z = ctx.shard(idx), ctx.shard(z)
            real = images[idx]
            cond = (labels[idx],) if conditional else ()
            g_step = (result.iterations + 1) % critic == 0
            with ctx.guard("GAN training step (DDP gradient all-reduce)"):
                with amp.autocast(config.precision, device):
                    # through DDP only when a generator backward follows
                    fake = (g_net if g_step else generator)(z, *cond)
                d_sum += discriminator_step(
                    d_net,
                    opt_d,
                    loss_fn,
                    real,
                    fake,
                    cond,
                    config.gp_weight,
                    streams["penalty"],
                    config.precision,
                )
                n_d += 1
                result.iterations += 1
                if g_step:
                    g_sum += generator_step(
                        discriminator, opt_g, loss_fn, fake, cond, config.precision
                    )
                    n_g += 1
        seconds = time.perf_counter() - t0
        if ctx.distributed:
            ctx.all_reduce_mean(d_sum, "GAN loss all-reduce")
            ctx.all_reduce_mean(g_sum, "GAN loss all-reduce")
        d_loss = float(d_sum) / max(n_d, 1)
        g_loss = float(g_sum) / max(n_g, 1)
        if not (torch.isfinite(d_sum) and torch.isfinite(g_sum)):
            where = f" (last good checkpoint kept at {ckpt})" if ckpt else ""
            raise TrainingDiverged(f"non-finite GAN loss in epoch {epoch + 1}{where}")
        sched_g.step()
        sched_d.step()
        result.seconds += seconds
        result.epochs = epoch + 1
        for key, value in (
            ("epoch", epoch + 1),
            ("d_loss", d_loss),
            ("g_loss", g_loss),
            ("seconds", result.seconds),
            ("images_per_second", n_d * config.batch_size / seconds),
        ):
            history[key].append(value)
        rng_ranks = ctx.rng_states() if ctx.distributed and out is not None else None
        if not show:
            continue
        samples = _samples(generator, fixed_z, fixed_cond)
        if config.check_collapse:
            result.warnings += monitor.check(epoch + 1, d_loss, samples)
        if config.progress:
            tqdm.write(  # stderr: stdout stays clean for --json
                f"epoch {epoch + 1}: D loss {d_loss:.4f}, G loss {g_loss:.4f}, "
                f"{history['images_per_second'][-1]:.0f} images/s",
                file=sys.stderr,
            )
        if out is not None:
            save_sample_grid(to_unit(samples), out / f"samples_epoch_{epoch + 1:03d}.png", nrow)
            plot_gan_losses(history, out / "loss_curves.png")
            state = {
                "kind": config.model,
                "config": asdict(config),
                "data": data_spec or {"name": data.name},
                "image_shape": list(data.image_shape),
                "num_classes": num_classes,
                "generator": generator.state_dict(),
                "discriminator": discriminator.state_dict(),
                "opt_g": opt_g.state_dict(),
                "opt_d": opt_d.state_dict(),
                "sched_g": sched_g.state_dict(),
                "sched_d": sched_d.state_dict(),
                "epoch": result.epochs,
                "iterations": result.iterations,
                "seconds": result.seconds,
                "history": history,
                "rng": {name: gen.get_state() for name, gen in streams.items()},
            }
            if ctx.distributed:
                state["rng_ranks"], state["world_size"] = rng_ranks, ctx.world_size
            save_checkpoint(ckpt, state)
    if ctx.distributed:  # hand back plain networks (no process-group batch norm)
        plain_g, plain_d = build_gan(config, data.image_shape, num_classes)
        plain_g.load_state_dict(generator.state_dict())
        plain_d.load_state_dict(discriminator.state_dict())
        result.generator, result.discriminator = plain_g.to(device), plain_d.to(device)
        if not show:
            result.warnings = ctx.broadcast_object(None) or []
        else:
            ctx.broadcast_object(result.warnings)
    result.generator.eval()
    return result


@torch.no_grad()
def _samples(generator: nn.Module, z: torch.Tensor, cond: tuple) -> torch.Tensor:
    was = generator.training
    generator.eval()
    x = generator(z, *cond)
    generator.train(was)
    return x


def _check_resumable(state: dict, config: GANConfig, data: ImageData) -> None:
    if state.get("kind") != config.model:
        raise PplGenError(
            f"resume: the checkpoint holds a {state.get('kind')!r} model, not {config.model!r}"
        )
    if tuple(state.get("image_shape", ())) != tuple(data.image_shape):
        raise PplGenError(
            f"resume: the checkpoint was trained on images {tuple(state['image_shape'])}, "
            f"the data are {tuple(data.image_shape)} (mismatched channels or size)"
        )
    saved = state.get("config", {})
    for key in ("loss", "latent_dim", "ngf", "ndf", "hidden"):
        if key in saved and tuple(_as_tuple(saved[key])) != tuple(_as_tuple(getattr(config, key))):
            raise PplGenError(
                f"resume: the checkpoint was trained with {key}={saved[key]!r}, not "
                f"{getattr(config, key)!r}"
            )


def _as_tuple(v):
    return v if isinstance(v, (list, tuple)) else (v,)


def load_generator(state: dict, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild the trained generator (eval mode, on ``device``) from a checkpoint written by
    :func:`train_gan` (``state["kind"]`` in ``gan``, ``dcgan``, ``cgan``).

    Its ``forward(z: (B, latent_dim)[, y: (B,)])`` returns images in [-1, 1]; map them with
    :func:`~ppl_gen.data.images.to_unit`.

    Raises:
        PplGenError: not a GAN checkpoint.
    """
    kind = state.get("kind")
    if kind not in GAN_MODELS:
        raise PplGenError(f"CHECKPOINT: not a GAN checkpoint (kind {kind!r})")
    saved = dict(state["config"])
    saved["hidden"] = tuple(saved.get("hidden", ()))
    config = GANConfig(**saved)
    generator, _ = build_gan(config, tuple(state["image_shape"]), state.get("num_classes"))
    generator.load_state_dict(state["generator"])
    return generator.to(resolve_device(device)).eval()
