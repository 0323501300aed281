"""Batch norm over the global batch of a data-parallel step (:func:`sync_batchnorm`).

Under data parallelism every rank normalises its own shard of the batch unless the layer
combines the statistics of all shards.  :func:`sync_batchnorm` replaces every
``BatchNorm*d`` layer by one that does: :class:`torch.nn.SyncBatchNorm` on CUDA, and on
CPU (gloo, which ``SyncBatchNorm`` refuses) :class:`GlobalBatchNorm`, which all-reduces the
per-channel statistics with a differentiable all-reduce.  Re-exported by
:mod:`ppl_gen.core.distributed`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as torch_dist
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """``all_reduce(SUM)`` that back-propagates: the gradient of a sum over ranks with
    respect to each rank's term is the sum over ranks of the upstream gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        torch_dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        torch_dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the global batch of a data-parallel step, on any device (gloo/CPU
    included, which :class:`torch.nn.SyncBatchNorm` refuses).

    In training mode, for input ``x: (n_r, C, ...)`` on each rank, the per-channel mean and
    (biased) variance are those of all ranks' inputs together, ``N = sum_r n_r`` values
    (Ioffe & Szegedy 2015, Alg. 1, over the union of the shards), combined from each rank's
    ``(mean_r, var_r, n_r)`` by Chan et al.'s parallel formula (as ``SyncBatchNorm`` does)
    after one differentiable all-reduce, so the gradients are those of one process
    normalising the whole batch.  The running statistics are
    updated with the global mean and the unbiased global variance (identical on every
    rank).  In eval mode, or without a process group, it is plain
    :func:`torch.nn.functional.batch_norm`.  Same parameters, buffers and state-dict keys
    as ``BatchNorm1d`` / ``BatchNorm2d``.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """``input: (n_r, C, *)`` → normalised ``(n_r, C, *)``."""
        self._check_input_dim(input)
        sync = (
            self.training
            and torch_dist.is_available()
            and torch_dist.is_initialized()
            and torch_dist.get_world_size() > 1
        )
        if not sync:
            return super().forward(input)
        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = (1, c) + (1,) * (input.dim() - 2)
        # One all-reduce: every rank fills its row (mean_r, var_r, n_r) of a zero table.
        x = input.float()  # statistics in float32 also under bf16 autocast
        var_r, mean_r = torch.var_mean(x, dim=dims, unbiased=False)
        count = x.new_full((1,), input.numel() / max(c, 1))
        world, rank = torch_dist.get_world_size(), torch_dist.get_rank()
        rows = [x.new_zeros(2 * c + 1)] * world
        rows[rank] = torch.cat([mean_r, var_r, count])
        table = _AllReduceSum.apply(torch.stack(rows))  # (world, 2C + 1)
        means, variances, counts = table[:, :c], table[:, c : 2 * c], table[:, -1:]
        n = counts.sum()
        mean = (counts * means).sum(0) / n  # Chan et al.'s parallel combination
        var = (counts * (variances + (means - mean).square())).sum(0) / n
        out = (x - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                unbiased = var * (n / (n - 1).clamp_min(1))
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        return out.to(input.dtype)


def sync_batchnorm(module: nn.Module, ctx: Any) -> nn.Module:
    """Make every ``BatchNorm*d`` layer of ``module`` normalise over the global batch.

    Args:
        module: the network (its layers are replaced in place).
        ctx: a :class:`ppl_gen.core.distributed.DistributedContext` (its ``distributed``
            flag and ``device`` are read).

    Call before :meth:`~ppl_gen.core.distributed.DistributedContext.wrap`.  One process:
    ``module`` unchanged.  CUDA: :meth:`torch.nn.SyncBatchNorm.convert_sync_batchnorm`.
    Otherwise each layer becomes a :class:`GlobalBatchNorm` holding the same parameters
    and buffers.  The layers are replaced in place (the returned module is ``module``
    unless it is itself a batch-norm layer), and the state-dict keys do not change, so
    checkpoints load into the plain network.
    """
    if not ctx.distributed:
        return module
    if ctx.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _to_global_bn(module)


def _to_global_bn(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, GlobalBatchNorm
    ):
        new = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine,
            module.track_running_stats,
        )  # fmt: skip
        new.load_state_dict(module.state_dict())
        new = new.to(next(iter(module.state_dict().values()), torch.empty(0)).device)
        if module.affine:
            new.weight.requires_grad_(module.weight.requires_grad)
            new.bias.requires_grad_(module.bias.requires_grad)
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, _to_global_bn(child))
    return module


__all__ = ["GlobalBatchNorm", "sync_batchnorm"]
