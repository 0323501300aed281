"""Training DANN by SGD as in Ganin et al. (JMLR 2016, sec. 5.2.2), and its baselines.

One step takes ``batch_size / 2`` labelled source images and ``batch_size / 2`` unlabelled
target images, passes them through G_f (one forward pass per domain by default, so batch
norm uses per-domain batch statistics; ``separate_batches=False`` for one joint pass), and
minimises

    loss = CE(G_y(G_f(x_s)), y_s) + BCE(G_d(R_λ(G_f([x_s; x_t]))), [0; 1])

(eq. 9-10 with the reversal layer, eq. 13-15) with SGD, momentum 0.9, and the paper's
schedules driven by training progress ``p ∈ [0, 1]`` (steps done / total steps):

* learning rate ``μ_p = μ_0 / (1 + α p)^β``, ``μ_0 = 0.01``, ``α = 10``, ``β = 0.75``
  (a :class:`torch.optim.lr_scheduler.LambdaLR` stepped every batch);
* adaptation factor ``λ_p = 2 / (1 + exp(-γ p)) - 1``, ``γ = 10``
  (:func:`ppl_gen.adaptation.gradient_reversal.dann_lambda`).

``mode="source-only"`` is the paper's lower bound: the same network and schedule trained
on labelled source batches only (the target is never seen, not even by batch norm); the
train-on-target upper bound is ``mode="source-only"`` with the target as the source.

The step is a few small functions (:func:`batch_indices`, :func:`dann_losses`) over plain
``torch.optim``; the loop is the engine's (:func:`ppl_gen.engine.fit`): progress, the
divergence stop, a weights-only checkpoint after every epoch, and ``resume=True``
restoring the model, optimiser, scheduler, step count, history and every random stream, so a
resumed run equals an uninterrupted one.  A resume may raise ``epochs`` (the schedules are
recomputed from the new total number of steps) or change ``progress`` / ``device`` /
``checkpoint``; any other changed setting, network or data is refused, naming it.

**Data parallelism** (``torchrun --nproc-per-node N -m ppl_gen train dann ...``, see
:mod:`ppl_gen.core.distributed`): every rank draws the same batch permutations (one shared
generator), and from each global step of ``batch_size / 2`` source and ``batch_size / 2``
target indices takes its part ``idx[rank::N]`` (``DistributedSampler``'s rule), so the
global batch is the configured one.  The network runs inside ``DistributedDataParallel``;
its batch-norm layers are converted by :func:`ppl_gen.core.distributed.sync_batchnorm`, so each
forward pass normalises with the statistics of the global batch *of that pass* -- with
``separate_batches`` the source pass and the target pass still get per-domain statistics,
exactly as in one process.  Each rank's loss is its share of the global sums, ``N (sum_r
CE / B_s + sum_r BCE / (B_s + B_t))``, so DDP's gradient average is the gradient of the
single-process loss even when the shards differ in size.  The step's losses and domain
accuracy are summed over the ranks (every rank sees the same values, and stops together
on a non-finite loss).  Dropout masks differ per rank (torch seed ``seed + 1 + rank``).
Only rank 0 shows progress, writes checkpoints (with every rank's random state) and
figures; a crashed rank makes the others stop with
:class:`~ppl_gen.core.distributed.RankFailed`, and the last good checkpoint stays intact.

``precision="bf16"`` runs the training forward passes under :func:`ppl_gen.core.precision.autocast`
(accuracies and features for the analysis are computed in float32);
``deterministic=True`` runs training under :func:`ppl_gen.core.precision.deterministic`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from ppl_gen.adaptation.dann import ARCHS, DANN, ArchConfig, arch_config
from ppl_gen.adaptation.features import accuracy, extract_features, predict
from ppl_gen.core import precision as amp
from ppl_gen.core.device import resolve_device
from ppl_gen.core.distributed import (
    DistributedContext,
    init_from_env,
    sync_batchnorm,
)
from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.data.domains import DOMAINS, DomainData, input_stats, load_domain, match_channels
from ppl_gen.engine.loop import EpochSummary, LoopConfig, checkpoint_kept, fit
from ppl_gen.engine.rng import seed_everything
from ppl_gen.engine.state import data_fingerprint, settings_record

__all__ = [
    "DOMAINS",
    "MAY_CHANGE",
    "MODES",
    "DANNConfig",
    "DANNResult",
    "DANNTask",
    "DomainData",
    "accuracy",
    "batch_indices",
    "dann_losses",
    "dann_step",
    "extract_features",
    "input_stats",
    "load_domain",
    "make_optimizer",
    "match_channels",
    "model_from_checkpoint",
    "predict",
    "steps_per_epoch",
    "train_dann",
]

MODES = ("dann", "source-only")
#: Settings a resume may change (the schedules follow a new ``epochs``).
MAY_CHANGE = frozenset({"epochs", "progress", "device", "checkpoint"})


@dataclass
class DANNConfig:
    """Settings of :func:`train_dann` (defaults: Ganin et al. 2016, sec. 5.2.2).

    Attributes:
        arch: ``"paper"`` or ``"bn"`` (see :mod:`ppl_gen.adaptation.dann`).
        mode: ``"dann"`` (domain-adversarial) or ``"source-only"``.
        epochs: passes over the source training images.
        batch_size: images per SGD step, half source and half target (even, >= 2).
        lr: μ_0, the initial learning rate.
        alpha, beta: the learning-rate annealing ``μ_0 / (1 + α p)^β``.
        gamma: γ of the λ schedule.
        lambda_: a fixed λ instead of the schedule (``None``: scheduled).
        momentum: SGD momentum.
        separate_batches: pass the source and the target half of a step through G_f
            separately, so batch norm normalises each domain with its own batch statistics
            during training (``False``: one joint forward pass).  Without batch norm
            (``"paper"``) both give the same gradients.
        weight_decay: L2 penalty of SGD.
        seed: seeds initialisation, batch order and dropout.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        checkpoint: file written after every epoch (``None``: no checkpoints).
        progress: show a tqdm bar and per-epoch log lines.
        precision: ``fp32`` or ``bf16`` (training forward passes under ``torch.autocast``).
        deterministic: ``torch.use_deterministic_algorithms(True)`` during training.
    """

    arch: str = "paper"
    mode: str = "dann"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.01
    alpha: float = 10.0
    beta: float = 0.75
    gamma: float = 10.0
    lambda_: float | None = None
    momentum: float = 0.9
    separate_batches: bool = True
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    checkpoint: str | None = None
    progress: bool = True
    precision: str = "fp32"
    deterministic: bool = False

    def validate(self) -> DANNConfig:
        """Check every field; returns ``self``.

        Raises:
            PplGenError: naming the parameter (field) that is bad.
        """
        if self.arch not in ARCHS:
            raise PplGenError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if self.mode not in MODES:
            raise PplGenError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        require_positive_int("epochs", self.epochs)
        require_positive_int("batch_size", self.batch_size)
        if self.batch_size < 2 or self.batch_size % 2:
            raise PplGenError(
                "batch_size must be even and >= 2 (half source, half target), "
                f"got {self.batch_size}"
            )
        for flag, value in (("lr", self.lr), ("gamma", self.gamma)):
            if not (math.isfinite(value) and value > 0):
                raise PplGenError(f"{flag} must be a positive number, got {value!r}")
        for flag, value in (
            ("alpha", self.alpha),
            ("beta", self.beta),
            ("momentum", self.momentum),
            ("weight_decay", self.weight_decay),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise PplGenError(f"{flag} must be a non-negative number, got {value!r}")
        if self.lambda_ is not None and not (math.isfinite(self.lambda_) and self.lambda_ >= 0):
            raise PplGenError(f"lambda_ must be a non-negative number, got {self.lambda_!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise PplGenError(f"seed must be a non-negative integer, got {self.seed!r}")
        amp.check_precision(self.precision)
        resolve_device(self.device)
        return self


@dataclass
class DANNResult:
    """What :func:`train_dann` returns.

    Attributes:
        model: the trained :class:`DANN` (in eval mode, on the training device).
        history: per epoch: ``epoch``, ``label_loss`` (nats per source image),
            ``domain_loss`` (nats per image, ``None`` in source-only mode),
            ``domain_accuracy`` (fraction of the step's images whose domain G_d got right,
            ``None`` in source-only mode), ``lambda`` and ``lr`` at the epoch's end,
            ``seconds`` (cumulative training wall time).
        seconds: training wall time in seconds (resumed runs: all sessions).
        steps: SGD steps taken.
    """

    model: DANN
    history: dict[str, list] = field(default_factory=dict)
    seconds: float = 0.0
    steps: int = 0


def batch_indices(
    n_source: int, n_target: int, half: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of ``(source_idx, target_idx)`` pairs, ``half`` indices each.

    The source is covered once in random order (``max(1, n_source // half)`` steps, the
    incomplete last batch dropped); the target indices come from as many fresh random
    permutations as needed.  All permutations are drawn from the CPU ``generator``.
    """
    half_s = min(half, n_source)
    half_t = min(half, n_target)
    steps = max(1, n_source // half_s)
    src = torch.randperm(n_source, generator=generator)
    reps = -(-steps * half_t // n_target)
    tgt = torch.cat([torch.randperm(n_target, generator=generator) for _ in range(reps)])
    for i in range(steps):
        yield src[i * half_s : (i + 1) * half_s], tgt[i * half_t : (i + 1) * half_t]


def steps_per_epoch(n_source: int, half: int) -> int:
    """SGD steps in one epoch of :func:`batch_indices`."""
    return max(1, n_source // min(half, n_source))


def dann_step(
    model: DANN,
    xs: torch.Tensor,
    ys: torch.Tensor,
    xt: torch.Tensor | None,
    separate: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The DANN objective on one batch (Ganin et al. 2016, eq. 9-10 through R_λ).

    Args:
        model: the network (its reversal layer's λ already set), or its DDP wrapper.
        xs: ``(b_s, C, H, W)`` source images; ys: ``(b_s,)`` their labels.
        xt: ``(b_t, C, H, W)`` target images, or ``None`` for source-only training.
        separate: one forward pass per domain (per-domain batch-norm statistics) instead
            of one joint pass.

    Returns:
        ``(loss, stats)``: the scalar loss to back-propagate (nats) and the floats
        ``label_loss``, ``domain_loss``, ``domain_accuracy`` (the last two ``nan`` without
        ``xt``).
    """
    loss, label_loss, domain_loss, acc = dann_losses(model, xs, ys, xt, separate)
    return loss, {
        "label_loss": float(label_loss),
        "domain_loss": float(domain_loss),
        "domain_accuracy": float(acc),
    }


def dann_losses(
    model: DANN,
    xs: torch.Tensor,
    ys: torch.Tensor,
    xt: torch.Tensor | None,
    separate: bool = False,
    totals: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`dann_step`'s terms as tensors, optionally as shares of a larger batch.

    Args:
        model, xs, ys, xt, separate: as in :func:`dann_step`.
        totals: ``(B_s, B)``: the global step's source images and all its images.  Given,
            the terms are this shard's sums divided by those counts (``sum CE / B_s``,
            ``sum BCE / B``, correct domain guesses ``/ B``), so summing them over the
            shards of a data-parallel step gives the means of the whole batch.  ``None``:
            the means over this batch.

    Returns:
        ``(loss, label_loss, domain_loss, domain_accuracy)``: ``loss`` (scalar, with
        gradient) is ``label_loss + domain_loss``; the other three are detached scalars
        (nats, nats, fraction; the last two ``nan`` without ``xt``).
    """
    if xt is None:
        out = model(xs, domain=False)
        if totals is None:
            label_loss = F.cross_entropy(out.class_logits, ys)
        else:
            label_loss = F.cross_entropy(out.class_logits, ys, reduction="sum") / totals[0]
        nan = label_loss.detach().new_full((), float("nan"))
        return label_loss, label_loss.detach(), nan, nan
    b = xs.shape[0]
    if separate:
        out_s, out_t = model(xs), model(xt)
        class_logits = out_s.class_logits
        domain_logits = torch.cat([out_s.domain_logits, out_t.domain_logits])
    else:
        out = model(torch.cat([xs, xt]))
        class_logits, domain_logits = out.class_logits[:b], out.domain_logits
    domain = torch.cat([xs.new_zeros(b), xt.new_ones(xt.shape[0])])
    if totals is None:
        label_loss = F.cross_entropy(class_logits, ys)
        domain_loss = F.binary_cross_entropy_with_logits(domain_logits, domain)
        with torch.no_grad():
            acc = ((domain_logits > 0).float() == domain).float().mean()
    else:
        label_loss = F.cross_entropy(class_logits, ys, reduction="sum") / totals[0]
        domain_loss = (
            F.binary_cross_entropy_with_logits(domain_logits, domain, reduction="sum") / totals[1]
        )
        with torch.no_grad():
            acc = ((domain_logits > 0).float() == domain).float().sum() / totals[1]
    return label_loss + domain_loss, label_loss.detach(), domain_loss.detach(), acc


def make_optimizer(
    model: DANN, config: DANNConfig, total_steps: int
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    """SGD with momentum and the annealing ``μ_p = μ_0 / (1 + α p)^β``, ``p = step /
    total_steps`` (Ganin et al. 2016, sec. 5.2.2)."""
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    alpha, beta = config.alpha, config.beta

    def factor(step: int) -> float:
        return 1.0 / (1.0 + alpha * min(step / total_steps, 1.0)) ** beta

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class DANNTask:
    """The engine task of :func:`train_dann`: one SGD step on half a batch of source and
    half a batch of target images (module docs).

    Components ``model``, ``optimizer``, ``scheduler``; random stream ``batches`` (the
    shared permutations); the schedules' progress ``p`` is the engine's step count over
    ``total`` steps, so a resumed run continues them exactly.
    """

    def __init__(
        self,
        model: DANN,
        net: torch.nn.Module,
        config: DANNConfig,
        ctx: DistributedContext,
        source: DomainData,
        target: DomainData,
    ) -> None:
        self.model, self.net, self.config, self.ctx = model, net, config, ctx
        self.adversarial = config.mode == "dann"
        self.half = config.batch_size // 2
        self.n_s, self.n_t = source.x_train.shape[0], target.x_train.shape[0]
        self.per_epoch = steps_per_epoch(self.n_s, self.half)
        self.total = self.per_epoch * config.epochs
        self.optimizer, self.scheduler = make_optimizer(model, config, self.total)
        self.generator = torch.Generator().manual_seed(config.seed)
        # Host tensors are copied once, through pinned memory on CUDA.
        self.xs, self.ys = ctx.to_device(source.x_train), ctx.to_device(source.y_train)
        self.xt = ctx.to_device(target.x_train) if self.adversarial else None
        self.lam = model.grl.lambda_

    def components(self) -> dict:
        return {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler}

    def generators(self) -> dict[str, torch.Generator]:
        return {"batches": self.generator}

    def batches(self, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(batch_indices(self.n_s, self.n_t, self.half, self.generator))

    def start_epoch(self, epoch: int) -> None:
        self.model.train()

    def after_restore(self, state: dict) -> None:
        """Put the learning rate on the schedule of this run's total steps."""
        step = self.scheduler.last_epoch
        for group, base, factor in zip(
            self.optimizer.param_groups,
            self.scheduler.base_lrs,
            self.scheduler.lr_lambdas,
            strict=True,
        ):
            group["lr"] = base * factor(step)

    def step(self, batch: tuple[torch.Tensor, torch.Tensor], iteration: int) -> dict:
        config, device = self.config, self.ctx.device
        si, ti = (i.to(device) for i in batch)
        if self.adversarial:
            self.lam = self.model.set_progress(min(iteration / self.total, 1.0))
        else:
            self.lam = 0.0
        if self.ctx.distributed:
            stats = _distributed_step(
                self.net, self.optimizer, self.xs, self.ys, self.xt, si, ti, config, self.ctx
            )
        else:
            with amp.autocast(config.precision, device):
                loss, *terms = dann_losses(
                    self.model,
                    self.xs[si],
                    self.ys[si],
                    self.xt[ti] if self.xt is not None else None,
                    config.separate_batches,
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            stats = dict(zip(("label_loss", "domain_loss", "domain_accuracy"), terms, strict=True))
        self.optimizer.step()
        self.scheduler.step()
        if not self.adversarial:  # source-only: no domain terms (NaN placeholders)
            return {"loss": stats["label_loss"], "label_loss": stats["label_loss"]}
        return {"loss": stats["label_loss"] + stats["domain_loss"], **stats}

    def end_epoch(self, summary: EpochSummary) -> dict:
        means = summary.means
        return {
            "label_loss": means.get("label_loss"),
            "domain_loss": means.get("domain_loss"),
            "domain_accuracy": means.get("domain_accuracy"),
            "lambda": float(self.lam),
            "lr": self.optimizer.param_groups[0]["lr"],
        }

    def summary_line(self, epoch: int, entries: dict) -> str:
        line = f"{self.config.mode} epoch {epoch}: label loss {entries['label_loss']:.4f}"
        if self.adversarial:
            line += (
                f", domain loss {entries['domain_loss']:.4f}, domain accuracy "
                f"{entries['domain_accuracy']:.3f}, lambda {entries['lambda']:.3f}"
            )
        return line + f", lr {entries['lr']:.5f}"


def train_dann(
    source: DomainData,
    target: DomainData,
    config: DANNConfig | None = None,
    *,
    arch: ArchConfig | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    spec: dict | None = None,
    dist: DistributedContext | None = None,
) -> DANNResult:
    """Train DANN (or the source-only baseline) on labelled ``source`` and unlabelled
    ``target`` training images (data-parallel under torchrun: module docs).

    Args:
        source: labelled source domain (``y_train`` required), images ``(N_s, C, H, W)``.
        target: target domain (labels unused), images ``(N_t, C, H, W)``; channel counts
            must already match (:func:`match_channels`).
        config: settings (default :class:`DANNConfig`).
        arch: a custom network instead of ``config.arch``.
        resume: continue from ``config.checkpoint`` if that file exists.
        stop_after: stop after this many epochs in this call (the schedules still run over
            ``config.epochs``; a later ``resume=True`` call continues the run exactly).
        spec: JSON-able description stored in the checkpoint (data sources, for
            ``ppl-gen evaluate``).
        dist: the data-parallel context; default :func:`ppl_gen.core.distributed.init_from_env`
            (the torchrun job this process belongs to, else one process).  Every rank
            passes the whole of both domains.

    Returns:
        :class:`DANNResult` with the trained model (a plain :class:`DANN`, identical on
        every rank; losses are those of the global batches, nats per image).

    Raises:
        PplGenError: bad configuration, unlabelled source, mismatched channels or image
            sizes, an unreadable checkpoint or one of another network / settings / data, a
            global half-batch smaller than the number of processes.
        TrainingDiverged: a non-finite or exploded loss (the last checkpoint is kept).
        RankFailed: another rank stopped (crashed); the last checkpoint is left as it was.
    """
    config = (config or DANNConfig()).validate()
    if stop_after is not None:
        require_positive_int("stop_after", stop_after)
    ctx = dist if dist is not None else init_from_env(config.device)
    with amp.deterministic(config.deterministic, ctx.device):
        with checkpoint_kept(config.checkpoint):
            return _train_dann(source, target, config, ctx, arch, resume, stop_after, spec)


def _train_dann(
    source: DomainData,
    target: DomainData,
    config: DANNConfig,
    ctx: DistributedContext,
    arch: ArchConfig | None,
    resume: bool,
    stop_after: int | None,
    spec: dict | None,
) -> DANNResult:
    if source.y_train is None:
        raise PplGenError(f"source {source.name} has no labels: DANN needs a labelled source")
    if source.x_train.shape[1:] != target.x_train.shape[1:]:
        raise PplGenError(
            f"source {source.name} images {tuple(source.x_train.shape[1:])} and target "
            f"{target.name} images {tuple(target.x_train.shape[1:])} differ "
            "(see match_channels)"
        )
    half = config.batch_size // 2
    n_s, n_t = source.x_train.shape[0], target.x_train.shape[0]
    if ctx.distributed and min(half, n_s, n_t) < ctx.world_size:
        raise PplGenError(
            f"batch_size {config.batch_size}: each step's {min(half, n_s, n_t)} source / "
            f"target images cannot be split over {ctx.world_size} processes (every process "
            "needs at least one image of each domain)"
        )
    seed_everything(config.seed)
    net_config = arch_config(arch if arch is not None else config.arch, source.channels)
    adversarial = config.mode == "dann"
    model = DANN(net_config, lambda_=config.lambda_, gamma=config.gamma)
    model.set_input_stats(*(input_stats(source, target) if adversarial else input_stats(source)))
    model.to(ctx.device)
    if ctx.distributed:
        sync_batchnorm(model, ctx)  # global-batch statistics, per forward pass
        torch.manual_seed(config.seed + 1 + ctx.rank)  # per-rank dropout masks
    # Source-only never uses G_d; the batch-norm buffers agree on every rank by construction.
    net = ctx.wrap(model, find_unused_parameters=not adversarial, forward_sync_buffers=False)
    task = DANNTask(model, net, config, ctx, source, target)
    settings = {**settings_record(config), "network": settings_record(net_config)}
    loop = LoopConfig(
        epochs=config.epochs,
        kind="dann",
        settings=settings,
        may_change=MAY_CHANGE,
        data_fingerprint=data_fingerprint(
            source.x_train, source.y_train, target.x_train if adversarial else None
        ),
        meta={"spec": spec, "arch": asdict(net_config)},
        checkpoint=config.checkpoint,
        resume=resume,
        stop_after=stop_after,
        seed=config.seed,
        progress=config.progress,
        desc=f"{config.mode} epoch",
    )
    fitted = fit(task, loop, ctx)
    result = DANNResult(
        model=model, history=fitted.history, seconds=fitted.seconds, steps=fitted.iterations
    )
    model.eval()
    if ctx.distributed:  # hand back a plain network (no process-group batch norm)
        plain = DANN(net_config, lambda_=config.lambda_, gamma=config.gamma)
        plain.load_state_dict(model.state_dict())
        plain.grl.lambda_ = model.grl.lambda_
        result.model = plain.to(ctx.device).eval()
    return result


def _distributed_step(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    xs_all: torch.Tensor,
    ys_all: torch.Tensor,
    xt_all: torch.Tensor | None,
    si: torch.Tensor,
    ti: torch.Tensor,
    config: DANNConfig,
    ctx: DistributedContext,
) -> dict[str, float]:
    """This rank's shard of the global step ``(si, ti)``: forward (DDP), backward with the
    loss scaled so that DDP's average is the global gradient, and the global step's
    statistics (summed over ranks).  The optimiser step is left to the caller."""
    si_r, ti_r = ctx.shard(si), ctx.shard(ti)
    totals = (si.shape[0], si.shape[0] + (ti.shape[0] if xt_all is not None else 0))
    with ctx.guard("DANN training step (DDP gradient all-reduce)"):
        with amp.autocast(config.precision, ctx.device):
            loss, *terms = dann_losses(
                net,
                xs_all[si_r],
                ys_all[si_r],
                xt_all[ti_r] if xt_all is not None else None,
                config.separate_batches,
                totals,
            )
        optimizer.zero_grad(set_to_none=True)
        (loss * ctx.world_size).backward()
    sums = ctx.all_reduce_sum(torch.stack(terms).float(), "DANN loss all-reduce").tolist()
    return dict(zip(("label_loss", "domain_loss", "domain_accuracy"), sums, strict=True))


def model_from_checkpoint(state: dict, device: str | torch.device = "cpu") -> DANN:
    """Rebuild the trained :class:`DANN` from a checkpoint written by :func:`train_dann`.

    Raises:
        PplGenError: naming ``CHECKPOINT`` if it is not a DANN checkpoint.
    """
    if state.get("kind") != "dann" or "arch" not in state:
        raise PplGenError("CHECKPOINT: not a DANN checkpoint (kind 'dann')")
    arch = {k: tuple(v) if isinstance(v, list) else v for k, v in state["arch"].items()}
    cfg = state.get("config", {})
    model = DANN(ArchConfig(**arch), lambda_=cfg.get("lambda_"), gamma=cfg.get("gamma", 10.0))
    model.load_state_dict(state["model"])
    return model.to(resolve_device(device)).eval()
