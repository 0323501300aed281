"""Gaussian mixture model: the model, its exact marginal and posterior, and its Pyro model.

The generative model is ``c_i ~ Categorical(pi)``, ``x_i | c_i = k ~ N(mu_k, Sigma_k)`` with
``K`` components in ``D`` dimensions, ``Sigma_k`` full or diagonal.  Everything the
tractable-model interface (:class:`ppl_gen.lvm.tractable.TractableModel`) asks for is
closed form here:

* ``log_marginal(x)`` -- ``log p(x_i) = logsumexp_k [log pi_k + log N(x_i | mu_k, Sigma_k)]``
  (PRML 9.7), ``(N,)`` nats;
* ``exact_posterior(x)`` -- the responsibilities ``gamma(z_ik)`` (PRML 9.23) as a
  ``Categorical`` with batch shape ``(N,)``;
* ``em(x)`` -- EM for the mixture (PRML 9.2.2: E-step 9.23, M-step 9.24-9.27), seeded by
  k-means++ (Arthur & Vassilvitskii 2007): :mod:`ppl_gen.models.gmm_em`;
* ``mean_field(x)`` -- the variational Bayesian mixture of PRML 10.2 (CAVI, 10.46-10.63)
  and its full lower bound (10.70-10.77): :mod:`ppl_gen.models.gmm_vb`; its test bounds and
  predictive density (10.81): :mod:`ppl_gen.models.gmm_vb_predictive`.

The sums over datapoints of all of them are vectorised through quadratic features
(:mod:`ppl_gen.models.gmm_features`: one EM iteration is two GEMMs), in float64 on data
centred at their mean.

The module's parameters are stored in float32 (``logits (K,)``, ``means (K, D)``,
``scale_tril_raw (K, D, D)`` or ``log_scales (K, D)``); the closed-form fits compute in
float64 and write back.  All log-densities are in nats.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppl_gen.core.distributed import DistributedContext
from ppl_gen.core.errors import PplGenError, require, require_positive_int
from ppl_gen.core.naming import unique_scope
from ppl_gen.infer.bounds import BoundEstimate
from ppl_gen.lvm.plates import data_plate, flatten_rows
from ppl_gen.lvm.tractable import FitHistory
from ppl_gen.models import gmm_em, gmm_vb, gmm_vb_predictive
from ppl_gen.models.gmm_em import kmeans_plusplus
from ppl_gen.models.gmm_features import (
    LOG_2PI,
    Design,
    cholesky,
    component_coefficients,
    sized,
    sym,
)
from ppl_gen.models.gmm_vb import VBPosterior, VBPrior

COVARIANCES = ("full", "diag")

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


# ------------------------------------------------------------------------------- model


class GaussianMixture(nn.Module):
    """Gaussian mixture ``p(x) = sum_k pi_k N(x | mu_k, Sigma_k)`` as a Pyro model.

    Args:
        data_dim: ``D`` (>= 1).
        n_components: ``K`` (>= 1).
        covariance: ``"full"`` (``Sigma_k = L_k L_k^T + reg_covar I``, ``L_k`` lower
            triangular with diagonal ``exp(raw_kii)``) or ``"diag"``
            (``Sigma_k = diag(exp(2 log_scales_k) + reg_covar)``).
        reg_covar: added to the diagonal of every covariance, in the M-step (as in
            scikit-learn) and in the parameterisation used by gradient-based fits (default
            ``1e-6``); see :meth:`scale_tril`.

    Attribute ``threads`` (default ``None``): torch threads for the closed-form fits and
    evaluations (``em``, ``mean_field``, ``log_marginal``, ...); ``None`` uses one thread
    for problems below ``2**24`` feature entries (about 250,000 rows at ``D = 10``, full)
    and torch's setting above (see :func:`ppl_gen.models.gmm_features.threads_for`).  The
    caller's setting is restored afterwards.

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
    svi_lr_scale = 0.1
    """Factor on the SVI learning rate (:mod:`ppl_gen.infer.schemes.svi`).  Adam moves every
    raw parameter by about ``lr`` per step whatever its scale; the mixture's means and
    Cholesky entries are in pixel units while its smallest covariance eigenvalues are near
    ``reg_covar``, and on the digits ``lr = 1e-2`` (the default of the linear-Gaussian and
    mixture models) drives the k-means++ start from 87 to 5 nats/point test log-likelihood
    in 30 epochs, ``lr = 1e-3`` to 77 (EM: 87)."""

    def __init__(
        self,
        data_dim: int,
        n_components: int,
        covariance: str = "full",
        reg_covar: float = 1e-6,
    ) -> None:
        super().__init__()
        self.data_dim = require_positive_int("data_dim", data_dim)
        self.n_components = require_positive_int("n_components", n_components)
        if covariance not in COVARIANCES:
            raise PplGenError(
                f"covariance must be one of {', '.join(COVARIANCES)}, got {covariance!r}"
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

    def _excess_tril(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``L_k`` of ``Sigma_k = L_k L_k^T + reg_covar I``: ``(K, D, D)`` lower triangular,
        diagonal ``exp(raw_kii)``, differentiable (in ``dtype``, default the parameters')."""
        raw = self.scale_tril_raw if dtype is None else self.scale_tril_raw.to(dtype)
        return raw.tril(-1) + torch.diag_embed(torch.diagonal(raw, dim1=-2, dim2=-1).exp())

    def variances(self) -> torch.Tensor:
        """Diagonal covariances ``exp(2 log_scales) + reg_covar``, ``(K, D)`` (``diag`` only)."""
        return (2.0 * self.log_scales).exp() + self.reg_covar

    def _covariances64(self) -> torch.Tensor:
        """``Sigma_k = L_k L_k^T + reg_covar I`` in float64, ``(K, D, D)``, differentiable."""
        chol = self._excess_tril(torch.float64)
        eye = torch.eye(self.data_dim, dtype=torch.float64, device=chol.device)
        return chol @ chol.transpose(-1, -2) + self.reg_covar * eye

    def scale_tril(self) -> torch.Tensor:
        """Cholesky factors of the covariances, ``(K, D, D)``, differentiable.

        Every covariance is ``L_k L_k^T + reg_covar I`` (diag: ``exp(2 log_scales) +
        reg_covar``), the form of EM's M-step (``S_k + reg_covar I``): positive definite
        with every eigenvalue at least ``reg_covar`` whatever the parameters, so a
        gradient-based fit (SVI) can neither make a covariance singular nor collapse a
        component onto a constant pixel more tightly than EM does.  The factor is computed
        in float64 (condition numbers up to ``max variance / reg_covar``) and returned in
        the parameters' dtype.
        """
        if self.covariance == "diag":
            return torch.diag_embed(self.variances().sqrt())
        return torch.linalg.cholesky(self._covariances64()).to(self.scale_tril_raw.dtype)

    def covariances(self) -> torch.Tensor:
        """Covariance matrices ``Sigma_k``, ``(K, D, D)``, differentiable (see
        :meth:`scale_tril`)."""
        if self.covariance == "diag":
            return torch.diag_embed(self.variances())
        return self._covariances64().to(self.scale_tril_raw.dtype)

    def _params64(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log pi (K,), mu (K, D), Sigma (K, D, D) or variances (K, D))`` in float64."""
        with torch.no_grad():
            log_w = torch.log_softmax(self.logits.double(), dim=-1)
            mu = self.means.double()
            if self.covariance == "diag":
                return log_w, mu, (2.0 * self.log_scales.double()).exp() + self.reg_covar
            return log_w, mu, self._covariances64()

    @torch.no_grad()
    def _store(self, log_w: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor) -> None:
        """Write float64 ``log pi``, means and covariances (diag: variances) to the parameters.

        The part of each covariance above ``reg_covar I`` is stored (its eigenvalues
        floored at ``1e-6 reg_covar``, so a covariance below ``reg_covar I`` -- the
        variational Bayesian point estimate can be -- is raised to it).
        """
        self.logits.copy_(log_w.to(self.logits))
        self.means.copy_(mu.to(self.means))
        jitter = 1e-6 * self.reg_covar if self.reg_covar > 0 else 1e-300
        if self.covariance == "diag":
            excess = (cov - self.reg_covar).clamp_min(jitter)
            self.log_scales.copy_((0.5 * excess.log()).to(self.log_scales))
            return
        eye = torch.eye(self.data_dim, dtype=cov.dtype, device=cov.device)
        excess = sym(cov) - self.reg_covar * eye
        chol, info = torch.linalg.cholesky_ex(excess + jitter * eye)
        if bool((info > 0).any()):
            evals, evecs = torch.linalg.eigh(excess)
            excess = (evecs * evals.clamp_min(jitter).unsqueeze(-2)) @ evecs.transpose(-1, -2)
            chol = cholesky(sym(excess) + jitter * eye, "covariance")
        raw = chol.tril(-1) + torch.diag_embed(torch.diagonal(chol, dim1=-2, dim2=-1).log())
        self.scale_tril_raw.copy_(raw.to(self.scale_tril_raw))

    def flatten(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, *image_shape) -> (N, D)``; see :func:`ppl_gen.lvm.plates.flatten_rows`."""
        return flatten_rows(x, self.data_dim, type(self).__name__)

    def _fit_data(self, x: torch.Tensor, min_rows: int = 1) -> torch.Tensor:
        flat = self.flatten(x)
        require(
            flat.shape[0] >= min_rows,
            f"x: need at least {min_rows} rows (n_components {self.n_components}), "
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
                scales = self.variances().sqrt().to(flat.dtype)
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

    @torch.no_grad()
    @sized
    def _weighted_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` float64 ``log pi_k + log N(x_n | mu_k, Sigma_k)``."""
        x64 = self.flatten(x).double()
        log_w, mu, cov = self._params64()
        design = Design.of(x64, self.covariance, mu.mean(0))
        b = component_coefficients(design, log_w, mu, cov)
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

    # ------------------------------------------------------------------ EM (gmm_em)

    def initial_responsibilities(self, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """``(N, K)`` float64 one-hot assignments of the rows of ``x: (N, D)`` to ``K``
        k-means++ centres (seeded ``seed``); see
        :func:`ppl_gen.models.gmm_em.initial_responsibilities` (errors there)."""
        return gmm_em.initial_responsibilities(self, x, seed)

    def init_from_data(self, x: torch.Tensor, seed: int = 0) -> None:
        """k-means++ initialisation as scikit-learn's (hard assignment, one M-step), in
        place; see :func:`ppl_gen.models.gmm_em.init_from_data` (errors there)."""
        gmm_em.init_from_data(self, x, seed)

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
        """EM for the mixture (PRML 9.2.2) with ``n_init`` k-means++ restarts, parameters
        updated in place; optionally data-parallel over ``dist``.

        Returns the :class:`FitHistory` of the best restart (average log-likelihood, nats
        per datapoint, per iteration).  Arguments, records and errors:
        :func:`ppl_gen.models.gmm_em.em`.
        """
        return gmm_em.em(
            self, x, max_iter=max_iter, tol=tol, n_init=n_init, seed=seed, init=init, dist=dist
        )

    # ------------------------------------------------------------------ variational Bayes

    def default_priors(self, x: torch.Tensor) -> VBPrior:
        """scikit-learn's ``BayesianGaussianMixture`` prior defaults for ``x: (N, D)``; see
        :func:`ppl_gen.models.gmm_vb.default_priors`."""
        return gmm_vb.default_priors(self, x)

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

        Sets ``self.vb`` (:class:`VBPosterior`) and the point parameters (``E[pi]``,
        ``m_k``, ``E[Lambda_k]^-1``).  Returns the :class:`FitHistory` of the full ELBO
        (nats per datapoint) per iteration.  Arguments, records and errors (full
        covariances only): :func:`ppl_gen.models.gmm_vb.mean_field`.
        """
        return gmm_vb.mean_field(
            self,
            x,
            max_iter=max_iter,
            tol=tol,
            seed=seed,
            init=init,
            priors=priors,
            resp=resp,
            reg_covar=reg_covar,
        )

    def mean_field_lower_bound_sklearn_convention(self) -> float:
        """The fitted lower bound (nats, summed over the training rows) as scikit-learn's
        ``BayesianGaussianMixture`` reports it; see
        :func:`ppl_gen.models.gmm_vb.lower_bound_sklearn_convention`."""
        return gmm_vb.lower_bound_sklearn_convention(self)

    def mean_field_sklearn_offset(self, n: int | None = None) -> float:
        """Full ELBO minus scikit-learn's bound for the same ``q`` over ``n`` rows (default
        the last fit's), nats; see :func:`ppl_gen.models.gmm_vb.sklearn_offset`."""
        return gmm_vb.sklearn_offset(self, n)

    def mean_field_responsibilities(self, x: torch.Tensor) -> dist.Categorical:
        """``q(c_n)`` for rows ``x: (N, D)`` with ``q(theta)`` fixed, batch ``(N,)``; see
        :func:`ppl_gen.models.gmm_vb_predictive.responsibilities`."""
        return gmm_vb_predictive.responsibilities(self, x)

    def mean_field_predictive(self, x: torch.Tensor) -> torch.Tensor:
        """``(N,)`` log variational predictive density (PRML 10.81, nats) of ``x: (N, D)``;
        see :func:`ppl_gen.models.gmm_vb_predictive.predictive`."""
        return gmm_vb_predictive.predictive(self, x)

    def mean_field_bounds(
        self, x_test: torch.Tensor, k: int = 1000, seed: int = 0
    ) -> BoundEstimate:
        """ELBO and IWAE-K (``(N,)`` nats, ``k`` samples, seeded ``seed``) of test rows under
        the fitted ``q(theta)``; see :func:`ppl_gen.models.gmm_vb_predictive.bounds`."""
        return gmm_vb_predictive.bounds(self, x_test, k, seed)


__all__ = [
    "GaussianMixture",
    "ComponentGaussian",
    "VBPrior",
    "VBPosterior",
    "kmeans_plusplus",
    "COVARIANCES",
]
