"""Learning-rate schedule of CycleGAN (Zhu et al. 2017, sec. 7.1): the base rate for the
first ``n_constant`` epochs, then linearly decaying to zero over the next ``n_decay``
epochs, as a :class:`torch.optim.lr_scheduler.LambdaLR` stepped once per epoch.

A resumed run may ask for more epochs (or more decay epochs) than the checkpoint's:
:func:`reschedule` then recomputes the schedule from the new totals and sets each
optimiser's current rate to ``base_lr x factor(epochs done)``, so the continuation follows
the schedule a fresh run with the new totals would have from that epoch on (and the rate
never goes below zero).
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR


class LinearDecay:
    """Multiplier ``max(0, 1 - max(0, epoch + 1 - n_constant) / (n_decay + 1))`` of the base
    rate (the pix2pix/CycleGAN ``linear`` policy; 0-based ``epoch``); ``n_decay == 0`` keeps
    it constant.  A callable object (not a lambda), so LambdaLR's ``state_dict`` saves its
    two integers with the checkpoint."""

    def __init__(self, n_constant: int, n_decay: int) -> None:
        self.n_constant = int(n_constant)
        self.n_decay = int(n_decay)

    def __call__(self, epoch: int) -> float:
        if self.n_decay <= 0:
            return 1.0
        return max(0.0, 1.0 - max(0, epoch + 1 - self.n_constant) / float(self.n_decay + 1))


def constant_then_linear_decay(
    optimizer: torch.optim.Optimizer, n_constant: int, n_decay: int
) -> LambdaLR:
    """LambdaLR with :class:`LinearDecay`; call ``scheduler.step()`` after each epoch."""
    return LambdaLR(optimizer, LinearDecay(n_constant, n_decay))


def reschedule(scheduler: LambdaLR, n_constant: int, n_decay: int) -> None:
    """Recompute a restored :func:`constant_then_linear_decay` schedule from new totals.

    ``LambdaLR.load_state_dict`` restores the checkpoint's :class:`LinearDecay` fields (the
    old totals); this overrides them with ``n_constant`` / ``n_decay`` and sets every
    parameter group's learning rate to ``initial_lr x factor(scheduler.last_epoch)`` (the
    epochs already done), so the next epoch runs at the new schedule's rate.
    """
    epoch = scheduler.last_epoch
    for fn in scheduler.lr_lambdas:
        if not isinstance(fn, LinearDecay):
            raise TypeError("reschedule needs a constant_then_linear_decay scheduler")
        fn.n_constant, fn.n_decay = int(n_constant), int(n_decay)
    for group, base, fn in zip(
        scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
    ):
        group["lr"] = base * fn(epoch)
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]
