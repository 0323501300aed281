"""Test-time use of the variational Bayesian mixture's ``q(theta)`` (Bishop PRML 10.2.3).

With ``q(theta) = q(pi) prod_k q(mu_k, Lambda_k)`` fixed (fitted by
:func:`ppl_gen.models.gmm_vb.mean_field`):

* :func:`responsibilities` -- ``q(c_n)`` of new rows (PRML 10.46-10.49);
* :func:`predictive` -- the variational predictive density, a mixture of Student-t
  (PRML 10.81-10.82), the mean-field scheme's test log-likelihood;
* :func:`bounds` -- the ELBO (closed form) and IWAE-K (``theta ~ q(theta)`` drawn by the
  Bartlett decomposition, :func:`sample_theta`) of test rows.

All three bound or compute the *Bayesian* model's predictive density, not the likelihood
of a point estimate.  Computed in float64 with the quadratic features of
:mod:`ppl_gen.models.gmm_features`; results in nats.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import nn

from ppl_gen.core.errors import require, require_positive_int
from ppl_gen.core.threads import single_thread
from ppl_gen.infer.bounds import BoundEstimate
from ppl_gen.models import gmm_features as features
from ppl_gen.models.gmm_features import LOG_2PI, Design, logdet_from_chol, sized
from ppl_gen.models.gmm_vb import VBPosterior, coefficients, from_state, require_vb


@torch.no_grad()
def vb_log_rho(vb: VBPosterior, x64: torch.Tensor) -> torch.Tensor:
    """``(N, K)`` ``ln rho_nk`` of float64 rows (PRML 10.46 with 10.64-10.66) under ``vb``."""
    design = Design.of(x64, "full", vb.m.mean(0))  # q(theta) exists for full covariances
    b = coefficients(design, from_state(vb, design))
    return torch.cat([z @ b for z in design.chunks()])


@torch.no_grad()
@sized
def responsibilities(model: nn.Module, x: torch.Tensor) -> dist.Categorical:
    """``q(c_n)`` for rows ``x`` with ``q(theta)`` fixed (PRML 10.46-10.49), batch ``(N,)``.

    Raises:
        PplGenError: before ``mean_field`` or for ``covariance="diag"``.
    """
    vb = require_vb(model)
    x64 = model.flatten(x).double()
    log_rho = vb_log_rho(vb, x64)
    return dist.Categorical(logits=log_rho - torch.logsumexp(log_rho, 1, keepdim=True))


@torch.no_grad()
@sized
def predictive(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Log of the variational predictive density, PRML 10.81 (a mixture of Student-t).

    ``p(x | X) ~= sum_k alpha_k / alpha_hat St(x | m_k, L_k, nu_k + 1 - D)`` with
    precision ``L_k = (nu_k + 1 - D) beta_k / (1 + beta_k) W_k`` (10.82).  This is the
    Bayesian model's (approximate) posterior predictive ``E_{q(theta)} p(x | theta)``,
    not the likelihood of a point estimate; it is the mean-field scheme's test
    log-likelihood.

    Args:
        model: a :class:`~ppl_gen.models.gmm.GaussianMixture` fitted by ``mean_field``.
        x: ``(N, D)`` rows.

    Returns:
        ``(N,)`` nats in ``x``'s floating dtype.

    Raises:
        PplGenError: before ``mean_field`` or for ``covariance="diag"``.
    """
    vb = require_vb(model)
    d = model.data_dim
    x64 = model.flatten(x).double()
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    design = Design.of(x64, model.covariance, vb.m.mean(0))
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


def sample_theta(
    vb: VBPosterior, s: int, generator_seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``s`` draws of ``theta ~ q(theta)``: ``(log pi (s, K), mu (s, K, D), Lambda, logdet)``.

    ``pi ~ Dir(alpha)`` (normalised gammas), ``Lambda_k ~ W(W_k, nu_k)`` by the Bartlett
    decomposition ``Lambda = (L_W A)(L_W A)^T`` (``A`` lower triangular,
    ``A_ii^2 ~ chi^2(nu - i + 1)``, ``A_ij ~ N(0, 1)``; Bartlett 1933), and
    ``mu_k = m_k + (L_W A)^-T eps / sqrt(beta_k)`` so that ``mu_k ~ N(m_k, (beta_k
    Lambda_k)^-1)``.  Drawn on the CPU in float64 from a forked, seeded RNG.
    """
    k, d = vb.m.shape
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
    logdet = logdet_from_chol(chol)
    dev = vb.m.device
    return log_pi.to(dev), mu.to(dev), lam.to(dev), logdet.to(dev)


@torch.no_grad()
@sized
def bounds(model: nn.Module, x_test: torch.Tensor, k: int = 1000, seed: int = 0) -> BoundEstimate:
    """ELBO and IWAE-K of test rows under the fitted Bayesian mixture, ``q(theta)`` fixed.

    For each test row, ``q(c_i)`` is the CAVI update given ``q(theta)`` (PRML
    10.46-10.49), and

    * ``ELBO_i = E_{q(c_i) q(theta)}[ln p(x_i | c, theta) + ln p(c | pi)] - E ln q(c_i)
      = logsumexp_k ln rho_ik`` in closed form;
    * ``IWAE-K_i = ln (1/K) sum_j p(x_i, c_j | theta_j) / q(c_j)`` with
      ``theta_j ~ q(theta)`` and ``c_j ~ q(c_i)``; ``E[p(x_i, c | theta) / q(c)] =
      E_{q(theta)} p(x_i | theta)``, so it is a stochastic lower bound on the log of the
      approximate posterior predictive ``ln E_{q(theta)} p(x_i | theta)`` (which
      :func:`predictive` computes exactly).

    Both bound the *Bayesian* model's predictive density, not the likelihood of a point
    estimate.  The ``K`` draws of ``theta`` are shared by all test rows (each row's
    estimate is still unbiased; rows are correlated through them).

    Args:
        model: a :class:`~ppl_gen.models.gmm.GaussianMixture` fitted by ``mean_field``.
        x_test: ``(N, D)`` rows.
        k: samples per row (>= 1).
        seed: seed of the draws (the global RNG is left untouched).

    Returns:
        :class:`BoundEstimate` with ``elbo``, ``iwae`` ``(N,)`` and ``log_weights (N, K)``
        in ``x_test``'s floating dtype (computed in float64).

    Raises:
        PplGenError: before ``mean_field``, for ``covariance="diag"`` or bad ``k``.
    """
    vb = require_vb(model)
    require_positive_int("k", k)
    nc, d = model.n_components, model.data_dim
    x64 = model.flatten(x_test).double()
    n = x64.shape[0]
    require(n >= 1, "x: no datapoints to evaluate")
    dtype = x_test.dtype if x_test.is_floating_point() else torch.get_default_dtype()
    design = Design.of(x64, model.covariance, vb.m.mean(0))
    log_rho = torch.cat([z @ coefficients(design, from_state(vb, design)) for z in design.chunks()])
    elbo = torch.logsumexp(log_rho, dim=1)
    log_q = log_rho - elbo[:, None]
    cdf = torch.cumsum(log_q.exp(), dim=1)
    log_pi, mu, lam, logdet = sample_theta(vb, k, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        u = torch.rand(n, k, dtype=torch.float64).to(x64.device)
    # side='right': a component with q(c) = 0 is never drawn (u = 0 included)
    c = torch.searchsorted(cdf, u * cdf[:, -1:], side="right").clamp_max_(nc - 1)
    muc = mu - design.center
    h = (lam @ muc.unsqueeze(-1)).squeeze(-1)
    const = log_pi + 0.5 * logdet - 0.5 * d * LOG_2PI - 0.5 * (h * muc).sum(-1)
    log_w = x64.new_empty(n, k)
    s_chunk = max(1, features._CHUNK_ENTRIES // (min(n, design.chunk) * nc))
    for s0 in range(0, k, s_chunk):
        s1 = min(k, s0 + s_chunk)
        b = design.coefficients(lam[s0:s1], h[s0:s1], const[s0:s1])
        row = 0
        for z in design.chunks():
            rows = slice(row, row + z.shape[0])
            lp = (z @ b).reshape(z.shape[0], s1 - s0, nc)
            cc = c[rows, s0:s1]
            log_w[rows, s0:s1] = lp.gather(2, cc.unsqueeze(-1)).squeeze(-1) - log_q[rows].gather(
                1, cc
            )
            row += z.shape[0]
    iwae = torch.logsumexp(log_w, dim=1) - math.log(k)
    return BoundEstimate(
        elbo=elbo.to(dtype).cpu(),
        iwae=iwae.to(dtype).cpu(),
        k=k,
        log_weights=log_w.to(dtype).cpu(),
    )


__all__ = ["bounds", "predictive", "responsibilities", "sample_theta", "vb_log_rho"]
