"""Mean-field variational inference for the linear-Gaussian models (PPCA, factor analysis).

For ``z ~ N(0, I_Q)``, ``x | z ~ N(W z + mu, Psi)`` (:mod:`ppl_gen.models.linear_gaussian`)
the exact posterior is Gaussian with the shared precision ``Lambda = I + W^T Psi^-1 W``;
the mean-field family ``q(z_n) = prod_j N(m_nj, s_nj^2)`` is fitted by coordinate ascent
(Bishop PRML 10.1.1-10.1.2): ``s_j^2 = 1 / Lambda_jj`` and
``m_nj <- (h_nj - sum_{k != j} Lambda_jk m_nk) / Lambda_jj`` with
``h_n = W^T Psi^-1 (x_n - mu)``.  Its means converge to the exact posterior means, its
variances under-estimate the marginal ones (PRML 10.1.2).

:class:`MeanFieldVI` is a mixin of
:class:`~ppl_gen.models.linear_gaussian.LinearGaussianModel`: variational EM
(:meth:`~MeanFieldVI.mean_field`), the fixed-parameter ``q`` of new rows, its closed-form
ELBO and its test bounds.  It uses the model's ``_fit_data``, ``_params64``, ``_precision``,
``_noise_m_step``, ``_store`` and ``init_from_data``.  Everything runs in float64; ELBOs
are in nats.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from ppl_gen.core.errors import require, require_positive_int
from ppl_gen.core.threads import single_thread
from ppl_gen.infer.bounds import BoundEstimate
from ppl_gen.lvm.tractable import FitHistory
from ppl_gen.models.stopping import converged

_LOG_2PI = math.log(2.0 * math.pi)
_SMALL_WORK = 2**24  # N * D * Q below which a mean-field fit runs on one thread


@dataclass
class MeanFieldState:
    """Local variational parameters of :meth:`LinearGaussianModel.mean_field`.

    Attributes:
        loc: ``(N, Q)`` means ``m_i`` of ``q(z_i)`` for the training rows.
        scale: ``(Q,)`` standard deviations ``s_j`` (the same for every datapoint, since
            the posterior precision ``Lambda`` is; ``s_j^2 = 1 / Lambda_jj``).
    """

    loc: torch.Tensor
    scale: torch.Tensor


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """``softplus^-1(y) = y + log(-expm1(-y))`` for ``y > 0`` (stable for small and large y)."""
    return y + torch.log(-torch.expm1(-y))


class MeanFieldVI:
    """Mean-field VI for a linear-Gaussian model (mixin; see the module docs).

    Attribute ``mf_state``: the :class:`MeanFieldState` of the training rows after
    :meth:`mean_field`; ``None`` before, and reset by ``init_from_data`` (so by ``em``
    with ``init=True``) and by PPCA's ``closed_form_ml``.
    """

    mf_state: MeanFieldState | None = None

    @staticmethod
    def _cavi_sweeps(
        m: torch.Tensor, h: torch.Tensor, lam: torch.Tensor, sweeps: int, tol: float = 0.0
    ) -> torch.Tensor:
        """Coordinate ascent on ``q(z_n) = prod_j N(m_nj, 1 / Lambda_jj)`` (PRML 10.1.2):
        ``m_j <- (h_j - sum_{k != j} Lambda_jk m_k) / Lambda_jj``, ``j = 1..Q`` in turn, with
        ``h = W^T Psi^-1 (x - mu) = Lambda E[z | x]``.  ``m, h: (N, Q)``, updated in place."""
        diag = torch.diagonal(lam)
        for _ in range(sweeps):
            before = m.clone() if tol > 0 else None
            for j in range(m.shape[1]):
                m[:, j] = (h[:, j] - m @ lam[:, j] + m[:, j] * diag[j]) / diag[j]
            if before is not None and float((m - before).abs().max()) <= tol:
                break
        return m

    def mean_field(
        self,
        x: torch.Tensor,
        *,
        max_iter: int = 500,
        tol: float = 1e-6,
        seed: int = 0,
        init: bool = True,
        inner_sweeps: int = 1,
    ) -> FitHistory:
        """Variational EM with a factorised Gaussian ``q(z_n) = prod_j N(m_nj, s_j^2)``.

        Each iteration: (1) E-step, coordinate ascent (PRML 10.1.1-10.1.2) on the ELBO for
        the target ``p(z_n | x_n) = N(Lambda^-1 h_n, Lambda^-1)``: ``s_j^2 = 1 / Lambda_jj``
        and ``inner_sweeps`` sweeps of ``m_nj <- (h_nj - sum_{k!=j} Lambda_jk m_nk) /
        Lambda_jj``; (2) M-step, the closed-form maximiser of the ELBO over ``(W, mu)``
        and then the noise given ``E_q[z_n] = m_n``, ``E_q[z_n z_n^T] = m_n m_n^T +
        diag(s^2)`` (PRML 12.56-12.57 / 12.69-12.70 with these moments; noise floored at
        ``NOISE_FLOOR``).  Each step maximises the ELBO in its own variables, so the ELBO
        never decreases.  The means start at ``m = 0``; runs in float64.

        Args:
            x: ``(N, D)`` training rows.
            max_iter: maximum number of iterations (>= 1).
            tol: nats per datapoint: stop when the last ELBO change and Aitken's estimate
                of the gain still to come are both below ``tol``
                (:func:`ppl_gen.models.stopping.converged`; 0: run all ``max_iter``).
            seed: seed of :meth:`init_from_data`.
            init: call :meth:`init_from_data` first.
            inner_sweeps: coordinate-ascent sweeps over ``j`` per E-step (>= 1).

        Returns:
            :class:`FitHistory` whose ``objective[t]`` is the average ELBO (nats per
            datapoint, closed form ``E_q[log p(x|z)] + E_q[log p(z)] + H[q]``) after
            iteration ``t``.  The final ``q`` of the training rows is kept in
            :attr:`mf_state` (:class:`MeanFieldState`).

        Raises:
            PplGenError: bad ``x``, ``max_iter``, ``inner_sweeps`` or ``tol``.
        """
        start = time.perf_counter()
        x = self._fit_data(x)
        require_positive_int("max_iter", max_iter)
        require_positive_int("inner_sweeps", inner_sweeps)
        require(tol >= 0, f"tol must be >= 0, got {tol!r}")
        if init:
            self.init_from_data(x, seed)
        x64 = x.double()
        n, d, q = x64.shape[0], self.data_dim, self.latent_dim
        x_bar = x64.mean(0)
        xc = x64 - x_bar
        diag_s = xc.square().mean(0)
        W, mu, psi = self._params64()
        m = x64.new_zeros(n, q)
        history = FitHistory(extra={"inner_sweeps": inner_sweeps})
        # Small problems run wholly on one thread (nested blocks are then no-ops); large
        # ones let the O(N D Q) products use every thread.
        with single_thread() if n * d * q < _SMALL_WORK else nullcontext():
            for _ in range(max_iter):
                # E-step: coordinate ascent on q.
                with single_thread():
                    K, lam, _ = self._precision(W, psi)
                    s2 = 1.0 / torch.diagonal(lam)
                h = xc @ K + (x_bar - mu) @ K  # (N, Q), the O(N D Q) product uses every thread
                with single_thread():
                    self._cavi_sweeps(m, h, lam, inner_sweeps)
                    m_bar = m.mean(0)
                    mc = m - m_bar
                # M-step: closed-form maximiser over (W, mu), then the noise.
                S_xz = xc.T @ mc / n
                with single_thread():
                    S_mm = mc.T @ mc / n
                    W = torch.linalg.solve(S_mm + torch.diag(s2), S_xz.T).T
                    mu = x_bar - W @ m_bar
                    psi = self._noise_m_step(diag_s - (W * S_xz).sum(-1))
                    # ELBO of (q, new parameters) from the moments, averaged over datapoints.
                    _, lam_new, _ = self._precision(W, psi)
                    e = x_bar - mu - W @ m_bar
                    sq_resid = (
                        diag_s - 2.0 * (W * S_xz).sum(-1) + ((W @ S_mm) * W).sum(-1) + e.square()
                    )
                    elbo = -0.5 * (
                        d * _LOG_2PI
                        + psi.log().sum()
                        + (sq_resid / psi).sum()
                        + (s2 * torch.diagonal(lam_new)).sum()
                        + m_bar.square().sum()
                        + torch.trace(S_mm)
                        - q
                        - s2.log().sum()
                    )
                    elbo = float(elbo)
                history.objective.append(elbo)
                history.seconds.append(time.perf_counter() - start)
                if converged(history.objective, tol):
                    history.converged = True
                    break
        self._store(W, mu, psi)
        self.mf_state = MeanFieldState(loc=m.to(self.W.dtype), scale=s2.sqrt().to(self.W.dtype))
        return history

    @torch.no_grad()
    def mean_field_posterior(
        self, x: torch.Tensor, sweeps: int = 50, tol: float = 1e-10
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean-field ``q(z_n) = prod_j N(loc_nj, scale_nj^2)`` for fixed parameters.

        The coordinate-ascent fixed point (PRML 10.1.2) started at ``loc = 0``: up to
        ``sweeps`` sweeps, stopping early once no mean moves by more than ``tol``.  Its
        means converge to the exact posterior means (PRML 10.1.2: mean-field gets the mean
        of a Gaussian right) and its variances are ``1 / Lambda_jj <= (Lambda^-1)_jj``
        (it under-estimates the marginal variances).

        Args:
            x: ``(N, D)`` rows.
            sweeps: maximum number of sweeps (>= 1).
            tol: early-stopping threshold on the largest change of a mean.

        Returns:
            ``(loc, scale)``, both ``(N, Q)`` in ``x``'s dtype.

        Raises:
            PplGenError: bad ``x`` width or ``sweeps``.
        """
        flat = self.flatten(x)
        require_positive_int("sweeps", sweeps)
        W, mu, psi = self._params64()
        with single_thread():
            K, lam, _ = self._precision(W, psi)
        h = (flat.double() - mu) @ K
        with single_thread():
            m = self._cavi_sweeps(torch.zeros_like(h), h, lam, sweeps, tol)
        scale = torch.diagonal(lam).rsqrt().expand_as(m)
        return m.to(flat.dtype), scale.to(flat.dtype)

    @torch.no_grad()
    def mean_field_elbo(
        self,
        x: torch.Tensor,
        loc: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Closed-form ELBO of ``q(z_n) = N(loc_n, diag scale_n^2)`` per datapoint (nats)::

            ELBO_n = -1/2 [D log 2 pi + log|Psi| + r_n^T Psi^-1 r_n + sum_j s_nj^2 Lambda_jj
                           + |m_n|^2 - Q - sum_j log s_nj^2],     r_n = x_n - W m_n - mu

        (``E_q[log p(x|z)] + E_q[log p(z)] + H[q]``; PRML 10.1).

        Args:
            x: ``(N, D)`` rows.
            loc, scale: ``(N, Q)`` (scale may be ``(Q,)``); default
                :meth:`mean_field_posterior` of ``x``.

        Returns:
            ``(N,)`` ELBOs in ``x``'s dtype.
        """
        flat = self.flatten(x)
        if loc is None or scale is None:
            loc, scale = self.mean_field_posterior(flat)
        W, mu, psi = self._params64()
        _, lam, _ = self._precision(W, psi)
        m, s2 = loc.double(), scale.double().square().expand_as(loc)
        r = flat.double() - m @ W.T - mu
        elbo = -0.5 * (
            self.data_dim * _LOG_2PI
            + psi.log().sum()
            + (r.square() / psi).sum(-1)
            + (s2 * torch.diagonal(lam)).sum(-1)
            + m.square().sum(-1)
            - self.latent_dim
            - s2.log().sum(-1)
        )
        return elbo.to(flat.dtype)

    def mean_field_bounds(self, x: torch.Tensor, k: int = 1000) -> BoundEstimate:
        """ELBO and IWAE-K of ``x`` with the mean-field ``q`` of :meth:`mean_field_posterior`.

        Builds a :class:`ppl_gen.guides.MeanFieldGuide` over the rows of ``x`` whose tables
        hold the coordinate-ascent solution (``locs = loc``,
        ``raw_scales = softplus^-1(scale - min_scale)``) and calls
        :func:`ppl_gen.infer.bounds.evaluate_bounds` with ``keep_log_weights=True``.

        Args:
            x: ``(N, D)`` (test) rows.
            k: importance samples per datapoint (>= 1).

        Returns:
            :class:`BoundEstimate` (``(N,)`` ELBO and IWAE-K in nats, ``(N, K)`` log-weights).
        """
        from ppl_gen.guides import MeanFieldGuide
        from ppl_gen.infer.bounds import evaluate_bounds

        flat = self.flatten(x)
        loc, scale = self.mean_field_posterior(flat)
        guide = MeanFieldGuide(self, flat.shape[0]).to(device=flat.device, dtype=flat.dtype)
        key = self.latent_site.replace(".", "_")
        with torch.no_grad():
            guide.locs[key].copy_(loc)
            raw = _inverse_softplus((scale.double() - guide.min_scale).clamp_min(1e-12))
            guide.raw_scales[key].copy_(raw.to(flat.dtype))
        return evaluate_bounds(self, guide, flat, k, keep_log_weights=True)


__all__ = ["MeanFieldState", "MeanFieldVI"]
