"""CycleGAN training (Zhu et al. 2017): two generators ``G_AB: A -> B``, ``G_BA: B -> A``
and two PatchGAN discriminators ``D_A``, ``D_B``, trained on unpaired images.

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
``decay_epochs`` epochs.  A checkpoint per epoch holds the four networks, both optimisers
and schedulers, both image pools, the epoch, the history and the random streams, so
``resume=True`` continues exactly.

**Data parallelism** (``torchrun --nproc-per-node N -m ppl_gen train cyclegan ...``): every
rank draws the same two permutations and takes its part ``[rank::N]`` of each global batch
(``batch_size`` must be a multiple of N).  The four networks run inside
``DistributedDataParallel`` (gradients averaged over the ranks); in the generator step the
frozen discriminators are called without their wrappers, and each generator may be called
several times (translation, cycle, identity) before the one backward, which DDP allows
since every parameter is used.  The networks use instance norm, which needs no
synchronisation.  **The image pools are per rank**: each rank keeps its own 50 past fakes
and draws from them (seed ``seed + 3 (+4) + 1000 rank``), so with N processes the
discriminators see N pools of 50; every rank's pools go into the checkpoint.  Losses are
averaged over the ranks each epoch; rank 0 alone shows progress and writes figures and
checkpoints.  ``precision`` / ``deterministic``: as in
:mod:`ppl_gen.gan.trainer`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ppl_gen.core import precision as amp
from ppl_gen.core.checkpoint import save_checkpoint
from ppl_gen.core.device import resolve_device
from ppl_gen.core.distributed import (
    DistributedContext,
    RankFailed,
    init_from_env,
    load_for_resume,
)
from ppl_gen.core.errors import PplGenError, require, require_positive_int
from ppl_gen.data.images import ImageData, to_tanh_range, to_unit
from ppl_gen.gan.cyclegan import PatchDiscriminator, ResnetGenerator
from ppl_gen.gan.image_pool import ImagePool
from ppl_gen.gan.losses import GANLoss, check_loss_mode
from ppl_gen.gan.schedules import constant_then_linear_decay
from ppl_gen.infer.training import TrainingDiverged
from ppl_gen.viz.gan import plot_gan_losses, save_sample_grid

NETS = ("G_AB", "G_BA", "D_A", "D_B")


@dataclass
class CycleGANConfig:
    """Settings of :func:`train_cyclegan` (defaults: the paper's, networks sized for 28x28).

    Attributes:
        loss: ``lsgan`` (paper), ``vanilla`` or ``wgan-gp`` (no penalty term here).
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
        """Raise :class:`PplGenError` naming the first bad setting (its CLI flag)."""
        check_loss_mode(self.loss)
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
    ``d_b_loss``, ``g_loss``, ``cycle_loss``, ``identity_loss`` mean per batch, ``seconds``,
    ``images_per_second`` counting both domains), completed epochs and iterations, the
    training wall time (s) and the checkpoint path."""

    nets: dict[str, nn.Module]
    history: dict
    epochs: int = 0
    iterations: int = 0
    seconds: float = 0.0
    checkpoint: Path | None = None
    pools: dict[str, ImagePool] = field(default_factory=dict)


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
    return {
        "G_AB": ResnetGenerator(ca, cb, **kw),
        "G_BA": ResnetGenerator(cb, ca, **kw),
        "D_A": PatchDiscriminator(ca, **dk),
        "D_B": PatchDiscriminator(cb, **dk),
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
            gan = loss_fn(d_b(fake_b), True) + loss_fn(d_a(fake_a), True)
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
) -> torch.Tensor:
    """One update of a PatchGAN: ``(loss(D(real), real) + loss(D(fake), fake)) / 2``
    (Zhu et al. 2017, sec. 7.1: the objective halved to slow D down).  ``fake`` (e.g. from
    the image pool) is detached here; ``precision="bf16"`` runs the forward passes under
    ``torch.autocast``.  Returns the loss (detached scalar)."""
    with amp.autocast(precision, real.device):
        loss = 0.5 * (
            loss_fn(discriminator(real), True) + loss_fn(discriminator(fake.detach()), False)
        )
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
            fewer images than one batch, a checkpoint of other domains, a batch size that is
            not a multiple of the number of processes.
        TrainingDiverged: a non-finite loss.
        RankFailed: another rank stopped (crashed); the last checkpoint is left as it was.
    """
    config = config or CycleGANConfig()
    config.validate()
    ctx = dist if dist is not None else init_from_env(config.device)
    with amp.deterministic(config.deterministic, ctx.device):
        try:
            return _train_cyclegan(data_a, data_b, config, ctx, resume, stop_after, data_spec)
        except RankFailed as exc:
            kept = f"; the last good checkpoint {config.out}/checkpoint.pt is intact" * bool(
                config.out
            )
            raise RankFailed(f"{exc}{kept}") from exc


def _train_cyclegan(
    data_a: ImageData,
    data_b: ImageData,
    config: CycleGANConfig,
    ctx: DistributedContext,
    resume: bool,
    stop_after: int | None,
    data_spec: dict | None,
) -> CycleGANResult:
    from ppl_gen.gan.trainer import check_data_parallel

    device = ctx.device
    n = min(data_a.images.shape[0], data_b.images.shape[0])
    if n < config.batch_size:
        raise PplGenError(f"batch_size {config.batch_size} exceeds the {n} training images")
    check_data_parallel(config, ctx, gp=False)  # CycleGAN's wgan-gp has no penalty term
    torch.manual_seed(config.seed)
    nets = build_cyclegan(config, data_a.image_shape, data_b.image_shape)
    for net in nets.values():
        net.to(device)
    opts = _optimizers(nets, config)
    n_constant = config.epochs - config.decay_epochs
    scheds = {
        k: constant_then_linear_decay(o, n_constant, config.decay_epochs) for k, o in opts.items()
    }
    per_rank = 1000 * ctx.rank  # each rank its own pools (module docs)
    pools = {
        "A": ImagePool(config.pool_size, config.seed + 3 + per_rank),
        "B": ImagePool(config.pool_size, config.seed + 4 + per_rank),
    }
    streams = {
        "shuffle_a": torch.Generator().manual_seed(config.seed),
        "shuffle_b": torch.Generator().manual_seed(config.seed + 1),
    }
    loss_fn = GANLoss(config.loss)
    x_a = ctx.to_device(to_tanh_range(data_a.images))
    x_b = ctx.to_device(to_tanh_range(data_b.images))
    out = Path(config.out) if config.out else None
    ckpt = out / "checkpoint.pt" if out else None
    keys = ("d_a_loss", "d_b_loss", "g_loss", "cycle_loss", "identity_loss")
    history: dict[str, list] = {
        "epoch": [],
        **{k: [] for k in keys},
        "seconds": [],
        "images_per_second": [],
    }
    result = CycleGANResult(nets, history, checkpoint=ckpt, pools=pools)
    state = load_for_resume(ckpt, ctx) if resume and ckpt is not None else None
    if state is not None:
        if state.get("kind") != "cyclegan":
            raise PplGenError(f"resume: the checkpoint holds a {state.get('kind')!r} model")
        if [list(data_a.image_shape), list(data_b.image_shape)] != state["image_shapes"]:
            raise PplGenError(
                f"resume: the checkpoint's domains have shapes {state['image_shapes']}, the "
                f"data {[list(data_a.image_shape), list(data_b.image_shape)]}"
            )
        for k in NETS:
            nets[k].load_state_dict(state["nets"][k])
        for k in opts:
            opts[k].load_state_dict(state["opts"][k])
            scheds[k].load_state_dict(state["scheds"][k])
        ranks = state.get("pools_ranks") or [state["pools"]]
        if len(ranks) == ctx.world_size:
            for k in pools:
                pools[k].load_state_dict(ranks[ctx.rank][k], device)
        for k, g in streams.items():
            g.set_state(state["rng"][k].cpu())
        result.history = history = state["history"]
        result.epochs, result.iterations = state["epoch"], state["iterations"]
        result.seconds = state["seconds"]
    # DDP wrappers (the networks themselves for one process): the discriminators' wrappers
    # serve their own steps; the generator step calls the frozen discriminators unwrapped.
    wrapped = {k: ctx.wrap(v) for k, v in nets.items()}
    g_nets = {**nets, "G_AB": wrapped["G_AB"], "G_BA": wrapped["G_BA"]}
    show = ctx.is_main
    fixed_a, fixed_b = x_a[:8], x_b[:8]
    last = config.epochs if stop_after is None else min(config.epochs, result.epochs + stop_after)
    n_batches = n // config.batch_size
    for epoch in range(result.epochs, last):
        for net in nets.values():
            net.train()
        t0 = time.perf_counter()
        sums = {k: torch.zeros((), device=device) for k in keys}
        perm_a = torch.randperm(x_a.shape[0], generator=streams["shuffle_a"]).to(device)
        perm_b = torch.randperm(x_b.shape[0], generator=streams["shuffle_b"]).to(device)
        bar = tqdm(
            range(n_batches),
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=True if not (config.progress and show) else None,
            leave=False,
        )
        for i in bar:
            sl = slice(i * config.batch_size, (i + 1) * config.batch_size)
            real_a, real_b = x_a[ctx.shard(perm_a[sl])], x_b[ctx.shard(perm_b[sl])]
            with ctx.guard("CycleGAN training step (DDP gradient all-reduce)"):
                losses, fake_a, fake_b = cycle_generator_step(
                    g_nets,
                    opts["G"],
                    loss_fn,
                    real_a,
                    real_b,
                    config.lambda_cycle,
                    config.lambda_identity,
                    config.precision,
                )
                sums["d_a_loss"] += cycle_discriminator_step(
                    wrapped["D_A"],
                    opts["D_A"],
                    loss_fn,
                    real_a,
                    pools["A"].query(fake_a.float()),
                    config.precision,
                )
                sums["d_b_loss"] += cycle_discriminator_step(
                    wrapped["D_B"],
                    opts["D_B"],
                    loss_fn,
                    real_b,
                    pools["B"].query(fake_b.float()),
                    config.precision,
                )
            for k in ("g_loss", "cycle_loss", "identity_loss"):
                sums[k] += losses[k].float()
            result.iterations += 1
        seconds = time.perf_counter() - t0
        if ctx.distributed:
            stacked = ctx.all_reduce_mean(torch.stack([sums[k] for k in keys]), "loss all-reduce")
            sums = dict(zip(keys, stacked, strict=True))
        means = {k: float(v) / max(n_batches, 1) for k, v in sums.items()}
        if not all(torch.isfinite(torch.tensor(v)) for v in means.values()):
            where = f" (last good checkpoint kept at {ckpt})" if ckpt else ""
            raise TrainingDiverged(f"non-finite CycleGAN loss in epoch {epoch + 1}{where}")
        for s in scheds.values():
            s.step()
        result.seconds += seconds
        result.epochs = epoch + 1
        history["epoch"].append(epoch + 1)
        for k in keys:
            history[k].append(means[k])
        history["seconds"].append(result.seconds)
        history["images_per_second"].append(2 * n_batches * config.batch_size / seconds)
        pools_ranks = (
            ctx.all_gather_object({k: v.state_dict() for k, v in pools.items()})
            if ctx.distributed and out is not None
            else None
        )
        if not show:
            continue
        if config.progress:
            tqdm.write(  # stderr: stdout stays clean for --json
                f"epoch {epoch + 1}: G {means['g_loss']:.3f} (cycle {means['cycle_loss']:.3f}), "
                f"D_A {means['d_a_loss']:.3f}, D_B {means['d_b_loss']:.3f}",
                file=sys.stderr,
            )
        if out is not None:
            save_sample_grid(
                translation_panel(nets, fixed_a, fixed_b),
                out / f"samples_epoch_{epoch + 1:03d}.png",
                8,
            )
            plot_gan_losses(history, out / "loss_curves.png")
            state = {
                "kind": "cyclegan",
                "config": asdict(config),
                "data": data_spec or {"a": data_a.name, "b": data_b.name},
                "image_shapes": [list(data_a.image_shape), list(data_b.image_shape)],
                "nets": {k: v.state_dict() for k, v in nets.items()},
                "opts": {k: v.state_dict() for k, v in opts.items()},
                "scheds": {k: v.state_dict() for k, v in scheds.items()},
                "pools": {k: v.state_dict() for k, v in pools.items()},
                "rng": {k: g.get_state() for k, g in streams.items()},
                "epoch": result.epochs,
                "iterations": result.iterations,
                "seconds": result.seconds,
                "history": history,
            }
            if ctx.distributed:
                state["pools_ranks"], state["world_size"] = pools_ranks, ctx.world_size
            save_checkpoint(ckpt, state)
    for net in nets.values():
        net.eval()
    return result


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


def load_cyclegan(state: dict, device: torch.device | str = "cpu") -> dict[str, nn.Module]:
    """Rebuild the four networks (eval mode, on ``device``) from a checkpoint written by
    :func:`train_cyclegan`.  Generators map [-1, 1] images to [-1, 1].

    Raises:
        PplGenError: not a CycleGAN checkpoint.
    """
    if state.get("kind") != "cyclegan":
        raise PplGenError(f"CHECKPOINT: not a CycleGAN checkpoint (kind {state.get('kind')!r})")
    config = CycleGANConfig(**{"n_down": 2, **state["config"]})
    shape_a, shape_b = (tuple(s) for s in state["image_shapes"])
    nets = build_cyclegan(config, shape_a, shape_b)
    dev = resolve_device(device)
    for k in NETS:
        nets[k].load_state_dict(state["nets"][k])
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
