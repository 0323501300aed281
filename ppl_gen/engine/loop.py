"""The one training loop every family plugs into.

A family (SVI, GAN, CycleGAN, DANN, autoencoders, the judge classifier) supplies a
:class:`Task` -- its components (networks, optimisers, schedulers, image pools: anything
with ``state_dict`` / ``load_state_dict``), its named random streams, the batches of an
epoch and one optimisation step -- and :func:`fit` owns everything else:

* epochs, the progress bar (rank 0, on a terminal only) and a one-line summary per epoch;
* the divergence stop (:class:`~ppl_gen.engine.divergence.DivergenceGuard`);
* checkpoints after every epoch holding every piece of state: the components, Pyro's
  parameter store (when the task uses it), the named streams, every rank's global random
  state, the history and the divergence reference -- written atomically and durably by
  rank 0 alone, loadable with ``torch.load(..., weights_only=True)``;
* resume: the checkpoint's settings and data fingerprint are compared with this run's
  (:func:`~ppl_gen.engine.state.check_resume`) and a changed setting is refused unless the
  family applies it; then every piece of state is restored, so the continuation equals the
  uninterrupted run bit for bit;
* an ``--out`` lock (:func:`ppl_gen.core.io.output_lock`) on the checkpoint's folder for the
  whole run, and removal of a killed run's stale temporary files;
* data parallelism: the step runs under the context's failure guard, per-epoch means are
  all-reduced, rank 0 alone writes;
* ``history.jsonl`` beside the checkpoint, one JSON object per epoch, and optional
  TensorBoard scalars (:mod:`ppl_gen.engine.history`).

Returns a :class:`FitResult`; a family wraps it in its own result type.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from tqdm.auto import tqdm

from ppl_gen.core.checkpoint import FORMAT, save_checkpoint
from ppl_gen.core.distributed import DistributedContext, RankFailed, load_for_resume
from ppl_gen.core.errors import PplGenError
from ppl_gen.core.io import output_lock
from ppl_gen.engine import rng
from ppl_gen.engine.divergence import EXPLODE_FACTOR, DivergenceGuard
from ppl_gen.engine.history import HistoryWriter
from ppl_gen.engine.state import (
    check_resume,
    param_store_state,
    restore_param_store,
)

#: Checkpoint keys the engine writes; component names must differ from these.
RESERVED = frozenset(
    {
        "format",
        "kind",
        "config",
        "data_fingerprint",
        "epoch",
        "iterations",
        "seconds",
        "history",
        "rng",
        "rng_ranks",
        "world_size",
        "param_store",
        "divergence",
    }
)


@runtime_checkable
class Task(Protocol):
    """What a family supplies to :func:`fit`.

    Required:
        ``components() -> dict[str, obj]``: everything with ``state_dict`` /
        ``load_state_dict`` that must survive a resume (stored under these names).
        ``generators() -> dict[str, torch.Generator]``: the family's named random streams.
        ``batches(epoch) -> Iterable``: the batches of 0-based ``epoch`` (may have ``len``).
        ``step(batch, iteration) -> Mapping[str, Tensor | float]``: one optimisation step;
        returns scalar losses (a ``"weight"`` entry, default 1, weights this step in the
        epoch means).

    Optional hooks (looked up with ``getattr``):
        ``start_epoch(epoch)``: before the first batch (e.g. ``train()`` mode).
        ``end_epoch(summary: EpochSummary) -> dict``: after the last batch, on every rank
        (may run collectives, e.g. validation); returns the history entries of the epoch
        (default: the step means).
        ``write_epoch(epoch, history)``: rank 0 only, after ``end_epoch``: figures, samples.
        ``after_restore(state)``: after a resume restored everything (e.g. recompute a
        learning-rate schedule from new totals).
        ``summary_line(epoch, entries) -> str``: the per-epoch progress line.
    """

    def components(self) -> dict[str, Any]: ...

    def generators(self) -> dict[str, torch.Generator]: ...

    def batches(self, epoch: int) -> Iterable: ...

    def step(self, batch: Any, iteration: int) -> Mapping[str, Any]: ...


@dataclass
class LoopConfig:
    """Settings of :func:`fit`.

    Attributes:
        epochs: total epochs (a resumed run continues up to this number).
        kind: the checkpoint's ``kind`` (selects the ``ppl-gen evaluate`` handler).
        settings: :func:`~ppl_gen.engine.state.settings_record` of the family's config,
            stored and compared on resume.
        may_change: settings a resume may change (the family applies them).
        data_fingerprint: :func:`~ppl_gen.engine.state.data_fingerprint` of the training
            data, stored and compared on resume.
        meta: extra JSON-able / tensor entries stored in the checkpoint (spec, shapes).
        checkpoint: path of the checkpoint written after every epoch (``None``: none).
        resume: continue from ``checkpoint`` when it exists.
        stop_after: stop after this many epochs in this call (a later resume continues).
        seed: the run's seed (fresh per-rank streams when resumed on another world size).
        progress: progress bar and per-epoch line (rank 0).
        explode_factor: see :class:`~ppl_gen.engine.divergence.DivergenceGuard`.
        param_store: save and restore Pyro's parameter store (SVI families).
        desc: progress-bar label.
        history: write ``history.jsonl`` (one JSON object per epoch) beside the checkpoint
            (:mod:`ppl_gen.engine.history`; rank 0, needs ``checkpoint``).
        tensorboard: also TensorBoard scalars there (``None``: the process default).
    """

    epochs: int
    kind: str
    settings: dict[str, Any] = field(default_factory=dict)
    may_change: frozenset[str] = frozenset({"epochs", "progress", "device"})
    data_fingerprint: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | Path | None = None
    resume: bool = False
    stop_after: int | None = None
    seed: int = 0
    progress: bool = True
    explode_factor: float = EXPLODE_FACTOR
    param_store: bool = False
    desc: str = "epoch"
    history: bool = True
    tensorboard: bool | None = None


@dataclass
class EpochSummary:
    """What :func:`fit` hands ``Task.end_epoch``.

    Attributes:
        epoch: 1-based epoch just finished.
        means: weighted means of the step losses over the epoch (over all ranks).
        seconds: wall time of the epoch's steps (s).
        steps: optimisation steps in the epoch.
    """

    epoch: int
    means: dict[str, float]
    seconds: float
    steps: int


@dataclass
class FitResult:
    """Outcome of :func:`fit`.

    Attributes:
        history: per-epoch lists: ``epoch``, the task's entries, ``seconds`` (cumulative
            training wall time, s).
        epochs: epochs completed (including those of a resumed checkpoint).
        iterations: optimisation steps taken in total.
        seconds: training wall time (s), without end-of-epoch work and checkpoints.
        resumed_from: the epoch the run resumed at (0: fresh).
    """

    history: dict[str, list] = field(default_factory=dict)
    epochs: int = 0
    iterations: int = 0
    seconds: float = 0.0
    resumed_from: int = 0


@contextlib.contextmanager
def checkpoint_kept(path: str | os.PathLike | None) -> Iterator[None]:
    """Inside the block, a :class:`RankFailed` gains ``; the last good checkpoint PATH is
    intact`` (when ``path`` is given): rank 0 writes checkpoints atomically, so a peer's
    crash never leaves a half-written one.  Every family's ``train_*`` wraps its run in this.

    Raises:
        RankFailed: the original failure, with the checkpoint named.
    """
    try:
        yield
    except RankFailed as exc:
        if not path:
            raise
        raise RankFailed(f"{exc}; the last good checkpoint {path} is intact") from exc


def _check_components(components: dict[str, Any]) -> None:
    clash = RESERVED & set(components)
    if clash:
        raise ValueError(f"component names {sorted(clash)} are reserved by the engine")


def _restore(
    task: Task, state: dict, loop: LoopConfig, ctx: DistributedContext, guard: DivergenceGuard
) -> FitResult:
    if state.get("kind") != loop.kind:
        raise PplGenError(
            f"resume: the checkpoint holds a {state.get('kind')!r} run, not {loop.kind!r}"
        )
    check_resume(
        state.get("config", {}),
        loop.settings,
        loop.may_change,
        saved_data=state.get("data_fingerprint"),
        current_data=loop.data_fingerprint,
    )
    components = task.components()
    missing = [name for name in components if name not in state]
    if missing:
        raise PplGenError(f"resume: the checkpoint lacks {missing} (incomplete checkpoint)")
    for name, comp in components.items():
        try:
            comp.load_state_dict(state[name])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise PplGenError(
                f"resume: {name} does not match the checkpoint ({first[:160]})"
            ) from None
    if loop.param_store:
        restore_param_store(state.get("param_store", {}))
    generators = task.generators()
    saved_streams = state.get("rng", {}).get("generators", {})
    if set(generators) - set(saved_streams):
        raise PplGenError("resume: the checkpoint lacks random streams of this run")
    rng.restore_generators(generators, saved_streams)
    ranks = state.get("rng_ranks") or []
    epochs = int(state["epoch"])
    if len(ranks) == ctx.world_size:
        rng.restore(ranks[ctx.rank])
    else:  # another number of processes: a fresh, seeded stream per rank
        rng.seed_everything(loop.seed + ctx.rank + 7919 * epochs)
    guard.load_state_dict(state.get("divergence", {}))
    hook = getattr(task, "after_restore", None)
    if hook is not None:
        hook(state)
    return FitResult(
        history={k: list(v) for k, v in state["history"].items()},
        epochs=epochs,
        iterations=int(state["iterations"]),
        seconds=float(state["seconds"]),
        resumed_from=epochs,
    )


def _reduce_means(
    sums: dict[str, float], counts: dict[str, float], ctx: DistributedContext, device
) -> dict[str, float]:
    keys = sorted(sums)
    if ctx.distributed:
        keys = sorted(set().union(*ctx.all_gather_object(keys)))
        flat = torch.tensor(
            [sums.get(k, 0.0) for k in keys] + [counts.get(k, 0.0) for k in keys],
            dtype=torch.float64,
            device=device,
        )
        ctx.all_reduce_sum(flat, "epoch means all-reduce")
        values = flat.tolist()
        sums = dict(zip(keys, values[: len(keys)], strict=True))
        counts = dict(zip(keys, values[len(keys) :], strict=True))
    return {k: sums[k] / counts[k] for k in keys if counts.get(k)}


def _default_line(epoch: int, entries: dict[str, Any]) -> str:
    parts = [f"{k} {v:.4f}" for k, v in entries.items() if isinstance(v, float) and k != "seconds"]
    return f"epoch {epoch}: " + ", ".join(parts)


def _checkpoint_state(
    task: Task,
    loop: LoopConfig,
    result: FitResult,
    guard: DivergenceGuard,
    rng_ranks: list,
    ctx: DistributedContext,
) -> dict[str, Any]:
    state: dict[str, Any] = {
        "kind": loop.kind,
        "config": loop.settings,
        "data_fingerprint": loop.data_fingerprint,
        **loop.meta,
    }
    for name, comp in task.components().items():
        state[name] = comp.state_dict()
    if loop.param_store:
        state["param_store"] = param_store_state()
    state.update(
        epoch=result.epochs,
        iterations=result.iterations,
        seconds=result.seconds,
        history=result.history,
        rng={"generators": rng.capture_generators(task.generators())},
        rng_ranks=rng_ranks,
        world_size=ctx.world_size,
        divergence=guard.state_dict(),
    )
    return state


def fit(task: Task, loop: LoopConfig, ctx: DistributedContext) -> FitResult:
    """Run ``task`` for ``loop.epochs`` epochs (module docs).

    Args:
        task: the family's :class:`Task`.
        loop: the loop settings.
        ctx: the data-parallel context (a single process when not under torchrun).

    Returns:
        :class:`FitResult` (identical on every rank).

    Raises:
        PplGenError: a resume whose checkpoint is unreadable, of another kind, or whose
            settings or data differ (naming the setting); an ``--out`` folder in use by
            another live run.
        TrainingDiverged: a non-finite or exploded loss (the last checkpoint is kept).
        RankFailed: another rank stopped or froze (the last checkpoint is kept).
    """
    _check_components(task.components())
    ckpt = Path(loop.checkpoint) if loop.checkpoint else None
    guard = DivergenceGuard(loop.explode_factor, ckpt)
    lock = output_lock(ckpt.parent) if ckpt is not None and ctx.is_main else None
    with lock if lock is not None else contextlib.nullcontext():
        result = FitResult()
        if loop.resume and ckpt is not None:
            state = load_for_resume(ckpt, ctx)
            if state is not None:
                result = _restore(task, state, loop, ctx, guard)
                del state
        last = loop.epochs
        if loop.stop_after is not None:
            last = min(last, result.epochs + loop.stop_after)
        show = loop.progress and ctx.is_main
        logged = ckpt is not None and ctx.is_main and loop.history
        recorder = HistoryWriter(ckpt.parent, loop.tensorboard) if logged else None
        for epoch in range(result.epochs, last):
            _run_epoch(task, loop, ctx, guard, result, epoch, show)
            rng_ranks = ctx.all_gather_object(rng.capture()) if ckpt is not None else []
            if not ctx.is_main:
                continue
            writer = getattr(task, "write_epoch", None)
            if writer is not None:
                writer(epoch + 1, result.history)
            if ckpt is not None:
                save_checkpoint(ckpt, _checkpoint_state(task, loop, result, guard, rng_ranks, ctx))
            if recorder is not None:
                recorder.write_epoch(result.history)
        if recorder is not None:
            recorder.close()
        return result


def _run_epoch(
    task: Task,
    loop: LoopConfig,
    ctx: DistributedContext,
    guard: DivergenceGuard,
    result: FitResult,
    epoch: int,
    show: bool,
) -> None:
    start = getattr(task, "start_epoch", None)
    if start is not None:
        start(epoch)
    batches = task.batches(epoch)
    total = len(batches) if hasattr(batches, "__len__") else None
    bar = tqdm(
        batches,
        total=total,
        desc=f"{loop.desc} {epoch + 1}/{loop.epochs}",
        disable=True if not show else None,  # None: off when not a terminal
        leave=False,
        file=sys.stderr,
    )
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    steps = 0
    t0 = time.perf_counter()
    for batch_index, batch in enumerate(bar):
        with ctx.guard(f"{loop.kind} training step"):
            out = task.step(batch, result.iterations)
        weight = float(out.get("weight", 1))
        values = {k: float(v) for k, v in out.items() if k != "weight"}
        guard.check(values, epoch + 1, batch_index + 1)
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + value * weight
            counts[key] = counts.get(key, 0.0) + weight
        result.iterations += 1
        steps += 1
        if show and "loss" in sums:
            bar.set_postfix(loss=f"{sums['loss'] / counts['loss']:.4g}", refresh=False)
    seconds = time.perf_counter() - t0
    result.seconds += seconds
    device = ctx.device
    means = _reduce_means(sums, counts, ctx, device)
    end = getattr(task, "end_epoch", None)
    summary = EpochSummary(epoch + 1, means, seconds, steps)
    entries = dict(end(summary)) if end is not None else dict(means)
    result.epochs = epoch + 1
    row = {"epoch": epoch + 1, **entries, "seconds": result.seconds}
    before = len(result.history.get("epoch", []))
    for key in row:
        result.history.setdefault(key, [None] * before)
    for key, values in result.history.items():
        values.append(row.get(key))
    if show:
        line = getattr(task, "summary_line", None)
        text = line(epoch + 1, entries) if line is not None else _default_line(epoch + 1, entries)
        tqdm.write(text, file=sys.stderr)


__all__ = ["FORMAT", "EpochSummary", "FitResult", "LoopConfig", "Task", "checkpoint_kept", "fit"]
