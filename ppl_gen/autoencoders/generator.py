"""The autoencoder as a generator: a full-covariance Gaussian on the training codes.

A deterministic autoencoder has no prior over its codes, so it cannot be sampled as it
stands.  Fitting ``N(mu, Sigma)`` by maximum likelihood to the codes ``h_n = f(x_n)`` of the
training data (``mu`` the mean, ``Sigma`` the full sample covariance) and decoding draws
``h ~ N(mu, Sigma)`` turns it into one -- the simplest "ex-post density estimation" of
Ghosh et al. (2020, "From variational to deterministic autoencoders", sec. 4).  A small
``jitter * I`` keeps ``Sigma`` positive definite when codes are degenerate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ppl_gen.core.errors import PplGenError, require_positive_int


@dataclass(frozen=True)
class LatentGaussian:
    """``N(mean, covariance)`` over codes.

    Attributes:
        mean: ``(Z,)``.
        covariance: ``(Z, Z)`` symmetric positive definite (jitter included).
    """

    mean: torch.Tensor
    covariance: torch.Tensor

    @property
    def latent_dim(self) -> int:
        """``Z``."""
        return int(self.mean.shape[0])

    def distribution(self) -> torch.distributions.MultivariateNormal:
        """The :class:`torch.distributions.MultivariateNormal` it describes."""
        return torch.distributions.MultivariateNormal(self.mean, self.covariance)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` codes ``(n, Z)`` on the mean's device (``generator`` on that device makes
        them reproducible).

        Raises:
            PplGenError: if ``n`` is not a positive integer.
        """
        require_positive_int("n_samples", n)
        eps = torch.randn(
            n, self.latent_dim, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        chol = torch.linalg.cholesky(self.covariance)
        return self.mean + eps @ chol.T

    def to_dict(self) -> dict:
        """``{"mean": [...], "covariance": [[...]]}`` (JSON-able)."""
        return {"mean": self.mean.tolist(), "covariance": self.covariance.tolist()}


def fit_latent_gaussian(codes: torch.Tensor, jitter: float = 1e-6) -> LatentGaussian:
    """Maximum-likelihood full-covariance Gaussian of ``codes``.

    Args:
        codes: ``(N, Z)`` training codes, ``N >= 2``.
        jitter: added to the diagonal, relative to the mean code variance.

    Returns:
        :class:`LatentGaussian` with ``mean = codes.mean(0)`` and ``covariance`` the
        (biased, 1/N) sample covariance ``+ jitter * mean(diag) * I``.

    Raises:
        PplGenError: if ``codes`` is not ``(N, Z)`` with ``N >= 2`` or is not finite.
    """
    if not torch.is_tensor(codes) or codes.dim() != 2 or codes.shape[0] < 2:
        got = tuple(codes.shape) if torch.is_tensor(codes) else type(codes).__name__
        raise PplGenError(f"codes: expected an (N, Z) tensor with N >= 2, got {got}")
    if not bool(torch.isfinite(codes).all()):
        raise PplGenError("codes: non-finite values (NaN or inf) in the training codes")
    codes = codes.detach()
    mean = codes.mean(0)
    centred = codes - mean
    cov = centred.T @ centred / codes.shape[0]
    scale = float(cov.diagonal().mean()) or 1.0
    cov = 0.5 * (cov + cov.T) + jitter * scale * torch.eye(
        cov.shape[0], device=cov.device, dtype=cov.dtype
    )
    return LatentGaussian(mean, cov)


@torch.no_grad()
def sample_decoded(
    decode: Callable[[torch.Tensor], torch.Tensor],
    gaussian: LatentGaussian,
    n: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode ``n`` codes drawn from ``gaussian``.

    Args:
        decode: maps codes ``(n, Z)`` to data ``(n, D)`` (e.g. ``model.decode``).
        gaussian: fitted by :func:`fit_latent_gaussian`.
        n: number of samples.
        generator: optional generator on the Gaussian's device.

    Returns:
        ``(samples (n, D), codes (n, Z))``.
    """
    codes = gaussian.sample(n, generator)
    return decode(codes), codes
