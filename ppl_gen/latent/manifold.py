"""The 2-D latent manifold: decodings of an ``n x n`` grid of Gaussian quantiles
(Kingma & Welling 2014, fig. 4), for any decoder with a 2-D latent space.

The grid lies on the latent distribution the model actually has: its prior ``N(0, I)`` for
VAEs, CVAEs and GAN generators; for a plain autoencoder, which has no prior, the Gaussian
fitted to its training codes (mean and standard deviation per dimension, as in the
autoencoder-as-generator of Ghosh et al. 2020, sec. 4), so the grid covers the codes
instead of a region the decoder never saw.  When codes are given, a grid lying mostly
outside them (Mahalanobis distance under the codes' full-covariance Gaussian beyond its
99.9% ellipse) is reported with a logging warning.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from ppl_gen.core.errors import PplGenError
from ppl_gen.latent.pairs import EncoderDecoder

logger = logging.getLogger(__name__)

#: Squared Mahalanobis radius of the 99.9% ellipse of a 2-D Gaussian (chi-square, 2 dof).
OUTSIDE_RADIUS2 = -2.0 * math.log(1e-3)
#: Warn when more than this fraction of grid points lie outside that ellipse of the codes.
OUTSIDE_FRACTION = 0.25


@dataclass(frozen=True)
class GridDistribution:
    """The per-dimension Gaussian a manifold grid is laid on.

    Attributes:
        source: ``"prior"`` (the model's ``N(0, I)``) or ``"codes"`` (fitted to codes).
        mean: ``(2,)``; std: ``(2,)`` per-dimension standard deviations.
        covariance: ``(2, 2)`` full covariance of the codes (``None`` for the prior).
    """

    source: str
    mean: torch.Tensor
    std: torch.Tensor
    covariance: torch.Tensor | None = None

    def describe(self) -> str:
        """``"prior N(0, 1)"`` or ``"Gaussian of the codes: mean (1.31, 3.52), sd (1.90,
        1.87)"``."""
        if self.source == "prior":
            return "prior N(0, 1)"
        m = ", ".join(f"{v:.2f}" for v in self.mean.tolist())
        s = ", ".join(f"{v:.2f}" for v in self.std.tolist())
        return f"Gaussian of the training codes: mean ({m}), sd ({s})"


def code_gaussian(codes: torch.Tensor) -> GridDistribution:
    """Maximum-likelihood Gaussian of ``codes: (N, 2)``: mean, per-dimension sd, covariance.

    Raises:
        PplGenError: ``codes`` not ``(N, Z)`` with ``N >= 2`` or not finite (``codes``).
    """
    if not torch.is_tensor(codes) or codes.dim() != 2 or codes.shape[0] < 2:
        got = tuple(codes.shape) if torch.is_tensor(codes) else type(codes).__name__
        raise PplGenError(f"codes: expected an (N, Z) tensor with N >= 2, got {got}")
    codes = codes.detach().double().cpu()
    if not bool(torch.isfinite(codes).all()):
        raise PplGenError("codes: non-finite values (NaN or inf) in the codes")
    mean = codes.mean(0)
    centred = codes - mean
    cov = centred.T @ centred / codes.shape[0]
    std = cov.diagonal().sqrt().clamp_min(1e-6)
    return GridDistribution("codes", mean.float(), std.float(), cov.float())


def fraction_outside(z: torch.Tensor, codes: torch.Tensor) -> float:
    """Fraction of grid points ``z: (M, Z)`` outside the 99.9% ellipse of the full-covariance
    Gaussian of ``codes: (N, Z)`` (squared Mahalanobis distance > ``OUTSIDE_RADIUS2``; for
    Z != 2 the chi-square quantile is taken as the 2-D one scaled by Z / 2)."""
    fit = code_gaussian(codes)
    cov = fit.covariance.double()
    cov = cov + 1e-9 * float(cov.diagonal().mean() or 1.0) * torch.eye(cov.shape[0]).double()
    d = z.detach().double().cpu() - fit.mean.double()
    m2 = (d @ torch.linalg.inv(cov) * d).sum(-1)
    return float((m2 > OUTSIDE_RADIUS2 * z.shape[1] / 2).double().mean())


def manifold_latents(
    n: int,
    lo: float = 0.05,
    hi: float = 0.95,
    device: str | torch.device = "cpu",
    *,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
) -> torch.Tensor:
    """The grid of codes ``(n * n, 2)``: row ``r``, column ``c`` is
    ``(m_1 + s_1 Phi^-1(u_c), m_2 + s_2 Phi^-1(u_{n-1-r}))`` with ``u`` evenly spaced on
    ``[lo, hi]`` (same order as :func:`ppl_gen.viz.report.latent_manifold_grid`: first
    coordinate to the right, second upwards).

    Args:
        n: grid side; lo, hi: quantile range.
        device: where the grid is built.
        mean, std: ``(2,)`` per-dimension Gaussian (default ``0`` and ``1``: the prior).

    Raises:
        PplGenError: ``n < 2`` (``n``) or ``0 < lo < hi < 1`` violated.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise PplGenError(f"n must be an integer >= 2, got {n!r}")
    if not 0.0 < lo < hi < 1.0:
        raise PplGenError(f"lo and hi must satisfy 0 < lo < hi < 1, got {lo}, {hi}")
    u = torch.linspace(lo, hi, n, device=device)
    q = torch.distributions.Normal(torch.zeros((), device=device), 1.0).icdf(u)
    z2, z1 = torch.meshgrid(q.flip(0), q, indexing="ij")
    z = torch.stack([z1, z2], dim=-1).reshape(n * n, 2)
    if std is not None:
        z = z * std.to(z)
    if mean is not None:
        z = z + mean.to(z)
    return z


def grid_distribution(pair: EncoderDecoder, codes: torch.Tensor | None = None) -> GridDistribution:
    """The distribution the manifold grid of ``pair`` lies on (module docs).

    Args:
        pair: the model; ``pair.prior is None`` (a plain autoencoder) needs ``codes``.
        codes: ``(N, 2)`` training codes (used for a model without a prior).

    Raises:
        PplGenError: a model without a prior and no codes (``codes``).
    """
    if pair.prior is not None:
        return GridDistribution("prior", torch.zeros(2), torch.ones(2))
    if codes is None:
        raise PplGenError(
            f"codes: this {pair.kind or 'model'} has no prior; the manifold grid needs its "
            "training codes to fit the Gaussian it is laid on"
        )
    return code_gaussian(codes)


def manifold(
    pair: EncoderDecoder,
    n: int = 20,
    *,
    label: int | None = None,
    codes: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode the quantile grid of a 2-D latent space, laid on the model's latent distribution.

    Args:
        pair: an encoder/decoder pair with ``latent_dim == 2``.
        n: grid side.
        label: the class to condition on, for conditional pairs (``label``).
        codes: ``(N, 2)`` codes of the training data: required for a pair without a prior
            (a plain autoencoder: the grid's Gaussian is fitted to them), optional otherwise
            (then only used to warn when the grid lies mostly outside them).

    Returns:
        ``(images (n * n, D), codes (n * n, 2))`` on CPU, row-major.

    Raises:
        PplGenError: naming ``latent_dim`` if the checkpoint's latent space is not 2-D;
            ``codes`` missing for a model without a prior.
    """
    if pair.latent_dim != 2:
        raise PplGenError(
            f"latent_dim mismatch: the manifold grid needs a 2-D latent space, the "
            f"checkpoint has {pair.latent_dim} (train with latent_dim 2)"
        )
    where = grid_distribution(pair, codes)
    z = manifold_latents(n, device=pair.device, mean=where.mean, std=where.std)
    if codes is not None:
        outside = fraction_outside(z, codes)
        if outside > OUTSIDE_FRACTION:
            logger.warning(
                "manifold: %d of %d grid points lie outside the 99.9%% ellipse of the codes "
                "(grid on the %s); those cells show what the decoder does away from its data",
                round(outside * n * n),
                n * n,
                where.describe(),
            )
    y = None if label is None else torch.full((n * n,), int(label), device=pair.device)
    return pair.decode_rows(z, y).cpu(), z.cpu()
