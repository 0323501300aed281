"""Stochastic variational inference for any model/guide pair (Pyro ``Trace_ELBO``, Adam).

:func:`train` fits a model and a guide that follow the data plate convention
(:mod:`ppl_gen.lvm.plates`) by maximising the ELBO on minibatches: Pyro computes the
differentiable (negative) ELBO of the minibatch, scaled by ``N / batch`` (Hoffman et al.
2013; Kingma & Welling 2014, eq. 8), and Adam updates every parameter the model and guide
touch (found in the parameter store exactly as ``pyro.infer.SVI`` does).  Per-datapoint
(mean-field) guide parameters get their own, larger learning rate, because each one sees
only one gradient per epoch.

Features: progress bar with the running training ELBO, validation ELBO each epoch,
checkpoint save (atomic) and resume of model, guide, optimiser, epoch, history and random
number generators, so that a resumed run continues exactly as an uninterrupted one; a
non-finite loss stops training with :class:`TrainingDiverged` naming epoch and batch, and
the last good checkpoint is kept.

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
rank leaves the last good one intact); every rank's Pyro random state is stored in it, so a
resumed run continues as an uninterrupted one.  A rank that crashes makes the others' next
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
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyro
import pyro.util
import torch
from pyro import poutine
from pyro.infer import (
    JitTrace_ELBO,
    JitTraceMeanField_ELBO,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceMeanField_ELBO,
)
from torch import nn
from tqdm.auto import tqdm

from ppl_gen.core.checkpoint import load_checkpoint, save_checkpoint
from ppl_gen.core.device import to_device
from ppl_gen.core.distributed import DistributedContext, RankFailed, init_from_env
from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.core.precision import bf16_networks, check_precision, deterministic
from ppl_gen.data.datasets import DataSplits, binarize_batch, iterate_minibatches
from ppl_gen.engine.divergence import TrainingDiverged
from ppl_gen.guides import MeanFieldGuide
from ppl_gen.infer.bounds import evaluate_bounds


class _JitTraceMeanFieldELBO(JitTraceMeanField_ELBO):
    """``JitTraceMeanField_ELBO`` that compiles once.

    Pyro 1.9.2's ``JitTraceMeanField_ELBO.differentiable_loss`` tests for a cached
    ``_loss_and_surrogate_loss`` but stores its compiled closure as ``_differentiable_loss``,
    so it re-traces with ``torch.jit.trace`` on every step (3-4x slower than eager).  Pointing
    the attribute it tests at the closure it stores makes the cache hit.
    """

    def differentiable_loss(self, model, guide, *args, **kwargs):
        self._loss_and_surrogate_loss = getattr(self, "_differentiable_loss", None)
        return super().differentiable_loss(model, guide, *args, **kwargs)


ELBOS = {
    "trace": Trace_ELBO,
    "analytic-kl": TraceMeanField_ELBO,
    "jit": JitTrace_ELBO,
    "jit-analytic-kl": _JitTraceMeanFieldELBO,
    "enum": TraceEnum_ELBO,
}


@dataclass
class TrainConfig:
    """Settings of :func:`train`.

    Attributes:
        epochs: passes over the training set (>= 1).
        batch_size: datapoints per minibatch (>= 1).
        lr: Adam learning rate of global parameters (networks, likelihood scales).
        local_lr: Adam learning rate of per-datapoint guide parameters.
        elbo: ``trace`` (``Trace_ELBO``, Monte Carlo KL), ``analytic-kl``
            (``TraceMeanField_ELBO``, closed-form KL where available), ``jit`` or
            ``jit-analytic-kl`` (their ``torch.jit`` compiled versions; minibatches of equal
            size), ``enum`` (``TraceEnum_ELBO``: discrete latents summed out exactly).
        num_particles: samples per datapoint in the ELBO estimate.
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
    elbo: str = "analytic-kl"
    num_particles: int = 1
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
        if self.elbo not in ELBOS:
            raise PplGenError(f"elbo must be one of {', '.join(ELBOS)}, got {self.elbo!r}")
        if not self.lr > 0 or not self.local_lr > 0:
            raise PplGenError(f"lr must be positive, got {self.lr} / {self.local_lr}")
        check_precision(self.precision)
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


def make_elbo(name: str, num_particles: int = 1):
    """The Pyro ELBO object for ``name`` (see :class:`TrainConfig`), vectorised particles."""
    if name not in ELBOS:
        raise PplGenError(f"elbo must be one of {', '.join(ELBOS)}, got {name!r}")
    if name == "enum":
        # Discrete sites marked infer={"enumerate": "parallel"} are summed out exactly.
        return TraceEnum_ELBO(max_plate_nesting=1, num_particles=num_particles)
    kwargs = {"num_particles": num_particles, "vectorize_particles": num_particles > 1}
    if name.startswith("jit"):
        kwargs["ignore_jit_warnings"] = True  # shape checks are constant within a trace
    return ELBOS[name](**kwargs)


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


@contextlib.contextmanager
def frozen(module: Callable) -> Iterator[None]:
    """Freeze an ``nn.Module``'s parameters (and put it in eval mode) inside the block."""
    if not isinstance(module, nn.Module):
        yield
        return
    flags = [(p, p.requires_grad) for p in module.parameters()]
    was_training = module.training
    for p, _ in flags:
        p.requires_grad_(False)
    module.eval()
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        module.train(was_training)


def fit_local_guide(
    model: Callable,
    x: torch.Tensor,
    *,
    steps: int = 500,
    lr: float = 1e-2,
    elbo: str = "analytic-kl",
    batch_size: int | None = None,
    guide: Callable | None = None,
) -> Callable:
    """Fit a fresh per-datapoint guide to ``x`` with the model frozen (test-time inference).

    A non-amortised guide has no parameters for unseen datapoints, so evaluating it on test
    data means running its inference there: new local parameters ``(m_i, s_i)`` for each row
    of ``x`` are fitted by SVI for ``steps`` passes over ``x`` while every model parameter
    stays fixed.  The bounds then measure the model with the best the mean-field family can
    do in that budget (Cremer et al. 2018's ``q*`` approximated by optimisation).

    Args:
        model: the trained Pyro model (its ``nn.Module`` parameters are frozen meanwhile).
        x: ``(N, D)`` datapoints on the model's device.
        steps: passes over ``x`` (Adam steps when ``batch_size`` is ``None``).
        lr: Adam learning rate of the local parameters.
        elbo: ELBO flavour (see :class:`TrainConfig`).
        batch_size: minibatch size (default: all of ``x`` at once).
        guide: a per-datapoint guide for the rows of ``x`` to start from (e.g. initialised
            at an encoder's output: semi-amortised inference); default a fresh
            :class:`~ppl_gen.guides.MeanFieldGuide`.

    Returns:
        The fitted guide (a :class:`~ppl_gen.guides.MeanFieldGuide` with ``num_data = N``
        unless ``guide`` was given).
    """
    n = x.shape[0]
    if guide is None:
        guide = MeanFieldGuide(model, n)
        guide.setup(x[:1], torch.zeros(1, dtype=torch.long, device=x.device), n)
    guide.to(x.device)
    if elbo != "enum":
        elbo = "analytic-kl" if elbo.endswith("analytic-kl") else "trace"
    loss_fn = make_elbo(elbo)
    model_n = functools.partial(model, size=n)
    guide_n = functools.partial(guide, size=n)
    optimizer = torch.optim.Adam(guide.parameters(), lr=lr)
    with frozen(model), pyro.validation_enabled(False):
        for _ in range(steps):
            for idx in iterate_minibatches(n, batch_size or n, shuffle=False, device=x.device):
                loss = loss_fn.differentiable_loss(model_n, guide_n, x[idx], idx)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return guide


def validation_elbo(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    refit_steps: int = 100,
    dist: DistributedContext | None = None,
) -> float:
    """Mean ELBO of ``x`` (nats per datapoint), one sample per datapoint.

    Amortised guides are evaluated directly; per-datapoint guides first get fresh local
    parameters fitted to ``x`` (:func:`fit_local_guide`, ``refit_steps`` passes).  With a
    distributed ``dist`` each rank scores its shard of ``x`` and the sums are all-reduced
    (the same number on every rank).
    """
    ctx = dist or DistributedContext(device=x.device)
    part = ctx.shard(x)
    total = 0.0
    if part.shape[0]:
        if getattr(guide, "is_local", False):
            guide = fit_local_guide(model, part, steps=refit_steps)
        total = float(evaluate_bounds(model, guide, part, k=1).elbo.double().sum())
    return ctx.all_reduce_float(total, "validation ELBO") / x.shape[0]


def _rng_state(generators: dict[str, torch.Generator]) -> dict:
    state = {"pyro": pyro.util.get_rng_state(), "generators": {}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    for name, gen in generators.items():
        state["generators"][name] = gen.get_state()
    return state


def _set_rng_state(state: dict, generators: dict[str, torch.Generator]) -> None:
    # RNG states must be CPU byte tensors; a checkpoint loaded with map_location=cuda has
    # them on the GPU.
    state = to_device(state, "cpu")
    pyro.util.set_rng_state(state["pyro"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, gen in generators.items():
        gen.set_state(state["generators"][name])


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
            instances are moved to the configured device.
        data: the dataset; with ``data.binarize == "dynamic"`` every training minibatch is
            freshly binarised.
        config: training settings (defaults: :class:`TrainConfig`).
        resume: continue from ``config.checkpoint`` if it exists (model, guide, optimiser,
            epoch, history and RNG states restored; training runs up to ``config.epochs``).
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
        PplGenError: bad configuration or an unreadable checkpoint.
        TrainingDiverged: a non-finite loss (the last checkpoint is left as it was).
        RankFailed: another rank stopped (crashed); the last checkpoint is left as it was.
    """
    config = config or TrainConfig()
    config.validate()
    ctx = dist if dist is not None else init_from_env(config.device)
    with deterministic(config.deterministic, ctx.device):
        try:
            return _train(model, guide, data, config, ctx, resume=resume, spec=spec)
        except RankFailed as exc:
            kept = f"; the last good checkpoint {config.checkpoint} is intact" * bool(
                config.checkpoint
            )
            raise RankFailed(f"{exc}{kept}") from exc


def _autocast(config: TrainConfig, device: torch.device):
    if config.precision == "bf16":
        return bf16_networks(device)
    return contextlib.nullcontext()


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
    jit = config.elbo.startswith("jit")
    if jit and n < config.batch_size:
        raise PplGenError(f"batch_size {config.batch_size} exceeds the {n} training rows")
    if ctx.distributed and config.batch_size < ctx.world_size:
        raise PplGenError(
            f"batch_size {config.batch_size} is smaller than the {ctx.world_size} processes "
            "(each process needs at least one row of every minibatch)"
        )
    # The minibatch order and binarisation are shared by all ranks; model/guide sampling
    # (Pyro's RNG) differs per rank so that ranks draw independent noise.
    pyro.set_rng_seed(config.seed + ctx.rank)
    generators = {
        "shuffle": torch.Generator().manual_seed(config.seed),
        "binarize": torch.Generator(device=device).manual_seed(config.seed + 1),
    }
    elbo = make_elbo(config.elbo, config.num_particles)
    model_n = functools.partial(model, size=n)
    guide_n = functools.partial(guide, size=n)
    first = torch.arange(min(n, config.batch_size), device=device)
    setup = getattr(guide, "setup", None)
    if setup is not None:
        setup(data.train[first], first, n)
    params = _discover_parameters(elbo, model_n, guide_n, data.train[first], first)
    ctx.broadcast_parameters(params)
    optimizer = torch.optim.Adam(_param_groups(params, guide, config))
    result = TrainResult(history={"epoch": [], "train_elbo": [], "val_elbo": [], "seconds": []})
    start_epoch = 0
    ckpt = Path(config.checkpoint) if config.checkpoint else None
    if resume and ckpt is not None:
        state = _load_for_resume(ckpt, ctx)
        if state is not None:
            _load_modules(model, guide, state)
            optimizer.load_state_dict(state["optimizer"])
            result = TrainResult(
                history=state["history"],
                epochs=state["epoch"],
                iterations=state["iterations"],
                seconds=state["seconds"],
            )
            start_epoch = state["epoch"]
            _set_rng_state(state["rng"], generators)
            ranks = state.get("rng_ranks") or [state["rng"]["pyro"]]
            if len(ranks) == ctx.world_size:
                pyro.util.set_rng_state(to_device(ranks[ctx.rank], "cpu"))
            else:  # resumed with another number of processes: a fresh, seeded stream
                pyro.set_rng_seed(config.seed + ctx.rank + 7919 * start_epoch)
    dynamic = data.binarize == "dynamic"
    show = config.progress and ctx.is_main
    with pyro.validation_enabled(False):
        for epoch in range(start_epoch, config.epochs):
            t0 = time.perf_counter()
            total, seen = 0.0, 0
            batches = iterate_minibatches(
                n,
                config.batch_size,
                generator=generators["shuffle"],
                device=device,
                drop_last=jit,
            )
            bar = tqdm(
                batches,
                total=(n // config.batch_size) if jit else -(-n // config.batch_size),
                desc=f"epoch {epoch + 1}/{config.epochs}",
                disable=True if not show else None,  # None: off when not a TTY
                leave=False,
            )
            for batch, idx in enumerate(bar):
                xb = data.train[idx]
                if dynamic:
                    xb = binarize_batch(xb, generators["binarize"])
                if ctx.distributed:
                    loss_value = _distributed_step(
                        elbo, model_n, guide_n, xb, idx, params, optimizer, config, ctx
                    )
                    bad = not math.isfinite(loss_value)
                else:
                    with _autocast(config, device):
                        loss = elbo.differentiable_loss(model_n, guide_n, xb, idx)
                    bad = not torch.isfinite(loss)
                if bad:
                    where = f" (last good checkpoint kept at {ckpt})" if ckpt else ""
                    raise TrainingDiverged(
                        f"non-finite loss at epoch {epoch + 1}, batch {batch + 1}{where}"
                    )
                if not ctx.distributed:
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    loss_value = float(loss.detach())
                optimizer.step()
                result.iterations += 1
                total += loss_value * idx.shape[0] / n
                seen += idx.shape[0]
                bar.set_postfix(elbo=f"{-total / seen:.2f}", refresh=False)
            result.seconds += time.perf_counter() - t0
            _average_buffers((model, guide), ctx)
            val = None
            if config.val_every and (epoch + 1) % config.val_every == 0 and len(data.val):
                val = validation_elbo(
                    model, guide, data.val, refit_steps=config.val_refit_steps, dist=ctx
                )
            result.epochs = epoch + 1
            for key, value in (
                ("epoch", epoch + 1),
                ("train_elbo", -total / seen),
                ("val_elbo", val),
                ("seconds", result.seconds),
            ):
                result.history[key].append(value)
            if show:
                tqdm.write(
                    f"epoch {epoch + 1}: train ELBO {-total / seen:.3f}"
                    + (f", validation ELBO {val:.3f}" if val is not None else "")
                    + " nats/datapoint"
                )
            if ckpt is not None:
                rng_ranks = ctx.all_gather_object(pyro.util.get_rng_state())
                if ctx.is_main:
                    save_checkpoint(
                        ckpt,
                        {
                            "kind": (spec or {}).get("kind", "latent-variable"),
                            "spec": spec,
                            "config": asdict(config),
                            "model": _state(model),
                            "guide": _state(guide),
                            "optimizer": optimizer.state_dict(),
                            "epoch": result.epochs,
                            "iterations": result.iterations,
                            "seconds": result.seconds,
                            "history": result.history,
                            "rng": _rng_state(generators),
                            "rng_ranks": rng_ranks,
                            "world_size": ctx.world_size,
                        },
                    )
    return result


def _distributed_step(
    elbo,
    model_n: Callable,
    guide_n: Callable,
    xb: torch.Tensor,
    idx: torch.Tensor,
    params: list[torch.Tensor],
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    ctx: DistributedContext,
) -> float:
    """This rank's part of the global minibatch ``(xb, idx)``: loss, backward, gradient
    all-reduce with weight ``b_r / B`` (module docs).  Returns the global minibatch's loss
    (negative ELBO scaled to the whole training set, nats), the same on every rank."""
    x_r, idx_r = ctx.shard(xb), ctx.shard(idx)
    optimizer.zero_grad(set_to_none=True)
    loss = None
    if idx_r.shape[0]:
        with _autocast(config, ctx.device):
            loss = elbo.differentiable_loss(model_n, guide_n, x_r, idx_r)
        loss.backward()
    return _sync_gradients(params, loss, idx_r.shape[0] / idx.shape[0], ctx)


def _average_buffers(modules, ctx: DistributedContext) -> None:
    """Average floating-point buffers (e.g. batch-norm running statistics) over the ranks,
    so that every rank -- and rank 0's checkpoint -- holds the same values."""
    if not ctx.distributed:
        return
    for module in modules:
        if isinstance(module, nn.Module):
            for buf in module.buffers():
                if buf.is_floating_point():
                    ctx.all_reduce_mean(buf, "buffer all-reduce")


def _load_for_resume(ckpt: Path, ctx: DistributedContext) -> dict | None:
    """The checkpoint to resume from (``None`` if absent): rank 0 reads it and sends it to
    the other ranks, so only rank 0 needs the file."""
    if not ctx.distributed:
        return load_checkpoint(ckpt, map_location=ctx.device) if ckpt.exists() else None
    state, error = None, None
    if ctx.is_main and ckpt.exists():
        try:
            state = load_checkpoint(ckpt, map_location="cpu")
        except PplGenError as exc:
            error = str(exc)
    state, error = ctx.broadcast_object((state, error))
    if error is not None:
        raise PplGenError(error)
    return to_device(state, ctx.device) if state is not None else None


def _state(obj: Callable) -> dict | None:
    return obj.state_dict() if isinstance(obj, nn.Module) else None


def _load_modules(model: Callable, guide: Callable, state: dict) -> None:
    for obj, key in ((model, "model"), (guide, "guide")):
        if isinstance(obj, nn.Module) and state.get(key) is not None:
            try:
                obj.load_state_dict(state[key])
            except RuntimeError as exc:
                first = str(exc).splitlines()[0]
                raise PplGenError(
                    f"CHECKPOINT: {key} does not match this checkpoint ({first})"
                ) from None
