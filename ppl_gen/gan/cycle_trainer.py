"""CycleGAN training (Zhu et al. 2017) on the engine (:mod:`ppl_gen.engine`): two
generators ``G_AB: A -> B``, ``G_BA: B -> A`` and two PatchGAN discriminators ``D_A``,
``D_B``, trained on unpaired images.

Per batch (:func:`cycle_generator_step`, then :func:`cycle_discriminator_step` for each
discriminator):

* generators, discriminators frozen: ``L_GAN(G_AB, D_B) + L_GAN(G_BA, D_A)`` (eq. 1, the
  least-squares form of sec. 4 by default) ``+ lambda_cycle (||G_BA(G_AB(a)) - a||_1 +
  ||G_AB(G_BA(b)) - b||_1)`` (eq. 2, lambda = 10) ``+ lambda_identity lambda_cycle
  (||G_AB(b) - b||_1 + ||G_BA(a) - a||_1)`` (sec. 5.2, 0.5 x lambda; needs both domains
  with the same number of channels);
* each discriminator: ``(loss(D(real), real) + loss(D(pool.query(fake)), fake)) / 2`` with
  fakes detached and drawn from an :class:`~ppl_gen.gan.image_pool.ImagePool` of 50.

Adam(2e-4, (0.5, 0.999)); constant learning rate, then linear decay to ~0 over the last
``decay_epochs`` epochs (sec. 7.1).  :class:`CycleGANTask` is the engine task; its
components are ``nets`` (the four networks), ``opts`` and ``scheds`` (``G``, ``D_A``,
``D_B``), ``pools`` (``A``, ``B``) and ``pools_ranks`` (every rank's pools under data
parallelism), stored in the checkpoint under those names (``nets[name]`` is what
:func:`load_cyclegan` reads), and its random streams are ``shuffle_a`` / ``shuffle_b``.
Stabilisers (:mod:`ppl_gen.gan.stabilisers`): ``loss="hinge"``, ``spectral_norm`` on both
PatchGANs, ``r1`` on each discriminator's real batch, and ``ema``: EMA copies of both
generators (component ``emas``), used for the panels and by :func:`load_cyclegan`.
The engine owns epochs, progress, divergence stop, checkpoints (``out/checkpoint.pt``) and
exact resume; a resume may raise ``epochs`` / ``decay_epochs`` (the schedule is recomputed
from the new totals, :func:`~ppl_gen.gan.schedules.reschedule`).  Per epoch the task writes
a translation panel (``samples_epoch_NNN.png``) and the loss curves (``loss_curves.png``).

**Data parallelism** (``torchrun --nproc-per-node N -m ppl_gen train cyclegan ...``): every
rank draws the same two permutations and takes its part ``[rank::N]`` of each global batch
(``batch_size`` must be a multiple of N).  The four networks run inside
``DistributedDataParallel`` (gradients averaged over the ranks); in the generator step the
frozen discriminators are called without their wrappers, and each generator may be called
several times (translation, cycle, identity) before the one backward, which DDP allows
since every parameter is used.  The networks use instance norm, which needs no
synchronisation.  **The image pools are per rank**: each rank keeps its own 50 past fakes
and draws from them (seed ``seed + 3 (+4) + 1000 rank``), so with N processes the
discriminators see N pools of 50; every rank's pools go into the checkpoint
(``pools_ranks``; a resume on another number of processes keeps rank 0's pools on rank 0
and starts the others empty).  Losses are averaged over the ranks each epoch; rank 0 alone
shows progress and writes figures and checkpoints.  ``precision`` / ``deterministic``: as
in :mod:`ppl_gen.gan.trainer`.  Nothing here imports Pyro.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
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
from ppl_gen.gan.cyclegan import PatchDiscriminator, ResnetGenerator
from ppl_gen.gan.groups import ComponentGroup, RankPools
from ppl_gen.gan.image_pool import ImagePool
from ppl_gen.gan.losses import GANLoss, check_loss_mode, r1_from_output
from ppl_gen.gan.schedules import constant_then_linear_decay, reschedule
from ppl_gen.gan.stabilisers import Stabilisers, apply_spectral_norm, ema_weights, maybe_ema
from ppl_gen.gan.steps import check_data_parallel
from ppl_gen.viz.gan import TRANSLATION_ROWS, plot_gan_losses, save_sample_grid

NETS = ("G_AB", "G_BA", "D_A", "D_B")
LOSS_KEYS = ("d_a_loss", "d_b_loss", "g_loss", "cycle_loss", "identity_loss")

#: Settings a resume may change; any other changed setting is refused.
CYCLEGAN_MAY_CHANGE = frozenset({"epochs", "decay_epochs", "progress", "device", "out"})


@dataclass
class CycleGANConfig(Stabilisers):
    """Settings of :func:`train_cyclegan` (defaults: the paper's, networks sized for 28x28;
    plus ``spectral_norm``, ``r1``, ``ema`` of :class:`~ppl_gen.gan.stabilisers.Stabilisers`).

    Attributes:
        loss: ``lsgan`` (paper), ``vanilla``, ``hinge`` or ``wgan-gp`` (no penalty term).
        epochs: total epochs; the last ``decay_epochs`` decay the learning rate linearly.
        batch_size: images per domain per step (1 in the paper).
        lr, beta1, beta2: Adam settings of all networks.
        lambda_cycle: weight of the cycle-consistency L1 loss (10).
        lambda_identity: identity-loss weight as a fraction of ``lambda_cycle`` (0.5; 0
            disables; needs equal channel counts in A and B).
        pool_size: image-pool capacity (50; 0 disables).
        ngf, ndf: base filters of the generators / discriminators.
        n_blocks: residual blocks per generator.
        n_down: stride-2 downsamplings in the generators (2 in the paper).
        n_layers: stride-2 layers of the PatchGAN.
        seed, device, progress, out: as in :class:`~ppl_gen.gan.trainer.GANConfig`.
        precision: ``fp32`` or ``bf16`` (forward passes under ``torch.autocast``).
        deterministic: ``torch.use_deterministic_algorithms(True)`` during training.

    A resume may change only ``epochs``, ``decay_epochs`` (the learning-rate schedule is
    recomputed from the new totals, never below zero), ``progress``, ``device`` and
    ``out``; any other changed setting or other training data is refused with a
    :class:`PplGenError` naming it.
    """

    loss: str = "lsgan"
    epochs: int = 10
    decay_epochs: int = 5
    batch_size: int = 16
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5
    pool_size: int = 50
    ngf: int = 32
    ndf: int = 32
    n_blocks: int = 3
    n_down: int = 2
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
            ("n_blocks", self.n_blocks),
            ("n_layers", self.n_layers),
        ):
            require_positive_int(flag, value)
        require(self.lr > 0, f"lr must be positive, got {self.lr!r}")
        require(
            isinstance(self.decay_epochs, int) and 0 <= self.decay_epochs <= self.epochs,
            f"decay_epochs must be in 0..epochs ({self.epochs}), got {self.decay_epochs!r}",
        )
        require(self.lambda_cycle >= 0, f"lambda_cycle must be >= 0, got {self.lambda_cycle}")
        require(
            self.lambda_identity >= 0,
            f"lambda_identity must be >= 0, got {self.lambda_identity}",
        )
        if isinstance(self.pool_size, bool) or not isinstance(self.pool_size, int):
            raise PplGenError(f"pool_size must be a non-negative integer, got {self.pool_size!r}")
        require(self.pool_size >= 0, f"pool_size must be >= 0, got {self.pool_size}")
        amp.check_precision(self.precision)


@dataclass
class CycleGANResult:
    """What :func:`train_cyclegan` returns: the four networks (``nets[name]`` for
    ``G_AB``, ``G_BA``, ``D_A``, ``D_B``), per-epoch ``history`` (``d_a_loss``,
    ``d_b_loss``, ``g_loss``, ``cycle_loss``, ``identity_loss`` mean per batch, ``lr``,
    ``images_per_second`` counting both domains, cumulative ``seconds``), completed epochs
    and iterations, the training wall time (s), the checkpoint path, this rank's image
    pools and, with ``ema``, the EMA generators (``emas["G_AB"]``, ``emas["G_BA"]``)."""

    nets: dict[str, nn.Module]
    history: dict
    epochs: int = 0
    iterations: int = 0
    seconds: float = 0.0
    checkpoint: Path | None = None
    pools: dict[str, ImagePool] = field(default_factory=dict)
    emas: dict[str, nn.Module] = field(default_factory=dict)


def build_cyclegan(
    config: CycleGANConfig, shape_a: tuple[int, int, int], shape_b: tuple[int, int, int]
) -> dict[str, nn.Module]:
    """The four networks for domains of shapes ``shape_a`` / ``shape_b`` ``(C, S, S)``.

    Raises:
        PplGenError: non-square or differently sized domains, channel counts other than 1 /
            3, or identity loss requested with mismatched channels.
    """
    (ca, ha, wa), (cb, hb, wb) = shape_a, shape_b
    if not (ha == wa == hb == wb):
        raise PplGenError(
            f"cyclegan needs square images of one size in both domains, got {ha}x{wa} and {hb}x{wb}"
        )
    if config.lambda_identity > 0 and ca != cb:
        raise PplGenError(
            f"lambda_identity {config.lambda_identity}: the identity loss needs domains with "
            f"the same channels, got {ca} (A) and {cb} (B); use lambda_identity 0 or "
            "match_channels"
        )
    kw = {"ngf": config.ngf, "n_blocks": config.n_blocks, "image_size": ha, "n_down": config.n_down}
    dk = {"ndf": config.ndf, "n_layers": config.n_layers, "image_size": ha}
    sn = apply_spectral_norm if config.spectral_norm else (lambda d: d)
    return {
        "G_AB": ResnetGenerator(ca, cb, **kw),
        "G_BA": ResnetGenerator(cb, ca, **kw),
        "D_A": sn(PatchDiscriminator(ca, **dk)),
        "D_B": sn(PatchDiscriminator(cb, **dk)),
    }


def cycle_generator_step(
    nets: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    loss_fn: GANLoss,
    real_a: torch.Tensor,
    real_b: torch.Tensor,
    lambda_cycle: float = 10.0,
    lambda_identity: float = 0.5,
    precision: str = "fp32",
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """One update of both generators with the discriminators frozen.

    Args:
        real_a: ``(B, C_A, S, S)``, real_b: ``(B, C_B, S, S)``, both in [-1, 1].
        precision: ``fp32`` or ``bf16`` (the forward passes under ``torch.autocast``).

    Returns:
        ``(losses, fake_a, fake_b)``: detached scalars ``g_loss`` (total), ``gan_loss``,
        ``cycle_loss``, ``identity_loss``; and the fakes ``G_BA(b)``, ``G_AB(a)`` (with
        graph; detach before giving them to a discriminator).
    """
    g_ab, g_ba, d_a, d_b = (nets[k] for k in NETS)
    d_a.requires_grad_(False)
    d_b.requires_grad_(False)
    try:
        with amp.autocast(precision, real_a.device):
            fake_b = g_ab(real_a)
            fake_a = g_ba(real_b)
            gan = loss_fn(d_b(fake_b), True, True) + loss_fn(d_a(fake_a), True, True)
            cycle = F.l1_loss(g_ba(fake_b), real_a) + F.l1_loss(g_ab(fake_a), real_b)
            loss = gan + lambda_cycle * cycle
            identity = torch.zeros((), device=real_a.device)
            if lambda_identity > 0:
                identity = F.l1_loss(g_ab(real_b), real_b) + F.l1_loss(g_ba(real_a), real_a)
                loss = loss + lambda_identity * lambda_cycle * identity
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    finally:
        d_a.requires_grad_(True)
        d_b.requires_grad_(True)
    losses = {
        "g_loss": loss.detach(),
        "gan_loss": gan.detach(),
        "cycle_loss": cycle.detach(),
        "identity_loss": identity.detach(),
    }
    return losses, fake_a, fake_b


def cycle_discriminator_step(
    discriminator: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: GANLoss,
    real: torch.Tensor,
    fake: torch.Tensor,
    precision: str = "fp32",
    r1_gamma: float = 0.0,
) -> torch.Tensor:
    """One update of a PatchGAN: ``(loss(D(real), real) + loss(D(fake), fake)) / 2``
    (Zhu et al. 2017, sec. 7.1: the objective halved to slow D down), plus ``r1_gamma / 2``
    x the R1 penalty on ``real`` (Mescheder et al. 2018) when ``r1_gamma > 0``.  ``fake``
    (e.g. from the image pool) is detached here; ``precision="bf16"`` runs the forward
    passes under ``torch.autocast``.  Returns the loss (detached scalar)."""
    if r1_gamma:
        real = real.detach().requires_grad_(True)
    with amp.autocast(precision, real.device):
        d_real = discriminator(real)
        loss = 0.5 * (loss_fn(d_real, True) + loss_fn(discriminator(fake.detach()), False))
    if r1_gamma:
        loss = loss + 0.5 * r1_gamma * r1_from_output(d_real, real)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _optimizers(nets: dict[str, nn.Module], config: CycleGANConfig):
    betas = (config.beta1, config.beta2)
    opt_g = torch.optim.Adam(
        list(nets["G_AB"].parameters()) + list(nets["G_BA"].parameters()), config.lr, betas
    )
    opt_d_a = torch.optim.Adam(nets["D_A"].parameters(), config.lr, betas)
    opt_d_b = torch.optim.Adam(nets["D_B"].parameters(), config.lr, betas)
    return {"G": opt_g, "D_A": opt_d_a, "D_B": opt_d_b}


class _PairBatches:
    """One epoch's index pairs ``(idx_a, idx_b)`` of ``batch_size`` each, from one fresh
    permutation per domain (drawn when iterated)."""

    def __init__(self, task: CycleGANTask) -> None:
        self.task = task

    def __len__(self) -> int:
        return self.task.n_batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        t = self.task
        perm_a = torch.randperm(t.x_a.shape[0], generator=t.streams["shuffle_a"]).to(t.device)
        perm_b = torch.randperm(t.x_b.shape[0], generator=t.streams["shuffle_b"]).to(t.device)
        bs = t.config.batch_size
        for i in range(t.n_batches):
            yield perm_a[i * bs : (i + 1) * bs], perm_b[i * bs : (i + 1) * bs]


class CycleGANTask:
    """The engine task of one CycleGAN run (module docs).

    Args:
        data_a, data_b: the two domains (``(N, C, S, S)`` in [0, 1]).
        config: validated settings.
        ctx: the data-parallel context.
    """

    def __init__(
        self,
        data_a: ImageData,
        data_b: ImageData,
        config: CycleGANConfig,
        ctx: DistributedContext,
    ) -> None:
        self.config, self.ctx = config, ctx
        device = self.device = ctx.device
        seed_everything(config.seed)  # initial weights follow the seed
        self.nets = build_cyclegan(config, data_a.image_shape, data_b.image_shape)
        for net in self.nets.values():
            net.to(device)
        self.opts = _optimizers(self.nets, config)
        emas = {k: maybe_ema(self.nets[k], config.ema) for k in ("G_AB", "G_BA")}
        self.emas = {k: e for k, e in emas.items() if e is not None}
        n_constant = config.epochs - config.decay_epochs
        self.scheds = {
            k: constant_then_linear_decay(o, n_constant, config.decay_epochs)
            for k, o in self.opts.items()
        }
        per_rank = 1000 * ctx.rank  # each rank its own pools (module docs)
        seeds = {"A": config.seed + 3 + per_rank, "B": config.seed + 4 + per_rank}
        self.pools = {k: ImagePool(config.pool_size, s, device) for k, s in seeds.items()}
        self.rank_pools = RankPools(self.pools, seeds, ctx)
        self.streams = {
            "shuffle_a": torch.Generator().manual_seed(config.seed),
            "shuffle_b": torch.Generator().manual_seed(config.seed + 1),
        }
        self.loss_fn = GANLoss(config.loss)
        self.x_a = ctx.to_device(to_tanh_range(data_a.images))
        self.x_b = ctx.to_device(to_tanh_range(data_b.images))
        self.n_batches = min(self.x_a.shape[0], self.x_b.shape[0]) // config.batch_size
        # DDP wrappers (the networks themselves for one process): the discriminators'
        # wrappers serve their own steps; the generator step calls the frozen
        # discriminators unwrapped.
        self.wrapped = {k: ctx.wrap(v) for k, v in self.nets.items()}
        self.g_nets = {**self.nets, "G_AB": self.wrapped["G_AB"], "G_BA": self.wrapped["G_BA"]}
        self.fixed_a, self.fixed_b = self.x_a[:8], self.x_b[:8]
        self.out = Path(config.out) if config.out else None
        self._lr = config.lr

    def components(self) -> dict[str, Any]:
        return {
            "nets": ComponentGroup(self.nets),
            "opts": ComponentGroup(self.opts),
            "scheds": ComponentGroup(self.scheds),
            "pools": ComponentGroup(self.pools),
            "pools_ranks": self.rank_pools,  # after "pools": overrides it per rank
            **({"emas": ComponentGroup(self.emas)} if self.emas else {}),
        }

    def generators(self) -> dict[str, torch.Generator]:
        return self.streams

    def batches(self, epoch: int) -> _PairBatches:
        return _PairBatches(self)

    def start_epoch(self, epoch: int) -> None:
        for net in self.nets.values():
            net.train()
        self._lr = float(self.opts["G"].param_groups[0]["lr"])

    def step(self, batch: tuple[torch.Tensor, torch.Tensor], iteration: int) -> dict:
        config, ctx = self.config, self.ctx
        idx_a, idx_b = batch
        real_a, real_b = self.x_a[ctx.shard(idx_a)], self.x_b[ctx.shard(idx_b)]
        losses, fake_a, fake_b = cycle_generator_step(
            self.g_nets,
            self.opts["G"],
            self.loss_fn,
            real_a,
            real_b,
            config.lambda_cycle,
            config.lambda_identity,
            config.precision,
        )
        out = {k: losses[k].float() for k in ("g_loss", "cycle_loss", "identity_loss")}
        for name, real, fake in (("A", real_a, fake_a), ("B", real_b, fake_b)):
            out[f"d_{name.lower()}_loss"] = cycle_discriminator_step(
                self.wrapped[f"D_{name}"],
                self.opts[f"D_{name}"],
                self.loss_fn,
                real,
                self.pools[name].query(fake.float()),
                config.precision,
                config.r1,
            )
        for k, ema in self.emas.items():
            ema.update(self.nets[k])
        return out

    def end_epoch(self, summary: EpochSummary) -> dict[str, float]:
        for sched in self.scheds.values():
            sched.step()
        if self.out is not None:
            self.rank_pools.gather()  # every rank's pools for the checkpoint
        images = 2 * summary.steps * self.config.batch_size
        return {
            **{k: summary.means[k] for k in LOSS_KEYS},
            "lr": self._lr,
            "images_per_second": images / summary.seconds if summary.seconds > 0 else 0.0,
        }

    def write_epoch(self, epoch: int, history: dict[str, list]) -> None:
        if self.out is None:
            return
        nets = {**self.nets, **{k: e.module for k, e in self.emas.items()}}
        panel = translation_panel(nets, self.fixed_a, self.fixed_b)
        path = self.out / f"samples_epoch_{epoch:03d}.png"
        save_sample_grid(panel, path, panel.shape[0] // 6, row_labels=TRANSLATION_ROWS)
        plot_gan_losses(history, self.out / "loss_curves.png")

    def after_restore(self, state: dict) -> None:
        """Recompute the learning-rate schedules from this run's ``epochs`` /
        ``decay_epochs``."""
        n_constant = self.config.epochs - self.config.decay_epochs
        for sched in self.scheds.values():
            reschedule(sched, n_constant, self.config.decay_epochs)

    def summary_line(self, epoch: int, e: dict[str, float]) -> str:
        return (
            f"epoch {epoch}: G {e['g_loss']:.3f} (cycle {e['cycle_loss']:.3f}), "
            f"D_A {e['d_a_loss']:.3f}, D_B {e['d_b_loss']:.3f}"
        )


def train_cyclegan(
    data_a: ImageData,
    data_b: ImageData,
    config: CycleGANConfig | None = None,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    data_spec: dict | None = None,
    dist: DistributedContext | None = None,
) -> CycleGANResult:
    """Train CycleGAN between the images of ``data_a`` and ``data_b`` (unpaired; each
    ``(N, C, S, S)`` in [0, 1]); data-parallel under torchrun (module docs).

    An epoch draws ``min(N_A, N_B) // batch_size`` batches, each domain from its own
    random permutation.  Arguments as in :func:`~ppl_gen.gan.trainer.train_gan`.

    Raises:
        PplGenError: bad settings, domains that do not fit (see :func:`build_cyclegan`),
            fewer images than one batch, a resume with other settings or data (naming what
            differs), a batch size that is not a multiple of the number of processes.
        TrainingDiverged: a non-finite or exploded loss.
        RankFailed: another rank stopped (crashed); the last checkpoint is left as it was.
    """
    config = config or CycleGANConfig()
    config.validate()
    ctx = dist if dist is not None else init_from_env(config.device)
    with amp.deterministic(config.deterministic, ctx.device):
        with checkpoint_kept(config.out and f"{config.out}/checkpoint.pt"):
            return _train_cyclegan(data_a, data_b, config, ctx, resume, stop_after, data_spec)


def _train_cyclegan(
    data_a: ImageData,
    data_b: ImageData,
    config: CycleGANConfig,
    ctx: DistributedContext,
    resume: bool,
    stop_after: int | None,
    data_spec: dict | None,
) -> CycleGANResult:
    n = min(data_a.images.shape[0], data_b.images.shape[0])
    if n < config.batch_size:
        raise PplGenError(f"batch_size {config.batch_size} exceeds the {n} training images")
    check_data_parallel(config, ctx, gp=False)  # CycleGAN's wgan-gp has no penalty term
    task = CycleGANTask(data_a, data_b, config, ctx)
    ckpt = Path(config.out) / "checkpoint.pt" if config.out else None
    loop = LoopConfig(
        epochs=config.epochs,
        kind="cyclegan",
        settings=settings_record(config),
        may_change=CYCLEGAN_MAY_CHANGE,
        data_fingerprint=data_fingerprint(data_a.images, data_b.images),
        meta={
            "data": data_spec or {"a": data_a.name, "b": data_b.name},
            "image_shapes": [list(data_a.image_shape), list(data_b.image_shape)],
        },
        checkpoint=ckpt,
        resume=resume,
        stop_after=stop_after,
        seed=config.seed,
        progress=config.progress,
    )
    fitted = fit(task, loop, ctx)
    for net in task.nets.values():
        net.eval()
    return CycleGANResult(
        task.nets,
        fitted.history,
        epochs=fitted.epochs,
        iterations=fitted.iterations,
        seconds=fitted.seconds,
        checkpoint=ckpt,
        pools=task.pools,
        emas={k: e.module for k, e in task.emas.items()},
    )


@torch.no_grad()
def translation_panel(
    nets: dict[str, nn.Module], real_a: torch.Tensor, real_b: torch.Tensor
) -> torch.Tensor:
    """Rows ``a, G_AB(a), G_BA(G_AB(a)), b, G_BA(b), G_AB(G_BA(b))`` as ``(6 B, 3, S, S)``
    RGB images in [0, 1] (grey repeated), for a grid with ``B`` per row."""
    was = {k: n.training for k, n in nets.items()}
    for n in nets.values():
        n.eval()
    fake_b = nets["G_AB"](real_a)
    fake_a = nets["G_BA"](real_b)
    rows = [real_a, fake_b, nets["G_BA"](fake_b), real_b, fake_a, nets["G_AB"](fake_a)]
    for k, n in nets.items():
        n.train(was[k])
    return torch.cat([to_unit(r).expand(-1, 3, -1, -1) for r in rows])


def load_cyclegan(
    state: dict, device: torch.device | str = "cpu", ema: bool = True
) -> dict[str, nn.Module]:
    """Rebuild the four networks (eval mode, on ``device``) from a checkpoint written by
    :func:`train_cyclegan`; the generators hold their EMA weights when the run kept them
    (``emas``) and ``ema`` is true.  Generators map [-1, 1] images to [-1, 1].

    Raises:
        PplGenError: not a CycleGAN checkpoint.
    """
    if state.get("kind") != "cyclegan":
        raise PplGenError(f"CHECKPOINT: not a CycleGAN checkpoint (kind {state.get('kind')!r})")
    known = set(CycleGANConfig.__dataclass_fields__)
    config = CycleGANConfig(
        **{"n_down": 2, **{k: v for k, v in state["config"].items() if k in known}}
    )
    shape_a, shape_b = (tuple(s) for s in state["image_shapes"])
    nets = build_cyclegan(config, shape_a, shape_b)
    dev = resolve_device(device)
    averaged = state.get("emas") or {} if ema else {}
    for k in NETS:
        weights = ema_weights(averaged[k]) if k in averaged else state["nets"][k]
        nets[k].load_state_dict(weights)
        nets[k].to(dev).eval()
    return nets


@torch.no_grad()
def translate(generator: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Translate images ``x: (N, C, S, S)`` in [0, 1] with a CycleGAN generator; returns
    ``(N, C', S, S)`` in [0, 1] on ``x``'s device, computed in chunks of ``batch_size``."""
    dev = next(generator.parameters()).device
    out = [
        to_unit(generator(to_tanh_range(x[i : i + batch_size].to(dev)))).to(x.device)
        for i in range(0, x.shape[0], batch_size)
    ]
    return torch.cat(out)
