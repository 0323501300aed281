"""Linear-Gaussian latent-variable models: the code shared by PPCA and factor analysis.

Both models are ``z ~ N(0, I_Q)``, ``x | z ~ N(W z + mu, Psi)`` with ``W: (D, Q)``,
``mu: (D,)`` and a diagonal noise covariance ``Psi``; they differ only in ``Psi``:
isotropic ``sigma^2 I`` for probabilistic PCA (Tipping & Bishop 1999, "TB99"), a free
diagonal for factor analysis (Bishop, PRML 12.2.4).  Everything below is written for a
diagonal ``Psi`` (PPCA being the special case) and every closed-form step runs in float64;
results are stored back in the parameters' dtype (float32 unless the module was converted).

Notation used in the docstrings (``N`` datapoints, ``D`` data dims, ``Q`` latent dims):

* marginal ``x ~ N(mu, C)``, ``C = W W^T + Psi`` (TB99 eq. 4-5; PRML 12.35 / 12.65);
* posterior precision ``Lambda = I + W^T Psi^-1 W`` (``(Q, Q)``, the same for every
  datapoint), posterior ``z | x ~ N(Lambda^-1 W^T Psi^-1 (x - mu), Lambda^-1)``
  (TB99 eq. 6 with ``M = sigma^2 Lambda``; PRML 12.42 / 12.66);
* sample mean ``x_bar`` and covariance ``S = (1/N) sum_n (x_n - x_bar)(x_n - x_bar)^T``.

Log-densities use the Woodbury identity and the matrix determinant lemma,
``C^-1 = Psi^-1 - Psi^-1 W Lambda^-1 W^T Psi^-1`` and
``log|C| = log|Psi| + log|Lambda|``, so ``log p(x)`` of ``N`` points costs ``O(N D Q)``
and never forms a ``D x D`` matrix; EM works on ``S`` and costs ``O(D^2 Q)`` per iteration
once ``S`` is formed (``O(N D^2)``, once).  Mean-field variational inference on the same
models lives in :mod:`ppl_gen.models.linear_gaussian_mean_field` (a mixin of
:class:`LinearGaussianModel`).

All log-likelihoods and ELBOs are in nats (per datapoint where averaged).
"""

from __future__ import annotations

import math
import time

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppl_gen.core.errors import PplGenError, require, require_positive_int
from ppl_gen.core.naming import unique_scope
from ppl_gen.core.threads import single_thread
from ppl_gen.lvm.plates import data_plate, flatten_rows
from ppl_gen.lvm.tractable import FitHistory
from ppl_gen.models.linear_gaussian_mean_field import MeanFieldState, MeanFieldVI
from ppl_gen.models.stopping import converged

NOISE_FLOOR = 1e-6
"""Lower bound on every noise variance (``sigma^2`` or ``Psi_dd``) set by a closed-form step."""

_LOG_2PI = math.log(2.0 * math.pi)
_CHUNK_ROWS = 8192  # rows of x converted to float64 at once by the per-datapoint methods


class LinearGaussianModel(MeanFieldVI, nn.Module):
    """``z ~ N(0, I_Q)``, ``x | z ~ N(W z + mu, Psi)`` with diagonal ``Psi`` (see module doc).

    Subclasses (:class:`~ppl_gen.models.PPCA`, :class:`~ppl_gen.models.FactorAnalysis`)
    define the noise parameter through :meth:`noise_variance`, :meth:`_noise_m_step` and
    :meth:`_store_noise`.  Mean-field VI (``mean_field``, ``mean_field_posterior``,
    ``mean_field_elbo``, ``mean_field_bounds``) comes from
    :class:`~ppl_gen.models.linear_gaussian_mean_field.MeanFieldVI`.

    Args:
        data_dim: ``D`` (>= 2).
        latent_dim: ``Q``, with ``1 <= Q < D``.

    Parameters (``nn.Parameter``, float32): ``W (D, Q)`` (seeded ``0.1 * N(0, 1)``),
    ``mu (D,)`` (zeros) and the subclass's noise parameter (unit variance); call
    :meth:`init_from_data` or a fitting method with ``init=True`` for a data-dependent start.

    Sites of the Pyro model: ``"z"`` (latent, event ``(Q,)``) and ``"x"`` (observed,
    event ``(D,)``), both inside ``pyro.plate("data")``.

    Raises:
        PplGenError: if ``data_dim`` is not an integer >= 2 or ``latent_dim`` is not an
            integer in ``[1, D - 1]`` (message names ``--latent-dim``).
    """

    latent_site = "z"

    def __init__(self, data_dim: int, latent_dim: int) -> None:
        super().__init__()
        require_positive_int("data_dim", data_dim)
        require(data_dim >= 2, f"data_dim must be >= 2 for a latent-variable model, got {data_dim}")
        if (
            isinstance(latent_dim, bool)
            or not isinstance(latent_dim, int)
            or not 1 <= latent_dim < data_dim
        ):
            raise PplGenError(
                f"latent_dim must be an integer in [1, {data_dim - 1}] for "
                f"{type(self).__name__} of {data_dim}-dimensional data (latent_dim < data_dim), "
                f"got {latent_dim!r}"
            )
        self.data_dim = data_dim
        self.latent_dim = latent_dim
        generator = torch.Generator().manual_seed(0)
        self.W = nn.Parameter(0.1 * torch.randn(data_dim, latent_dim, generator=generator))
        self.mu = nn.Parameter(torch.zeros(data_dim))
        self.image_shape: tuple[int, ...] = (data_dim,)
        self.scope = unique_scope(type(self).__name__)
        self.mf_state: MeanFieldState | None = None

    # ------------------------------------------------------------------ noise (subclass)

    def noise_variance(self) -> torch.Tensor:
        """Diagonal of ``Psi``, ``(D,)``, differentiable, in the parameters' dtype."""
        raise NotImplementedError

    def _noise_m_step(self, residual: torch.Tensor) -> torch.Tensor:
        """Maximiser of the expected complete-data log-likelihood over the noise, given the
        per-dimension expected squared residuals ``residual: (D,)`` (float64); ``(D,)``."""
        raise NotImplementedError

    def _store_noise(self, psi: torch.Tensor) -> None:
        """Write the noise variances ``psi: (D,)`` (float64) into the noise parameter."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers

    @property
    def latent_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-datapoint event shape of each latent site, ``{"z": (Q,)}``."""
        return {self.latent_site: (self.latent_dim,)}

    def flatten(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, *image_shape) -> (N, D)``; see :func:`ppl_gen.lvm.plates.flatten_rows`."""
        return flatten_rows(x, self.data_dim, type(self).__name__)

    def _fit_data(self, x: torch.Tensor) -> torch.Tensor:
        flat = self.flatten(x)
        require(flat.shape[0] >= 1, "x: no datapoints to fit")
        require(bool(torch.isfinite(flat).all()), "x: contains NaN or infinite values")
        return flat

    def _params64(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(W (D, Q), mu (D,), psi (D,))`` as detached float64 tensors."""
        with torch.no_grad():
            return (
                self.W.detach().double(),
                self.mu.detach().double(),
                self.noise_variance().detach().double(),
            )

    @torch.no_grad()
    def _store(self, W: torch.Tensor, mu: torch.Tensor, psi: torch.Tensor) -> None:
        self.W.copy_(W.to(self.W.dtype))
        self.mu.copy_(mu.to(self.mu.dtype))
        self._store_noise(psi)

    @staticmethod
    def _precision(
        W: torch.Tensor, psi: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``K = Psi^-1 W (D, Q)``, ``Lambda = I + W^T K (Q, Q)`` and its Cholesky factor."""
        with single_thread():
            K = W / psi.unsqueeze(-1)
            lam = torch.eye(W.shape[1], dtype=W.dtype, device=W.device) + W.T @ K
            return K, lam, torch.linalg.cholesky(lam)

    @staticmethod
    def _moments(x64: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample mean ``(D,)`` and biased sample covariance ``S (D, D)`` of float64 rows."""
        x_bar = x64.mean(0)
        xc = x64 - x_bar
        return x_bar, (xc.T @ xc) / x64.shape[0]

    @staticmethod
    def _avg_loglik_from_moments(
        W: torch.Tensor,
        mu: torch.Tensor,
        psi: torch.Tensor,
        x_bar: torch.Tensor,
        S: torch.Tensor,
        SK: torch.Tensor | None = None,
    ) -> float:
        """Average ``log p(x_n)`` from the data moments (TB99 eq. 5 with a mean term):
        ``-1/2 [D log 2 pi + log|C| + tr(C^-1 S) + (x_bar - mu)^T C^-1 (x_bar - mu)]``.
        ``SK = S Psi^-1 W`` may be passed when already computed.  ``O(D^2 Q)``."""
        K, _, L = LinearGaussianModel._precision(W, psi)
        if SK is None:
            SK = S @ K
        delta = x_bar - mu
        logdet = psi.log().sum() + 2.0 * torch.diagonal(L).log().sum()
        trace = (torch.diagonal(S) / psi).sum() - torch.trace(torch.cholesky_solve(K.T @ SK, L))
        kd = torch.linalg.solve_triangular(L, (K.T @ delta).unsqueeze(-1), upper=False)
        quad = (delta.square() / psi).sum() - kd.square().sum()
        return float(-0.5 * (W.shape[0] * _LOG_2PI + logdet + trace + quad))

    # ------------------------------------------------------------------ Pyro model

    def forward(
        self, x: torch.Tensor, indices: torch.Tensor | None = None, size: int | None = None
    ) -> torch.Tensor:
        """The Pyro model ``z ~ N(0, I_Q)``, ``x ~ N(W z + mu, Psi)`` per row.

        Args:
            x: ``(batch, D)`` (or ``(batch, *image_shape)``) observed rows.
            indices, size: data plate subsampling (see :mod:`ppl_gen.lvm.plates`).

        Returns:
            ``z: (..., batch, Q)``; extra leading dims come from enclosing (particle) plates.

        Raises:
            PplGenError: if the rows of ``x`` do not have ``D`` values.
        """
        pyro.module(self.scope, self)
        flat = self.flatten(x)
        W, mu = self.W.to(flat.dtype), self.mu.to(flat.dtype)
        std = self.noise_variance().to(flat.dtype).sqrt()
        q = self.latent_dim
        with data_plate(flat, indices, size):
            z = pyro.sample(
                self.latent_site, dist.Normal(flat.new_zeros(q), flat.new_ones(q)).to_event(1)
            )
            loc = z @ W.T + mu
            pyro.sample("x", dist.Normal(loc, std.expand(loc.shape)).to_event(1), obs=flat)
        return z

    @torch.no_grad()
    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """``E[x | z] = W z + mu`` for ``z: (n, Q)``; returns ``(n, D)`` (no gradient)."""
        return z @ self.W.to(z.dtype).T + self.mu.to(z.dtype)

    @torch.no_grad()
    def sample_prior(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """``n`` codes from ``p(z) = N(0, I_Q)``, ``(n, Q)``, on ``like``'s device and dtype."""
        return torch.randn(n, self.latent_dim, device=like.device, dtype=like.dtype)

    # ------------------------------------------------------------------ exact inference

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x_n) = log N(x_n; mu, W W^T + Psi)`` (TB99 eq. 4-5), in nats.

        Computed in float64 with the Woodbury identity and the determinant lemma
        (``O(N D Q)`` time, rows processed in chunks); differentiable in the parameters.

        Args:
            x: ``(N, D)`` rows.

        Returns:
            ``(N,)`` log-densities in ``x``'s dtype.

        Raises:
            PplGenError: if the rows of ``x`` do not have ``D`` values.
        """
        flat = self.flatten(x)
        W, mu, psi = self.W.double(), self.mu.double(), self.noise_variance().double()
        K, _, L = self._precision(W, psi)
        const = W.shape[0] * _LOG_2PI + psi.log().sum() + 2.0 * torch.diagonal(L).log().sum()
        out = []
        for start in range(0, flat.shape[0], _CHUNK_ROWS):
            r = flat[start : start + _CHUNK_ROWS].double() - mu
            rk = r @ K  # (n, Q), the O(n D Q) product uses every thread
            with single_thread():
                kr = torch.linalg.solve_triangular(L, rk.T, upper=False)  # (Q, n)
            quad = (r.square() / psi).sum(-1) - kr.square().sum(0)
            out.append(-0.5 * (const + quad))
        return torch.cat(out).to(flat.dtype)

    def exact_posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        """Exact ``p(z_n | x_n) = N(Lambda^-1 W^T Psi^-1 (x_n - mu), Lambda^-1)``.

        For PPCA this is TB99 eq. 6: ``M = W^T W + sigma^2 I``, mean
        ``M^-1 W^T (x - mu)``, covariance ``sigma^2 M^-1``; for factor analysis PRML 12.66
        (``G = Lambda^-1``).  Computed in float64, differentiable in the parameters.

        Args:
            x: ``(N, D)`` rows.

        Returns:
            ``MultivariateNormal`` with batch shape ``(N,)`` and event shape ``(Q,)`` in
            ``x``'s dtype (``scale_tril`` shared by all rows, expanded).

        Raises:
            PplGenError: if the rows of ``x`` do not have ``D`` values.
        """
        flat = self.flatten(x)
        W, mu, psi = self.W.double(), self.mu.double(), self.noise_variance().double()
        K, _, L = self._precision(W, psi)
        rk = (flat.double() - mu) @ K  # (N, Q)
        with single_thread():
            loc = torch.cholesky_solve(rk.T, L).T
            tril = torch.linalg.cholesky(torch.cholesky_inverse(L))
        n, q = flat.shape[0], self.latent_dim
        return dist.MultivariateNormal(
            loc.to(flat.dtype), scale_tril=tril.to(flat.dtype).expand(n, q, q)
        )

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, seed: int = 0) -> None:
        """Data-dependent start: ``mu = x_bar``; ``W_dq = 0.1 std_d eps_dq`` with
        ``eps ~ N(0, 1)`` from a generator seeded ``seed``; noise = data variance (per
        dimension for FA, averaged over dimensions for PPCA), at least ``NOISE_FLOOR``.

        Raises:
            PplGenError: if ``x`` has the wrong width, no rows or non-finite values.
        """
        x64 = self._fit_data(x).double()
        x_bar = x64.mean(0)
        var = (x64 - x_bar).square().mean(0)
        generator = torch.Generator().manual_seed(int(seed))
        eps = torch.randn(self.data_dim, self.latent_dim, generator=generator, dtype=torch.float64)
        W = 0.1 * var.sqrt().unsqueeze(-1) * eps.to(x64.device)
        self._store(W, x_bar, self._noise_m_step(var))
        self.mf_state = None

    def em(
        self,
        x: torch.Tensor,
        *,
        max_iter: int = 500,
        tol: float = 1e-6,
        seed: int = 0,
        init: bool = True,
    ) -> FitHistory:
        """Maximum likelihood by EM with the exact E-step and closed-form M-step.

        E-step (TB99 appendix; PRML 12.54-12.55 / 12.66-12.67), with
        ``G = Lambda^-1 W^T Psi^-1``: ``E[z_n] = G (x_n - mu)``,
        ``E[z_n z_n^T] = Lambda^-1 + E[z_n] E[z_n]^T``.  M-step (PRML 12.56-12.57 for PPCA,
        12.69-12.70 for FA), maximising jointly over ``(W, mu)`` and then the noise, written
        with the sample covariance ``S`` so that one iteration costs ``O(D^2 Q)``
        (the "EM using S" form)::

            W_new   = S G^T (Lambda^-1 + G S G^T)^-1
            mu_new  = x_bar - W_new G (x_bar - mu)        (= x_bar once mu = x_bar)
            Psi_new = diag(S - W_new G S)                  (PPCA: sigma^2 = its mean)

        each noise variance floored at ``NOISE_FLOOR``.  Runs in float64; the parameters are
        written back at the end.  The log-likelihood never decreases (EM's guarantee; the
        floor keeps each M-step a constrained maximiser).

        Args:
            x: ``(N, D)`` training rows.
            max_iter: maximum number of iterations (>= 1).
            tol: nats per datapoint: stop when the last change of the average
                log-likelihood and Aitken's estimate of the gain still to come are both
                below ``tol`` (:func:`ppl_gen.models.stopping.converged`; 0: run all
                ``max_iter``).  The default reaches the maximum EM is heading to within
                about ``1e-6`` nats/point.
            seed: seed of :meth:`init_from_data`.
            init: call :meth:`init_from_data` first (else start from the current values).

        Returns:
            :class:`FitHistory`: ``objective[t]`` = average exact log-likelihood (nats per
            datapoint) after iteration ``t``; ``seconds`` cumulative, including the
            initialisation and forming ``S``; ``extra["initial_objective"]`` the start's.

        Raises:
            PplGenError: bad ``x`` (width, empty, non-finite), ``max_iter`` or ``tol``.
        """
        start = time.perf_counter()
        x = self._fit_data(x)
        require_positive_int("max_iter", max_iter)
        require(tol >= 0, f"tol must be >= 0, got {tol!r}")
        if init:
            self.init_from_data(x, seed)
        x_bar, S = self._moments(x.double())
        W, mu, psi = self._params64()
        diag_s = torch.diagonal(S)

        def stats(W, mu, psi):
            K, lam, L = self._precision(W, psi)
            SK = S @ K
            return K, L, SK, self._avg_loglik_from_moments(W, mu, psi, x_bar, S, SK)

        with single_thread():  # O(D^2 Q) per iteration: latency-bound, see ppl_gen.core.threads
            K, L, SK, ll0 = stats(W, mu, psi)
            history = FitHistory(extra={"initial_objective": ll0})
            for _ in range(max_iter):
                SGt = torch.cholesky_solve(SK.T, L).T  # S G^T, (D, Q)
                Gt = torch.cholesky_solve(K.T, L).T  # G^T, (D, Q)
                Ezz = torch.cholesky_inverse(L) + Gt.T @ SGt  # Lambda^-1 + G S G^T
                W_new = torch.linalg.solve(Ezz, SGt.T).T
                mu = x_bar - W_new @ (Gt.T @ (x_bar - mu))
                W = W_new
                psi = self._noise_m_step(diag_s - (W * SGt).sum(-1))
                K, L, SK, ll = stats(W, mu, psi)
                history.objective.append(ll)
                history.seconds.append(time.perf_counter() - start)
                if converged([history.extra["initial_objective"], *history.objective], tol):
                    history.converged = True
                    break
        self._store(W, mu, psi)
        return history


__all__ = ["LinearGaussianModel", "MeanFieldState", "NOISE_FLOOR"]
