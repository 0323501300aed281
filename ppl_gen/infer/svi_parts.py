"""Pieces of the SVI task (:mod:`ppl_gen.infer.training`): the Pyro parameters outside the
model and guide modules as a checkpoint component, the minibatches of an epoch, dynamic
binarisation from a CPU stream, and the buffer average over ranks."""

from __future__ import annotations

from collections.abc import Iterator

import pyro
import torch
from torch import nn

from ppl_gen.core.distributed import DistributedContext
from ppl_gen.data import datasets


class PyroParams:
    """The Pyro parameters the optimiser trains that belong to neither the model nor the
    guide ``nn.Module`` (``pyro.param`` sites under fixed names, modules registered inside
    plain functions), as a checkpoint component ``{name: unconstrained value}``.

    The names are fixed at construction (after parameter discovery), so parameters that
    other code adds to the global store later (the validation's fresh per-datapoint
    guides) are neither saved nor expected back.
    """

    def __init__(self, params: list[torch.Tensor], owned: set[int]) -> None:
        names = {id(t): name for name, t in pyro.get_param_store().named_parameters()}
        self.params = {names[id(p)]: p for p in params if id(p) not in owned and id(p) in names}

    def __bool__(self) -> bool:
        return bool(self.params)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().clone() for name, p in self.params.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.params):
            raise ValueError(
                f"Pyro parameters {sorted(self.params)[:4]} vs the checkpoint's {sorted(state)[:4]}"
            )
        with torch.no_grad():
            for name, p in self.params.items():
                if p.shape != state[name].shape:
                    raise ValueError(
                        f"Pyro parameter {name!r} has shape {tuple(p.shape)}, the "
                        f"checkpoint's {tuple(state[name].shape)}"
                    )
                p.copy_(state[name].to(p.device))


class EpochBatches:
    """The index minibatches of one epoch (one pass, drawn lazily from ``generator`` when
    iterated), with a length for the progress bar.  Iterating twice gives the same single
    pass (the progress bar calls ``iter`` more than once)."""

    def __init__(self, n: int, batch_size: int, generator, device, drop_last: bool) -> None:
        self.length = n // batch_size if drop_last else -(-n // batch_size)
        # Looked up at call time so tests can observe the epochs actually run.
        self.batches = datasets.iterate_minibatches(
            n, batch_size, generator=generator, device=device, drop_last=drop_last
        )

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self.batches


def binarize_on_host_stream(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Dynamic binarisation ``b ~ Bernoulli(x)`` drawn from a CPU ``generator`` whatever
    ``x``'s device (Salakhutdinov & Murray 2008's dynamically binarised MNIST).

    A CPU stream's state can be restored on any device, so a checkpoint written on a GPU
    resumes on the CPU and back.  On the CPU this is
    :func:`ppl_gen.data.datasets.binarize_batch`; elsewhere uniforms ``u`` are drawn on the
    CPU, copied, and ``b = 1[u < x]``.

    Args:
        x: ``(batch, D)`` probabilities in [0, 1], any device, floating dtype.
        generator: a CPU :class:`torch.Generator`.

    Returns:
        ``x``'s shape, dtype and device, exactly 0.0 or 1.0.
    """
    if x.device.type == "cpu":
        return datasets.binarize_batch(x, generator)
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype)
    return (u.to(x.device, non_blocking=True) < x).to(x.dtype)


def average_buffers(modules, ctx: DistributedContext) -> None:
    """Average floating-point buffers (e.g. batch-norm running statistics) over the ranks,
    so that every rank -- and rank 0's checkpoint -- holds the same values."""
    if not ctx.distributed:
        return
    for module in modules:
        if isinstance(module, nn.Module):
            for buf in module.buffers():
                if buf.is_floating_point():
                    ctx.all_reduce_mean(buf, "buffer all-reduce")
