"""Factor analysis (Bishop PRML 12.2.4).

``z ~ N(0, I_Q)``, ``x | z ~ N(W z + mu, Psi)`` with a free diagonal ``Psi``, so
``x ~ N(mu, W W^T + Psi)`` (PRML 12.65).  Exact posterior (PRML 12.66-12.67), EM
(M-step PRML 12.69-12.70) and mean-field variational EM come from
:class:`~ppl_gen.models.linear_gaussian.LinearGaussianModel`; this class adds the diagonal
noise.  Unlike PPCA there is no closed-form maximum-likelihood solution.
"""

from __future__ import annotations

import torch
from torch import nn

from ppl_gen.models.linear_gaussian import NOISE_FLOOR, LinearGaussianModel
from ppl_gen.models.sharded_moments import ShardedMoments


class FactorAnalysis(ShardedMoments, LinearGaussianModel):
    """Factor analysis with diagonal noise ``Psi = diag(psi_1, ..., psi_D)``.

    Args:
        data_dim: ``D`` (>= 2).
        latent_dim: ``Q``, ``1 <= Q < D``.

    Parameters: ``W (D, Q)``, ``mu (D,)``, ``log_psi (D,)`` (``log psi_d``).

    Raises:
        PplGenError: if ``latent_dim`` is not in ``[1, D - 1]`` (names ``--latent-dim``).
    """

    def __init__(self, data_dim: int, latent_dim: int) -> None:
        super().__init__(data_dim, latent_dim)
        self.log_psi = nn.Parameter(torch.zeros(data_dim))

    @property
    def psi(self) -> torch.Tensor:
        """The noise variances ``psi_d``, ``(D,)``, detached."""
        return self.log_psi.detach().exp()

    def noise_variance(self) -> torch.Tensor:
        """``psi``, ``(D,)``, differentiable."""
        return self.log_psi.exp()

    def _noise_m_step(self, residual: torch.Tensor) -> torch.Tensor:
        # PRML 12.70: Psi = diag(expected residual covariance).
        return residual.clamp_min(NOISE_FLOOR)

    @torch.no_grad()
    def _store_noise(self, psi: torch.Tensor) -> None:
        self.log_psi.copy_(psi.log().to(self.log_psi.dtype))


__all__ = ["FactorAnalysis"]
