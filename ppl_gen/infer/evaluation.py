"""Test-set evaluation of a fitted model/guide pair, and of saved checkpoints."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ppl_gen.core.checkpoint import load_checkpoint
from ppl_gen.core.device import resolve_device
from ppl_gen.core.distributed import DistributedContext
from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.data.datasets import DataSplits, load_dataset
from ppl_gen.infer.bounds import BoundEstimate, evaluate_bounds
from ppl_gen.infer.local import fit_local_guide, fresh_local_guide
from ppl_gen.lvm.builders import ModelSpec, build_guide, build_model


@dataclass
class TestEvaluation:
    """Bounds on test data.

    Attributes:
        bounds: per-datapoint ELBO and IWAE-K (nats).
        guide: the guide used (for per-datapoint guides, the one fitted to the test data).
        inference_seconds: time spent fitting local parameters to the test data (0 for
            amortised guides).
        bound_seconds: time spent computing the bounds.
    """

    bounds: BoundEstimate
    guide: Callable
    inference_seconds: float
    bound_seconds: float


def evaluate_on(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    k: int,
    *,
    refit_steps: int = 500,
    keep_log_weights: bool = False,
    dist: DistributedContext | None = None,
) -> TestEvaluation:
    """ELBO and IWAE-K of ``x: (N, D)`` (nats per datapoint).

    Amortised guides are evaluated as they are.  Per-datapoint (mean-field) guides first get
    fresh local parameters fitted to ``x`` with the model frozen
    (:func:`ppl_gen.infer.training.fit_local_guide`, ``refit_steps`` full-batch Adam steps).

    With a distributed ``dist`` (:mod:`ppl_gen.core.distributed`) every rank passes the same
    ``x`` and works on rows ``rank, rank + W, ...`` (refit and bounds); the per-datapoint
    bounds are gathered in the order of ``x`` on every rank.  The returned ``guide`` is
    then this rank's (fitted to its rows only, for per-datapoint guides).

    Raises:
        PplGenError: if ``k`` or ``refit_steps`` is not a positive integer.
    """
    require_positive_int("iwae_k", k)
    if dist is not None and dist.distributed:
        return _evaluate_on_sharded(model, guide, x, k, dist, refit_steps, keep_log_weights)
    t0 = time.perf_counter()
    if getattr(guide, "is_local", False):
        require_positive_int("test_refit_steps", refit_steps)
        guide = fit_local_guide(
            model, x, steps=refit_steps, guide=fresh_local_guide(guide, model, x)
        )
    t1 = time.perf_counter()
    bounds = evaluate_bounds(
        model, guide, x, k, keep_log_weights=keep_log_weights, progress=sys.stderr.isatty()
    )
    return TestEvaluation(bounds, guide, t1 - t0, time.perf_counter() - t1)


def _evaluate_on_sharded(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    k: int,
    dist: DistributedContext,
    refit_steps: int,
    keep_log_weights: bool,
) -> TestEvaluation:
    """:func:`evaluate_on` of this rank's rows, per-datapoint results gathered in order;
    the times are the slowest rank's (seconds)."""
    part = dist.shard(x)
    if part.shape[0]:
        ev = evaluate_on(
            model, guide, part, k, refit_steps=refit_steps, keep_log_weights=keep_log_weights
        )
        b = ev.bounds
        elbo, iwae, lw, guide = b.elbo, b.iwae, b.log_weights, ev.guide
        times = [ev.inference_seconds, ev.bound_seconds]
    else:  # more ranks than rows
        elbo = iwae = torch.zeros(0, dtype=x.dtype)
        lw = torch.zeros(0, k, dtype=x.dtype)
        times = [0.0, 0.0]
    slowest = max(dist.all_gather_object(times), key=sum)
    bounds = BoundEstimate(
        elbo=dist.gather_shards(elbo),
        iwae=dist.gather_shards(iwae),
        k=k,
        log_weights=dist.gather_shards(lw) if keep_log_weights else None,
    )
    return TestEvaluation(bounds, guide, slowest[0], slowest[1])


def load_trained(checkpoint: str, device: str = "auto") -> tuple[Callable, Callable, dict]:
    """Rebuild the model and guide saved by ``ppl-gen train`` and load their weights.

    Returns:
        ``(model, guide, checkpoint_state)`` on the resolved device.

    The checkpoint is read with ``torch.load(..., weights_only=True)``
    (:func:`ppl_gen.core.checkpoint.load_checkpoint`): a file that would run code is refused.

    Raises:
        PplGenError: if the checkpoint is unreadable or unsafe, was not written by the CLI,
            or its weights do not match its spec.
    """
    dev = resolve_device(device)
    state = load_checkpoint(checkpoint, map_location=dev)
    spec = state.get("spec") or {}
    if "model" not in spec or "guide" not in spec:
        raise PplGenError(
            f"CHECKPOINT: {checkpoint!r} holds no model spec (not from ppl-gen train)"
        )
    mspec = ModelSpec(**spec["model"])
    model = build_model(mspec)
    guide = build_guide(spec["guide"], model, spec["num_train"], mspec.hidden)
    for name, module in (("model", model), ("guide", guide)):
        try:
            module.load_state_dict(state[name])
        except (KeyError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise PplGenError(
                f"CHECKPOINT: {checkpoint!r}: the {name} does not match its spec ({first[:160]})"
            ) from None
    return model.to(dev), guide.to(dev), state


def data_from_spec(spec: dict, **overrides) -> DataSplits:
    """Reload the dataset a checkpoint was trained on (``overrides`` replace fields)."""
    data = {**spec["data"], **{k: v for k, v in overrides.items() if v is not None}}
    return load_dataset(
        data["name"],
        data.get("root"),
        binarize=data.get("binarize", "none"),
        seed=data.get("seed", 0),
        n_test=data.get("n_test"),
    )
