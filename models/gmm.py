"""Gaussian mixture model: exact EM and the variational Bayesian mixture (Bishop PRML 9.2, 10.2).

The generative model is ``c_i ~ Categorical(pi)``, ``x_i | c_i = k ~ N(mu_k, Sigma_k)`` with
``K`` components in ``D`` dimensions, ``Sigma_k`` full or diagonal.  Everything the
tractable-model interface (:mod:`ppl_gen.lvm.tractable`) asks for is closed form here:

* ``log_marginal(x)`` -- ``log p(x_i) = logsumexp_k [log pi_k + log N(x_i | mu_k, Sigma_k)]``
  (PRML 9.7), ``(N,)`` nats;
* ``exact_posterior(x)`` -- the responsibilities ``gamma(z_ik)`` (PRML 9.23) as a
  ``Categorical`` with batch shape ``(N,)``;
* ``em(x)`` -- EM for the mixture (PRML 9.2.2: E-step 9.23, M-step 9.24-9.27), seeded by
  k-means++ (Arthur & Vassilvitskii 2007);
* ``mean_field(x)`` -- the variational Bayesian mixture of PRML 10.2 (CAVI, 10.46-10.63),
  its full lower bound (10.70-10.77), its test bounds and its predictive density (10.81).

**How the sums over datapoints are vectorised.**  Every per-component log-density is a
quadratic form in ``x``: ``-1/2 x^T P_k x + h_k^T x + c_k``.  With the feature rows
``z(x) = [x_a x_b (a <= b), x, 1]`` (``D (D+1)/2 + D + 1`` columns; ``[x^2, x, 1]`` for
diagonal covariances) the ``(N, K)`` matrix of weighted log-densities is a single matrix
product ``Z @ B`` and the M-step's sufficient statistics ``sum_n r_nk z(x_n)`` (counts, first
and second moments) are a single product ``R^T @ Z``.  One EM iteration is therefore two
GEMMs and a few in-place sweeps over ``(N, K)`` (max, subtract, exp, sum, divide); no Python
loop over datapoints or components.  Small problems run on one torch thread (see
``GaussianMixture.threads``).  The data are centred at their mean first and everything
runs in float64, so the cancellation in ``E[x x^T] - mu mu^T`` costs nothing measurable
(relative error ~1e-16 times the squared ratio of the data spread to a component's width).
``Z`` is built once per fit when it has at most ``2**25`` entries, otherwise on the fly in
row chunks (large ``D``).

The module's parameters are stored in float32 (``logits (K,)``, ``means (K, D)``,
``scale_tril_raw (K, D, D)`` or ``log_scales (K, D)``); the closed-form fits compute in
float64 and write back.  All log-densities are in nats.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field, replace

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppl_gen.core.distributed import DistributedContext
from ppl_gen.core.errors import PplGenError, require, require_positive_int
from ppl_gen.core.naming import unique_scope
from ppl_gen.core.threads import num_threads, one_thread, single_thread
from ppl_gen.infer.bounds import BoundEstimate
from ppl_gen.lvm.plates import data_plate, flatten_rows
from ppl_gen.lvm.tractable import FitHistory

COVARIANCES = ("full", "diag")
LOG_2PI = math.log(2.0 * math.pi)
#: Largest feature matrix ``Z`` (entries) kept in memory for a whole fit; beyond it ``Z`` is
#: rebuilt in row chunks of about ``_CHUNK_ENTRIES`` entries every iteration.
_DESIGN_BUDGET = 2**25
_CHUNK_ENTRIES = 2**22
_EPS64 = torch.finfo(torch.float64).eps


#: Fits and evaluations with fewer feature entries (rows x columns) than this run on one
#: thread unless the model's ``threads`` says otherwise (see :func:`_threads_for`).
_PARALLEL_MIN_ENTRIES = 2**24


def _threads_for(n_rows: int, data_dim: int, covariance: str, threads: int | None):
    """The thread count for a pass over ``n_rows`` rows: ``threads``, or by problem size.

    With ``threads=None``: one thread below ``_PARALLEL_MIN_ENTRIES`` feature entries, the
    caller's torch setting above.  The passes are a few memory-bound sweeps over ``(N, K)``
    and ``(N, D(D+1)/2)`` arrays, where two threads gain at most 2x, while every OpenMP
    parallel region on a busy shared machine can wait milliseconds for a descheduled worker:
    on the 2-core development machine under load, 100 EM iterations on 600 points took
    6 s on two threads and 0.02 s on one, and an EM iteration at N = 100,000, D = K = 10
    took 0.19 s on two threads and 0.04 s on one.
    """
    if threads is not None:
        return num_threads(threads)
    n_cols = (data_dim * (data_dim + 1) // 2 if covariance == "full" else data_dim) + data_dim
    return single_thread() if n_rows * (n_cols + 1) < _PARALLEL_MIN_ENTRIES else nullcontext()


def _sized(method: Callable) -> Callable:
    """Run ``method(self, x, ...)`` under :func:`_threads_for` the size of ``x``."""

    @functools.wraps(method)
    def wrapper(self, x, *args, **kwargs):
        n = int(x.shape[0]) if torch.is_tensor(x) and x.dim() > 0 else 0
        with _threads_for(n, self.data_dim, self.covariance, self.threads):
            return method(self, x, *args, **kwargs)

    return wrapper


# ---------------------------------------------------------------------------- k-means++


def _sq_dist(a: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor | None = None) -> torch.Tensor:
    """``(n, m)`` squared Euclidean distances between the rows of ``a`` and ``b``."""
    a_sq = (a * a).sum(-1, keepdim=True)
    b_sq = (b * b).sum(-1) if b_sq is None else b_sq
    return (a_sq + b_sq - 2.0 * (a @ b.T)).clamp_min_(0.0)


def kmeans_plusplus(
    x: torch.Tensor,
    n_clusters: int,
    generator: torch.Generator,
    n_local_trials: int | None = None,
) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007, "D^2 weighting").

    The first centre is a uniformly drawn row; every further centre is drawn with
    probability proportional to its squared distance to the nearest centre chosen so far.
    With ``n_local_trials > 1`` this is the *greedy* variant used by scikit-learn: that many
    candidates are drawn and the one that most reduces the potential
    ``sum_n min_c ||x_n - c||^2`` is kept (Arthur & Vassilvitskii 2007, sec. 6).

    Args:
        x: ``(N, D)`` rows (any float dtype; distances are computed in ``x``'s dtype).
        n_clusters: ``K <= N`` centres to pick.
        generator: a CPU ``torch.Generator`` (seeded by the caller) for every draw.
        n_local_trials: candidates per centre; default ``2 + floor(ln K)`` (scikit-learn's);
            1 gives the original algorithm.

    Returns:
        ``(K,)`` int64 row indices of the centres, on ``x``'s device.

    Raises:
        PplGenError: if ``K`` is not a positive integer or exceeds the number of rows.
    """
    require_positive_int("--components", n_clusters)
    n = x.shape[0]
    require(n >= n_clusters, f"x: k-means++ needs at least {n_clusters} rows, got {n}")
    trials = 2 + int(math.log(n_clusters)) if n_local_trials is None else n_local_trials
    require_positive_int("n_local_trials", trials)
    x_sq = (x * x).sum(-1)
    first = int(torch.randint(n, (1,), generator=generator))
    centres = [first]
    closest = _sq_dist(x[first : first + 1], x, x_sq)[0]
    potential = closest.sum()
    for _ in range(1, n_clusters):
        u = torch.rand(trials, generator=generator, dtype=torch.float64).to(x.device)
        targets = (u * potential.double()).to(closest.dtype)
        cdf = torch.cumsum(closest, 0)
        # side='right': a zero-distance row (an existing centre) is never drawn
        cand = torch.searchsorted(cdf, targets, side="right").clamp_max_(n - 1)
        dist_cand = torch.minimum(closest, _sq_dist(x[cand], x, x_sq))
        pots = dist_cand.sum(1)
        best = int(torch.argmin(pots))
        closest, potential = dist_cand[best], pots[best]
        centres.append(int(cand[best]))
    return torch.tensor(centres, dtype=torch.int64, device=x.device)


# ------------------------------------------------------------------ quadratic features


class _Design:
    """Feature rows ``z(x) = [quadratic terms, x, 1]`` of centred data (see module docs).

    Args:
        x64: ``(N, D)`` float64 rows.
        center: ``(D,)`` point subtracted from the rows (and from every mean).
        covariance: ``"full"`` (``D (D+1)/2`` quadratic columns ``x_a x_b, a <= b``) or
            ``"diag"`` (``D`` columns ``x_a^2``).
    """

    def __init__(
        self,
        x64: torch.Tensor,
        center: torch.Tensor,
        covariance: str,
        dist: DistributedContext | None = None,
    ) -> None:
        self.n, self.d = x64.shape
        # Data-parallel EM: the rows are this rank's shard, statistics are all-reduced.
        self.dist = dist if dist is not None and dist.distributed else None
        self.n_total = int(dist.all_reduce_float(self.n, "EM statistics")) if self.dist else self.n
        self.covariance = covariance
        self.center = center
        self.xc = x64 - center
        if covariance == "full":
            self.rows, self.cols = torch.triu_indices(self.d, self.d, device=x64.device)
            self.n_quad = self.rows.numel()
            off = (self.rows != self.cols).to(torch.float64)
            self.mult = 1.0 + off  # x^T P x = sum_a P_aa x_a^2 + 2 sum_{a<b} P_ab x_a x_b
        else:
            self.n_quad = self.d
        self.n_cols = self.n_quad + self.d + 1
        self.chunk = max(1, _CHUNK_ENTRIES // self.n_cols)
        self._full = None
        if self.n * self.n_cols <= _DESIGN_BUDGET:
            self._full = self.features(self.xc)
            self.chunk = max(1, self.n)

    def features(self, xc: torch.Tensor) -> torch.Tensor:
        """``(n, n_cols)`` feature rows of centred rows ``xc: (n, D)``."""
        out = xc.new_empty(xc.shape[0], self.n_cols)
        if self.covariance == "full":
            torch.mul(xc[:, self.rows], xc[:, self.cols], out=out[:, : self.n_quad])
        else:
            torch.mul(xc, xc, out=out[:, : self.n_quad])
        out[:, self.n_quad : self.n_quad + self.d] = xc
        out[:, -1] = 1.0
        return out

    def chunks(self) -> Iterator[torch.Tensor]:
        """Feature rows of all datapoints, in row order, chunk by chunk."""
        if self._full is not None:
            yield self._full
            return
        for start in range(0, self.n, self.chunk):
            yield self.features(self.xc[start : start + self.chunk])

    def coefficients(
        self, prec: torch.Tensor, h: torch.Tensor, const: torch.Tensor
    ) -> torch.Tensor:
        """``B: (n_cols, M)`` with ``(Z @ B)[n, m] = -1/2 x^T P_m x + h_m^T x + c_m``.

        Args:
            prec: ``(..., D, D)`` symmetric matrices (full) or ``(..., D)`` diagonals.
            h: ``(..., D)`` linear coefficients; const: ``(...)`` constants (centred frame).

        Returns:
            ``(n_cols, M)`` contiguous, ``M`` = product of the batch dims.
        """
        if self.covariance == "full":
            quad = -0.5 * prec[..., self.rows, self.cols] * self.mult
        else:
            quad = -0.5 * prec
        b = torch.cat([quad, h, const.unsqueeze(-1)], dim=-1)
        return b.reshape(-1, self.n_cols).T.contiguous()

    def unpack(self, stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Split ``(K, n_cols)`` statistics ``sum_n r_nk z(x_n)`` of the centred data.

        Returns:
            ``nk (K,)``: ``sum_n r_nk + 10 eps`` (scikit-learn's guard against empty
            components); ``xbar (K, D)``: weighted means; ``second (K, D, D)`` or ``(K, D)``:
            weighted second moments ``sum_n r_nk x_n x_n^T / nk``.
        """
        nk = stats[:, -1] + 10.0 * _EPS64
        xbar = stats[:, self.n_quad : self.n_quad + self.d] / nk[:, None]
        quad = stats[:, : self.n_quad] / nk[:, None]
        if self.covariance == "diag":
            return nk, xbar, quad
        second = quad.new_zeros(quad.shape[0], self.d, self.d)
        second[:, self.rows, self.cols] = quad
        second[:, self.cols, self.rows] = quad
        return nk, xbar, second


def _e_pass(
    design: _Design, b: torch.Tensor, entropy: bool = False
) -> tuple[float, torch.Tensor, float]:
    """One pass over the data: log-normaliser, responsibilities' statistics and entropy.

    Args:
        design: the data's feature rows.
        b: ``(n_cols, K)`` coefficients of the weighted log-densities ``log rho_nk``.
        entropy: also return ``-sum_nk r_nk log r_nk``.

    Returns:
        ``(sum_n logsumexp_k log rho_nk, stats (K, n_cols) = R^T Z, entropy)``, float64.
    """
    stats = b.new_zeros(b.shape[1], design.n_cols)
    total, ent = 0.0, 0.0
    for z in design.chunks():
        # log-sum-exp by hand: torch.logsumexp over a short inner dim is several times slower.
        lp = z @ b
        mx = lp.amax(dim=1, keepdim=True)
        lp.sub_(mx)
        r = lp.exp() if entropy else lp.exp_()
        s = r.sum(dim=1, keepdim=True)
        r.div_(s)
        log_s = s.log_()
        if entropy:
            ent -= float((r * (lp - log_s)).sum())
        stats.addmm_(r.T, z)
        total += float(log_s.sum() + mx.sum())
    if design.dist is not None:  # data-parallel EM: sum the statistics of all ranks
        flat = torch.cat([stats.reshape(-1), stats.new_tensor([total, ent])])
        design.dist.all_reduce_sum(flat, "EM statistics")
        stats = flat[:-2].view_as(stats)
        total, ent = float(flat[-2]), float(flat[-1])
    return total, stats, ent


def _sym(a: torch.Tensor) -> torch.Tensor:
    return 0.5 * (a + a.transpose(-1, -2))


def _cholesky(a: torch.Tensor, what: str) -> torch.Tensor:
    """Batched Cholesky factor, with a :class:`PplGenError` naming the failing component."""
    with single_thread():
        chol, info = torch.linalg.cholesky_ex(a)
    if bool((info > 0).any()):
        bad = int(torch.nonzero(info > 0)[0, 0])
        raise PplGenError(
            f"{what} of component {bad} is not positive definite (a component collapsed "
            "onto too few points); increase reg_covar or reduce --components"
        )
    return chol


def _chol_inverse(chol: torch.Tensor) -> torch.Tensor:
    with single_thread():
        return _sym(torch.cholesky_inverse(chol))


def _logdet_from_chol(chol: torch.Tensor) -> torch.Tensor:
    return 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)


def _multigammaln_terms(nu: torch.Tensor, d: int) -> torch.Tensor:
    """``sum_{i=1}^{D} ln Gamma((nu + 1 - i) / 2)`` for each ``nu``."""
    i = torch.arange(d, dtype=nu.dtype, device=nu.device)
    return torch.lgamma(0.5 * (nu.unsqueeze(-1) - i)).sum(-1)


def _digamma_terms(nu: torch.Tensor, d: int) -> torch.Tensor:
    """``sum_{i=1}^{D} psi((nu + 1 - i) / 2)`` for each ``nu``."""
    i = torch.arange(d, dtype=nu.dtype, device=nu.device)
    return torch.digamma(0.5 * (nu.unsqueeze(-1) - i)).sum(-1)


def _log_wishart_norm(logdet_w: torch.Tensor, nu: torch.Tensor, d: int) -> torch.Tensor:
    """``ln B(W, nu)``, the log normaliser of the Wishart density (PRML B.79)."""
    return (
        -0.5 * nu * logdet_w
        - 0.5 * nu * d * math.log(2.0)
        - 0.25 * d * (d - 1) * math.log(math.pi)
        - _multigammaln_terms(nu, d)
    )


def _log_dirichlet_norm(alpha: torch.Tensor) -> torch.Tensor:
    """``ln C(alpha) = ln Gamma(sum alpha) - sum ln Gamma(alpha)`` (PRML B.23)."""
    return torch.lgamma(alpha.sum(-1)) - torch.lgamma(alpha).sum(-1)


# ------------------------------------------------------------- likelihood of the Pyro model


class ComponentGaussian(dist.TorchDistribution):
    """``p(x | c) = N(x | mu_c, Sigma_c)`` for component labels ``c`` of any batch shape.

    ``log_prob(x)`` first evaluates the ``(..., K)`` table ``log N(x | mu_k, Sigma_k)`` for
    every component (one batched triangular solve per *row of x*) and then gathers the
    entry of ``c``.  Equivalent to ``MultivariateNormal(mu[c], scale_tril=L[c])`` but it
    never materialises one ``D x D`` factor per (sample, datapoint) pair: with ``S``
    importance samples of ``c`` for ``N`` rows that would be ``S N D^2`` numbers (123 GB for
    50,000 pairs at ``D = 784``).  Differentiable in the component parameters.

    Args:
        c: int64 component labels, any shape (the batch shape; ``(K, 1)`` when enumerated).
        means: ``(K, D)``.
        scale: ``(K, D, D)`` Cholesky factors (``diag=False``) or ``(K, D)`` standard
            deviations (``diag=True``).
        diag: whether ``scale`` holds diagonal standard deviations.
    """

    arg_constraints: dict = {}
    support = dist.constraints.real_vector
    has_rsample = False

    def __init__(
        self,
        c: torch.Tensor,
        means: torch.Tensor,
        scale: torch.Tensor,
        diag: bool = False,
        validate_args: bool | None = None,
    ) -> None:
        self.c, self.means, self.scale, self.diag = c, means, scale, diag
        super().__init__(c.shape, means.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None) -> ComponentGaussian:
        batch_shape = torch.Size(batch_shape)
        return ComponentGaussian(
            self.c.expand(batch_shape), self.means, self.scale, self.diag, validate_args=False
        )

    def component_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``(..., K)`` table ``log N(value | mu_k, Sigma_k)`` for ``value: (..., D)``."""
        d = self.means.shape[-1]
        diff = value.unsqueeze(-2) - self.means  # (..., K, D)
        if self.diag:
            maha = (diff / self.scale).pow(2).sum(-1)
            half_logdet = self.scale.log().sum(-1)
        else:
            flat = diff.reshape(-1, *self.means.shape).permute(1, 2, 0)  # (K, D, M)
            y = torch.linalg.solve_triangular(self.scale, flat, upper=False)
            maha = y.pow(2).sum(-2).T.reshape(diff.shape[:-1])
            half_logdet = torch.diagonal(self.scale, dim1=-2, dim2=-1).log().sum(-1)
        return -0.5 * (d * LOG_2PI + maha) - half_logdet

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        table = self.component_log_prob(value)
        shape = torch.broadcast_shapes(table.shape[:-1], self.c.shape)
        index = self.c.expand(shape).unsqueeze(-1)
        return torch.gather(table.expand(*shape, table.shape[-1]), -1, index).squeeze(-1)

    def sample(self, sample_shape=()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        c = self.c.expand(shape)
        eps = torch.randn(*shape, self.means.shape[-1], dtype=self.means.dtype)
        eps = eps.to(self.means.device)
        if self.diag:
            return self.means[c] + self.scale[c] * eps
        return self.means[c] + (self.scale[c] @ eps.unsqueeze(-1)).squeeze(-1)


# ---------------------------------------------------------------- variational Bayes state


@dataclass
class VBPrior:
    """Conjugate prior of the Bayesian mixture (PRML 10.39-10.40), float64.

    ``pi ~ Dirichlet(alpha0 1_K)``, ``Lambda_k ~ Wishart(W0, nu0)``,
    ``mu_k | Lambda_k ~ N(m0, (beta0 Lambda_k)^-1)``.  ``W0_inv`` is ``W0^-1``, which is
    scikit-learn's ``covariance_prior``.

    Attributes:
        alpha0: Dirichlet concentration (sklearn ``weight_concentration_prior``, default 1/K).
        beta0: mean precision scale (sklearn ``mean_precision_prior``, default 1).
        m0: ``(D,)`` prior mean (sklearn ``mean_prior``, default the data mean).
        W0_inv: ``(D, D)`` inverse Wishart scale (sklearn ``covariance_prior``, default the
            data covariance with ``N - 1`` in the denominator).
        nu0: Wishart degrees of freedom ``> D - 1`` (sklearn ``degrees_of_freedom_prior``,
            default ``D``).
    """

    alpha0: float
    beta0: float
    m0: torch.Tensor
    W0_inv: torch.Tensor
    nu0: float


@dataclass
class VBPosterior:
    """The variational posterior ``q(pi) prod_k q(mu_k, Lambda_k)`` of PRML 10.55-10.59.

    Attributes:
        alpha: ``(K,)`` Dirichlet concentrations of ``q(pi)`` (10.58).
        beta: ``(K,)`` mean precision scales (10.60).
        m: ``(K, D)`` means of ``q(mu_k)`` (10.61), data coordinates.
        W: ``(K, D, D)`` Wishart scale matrices (10.62); ``E[Lambda_k] = nu_k W_k``.
        nu: ``(K,)`` Wishart degrees of freedom (10.63).
        prior: the :class:`VBPrior` it was fitted under.
        entropy: ``-sum_nk r_nk ln r_nk`` (nats, summed over the training rows) of the
            ``q(c)`` that produced this ``q(theta)`` in the last update.
        n: number of training rows.
    """

    alpha: torch.Tensor
    beta: torch.Tensor
    m: torch.Tensor
    W: torch.Tensor
    nu: torch.Tensor
    prior: VBPrior
    entropy: float = 0.0
    n: int = 0
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------- model


class GaussianMixture(nn.Module):
    """Gaussian mixture ``p(x) = sum_k pi_k N(x | mu_k, Sigma_k)`` as a Pyro model.

    Args:
        data_dim: ``D`` (>= 1).
        n_components: ``K`` (>= 1).
        covariance: ``"full"`` (``Sigma_k = L_k L_k^T``, ``L_k`` lower triangular with
            diagonal ``exp(raw_kii)``) or ``"diag"`` (``Sigma_k = diag(exp(2 log_scales_k))``).
        reg_covar: added to the diagonal of every covariance in the M-step (as in
            scikit-learn, default ``1e-6``).

    Attribute ``threads`` (default ``None``): torch threads for the closed-form fits and
    evaluations (``em``, ``mean_field``, ``log_marginal``, ...); ``None`` uses one thread
    for problems below ``2**24`` feature entries (about 250,000 rows at ``D = 10``, full)
    and torch's setting above (see :func:`_threads_for`).  The caller's setting is restored
    afterwards.

    Parameters (float32, unconstrained, so SVI can optimise them directly): ``logits (K,)``,
    ``means (K, D)``, and ``scale_tril_raw (K, D, D)`` (its strictly upper part is unused)
    or ``log_scales (K, D)``.  Sites: ``"c"`` (latent component, enumerable) and ``"x"``.

    Raises:
        PplGenError: if ``data_dim`` or ``n_components`` is not a positive integer, if
            ``covariance`` is not ``full`` or ``diag`` (names ``--covariance``) or if
            ``reg_covar`` is negative.
    """

    latent_site = "c"
    discrete = True

    def __init__(
        self,
        data_dim: int,
        n_components: int,
        covariance: str = "full",
        reg_covar: float = 1e-6,
    ) -> None:
        super().__init__()
        self.data_dim = require_positive_int("data_dim", data_dim)
        self.n_components = require_positive_int("--components", n_components)
        if covariance not in COVARIANCES:
            raise PplGenError(
                f"--covariance must be one of {', '.join(COVARIANCES)}, got {covariance!r}"
            )
        require(
            isinstance(reg_covar, (int, float)) and reg_covar >= 0,
            f"reg_covar must be a number >= 0, got {reg_covar!r}",
        )
        self.covariance = covariance
        self.reg_covar = float(reg_covar)
        self.image_shape: tuple[int, ...] = (data_dim,)
        self.scope = unique_scope(type(self).__name__)
        k, d = n_components, data_dim
        gen = torch.Generator().manual_seed(0)
        self.logits = nn.Parameter(torch.zeros(k))
        self.means = nn.Parameter(torch.randn(k, d, generator=gen))
        if covariance == "full":
            self.scale_tril_raw = nn.Parameter(torch.zeros(k, d, d))
        else:
            self.log_scales = nn.Parameter(torch.zeros(k, d))
        self.vb: VBPosterior | None = None
        self.threads: int | None = None

    # ------------------------------------------------------------------ parameters

    @property
    def latent_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-datapoint event shape of each latent site, ``{"c": ()}`` (discrete)."""
        return {self.latent_site: ()}

    def weights(self) -> torch.Tensor:
        """Mixing weights ``pi = softmax(logits)``, ``(K,)``."""
        return torch.softmax(self.logits, dim=-1)

    @property
    def _scale_floor(self) -> float:
        """``sqrt(reg_covar)``: floor on the diagonal of every ``L_k`` (diag: on the scales).

        EM's covariances are ``S_k + reg_covar I``, whose Cholesky diagonals are at least
        ``sqrt(reg_covar)``, so the floor never binds for them; it keeps gradient-based fits
        (SVI) from collapsing a component onto a constant pixel.
        """
        return math.sqrt(self.reg_covar)

    def _diag_scales(self, raw_log: torch.Tensor) -> torch.Tensor:
        return raw_log.exp().clamp_min(self._scale_floor)

    def scale_tril(self) -> torch.Tensor:
        """Cholesky factors ``L_k`` of the covariances, ``(K, D, D)``, differentiable."""
        if self.covariance == "diag":
            return torch.diag_embed(self._diag_scales(self.log_scales))
        raw = self.scale_tril_raw
        diag = self._diag_scales(torch.diagonal(raw, dim1=-2, dim2=-1))
        return raw.tril(-1) + torch.diag_embed(diag)

    def covariances(self) -> torch.Tensor:
        """Covariance matrices ``Sigma_k = L_k L_k^T``, ``(K, D, D)``, differentiable."""
        if self.covariance == "diag":
            return torch.diag_embed(self._diag_scales(self.log_scales).square())
        chol = self.scale_tril()
        return chol @ chol.transpose(-1, -2)

    def _params64(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log pi (K,), mu (K, D), Sigma (K, D, D) or variances (K, D))`` in float64."""
        with torch.no_grad():
            log_w = torch.log_softmax(self.logits.double(), dim=-1)
            mu = self.means.double()
            if self.covariance == "diag":
                return log_w, mu, self._diag_scales(self.log_scales.double()).square()
            raw = self.scale_tril_raw.double()
            diag = self._diag_scales(torch.diagonal(raw, dim1=-2, dim2=-1))
            chol = raw.tril(-1) + torch.diag_embed(diag)
            return log_w, mu, chol @ chol.transpose(-1, -2)

    @torch.no_grad()
    def _store(self, log_w: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor) -> None:
        """Write float64 ``log pi``, means and covariances (diag: variances) to the parameters."""
        self.logits.copy_(log_w.to(self.logits))
        self.means.copy_(mu.to(self.means))
        if self.covariance == "diag":
            self.log_scales.copy_((0.5 * cov.log()).to(self.log_scales))
        else:
            chol = _cholesky(_sym(cov), "covariance")
            raw = chol.tril(-1) + torch.diag_embed(torch.diagonal(chol, dim1=-2, dim2=-1).log())
            self.scale_tril_raw.copy_(raw.to(self.scale_tril_raw))

    def flatten(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, *image_shape) -> (N, D)``; see :func:`ppl_gen.lvm.plates.flatten_rows`."""
        return flatten_rows(x, self.data_dim, type(self).__name__)

    def _fit_data(self, x: torch.Tensor, min_rows: int = 1) -> torch.Tensor:
        flat = self.flatten(x)
        require(
            flat.shape[0] >= min_rows,
            f"x: need at least {min_rows} rows (--components {self.n_components}), "
            f"got {flat.shape[0]}",
        )
        require(bool(torch.isfinite(flat).all()), "x: contains NaN or infinite values")
        return flat.double()

    # ------------------------------------------------------------------ Pyro model

    def forward(
        self, x: torch.Tensor, indices: torch.Tensor | None = None, size: int | None = None
    ) -> torch.Tensor:
        """The Pyro model ``c ~ Categorical(pi)``, ``x ~ N(mu_c, Sigma_c)`` per row.

        ``c`` is marked ``enumerate="parallel"``: under ``TraceEnum_ELBO`` with an empty
        guide it is summed out, and the ELBO is the exact log-likelihood.  When a guide
        samples ``c`` (possibly with extra leading particle dims), ``x``'s
        :class:`ComponentGaussian` evaluates all ``K`` component densities of each row once
        and gathers the sampled one.

        Args:
            x: ``(batch, D)`` (or ``(batch, *image_shape)``) observed rows.
            indices, size: data plate subsampling (see :mod:`ppl_gen.lvm.plates`).

        Returns:
            ``c``: ``(..., batch)`` int64 (``(K, 1)``-shaped when enumerated).

        Raises:
            PplGenError: if the rows of ``x`` do not have ``D`` values.
        """
        pyro.module(self.scope, self)
        flat = self.flatten(x)
        logits = self.logits.to(flat.dtype)
        means = self.means.to(flat.dtype)
        with data_plate(flat, indices, size):
            c = pyro.sample(
                self.latent_site,
                dist.Categorical(logits=logits),
                infer={"enumerate": "parallel"},
            )
            if self.covariance == "full":
                px = ComponentGaussian(c, means, self.scale_tril().to(flat.dtype))
            else:
                scales = self._diag_scales(self.log_scales).to(flat.dtype)
                px = ComponentGaussian(c, means, scales, diag=True)
            pyro.sample("x", px, obs=flat)
        return c

    @torch.no_grad()
    def decode_mean(self, c: torch.Tensor) -> torch.Tensor:
        """``E[x | c] = mu_c`` for ``c: (n,)`` int64; returns ``(n, D)``."""
        return self.means[c.long()]

    @torch.no_grad()
    def sample_prior(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """``n`` component labels from ``p(c) = Categorical(pi)``, ``(n,)`` on ``like``'s device."""
        probs = self.weights().detach().to(like.device)
        return torch.multinomial(probs, n, replacement=True)

    # ------------------------------------------------------------------ exact inference

    @one_thread
    def _component_coefficients(
        self, design: _Design, log_w: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor
    ) -> torch.Tensor:
        """``B`` of ``log pi_k + log N(x | mu_k, Sigma_k)`` in ``design``'s centred frame."""
        muc = mu - design.center
        d = self.data_dim
        if self.covariance == "diag":
            prec = 1.0 / cov
            logdet = cov.log().sum(-1)
            h = prec * muc
        else:
            chol = _cholesky(cov, "covariance")
            prec = _chol_inverse(chol)
            logdet = _logdet_from_chol(chol)
            h = (prec @ muc.unsqueeze(-1)).squeeze(-1)
        const = log_w - 0.5 * d * LOG_2PI - 0.5 * logdet - 0.5 * (h * muc).sum(-1)
        return design.coefficients(prec, h, const)

    def _design(self, x64: torch.Tensor, center: torch.Tensor | None = None) -> _Design:
        if center is None:
            center = x64.mean(0)
        return _Design(x64, center, self.covariance)

    @torch.no_grad()
    @_sized
    def _weighted_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` float64 ``log pi_k + log N(x_n | mu_k, Sigma_k)``."""
        x64 = self.flatten(x).double()
        log_w, mu, cov = self._params64()
        design = self._design(x64, mu.mean(0))
        b = self._component_coefficients(design, log_w, mu, cov)
        return torch.cat([z @ b for z in design.chunks()])

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x_n) = logsumexp_k [log pi_k + log N(x_n | mu_k, Sigma_k)]`` (PRML 9.7).

        Computed in float64 without gradient.

        Args:
            x: ``(N, D)`` rows.

        Returns:
            ``(N,)`` nats, in ``x``'s floating dtype (float32 for integer input).

        Raises:
            PplGenError: if the rows of ``x`` do not have ``D`` values.
        """
        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        return torch.logsumexp(self._weighted_log_prob(x), dim=1).to(dtype)

    def exact_posterior(self, x: torch.Tensor) -> dist.Categorical:
        """``p(c_n | x_n)``: the responsibilities ``gamma(z_nk)`` of PRML 9.23.

        Args:
            x: ``(N, D)`` rows.

        Returns:
            ``Categorical`` with batch shape ``(N,)`` over ``K`` components (normalised
            logits in ``x``'s floating dtype; no gradient).
        """
        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        lp = self._weighted_log_prob(x)
        return dist.Categorical(logits=(lp - torch.logsumexp(lp, 1, keepdim=True)).to(dtype))

    # ------------------------------------------------------------------ EM

    @one_thread
    def _m_step(
        self, design: _Design, stats: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Closed-form M-step (PRML 9.24-9.27) from ``R^T Z``; returns data-frame params."""
        nk, xbar, second = design.unpack(stats)
        log_w = torch.log(nk / design.n_total)
        if self.covariance == "diag":
            cov = (second - xbar * xbar).clamp_min_(0.0) + self.reg_covar
        else:
            cov = _sym(second - xbar.unsqueeze(-1) * xbar.unsqueeze(-2))
            cov.diagonal(dim1=-2, dim2=-1).add_(self.reg_covar)
        return log_w, xbar + design.center, cov

    def _resp_stats(self, design: _Design, resp: torch.Tensor) -> torch.Tensor:
        """``R^T Z`` for given responsibilities ``resp: (N, K)``."""
        stats = resp.new_zeros(resp.shape[1], design.n_cols)
        start = 0
        for z in design.chunks():
            stats.addmm_(resp[start : start + z.shape[0]].T, z)
            start += z.shape[0]
        return stats

    @torch.no_grad()
    @_sized
    def initial_responsibilities(self, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Hard assignments to k-means++ centres, as one-hot responsibilities.

        The centres are ``K`` rows chosen by :func:`kmeans_plusplus` (greedy variant,
        generator seeded with ``seed``); every row is assigned to its nearest centre.

        Args:
            x: ``(N, D)`` rows, ``N >= K``.
            seed: seed of the k-means++ draws.

        Returns:
            ``(N, K)`` float64 one-hot responsibilities on ``x``'s device.

        Raises:
            PplGenError: if ``x`` has fewer than ``K`` rows, wrong width or non-finite values.
        """
        x64 = self._fit_data(x, self.n_components)
        xc = x64 - x64.mean(0)
        gen = torch.Generator().manual_seed(int(seed))
        idx = kmeans_plusplus(xc, self.n_components, gen)
        labels = torch.argmin(_sq_dist(xc, xc[idx]), dim=1)
        resp = torch.zeros(x64.shape[0], self.n_components, dtype=torch.float64, device=x.device)
        resp[torch.arange(x64.shape[0], device=x.device), labels] = 1.0
        return resp

    @torch.no_grad()
    @_sized
    def init_from_data(self, x: torch.Tensor, seed: int = 0) -> None:
        """k-means++ initialisation, as scikit-learn's ``GaussianMixture`` initialises.

        The responsibilities of :meth:`initial_responsibilities` (hard assignment of every
        row to the nearest of ``K`` k-means++ centres, Arthur & Vassilvitskii 2007) go
        through one M-step: weights ``N_k / N``, means and covariances of each cluster
        (``+ reg_covar`` on the diagonal).  Parameters are updated in place.

        Args:
            x: ``(N, D)`` training rows, ``N >= K``.
            seed: seed of the k-means++ draws.

        Raises:
            PplGenError: if ``x`` has fewer than ``K`` rows, wrong width or non-finite values.
        """
        x64 = self._fit_data(x, self.n_components)
        design = self._design(x64)
        self._store(*self._init_params(design, x, seed))

    def _init_params(self, design: _Design, x: torch.Tensor, seed: int):
        resp = self.initial_responsibilities(x, seed)
        return self._m_step(design, self._resp_stats(design, resp))

    def _em_run(
        self, design: _Design, params, max_iter: int, tol: float, t0: float
    ) -> tuple[FitHistory, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        n = design.n_total
        ll, stats, _ = _e_pass(design, self._component_coefficients(design, *params))
        prev = ll / n
        history = FitHistory(extra={"initial_objective": prev})
        for _ in range(max_iter):
            params = self._m_step(design, stats)
            ll, stats, _ = _e_pass(design, self._component_coefficients(design, *params))
            cur = ll / n
            history.objective.append(cur)
            history.seconds.append(time.perf_counter() - t0)
            if not math.isfinite(cur):
                raise PplGenError("EM: the log-likelihood became non-finite; increase reg_covar")
            if abs(cur - prev) < tol * abs(prev):
                history.converged = True
                break
            prev = cur
        return history, params

    @torch.no_grad()
    @_sized
    def em(
        self,
        x: torch.Tensor,
        *,
        max_iter: int = 500,
        tol: float = 1e-6,
        n_init: int = 1,
        seed: int = 0,
        init: bool = True,
        dist: DistributedContext | None = None,
    ) -> FitHistory:
        """Expectation-maximisation for the mixture (PRML 9.2.2), parameters updated in place.

        Each iteration is an M-step (PRML 9.24-9.27: ``N_k = sum_n gamma_nk``,
        ``mu_k = sum_n gamma_nk x_n / N_k``, ``Sigma_k = sum_n gamma_nk (x_n - mu_k)(x_n -
        mu_k)^T / N_k + reg_covar I`` (diag: its diagonal), ``pi_k = N_k / N``) followed by
        the E-step (responsibilities, PRML 9.23) at the new parameters, which also gives
        their average log-likelihood; that is the recorded objective, so it never decreases
        (up to the ``reg_covar`` perturbation and rounding).  The run stops when
        ``|ll_t - ll_{t-1}| < tol |ll_{t-1}|`` or after ``max_iter`` iterations.  The same
        update sequence as scikit-learn's ``GaussianMixture.fit`` (whose stopping rule is an
        *absolute* change of the average log-likelihood), in float64, fully vectorised.

        Args:
            x: ``(N, D)`` training rows.
            max_iter: maximum number of iterations (>= 1).
            tol: relative tolerance of the stopping rule (0: run all ``max_iter``).
            n_init: number of k-means++ restarts (seeds ``seed, seed + 1, ...``); the
                restart with the highest final log-likelihood is kept.
            seed: seed of the first restart.
            init: initialise with :meth:`init_from_data`; ``False`` starts from the current
                parameters (then ``n_init`` must be 1).
            dist: data-parallel EM (:mod:`ppl_gen.core.distributed`): ``x`` is this rank's shard
                (:meth:`~ppl_gen.core.distributed.DistributedContext.shard` of the full data);
                each E-step's statistics ``R^T Z`` and log-likelihood are all-reduced, so
                every rank takes the same M-step.  k-means++ is sequential over the whole
                data: the initialisation runs on the gathered rows (identically on every
                rank), the iterations on the shards.  The fit equals the single-process fit
                up to float64 summation order.

        Returns:
            :class:`FitHistory` of the best restart: ``objective`` = average log-likelihood
            (nats per datapoint) after each iteration, ``seconds`` since the start of that
            restart (its k-means++ initialisation included); ``extra["restarts"]`` = final
            log-likelihood of every restart, ``extra["best"]`` = index of the kept one,
            ``extra["initial_objective"]`` = log-likelihood before the first iteration,
            ``extra["seconds_total"]`` = wall time of all restarts.

        Raises:
            PplGenError: for bad arguments, data with fewer than ``K`` rows or non-finite
                values, or a covariance that stops being positive definite.
        """
        require_positive_int("--em-max-iter", max_iter)
        require_positive_int("--n-init", n_init)
        require(isinstance(tol, (int, float)) and tol >= 0, f"--em-tol must be >= 0, got {tol!r}")
        require(init or n_init == 1, "--n-init > 1 needs init=True (k-means++ restarts)")
        t_all = time.perf_counter()
        if dist is None or not dist.distributed:
            x64 = self._fit_data(x, self.n_components if init else 1)
            design = init_design = self._design(x64)
            x_init = x
        else:
            x64 = self._fit_data(x)
            x_init = dist.gather_shards(x64) if init else None
            if init:
                center = x_init.mean(0)
            else:
                total = dist.all_reduce_float(x64.shape[0], "EM statistics")
                center = dist.all_reduce_sum(x64.sum(0), "EM statistics") / total
            design = _Design(x64, center, self.covariance, dist)
            require(
                design.n_total >= (self.n_components if init else 1),
                f"x: need at least {self.n_components} rows (--components "
                f"{self.n_components}), got {design.n_total}",
            )
            init_design = _Design(x_init, center, self.covariance) if init else None
        finals: list[float] = []
        best = None
        for r in range(n_init):
            t0 = time.perf_counter()
            params = self._init_params(init_design, x_init, seed + r) if init else self._params64()
            history, params = self._em_run(design, params, max_iter, tol, t0)
            finals.append(history.objective[-1])
            if best is None or finals[-1] > finals[best[0]]:
                best = (r, history, params)
        idx, history, params = best
        self._store(*params)
        history.extra.update(restarts=finals, best=idx, seconds_total=time.perf_counter() - t_all)
        return history

    # ------------------------------------------------------------------ scikit-learn

    @torch.no_grad()
    def to_sklearn_init(self) -> dict:
        """The current parameters as ``sklearn.mixture.GaussianMixture`` init arguments.

        Returns:
            ``{"weights_init", "means_init", "precisions_init"}`` as float64 numpy arrays
            (precisions ``(K, D, D)`` for full, ``(K, D)`` for diag), so that scikit-learn
            starts from exactly the parameters :meth:`em` with ``init=False`` starts from.
        """
        log_w, mu, cov = self._params64()
        if self.covariance == "diag":
            prec = 1.0 / cov
        else:
            prec = _chol_inverse(_cholesky(cov, "covariance"))
        return {
            "weights_init": log_w.exp().cpu().numpy(),
            "means_init": mu.cpu().numpy(),
            "precisions_init": prec.cpu().numpy(),
        }

    @torch.no_grad()
    def set_from_sklearn(self, gm) -> None:
        """Copy ``weights_``, ``means_`` and ``covariances_`` of a fitted scikit-learn mixture.

        Args:
            gm: a fitted ``GaussianMixture`` or ``BayesianGaussianMixture`` with
                ``covariance_type`` equal to this model's ``covariance``.

        Raises:
            PplGenError: if the covariance types or shapes differ.
        """
        ctype = getattr(gm, "covariance_type", None)
        require(
            ctype == self.covariance,
            f"set_from_sklearn: covariance_type {ctype!r} differs from {self.covariance!r}",
        )
        means = torch.as_tensor(gm.means_, dtype=torch.float64)
        require(
            tuple(means.shape) == (self.n_components, self.data_dim),
            f"set_from_sklearn: means_ has shape {tuple(means.shape)}, expected "
            f"{(self.n_components, self.data_dim)}",
        )
        weights = torch.as_tensor(gm.weights_, dtype=torch.float64)
        cov = torch.as_tensor(gm.covariances_, dtype=torch.float64)
        dev = self.logits.device
        self._store(torch.log(weights / weights.sum()).to(dev), means.to(dev), cov.to(dev))

    # ------------------------------------------------------------------ variational Bayes

    def default_priors(self, x: torch.Tensor) -> VBPrior:
        """scikit-learn's ``BayesianGaussianMixture`` defaults for ``x: (N, D)``.

        ``alpha0 = 1/K``, ``beta0 = 1``, ``m0`` = data mean, ``nu0 = D``, ``W0^-1`` = data
        covariance (``N - 1`` denominator, ``np.cov``).  When that covariance is singular
        (e.g. pixels that are constant in every image) ``reg_covar`` (or ``1e-6`` if it is
        0) is added to its diagonal: scikit-learn keeps the singular matrix, which its bound
        can afford because it drops the Wishart prior's normaliser ``ln B(W0, nu0)``, but
        the full bound needs a proper prior.
        """
        x64 = self._fit_data(x, 2)
        m0 = x64.mean(0)
        xc = x64 - m0
        w0_inv = _sym(xc.T @ xc / (x64.shape[0] - 1))
        with single_thread():
            info = torch.linalg.cholesky_ex(w0_inv)[1]
        if int(info) > 0:
            w0_inv = w0_inv + (self.reg_covar or 1e-6) * torch.eye(
                self.data_dim, dtype=w0_inv.dtype, device=w0_inv.device
            )
        return VBPrior(
            alpha0=1.0 / self.n_components,
            beta0=1.0,
            m0=m0,
            W0_inv=w0_inv,
            nu0=float(self.data_dim),
        )

    def _check_prior(self, x64: torch.Tensor, priors) -> VBPrior:
        if isinstance(priors, VBPrior):
            prior = priors
        else:
            prior = self.default_priors(x64)
            given = dict(priors or {})
            unknown = set(given) - {"alpha0", "beta0", "m0", "W0_inv", "nu0"}
            require(
                not unknown,
                f"priors: unknown keys {sorted(unknown)}; accepted alpha0, beta0, m0, W0_inv, nu0",
            )
            for key, value in given.items():
                if key in ("m0", "W0_inv"):
                    value = torch.as_tensor(value, dtype=torch.float64, device=x64.device)
                else:
                    value = float(value)
                prior = replace(prior, **{key: value})
        d = self.data_dim
        require(prior.alpha0 > 0, f"priors: alpha0 must be > 0, got {prior.alpha0}")
        require(prior.beta0 > 0, f"priors: beta0 must be > 0, got {prior.beta0}")
        require(prior.nu0 > d - 1, f"priors: nu0 must be > D - 1 = {d - 1}, got {prior.nu0}")
        m0 = torch.as_tensor(prior.m0, dtype=torch.float64, device=x64.device)
        w0_inv = torch.as_tensor(prior.W0_inv, dtype=torch.float64, device=x64.device)
        require(tuple(m0.shape) == (d,), f"priors: m0 must have shape ({d},)")
        require(tuple(w0_inv.shape) == (d, d), f"priors: W0_inv must have shape ({d}, {d})")
        with single_thread():
            info = torch.linalg.cholesky_ex(w0_inv)[1]
        require(int(info) == 0, "priors: W0_inv must be symmetric positive definite")
        return replace(prior, m0=m0, W0_inv=_sym(w0_inv))

    @one_thread
    def _vb_m_step(
        self, design: _Design, stats: torch.Tensor, prior: VBPrior, reg: float
    ) -> dict[str, torch.Tensor]:
        """Update ``q(pi) q(mu, Lambda)`` from ``R^T Z`` (PRML 10.51-10.53, 10.58, 10.60-10.63).

        Returns the posterior in the centred frame plus the statistics the bound needs:
        ``nk``, ``xbar``, ``S`` (without ``reg``).  ``reg`` is added to ``S_k`` in the update,
        as scikit-learn does.
        """
        nk, xbar, second = design.unpack(stats)
        S = _sym(second - xbar.unsqueeze(-1) * xbar.unsqueeze(-2))
        m0 = prior.m0 - design.center
        alpha = prior.alpha0 + nk
        beta = prior.beta0 + nk
        m = (prior.beta0 * m0 + nk[:, None] * xbar) / beta[:, None]
        diff = xbar - m0
        s_reg = S.clone()
        s_reg.diagonal(dim1=-2, dim2=-1).add_(reg)
        w_inv = (
            prior.W0_inv
            + nk[:, None, None] * s_reg
            + (prior.beta0 * nk / beta)[:, None, None] * diff.unsqueeze(-1) * diff.unsqueeze(-2)
        )
        nu = prior.nu0 + nk
        chol = _cholesky(_sym(w_inv), "mean-field: W_k^-1")
        W = _chol_inverse(chol)
        return {
            "alpha": alpha,
            "beta": beta,
            "m": m,
            "W": W,
            "W_inv": w_inv,
            "logdet_W": -_logdet_from_chol(chol),
            "nu": nu,
            "nk": nk,
            "xbar": xbar,
            "S": S,
        }

    def _vb_expectations(self, q: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """``E[ln pi_k]`` (10.66) and ``E[ln |Lambda_k|]`` (10.65)."""
        d = self.data_dim
        e_log_pi = torch.digamma(q["alpha"]) - torch.digamma(q["alpha"].sum())
        e_logdet = _digamma_terms(q["nu"], d) + d * math.log(2.0) + q["logdet_W"]
        return e_log_pi, e_logdet

    @one_thread
    def _vb_coefficients(self, design: _Design, q: dict) -> torch.Tensor:
        """``B`` of ``ln rho_nk`` (PRML 10.46 with 10.64-10.66), centred frame of ``q``."""
        d = self.data_dim
        e_log_pi, e_logdet = self._vb_expectations(q)
        prec = q["nu"][:, None, None] * q["W"]
        h = (prec @ q["m"].unsqueeze(-1)).squeeze(-1)
        const = (
            e_log_pi
            + 0.5 * e_logdet
            - 0.5 * d * LOG_2PI
            - 0.5 * d / q["beta"]
            - 0.5 * (h * q["m"]).sum(-1)
        )
        return design.coefficients(prec, h, const)

    @one_thread
    def _vb_elbo(self, q: dict, entropy: float, prior: VBPrior, m0c: torch.Tensor) -> float:
        """The full variational lower bound, PRML 10.70-10.77, summed over the data (nats).

        ``q`` holds ``q(theta)`` and the statistics ``nk, xbar, S`` of ``q(c)`` (whose
        entropy is ``entropy``); every constant is included.
        """
        d, k = self.data_dim, self.n_components
        alpha, beta, m, W, nu = q["alpha"], q["beta"], q["m"], q["W"], q["nu"]
        nk, xbar, S = q["nk"], q["xbar"], q["S"]
        e_log_pi, e_logdet = self._vb_expectations(q)
        dx = (xbar - m).unsqueeze(-1)
        dm = (m - m0c).unsqueeze(-1)
        quad_x = (dx.transpose(-1, -2) @ W @ dx).reshape(k)
        quad_m = (dm.transpose(-1, -2) @ W @ dm).reshape(k)
        tr_sw = (S * W).sum((-1, -2))
        tr_w0w = (prior.W0_inv * W).sum((-1, -2))
        logdet_w0 = -torch.logdet(prior.W0_inv)
        nu0 = torch.tensor(prior.nu0, dtype=torch.float64)
        log_b0 = _log_wishart_norm(logdet_w0.cpu(), nu0, d).to(alpha)
        log_b = _log_wishart_norm(q["logdet_W"], nu, d)
        # 10.71  E[ln p(X | Z, mu, Lambda)]
        t71 = 0.5 * (nk * (e_logdet - d / beta - nu * tr_sw - nu * quad_x - d * LOG_2PI)).sum()
        # 10.72  E[ln p(Z | pi)]
        t72 = (nk * e_log_pi).sum()
        # 10.73  E[ln p(pi)]
        t73 = (
            _log_dirichlet_norm(alpha.new_full((k,), prior.alpha0))
            + (prior.alpha0 - 1.0) * e_log_pi.sum()
        )
        # 10.74  E[ln p(mu, Lambda)]
        t74 = (
            0.5
            * (
                d * math.log(prior.beta0 / (2.0 * math.pi))
                + e_logdet
                - d * prior.beta0 / beta
                - prior.beta0 * nu * quad_m
            ).sum()
            + k * log_b0
            + 0.5 * (prior.nu0 - d - 1.0) * e_logdet.sum()
            - 0.5 * (nu * tr_w0w).sum()
        )
        # 10.75  E[ln q(Z)] = -entropy
        t75 = -entropy
        # 10.76  E[ln q(pi)]
        t76 = ((alpha - 1.0) * e_log_pi).sum() + _log_dirichlet_norm(alpha)
        # 10.77  E[ln q(mu, Lambda)], with H[q(Lambda)] of PRML B.82
        h_wishart = -log_b - 0.5 * (nu - d - 1.0) * e_logdet + 0.5 * nu * d
        t77 = (
            0.5 * e_logdet + 0.5 * d * torch.log(beta / (2.0 * math.pi)) - 0.5 * d - h_wishart
        ).sum()
        return float(t71 + t72 + t73 + t74 - t75 - t76 - t77)

    @one_thread
    def _sklearn_bound(self, q: dict, entropy: float) -> float:
        d = self.data_dim
        log_b = _log_wishart_norm(q["logdet_W"], q["nu"], d)
        k_const = self.n_components * 0.25 * d * (d - 1) * math.log(math.pi)
        return float(
            entropy
            - log_b.sum()
            - k_const
            - _log_dirichlet_norm(q["alpha"])
            - 0.5 * d * torch.log(q["beta"]).sum()
        )

    def _vb_to_state(self, q: dict, design: _Design, prior: VBPrior, entropy: float) -> VBPosterior:
        return VBPosterior(
            alpha=q["alpha"],
            beta=q["beta"],
            m=q["m"] + design.center,
            W=q["W"],
            nu=q["nu"],
            prior=prior,
            entropy=entropy,
            n=design.n,
        )

    @one_thread
    def _vb_from_state(self, design: _Design) -> dict:
        vb = self.vb
        with single_thread():
            logdet_w = torch.linalg.slogdet(vb.W)[1]
        return {
            "alpha": vb.alpha,
            "beta": vb.beta,
            "m": vb.m - design.center,
            "W": vb.W,
            "logdet_W": logdet_w,
            "nu": vb.nu,
        }

    def _require_full(self) -> None:
        if self.covariance != "full":
            raise PplGenError("mean-field GMM needs --covariance full")

    @torch.no_grad()
    @_sized
    def mean_field(
        self,
        x: torch.Tensor,
        *,
        max_iter: int = 500,
        tol: float = 1e-6,
        seed: int = 0,
        init: bool = True,
        priors: dict | VBPrior | None = None,
        resp: torch.Tensor | None = None,
        reg_covar: float | None = None,
    ) -> FitHistory:
        """The variational Bayesian Gaussian mixture (PRML 10.2) by coordinate ascent.

        Model: ``pi ~ Dir(alpha0)``, ``Lambda_k ~ W(W0, nu0)``, ``mu_k ~ N(m0, (beta0
        Lambda_k)^-1)``, ``c_n ~ Cat(pi)``, ``x_n ~ N(mu_c, Lambda_c^-1)``; mean-field
        ``q(c) q(pi) prod_k q(mu_k, Lambda_k)``.  Each iteration updates ``q(c)`` (PRML
        10.46-10.49 with 10.64-10.66) and then ``q(theta)`` (10.51-10.53, 10.58, 10.60-10.63;
        ``reg_covar`` is added to ``S_k`` as in scikit-learn), and records the full lower
        bound of the pair (10.70-10.77, every constant included), so the record never
        decreases.  Stops when ``|L_t - L_{t-1}| < tol |L_{t-1}|``.  The update sequence is
        scikit-learn's ``BayesianGaussianMixture`` with
        ``weight_concentration_prior_type="dirichlet_distribution"``.

        Afterwards ``self.vb`` holds ``q(theta)`` (:class:`VBPosterior`) and the point
        parameters are set to ``pi = E[pi] = alpha / sum alpha``, ``mu_k = m_k`` and
        ``Sigma_k = E[Lambda_k]^-1 = W_k^-1 / nu_k`` (scikit-learn's ``covariances_``), so the
        model can be used as a plain GMM.

        Args:
            x: ``(N, D)`` training rows.
            max_iter: maximum number of iterations (>= 1).
            tol: relative tolerance of the stopping rule (0: run all iterations).
            seed: seed of the k-means++ initialisation.
            init: start from k-means++ hard assignments (:meth:`initial_responsibilities`);
                ``False`` continues from ``self.vb`` when set, else starts from the
                responsibilities of the current point parameters.
            priors: :class:`VBPrior` or a dict overriding some of ``alpha0, beta0, m0,
                W0_inv, nu0`` (defaults: :meth:`default_priors`).
            resp: ``(N, K)`` initial responsibilities (overrides ``init``); ``q(theta)``
                starts as the update from them (scikit-learn's ``_initialize``).
            reg_covar: overrides the model's ``reg_covar`` for this fit.

        Returns:
            :class:`FitHistory` with ``objective`` = ELBO in nats per datapoint after each
            iteration; ``extra["lower_bound_sklearn"]`` = the same iterations' bound in
            scikit-learn's convention (summed over the data, like its ``lower_bound_``; see
            :meth:`mean_field_lower_bound_sklearn_convention`).

        Raises:
            PplGenError: for ``covariance="diag"`` ("mean-field GMM needs --covariance full"),
                bad arguments or data, or a ``W_k^-1`` that is not positive definite.
        """
        self._require_full()
        require_positive_int("--em-max-iter", max_iter)
        require(isinstance(tol, (int, float)) and tol >= 0, f"--em-tol must be >= 0, got {tol!r}")
        reg = self.reg_covar if reg_covar is None else float(reg_covar)
        require(reg >= 0, f"reg_covar must be >= 0, got {reg}")
        t0 = time.perf_counter()
        x64 = self._fit_data(x, max(2, self.n_components))
        if priors is None and not init and resp is None and self.vb is not None:
            prior = self.vb.prior
        else:
            prior = self._check_prior(x64, priors)
        design = self._design(x64)
        m0c = prior.m0 - design.center
        if resp is not None:
            resp = torch.as_tensor(resp, dtype=torch.float64, device=x64.device)
            require(
                tuple(resp.shape) == (design.n, self.n_components),
                f"resp must have shape {(design.n, self.n_components)}, got {tuple(resp.shape)}",
            )
        elif init:
            resp = self.initial_responsibilities(x64, seed)
        elif self.vb is None:
            resp = self.exact_posterior(x64).probs.double()
        if resp is not None:
            q = self._vb_m_step(design, self._resp_stats(design, resp), prior, reg)
        else:
            q = self._vb_from_state(design)
        history = FitHistory(extra={"lower_bound_sklearn": []})
        n = design.n
        prev = None
        entropy = 0.0
        for _ in range(max_iter):
            _, stats, entropy = _e_pass(design, self._vb_coefficients(design, q), entropy=True)
            q = self._vb_m_step(design, stats, prior, reg)
            elbo = self._vb_elbo(q, entropy, prior, m0c) / n
            history.objective.append(elbo)
            history.seconds.append(time.perf_counter() - t0)
            history.extra["lower_bound_sklearn"].append(self._sklearn_bound(q, entropy))
            if not math.isfinite(elbo):
                raise PplGenError("mean-field: the ELBO became non-finite; increase reg_covar")
            if prev is not None and abs(elbo - prev) < tol * abs(prev):
                history.converged = True
                break
            prev = elbo
        self.vb = self._vb_to_state(q, design, prior, entropy)
        self.vb.extra["sklearn_offset"] = self.mean_field_sklearn_offset(n)
        cov = q["W_inv"] / q["nu"][:, None, None]
        log_w = torch.log(q["alpha"] / q["alpha"].sum())
        self._store(log_w, self.vb.m, cov)
        return history

    def _require_vb(self) -> VBPosterior:
        self._require_full()
        if self.vb is None:
            raise PplGenError("mean-field: call mean_field(x) first (no q(theta) fitted)")
        return self.vb

    def mean_field_lower_bound_sklearn_convention(self) -> float:
        """The fitted lower bound as scikit-learn's ``BayesianGaussianMixture`` reports it.

        scikit-learn's ``_compute_lower_bound`` (full covariance, Dirichlet-distribution
        prior) returns, summed over the ``N`` training rows,
        ``H[q(c)] - sum_k [ln B(W_k, nu_k) + D(D-1)/4 ln pi] - ln C(alpha)
        - D/2 sum_k ln beta_k``; this is the same expression for ``self.vb`` and the entropy
        ``H[q(c)]`` of the ``q(c)`` of the last update, directly comparable with its
        ``lower_bound_`` (divide by ``N`` for nats per datapoint).

        Conversion: for the ``q(theta)`` computed from ``q(c)`` by the update (as after every
        iteration), the full bound of PRML 10.70 (what :meth:`mean_field` records, times
        ``N``) is exactly

            full = sklearn + :meth:`mean_field_sklearn_offset`
                   + reg_covar / 2 * sum_k nu_k N_k tr(W_k).

        The offset collects the terms scikit-learn drops as constants; the last term exists
        because ``reg_covar`` is added to ``S_k`` in the update, which makes ``q(Lambda)``
        not quite the optimum for ``q(c)`` while scikit-learn's simplification assumes it
        is (``O(reg_covar * tr(E[Lambda_k]))`` per datapoint: 1e-4 nats per point on the
        benchmark data, whose components have directions of variance ~1e-3; 0 when
        ``reg_covar = 0``).

        Raises:
            PplGenError: before :meth:`mean_field` or for ``covariance="diag"``.
        """
        vb = self._require_vb()
        with single_thread():
            logdet_w = torch.linalg.slogdet(vb.W)[1]
        q = {"alpha": vb.alpha, "beta": vb.beta, "nu": vb.nu, "logdet_W": logdet_w}
        return self._sklearn_bound(q, vb.entropy)

    def mean_field_sklearn_offset(self, n: int | None = None) -> float:
        """Full ELBO minus scikit-learn's bound for the same ``q`` (summed over ``n`` rows).

        ``-N D/2 ln(2 pi) + ln C(alpha0 1_K) + K [D/2 ln beta0 + ln B(W0, nu0)
        + D(D-1)/4 ln pi]``: the Gaussian normalisers of the data, the Dirichlet and
        Gaussian-Wishart prior normalisers, and the ``pi^{D(D-1)/4}`` of the multivariate
        gamma function that scikit-learn's ``_log_wishart_norm`` omits.  Only the prior
        and ``N`` enter, so it is constant during a fit.

        Args:
            n: number of rows (default: the last fit's).

        Raises:
            PplGenError: before :meth:`mean_field` or for ``covariance="diag"``.
        """
        vb = self._require_vb()
        prior = vb.prior
        n = vb.n if n is None else n
        d, k = self.data_dim, self.n_components
        logdet_w0 = -torch.logdet(prior.W0_inv.double().cpu())
        nu0 = torch.tensor(prior.nu0, dtype=torch.float64)
        log_b0 = float(_log_wishart_norm(logdet_w0, nu0, d))
        log_c0 = float(_log_dirichlet_norm(torch.full((k,), prior.alpha0, dtype=torch.float64)))
        return (
            -0.5 * n * d * LOG_2PI
            + log_c0
            + k
            * (0.5 * d * math.log(prior.beta0) + log_b0 + 0.25 * d * (d - 1) * math.log(math.pi))
        )

    @torch.no_grad()
    def _vb_log_rho(self, x64: torch.Tensor) -> torch.Tensor:
        design = self._design(x64, self.vb.m.mean(0))
        b = self._vb_coefficients(design, self._vb_from_state(design))
        return torch.cat([z @ b for z in design.chunks()])

    @torch.no_grad()
    @_sized
    def mean_field_responsibilities(self, x: torch.Tensor) -> dist.Categorical:
        """``q(c_n)`` for rows ``x`` with ``q(theta)`` fixed (PRML 10.46-10.49), batch ``(N,)``.

        Raises:
            PplGenError: before :meth:`mean_field` or for ``covariance="diag"``.
        """
        self._require_vb()
        x64 = self.flatten(x).double()
        log_rho = self._vb_log_rho(x64)
        return dist.Categorical(logits=log_rho - torch.logsumexp(log_rho, 1, keepdim=True))

    @torch.no_grad()
    @_sized
    def mean_field_predictive(self, x: torch.Tensor) -> torch.Tensor:
        """Log of the variational predictive density, PRML 10.81 (a mixture of Student-t).

        ``p(x | X) ~= sum_k alpha_k / alpha_hat St(x | m_k, L_k, nu_k + 1 - D)`` with
        precision ``L_k = (nu_k + 1 - D) beta_k / (1 + beta_k) W_k`` (10.82).  This is the
        Bayesian model's (approximate) posterior predictive ``E_{q(theta)} p(x | theta)``,
        not the likelihood of a point estimate; it is the mean-field scheme's test
        log-likelihood.

        Args:
            x: ``(N, D)`` rows.

        Returns:
            ``(N,)`` nats in ``x``'s floating dtype.

        Raises:
            PplGenError: before :meth:`mean_field` or for ``covariance="diag"``.
        """
        vb = self._require_vb()
        d = self.data_dim
        x64 = self.flatten(x).double()
        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        design = self._design(x64, vb.m.mean(0))
        mc = vb.m - design.center
        nu_t = vb.nu + 1.0 - d
        scale = nu_t * vb.beta / (1.0 + vb.beta)
        prec = scale[:, None, None] * vb.W
        with single_thread():
            logdet_w = torch.linalg.slogdet(vb.W)[1]
        logdet_l = d * torch.log(scale) + logdet_w
        h = (prec @ mc.unsqueeze(-1)).squeeze(-1)
        b = design.coefficients(prec, h, -0.5 * (h * mc).sum(-1))
        maha = torch.cat([(-2.0 * (z @ b)).clamp_min_(0.0) for z in design.chunks()])
        log_st = (
            torch.lgamma(0.5 * (nu_t + d))
            - torch.lgamma(0.5 * nu_t)
            - 0.5 * d * torch.log(nu_t * math.pi)
            + 0.5 * logdet_l
            - 0.5 * (nu_t + d) * torch.log1p(maha / nu_t)
        )
        log_w = torch.log(vb.alpha / vb.alpha.sum())
        return torch.logsumexp(log_st + log_w, dim=1).to(dtype)

    def _sample_theta(
        self, s: int, generator_seed: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``s`` draws of ``theta ~ q(theta)``: ``(log pi (s, K), mu (s, K, D), Lambda, logdet)``.

        ``pi ~ Dir(alpha)`` (normalised gammas), ``Lambda_k ~ W(W_k, nu_k)`` by the Bartlett
        decomposition ``Lambda = (L_W A)(L_W A)^T`` (``A`` lower triangular,
        ``A_ii^2 ~ chi^2(nu - i + 1)``, ``A_ij ~ N(0, 1)``; Bartlett 1933), and
        ``mu_k = m_k + (L_W A)^-T eps / sqrt(beta_k)`` so that ``mu_k ~ N(m_k, (beta_k
        Lambda_k)^-1)``.  Drawn on the CPU in float64 from a forked, seeded RNG.
        """
        vb = self.vb
        k, d = self.n_components, self.data_dim
        alpha, beta, nu = vb.alpha.cpu(), vb.beta.cpu(), vb.nu.cpu()
        m, W = vb.m.cpu(), vb.W.cpu()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(generator_seed)
            g = torch._standard_gamma(alpha.expand(s, k).contiguous())
            log_pi = torch.log(g) - torch.log(g.sum(-1, keepdim=True))
            i = torch.arange(d, dtype=torch.float64)
            conc = (0.5 * (nu[:, None] - i)).expand(s, k, d).contiguous()
            diag = torch.sqrt(2.0 * torch._standard_gamma(conc))
            a = torch.randn(s, k, d, d, dtype=torch.float64).tril(-1) + torch.diag_embed(diag)
            eps = torch.randn(s, k, d, 1, dtype=torch.float64)
        with single_thread():
            l_w = torch.linalg.cholesky(W)
            chol = l_w @ a
            lam = chol @ chol.transpose(-1, -2)
            z = torch.linalg.solve_triangular(chol.transpose(-1, -2), eps, upper=True)
        mu = m + z.squeeze(-1) / beta.sqrt()[:, None]
        logdet = _logdet_from_chol(chol)
        dev = vb.m.device
        return log_pi.to(dev), mu.to(dev), lam.to(dev), logdet.to(dev)

    @torch.no_grad()
    @_sized
    def mean_field_bounds(
        self, x_test: torch.Tensor, k: int = 1000, seed: int = 0
    ) -> BoundEstimate:
        """ELBO and IWAE-K of test rows under the fitted Bayesian mixture, ``q(theta)`` fixed.

        For each test row, ``q(c_i)`` is the CAVI update given ``q(theta)`` (PRML
        10.46-10.49), and

        * ``ELBO_i = E_{q(c_i) q(theta)}[ln p(x_i | c, theta) + ln p(c | pi)] - E ln q(c_i)
          = logsumexp_k ln rho_ik`` in closed form;
        * ``IWAE-K_i = ln (1/K) sum_j p(x_i, c_j | theta_j) / q(c_j)`` with
          ``theta_j ~ q(theta)`` and ``c_j ~ q(c_i)``; ``E[p(x_i, c | theta) / q(c)] =
          E_{q(theta)} p(x_i | theta)``, so it is a stochastic lower bound on the log of the
          approximate posterior predictive ``ln E_{q(theta)} p(x_i | theta)`` (which
          :meth:`mean_field_predictive` computes exactly).

        Both bound the *Bayesian* model's predictive density, not the likelihood of a point
        estimate.  The ``K`` draws of ``theta`` are shared by all test rows (each row's
        estimate is still unbiased; rows are correlated through them).

        Args:
            x_test: ``(N, D)`` rows.
            k: samples per row (>= 1).
            seed: seed of the draws (the global RNG is left untouched).

        Returns:
            :class:`BoundEstimate` with ``elbo``, ``iwae`` ``(N,)`` and ``log_weights (N, K)``
            in ``x_test``'s floating dtype (computed in float64).

        Raises:
            PplGenError: before :meth:`mean_field`, for ``covariance="diag"`` or bad ``k``.
        """
        vb = self._require_vb()
        require_positive_int("--iwae-k", k)
        nc, d = self.n_components, self.data_dim
        x64 = self.flatten(x_test).double()
        n = x64.shape[0]
        require(n >= 1, "x: no datapoints to evaluate")
        dtype = x_test.dtype if x_test.is_floating_point() else torch.get_default_dtype()
        design = self._design(x64, vb.m.mean(0))
        log_rho = torch.cat(
            [
                z @ self._vb_coefficients(design, self._vb_from_state(design))
                for z in design.chunks()
            ]
        )
        elbo = torch.logsumexp(log_rho, dim=1)
        log_q = log_rho - elbo[:, None]
        cdf = torch.cumsum(log_q.exp(), dim=1)
        log_pi, mu, lam, logdet = self._sample_theta(k, seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            u = torch.rand(n, k, dtype=torch.float64).to(x64.device)
        # side='right': a component with q(c) = 0 is never drawn (u = 0 included)
        c = torch.searchsorted(cdf, u * cdf[:, -1:], side="right").clamp_max_(nc - 1)
        muc = mu - design.center
        h = (lam @ muc.unsqueeze(-1)).squeeze(-1)
        const = log_pi + 0.5 * logdet - 0.5 * d * LOG_2PI - 0.5 * (h * muc).sum(-1)
        log_w = x64.new_empty(n, k)
        s_chunk = max(1, _CHUNK_ENTRIES // (min(n, design.chunk) * nc))
        for s0 in range(0, k, s_chunk):
            s1 = min(k, s0 + s_chunk)
            b = design.coefficients(lam[s0:s1], h[s0:s1], const[s0:s1])
            row = 0
            for z in design.chunks():
                rows = slice(row, row + z.shape[0])
                lp = (z @ b).reshape(z.shape[0], s1 - s0, nc)
                cc = c[rows, s0:s1]
                log_w[rows, s0:s1] = lp.gather(2, cc.unsqueeze(-1)).squeeze(-1) - log_q[
                    rows
                ].gather(1, cc)
                row += z.shape[0]
        iwae = torch.logsumexp(log_w, dim=1) - math.log(k)
        return BoundEstimate(
            elbo=elbo.to(dtype).cpu(),
            iwae=iwae.to(dtype).cpu(),
            k=k,
            log_weights=log_w.to(dtype).cpu(),
        )


__all__ = [
    "GaussianMixture",
    "ComponentGaussian",
    "VBPrior",
    "VBPosterior",
    "kmeans_plusplus",
    "COVARIANCES",
]
