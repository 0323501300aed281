"""Priors p(z) over the latent code, built on the data's device.

A prior is an ``nn.Module`` whose ``forward(x)`` returns a distribution with event shape
``(latent_dim,)`` and empty batch shape (the data plate broadcasts it).  Every tensor is
created on ``x``'s device and dtype, so no CPU-built tensor sneaks into a CUDA run.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from ppl_gen.core.errors import PplGenError

PRIORS = ("normal", "mog")


class StandardNormalPrior(nn.Module):
    """``p(z) = N(0, I)`` (Kingma & Welling 2014, sec. 3)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor) -> dist.TorchDistribution:
        zeros = x.new_zeros(self.latent_dim)
        return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)


class MixtureOfGaussiansPrior(nn.Module):
    """Learnable mixture of ``n_components`` diagonal Gaussians,
    ``p(z) = sum_k pi_k N(z; mu_k, diag sigma_k^2)`` (the "VAE with a mixture prior")."""

    def __init__(self, latent_dim: int, n_components: int = 10, spread: float = 2.0) -> None:
        super().__init__()
        if n_components < 1:
            raise PplGenError(f"n_components must be >= 1, got {n_components}")
        self.latent_dim = latent_dim
        generator = torch.Generator().manual_seed(0)
        self.locs = nn.Parameter(
            spread * torch.randn(n_components, latent_dim, generator=generator)
        )
        self.log_scales = nn.Parameter(torch.zeros(n_components, latent_dim))
        self.logits = nn.Parameter(torch.zeros(n_components))

    def forward(self, x: torch.Tensor) -> dist.TorchDistribution:
        components = dist.Normal(self.locs, self.log_scales.exp()).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components)


def make_prior(name: str | nn.Module, latent_dim: int, **kwargs) -> nn.Module:
    """Build a prior by name (``normal`` or ``mog``) or return a given module unchanged.

    Raises:
        PplGenError: for an unknown name.
    """
    if isinstance(name, nn.Module):
        return name
    if name == "normal":
        return StandardNormalPrior(latent_dim)
    if name == "mog":
        return MixtureOfGaussiansPrior(latent_dim, **kwargs)
    raise PplGenError(f"prior must be one of {', '.join(PRIORS)} or an nn.Module, got {name!r}")
