"""The gradient reversal layer of DANN (Ganin & Lempitsky 2015; Ganin et al. JMLR 2016).

``R_λ(x) = x`` in the forward pass and ``dR_λ/dx = -λ I`` in the backward pass (Ganin et
al. 2016, eq. 14-15): placed between the feature extractor and the domain classifier, it
lets one SGD step minimise the domain loss in the classifier and maximise it in the
features.  λ is either fixed or follows the paper's schedule
``λ_p = 2 / (1 + exp(-γ p)) - 1`` with ``γ = 10`` and training progress ``p ∈ [0, 1]``
(sec. 5.2.2), which suppresses the noisy domain signal early in training.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ppl_gen.core.errors import PplGenError


class GradientReversalFunction(torch.autograd.Function):
    """Identity forward, ``-λ · grad`` backward (Ganin et al. 2016, eq. 14-15)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lambda_: float) -> torch.Tensor:  # noqa: D102
        ctx.lambda_ = float(lambda_)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # noqa: D102
        return grad_output.neg() * ctx.lambda_, None


def grad_reverse(x: torch.Tensor, lambda_: float = 1.0) -> torch.Tensor:
    """Apply ``R_λ``: returns ``x`` (any shape); the gradient flowing back is ``-λ`` times the
    incoming one."""
    return GradientReversalFunction.apply(x, lambda_)


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """The paper's adaptation factor ``λ_p = 2 / (1 + exp(-γ p)) - 1`` (Ganin et al. 2016,
    sec. 5.2.2): 0 at ``p = 0``, rising to about 1 at ``p = 1`` (0.99991 for ``γ = 10``).

    Raises:
        PplGenError: ``progress`` outside [0, 1] or ``gamma`` not positive.
    """
    if not 0.0 <= progress <= 1.0:
        raise PplGenError(f"progress (training progress p) must be in [0, 1], got {progress!r}")
    if not gamma > 0:
        raise PplGenError(f"gamma must be positive, got {gamma!r}")
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


class GradientReversal(nn.Module):
    """``R_λ`` as a module, with λ fixed or scheduled by training progress.

    Args:
        lambda_: the fixed λ >= 0, or ``None`` to follow :func:`dann_lambda` (call
            :meth:`set_progress` as training advances; λ starts at 0).
        gamma: γ of the schedule.

    Raises:
        PplGenError: a negative ``lambda_``.
    """

    def __init__(self, lambda_: float | None = None, gamma: float = 10.0) -> None:
        super().__init__()
        if lambda_ is not None and not lambda_ >= 0:
            raise PplGenError(f"lambda_ must be >= 0 (or None: scheduled), got {lambda_!r}")
        self.scheduled = lambda_ is None
        self.gamma = float(gamma)
        self.lambda_ = 0.0 if lambda_ is None else float(lambda_)

    def set_progress(self, progress: float) -> float:
        """Set λ from training progress ``p ∈ [0, 1]`` if scheduled; returns the current λ."""
        if self.scheduled:
            self.lambda_ = dann_lambda(progress, self.gamma)
        return self.lambda_

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: any shape; returned unchanged, gradient reversed and scaled by λ."""
        return grad_reverse(x, self.lambda_)

    def extra_repr(self) -> str:
        return (
            f"scheduled=True, gamma={self.gamma}" if self.scheduled else f"lambda_={self.lambda_}"
        )
