"""Reconstruction errors of a trained autoencoder on held-out data."""

from __future__ import annotations

import torch

from ppl_gen.autoencoders.base import Autoencoder
from ppl_gen.core.device import module_device


@torch.no_grad()
def reconstruction_errors(
    model: Autoencoder, x: torch.Tensor, batch_size: int = 1000
) -> torch.Tensor:
    """The model's own reconstruction loss of each row of clean data (no corruption).

    Args:
        model: a trained autoencoder (evaluated as it is; call ``model.eval()`` first).
        x: ``(N, D)`` data on any device (moved in chunks of ``batch_size`` rows).
        batch_size: rows per forward pass.

    Returns:
        ``(N,)`` float CPU tensor: Bernoulli cross-entropy summed over D (nats per datapoint)
        for ``output="sigmoid"``, squared error summed over D for ``output="linear"``.
    """
    device = module_device(model)
    out = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].to(device)
        _, raw = model(xb)
        out.append(model.reconstruction_loss(raw, xb).cpu())
    return torch.cat(out) if out else torch.zeros(0)


@torch.no_grad()
def squared_errors(model: Autoencoder, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """``||x - g(f(x))||^2`` per row, ``(N,)`` float CPU tensor (data units squared)."""
    device = module_device(model)
    out = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].to(device)
        out.append((model.reconstruct(xb) - xb.reshape(xb.shape[0], -1)).pow(2).sum(-1).cpu())
    return torch.cat(out) if out else torch.zeros(0)
