"""Full-batch training to convergence (L-BFGS) for small data, and the subspace check of
the linear autoencoder against PCA."""

from __future__ import annotations

import numpy as np
import torch

from ppl_gen.autoencoders.base import Autoencoder
from ppl_gen.core.errors import require_positive_int


def fit_full_batch(
    model: Autoencoder, x: torch.Tensor, *, max_iter: int = 1000, tolerance: float = 1e-12
) -> float:
    """Minimise the mean reconstruction loss over all of ``x`` with L-BFGS (strong Wolfe
    line search) until the gradient or the change falls below ``tolerance``.

    Meant for small data (the 1,797 digits) where the optimum itself matters, e.g. the
    linear autoencoder whose optimum spans the principal subspace.

    Args:
        model: an autoencoder on ``x``'s device and dtype (use float64 for precision).
        x: ``(N, D)`` training rows.
        max_iter: maximum L-BFGS iterations.
        tolerance: first-order optimality and change tolerance.

    Returns:
        The final mean reconstruction loss per datapoint.
    """
    require_positive_int("max_iter", max_iter)
    optimizer = torch.optim.LBFGS(
        model.parameters(),
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=tolerance,
        tolerance_change=tolerance,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        _, raw = model(x)
        loss = model.reconstruction_loss(raw, x).mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        _, raw = model(x)
        return float(model.reconstruction_loss(raw, x).mean())


def principal_angles_degrees(basis_a: np.ndarray, basis_b: np.ndarray) -> np.ndarray:
    """Principal angles between the column spaces of ``basis_a: (D, k)`` and
    ``basis_b: (D, l)`` in degrees, largest first (``scipy.linalg.subspace_angles``;
    Bjorck & Golub 1973)."""
    from scipy.linalg import subspace_angles

    return np.degrees(subspace_angles(np.asarray(basis_a), np.asarray(basis_b)))
