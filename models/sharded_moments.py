"""Data-parallel EM for the linear-Gaussian models (PPCA, factor analysis).

Their EM touches the data only through the sufficient statistics ``N``, the mean
``x_bar`` and the biased covariance ``S`` (the "EM using S" form of
:meth:`~ppl_gen.models.linear_gaussian.LinearGaussianModel.em`).  With the rows split over
the ranks of a ``torchrun`` job (:meth:`ppl_gen.core.distributed.DistributedContext.shard`),
``sum x`` and then ``sum (x - x_bar)(x - x_bar)^T`` are all-reduced (two passes, so the
covariance is accumulated about the global mean with no cancellation), and every rank runs
the same ``O(D^2 Q)`` iterations on the same ``(x_bar, S)``: the fit equals the
single-process fit on all rows up to float64 summation order.
"""

from __future__ import annotations

import torch

from ppl_gen.core.distributed import DistributedContext


def sharded_moments(
    x64: torch.Tensor, dist: DistributedContext
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(D,)`` and biased covariance ``S (D, D)`` of the rows of all ranks.

    Args:
        x64: ``(n_r, D)`` float64, this rank's rows.
        dist: the data-parallel context.

    Returns:
        ``(x_bar, S)``, identical on every rank.
    """
    n = dist.all_reduce_float(x64.shape[0], "EM statistics")
    x_bar = dist.all_reduce_sum(x64.sum(0), "EM statistics") / n
    xc = x64 - x_bar
    return x_bar, dist.all_reduce_sum(xc.T @ xc, "EM statistics") / n


class ShardedMoments:
    """Mixin for :class:`~ppl_gen.models.linear_gaussian.LinearGaussianModel` subclasses:
    ``em(x_shard, dist=ctx)`` fits all ranks' rows together (module docs)."""

    _dist: DistributedContext | None = None

    def em(self, x: torch.Tensor, *, dist: DistributedContext | None = None, **kwargs):
        """EM as in :class:`~ppl_gen.models.linear_gaussian.LinearGaussianModel`; with a
        distributed ``dist``, ``x`` is this rank's shard and the sufficient statistics (and
        the initialisation's mean and variances) are all-reduced.  Same arguments, returns
        and errors otherwise."""
        if dist is None or not dist.distributed:
            return super().em(x, **kwargs)
        self._dist = dist
        try:
            return super().em(x, **kwargs)
        finally:
            self._dist = None

    def _moments(self, x64: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._dist is None:
            return super()._moments(x64)
        return sharded_moments(x64, self._dist)

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, seed: int = 0) -> None:
        """:meth:`LinearGaussianModel.init_from_data`, from all ranks' rows under ``em``'s
        ``dist``."""
        if self._dist is None:
            return super().init_from_data(x, seed)
        x_bar, S = self._moments(self._fit_data(x).double())
        var = torch.diagonal(S).clone()
        generator = torch.Generator().manual_seed(int(seed))
        eps = torch.randn(self.data_dim, self.latent_dim, generator=generator, dtype=torch.float64)
        W = 0.1 * var.sqrt().unsqueeze(-1) * eps.to(x_bar.device)
        self._store(W, x_bar, self._noise_m_step(var))
        self.mf_state = None
        return None
