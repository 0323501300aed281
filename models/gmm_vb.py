"""The variational Bayesian Gaussian mixture (Bishop PRML 10.2): CAVI and its lower bound.

Model: ``pi ~ Dirichlet(alpha0 1_K)``, ``Lambda_k ~ Wishart(W0, nu0)``,
``mu_k | Lambda_k ~ N(m0, (beta0 Lambda_k)^-1)`` (PRML 10.39-10.40), ``c_n ~ Cat(pi)``,
``x_n ~ N(mu_c, Lambda_c^-1)``, with the mean-field posterior
``q(c) q(pi) prod_k q(mu_k, Lambda_k)``.  :func:`mean_field` runs coordinate ascent
(``q(c)``: PRML 10.46-10.49 with 10.64-10.66; ``q(theta)``: 10.51-10.53, 10.58,
10.60-10.63) and records the full lower bound (10.70-10.77, every constant included);
:func:`lower_bound_sklearn_convention` and :func:`sklearn_offset` relate it to the bound
scikit-learn's ``BayesianGaussianMixture`` reports.  The fitted ``q(theta)`` is used at
test time by :mod:`ppl_gen.models.gmm_vb_predictive`.

The passes over the data use the quadratic features of :mod:`ppl_gen.models.gmm_features`;
everything is float64, bounds are in nats.  The functions that fit or read a model take the
:class:`~ppl_gen.models.gmm.GaussianMixture` first (``model``); the model's methods of
the same purpose (``mean_field``, ``default_priors``, ...) call them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ppl_gen.core.errors import PplGenError, require, require_positive_int
from ppl_gen.core.threads import one_thread, single_thread
from ppl_gen.lvm.tractable import FitHistory
from ppl_gen.models.gmm_em import initial_responsibilities
from ppl_gen.models.gmm_features import (
    LOG_2PI,
    Design,
    chol_inverse,
    cholesky,
    e_pass,
    logdet_from_chol,
    resp_stats,
    sized,
    sym,
)
from ppl_gen.models.stopping import converged

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


# ------------------------------------------------------------------ normalisers


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


# ------------------------------------------------------------------ priors and updates


def default_priors(model: nn.Module, x: torch.Tensor) -> VBPrior:
    """scikit-learn's ``BayesianGaussianMixture`` defaults for ``x: (N, D)``.

    ``alpha0 = 1/K``, ``beta0 = 1``, ``m0`` = data mean, ``nu0 = D``, ``W0^-1`` = data
    covariance (``N - 1`` denominator, ``np.cov``).  When that covariance is singular
    (e.g. pixels that are constant in every image) ``reg_covar`` (or ``1e-6`` if it is
    0) is added to its diagonal: scikit-learn keeps the singular matrix, which its bound
    can afford because it drops the Wishart prior's normaliser ``ln B(W0, nu0)``, but
    the full bound needs a proper prior.
    """
    x64 = model._fit_data(x, 2)
    m0 = x64.mean(0)
    xc = x64 - m0
    w0_inv = sym(xc.T @ xc / (x64.shape[0] - 1))
    with single_thread():
        info = torch.linalg.cholesky_ex(w0_inv)[1]
    if int(info) > 0:
        w0_inv = w0_inv + (model.reg_covar or 1e-6) * torch.eye(
            model.data_dim, dtype=w0_inv.dtype, device=w0_inv.device
        )
    return VBPrior(
        alpha0=1.0 / model.n_components,
        beta0=1.0,
        m0=m0,
        W0_inv=w0_inv,
        nu0=float(model.data_dim),
    )


def check_prior(model: nn.Module, x64: torch.Tensor, priors) -> VBPrior:
    """The prior of a fit: ``priors`` (a :class:`VBPrior` or a dict overriding some of
    :func:`default_priors`), converted to float64 on ``x64``'s device and checked.

    Raises:
        PplGenError: for unknown keys, ``alpha0 <= 0``, ``beta0 <= 0``, ``nu0 <= D - 1``,
            wrong shapes or a ``W0_inv`` that is not symmetric positive definite.
    """
    if isinstance(priors, VBPrior):
        prior = priors
    else:
        prior = default_priors(model, x64)
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
    d = model.data_dim
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
    return replace(prior, m0=m0, W0_inv=sym(w0_inv))


@one_thread
def update(
    design: Design, stats: torch.Tensor, prior: VBPrior, reg: float
) -> dict[str, torch.Tensor]:
    """Update ``q(pi) q(mu, Lambda)`` from ``R^T Z`` (PRML 10.51-10.53, 10.58, 10.60-10.63).

    Returns the posterior in the centred frame plus the statistics the bound needs:
    ``nk``, ``xbar``, ``S`` (without ``reg``).  ``reg`` is added to ``S_k`` in the update,
    as scikit-learn does.
    """
    nk, xbar, second = design.unpack(stats)
    S = sym(second - xbar.unsqueeze(-1) * xbar.unsqueeze(-2))
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
    chol = cholesky(sym(w_inv), "mean-field: W_k^-1")
    W = chol_inverse(chol)
    return {
        "alpha": alpha,
        "beta": beta,
        "m": m,
        "W": W,
        "W_inv": w_inv,
        "logdet_W": -logdet_from_chol(chol),
        "nu": nu,
        "nk": nk,
        "xbar": xbar,
        "S": S,
    }


def expectations(q: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``E[ln pi_k]`` (10.66) and ``E[ln |Lambda_k|]`` (10.65)."""
    d = q["W"].shape[-1]
    e_log_pi = torch.digamma(q["alpha"]) - torch.digamma(q["alpha"].sum())
    e_logdet = _digamma_terms(q["nu"], d) + d * math.log(2.0) + q["logdet_W"]
    return e_log_pi, e_logdet


@one_thread
def coefficients(design: Design, q: dict) -> torch.Tensor:
    """``B`` of ``ln rho_nk`` (PRML 10.46 with 10.64-10.66), centred frame of ``q``."""
    d = design.d
    e_log_pi, e_logdet = expectations(q)
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
def full_bound(q: dict, entropy: float, prior: VBPrior, m0c: torch.Tensor) -> float:
    """The full variational lower bound, PRML 10.70-10.77, summed over the data (nats).

    ``q`` holds ``q(theta)`` and the statistics ``nk, xbar, S`` of ``q(c)`` (whose
    entropy is ``entropy``); every constant is included.
    """
    d, k = q["W"].shape[-1], q["alpha"].shape[0]
    alpha, beta, m, W, nu = q["alpha"], q["beta"], q["m"], q["W"], q["nu"]
    nk, xbar, S = q["nk"], q["xbar"], q["S"]
    e_log_pi, e_logdet = expectations(q)
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
    t77 = (0.5 * e_logdet + 0.5 * d * torch.log(beta / (2.0 * math.pi)) - 0.5 * d - h_wishart).sum()
    return float(t71 + t72 + t73 + t74 - t75 - t76 - t77)


@one_thread
def sklearn_bound(q: dict, entropy: float, d: int) -> float:
    """scikit-learn's lower bound for ``q`` (see :func:`lower_bound_sklearn_convention`)."""
    log_b = _log_wishart_norm(q["logdet_W"], q["nu"], d)
    k_const = q["alpha"].shape[0] * 0.25 * d * (d - 1) * math.log(math.pi)
    return float(
        entropy
        - log_b.sum()
        - k_const
        - _log_dirichlet_norm(q["alpha"])
        - 0.5 * d * torch.log(q["beta"]).sum()
    )


def to_state(q: dict, design: Design, prior: VBPrior, entropy: float) -> VBPosterior:
    """The :class:`VBPosterior` of :func:`update`'s ``q`` (means back in data coordinates)."""
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
def from_state(vb: VBPosterior, design: Design) -> dict:
    """``q(theta)`` of ``vb`` as the dict of :func:`update`, in ``design``'s centred frame."""
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


def require_full(model: nn.Module) -> None:
    """Raise :class:`PplGenError` unless ``model`` has full covariances."""
    if model.covariance != "full":
        raise PplGenError('covariance: the mean-field GMM needs covariance="full"')


@torch.no_grad()
@sized
def mean_field(
    model: nn.Module,
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
    decreases.  Stops when the last change and Aitken's estimate of the gain still to come
    are both below ``tol`` nats per datapoint (:func:`ppl_gen.models.stopping.converged`).
    The update sequence is
    scikit-learn's ``BayesianGaussianMixture`` with
    ``weight_concentration_prior_type="dirichlet_distribution"``.

    Afterwards ``model.vb`` holds ``q(theta)`` (:class:`VBPosterior`) and the point
    parameters are set to ``pi = E[pi] = alpha / sum alpha``, ``mu_k = m_k`` and
    ``Sigma_k = E[Lambda_k]^-1 = W_k^-1 / nu_k`` (scikit-learn's ``covariances_``), so the
    model can be used as a plain GMM.

    Args:
        model: the :class:`~ppl_gen.models.gmm.GaussianMixture` (full covariances);
            ``model.vb`` and its point parameters are updated in place.
        x: ``(N, D)`` training rows.
        max_iter: maximum number of iterations (>= 1).
        tol: tolerance of the stopping rule, nats per datapoint (0: run all iterations).
        seed: seed of the k-means++ initialisation.
        init: start from k-means++ hard assignments
            (:func:`~ppl_gen.models.gmm_em.initial_responsibilities`); ``False``
            continues from ``model.vb`` when set, else starts from the responsibilities
            of the current point parameters.
        priors: :class:`VBPrior` or a dict overriding some of ``alpha0, beta0, m0,
            W0_inv, nu0`` (defaults: :func:`default_priors`).
        resp: ``(N, K)`` initial responsibilities (overrides ``init``); ``q(theta)``
            starts as the update from them (scikit-learn's ``_initialize``).
        reg_covar: overrides the model's ``reg_covar`` for this fit.

    Returns:
        :class:`FitHistory` with ``objective`` = ELBO in nats per datapoint after each
        iteration; ``extra["lower_bound_sklearn"]`` = the same iterations' bound in
        scikit-learn's convention (summed over the data, like its ``lower_bound_``; see
        :func:`lower_bound_sklearn_convention`).

    Raises:
        PplGenError: for ``covariance="diag"`` (the mean-field GMM needs ``covariance="full"``),
            bad arguments or data, or a ``W_k^-1`` that is not positive definite.
    """
    require_full(model)
    require_positive_int("max_iter", max_iter)
    require(isinstance(tol, (int, float)) and tol >= 0, f"tol must be >= 0, got {tol!r}")
    reg = model.reg_covar if reg_covar is None else float(reg_covar)
    require(reg >= 0, f"reg_covar must be >= 0, got {reg}")
    t0 = time.perf_counter()
    x64 = model._fit_data(x, max(2, model.n_components))
    if priors is None and not init and resp is None and model.vb is not None:
        prior = model.vb.prior
    else:
        prior = check_prior(model, x64, priors)
    design = Design.of(x64, model.covariance)
    m0c = prior.m0 - design.center
    if resp is not None:
        resp = torch.as_tensor(resp, dtype=torch.float64, device=x64.device)
        require(
            tuple(resp.shape) == (design.n, model.n_components),
            f"resp must have shape {(design.n, model.n_components)}, got {tuple(resp.shape)}",
        )
    elif init:
        resp = initial_responsibilities(model, x64, seed)
    elif model.vb is None:
        resp = model.exact_posterior(x64).probs.double()
    if resp is not None:
        q = update(design, resp_stats(design, resp), prior, reg)
    else:
        q = from_state(model.vb, design)
    history = FitHistory(extra={"lower_bound_sklearn": []})
    n = design.n
    entropy = 0.0
    for _ in range(max_iter):
        _, stats, entropy = e_pass(design, coefficients(design, q), entropy=True)
        q = update(design, stats, prior, reg)
        elbo = full_bound(q, entropy, prior, m0c) / n
        history.objective.append(elbo)
        history.seconds.append(time.perf_counter() - t0)
        history.extra["lower_bound_sklearn"].append(sklearn_bound(q, entropy, model.data_dim))
        if not math.isfinite(elbo):
            raise PplGenError("mean-field: the ELBO became non-finite; increase reg_covar")
        if converged(history.objective, tol):
            history.converged = True
            break
    model.vb = to_state(q, design, prior, entropy)
    model.vb.extra["sklearn_offset"] = sklearn_offset(model, n)
    cov = q["W_inv"] / q["nu"][:, None, None]
    log_w = torch.log(q["alpha"] / q["alpha"].sum())
    model._store(log_w, model.vb.m, cov)
    return history


def require_vb(model: nn.Module) -> VBPosterior:
    """``model.vb``; raises :class:`PplGenError` before a fit or for diagonal covariances."""
    require_full(model)
    if model.vb is None:
        raise PplGenError("mean-field: call mean_field(x) first (no q(theta) fitted)")
    return model.vb


def lower_bound_sklearn_convention(model: nn.Module) -> float:
    """The fitted lower bound as scikit-learn's ``BayesianGaussianMixture`` reports it.

    scikit-learn's ``_compute_lower_bound`` (full covariance, Dirichlet-distribution
    prior) returns, summed over the ``N`` training rows,
    ``H[q(c)] - sum_k [ln B(W_k, nu_k) + D(D-1)/4 ln pi] - ln C(alpha)
    - D/2 sum_k ln beta_k``; this is the same expression for ``model.vb`` and the entropy
    ``H[q(c)]`` of the ``q(c)`` of the last update, directly comparable with its
    ``lower_bound_`` (divide by ``N`` for nats per datapoint).

    Conversion: for the ``q(theta)`` computed from ``q(c)`` by the update (as after every
    iteration), the full bound of PRML 10.70 (what :func:`mean_field` records, times
    ``N``) is exactly

        full = sklearn + :func:`sklearn_offset`
               + reg_covar / 2 * sum_k nu_k N_k tr(W_k).

    The offset collects the terms scikit-learn drops as constants; the last term exists
    because ``reg_covar`` is added to ``S_k`` in the update, which makes ``q(Lambda)``
    not quite the optimum for ``q(c)`` while scikit-learn's simplification assumes it
    is (``O(reg_covar * tr(E[Lambda_k]))`` per datapoint: 1e-4 nats per point on the
    benchmark data, whose components have directions of variance ~1e-3; 0 when
    ``reg_covar = 0``).

    Raises:
        PplGenError: before :func:`mean_field` or for ``covariance="diag"``.
    """
    vb = require_vb(model)
    with single_thread():
        logdet_w = torch.linalg.slogdet(vb.W)[1]
    q = {"alpha": vb.alpha, "beta": vb.beta, "nu": vb.nu, "logdet_W": logdet_w}
    return sklearn_bound(q, vb.entropy, model.data_dim)


def sklearn_offset(model: nn.Module, n: int | None = None) -> float:
    """Full ELBO minus scikit-learn's bound for the same ``q`` (summed over ``n`` rows).

    ``-N D/2 ln(2 pi) + ln C(alpha0 1_K) + K [D/2 ln beta0 + ln B(W0, nu0)
    + D(D-1)/4 ln pi]``: the Gaussian normalisers of the data, the Dirichlet and
    Gaussian-Wishart prior normalisers, and the ``pi^{D(D-1)/4}`` of the multivariate
    gamma function that scikit-learn's ``_log_wishart_norm`` omits.  Only the prior
    and ``N`` enter, so it is constant during a fit.

    Args:
        model: a fitted :class:`~ppl_gen.models.gmm.GaussianMixture`.
        n: number of rows (default: the last fit's).

    Raises:
        PplGenError: before :func:`mean_field` or for ``covariance="diag"``.
    """
    vb = require_vb(model)
    prior = vb.prior
    n = vb.n if n is None else n
    d, k = model.data_dim, model.n_components
    logdet_w0 = -torch.logdet(prior.W0_inv.double().cpu())
    nu0 = torch.tensor(prior.nu0, dtype=torch.float64)
    log_b0 = float(_log_wishart_norm(logdet_w0, nu0, d))
    log_c0 = float(_log_dirichlet_norm(torch.full((k,), prior.alpha0, dtype=torch.float64)))
    return (
        -0.5 * n * d * LOG_2PI
        + log_c0
        + k * (0.5 * d * math.log(prior.beta0) + log_b0 + 0.25 * d * (d - 1) * math.log(math.pi))
    )


__all__ = [
    "VBPrior",
    "VBPosterior",
    "default_priors",
    "full_bound",
    "lower_bound_sklearn_convention",
    "mean_field",
    "require_vb",
    "sklearn_offset",
]
