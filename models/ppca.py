"""Probabilistic PCA (Tipping & Bishop 1999, "TB99"; Bishop PRML 12.2).

``z ~ N(0, I_Q)``, ``x | z ~ N(W z + mu, sigma^2 I_D)``, so ``x ~ N(mu, W W^T + sigma^2 I)``
(TB99 eq. 4-5).  Exact posterior, EM and mean-field variational EM come from
:class:`~ppl_gen.models.linear_gaussian.LinearGaussianModel`; this class adds the isotropic
noise and the closed-form maximum-likelihood solution (TB99 eq. 7-8).
"""

from __future__ import annotations

import torch
from torch import nn

from ppl_gen.core.threads import single_thread
from ppl_gen.models.linear_gaussian import NOISE_FLOOR, LinearGaussianModel
from ppl_gen.models.sharded_moments import ShardedMoments


class PPCA(ShardedMoments, LinearGaussianModel):
    """Probabilistic PCA with isotropic noise ``sigma^2 I``.

    Args:
        data_dim: ``D`` (>= 2).
        latent_dim: ``Q``, ``1 <= Q < D``.

    Parameters: ``W (D, Q)``, ``mu (D,)``, ``log_sigma2`` (scalar, ``log sigma^2``).

    Raises:
        PplGenError: if ``latent_dim`` is not in ``[1, D - 1]`` (names ``--latent-dim``).
    """

    def __init__(self, data_dim: int, latent_dim: int) -> None:
        super().__init__(data_dim, latent_dim)
        self.log_sigma2 = nn.Parameter(torch.zeros(()))

    @property
    def sigma2(self) -> float:
        """The noise variance ``sigma^2``."""
        return float(self.log_sigma2.detach().exp())

    def noise_variance(self) -> torch.Tensor:
        """``sigma^2`` repeated, ``(D,)``, differentiable."""
        return self.log_sigma2.exp().expand(self.data_dim)

    def _noise_m_step(self, residual: torch.Tensor) -> torch.Tensor:
        # PRML 12.57: sigma^2 = (1 / D) tr(expected residual covariance).
        return residual.mean().clamp_min(NOISE_FLOOR).expand(self.data_dim)

    @torch.no_grad()
    def _store_noise(self, psi: torch.Tensor) -> None:
        self.log_sigma2.copy_(psi[0].log().to(self.log_sigma2.dtype))

    @torch.no_grad()
    def closed_form_ml(self, x: torch.Tensor) -> float:
        """Set the parameters to the maximum-likelihood solution (TB99 eq. 7-8).

        With the eigen-decomposition of the sample covariance ``S`` (eigenvalues
        ``lambda_1 >= ... >= lambda_D``): ``mu = x_bar``,
        ``sigma^2_ML = (1 / (D - Q)) sum_{j > Q} lambda_j`` (eq. 8, floored at
        ``NOISE_FLOOR``) and ``W_ML = U_Q (Lambda_Q - sigma^2 I)^{1/2}`` (eq. 7 with
        ``R = I``).  Computed in float64.

        Args:
            x: ``(N, D)`` training rows.

        Returns:
            The average log-likelihood at the solution, nats per datapoint.

        Raises:
            PplGenError: if ``x`` has the wrong width, no rows or non-finite values.
        """
        x64 = self._fit_data(x).double()
        x_bar, S = self._moments(x64)
        with single_thread():  # a threaded LAPACK eigh can be 100x slower on a busy machine
            evals, evecs = torch.linalg.eigh(S)
        evals, evecs = evals.flip(0), evecs.flip(1)
        q = self.latent_dim
        sigma2 = evals[q:].mean().clamp_min(NOISE_FLOOR)
        W = evecs[:, :q] * (evals[:q] - sigma2).clamp_min(0.0).sqrt()
        psi = sigma2.expand(self.data_dim)
        self._store(W, x_bar, psi)
        self.mf_state = None
        return self._avg_loglik_from_moments(W, x_bar, psi, x_bar, S)


__all__ = ["PPCA"]
