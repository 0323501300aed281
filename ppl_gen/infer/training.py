"""Stochastic variational inference for any model/guide pair (Pyro ``Trace_ELBO``, Adam).

:func:`train` fits a model and a guide that follow the data plate convention
(:mod:`ppl_gen.lvm.plates`) by maximising the ELBO on minibatches: Pyro computes the
differentiable (negative) ELBO of the minibatch, scaled by ``N / batch`` (Hoffman et al.
2013; Kingma & Welling 2014, eq. 8), and Adam updates every parameter the model and guide
touch (found in the parameter store exactly as ``pyro.infer.SVI`` does).  Per-datapoint
(mean-field) guide parameters get their own, larger learning rate, because each one sees
only one gradient per epoch.

The loop is the engine's (:func:`ppl_gen.engine.fit`); this module supplies the SVI step
(:class:`SVITask`).  The engine shows the progress bar, stops a non-finite or exploded
loss with :class:`TrainingDiverged` naming epoch and batch (the last good checkpoint is
kept), and writes a weights-only checkpoint after every epoch holding the model, the guide,
the Pyro parameters outside them (``pyro.param`` sites of hand-written models and guides,
under their fixed names), the optimiser, the history and every random stream, so that a
resumed run continues exactly as an uninterrupted one.  A resume may change ``epochs``,
``progress``, ``device``, ``checkpoint`` and ``val_every``; any other changed setting
(``lr``, ``batch_size``, ``elbo``, ``seed``, ...) or other training data (same shape or not,
or another binarisation) is refused with a :class:`~ppl_gen.core.errors.PplGenError` naming it.

Why not the engine's ``param_store=True``: :func:`ppl_gen.core.naming.unique_scope` names a
module's store entries with a per-process counter (``VAE_3$$$decoder.0.weight``), so the
whole store's names differ between the run and its resume; module weights travel as the
``model`` / ``guide`` components and only the other parameters the optimiser holds, under
their fixed names, as ``pyro_params`` (:class:`~ppl_gen.infer.svi_parts.PyroParams`).

**Data parallelism** (launched by ``torchrun``, see :mod:`ppl_gen.core.distributed`): every rank
draws the same permutation of the training set (shared seed) and, from each global
minibatch of ``batch_size`` rows, takes its part ``idx[rank::world_size]``, so no two ranks
ever use the same datapoint in a step and the global batches are exactly those of a single
process with the same seed.  Each rank evaluates the ELBO of its ``b_r`` rows under
``pyro.plate("data", N, subsample=idx_r)`` (scale ``N / b_r``); the gradients are then
combined as ``sum_r (b_r / B) grad_r``, which is exactly the gradient of the single-process
loss ``(N / B) sum_{i in batch} loss_i`` (for equal ``b_r``: the plain average DDP takes).
The per-datapoint (mean-field) guide's local parameters fit the same rule: rows a rank did
not touch have zero gradient there, so each row gets the gradient of the rank that used it.
Every rank then takes the same Adam step, and the parameters stay identical (rank 0's
values are broadcast once at the start, as ``DistributedDataParallel`` does); floating-point
buffers (batch-norm statistics) are averaged over the ranks at the end of every epoch.

Why not ``DistributedDataParallel``: DDP synchronises gradients only for modules whose
``forward`` is called through the DDP wrapper (it prepares its gradient buckets there),
while Pyro's ELBOs call the model and guide themselves and reach parameters through the
Pyro parameter store (``pyro.module`` / ``pyro.param``), including parameters that are not
in any ``nn.Module``.  So the trainer all-reduces, in one flat buffer per step, the
gradients of exactly the parameters the optimiser holds (found by a trace as
``pyro.infer.SVI`` finds them), plus the loss for reporting.

Only rank 0 shows the progress bar and writes checkpoints (atomically, so a crash of any
rank leaves the last good one intact); every rank's global random state is stored in it, so
a resumed run continues as an uninterrupted one.  A rank that crashes makes the others' next
collective fail; they stop with :class:`~ppl_gen.core.distributed.RankFailed` naming the
checkpoint that survives, and ``torchrun`` ends the job with the crashed rank's error.

**Precision and determinism**: ``precision="bf16"`` runs the model's and guide's forward
passes under :func:`bf16_networks` (matrix products in bfloat16; module outputs,
distribution parameters, log-densities, parameters and Adam in float32); the validation
and the bound evaluators always run in float32.  ``deterministic=True`` turns on
``torch.use_deterministic_algorithms`` (and ``CUBLAS_WORKSPACE_CONFIG`` on CUDA) for the run.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import pyro
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch import nn

from ppl_gen.core.distributed import DistributedContext, init_from_env
from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.core.precision import bf16_networks, check_precision, deterministic
from ppl_gen.data.datasets import DataSplits
from ppl_gen.engine import rng
from ppl_gen.engine.divergence import TrainingDiverged
from ppl_gen.engine.loop import EpochSummary, LoopConfig, checkpoint_kept, fit
from ppl_gen.engine.state import data_fingerprint, settings_record
from ppl_gen.infer.elbos import ELBOS, make_elbo, training_elbo
from ppl_gen.infer.local import fit_local_guide, frozen, validation_elbo
from ppl_gen.infer.objectives import check_objective, make_objective
from ppl_gen.infer.param_stores import isolated_store
from ppl_gen.infer.svi_parts import (
    EpochBatches,
    PyroParams,
    average_buffers,
    binarize_on_host_stream,
)

__all__ = [
    "ELBOS",
    "MAY_CHANGE",
    "SVITask",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "fit_local_guide",
    "frozen",
    "make_elbo",
    "train",
    "validation_elbo",
]


@dataclass
class TrainConfig:
    """Settings of :func:`train`.

    A resume may change ``epochs`` (a longer run continues), ``progress``, ``device`` (the
    named random streams live on the CPU, so a GPU checkpoint resumes on the CPU and back;
    the continuation is then not bit-identical), ``checkpoint`` and ``val_every``
    (:data:`MAY_CHANGE`, applied from the new settings); it refuses any other change, and
    another ``data.binarize`` mode.

    Attributes:
        epochs: passes over the training set (>= 1).
        batch_size: datapoints per minibatch (>= 1).
        lr: Adam learning rate of global parameters (networks, likelihood scales).
        local_lr: Adam learning rate of per-datapoint guide parameters.
        local_steps: for per-datapoint guides, Adam steps per minibatch: ``local_steps -
            1`` steps on the minibatch's local parameters alone (model frozen), then the
            joint step (default 1: the joint step only; single process only).
        elbo: ``trace`` (``Trace_ELBO``, Monte Carlo KL), ``analytic-kl``
            (``TraceMeanField_ELBO``, closed-form KL where available), ``jit`` or
            ``jit-analytic-kl`` (their ``torch.jit`` compiled versions; minibatches of equal
            size), ``enum`` (``TraceEnum_ELBO``: discrete latents summed out exactly).
        num_particles: samples per datapoint in the ELBO estimate.
        objective, k, estimator: ``elbo`` or ``iwae`` (IWAE-K, ``k`` samples per datapoint),
            gradient estimator ``reparam``, ``stl`` or ``dreg`` (:mod:`ppl_gen.infer.objectives`).
        seed: seeds Pyro/torch/numpy, the minibatch order and dynamic binarisation.
        val_refit_steps: for per-datapoint guides, full-batch Adam steps fitting fresh
            local parameters to the validation set each epoch (model frozen).
        val_every: compute the validation ELBO every this many epochs (0: never).
        checkpoint: path of the checkpoint written at the end of each epoch (or ``None``).
        progress: show a progress bar (rank 0 only when distributed).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (under torchrun: ``cuda`` means
            GPU ``LOCAL_RANK``).
        precision: ``fp32`` or ``bf16`` (forward passes under ``torch.autocast`` with
            bfloat16; not with the ``jit`` ELBOs).
        deterministic: ``torch.use_deterministic_algorithms(True)`` during training.
    """

    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    local_lr: float = 1e-2
    local_steps: int = 1
    elbo: str = "analytic-kl"
    num_particles: int = 1
    objective: str = "elbo"
    k: int = 1
    estimator: str = "reparam"
    seed: int = 0
    val_refit_steps: int = 100
    val_every: int = 1
    checkpoint: str | None = None
    progress: bool = True
    device: str = "auto"
    precision: str = "fp32"
    deterministic: bool = False

    def validate(self) -> None:
        """Raise :class:`PplGenError` naming the first bad field."""
        require_positive_int("epochs", self.epochs)
        require_positive_int("batch_size", self.batch_size)
        require_positive_int("num_particles", self.num_particles)
        require_positive_int("local_steps", self.local_steps)
        if self.elbo not in ELBOS:
            raise PplGenError(f"elbo must be one of {', '.join(ELBOS)}, got {self.elbo!r}")
        if not self.lr > 0:
            raise PplGenError(f"lr must be positive, got {self.lr}")
        if not self.local_lr > 0:
            raise PplGenError(f"local_lr must be positive, got {self.local_lr}")
        if type(self.val_every) is not int or self.val_every < 0:
            raise PplGenError(f"val_every must be an integer >= 0, got {self.val_every!r}")
        if type(self.seed) is not int or not 0 <= self.seed < 2**32 - 2**16:
            raise PplGenError(f"seed must be an integer in 0 .. 2**32 - 2**16, got {self.seed!r}")
        check_precision(self.precision)
        check_objective(self.objective, self.k, self.estimator, self.elbo, self.num_particles)
        if self.precision != "fp32" and self.elbo.startswith("jit"):
            raise PplGenError(
                f"precision {self.precision} does not combine with elbo {self.elbo} "
                "(torch.jit traces in float32); use trace or analytic-kl"
            )


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        history: per-epoch ``epoch``, ``train_elbo`` and ``val_elbo`` (nats per datapoint;
            ``val_elbo`` is ``None`` for epochs without validation) and ``seconds``
            (cumulative training wall time).
        epochs: epochs completed.
        iterations: optimiser steps taken.
        seconds: training wall time (seconds, validation excluded).
    """

    history: dict[str, list] = field(default_factory=dict)
    epochs: int = 0
    iterations: int = 0
    seconds: float = 0.0


def _discover_parameters(elbo, model, guide, x, indices) -> list[torch.Tensor]:
    """Unconstrained parameters the model and guide touch, as ``pyro.infer.SVI`` finds them."""
    with poutine.trace(param_only=True) as capture, torch.no_grad():
        Trace_ELBO().differentiable_loss(model, guide, x, indices)
    return [site["value"].unconstrained() for site in capture.trace.nodes.values()]


def _param_groups(params, guide, config: TrainConfig) -> list[dict]:
    local = {id(p) for p in guide.parameters()} if getattr(guide, "is_local", False) else set()
    groups = [
        {"params": [p for p in params if id(p) not in local], "lr": config.lr},
        {"params": [p for p in params if id(p) in local], "lr": config.local_lr},
    ]
    return [g for g in groups if g["params"]]


#: Settings a resume may change (applied from the new configuration); any other changed
#: setting of :class:`TrainConfig` is refused.
MAY_CHANGE = frozenset({"epochs", "progress", "device", "checkpoint", "val_every"})


class SVITask:
    """One SVI fit as an engine task (:class:`ppl_gen.engine.Task`).

    A step is Pyro's differentiable (negative) ELBO of the minibatch ``idx`` scaled by
    ``N / batch`` (nats), its backward pass, on several ranks the gradient all-reduce of
    the module docs, and an Adam step.  The step reports that scaled minibatch loss (the
    value the divergence stop watches) with weight ``batch``; the epoch's weighted mean
    divided by ``N`` is minus the mean per-datapoint ELBO (``train_elbo``).

    Built by :func:`train`, which discovers the parameters and builds the optimiser first.
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        data: DataSplits,
        config: TrainConfig,
        ctx: DistributedContext,
        elbo,
        params: list[torch.Tensor],
        optimizer: torch.optim.Optimizer,
        generators: dict[str, torch.Generator],
        fit_model: Callable | None = None,
    ) -> None:
        self.model, self.guide, self.data, self.config, self.ctx = model, guide, data, config, ctx
        self.elbo, self.params, self.optimizer = elbo, params, optimizer
        self.streams = generators
        self.n = data.train.shape[0]
        self.x = data.train
        # fit_model: the model the ELBO sees (marked for enumeration, see training_elbo).
        self.model_n = functools.partial(fit_model or model, size=self.n)
        self.guide_n = functools.partial(guide, size=self.n)
        self.dynamic = data.binarize == "dynamic"
        self.binarize = generators["binarize"]
        self.autocast = (
            functools.partial(bf16_networks, ctx.device)
            if config.precision == "bf16"
            else contextlib.nullcontext
        )
        modules = [m for m in (model, guide) if isinstance(m, nn.Module)]
        owned = {id(p) for m in modules for p in m.parameters()}
        self.free = PyroParams(params, owned)

    def components(self) -> dict:
        out: dict = {}
        if isinstance(self.model, nn.Module):
            out["model"] = self.model
        if isinstance(self.guide, nn.Module):
            out["guide"] = self.guide
        if self.free:
            out["pyro_params"] = self.free
        out["optimizer"] = self.optimizer
        return out

    def generators(self) -> dict[str, torch.Generator]:
        return self.streams

    def batches(self, epoch: int) -> EpochBatches:
        jit = self.config.elbo.startswith("jit")
        gen = self.streams["shuffle"]
        return EpochBatches(self.n, self.config.batch_size, gen, self.ctx.device, jit)

    def step(self, idx: torch.Tensor, iteration: int) -> dict:
        xb = self.x[idx]
        if self.dynamic:
            xb = binarize_on_host_stream(xb, self.binarize)
        if self.ctx.distributed:
            loss = _distributed_step(
                self.elbo, self.model_n, self.guide_n, xb, idx, self.params, self.optimizer,
                self.autocast, self.ctx,
            )  # fmt: skip
        else:
            self._local_steps(xb, idx)
            with self.autocast():
                loss = self.elbo.differentiable_loss(self.model_n, self.guide_n, xb, idx)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            loss = loss.detach()
        self.optimizer.step()
        return {"loss": loss, "weight": idx.shape[0]}

    def _local_steps(self, xb: torch.Tensor, idx: torch.Tensor) -> None:
        """``local_steps - 1`` Adam steps on the per-datapoint guide parameters alone
        (every other gradient dropped, so Adam leaves the model and its moments as they are)."""
        if self.config.local_steps <= 1 or not getattr(self.guide, "is_local", False):
            return
        local = {id(p) for p in self.guide.parameters()}
        for _ in range(self.config.local_steps - 1):
            with self.autocast():
                loss = self.elbo.differentiable_loss(self.model_n, self.guide_n, xb, idx)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for p in self.params:
                if id(p) not in local:
                    p.grad = None
            self.optimizer.step()

    def end_epoch(self, summary: EpochSummary) -> dict:
        config, data = self.config, self.data
        average_buffers((self.model, self.guide), self.ctx)
        val = None
        if config.val_every and summary.epoch % config.val_every == 0 and len(data.val):
            val = validation_elbo(
                self.model, self.guide, data.val, refit_steps=config.val_refit_steps, dist=self.ctx
            )
        return {"train_elbo": -summary.means["loss"] / self.n, "val_elbo": val}

    def summary_line(self, epoch: int, entries: dict) -> str:
        val = entries.get("val_elbo")
        return (
            f"epoch {epoch}: train ELBO {entries['train_elbo']:.3f}"
            + (f", validation ELBO {val:.3f}" if val is not None else "")
            + " nats/datapoint"
        )


def train(
    model: Callable,
    guide: Callable,
    data: DataSplits,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    spec: dict | None = None,
    dist: DistributedContext | None = None,
) -> TrainResult:
    """Fit ``model`` and ``guide`` to ``data.train`` by SVI (data-parallel under torchrun).

    Args:
        model, guide: Pyro callables following the data plate convention; ``nn.Module``
            instances are moved to the configured device.  Their parameters are whatever
            they register in Pyro's parameter store (``pyro.module`` / ``pyro.param``).
        data: the dataset; with ``data.binarize == "dynamic"`` every training minibatch is
            freshly binarised.
        config: training settings (defaults: :class:`TrainConfig`).
        resume: continue from ``config.checkpoint`` if it exists (every piece of state
            restored; training runs up to ``config.epochs``).  Only :data:`MAY_CHANGE`
            settings may differ from the checkpoint's, and the training data must be the
            same rows with the same ``binarize`` mode.
        spec: JSON-able description stored in the checkpoint so that tools can rebuild the
            model and guide (see :mod:`ppl_gen.lvm.builders`); its ``"kind"`` entry (default
            ``"latent-variable"``) becomes the checkpoint's kind, which selects the
            ``ppl-gen evaluate`` handler and the latent-tools loader.
        dist: the data-parallel context; default :func:`ppl_gen.core.distributed.init_from_env`
            (the torchrun job this process belongs to, else a single process).  Every rank
            passes the whole dataset; each uses its part of every minibatch (module docs).

    Returns:
        :class:`TrainResult` (ELBOs in nats per datapoint; identical on every rank).

    Raises:
        PplGenError: bad configuration (naming the parameter), an unreadable or unsafe
            checkpoint, or a resume with other settings or data (naming the setting).
        TrainingDiverged: a non-finite or exploded loss (the last checkpoint is left as
            it was).
        RankFailed: another rank stopped (crashed); the last checkpoint is left as it was.
    """
    config = config or TrainConfig()
    config.validate()
    ctx = dist if dist is not None else init_from_env(config.device)
    with deterministic(config.deterministic, ctx.device), pyro.validation_enabled(False):
        with checkpoint_kept(config.checkpoint), isolated_store():
            return _train(model, guide, data, config, ctx, resume=resume, spec=spec)


def _train(
    model: Callable,
    guide: Callable,
    data: DataSplits,
    config: TrainConfig,
    ctx: DistributedContext,
    *,
    resume: bool,
    spec: dict | None,
) -> TrainResult:
    device = ctx.device
    data = data.to(device)
    for obj in (model, guide):
        if isinstance(obj, nn.Module):
            obj.to(device)
    n = data.train.shape[0]
    if config.elbo.startswith("jit") and n < config.batch_size:
        raise PplGenError(f"batch_size {config.batch_size} exceeds the {n} training rows")
    if ctx.distributed and config.batch_size < ctx.world_size:
        raise PplGenError(
            f"batch_size {config.batch_size} is smaller than the {ctx.world_size} processes "
            "(each process needs at least one row of every minibatch)"
        )
    # The minibatch order and binarisation are shared by all ranks; model/guide sampling
    # (torch's global generator) differs per rank so that ranks draw independent noise.
    # Both named streams live on the CPU, so a resume on another device restores them.
    rng.seed_everything(config.seed + ctx.rank)
    generators = {
        "shuffle": torch.Generator().manual_seed(config.seed),
        "binarize": torch.Generator().manual_seed(config.seed + 1),
    }
    first = torch.arange(min(n, config.batch_size), device=device)
    x_first = data.train[first]
    if data.binarize == "dynamic":
        # Discover on data of the kind the model is trained on (0/1), not on grey levels;
        # a stream of its own leaves the training streams untouched.
        x_first = torch.bernoulli(
            x_first.cpu(), generator=torch.Generator().manual_seed(config.seed + 2)
        ).to(device)
    setup = getattr(guide, "setup", None)
    if setup is not None:
        setup(x_first, first, n)
    elbo, fit_model = training_elbo(
        model, guide, x_first, first, n, config.elbo, config.num_particles
    )
    if (config.objective, config.estimator) != ("elbo", "reparam"):
        elbo, fit_model = make_objective(config), model  # IWAE-K, STL, DReG
    model_n = functools.partial(fit_model, size=n)
    guide_n = functools.partial(guide, size=n)
    params = _discover_parameters(elbo, model_n, guide_n, x_first, first)
    ctx.broadcast_parameters(params)
    optimizer = torch.optim.Adam(_param_groups(params, guide, config))
    task = SVITask(model, guide, data, config, ctx, elbo, params, optimizer, generators, fit_model)
    loop = LoopConfig(
        epochs=config.epochs,
        kind=(spec or {}).get("kind", "latent-variable"),
        settings={**settings_record(config), "binarize": data.binarize},
        may_change=MAY_CHANGE,
        data_fingerprint=data_fingerprint(data.train) if config.checkpoint else None,
        meta={"spec": spec},
        checkpoint=config.checkpoint,
        resume=resume,
        seed=config.seed,
        progress=config.progress,
    )
    done = fit(task, loop, ctx)
    history = {key: list(done.history.get(key, [])) for key in HISTORY_KEYS}
    return TrainResult(
        history=history, epochs=done.epochs, iterations=done.iterations, seconds=done.seconds
    )


#: The entries of :attr:`TrainResult.history`.
HISTORY_KEYS = ("epoch", "train_elbo", "val_elbo", "seconds")


def _sync_gradients(
    params: list[torch.Tensor], loss: torch.Tensor | None, weight: float, ctx: DistributedContext
) -> float:
    """Replace every gradient by ``sum_r weight_r grad_r`` across ranks (one all-reduce) and
    return ``sum_r weight_r loss_r``; parameters without a gradient count as zero."""
    grads = [p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel()) for p in params]
    lval = loss.detach().reshape(1).to(params[0].dtype) if loss is not None else None
    flat = torch.cat([*grads, lval if lval is not None else params[0].new_zeros(1)])
    flat.mul_(weight)
    ctx.all_reduce_sum(flat, "gradient all-reduce")
    start = 0
    for p in params:
        g = flat[start : start + p.numel()].view_as(p)
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)
        start += p.numel()
    return float(flat[-1])


def _distributed_step(
    elbo,
    model_n: Callable,
    guide_n: Callable,
    xb: torch.Tensor,
    idx: torch.Tensor,
    params: list[torch.Tensor],
    optimizer: torch.optim.Optimizer,
    autocast: Callable,
    ctx: DistributedContext,
) -> float:
    """This rank's part of the global minibatch ``(xb, idx)``: loss, backward, gradient
    all-reduce with weight ``b_r / B`` (module docs).  Returns the global minibatch's loss
    (negative ELBO scaled to the whole training set, nats), the same on every rank."""
    x_r, idx_r = ctx.shard(xb), ctx.shard(idx)
    optimizer.zero_grad(set_to_none=True)
    loss = None
    if idx_r.shape[0]:
        with autocast():
            loss = elbo.differentiable_loss(model_n, guide_n, x_r, idx_r)
        loss.backward()
    return _sync_gradients(params, loss, idx_r.shape[0] / idx.shape[0], ctx)
