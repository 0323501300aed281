"""Regularisers of the sparse and contractive autoencoders.

* Sparse autoencoder: an L1 penalty on the code activations,
  ``Omega(h) = sum_j |h_j|`` (Goodfellow, Bengio & Courville 2016, sec. 14.2.1, eq. 14.2
  with a Laplace prior on ``h``; Ranzato et al. 2007).
* Contractive autoencoder: the squared Frobenius norm of the encoder's Jacobian at the
  input, ``||J_f(x)||_F^2 = sum_{j,i} (d h_j / d x_i)^2`` (Rifai et al. 2011, eq. 2-3).
  It is computed *exactly* -- every entry of the ``(Z, D)`` Jacobian of every datapoint,
  by reverse-mode differentiation vectorised over the batch
  (``torch.func.vmap(torch.func.jacrev(f))``) -- for any encoder (MLP or convolutional),
  not approximated by random projections or finite differences.  The result is
  differentiable with respect to the encoder's parameters, so it can be minimised.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import jacrev, vmap


def sparsity_penalty(h: torch.Tensor) -> torch.Tensor:
    """L1 activity penalty of each code, ``sum_j |h_j|``.

    Args:
        h: ``(batch, Z)`` code activations.

    Returns:
        ``(batch,)`` penalties.
    """
    return h.abs().sum(-1)


def encoder_jacobian(
    encode: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """Exact Jacobian ``d f(x_n) / d x_n`` of every row.

    Args:
        encode: maps ``(batch, D)`` to ``(batch, Z)`` row by row (no mixing across rows,
            e.g. no batch normalisation in training mode).
        x: ``(batch, D)`` inputs.

    Returns:
        ``(batch, Z, D)`` Jacobians, differentiable with respect to ``encode``'s parameters.
    """

    def one(row: torch.Tensor) -> torch.Tensor:
        return encode(row.unsqueeze(0)).squeeze(0)

    return vmap(jacrev(one))(x)


def contractive_penalty(
    encode: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """Squared Frobenius norm of the encoder Jacobian of each row (Rifai et al. 2011, eq. 3).

    Args:
        encode: maps ``(batch, D)`` to ``(batch, Z)`` row by row.
        x: ``(batch, D)`` inputs.

    Returns:
        ``(batch,)`` values ``||J_f(x_n)||_F^2``, exact (see the module docstring).
    """
    return encoder_jacobian(encode, x).pow(2).sum(dim=(-2, -1))
