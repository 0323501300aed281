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

  For an MLP encoder with at most one hidden layer, ``h = W_2 s(W_1 x + b_1) + b_2``, the
  Jacobian is ``J = W_2 diag(s'(a)) W_1`` and its squared Frobenius norm has the exact closed
  form ``||J||_F^2 = s'(a)^T [(W_1 W_1^T) * (W_2^T W_2)] s'(a)`` (``*`` elementwise), the
  multi-layer form of Rifai et al.'s (2011, sec. 3) sigmoid expression;
  :func:`mlp_contractive_penalty` evaluates it in ``O(H^2 (D + Z) + B H^2)`` instead of the
  ``O(B Z H D)`` of the full Jacobians -- same numbers, much faster for MNIST-sized inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import jacrev, vmap

_DERIVATIVES = {
    nn.ReLU: lambda a: (a > 0).to(a.dtype),
    nn.Sigmoid: lambda a: torch.sigmoid(a) * (1 - torch.sigmoid(a)),
    nn.Tanh: lambda a: 1 - torch.tanh(a).pow(2),
    nn.ELU: lambda a: torch.where(a > 0, torch.ones_like(a), torch.exp(a)),
}


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


def mlp_contractive_penalty(encoder: nn.Sequential, x: torch.Tensor) -> torch.Tensor | None:
    """Closed-form ``||J_f(x_n)||_F^2`` of an MLP encoder with at most one hidden layer.

    Args:
        encoder: ``Sequential(Linear)`` or ``Sequential(Linear, activation, Linear)`` with a
            ReLU, sigmoid, tanh or ELU (alpha 1) activation.
        x: ``(batch, D)`` inputs.

    Returns:
        ``(batch,)`` exact values (see the module docstring), or ``None`` if ``encoder`` has
        another structure (then use :func:`contractive_penalty`).
    """
    layers = list(encoder)
    if len(layers) == 1 and isinstance(layers[0], nn.Linear):
        return layers[0].weight.pow(2).sum().expand(x.shape[0])
    if not (
        len(layers) == 3
        and isinstance(layers[0], nn.Linear)
        and isinstance(layers[2], nn.Linear)
        and type(layers[1]) in _DERIVATIVES
        and getattr(layers[1], "alpha", 1.0) == 1.0
    ):
        return None
    w1, w2 = layers[0].weight, layers[2].weight  # (H, D), (Z, H)
    slope = _DERIVATIVES[type(layers[1])](layers[0](x))  # (batch, H)
    gram = (w1 @ w1.T) * (w2.T @ w2)  # (H, H)
    return ((slope @ gram) * slope).sum(-1)
