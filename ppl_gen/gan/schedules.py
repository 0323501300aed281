"""Learning-rate schedule of CycleGAN (Zhu et al. 2017, sec. 7.1): the base rate for the
first ``n_constant`` epochs, then linearly decaying to zero over the next ``n_decay``
epochs, as a :class:`torch.optim.lr_scheduler.LambdaLR` stepped once per epoch."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR


class LinearDecay:
    """Multiplier ``1 - max(0, epoch + 1 - n_constant) / (n_decay + 1)`` of the base rate
    (the pix2pix/CycleGAN ``linear`` policy); ``n_decay == 0`` keeps it constant.  A callable
    object (not a lambda), so LambdaLR's ``state_dict`` saves it with the checkpoint."""

    def __init__(self, n_constant: int, n_decay: int) -> None:
        self.n_constant = int(n_constant)
        self.n_decay = int(n_decay)

    def __call__(self, epoch: int) -> float:
        if self.n_decay <= 0:
            return 1.0
        return 1.0 - max(0, epoch + 1 - self.n_constant) / float(self.n_decay + 1)


def constant_then_linear_decay(
    optimizer: torch.optim.Optimizer, n_constant: int, n_decay: int
) -> LambdaLR:
    """LambdaLR with :class:`LinearDecay`; call ``scheduler.step()`` after each epoch."""
    return LambdaLR(optimizer, LinearDecay(n_constant, n_decay))
